"""Online Crafter from an offline agent vs from scratch: Crafter score against env steps.

Both arms run the same online DreamerV3 loop (``Dreamer.learn``) with the same architecture, train ratio
and env-step budget:

* ``offline``: the agent ``benchmarks/offline_crafter.py`` trained on scripted play (its run folder),
  continued online (no random prefill; the online train ratio counts online updates only);
* ``offline_no_prior``: the same without the KL to the behaviour-cloning prior online
  (``ac.prior_kl=0``): the plain DreamerV3 loss from the first online update;
* ``scratch``: a fresh agent with the same config, random prefill first (``--prefill``).

Every ``--eval-every`` env steps (and at step 0) each agent plays ``--eval-episodes`` real episodes
with sampled actions (episodes cut at the offline data's time limit). The target is the scripted
player's Crafter score on the recordings; the JSON gives, per arm, the env steps at which the score
first reached the target and fractions of it. Arms run in parallel processes, one torch thread each;
finished (arm, seed) runs are kept in ``benchmarks/runs/online_from_offline/arms.jsonl`` and skipped
when the same settings run again.
Writes ``benchmarks/results/online_from_offline.json`` and ``online_from_offline.png``.

    python benchmarks/online_from_offline.py                          # symbolic, seed 0, 20k env steps
    python benchmarks/online_from_offline.py --env-steps 50000 --seeds 0 1 2
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
OFFLINE = ROOT / "offline_crafter"
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
ARMS = ("offline", "offline_no_prior", "scratch")


def scripted_score(data: Path) -> float:
    """Crafter score of the recorded episodes (the scripted player's), from the dataset's episode logs."""
    from reverie.crafter_eval import achievement_table, crafter_score

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
    start = time.time()
    curve: list[list[float]] = []
    step = 0
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
        "updates": agent.counters["updates"] - agent.counters["offline_updates"],
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
    target_what = "the scripted player's Crafter score on the recordings"
    return {"target_score": target, "target": target_what, **settings, "arms": arms}


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for a, (name, arm) in enumerate(sorted(result["arms"].items())):
        for s, curve in enumerate(arm["curves"]):
            xs = [p[0] for p in curve]
            ys = [p[1] for p in curve]
            ax.plot(xs, ys, color=f"C{a}", marker="o", ms=3, alpha=0.8, label=name if s == 0 else None)
    ax.axhline(result["target_score"], color="k", ls="--", lw=1, label="scripted player")
    ax.set_xlabel("online env steps")
    ax.set_ylabel("Crafter score (%)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_title("Online Crafter: from the offline agent vs from scratch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs", default="symbolic", choices=["symbolic", "pixels"])
    parser.add_argument("--episodes", type=int, default=200, help="size of the offline dataset")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--env-steps", type=int, default=20_000)
    parser.add_argument("--eval-every", type=int, default=2_500)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--train-ratio", type=float, default=64.0, help="replayed steps per env step (CPU budget)")
    parser.add_argument("--prefill", type=int, default=2_500, help="random env steps before scratch trains")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    data = OFFLINE / "data" / f"{args.obs}-{args.episodes}-a1"
    if not (data / "dataset.json").exists():
        raise SystemExit(f"No dataset at {data}: run benchmarks/offline_crafter.py first.")
    jobs = []
    for seed in args.seeds:
        source = OFFLINE / "runs" / f"{args.obs}_{args.episodes}_1_wm_s{seed}"
        if not (source / "checkpoint").exists():
            raise SystemExit(f"No offline agent at {source}: run benchmarks/offline_crafter.py first.")
        for arm in args.arms:
            jobs.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "source": str(source),
                    "env_steps": args.env_steps,
                    "eval_every": args.eval_every,
                    "eval_episodes": args.eval_episodes,
                    "train_ratio": args.train_ratio,
                    "prefill": args.prefill,
                }
            )
    settings = {key: getattr(args, key) for key in ("obs", "episodes", "env_steps", "eval_every", "eval_episodes")}
    settings.update({"train_ratio": args.train_ratio, "prefill": args.prefill})
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
    result = summarise(rows, scripted_score(data), settings)
    from reverie.fileio import write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / "online_from_offline.json", json.dumps(result, indent=1))
    plot(result, RESULTS / "online_from_offline.png")
    for name, arm in result["arms"].items():
        print(name, "steps to", {k: v for k, v in arm["steps_to"].items()})


if __name__ == "__main__":
    main()
