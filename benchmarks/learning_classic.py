"""Learning benchmark on Gymnasium classic control: eval return against env steps, several seeds.

Each (env, seed) run trains a fresh agent with the ``classic`` preset and the env's task preset (default model
hyperparameters; ``cartpole``: train ratio 32, the configuration of ``reverie train`` with no arguments, without its
stop at 500) and evaluates it every ``--eval-every`` env steps on 10 episodes. Runs go to worker processes, one
torch thread each. Writes ``benchmarks/results/learning_classic.json`` and ``learning_classic.png``.

    python benchmarks/learning_classic.py                          # CartPole-v1 and Pendulum-v1, 3 seeds
    python benchmarks/learning_classic.py --envs CartPole-v1 --seeds 0 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# Thresholds and budgets of the acceptance criteria.
TASKS = {
    "CartPole-v1": {"threshold": 450.0, "steps": 30_000, "preset": "cartpole"},
    "Pendulum-v1": {"threshold": -200.0, "steps": 20_000, "preset": "pendulum"},
}


def run_one(env_id: str, seed: int, steps: int, eval_every: int, logdir: str, extra: list[str]) -> dict:
    """Train one agent; returns its eval curve and wall time."""
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    torch.set_num_threads(1)
    from reverie import Dreamer, make_config
    from reverie.logger import read_jsonl

    overrides = [
        f"env.id={env_id}",
        f"train.seed={seed}",
        f"train.steps={steps}",
        f"run.logdir={logdir}",
        f"run.eval_every={eval_every}",
        "run.eval_episodes=10",
        "run.progress=false",
        "run.tensorboard=false",
        "run.stop_at_return=inf",  # the curve to the budget (--stop-at-threshold sets it)
        *extra,
    ]
    start = time.time()
    task = TASKS.get(env_id, {})
    agent = Dreamer(make_config(["classic", *([task["preset"]] if "preset" in task else [])], overrides))
    agent.learn()
    curve = [
        [int(row["step"]), float(row["eval/return"])]
        for row in read_jsonl(Path(logdir) / "metrics.jsonl")
        if "eval/return" in row
    ]
    return {"seed": seed, "curve": curve, "wall_s": time.time() - start, "updates": agent.state.updates}


def steps_to(curve: list[list[float]], threshold: float) -> int | None:
    for step, value in curve:
        if value >= threshold:
            return int(step)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=2500)
    parser.add_argument("--rundir", default="benchmarks/runs/learning_classic")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides for every run")
    parser.add_argument("--stop-at-threshold", action="store_true", help="end each run at its threshold")
    parser.add_argument(
        "--collect", action="store_true", help="rebuild the JSON and plot from the finished runs in --rundir"
    )
    args = parser.parse_args()
    if args.collect:
        write_results(collect(Path(args.rundir), args.envs, args.seeds))
        return

    jobs = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for env_id in args.envs:
            task = TASKS.get(env_id, {"threshold": float("inf"), "steps": 30_000})
            extra = list(args.set)
            if args.stop_at_threshold:
                extra.append(f"run.stop_at_return={task['threshold']}")
            for seed in args.seeds:
                logdir = f"{args.rundir}/{env_id}/seed{seed}-{int(time.time())}"
                future = pool.submit(run_one, env_id, seed, task["steps"], args.eval_every, logdir, extra)
                jobs[future] = (env_id, seed)
        results: dict[str, dict] = {}
        for future, (env_id, _seed) in jobs.items():
            run = future.result()
            task = TASKS.get(env_id, {"threshold": float("inf"), "steps": 30_000})
            entry = results.setdefault(env_id, {"threshold": task["threshold"], "budget": task["steps"], "seeds": []})
            run["steps_to_threshold"] = steps_to(run["curve"], task["threshold"])
            entry["seeds"].append(run)
    write_results(results)


def collect(rundir: Path, envs: list[str], seeds: list[int]) -> dict:
    """Results from run folders ``rundir/<env>/seed<s>-<stamp>`` (the newest per seed with a checkpoint)."""
    from reverie.logger import read_jsonl

    results: dict[str, dict] = {}
    for env_id in envs:
        task = TASKS.get(env_id, {"threshold": float("inf"), "steps": 30_000})
        entry = results.setdefault(env_id, {"threshold": task["threshold"], "budget": task["steps"], "seeds": []})
        for seed in seeds:
            runs = sorted((rundir / env_id).glob(f"seed{seed}-*"), key=lambda p: p.name)
            runs = [r for r in runs if (r / "checkpoint" / "meta.json").exists() and (r / "metrics.jsonl").exists()]
            if not runs:
                continue
            rows = read_jsonl(runs[-1] / "metrics.jsonl")
            meta = json.loads((runs[-1] / "checkpoint" / "meta.json").read_text())
            curve = [[int(r["step"]), float(r["eval/return"])] for r in rows if "eval/return" in r]
            times = [float(r["time"]) for r in rows if "time" in r]
            run = {
                "seed": seed,
                "curve": curve,
                "wall_s": times[-1] - times[0] if times else None,  # from the first logged row (after set-up)
                "updates": meta.get("train_state", meta.get("counters", {})).get("updates"),
                "run": str(runs[-1]),
            }
            run["steps_to_threshold"] = steps_to(curve, task["threshold"])
            entry["seeds"].append(run)
    return results


def write_results(results: dict) -> None:
    for entry in results.values():
        entry["seeds"].sort(key=lambda r: r["seed"])
        entry["solved"] = sum(r["steps_to_threshold"] is not None for r in entry["seeds"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "learning_classic.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous.update(results)
    out.write_text(json.dumps(previous, indent=2))
    plot(previous, RESULTS / "learning_classic.png")
    for env_id, entry in results.items():
        steps = [r["steps_to_threshold"] for r in entry["seeds"]]
        print(f"{env_id}: threshold {entry['threshold']} reached by {entry['solved']}/{len(steps)} seeds at {steps}")


def plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(results), 3.6))
    FigureCanvasAgg(fig)
    for i, (env_id, entry) in enumerate(sorted(results.items())):
        ax = fig.add_subplot(1, len(results), i + 1)
        for run in entry["seeds"]:
            if run["curve"]:
                xs, ys = zip(*run["curve"], strict=True)
                ax.plot(xs, ys, marker="o", ms=3, label=f"seed {run['seed']}")
        ax.axhline(entry["threshold"], color="k", ls="--", lw=1, label="threshold")
        ax.set_title(env_id)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return (10 episodes)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
