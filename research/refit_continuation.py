"""Is the continuation head under-fitted on the rare endings, and does a fitted one make the dream transfer?

`where_precision_goes.py` found that a fresh readout from a CartPole run's posterior features tells the endings
apart (held-out AUROC 0.98, median P(end) 0.90 at the endings) where the run's own head says P(end) 0.01-0.09.
This refits the checkpoint's continuation head alone (features frozen, the head continued from its weights,
Adam 1e-3, batches of 512 replayed steps) and reports, on the replay's held-out episodes (every fifth), its
output at the endings before and after; then how long random play lasts in the dream against the real env, and
round 0 of the transfer benchmark (Stable-Baselines3 PPO, 30k dream steps, 20 real episodes) with either head.

    python research/refit_continuation.py /tmp/ves/base-0 --seed 0
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

from reverie.agent import Dreamer
from reverie.correction import auroc
from reverie.dream import DreamEnv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.append(str(Path(__file__).resolve().parent))
from dream_transfer import dream_return, real_return  # noqa: E402  (benchmarks/dream_transfer.py)
from where_precision_goes import replay  # noqa: E402


def refit(head: torch.nn.Module, feats: list[np.ndarray], end: np.ndarray, rows: np.ndarray, steps: int) -> torch.nn.Module:
    """A copy of ``head`` fitted on the ``rows`` of each feature array in ``feats`` (their losses summed)."""
    head = copy.deepcopy(head)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    xs, target = [torch.as_tensor(f) for f in feats], torch.as_tensor(1.0 - end.astype(np.float32))
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = torch.as_tensor(rng.choice(rows, 512))
        loss = sum(
            torch.nn.functional.binary_cross_entropy_with_logits(head(x[idx]).squeeze(-1), target[idx]) for x in xs
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def head_report(head: torch.nn.Module, feat: np.ndarray, end: np.ndarray, obs: np.ndarray, rows: np.ndarray) -> dict:
    with torch.no_grad():
        cont = torch.sigmoid(head(torch.as_tensor(feat)).squeeze(-1)).numpy()
    m = np.zeros(len(end), bool)
    m[rows] = True
    cart, pole = m & end & (np.abs(obs[:, 0]) > 2.4), m & end & (np.abs(obs[:, 2]) > 0.2094)
    return {
        "auroc": round(float(auroc(-cont[m], end[m])), 3),
        "cont_at_cart_endings": round(float(np.median(cont[cart])), 3) if cart.any() else None,
        "cont_at_pole_endings": round(float(np.median(cont[pole])), 3) if pole.any() else None,
        "endings_caught": round(float((cont[m & end] < 0.5).mean()), 3),
        "false_endings": round(float((cont[m & ~end] < 0.5).mean()), 4),
    }


def random_dream_length(agent: Dreamer, seed: int, episodes: int = 30) -> float:
    env = DreamEnv(agent, seed=seed)
    env.action_space.seed(seed)
    try:
        return dream_return(env, lambda o: env.action_space.sample(), episodes)["length"]
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000, help="refitting steps")
    parser.add_argument("--dream-steps", type=int, default=30_000, help="PPO's steps in the dream (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    agent = Dreamer.load(args.run)
    wm = agent.learner.wm
    d = replay(wm, args.run)
    test = np.flatnonzero(d["episode"] % 5 == 0)
    train = np.flatnonzero(d["episode"] % 5 != 0)
    original = wm.cont_head
    fitted_held_out = refit(original, [d["feat"]], d["end"], train, args.steps)
    out: dict = {"run": args.run, "seed": args.seed, "steps": len(d["end"]), "endings": int(d["end"].sum())}
    out["head_held_out"] = head_report(original, d["feat"], d["end"], d["obs"], test)
    out["refit_held_out"] = head_report(fitted_held_out, d["feat"], d["end"], d["obs"], test)
    fitted = refit(original, [d["feat"]], d["end"], np.arange(len(d["end"])), args.steps)
    print(json.dumps(out), flush=True)
    from reverie.learners import SB3Learner

    space = DreamEnv(agent, seed=0).action_space
    space.seed(args.seed)
    out["random_real"] = real_return(agent, lambda o: space.sample(), 20, 90_000 + args.seed)
    for name, head in (("head", original), ("refit", fitted)):
        wm.cont_head = head
        row = {"random_dream_length": random_dream_length(agent, args.seed)}
        if args.dream_steps:
            learner = SB3Learner(args.seed)
            learner.learn(DreamEnv(agent, seed=args.seed), args.dream_steps)
            env = DreamEnv(agent, seed=args.seed)
            row["ppo_dream"] = dream_return(env, learner.act)
            env.close()
            row["ppo_real"] = real_return(agent, learner.act, 20, 7919 + args.seed)
        out[name] = row
        print(json.dumps({name: row}), flush=True)
    wm.cont_head = original
    print(json.dumps(out))


if __name__ == "__main__":
    main()
