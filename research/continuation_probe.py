"""Does a CartPole run's continuation head know its replay's endings? Per kind of ending, against a fresh head.

Filters every episode of a run's replay through its world model (``WorldModel.observe``) and prints the continuation
the head predicts at the real endings, split into the cart leaving the track (|x| > 2.4) and the pole falling
(|theta| > 0.21 rad); then trains a fresh head of the same shape (``MLP``, LaProp with the run's clipping) on the
frozen features for ``--steps`` updates of 512 steps, uniform over the replay, and prints the same for it.

    python research/continuation_probe.py RUN_FOLDER [--steps 300 1500] [--lr 3e-4]
"""

from __future__ import annotations

import argparse
import glob

import numpy as np
import torch

from reverie.agent import Dreamer
from reverie.nets import MLP
from reverie.optim import LaProp


def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties half)."""
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    n_pos = positive.sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(score) - n_pos)))


def replay_features(wm: torch.nn.Module, run: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Every episode of ``run``'s replay filtered through ``wm``: posterior features (N, F), ending flags (N,) and
    the observations (N, 4)."""
    feats, terminal, obs = [], [], []
    for path in sorted(glob.glob(f"{run}/replay/**/*.npz", recursive=True)):
        data = np.load(path)
        batch = {k: torch.as_tensor(data[k])[None] for k in ("vector", "action", "is_first")}
        with torch.no_grad():
            states, _, _ = wm.observe({k: v.float() if k != "is_first" else v for k, v in batch.items()})
            feats.append(wm.feat(states)[0])
        terminal.append(data["is_terminal"])
        obs.append(data["vector"])
    return torch.cat(feats), np.concatenate(terminal) > 0, np.concatenate(obs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 1500])
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--end-weight", type=float, nargs="+", default=[1.0], help="loss weight of an ending step")
    args = parser.parse_args()
    wm = Dreamer.load(args.run).learner.wm
    feat, ends, x = replay_features(wm, args.run)
    kinds = {"cart off the track": ends & (np.abs(x[:, 0]) > 2.4), "pole fallen": ends & (np.abs(x[:, 2]) > 0.2094)}

    def report(name: str, cont: np.ndarray) -> None:
        parts = ", ".join(f"{k} ({m.sum()}) median {np.median(cont[m]):.3f}" for k, m in kinds.items() if m.any())
        print(f"{name}: AUROC {auroc(ends, -cont):.3f}; at the endings: {parts}")

    with torch.no_grad():
        report("the run's head", wm.cont(feat).numpy())
    target = torch.as_tensor(1.0 - ends.astype(np.float32))
    for weight, steps in [(w, s) for w in args.end_weight for s in args.steps]:
        torch.manual_seed(0)
        head = MLP(feat.shape[1], wm.cfg.units, 1, out=1)
        opt = LaProp(head.parameters(), lr=args.lr, eps=1e-20, agc=0.3, warmup=100)
        for _ in range(steps):
            idx = torch.randint(0, len(feat), (512,))
            w = 1.0 + (weight - 1.0) * (1.0 - target[idx])
            logits = head(feat[idx]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target[idx], weight=w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            cont = torch.sigmoid(head(feat).squeeze(-1)).numpy()
            report(f"a fresh head, ending weight {weight:g}, {steps} updates", cont)
            print(f"  other steps called an ending (cont < 0.5): {(cont[~ends] < 0.5).mean():.4f}")


if __name__ == "__main__":
    main()
