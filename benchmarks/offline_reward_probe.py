"""Does a fitted Crafter world model pay its rewards on the steps the game pays them?

Imagination RL sums the reward head's predictions over ``H`` imagined steps. A head that spreads a little
reward over every step promises returns the game never gives (``offline_advantage_probe.py`` measured
model values ~3x the game's). This probe feeds held-out recordings of the scripted player (recorded once
with a seed the training data did not use) through each run's world model and compares the predicted
reward of every step with the recorded one, in two ways:

* ``filtered``: at the posterior state of each step (the model has seen the step's observation);
* ``imagined``: one imagined step from the previous posterior state with the recorded action (what
  imagination sees); a head that reads the change (``model.reward_change``) reads it from the model's
  picture of the step, drawn from the real frame before it.

Per run and way: mean prediction on all steps, on the steps that paid an achievement (reward >= 0.9), on
the steps that paid nothing (reward 0), and ``excess_over_horizon``: ``H`` times the mean prediction on the
zero-reward steps, the return a rollout collects from nothing. Also the real means.
Writes ``benchmarks/results/offline_reward_probe.json``.

    python benchmarks/offline_reward_probe.py --runs \\
        benchmarks/runs/offline_crafter/runs/symbolic_200_1_wm_prev_s0 \\
        benchmarks/runs/offline_crafter/runs/symbolic_200_1_wm_change_s0
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from run_probes import check_runs, held_out

RESULTS = Path(__file__).parent / "results"
HELD_OUT = Path(__file__).parent / "runs" / "offline_crafter" / "data" / "symbolic-heldout-scripted"


def probe(run: Path, data: Any, sequences: int, seed: int) -> dict[str, Any]:
    """The module docstring's figures for one run folder on ``sequences`` held-out sequences."""
    import torch

    from reverie import Dreamer
    from reverie.functional import twohot_decode
    from reverie.offline import dataset_replay

    agent = Dreamer.load(run)
    learner, cfg = agent.learner, agent.config
    wm = learner.wm
    batch_np = dataset_replay(data, cfg.train.replay_chunk, seed).sample(sequences, cfg.train.batch_length)
    learner.eval()
    with torch.no_grad(), learner.autocast():
        batch = learner.sequences(batch_np)
        states, _, _ = wm.observe(batch)
        filtered = twohot_decode(wm.recorded_reward_logits(wm.rssm.feat(states), batch), wm.bins).float()
        prev = {k: v[:, :-1].flatten(0, 1) for k, v in states.items()}
        nxt = wm.rssm.feat(wm.rssm.imagine_step(prev, batch["action"][:, 1:].flatten(0, 1)))
        before = {k: batch[k][:, :-1].flatten(0, 1).float() for k in wm.obs_keys}  # the real frame before
        imagined = wm.reward(nxt, prev=before).float().reshape(len(batch_np["reward"]), -1)
    real = batch_np["reward"].astype(np.float64)
    inside = ~batch_np["is_first"].astype(bool)  # steps that a transition inside the episode led to
    horizon = cfg.ac.horizon
    out: dict[str, Any] = {"steps": int(inside.sum()), "horizon": horizon}
    for name, pred, rew, mask in (
        ("filtered", filtered.cpu().numpy(), real, inside),
        ("imagined", imagined.cpu().numpy(), real[:, 1:], inside[:, 1:]),
    ):
        paid, nothing = mask & (rew >= 0.9), mask & (rew == 0)
        out[name] = {
            "pred_mean": float(pred[mask].mean()),
            "real_mean": float(rew[mask].mean()),
            "pred_on_paid": float(pred[paid].mean()) if paid.any() else None,
            "paid_steps": int(paid.sum()),
            "pred_on_nothing": float(pred[nothing].mean()),
            "excess_over_horizon": float(horizon * pred[nothing].mean()),
            "corr": float(np.corrcoef(pred[mask], rew[mask])[0, 1]),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders of offline_crafter.py")
    parser.add_argument("--episodes", type=int, default=20, help="held-out scripted episodes to record")
    parser.add_argument("--sequences", type=int, default=96, help="held-out sequences per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="offline_reward_probe.json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from reverie.fileio import write_text

    check_runs(parser, args.runs)
    data = held_out(HELD_OUT, "scripted", args.episodes, seed=2000)  # the curious held-out set uses 1000 on
    out: dict[str, Any] = {"held_out_episodes": len(data), "runs": {}}
    for run in args.runs:
        out["runs"][run.name] = probe(run, data, args.sequences, args.seed)
        print(run.name, json.dumps(out["runs"][run.name]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / args.out, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
