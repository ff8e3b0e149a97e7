"""Speed benchmark: updates/s, env steps/s and achieved FLOP/s per size preset, fp32 and bf16.

For each size preset it builds a learner for 64x64 image observations (Crafter-like: 17 discrete
actions) and one for vector observations, times one online update (``Learner.update(batch, "online")``) on a
random batch, counts the FLOPs of one update with ``torch.utils.flop_counter`` (matmuls and convolutions,
forward and backward), and compares the achieved rate with this machine's matmul peak measured by the same script.
Env steps/s is the acting loop (one policy step per env step, CartPole) without updates.

    python benchmarks/speed.py                       # debug, size1m, size12m; fp32 and bf16
    python benchmarks/speed.py --sizes size1m --repeats 3
    python benchmarks/speed.py --device cuda --sizes size12m size50m

Writes ``benchmarks/results/speed.json`` and ``speed.png`` (``speed_cuda.*`` with ``--device cuda``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from reverie.config import make_config
from reverie.envs.base import Space
from reverie.learner import Learner

RESULTS = Path(__file__).parent / "results"


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int = 10) -> float:
    """FLOP/s of a square matmul (one thread on a CPU): the device's practical peak for ``dtype``."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3 if device.type == "cuda" else 1):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def random_batch(obs_space: dict[str, Space], actions: int, B: int, T: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    batch: dict[str, np.ndarray] = {}
    for key, space in obs_space.items():
        if space.is_image:
            batch[key] = rng.integers(0, 256, (B, T, *space.shape), dtype=np.uint8)
        else:
            batch[key] = rng.normal(size=(B, T, *space.shape)).astype(np.float32)
    batch["action"] = rng.integers(0, actions, (B, T))
    batch["reward"] = rng.normal(size=(B, T)).astype(np.float32)
    batch["is_first"] = np.zeros((B, T), bool)
    batch["is_terminal"] = np.zeros((B, T), bool)
    return batch


def time_updates(size: str, obs: str, precision: str, repeats: int, device: torch.device, compile: bool) -> dict:
    overrides = [f"train.precision={precision}", f"train.device={device}", f"train.compile={compile}"]
    cfg = make_config([size], overrides)
    if obs == "image":
        obs_space = {"image": Space(np.uint8, (64, 64, 3), 0, 255)}
        actions = 17
    else:
        obs_space = {"vector": Space(np.float32, (4,))}
        actions = 2
    learner = Learner(cfg, obs_space, Space(np.int64, (), 0, actions, discrete=True))
    batch = random_batch(obs_space, actions, cfg.train.batch_size, cfg.train.batch_length)
    for _ in range(2 if compile else 1):  # warm-up (compiled: one more, so no compilation falls in the timing)
        learner.update(batch, "online")
    flops = None
    if not compile:  # (FLOPs are the same compiled; the counter's dispatch mode would recompile)
        with FlopCounterMode(display=False) as counter:
            learner.update(batch, "online")
        flops = counter.get_total_flops()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        learner.update(batch, "online")
    sync(device)
    seconds = (time.perf_counter() - start) / repeats
    launches = {}
    if device.type == "cuda":
        try:  # a diagnostic: a profiler that fails here must not cost the timings above
            launches = launch_profile(learner, batch, device)
        except Exception as error:  # noqa: BLE001
            launches = {"profile_error": repr(error)}
    return {
        **launches,
        "params": sum(p.numel() for p in learner.parameters()),
        "batch": [cfg.train.batch_size, cfg.train.batch_length],
        "imagination": [cfg.train.batch_size * cfg.train.batch_length, cfg.ac.horizon],
        "seconds_per_update": seconds,
        "updates_per_s": 1 / seconds,
        "flops_per_update": flops,
        "flops_per_s": None if flops is None else flops / seconds,
    }


def launch_profile(learner: Learner, batch: dict[str, np.ndarray], device: torch.device) -> dict:
    """One update under the profiler: kernel launches, host-device waits and the GPU's busy share.

    Small recurrent models on a GPU are bound by the host issuing kernels, not by arithmetic: this says how
    many kernels one update issues and how much of its wall time the GPU spends computing."""
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        learner.update(batch, "online")
        sync(device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    waits = sum(
        e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync")
    )
    gpu_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return {"kernel_launches": launches, "host_waits": waits, "gpu_busy_fraction": gpu_us / 1e6 / wall}


def env_steps_per_s(size: str, device: torch.device, steps: int = 500) -> float:
    """Acting speed: CartPole steps/s with one policy forward per step (no updates)."""
    from reverie.envs import make_env

    cfg = make_config([size], [f"train.device={device}"])
    env = make_env(cfg.env, 0)
    learner = Learner(cfg, {"vector": env.obs_space["vector"]}, env.act_space["action"])
    obs = env.step({"action": 0, "reset": True})
    state = None
    start = time.perf_counter()
    for _ in range(steps):
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}
        action, state, _ = learner.policy(batch, state)
        obs = env.step({"action": action[0], "reset": bool(obs["is_last"])})
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["debug", "size1m", "size12m"])
    parser.add_argument("--obs", nargs="+", default=["vector", "image"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--compile", action="store_true", help="train.compile=true (results: speed_*_compile)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU here (torch.cuda.is_available() is False); use --device cpu")
    torch.set_num_threads(args.threads)
    # torch's defaults: fp32 matmuls stay fp32 on a GPU, cuDNN convolutions may use TF32.
    peaks = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device)}
    results: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__,
            "compile": args.compile,
            "load_average_at_start": os.getloadavg()[0],
        },
        "matmul_peak_flops_per_s": peaks,
        "runs": [],
    }
    for size in args.sizes:
        env_rate = env_steps_per_s(size, device)
        for obs in args.obs:
            for precision in args.precisions:
                row = {"size": size, "obs": obs, "precision": precision, "env_steps_per_s": env_rate}
                row.update(time_updates(size, obs, precision, args.repeats, device, args.compile))
                flops = row["flops_per_s"] or float("nan")
                row["fraction_of_peak"] = flops / peaks[precision]
                results["runs"].append(row)
                print(
                    f"{size:8s} {obs:6s} {precision}: {row['updates_per_s']:.2f} updates/s, "
                    f"{(row['flops_per_update'] or float('nan')) / 1e9:.2f} GFLOP/update, "
                    f"{row['fraction_of_peak'] * 100:.1f}% of {precision} peak, {env_rate:.0f} env steps/s"
                    + (
                        f", {row['kernel_launches']} kernel launches, {row['host_waits']} host waits, "
                        f"GPU busy {row['gpu_busy_fraction'] * 100:.0f}%"
                        if "kernel_launches" in row
                        else ""
                    )
                )
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = ("speed" if device.type == "cpu" else f"speed_{device.type}") + ("_compile" if args.compile else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    plot(results, RESULTS / f"{name}.png")


def plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    runs = results["runs"]
    labels = [f"{r['size']}\n{r['obs']}\n{r['precision']}" for r in runs]
    ax.bar(
        range(len(runs)),
        [r["updates_per_s"] for r in runs],
        color=["C0" if r["precision"] == "fp32" else "C1" for r in runs],
    )
    ax.set_xticks(range(len(runs)), labels, fontsize=6)
    machine = results["machine"]
    ax.set_ylabel(f"updates / s ({machine.get('gpu') or str(machine['threads']) + ' thread'})")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
