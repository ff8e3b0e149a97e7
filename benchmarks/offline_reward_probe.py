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
zero-reward steps, the return a rollout collects from nothing; the real means; and how often the model's
picture of the step (the likeliest observation, as an observation-reading policy sees it in imagination)
holds the real inventory: every count right (``inventory_all_right``) and per count (``_items_right``).
With ``--variants`` it first fits fresh models itself (the model phase alone, ``--updates`` updates) to
compare decoder and reward settings at the same budget. Writes ``benchmarks/results/offline_reward_probe.json``.

    python benchmarks/offline_reward_probe.py --runs \\
        benchmarks/runs/offline_crafter/runs/symbolic_200_1_wm_prev_s0 \\
        benchmarks/runs/offline_crafter/runs/symbolic_200_1_wm_change_s0
    python benchmarks/offline_reward_probe.py --updates 300 --variants \
        counts:model.decoder_prev=true,model.reward_change=true,model.count_classes=true \
        copy:model.decoder_prev=true,model.reward_change=true,model.count_classes=true,model.count_copy=true
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from offline_model_learning import BASE, DATA, parse_variant
from run_probes import check_runs, held_out

RESULTS = Path(__file__).parent / "results"
HELD_OUT = DATA / "symbolic-heldout-scripted"


def probe(run: Path, data: Any, sequences: int, seed: int) -> dict[str, Any]:
    """The module docstring's figures for one run folder on ``sequences`` held-out sequences."""
    import torch

    from reverie import Dreamer
    from reverie.envs.crafter import ITEMS
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
        key = wm.decoder.vectors[0]
        pictures = {  # the model's picture of each step: at the posterior, and one imagined step ahead
            "filtered": learner.decoded_obs(wm.rssm.feat(states)[:, 1:].flatten(0, 1), [key], before)[key],
            "imagined": learner.decoded_obs(nxt, [key], before)[key],
        }
    truth = batch_np[key][:, 1:].reshape(len(pictures["imagined"]), -1)[:, -len(ITEMS) - 6 : -6] * 9
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
        counts = pictures[name].cpu().numpy()[:, -len(ITEMS) - 6 : -6] * 9  # the inventory in whole items
        right = (np.abs(counts - truth) < 0.5)[inside[:, 1:].reshape(-1)]
        out[name] |= {"inventory_all_right": float(right.all(-1).mean()), "inventory_items_right": float(right.mean())}
    return out


def fit_variant(text: str, updates: int, seed: int) -> Path:
    """Fit a fresh model (the offline model phase, ``updates`` updates on the 200-episode scripted dataset)
    for the variant ``name:key=value,...``; returns its run folder."""
    import torch

    from reverie import Dreamer, make_config
    from reverie.data import Dataset
    from reverie.offline import dataset_replay, model_update

    name, overrides = parse_variant(text)
    run = Path(__file__).parent / "runs" / "offline_reward_probe" / name
    torch.manual_seed(seed)
    cfg = make_config(["offline"], [*BASE, *overrides, f"train.seed={seed}", f"run.logdir={run}"])
    data = Dataset(DATA / "symbolic-200-a1")
    agent = Dreamer(cfg, data.obs_space, data.act_space["action"])
    replay = dataset_replay(data, cfg.train.replay_chunk, seed)
    for i in range(updates):
        model_update(agent.learner, replay.sample(cfg.train.batch_size, cfg.train.batch_length))
        if (i + 1) % 50 == 0:
            print(f"{name}: {i + 1}/{updates} updates", flush=True)
    agent.save(run / "checkpoint")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="run folders of offline_crafter.py")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[],
        help="also fit fresh models for --updates model-phase updates: name:key=value,key=value on top of the "
        "settings of offline_model_learning.py (into benchmarks/runs/offline_reward_probe/<name>)",
    )
    parser.add_argument("--updates", type=int, default=300, help="model-phase updates of each --variants model")
    parser.add_argument("--episodes", type=int, default=20, help="held-out scripted episodes to record")
    parser.add_argument("--sequences", type=int, default=96, help="held-out sequences per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="offline_reward_probe.json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from reverie.fileio import write_text

    if not args.runs and not args.variants:
        parser.error("give --runs (run folders of offline_crafter.py) or --variants (models to fit here)")
    check_runs(parser, args.runs)
    data = held_out(HELD_OUT, "scripted", args.episodes, seed=2000)  # the curious held-out set uses 1000 on
    out: dict[str, Any] = {"held_out_episodes": len(data), "runs": {}, "variant_updates": args.updates}
    runs = [*args.runs, *(fit_variant(text, args.updates, args.seed) for text in args.variants)]
    for run in runs:
        out["runs"][run.name] = probe(run, data, args.sequences, args.seed)
        print(run.name, json.dumps(out["runs"][run.name]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / args.out, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
