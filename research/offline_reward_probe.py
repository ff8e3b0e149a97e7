"""Does a fitted Crafter world model pay its rewards on the steps the game pays them?

Imagination RL sums the reward head's predictions over ``H`` imagined steps. A head that spreads a little
reward over every step promises returns the game never gives (``offline_advantage_probe.py`` measured
model values ~3x the game's). This probe feeds held-out recordings of the scripted player (recorded once
with a seed the training data did not use) through each run's world model and compares the predicted
reward of every step with the recorded one, in two ways:

* ``filtered``: at the posterior state of each step (the model has seen the step's observation);
* ``imagined``: one imagined step from the previous posterior state with the recorded action (what
  imagination sees); a head that reads the change (``model.reward_change``) reads it from the model's
  picture of the step, drawn from the real frame before it;
* ``rollout``: ``H`` imagined steps with the recorded actions from one posterior state per sequence, each
  observation pictured from the one before as in imagination: the return the model predicts against the
  one the recording got, and per step how the prediction and the pictured inventory drift; then the run's
  behaviour-cloning head acting in imagination from the same states (``head_predicted_return``, over
  the whole horizon, no episode ends) and, on its steps the model pays >= 0.5, which pictured inventory
  counts went up (``head_paying_steps_gain``).

Per run and way: mean prediction on all steps, on the steps that paid an achievement (reward >= 0.9), on
the steps that paid nothing (reward 0), and ``excess_over_horizon``: ``H`` times the mean prediction on the
zero-reward steps, the return a rollout collects from nothing; the real means; and how often the model's
picture of the step (the likeliest observation, as an observation-reading policy sees it in imagination)
holds the real inventory: every count right (``inventory_all_right``) and per count (``_items_right``).
With ``--variants`` it first fits fresh models itself (the model phase alone, ``--updates`` updates) to
compare decoder and reward settings at the same budget. Writes ``research/results/offline_reward_probe.json``.

    python research/offline_reward_probe.py --runs \\
        research/runs/offline_crafter/runs/symbolic_200_1_wm_prev_s0 \\
        research/runs/offline_crafter/runs/symbolic_200_1_wm_change_s0
    python research/offline_reward_probe.py --updates 300 --variants \
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


def probe(run: Path, data: Any, sequences: int, seed: int, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The module docstring's figures for one run folder on ``sequences`` held-out sequences; ``overrides``:
    ``key=value`` config settings applied when loading it (ones that add no weights, e.g. ``model.reward_gate``)."""
    import torch

    from reverie import Dreamer
    from reverie.config import set_key
    from reverie.functional import twohot_decode
    from reverie.offline import dataset_replay

    config = Dreamer.load(run).config
    for item in overrides:
        set_key(config, *item.split("=", 1))
    agent = Dreamer.load(run, config=config)
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
    truth = inventory_items(batch_np[key][:, 1:].reshape(len(pictures["imagined"]), -1))
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
        counts = inventory_items(pictures[name].cpu().numpy())
        right = (np.abs(counts - truth) < 0.5)[inside[:, 1:].reshape(-1)]
        out[name] |= {"inventory_all_right": float(right.all(-1).mean()), "inventory_items_right": float(right.mean())}
    out["rollout"] = rollout(learner, batch_np, horizon)
    return out


def inventory_items(vectors: Any) -> Any:
    """(..., N) crafter-symbolic vectors (array or tensor) -> (..., len(ITEMS)) the inventory in whole items."""
    from reverie.crafter.env import ITEMS

    return vectors[..., -len(ITEMS) - 6 : -6] * 9


def rollout(learner: Any, batch_np: dict[str, np.ndarray], horizon: int) -> dict[str, Any]:
    """``horizon`` imagined steps with the recorded actions from the posterior state of each sequence's
    second step (the real frame before it known), each observation pictured from the one before as in
    imagination: the summed predicted reward against the real one, and per imagined step the mean
    prediction on zero-reward and paying steps and how often the picture holds the real inventory."""
    import torch

    from reverie.crafter.env import ITEMS

    wm = learner.wm
    key = wm.decoder.vectors[0]
    # only what happens inside the start's episode counts: a new episode inside the window ends it
    alive = np.cumprod(~np.asarray(batch_np["is_first"], bool)[:, 2 : horizon + 2], axis=1).astype(bool)  # (B, H)
    with torch.no_grad(), learner.autocast():
        batch = learner.sequences(batch_np)
        states, _, _ = wm.observe(batch)
        state = {k: v[:, 1] for k, v in states.items()}
        picture = {key: batch[key][:, 1].float()}
        preds, counts = [], []
        for k in range(horizon):
            state = wm.rssm.imagine_step(state, batch["action"][:, k + 2])
            feat = wm.rssm.feat(state)
            now = learner.decoded_obs(feat, [key], picture)
            preds.append(wm.reward(feat, obs=now, prev=picture).float())
            counts.append(inventory_items(now[key].reshape(len(feat), -1).float()))
            picture = now
        # the behaviour-cloning head acting in imagination from the same starts, as evaluation promises do
        first_obs = {k: batch[k][:, 1] for k in learner.pictured_keys("bc")}
        traj = learner.imagine({k: v[:, 1] for k, v in states.items()}, horizon, head="bc", first_obs=first_obs)
        head_pred = learner.imagined_reward(traj)[:, 1:].float().cpu().numpy()  # index 0 (the start) unused
        inventory = inventory_items(traj[f"obs/{key}"].flatten(2).float().cpu().numpy())
    pred = torch.stack(preds, 1).cpu().numpy()  # (B, H)
    real = np.asarray(batch_np["reward"], np.float64)[:, 2 : horizon + 2]
    truth = inventory_items(np.asarray(batch_np[key], np.float32)[:, 2 : horizon + 2].reshape(*real.shape, -1))
    right = (np.abs(torch.stack(counts, 1).cpu().numpy() - truth) < 0.5).all(-1)  # (B, H)
    per_step = []
    for k in range(horizon):
        live = alive[:, k]
        zero, paid = live & (real[:, k] == 0), live & (real[:, k] >= 0.9)
        per_step.append(
            {
                "pred_on_nothing": float(pred[zero, k].mean()) if zero.any() else None,
                "pred_on_paid": float(pred[paid, k].mean()) if paid.any() else None,
                "inventory_all_right": float(right[live, k].mean()) if live.any() else None,
            }
        )
    gained = np.diff(inventory, axis=1)  # (B, H, items): what each imagined step added to the picture
    paying = head_pred >= 0.5
    what: dict[str, int] = {}
    for b, k in zip(*np.nonzero(paying), strict=True):
        items = [ITEMS[i] for i in np.nonzero(gained[b, k] >= 0.5)[0]] or ["nothing"]
        for item in items:
            what[item] = what.get(item, 0) + 1
    return {
        "predicted_return": float((pred * alive).sum(1).mean()),
        "real_return": float((real * alive).sum(1).mean()),
        "per_step": per_step,
        "head_predicted_return": float(head_pred.sum(1).mean()),
        "head_paying_steps_gain": dict(sorted(what.items(), key=lambda kv: -kv[1])),
    }


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
        "settings of offline_model_learning.py (into research/runs/offline_reward_probe/<name>)",
    )
    parser.add_argument("--updates", type=int, default=300, help="model-phase updates of each --variants model")
    parser.add_argument("--episodes", type=int, default=20, help="held-out scripted episodes to record")
    parser.add_argument("--sequences", type=int, default=96, help="held-out sequences per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data",
        type=Path,
        help="probe on this recorded symbolic Crafter dataset instead (e.g. an agent's own play, recorded with "
        "`reverie data record --policy RUN_FOLDER`); default: held-out scripted play, recorded on first use",
    )
    parser.add_argument("--set", nargs="*", default=[], help="key=value settings for the --runs as they load")
    parser.add_argument("--out", default="offline_reward_probe.json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from reverie.fileio import write_text

    if not args.runs and not args.variants:
        parser.error("give --runs (run folders of offline_crafter.py) or --variants (models to fit here)")
    check_runs(parser, args.runs)
    if args.data is not None:
        from reverie.data import Dataset

        if not (args.data / "dataset.json").exists():
            parser.error(
                f"--data {args.data} holds no dataset (no dataset.json): record one with `reverie data record`"
            )
        data = Dataset(args.data)
    else:
        data = held_out(HELD_OUT, "scripted", args.episodes, seed=2000)  # the curious held-out set uses 1000 on
    out: dict[str, Any] = {
        "data": str(args.data or HELD_OUT),
        "held_out_episodes": len(data),
        "runs": {},
        "variant_updates": args.updates,
        "set": args.set,
    }
    runs = [*args.runs, *(fit_variant(text, args.updates, args.seed) for text in args.variants)]
    for run in runs:
        out["runs"][run.name] = probe(run, data, args.sequences, args.seed, tuple(args.set))
        print(run.name, json.dumps(out["runs"][run.name]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / args.out, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
