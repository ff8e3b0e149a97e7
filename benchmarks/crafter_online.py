"""Online DreamerV3 on Crafter at a CPU budget: Crafter score against env steps, symbolic and pixels.

Each variant trains a fresh agent (default model size) for at most ``--minutes`` of wall time, with a
CPU-budget train ratio, and evaluates the Crafter score (and per-achievement success) every
``--eval-every`` env steps. Variants run in parallel worker processes, one torch thread each.
Writes ``benchmarks/results/crafter_online.json`` and ``crafter_online.png``.

    python benchmarks/crafter_online.py                                  # symbolic and pixels, 45 min each
    python benchmarks/crafter_online.py --variants symbolic --minutes 10
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
VARIANTS = {"symbolic": "crafter_symbolic", "pixels": "crafter"}
# A CPU budget: one update per 16 env steps (ratio 64 at 16x64 batches) instead of the paper's 512.
BUDGET = ["train.train_ratio=64", "optim.lr=1e-4", "optim.warmup=100", "train.prefill=5000"]


def run_variant(variant: str, minutes: float, eval_every: int, episodes: int, logdir: str, extra: list[str]) -> dict:
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
    curve = [[int(r["step"]), float(r["eval/score"])] for r in rows if "eval/score" in r]
    final = agent.last_eval
    return {
        "variant": variant,
        "env_steps": agent.counters["env_steps"],
        "updates": agent.counters["updates"],
        "wall_s": time.time() - start,
        "curve": curve,
        "final_score": final.get("eval/score"),
        "final_return": final.get("eval/return"),
        "success": {k.split("/")[-1]: v for k, v in final.items() if k.startswith("eval/success/")},
        "logdir": logdir,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--minutes", type=float, default=45.0, help="wall-time budget per variant")
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rundir", default="benchmarks/runs/crafter_online")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides")
    args = parser.parse_args()
    stamp = int(time.time())
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [
            pool.submit(
                run_variant, v, args.minutes, args.eval_every, args.episodes, f"{args.rundir}/{v}-{stamp}", args.set
            )
            for v in args.variants
        ]
        results = {f.result()["variant"]: f.result() for f in futures}
    payload = {"budget": {"minutes": args.minutes, "overrides": BUDGET + args.set}, "variants": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "crafter_online.json").write_text(json.dumps(payload, indent=2))
    plot(results, RESULTS / "crafter_online.png")
    for name, r in results.items():
        print(f"{name}: {r['env_steps']} env steps, {r['updates']} updates, final Crafter score {r['final_score']}")


def plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, r in results.items():
        if r["curve"]:
            xs, ys = zip(*r["curve"], strict=True)
            ax.plot(xs, ys, marker="o", ms=3, label=name)
    ax.axhline(1.6, color="grey", ls=":", lw=1, label="random (published)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("Crafter score (%)")
    ax.set_title("Online DreamerV3 on Crafter, CPU budget")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
