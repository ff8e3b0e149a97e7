"""World-model scaling: the RSSM and the transformer at three sizes each, on the same recorded pixel Crafter.

Every model learns from the same dataset (the scripted player, 500 episodes of 64x64 frames cut at 200 steps) for
the same number of updates of the same batch (so the same training frames), in the offline ``model`` phase, which
trains the world model. Then, on held-out episodes (other worlds), each model filters 5 recorded frames and dreams
open-loop with the recorded actions; at horizons 1, 8 and 32 after the context its pictured frame is scored:

- ``inventory_acc``: the share of the 16 inventory counts read correctly from the pictured frame by a fixed reader
  (a small CNN on the frame's two inventory rows, trained here on real frames of the training episodes; its own
  accuracy on real held-out frames is ``reader.real_acc``, the ceiling);
- ``psnr``: against the real frame; ``reward_mae``: the predicted reward's error, averaged up to the horizon;
- ``train_fps``: training frames per second (two threads, eager, the update's default precision; the wall time of
  ``fit``, loading the dataset included); ``dream_fps``: pictured frames per second of one dream on one thread.

``copy_context`` scores the last context frame's inventory held for the whole horizon (what a model that never
changes the inventory gets). Datasets, the reader and the models go to ``benchmarks/runs/world_model_scaling/``; a
finished model is reused (``--fresh`` trains again).

``--obs symbolic``: the same study on the symbolic variant (``crafter-symbolic``, the same player and seeds), where
the inventory is part of the observation: the models use Crafter's codec (``crafter_grid_delta``: each count a
class, each step pictured from the one before), each count is read directly from the pictured vector (no reader),
``vector_mse`` stands for the frame error, and the results go to ``world_model_scaling_symbolic.json`` and ``.png``.

    python benchmarks/world_model_scaling.py                       # ~70 minutes on 2 cores (800 updates per model)
    python benchmarks/world_model_scaling.py --updates 2000 --kinds transformer --sizes s l
    python benchmarks/world_model_scaling.py --obs symbolic        # the symbolic variant
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from reverie import Dreamer  # noqa: E402
from reverie.config import make_config  # noqa: E402
from reverie.crafter.env import ITEMS, symbolic_size  # noqa: E402
from reverie.data.dataset import Dataset  # noqa: E402
from reverie.fileio import write_text  # noqa: E402

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS = ROOT / "runs" / "world_model_scaling"
HORIZONS = (1, 8, 32)
CONTEXT = 5
EPISODES, HELD_OUT, LENGTH = 500, 24, 200
BATCH, SEQ = 16, 32
INVENTORY_ROWS = 48  # the image rows below this one draw the inventory (2 of crafter's 9 grid rows, 64x64 frames)
ENV_IDS = {"pixels": "crafter", "symbolic": "crafter-symbolic"}
INVENTORY_AT = symbolic_size() - len(ITEMS) - 6  # the symbolic vector: map, inventory (16), facing (4), 2 more
# Symbolic: Crafter's codec (each count a class, read with the previous picture). The generic MLP decoder regresses
# the 16 counts among 1,219 values and read back only 0.58-0.63 of them from the real steps it was shown.
CODEC = ["model.vector_codec=crafter_grid_delta"]
SIZES: dict[str, dict[str, list[str]]] = {
    "rssm": {
        "s": ["model.deter=256", "model.hidden=32", "model.classes=4", "model.cnn_depth=4", "model.units=32"],
        "m": ["model.deter=512", "model.hidden=64", "model.classes=8", "model.cnn_depth=8", "model.units=64"],
        "l": ["model.deter=1024", "model.hidden=128", "model.classes=16", "model.cnn_depth=16", "model.units=128"],
    },
    "transformer": {
        "s": ["model.units=32", "model.cnn_depth=4"],
        "m": ["model.units=64", "model.cnn_depth=8"],
        "l": ["model.units=128", "model.cnn_depth=16"],
    },
}


def record(folder: Path, episodes: int, seed: int, obs: str = "pixels") -> Path:
    """The scripted player's episodes (``obs``: pixels or the symbolic vector), recorded once."""
    if not (folder / "dataset.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        cmd = [sys.executable, "-m", "reverie", "data", "record", "--env", ENV_IDS[obs], "--policy", "scripted"]
        cmd += ["--episodes", str(episodes), "--out", str(folder), "--time-limit", str(LENGTH), "--seed", str(seed)]
        if subprocess.run(cmd).returncode:
            raise SystemExit(f"Recording {folder} failed (error above); Crafter needs: bash scripts/setup.sh crafter")
    return folder


def inventory_keys(data: Dataset, obs: str = "pixels") -> list[str]:
    """The inventory's log keys: sorted by name (the reader's order), or in the symbolic vector's order."""
    if obs == "symbolic":
        return [f"log/inventory_{name}" for name in ITEMS]
    return sorted(k for k in data.info["log_keys"] if k.startswith("log/inventory_"))


class Reader(nn.Module):
    """Inventory counts (0-9 each) from the inventory rows of a 64x64 frame in [0, 1]: logits (N, items, 10)."""

    def __init__(self, items: int):
        super().__init__()
        self.items = items
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(64 * 4 * 16, 256), nn.SiLU(), nn.Linear(256, items * 10),
        )  # fmt: skip

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames`` (N, 64, 64, 3) floats in [0, 1]."""
        rows = frames[:, INVENTORY_ROWS:].permute(0, 3, 1, 2).float()
        return self.net(rows).reshape(len(frames), self.items, 10)

    def read(self, frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self(chunk).argmax(-1) for chunk in frames.split(512)])


def frames_and_counts(data: Dataset, keys: list[str], every: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    images, counts = [], []
    for episode in data.episodes():
        images.append(episode["image"][::every])
        counts.append(np.stack([episode[k][::every] for k in keys], -1))
    return torch.as_tensor(np.concatenate(images)), torch.as_tensor(np.concatenate(counts)).long().clamp(0, 9)


def train_reader(train: Dataset, held: Dataset, keys: list[str], path: Path, steps: int = 1500) -> tuple[Reader, float]:
    """The fixed reader (trained once, kept in ``path``) and its accuracy on real held-out frames."""
    reader = Reader(len(keys))
    if path.exists():
        reader.load_state_dict(torch.load(path, weights_only=True))
    else:
        torch.manual_seed(0)
        images, counts = frames_and_counts(train, keys, every=2)
        opt = torch.optim.Adam(reader.parameters(), 1e-3)
        for _ in range(steps):
            idx = torch.randint(0, len(images), (256,))
            logits = reader(images[idx].float() / 255.0)
            loss = nn.functional.cross_entropy(logits.reshape(-1, 10), counts[idx].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.save(reader.state_dict(), path)
    images, counts = frames_and_counts(held, keys)
    return reader, float((reader.read(images.float() / 255.0) == counts).float().mean())


def windows(held: Dataset, keys: list[str], span: int, stride: int = 40) -> dict[str, np.ndarray]:
    """Every held-out window of ``span`` steps starting at multiples of ``stride``: (N, span, ...) arrays."""
    out: dict[str, list[np.ndarray]] = {}
    want = [k for k in held.info["obs_space"] if not k.startswith("log/")]  # the obs keys and the flags
    want = list(dict.fromkeys([*want, "action", "reward", "is_first", "is_last", "is_terminal", *keys]))
    for episode in held.episodes():
        for start in range(0, len(episode["reward"]) - span + 1, stride):
            for k in want:
                out.setdefault(k, []).append(episode[k][start : start + span])
    return {k: np.stack(v) for k, v in out.items()}


def rollout(agent: Dreamer, batch_np: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Open loop: filter ``CONTEXT`` frames, dream the rest with the recorded actions. Pictured frames (N, H, 64,
    64, 3) in [0, 1] (symbolic: the pictured vectors (N, H, 1219)) and predicted rewards (N, H)."""
    learner = agent.learner
    wm = learner.wm
    batch = learner.sequences({k: v for k, v in batch_np.items() if not k.startswith("log/")})
    frames, rewards = [], []
    with torch.no_grad(), learner.autocast(acting=True):
        for part in range(0, len(batch["reward"]), 32):
            sl = {k: v[part : part + 32] for k, v in batch.items()}
            if wm.decoder.images:
                feats, predicted, _ = wm.dream_recorded(sl, CONTEXT)
                pictured = wm.decoder.images_of(wm.decoder_input(feats))["image"].float().clamp(0, 1)
            else:  # each step's vector pictured from the one before, which Crafter's codec reads
                _, predicted, vectors = wm.dream_recorded(sl, CONTEXT, ["vector"])
                pictured = vectors["vector"].float()
            frames.append(pictured)
            rewards.append(predicted.float())
    return torch.cat(frames), torch.cat(rewards)


def dream_fps(agent: Dreamer, steps: int = 64) -> float:
    """Pictured frames per second of one dream (batch 1, one thread), after a few warm-up steps."""
    wm, learner = agent.learner.wm, agent.learner
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), learner.autocast(acting=True):
            state = wm.initial(1, learner.device)
            action = torch.zeros(1, learner.action_dim)
            action[0, 0] = 1.0
            for i in range(steps + 8):
                if i == 8:
                    start = time.perf_counter()
                state = wm.step(state, action, None, list(wm.decoder.shapes)).state
        return steps / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def train_model(
    kind: str, size: str, train: Path, updates: int, fresh: bool, obs: str = "pixels"
) -> tuple[Dreamer, float | None]:
    """A model trained on the dataset ``train`` for ``updates`` model-phase updates (reused when its run folder,
    beside the dataset, has them); its training frames per second when trained now."""
    logdir = train.parent / f"{kind}-{size}"
    if fresh:
        shutil.rmtree(logdir, ignore_errors=True)
    overrides = [
        f"model.kind={kind}", "model.ensemble=0", "offline.rl_frac=0", "offline.bc_frac=0", "run.eval_episodes=0",
        f"train.batch_size={BATCH}", f"train.batch_length={SEQ}", "train.compile=false", f"run.logdir={logdir}",
        "run.progress=false", "run.tensorboard=false", "run.save_every=100", *SIZES[kind][size],
        *(CODEC if obs == "symbolic" else []),
    ]  # fmt: skip
    cfg = make_config(["offline"], overrides)
    agent = Dreamer.load(logdir, cfg) if (logdir / "checkpoint").exists() else Dreamer(cfg)
    before = agent.state.offline_updates
    if before >= updates:
        return agent, None
    start = time.time()
    agent.fit(str(train), steps=updates)
    return agent, (agent.state.offline_updates - before) * BATCH * SEQ / (time.time() - start)


def score(agent: Dreamer, batch: dict[str, np.ndarray], keys: list[str], reader: Reader | None) -> dict[str, Any]:
    """Inventory accuracy, frame error and reward error of the open-loop dreams at each horizon; ``reader`` None:
    the symbolic variant (the counts read from the pictured vector, its squared error as ``vector_mse``)."""
    frames, rewards = rollout(agent, batch)
    counts = torch.as_tensor(np.stack([batch[k][:, CONTEXT:] for k in keys], -1)).long().clamp(0, 9)
    real_reward = torch.as_tensor(batch["reward"][:, CONTEXT:]).float()
    error = "psnr" if reader is not None else "vector_mse"
    out: dict[str, Any] = {"inventory_acc": {}, error: {}, "reward_mae": {}}
    for h in HORIZONS:
        if reader is not None:
            read = reader.read(frames[:, h - 1])
            truth = torch.as_tensor(batch["image"][:, CONTEXT + h - 1]).float() / 255.0
            mse = ((frames[:, h - 1] - truth) ** 2).mean((1, 2, 3)).clamp(min=1e-10)
            out[error][str(h)] = round(float((10 * torch.log10(1.0 / mse)).mean()), 2)
        else:
            pictured = frames[:, h - 1]
            read = (pictured[:, INVENTORY_AT : INVENTORY_AT + len(ITEMS)] * 9).round().long().clamp(0, 9)
            truth = torch.as_tensor(batch["vector"][:, CONTEXT + h - 1]).float()
            out[error][str(h)] = round(float(((pictured - truth) ** 2).mean()), 5)
        out["inventory_acc"][str(h)] = round(float((read == counts[:, h - 1]).float().mean()), 4)
        out["reward_mae"][str(h)] = round(float((rewards[:, :h] - real_reward[:, :h]).abs().mean()), 4)
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    error = "psnr" if "reader" in result else "vector_mse"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind, marker in (("rssm", "o"), ("transformer", "s")):
        runs = sorted((r for r in result["runs"] if r["kind"] == kind), key=lambda r: r["params"])
        if not runs:
            continue
        params = [r["params"] for r in runs]
        for h, style in zip(HORIZONS, (":", "--", "-"), strict=True):
            for ax, key in zip(axes, ("inventory_acc", error), strict=True):
                ax.plot(params, [r[key][str(h)] for r in runs], style, marker=marker, label=f"{kind} h={h}")
    copy = result["copy_context"]["inventory_acc"]["32"]
    axes[0].axhline(copy, color="grey", lw=0.8, label=f"copy context, h=32 ({copy:.3f})")
    if "reader" in result:
        axes[0].axhline(result["reader"]["real_acc"], color="black", lw=0.8, label="reader on real frames")
    names = ("inventory counts read exactly", "PSNR (dB)" if error == "psnr" else "squared error of the vector")
    for ax, name in zip(axes, names, strict=True):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # the decades only: no crowded labels
        ax.set_xlabel("world-model parameters")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    what = "pixel" if "reader" in result else "symbolic"
    fig.suptitle(f"World models on recorded {what} Crafter, {result['train_frames']:,} training frames each")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=800, help="model updates per model (batch 16 x 32)")
    parser.add_argument("--kinds", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--sizes", nargs="+", default=["s", "m", "l"], choices=["s", "m", "l"])
    parser.add_argument("--fresh", action="store_true", help="train the models again")
    parser.add_argument("--obs", default="pixels", choices=list(ENV_IDS), help="the observation: pixels or symbolic")
    args = parser.parse_args()
    root = RUNS if args.obs == "pixels" else RUNS / args.obs
    root.mkdir(parents=True, exist_ok=True)
    train_folder = record(root / "train", EPISODES, seed=0, obs=args.obs)
    train, held = Dataset(train_folder), Dataset(record(root / "heldout", HELD_OUT, seed=1, obs=args.obs))
    keys = inventory_keys(train, args.obs)
    reader: Reader | None = None
    real_acc = 0.0
    if args.obs == "pixels":
        reader, real_acc = train_reader(train, held, keys, root / "reader.pt")
        print(f"inventory reader: {real_acc:.4f} of the counts on real held-out frames", flush=True)
    batch = windows(held, keys, CONTEXT + max(HORIZONS))
    counts = np.stack([batch[k] for k in keys], -1)
    copy = {str(h): round(float((counts[:, CONTEXT - 1] == counts[:, CONTEXT + h - 1]).mean()), 4) for h in HORIZONS}
    out = RESULTS / ("world_model_scaling.json" if args.obs == "pixels" else f"world_model_scaling_{args.obs}.json")
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    done = {(r["kind"], r["size"]): r for r in result.get("runs", []) if r.get("updates") == args.updates}
    for kind in args.kinds:
        for size in args.sizes:
            agent, fps = train_model(kind, size, train_folder, args.updates, args.fresh, args.obs)
            row = {
                "kind": kind, "size": size, "params": sum(p.numel() for p in agent.learner.wm.parameters()),
                "updates": args.updates, "train_frames": args.updates * BATCH * SEQ, "config": SIZES[kind][size],
                **score(agent, batch, keys, reader),
                "train_fps": round(fps, 1) if fps else done.get((kind, size), {}).get("train_fps"),
                "dream_fps": round(dream_fps(agent), 1),
            }  # fmt: skip
            done[(kind, size)] = row
            print(json.dumps(row), flush=True)
    result = {
        "command": " ".join(["python benchmarks/world_model_scaling.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "dataset": {"player": "scripted", "episodes": EPISODES, "held_out_episodes": HELD_OUT, "cut_at": LENGTH,
                    "steps": train.num_steps, "windows": len(batch["reward"]), "context": CONTEXT},
        "train_frames": args.updates * BATCH * SEQ,
        "items": [k.removeprefix("log/inventory_") for k in keys],
        "copy_context": {"inventory_acc": copy},
        "runs": sorted(done.values(), key=lambda r: (r["kind"], r["params"])),
    }  # fmt: skip
    if reader is not None:
        result["reader"] = {"real_acc": round(real_acc, 4), "items": result.pop("items")}
    RESULTS.mkdir(exist_ok=True)
    write_text(out, json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
