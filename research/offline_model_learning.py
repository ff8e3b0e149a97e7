"""How fast the world model learns what symbolic Crafter's view does: model variants against the clock.

Imagination RL can only help once the model knows what its actions do (``offline_advantage_probe.py``
found that after 1,350 updates it does not). This benchmark trains only the offline model phase
(``reverie.offline.model_update``: world model, BC head, data critic) of each variant on the same recorded
dataset for the same budget of CPU time, one process and one torch thread each, and every ``--eval-every``
updates measures on a fixed batch of held-out episodes, per cell of the 7 x 9 local view (materials):

* ``present``: the picture decoded from the filtered state, which has seen the frame (representation);
* ``next``: the picture one imagined step ahead of the previous filtered state, with the recorded action
  (dynamics); ``copy``: the previous frame as the guess (a model that predicts "nothing changes");
* ``next_changed`` / ``next_changed_wrong``: ``next`` on the cells the step changed (where ``copy`` is
  always wrong), with the recorded action and with another random action; their gap is how much of the
  change the model attributes to the action.

Variants are ``name:key=value,key=value`` on top of ``--set`` (the settings of the offline Crafter runs).
Writes ``research/results/offline_model_learning.json`` and ``.png``.

    python research/offline_model_learning.py --minutes 15 --variants base b64:train.batch_size=64
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).parent / "runs" / "offline_crafter" / "data"
BASE = [
    "model.units=256",
    "ac.units=256",
    "model.hidden=256",
    "model.classes=16",
    "optim.lr=1e-3",
    "train.batch_length=32",
    "model.vector_codec=crafter_grid",
    "ac.obs_input=true",
    "ac.feat_input=false",
]
"""The model settings of the offline Crafter runs (docs/offline.md, the observation-reading variant)."""


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``name:key=value,key=value`` -> (name, overrides); a bare name has no overrides."""
    name, _, rest = text.partition(":")
    return name, [kv for kv in rest.split(",") if kv]


def measure(learner: Any, batch_np: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, float]:
    """The module docstring's shares on a (B, T) batch of held-out sequences."""
    import torch

    from reverie.crafter.codec import cell_materials

    learner.eval()
    with torch.no_grad(), learner.autocast():
        batch = learner.sequences(batch_np)
        states, _, _ = learner.wm.observe(batch)
        rssm = learner.wm.rssm
        feat = rssm.feat(states)
        prev = {k: v[:, :-1].flatten(0, 1) for k, v in states.items()}
        actions = batch["action"][:, 1:].flatten(0, 1)
        n = actions.shape[-1]
        wrong_idx = (actions.argmax(-1) + torch.from_numpy(rng.integers(1, n, len(actions)))) % n
        wrong = torch.nn.functional.one_hot(wrong_idx, n).to(actions.dtype)
        # a decoder that reads the frame before (model.decoder_prev) gets the real one; others ignore it
        seen = batch["vector"].float()
        before = {"vector": seen[:, :-1].flatten(0, 1)}
        pictures = {}
        for name, act in (("next", actions), ("wrong", wrong)):
            nxt = rssm.imagine_step(prev, act)
            pictures[name] = learner.decoded_obs(rssm.feat(nxt), ["vector"], before)["vector"]
        earlier = torch.cat([torch.zeros_like(seen[:, :1]), seen[:, :-1]], 1)
        earlier = earlier * (1.0 - batch["is_first"].float()).unsqueeze(-1)
        present = learner.decoded_obs(feat, ["vector"], {"vector": earlier})["vector"]
    learner.train()
    truth = cell_materials(batch_np["vector"])  # (B, T, 63)
    valid = ~batch_np["is_first"][:, 1:].astype(bool).reshape(-1)  # transitions inside one episode
    now, before = truth[:, 1:].reshape(-1, truth.shape[-1])[valid], truth[:, :-1].reshape(-1, truth.shape[-1])[valid]
    changed = now != before
    nxt = cell_materials(pictures["next"].cpu().numpy())[valid]
    wrong_pic = cell_materials(pictures["wrong"].cpu().numpy())[valid]
    pres = cell_materials(present.cpu().numpy())[:, 1:].reshape(-1, truth.shape[-1])[valid]
    return {
        "present": float((pres == now).mean()),
        "next": float((nxt == now).mean()),
        "copy": float((before == now).mean()),
        "next_changed": float((nxt == now)[changed].mean()),
        "next_changed_wrong": float((wrong_pic == now)[changed].mean()),
        "changed_share": float(changed.mean()),
    }


def run_variant(job: dict[str, Any]) -> dict[str, Any]:
    """Train one variant's model phase for ``minutes`` in a fresh process, measuring as it goes."""
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    torch.set_num_threads(1)
    from reverie import Dreamer, make_config
    from reverie.data import Dataset
    from reverie.offline import dataset_replay, model_update

    overrides = [*job["base"], *job["overrides"], f"train.seed={job['seed']}", "run.logdir=/tmp/reverie-unused"]
    cfg = make_config(["offline"], overrides)
    data, held_out = Dataset(job["data"]), Dataset(job["held_out"])
    learner = Dreamer(cfg, data.obs_space, data.act_space["action"]).learner
    replay = dataset_replay(data, cfg.train.replay_chunk, job["seed"])
    test = dataset_replay(held_out, cfg.train.replay_chunk, 12345).sample(job["eval_batch"], cfg.train.batch_length)
    rng = np.random.default_rng(job["seed"])
    curve: list[dict[str, float]] = []
    start, updates, trained = time.time(), 0, 0.0
    while True:
        done = trained > 60 * job["minutes"]
        if updates % job["eval_every"] == 0 or done:
            curve.append({"updates": updates, "train_s": trained, **measure(learner, test, rng)})
            print(f"{job['name']}: {curve[-1]}", flush=True)
        if done:
            break
        t0 = time.process_time()  # CPU time: variants sharing the cores are charged only their own work
        model_update(learner, replay.sample(cfg.train.batch_size, cfg.train.batch_length))
        trained += time.process_time() - t0
        updates += 1
    return {"name": job["name"], "overrides": job["overrides"], "curve": curve, "wall_s": time.time() - start}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        ("present", "present view (filtered)"),
        ("next", "next view (1 imagined step)"),
        ("next_changed", "changed cells, next view"),
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6))
    for ax, (key, title) in zip(axes, keys, strict=True):
        for name, run in result["variants"].items():
            curve = run["curve"]
            minutes = [p["train_s"] / 60 for p in curve]
            line = ax.plot(minutes, [p[key] for p in curve], label=name)[0]
            if key == "next_changed":
                ax.plot(minutes, [p["next_changed_wrong"] for p in curve], ":", color=line.get_color())
        if key == "next":
            copy = np.mean([run["curve"][-1]["copy"] for run in result["variants"].values()])
            ax.axhline(copy, color="gray", ls="--", label="copy previous frame")
        ax.set(title=title, xlabel="training CPU minutes (1 thread)", ylabel="cells right")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[-1].text(0.02, 0.95, "dotted: another action", transform=axes[-1].transAxes, fontsize=8, va="top")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["base"], help="name[:key=value,...]")
    parser.add_argument("--minutes", type=float, default=15.0, help="training CPU minutes per variant")
    parser.add_argument("--eval-every", type=int, default=100, help="updates between measurements")
    parser.add_argument("--eval-batch", type=int, default=48, help="held-out sequences measured")
    parser.add_argument("--data", type=Path, default=DATA / "symbolic-200-a1-curious")
    parser.add_argument("--held-out", type=Path, default=DATA / "symbolic-heldout-curious")
    parser.add_argument("--set", nargs="*", default=BASE, help="settings shared by all variants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="offline_model_learning")
    args = parser.parse_args()
    for folder in (args.data, args.held_out):
        if not (folder / "dataset.json").exists():
            raise SystemExit(
                f"{folder} is not a dataset; record it first, e.g. `python research/offline_crafter_tagged.py "
                "--obs symbolic --fracs 1.0 --policy scripted-curious --tag curious` and "
                "`python research/offline_craft_probe.py` (which records the held-out episodes)."
            )
    jobs = []
    for text in args.variants:
        name, overrides = parse_variant(text)
        jobs.append(
            {
                "name": name,
                "overrides": overrides,
                "base": args.set,
                "seed": args.seed,
                "minutes": args.minutes,
                "eval_every": args.eval_every,
                "eval_batch": args.eval_batch,
                "data": str(args.data),
                "held_out": str(args.held_out),
            }
        )
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(run_variant, jobs))
    result = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "variants": {run["name"]: run for run in runs},
    }
    from reverie.fileio import write_text

    RESULTS.mkdir(exist_ok=True)
    write_text(RESULTS / f"{args.out}.json", json.dumps(result, indent=1))
    plot(result, RESULTS / f"{args.out}.png")
    for name, run in result["variants"].items():
        last = run["curve"][-1]
        shares = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k not in ("updates", "train_s"))
        print(f"{name}: {last['updates']} updates, {shares}")


if __name__ == "__main__":
    main()
