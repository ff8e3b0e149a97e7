"""Data-parallel training on this machine: gradient agreement, throughput at 1 and 2 ranks, CartPole on 2 ranks.

Three parts, each launched with ``torchrun`` (gloo on a CPU, NCCL on GPUs):

1. ``check``: one ``online`` update of a small model on a fixed batch, in one process on the whole batch and on
   two ranks with half each, with every random draw replaced by its mode so both sides draw alike; the largest
   difference of the gradients and of the new weights. Then five updates with real sampling on two ranks: the
   largest difference of the weights between the ranks (0 when they stay identical).
2. ``throughput``: ``reverie train --preset classic`` on CartPole-v1 for a fixed budget on 1 rank (both cores, two
   threads) and on 2 ranks (one thread each): replayed steps and env steps per second once updates run.
3. ``cartpole``: ``torchrun --nproc-per-node 2 -m reverie train --preset classic`` until an evaluation reaches 450
   (budget 30k env steps counted over both ranks).

Writes ``benchmarks/results/distributed.json``::

    python benchmarks/distributed.py                    # all three parts (about 25 minutes on 2 cores)
    python benchmarks/distributed.py --parts check      # the gradient check alone (under a minute)
    python benchmarks/distributed.py --parts check --compile   # also of the compiled update (about 10 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
RUNS = Path(__file__).parent / "runs" / "distributed"
CHECK_OVERRIDES = ["env.id=CartPole-v1", "train.batch_size=4", "train.batch_length=8", "ac.horizon=5"]
"""The small update the check compares: the ``debug`` preset with a batch of 4 sequences (2 per rank)."""


def torchrun(ranks: int, args: list[str], threads: int, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``args`` (a script path or ``-m module ...``) on ``ranks`` local processes; output captured."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


# ----------------------------------------------------------------------------------------- 1. the gradient check
def check_worker(out: str, sample: bool, compiled: bool = False) -> None:
    """On each rank (or in one process): one update on its share of the fixed batch; writes grads and weights."""
    import numpy as np
    import torch

    from reverie import distributed
    from reverie.config import make_config
    from reverie.envs.base import Space
    from reverie.learner import Learner
    from reverie.seeding import seed_everything

    job = distributed.init("cpu")
    cfg = make_config(["debug"], [*CHECK_OVERRIDES, f"train.compile={str(compiled).lower()}"])
    seed_everything(0)
    learner = Learner(cfg, {"vector": Space(np.float32, (4,))}, Space(np.int64, (), 0, 2, discrete=True))
    distributed.broadcast_module(learner)
    if not sample:
        _draw_modes()
    rng = np.random.default_rng(0)
    B, T = cfg.train.batch_size, cfg.train.batch_length
    full = {
        "vector": rng.normal(size=(B, T, 4)).astype(np.float32),
        "action": rng.integers(0, 2, (B, T)),
        "reward": rng.normal(size=(B, T)).astype(np.float32),
        "is_first": np.zeros((B, T), bool),
        "is_terminal": rng.random((B, T)) < 0.05,
    }
    full["is_first"][:, 0] = True
    share = B // job.size
    mine = {k: v[job.rank * share : (job.rank + 1) * share] for k, v in full.items()}
    seed_everything(1 + job.rank)  # the ranks' own draws (only used with sample=True)
    for _ in range(5 if sample else 1):
        learner.update(mine, "online")
    grads = {name: p.grad.clone() for name, p in learner.named_parameters() if p.grad is not None}
    weights = {name: p.detach().clone() for name, p in learner.named_parameters()}
    torch.save({"grads": grads, "weights": weights}, Path(out) / f"rank{job.rank}-of-{job.size}.pt")
    distributed.shutdown()


def _draw_modes() -> None:
    """Replace every random draw of an update (latent and action samples) by the distribution's mode, with the
    same straight-through gradient, so one process on the whole batch and two ranks on halves draw alike."""
    import torch

    from reverie import actor_critic, rssm

    def mode(logits: torch.Tensor, generator: object = None) -> torch.Tensor:
        probs = torch.softmax(logits.float(), -1)
        onehot = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)
        return onehot + (probs - probs.detach())

    rssm.sample_onehot = mode  # type: ignore[assignment]
    actor_critic.sample_onehot = mode  # type: ignore[assignment]


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def run_check(workdir: Path, compiled: bool = False) -> dict:
    """The gradient and weight differences of part 1 (with ``compiled``, of the compiled update)."""
    import torch

    (workdir / "sampled").mkdir(parents=True, exist_ok=True)
    here = str(Path(__file__).resolve())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    flags = ["--compile"] if compiled else []
    worker = [here, "--worker", str(workdir), *flags]
    one = subprocess.run([sys.executable, *worker], env=env, capture_output=True, text=True, check=False)
    two = torchrun(2, worker, threads=1)
    sampled = torchrun(2, [here, "--worker", str(workdir / "sampled"), "--sample", *flags], threads=1)
    for proc in (one, two, sampled):
        if proc.returncode:
            raise SystemExit(f"check worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")

    def load(path: Path) -> dict:
        return torch.load(path, weights_only=True)

    ref, rank0, rank1 = (load(workdir / n) for n in ("rank0-of-1.pt", "rank0-of-2.pt", "rank1-of-2.pt"))
    s0, s1 = (load(workdir / "sampled" / n) for n in ("rank0-of-2.pt", "rank1-of-2.pt"))
    return {
        "grad_max_abs_diff": max_diff(ref["grads"], rank0["grads"]),
        "weight_max_abs_diff": max_diff(ref["weights"], rank0["weights"]),
        "ranks_grad_max_abs_diff": max_diff(rank0["grads"], rank1["grads"]),
        "ranks_weight_max_abs_diff_after_5_sampled_updates": max_diff(s0["weights"], s1["weights"]),
        "grad_max_abs": max(float(g.abs().max()) for g in ref["grads"].values()),
    }


# ----------------------------------------------------------------------------------------- 2. throughput
def rates(metrics: list[dict], after: int) -> dict:
    """Env steps and updates per second between the first logged row at or past ``after`` env steps and the last
    (the logger's ``fps/*`` are averages since the start; elapsed = steps / fps/env)."""
    rows = [r for r in metrics if "fps/env" in r and r["step"] >= after]
    a, b = rows[0], rows[-1]

    def at(r: dict) -> tuple[float, float]:
        elapsed = r["step"] / r["fps/env"]
        return elapsed, r["fps/updates"] * elapsed

    (t0, u0), (t1, u1) = at(a), at(b)
    return {"env_steps_per_s": (b["step"] - a["step"]) / (t1 - t0), "updates_per_s": (u1 - u0) / (t1 - t0)}


def backend(ranks: int) -> str:
    return "gloo" if ranks > 1 else "none (one process)"


def run_throughput(ranks: int, threads: int, steps: int) -> dict:
    from reverie.config import make_config
    from reverie.logger import read_jsonl

    cfg = make_config(["classic"])
    logdir = RUNS / f"throughput-{ranks}"
    args = ["-m", "reverie", "train", "--preset", "classic", "--steps", str(steps), "--logdir", str(logdir)]
    args += [
        "--overwrite",
        "--set",
        "run.eval_every=0",
        "run.progress=false",
        "run.log_every=250",
        "run.eval_episodes=0",
    ]
    start = time.perf_counter()
    proc = torchrun(ranks, args, threads)
    if proc.returncode:
        raise SystemExit(f"throughput run failed:\n{proc.stderr[-4000:]}")
    r = rates(read_jsonl(logdir / "metrics.jsonl"), cfg.train.prefill + 500)
    batch = cfg.train.batch_size * cfg.train.batch_length
    return {
        "ranks": ranks,
        "backend": backend(ranks),
        "threads_per_rank": threads,
        "replayed_steps_per_s": round(r["updates_per_s"] * batch, 1),
        "env_steps_per_s": round(r["env_steps_per_s"], 2),
        "updates_per_s": round(r["updates_per_s"], 3),
        "wall_s": round(time.perf_counter() - start, 1),
    }


# ----------------------------------------------------------------------------------------- 3. CartPole on 2 ranks
def run_cartpole(threshold: float = 450.0, budget: int = 30_000) -> dict:
    from reverie.logger import read_jsonl

    logdir = RUNS / "cartpole-2-ranks"
    args = ["-m", "reverie", "train", "--preset", "classic", "--steps", str(budget), "--logdir", str(logdir)]
    args += ["--overwrite", "--set", f"run.stop_at_return={threshold}", "run.progress=false"]
    start = time.perf_counter()
    proc = torchrun(2, args, threads=1)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"cartpole run failed:\n{proc.stderr[-4000:]}")
    curve = [(r["step"], r["eval/return"]) for r in read_jsonl(logdir / "metrics.jsonl") if "eval/return" in r]
    reached = next((s for s, ret in curve if ret >= threshold), None)
    return {
        "threshold": threshold,
        "budget_env_steps": budget,
        "steps_to_450": reached,
        "wall_minutes": round(wall / 60, 2),
        "curve": curve,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    runs = result.get("runs", [])
    if runs:
        labels = [f"{r['ranks']} rank(s) x {r['threads_per_rank']} thread(s)" for r in runs]
        ax1.bar(labels, [r["replayed_steps_per_s"] for r in runs], color=["#888", "#2a7"])
        ax1.set_ylabel("replayed steps / s (CartPole, classic)")
        ax1.set_title("throughput on this machine (gloo)")
    cart = result.get("cartpole_2_ranks")
    if cart:
        steps, rets = zip(*cart["curve"], strict=True) if cart["curve"] else ((), ())
        ax2.plot(steps, rets, "o-", color="#2a7", label="2 ranks")
        ax2.axhline(cart["threshold"], color="k", ls=":", lw=1)
        ax2.set_xlabel("env steps (both ranks)")
        ax2.set_ylabel("eval return")
        ax2.set_title("CartPole-v1 on 2 ranks")
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["check", "throughput", "cartpole"])
    parser.add_argument("--steps", type=int, default=6000, help="env steps of each throughput run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sample", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help="check: also the compiled update (minutes)")
    args = parser.parse_args()
    if args.worker:
        check_worker(args.worker, args.sample, args.compile)
        return
    out = RESULTS / "distributed.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    result["machine"] = {"cores": os.cpu_count(), "threads": "1 rank: 2 threads; 2 ranks: 1 thread each"}
    result["scaling_efficiency_is"] = "replayed steps/s on 2 ranks / on 1 rank, both using both cores"
    if "check" in args.parts:
        result.update(run_check(RUNS / "check"))
        if args.compile:
            result["compiled_check"] = run_check(RUNS / "check-compiled", compiled=True)
            print(json.dumps({"compiled_check": result["compiled_check"]}))
        print(json.dumps({k: v for k, v in result.items() if "diff" in k}))
    if "throughput" in args.parts:
        runs = [run_throughput(1, 2, args.steps), run_throughput(2, 1, args.steps)]
        result["runs"] = runs
        result["scaling_efficiency"] = round(runs[1]["replayed_steps_per_s"] / runs[0]["replayed_steps_per_s"], 3)
        print(json.dumps(runs))
    if "cartpole" in args.parts:
        result["cartpole_2_ranks"] = run_cartpole()
        print(json.dumps({k: v for k, v in result["cartpole_2_ranks"].items() if k != "curve"}))
    for run in result.get("runs", []):
        run["backend"] = backend(run["ranks"])
    if not any(r["backend"] == "nccl" for r in result.get("runs", [])):
        result["nccl"] = "not run: no machine with several GPUs was available to this benchmark"
    result["command"] = "python benchmarks/distributed.py"
    result["date"] = time.strftime("%Y-%m-%d %H:%M")
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, RESULTS / "distributed.png")


if __name__ == "__main__":
    main()
