"""Side-by-side speed: seconds per DreamerV3 update of Reverie and of the fastest other implementations, one machine.

Every implementation trains the same thing: Crafter-shaped pixels (64x64x3, 17 actions), batch 16 x 64, imagination
from every replayed state (1024 x 15), the official ``size1m`` and ``size12m`` networks (Reverie's have the official
parameter counts, which this script reads back). Reverie runs each variant (fp32/bf16, eager/compiled) in its own
process; the row it reports for a size is the variant its defaults pick on this device. Peers run through
``benchmarks/peers/run_*.sh`` (installed by ``benchmarks/peers/install.sh``); a peer that cannot run is reported
with the reason instead of a figure.

    python benchmarks/speed.py                    # Reverie, size1m and size12m, + the default job (~40 min cold)
    python benchmarks/speed.py --peers            # + r2dreamer, official DreamerV3, sheeprl (~1.5 h more)
    python benchmarks/speed.py --device cuda      # on a GPU: ms/update, kernel launches, GPU busy share

Writes ``benchmarks/results/speed.json`` and ``speed.png`` (``speed_cuda.*`` with ``--device cuda``). Time it on a
quiet machine: the figures are medians of whole updates (sample excluded) after the compiling ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import reverie  # noqa: F401  (sets the OpenMP wait policy before torch loads)

# isort: split
import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
PEER_SCRIPTS = Path(__file__).parent / "peers"
PEERS = Path(os.environ.get("PEERS", Path.home() / ".cache" / "reverie-peers"))
COMMITS = {"official_dreamerv3": "e3f0224", "r2dreamer": "546e4fa", "sheeprl": "0.8.4 (PyPI)", "torchrl": "0.14.1"}
SPACE_SHAPE, ACTIONS = (64, 64, 3), 17


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int = 10) -> float:
    """FLOP/s of a large square matmul with all the threads training uses: the device's practical peak."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------------- Reverie, one variant
def reverie_variant(size: str, precision: str, compiled: bool, device: str, repeats: int) -> dict:
    """Time one Reverie variant in this process (run by the parent in a fresh process per variant)."""
    from torch.utils.flop_counter import FlopCounterMode

    from reverie.config import make_config
    from reverie.envs.base import Space
    from reverie.learner import Learner
    from reverie.nets import UpConv

    overrides = [f"train.precision={precision}", f"train.compile={compiled}", f"train.device={device}"]
    cfg = make_config([size], overrides)
    space = {"image": Space(np.uint8, SPACE_SHAPE, 0, 255)}
    learner = Learner(cfg, space, Space(np.int64, (), 0, ACTIONS, discrete=True))
    rng = np.random.default_rng(0)
    B, T = cfg.train.batch_size, cfg.train.batch_length
    batch = {
        "image": rng.integers(0, 256, (B, T, *SPACE_SHAPE), dtype=np.uint8),
        "action": rng.integers(0, ACTIONS, (B, T)),
        "reward": rng.normal(size=(B, T)).astype(np.float32),
        "is_first": np.zeros((B, T), bool),
        "is_terminal": np.zeros((B, T), bool),
    }
    dev = learner.device
    start = time.perf_counter()
    learner.update(batch, "online")  # compiles when compiled
    sync(dev)
    first = time.perf_counter() - start
    learner.update(batch, "online")
    times = []
    for _ in range(repeats):
        sync(dev)
        start = time.perf_counter()
        learner.update(batch, "online")
        sync(dev)
        times.append(time.perf_counter() - start)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    row = {
        "size": size,
        "precision": precision,
        "compiled": compiled,
        "s_per_update": statistics.median(times),
        "s_per_update_all": times,
        "first_update_s": first,
        "params": {
            "world_model": count(learner.wm) - learner.wm.rssm.no_action.numel(),
            "actor": count(learner.ac.actor),
            "critic": count(learner.ac.critic),
        },
        "batch": [B, T],
        "imagination": [B * T, cfg.ac.horizon],
    }
    if not compiled:  # FLOPs are the same compiled (the counter would recompile the program)
        with FlopCounterMode(display=False) as counter:
            learner.update(batch, "online")
        counts = counter.get_flop_counts()
        row["flops_per_update"] = counter.get_total_flops()
        # UpConv computes upsample + 5x5 conv as a 3x3 conv at low resolution: the model's own convolution has
        # 25/9 of its multiply-adds. The model's FLOPs count the official layer.
        ups = {id(m): sum(v.values()) for k, v in counts.items() if type(m := _module(learner, k)) is UpConv}
        up = sum(ups.values())
        row["model_flops_per_update"] = row["flops_per_update"] + up * (25 / 9 - 1)
    if dev.type == "cuda":
        row |= launch_profile(learner, batch, dev)
    return row


def _module(learner: torch.nn.Module, name: str) -> torch.nn.Module | None:
    """The submodule the flop counter names ``ConvDecoder.net.1`` (its outermost module's class, then attribute
    names); None for the global entry or a name that is not one module."""
    head, *parts = name.split(".")
    roots = [m for m in learner.modules() if type(m).__name__ == head]
    if len(roots) != 1:
        return None
    module: torch.nn.Module | None = roots[0]
    for part in parts:
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def launch_profile(learner, batch: dict, device: torch.device) -> dict:  # type: ignore[no-untyped-def]
    """One update under the profiler: kernel launches and the GPU's busy share of the wall time."""
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        learner.update(batch, "online")
        sync(device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    names = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaGraphLaunch")
    launches = sum(e.count for e in events if e.key in names)
    gpu_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return {"kernel_launches": launches, "gpu_busy_fraction": gpu_us / 1e6 / wall}


def run_variant(size: str, precision: str, compiled: bool, device: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--variant", size, precision, str(compiled), device, str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"size": size, "precision": precision, "compiled": compiled, "error": " | ".join(tail)}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------------- peers
def run_peer(name: str, size: str, minutes: int) -> dict:
    """Time one peer with its run script; the figure or why there is none."""
    scripts = {"official_dreamerv3": "run_official.sh", "r2dreamer": "run_torchpeer.sh", "sheeprl": "run_sheeprl.sh"}
    venvs = {"official_dreamerv3": "jax-venv", "r2dreamer": "torch-venv", "sheeprl": "sheeprl-venv"}
    if name == "torchrl":
        return {
            "s_per_update": None,
            "why": "not run: TorchRL 0.14.1's DreamerV3 recipe ships in the wheel without its Hydra configs, and "
            "its learner benchmark builds only the vector-observation DMC Walker model; no Crafter-shaped pixel "
            "learner to time without porting the recipe",
        }
    if not (PEERS / venvs[name] / "bin" / "python").exists():
        return {"s_per_update": None, "why": f"not installed in {PEERS}: run benchmarks/peers/install.sh"}
    env = {**os.environ, "PEERS": str(PEERS)}
    if name == "official_dreamerv3":
        env["LOG_EVERY"] = "60"
    with tempfile.TemporaryDirectory(prefix=f"speed-{name}-") as logdir:
        cmd = ["bash", str(PEER_SCRIPTS / scripts[name]), size, str(minutes), logdir]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        logs = sorted(Path(logdir).rglob("stdout.log"))  # the peer's own output, where a crash says why
        crash = logs[0].read_text(errors="replace").strip().splitlines()[-3:] if logs else []
    text = out.stdout + out.stderr
    found = re.search(r"pure update median ([\d.]+) s", text) or re.search(r"seconds/update = \S+ = ([\d.]+) s", text)
    params = re.search(r"PARAMS world_model=([\d,]+) actor=([\d,]+) critic=([\d,]+)", text)
    row: dict = {"commit": COMMITS[name], "minutes": minutes}
    if params:
        counts = (int(p.replace(",", "")) for p in params.groups())
        row["params"] = dict(zip(("world_model", "actor", "critic"), counts, strict=True))
    if not found:
        return row | {"s_per_update": None, "why": "no figure: " + " | ".join(text.strip().splitlines()[-3:] + crash)}
    compiled = name == "official_dreamerv3"  # jax.jit; r2dreamer and sheeprl run eager here (their CPU defaults)
    return row | {"s_per_update": float(found.group(1)), "precision": "bf16", "compiled": compiled}


# ----------------------------------------------------------------------------------------- the default job
def default_job(timeout_s: int) -> dict:
    """``reverie train`` with no arguments in a fresh folder: wall minutes and its JSON line."""
    with tempfile.TemporaryDirectory(prefix="speed-default-") as folder:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "reverie.cli", "train"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=folder, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"minutes": None, "why": f"not finished within {timeout_s / 60:.0f} minutes"}
        minutes = (time.perf_counter() - start) / 60
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return {"command": "reverie train", "minutes": minutes, "result": json.loads(lines[-1]) if lines else None}


# ----------------------------------------------------------------------------------------- main
def defaults(device: str) -> tuple[str, bool]:
    """The precision and compilation the default config resolves to on ``device``."""
    from reverie.config import make_config
    from reverie.learner import resolve_precision

    cfg = make_config(["size1m"], [f"train.device={device}"])
    return resolve_precision(cfg.train.precision, torch.device(device)), cfg.train.compile


VARIANTS = ["fp32:eager", "fp32:compiled", "bf16:eager", "bf16:compiled"]
PEER_NAMES = ["r2dreamer", "official_dreamerv3", "sheeprl"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["size1m", "size12m"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed updates per variant (after two warm-ups)")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        help="Reverie's variants to time (default: all four; none with --merge)",
    )
    parser.add_argument(
        "--peers", nargs="*", choices=PEER_NAMES, help="also time the peers installed in $PEERS (all, or those named)"
    )
    parser.add_argument("--peer-minutes", type=int, nargs=2, default=[6, 12], help="budget per peer run by size")
    parser.add_argument("--no-default-job", action="store_true", help="skip timing `reverie train`")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="time only the variants and peers named (and the default job, unless --no-default-job) and replace "
        "their figures in the existing JSON (a peer that failed in the full run, say)",
    )
    parser.add_argument("--variant", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        size, precision, compiled, device, repeats = args.variant
        print(json.dumps(reverie_variant(size, precision, compiled == "True", device, int(repeats))))
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU here; use --device cpu")
    name = "speed" if device.type == "cpu" else f"speed_{device.type}"
    peers = [] if args.peers is None else (args.peers or PEER_NAMES)
    if args.merge:
        if not (RESULTS / f"{name}.json").exists():
            parser.error(f"--merge: {RESULTS / name}.json does not exist; run without --merge first")
        results = json.loads((RESULTS / f"{name}.json").read_text())
        variants = args.variants or []
    else:
        results = new_results(device)
        variants = args.variants or VARIANTS
        peers = peers if device.type == "cpu" else []
    # The OpenMP wait policy moves eager and compiled CPU timings by 1.3-1.6x, and the torch peers inherit it.
    results["machine"]["openmp"] = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    precision, compiled = results["defaults"]["precision"], results["defaults"]["compiled"]
    for i, size in enumerate(args.sizes):
        for variant in variants:
            prec, mode = variant.split(":")
            row = run_variant(size, prec, mode == "compiled", args.device, args.repeats)
            row |= {"timed": _stamp(), "openmp": results["machine"]["openmp"]}
            results["variants"] = [r for r in results["variants"] if _key(r) != _key(row)]
            results["variants"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "s_per_update_all"}), flush=True)
        chosen = next((r for r in results["variants"] if _key(r) == (size, precision, compiled)), {})
        entry = next((e for e in results["side_by_side"] if e["size"] == size), None)
        if entry is None:
            entry = {"size": size}
            results["side_by_side"].append(entry)
        keys = ("s_per_update", "precision", "compiled", "params", "timed", "openmp")
        entry["reverie"] = {k: chosen[k] for k in keys if k in chosen}
        if device.type == "cpu":
            for peer in [*PEER_NAMES, "torchrl"]:
                if peer in peers or peer == "torchrl":
                    entry[peer] = run_peer(peer, size, args.peer_minutes[min(i, 1)])
                    entry[peer]["timed"] = _stamp()
                    if peer in ("r2dreamer", "sheeprl"):  # torch: they inherit the OpenMP settings
                        entry[peer]["openmp"] = results["machine"]["openmp"]
                elif not args.merge:
                    entry[peer] = {"s_per_update": None, "why": "not timed in this run (--peers)"}
                print(size, peer, json.dumps(entry[peer]), flush=True)
            ratio(entry)
        results["fraction_of_peak"] = fractions(results)
        save(results, name)  # after each size, so a long run that dies keeps what it measured
    if device.type == "cpu" and not args.no_default_job:
        job = default_job(timeout_s=600)
        results["default_job_minutes"] = job["minutes"]
        results["default_job"] = job
        print("default job", json.dumps(job), flush=True)
    save(results, name)
    plot(results, RESULTS / f"{name}.png")


def new_results(device: torch.device) -> dict:
    """The JSON's frame: the machine, the defaults it resolves to, the matmul peaks."""
    precision, compiled = defaults(str(device))
    return {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__,
            "load_average_at_start": os.getloadavg()[0],
        },
        "defaults": {"precision": precision, "compiled": compiled},
        "matmul_peak_flops_per_s": {
            "fp32": matmul_peak(torch.float32, device),
            "bf16": matmul_peak(torch.bfloat16, device),
        },
        "variants": [],
        "side_by_side": [],
        "fraction_of_peak": {},
    }


def fractions(results: dict) -> dict:
    """Per size: the model's FLOPs per update over seconds per update over the matmul peak of the precision, for
    the default variant (``fraction``) and for every variant timed (``by_variant``)."""
    precision, compiled = results["defaults"]["precision"], results["defaults"]["compiled"]
    out: dict = {}
    for size in dict.fromkeys(r["size"] for r in results["variants"]):
        rows = [r for r in results["variants"] if r["size"] == size and r.get("s_per_update")]
        flops = next((r["model_flops_per_update"] for r in rows if r.get("model_flops_per_update")), None)
        if not flops:
            continue
        peaks = results["matmul_peak_flops_per_s"]
        by_variant = {
            _label(r["precision"], r["compiled"]): flops / r["s_per_update"] / peaks[r["precision"]] for r in rows
        }
        out[size] = {
            "precision": precision,
            "model_flops_per_update": flops,
            "flops_per_update_as_run": next(r["flops_per_update"] for r in rows if r.get("flops_per_update")),
            "peak_flops_per_s": peaks[precision],
            "fraction": by_variant.get(_label(precision, compiled)),
            "by_variant": by_variant,
        }
    return out


def _key(row: dict) -> tuple[str, str, bool]:
    """What names a variant row: size, precision, compiled."""
    return row["size"], row["precision"], row["compiled"]


def _label(precision: str, compiled: bool) -> str:
    """A variant as ``--variants`` spells it, e.g. ``bf16:compiled``."""
    return f"{precision}:{'compiled' if compiled else 'eager'}"


def _stamp() -> str:
    """When a figure was timed, in UTC to the minute."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def ratio(entry: dict) -> None:
    """Set the entry's ``ratio_vs_fastest_peer``: the fastest timed peer's seconds over Reverie's."""
    timed = [entry[p]["s_per_update"] for p in COMMITS if entry.get(p, {}).get("s_per_update")]
    if timed and entry["reverie"].get("s_per_update"):
        entry["ratio_vs_fastest_peer"] = min(timed) / entry["reverie"]["s_per_update"]


def save(results: dict, name: str) -> None:
    """Write ``benchmarks/results/<name>.json`` atomically (a temporary file renamed over the old one)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / f"{name}.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(RESULTS / f"{name}.json")


def plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = ["reverie", "r2dreamer", "sheeprl", "official_dreamerv3", "torchrl"]
    fig = Figure(figsize=(8, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        values = [e.get(name, {}).get("s_per_update") or 0.0 for e in results["side_by_side"]]
        xs = [i + (j - len(names) / 2 + 0.5) * width for i in range(len(values))]
        ax.bar(xs, values, width, label=name.replace("_", " "))
        for x, v in zip(xs, values, strict=True):
            ax.text(x, v, f"{v:.2f}" if v else "n/a", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(results["side_by_side"])), [e["size"] for e in results["side_by_side"]])
    machine = results["machine"]
    ax.set_ylabel(f"seconds per update ({machine.get('gpu') or str(machine['cores']) + ' CPU cores'})")
    ax.set_title("One DreamerV3 update, Crafter-shaped, batch 16 x 64 (lower is faster)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
