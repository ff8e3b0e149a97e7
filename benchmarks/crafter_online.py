"""Online DreamerV3 on Crafter at a CPU budget: Crafter score against env steps.

Default: each variant (symbolic, pixels) trains a fresh agent (default model size) for at most ``--minutes`` of
wall time with a CPU-budget train ratio and evaluates the Crafter score (and per-achievement success) every
``--eval-every`` env steps. Writes ``benchmarks/results/crafter_online.json`` and ``crafter_online.png``.

``--from-offline``: online learning from the offline agent of ``benchmarks/offline_crafter.py`` (its symbolic
recipe on 200 recorded episodes, all labels) against learning from scratch, all with the same online loop
(``Dreamer.learn``), architecture, train ratio and env-step budget:

* ``offline``: the offline agent continued online (no random prefill; the train ratio counts online updates);
* ``offline_no_prior``: the same without the actor's KL to the behaviour-cloning prior (``ac.prior_kl=0``);
* ``scratch``: a fresh agent with the same config, ``--prefill`` random steps first.

Every ``--eval-every`` env steps (and at step 0) each arm plays ``--eval-episodes`` episodes with sampled actions;
the JSON gives per arm the env steps at which the score first reached 10%, 25%, 50% and 100% of the recording
player's score on its recordings. Finished (arm, seed) runs are kept in
``benchmarks/runs/online_from_offline/arms.jsonl``. Writes ``benchmarks/results/online_from_offline.json`` and
``online_from_offline.png``.

Variants and arms run in parallel worker processes, one torch thread each.

    python benchmarks/crafter_online.py                                  # symbolic and pixels, 45 min each
    python benchmarks/crafter_online.py --variants symbolic --minutes 10
    python benchmarks/crafter_online.py --from-offline --env-steps 10000 --eval-every 2000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent / "runs"
VARIANTS = {"symbolic": "crafter_symbolic", "pixels": "crafter"}
# A CPU budget: one update per 16 env steps (ratio 64 at 16x64 batches) instead of the paper's 512.
BUDGET = ["train.train_ratio=64", "optim.lr=1e-4", "optim.warmup=100", "train.prefill=5000"]
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
ARMS = ("offline", "offline_no_prior", "scratch")


def run_variant(variant: str, minutes: float, eval_every: int, episodes: int, logdir: str, extra: list[str]) -> dict:
    """A fresh agent on one Crafter variant for ``minutes`` of wall time; its evaluation curve."""
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    torch.set_num_threads(1)
    from reverie import Dreamer, make_config
    from reverie.logger import read_jsonl

    overrides = [
        *BUDGET,
        f"run.logdir={logdir}",
        f"run.max_minutes={minutes}",
        f"run.eval_every={eval_every}",
        f"run.eval_episodes={episodes}",
        "run.save_every=20000",
        "run.progress=false",
        "run.tensorboard=false",
        *extra,
    ]
    start = time.time()
    agent = Dreamer(make_config([VARIANTS[variant]], overrides))
    agent.learn()
    rows = read_jsonl(Path(logdir) / "metrics.jsonl")
    final = agent.last_eval
    return {
        "variant": variant,
        "env_steps": agent.state.env_steps,
        "updates": agent.state.updates,
        "wall_s": time.time() - start,
        "curve": [[int(r["step"]), float(r["eval/score"])] for r in rows if "eval/score" in r],
        "final_score": final.get("eval/score"),
        "final_return": final.get("eval/return"),
        "success": {k.split("/")[-1]: v for k, v in final.items() if k.startswith("eval/success/")},
        "logdir": logdir,
    }


def recorded_score(data: Path) -> float:
    """Crafter score of the recorded episodes (the recording player's), from the dataset's episode logs."""
    from reverie.crafter.score import achievement_table, crafter_score

    info = json.loads((data / "dataset.json").read_text())["episode_info"]
    return crafter_score(achievement_table([episode["log"] for episode in info]))


def run_arm(job: dict[str, Any]) -> dict[str, Any]:
    """One arm and seed in a fresh process: evaluate, then learn online in ``eval_every`` chunks."""
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    torch.set_num_threads(1)
    from reverie import Dreamer
    from reverie.config import Config, set_key

    source = Path(job["source"])
    work = ROOT / "online_from_offline" / f"{job['arm']}_s{job['seed']}"
    if work.exists():
        shutil.rmtree(work)
    config = Config.from_dict(json.loads((source / "config.json").read_text()))
    settings = {
        "run.logdir": str(work),
        "train.seed": job["seed"],
        "train.train_ratio": job["train_ratio"],
        "train.prefill": job["prefill"],
        "run.eval_every": 0,
        "run.save_every": 0,
        "run.video_every": 0,
        "run.progress": False,
        "run.tensorboard": False,
    }
    if job["arm"] == "offline_no_prior":
        settings["ac.prior_kl"] = 0.0
    for key, value in settings.items():
        set_key(config, key, value)
    if job["arm"] != "scratch":
        shutil.copytree(source / "checkpoint", work / "checkpoint")
        agent = Dreamer.load(work, config)
    else:
        agent = Dreamer(config)
    start, curve, step = time.time(), [], 0
    while True:
        metrics = agent.evaluate(episodes=job["eval_episodes"], deterministic=False)
        curve.append([step, metrics["eval/score"], metrics["eval/return"]])
        print(f"{job['arm']} seed {job['seed']}: {step} env steps, score {metrics['eval/score']:.2f}", flush=True)
        if step >= job["env_steps"]:
            break
        step = min(step + job["eval_every"], job["env_steps"])
        agent.learn(steps=step)
    return {
        "arm": job["arm"],
        "seed": job["seed"],
        "curve": curve,
        "updates": agent.state.updates - agent.state.offline_updates,
        "wall_s": time.time() - start,
    }


def first_reach(curve: list[list[float]], level: float) -> int | None:
    """Env steps of the first evaluation scoring at least ``level`` (None: never)."""
    return next((int(point[0]) for point in curve if point[1] >= level), None)


def summarise(rows: list[dict[str, Any]], target: float, settings: dict[str, Any]) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: (r["arm"], r["seed"])):
        arm = arms.setdefault(row["arm"], {"seeds": [], "curves": [], "steps_to": {}, "wall_s": []})
        arm["seeds"].append(row["seed"])
        arm["curves"].append(row["curve"])
        arm["wall_s"].append(row["wall_s"])
        for frac in FRACTIONS:
            arm["steps_to"].setdefault(f"{frac:g}", []).append(first_reach(row["curve"], frac * target))
    target_what = "the recording player's Crafter score on the recordings"
    return {"target_score": target, "target": target_what, **settings, "arms": arms}


def from_offline(args: argparse.Namespace) -> None:
    """The ``--from-offline`` arms: online from the offline agent (with and without its prior) vs scratch."""
    from offline_crafter import dataset_path, job_dir  # the offline benchmark's datasets and agents

    from reverie.fileio import write_text

    data = dataset_path("symbolic", args.dataset_episodes, 1.0)
    if not (data / "dataset.json").exists():
        raise SystemExit(f"No dataset at {data}: run benchmarks/offline_crafter.py --obs symbolic --fracs 1.0 first.")
    jobs = []
    for seed in args.seeds:
        source = job_dir(f"symbolic/{args.dataset_episodes}/1", "wm", seed)
        if not (source / "checkpoint").exists():
            raise SystemExit(f"No offline agent at {source}: run benchmarks/offline_crafter.py first (--redo).")
        for arm in args.arms:
            job = {"arm": arm, "seed": seed, "source": str(source), "env_steps": args.env_steps}
            job |= {"eval_every": args.eval_every, "eval_episodes": args.eval_episodes}
            jobs.append({**job, "train_ratio": args.train_ratio, "prefill": args.prefill})
    settings = {"obs": "symbolic", "episodes": args.dataset_episodes, "env_steps": args.env_steps}
    settings |= {"eval_every": args.eval_every, "eval_episodes": args.eval_episodes}
    settings |= {"train_ratio": args.train_ratio, "prefill": args.prefill}
    done_file = ROOT / "online_from_offline" / "arms.jsonl"
    done_file.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in done_file.read_text().splitlines()] if done_file.exists() else []
    rows = [r for r in rows if r["settings"] == settings and r["seed"] in args.seeds and r["arm"] in args.arms]
    finished = {(r["arm"], r["seed"]) for r in rows}
    jobs = [job for job in jobs if (job["arm"], job["seed"]) not in finished]
    print(f"{len(jobs)} runs to do ({len(rows)} finished with these settings)", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(run_arm, jobs):
            row["settings"] = settings
            rows.append(row)
            with done_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
    result = summarise(rows, recorded_score(data), settings)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / "online_from_offline.json", json.dumps(result, indent=1))
    curves = {name: [[p[:2] for p in curve] for curve in arm["curves"]] for name, arm in result["arms"].items()}
    title = "Online Crafter: from the offline agent vs from scratch"
    plot(curves, RESULTS / "online_from_offline.png", title, ("recording player", result["target_score"]))
    for name, arm in result["arms"].items():
        print(name, "steps to", arm["steps_to"])


def plot(curves: dict[str, list[list[list[float]]]], path: Path, title: str, line: tuple[str, float]) -> None:
    """Crafter score against env steps, one colour per variant or arm (one line per seed), and a reference."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for a, (name, runs) in enumerate(sorted(curves.items())):
        for s, curve in enumerate(c for c in runs if c):
            xs, ys = zip(*curve, strict=True)
            ax.plot(xs, ys, color=f"C{a}", marker="o", ms=3, alpha=0.8, label=name if s == 0 else None)
    ax.axhline(line[1], color="grey", ls=":", lw=1, label=line[0])
    ax.set_xlabel("env steps")
    ax.set_ylabel("Crafter score (%)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--minutes", type=float, default=45.0, help="wall-time budget per variant")
    parser.add_argument("--eval-every", type=int, default=None, help="env steps (default 10,000; 2,500 with -o)")
    parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes of a variant")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rundir", default="benchmarks/runs/crafter_online")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides of the variants")
    online = parser.add_argument_group("--from-offline")
    online.add_argument("--from-offline", "-o", action="store_true", help="online from the offline agent vs scratch")
    online.add_argument("--dataset-episodes", type=int, default=200, help="size of the offline dataset")
    online.add_argument("--seeds", nargs="+", type=int, default=[0])
    online.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    online.add_argument("--env-steps", type=int, default=20_000)
    online.add_argument("--eval-episodes", type=int, default=10)
    online.add_argument("--train-ratio", type=float, default=64.0, help="replayed steps per env step (CPU budget)")
    online.add_argument("--prefill", type=int, default=2_500, help="random env steps before scratch trains")
    args = parser.parse_args()
    if args.from_offline:
        args.eval_every = args.eval_every or 2_500
        from_offline(args)
        return
    eval_every, stamp = args.eval_every or 10_000, int(time.time())
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [
            pool.submit(run_variant, v, args.minutes, eval_every, args.episodes, f"{args.rundir}/{v}-{stamp}", args.set)
            for v in args.variants
        ]
        results = {f.result()["variant"]: f.result() for f in futures}
    payload = {"budget": {"minutes": args.minutes, "overrides": BUDGET + args.set}, "variants": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "crafter_online.json").write_text(json.dumps(payload, indent=2))
    curves = {name: [r["curve"]] for name, r in results.items()}
    plot(curves, RESULTS / "crafter_online.png", "Online DreamerV3 on Crafter, CPU budget", ("random (published)", 1.6))
    for name, r in results.items():
        print(f"{name}: {r['env_steps']} env steps, {r['updates']} updates, final Crafter score {r['final_score']}")


if __name__ == "__main__":
    main()
