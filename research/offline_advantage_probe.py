"""Do a fitted Crafter world model's action values point where the real game's do?

Imagination RL moves the policy along the model's advantages: for a state, which actions return more than
the others over the next ``H`` steps. This probe measures those advantages against the game's own. It
plays a fitted agent's head (``--head``, default the BC head) in real symbolic Crafter; every ``--every``
steps it stops at the current state and, for each of the 17 actions, estimates

* the **real** value: ``--samples`` copies of the game (``copy.deepcopy`` of the crafter env) take the
  action, then follow the head for ``H - 1`` steps (``--horizon``, default the agent's ``ac.horizon``);
  the sum of the rewards the game gives;
* the **model's** value: from the agent's filtered latent state at that step, as many imagined rollouts
  take the action and then follow the head for ``H - 1`` steps; the sum of predicted rewards, weighted by
  the predicted chance that the episode is still going (as ``evaluate(promise_every=...)`` sums promises).

Advantages are these values minus their mean over the actions of the same state. Reported per run:
the correlation of model and real advantages over all (state, action) pairs (all actions, and only the
actions within the BC head's support, ``ac.prior_support`` rule at 0.1), the share of states (among those
where the actions' real values differ at all) where the model's best action is also the real best or
within 0.1 of it, next to the share a random action would get, and the same correlation between two
halves of the real samples (how much of the real advantage the sample count can resolve at all).
Beside them, ``next_obs_*`` (:func:`action_effects`): how far the model's picture of the next observation
is from the game's, after the same action and after the others, against simply keeping the present one;
``present_cells_right_*``: the share of the view's cells whose material the model's picture of the present
(decoded from the filtered state, which has seen it) gets right, against the previous frame's.

Needs run folders of ``research/offline_crafter_tagged.py`` (symbolic). Writes
``research/results/offline_advantage_probe.json``.

    python research/offline_advantage_probe.py --runs \\
        research/runs/offline_crafter/runs/symbolic_200_1_wm_curious_s0
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from run_probes import check_runs

RESULTS = Path(__file__).parent / "results"


def _stack(obs: list[dict[str, Any]], keys: list[str]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(o[k]) for o in obs]) for k in keys}


def _tile(state: dict[str, Any], n: int) -> dict[str, Any]:
    """A batch of one latent (or policy) state repeated ``n`` times along the batch axis."""
    return {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in state.items()}


def probe(run: Path, states: int, every: int, samples: int, head: str, seed: int, horizon: int) -> dict[str, Any]:
    """Model and real advantages of all 17 actions at ``states`` states of the head's own play."""
    import torch

    torch.manual_seed(seed)
    from reverie import Dreamer
    from reverie.crafter.env import CrafterEnv
    from reverie.evaluation import promised_return

    agent = Dreamer.load(run)
    learner = agent.learner
    horizon = horizon or agent.config.ac.horizon
    n_actions = 17
    keys = sorted({*learner.wm.obs_keys, *learner.actor(head).obs_keys, "is_first", "is_last", "reward"})
    env = CrafterEnv(seed=seed, symbolic=True, length=500)
    model_q, real_q, support = [], [], []
    cells: dict[str, list[float]] = {"posterior": [], "previous_frame": []}
    effect: dict[str, list[float]] = {"real": [], "model": [], "error_same": [], "error_other": [], "error_copy": []}
    obs = env.step({"reset": True})
    previous = np.asarray(obs["vector"])  # the frame before the current one (probes start at t > 0)
    state = None
    t = 0
    while len(model_q) < states:
        batch = _stack([obs], keys)
        if t > 0 and t % every == 0:  # probe this state before acting on it
            latent = learner.filter(batch, state)
            feat = learner.wm.rssm.feat(latent)
            before = {"vector": torch.as_tensor(previous, dtype=torch.float32)[None]}  # read by model.decoder_prev
            now_pic = learner.decoded_obs(feat, ["vector"], before)["vector"][0].cpu().numpy()
            cells["posterior"].append(_materials_match(now_pic, batch["vector"][0]))
            cells["previous_frame"].append(_materials_match(previous, batch["vector"][0]))
            acts = torch.arange(n_actions).repeat_interleave(samples)  # (17 * S,)
            onehot = learner.encode_action(acts)
            with torch.no_grad(), learner.autocast():
                nxt = learner.wm.rssm.imagine_step(_tile(latent, len(acts)), onehot)
                now = {"vector": torch.as_tensor(batch["vector"], dtype=torch.float32).expand(len(acts), -1)}
                traj = learner.imagine(nxt, horizon - 1, head, prev_obs=now)  # feat (N, H): states after each step
                promised = promised_return(learner, traj, now, start=0).reshape(n_actions, samples).cpu().numpy()
                pictured = learner.decoded_obs(traj["feat"][:, 0], ["vector"], now)["vector"].cpu().numpy()
                bc_keys = learner.bc.obs_keys
                seen = learner.to_tensors({k: batch[k] for k in bc_keys}) if bc_keys else None
                logits = learner.head_policy(learner.actor("bc"), feat, seen).logits[0].float()
                allowed = logits >= logits.max() + np.log(0.1)  # the ac.prior_support rule at 0.1
            envs = [copy.deepcopy(env) for _ in range(len(acts))]
            got = np.zeros(len(acts))
            live = np.ones(len(acts), bool)
            last_obs: list[dict[str, Any]] = []
            taken = acts.numpy()
            policy_state = None
            for k in range(horizon):
                seen_obs = []
                for i, e in enumerate(envs):
                    o = e.step({"action": taken[i]}) if live[i] else last_obs[i]
                    if live[i]:
                        got[i] += float(o["reward"])
                    seen_obs.append(o)
                last_obs = seen_obs
                live &= ~np.array([bool(o["is_last"]) for o in seen_obs])
                if k == 0:  # the filter state after the probed step: the probed action was taken
                    nxt_obs = _stack(seen_obs, ["vector"])["vector"]
                    action_effects(effect, batch["vector"][0], nxt_obs, pictured, n_actions, samples)
                    policy_state = {**_tile(latent, len(acts)), "action": onehot}
                if k < horizon - 1 and live.any():
                    taken, policy_state, _ = learner.policy(_stack(seen_obs, keys), policy_state, False, head)
            model_q.append(promised.mean(1))
            real_q.append(got.reshape(n_actions, samples))
            support.append(allowed.cpu().numpy())
            print(f"  state {len(model_q)}/{states} (t={t})", flush=True)
        action, state, _ = learner.policy(batch, state, False, head)
        previous = batch["vector"][0]
        obs = env.step({"action": action[0]})
        t += 1
        if obs["is_last"]:
            obs, state, t = env.step({"reset": True}), None, 0
    out = summarise(np.array(model_q), np.array(real_q), np.array(support))
    out |= {f"present_cells_right_{k}": float(np.mean(v)) for k, v in cells.items()}
    return out | {f"next_obs_{k}": float(np.mean(v)) for k, v in effect.items()}


def _materials_match(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the local view's cells whose material two crafter-symbolic vectors agree on."""
    from reverie.crafter.codec import cell_materials

    return float((cell_materials(a) == cell_materials(b)).mean())


def action_effects(
    effect: dict[str, list[float]],
    now: np.ndarray,
    real: np.ndarray,
    pictured: np.ndarray,
    n_actions: int,
    samples: int,
) -> None:
    """How much the next observation depends on the action, in the game and in the model's picture of it.

    ``now`` (D,): the current symbolic vector; ``real`` and ``pictured`` (17 * S, D): the game's next symbolic
    vectors and the model's likeliest ones, ``S`` per action. Adds, as L1 distances between vectors (2 per
    changed one-hot cell): ``real`` and ``model``, the mean distance between the next observations of two
    different actions (how far the action moves the next step); ``error_same``, the distance between the
    model's picture after an action and the game's next observation after the same action;
    ``error_other``, after the other actions; ``error_copy``, the distance of the present observation to the
    game's next (a model that predicts "nothing changes"). A model that ignores its action input has
    ``model`` near 0 and ``error_same`` no smaller than ``error_other``.
    """
    real = real.reshape(n_actions, samples, -1)[:, 0]  # (A, D): one sample per action
    pictured = pictured.reshape(n_actions, samples, -1)[:, 0]
    dist_real = np.abs(real[:, None] - real[None]).sum(-1)  # (A, A)
    dist_model = np.abs(pictured[:, None] - pictured[None]).sum(-1)
    cross = np.abs(pictured[:, None] - real[None]).sum(-1)  # (model action, real action)
    off = ~np.eye(n_actions, dtype=bool)
    effect["real"].append(float(dist_real[off].mean()))
    effect["model"].append(float(dist_model[off].mean()))
    effect["error_same"].append(float(np.diag(cross).mean()))
    effect["error_other"].append(float(cross[off].mean()))
    effect["error_copy"].append(float(np.abs(real - now[None]).sum(-1).mean()))


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _share(values: np.ndarray, where: np.ndarray) -> float | None:
    return float(np.mean(values[where])) if where.any() else None


def summarise(model_q: np.ndarray, real_q: np.ndarray, support: np.ndarray) -> dict[str, Any]:
    """``model_q`` (N, A), ``real_q`` (N, A, S) samples, ``support`` (N, A) bool -> the figures of the docstring."""
    real = real_q.mean(2)
    half = real_q.shape[2] // 2
    real_a, real_b = real_q[:, :, :half].mean(2), real_q[:, :, half:].mean(2)

    def centred(q: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        if mask is None:
            return q - q.mean(1, keepdims=True)
        mean = (q * mask).sum(1, keepdims=True) / np.maximum(mask.sum(1, keepdims=True), 1)
        return q - mean

    adv_m, adv_r = centred(model_q), centred(real)
    sup_m, sup_r = centred(model_q, support), centred(real, support)
    multi = support.sum(1) > 1  # states where the support leaves a choice
    in_sup = support & multi[:, None]
    best = model_q.argmax(1)
    rows = np.arange(len(real))
    differ = real.max(1) > real.min(1) + 1e-9  # states where the action matters in the game at all
    return {
        "states": len(real),
        "samples_per_action": int(real_q.shape[2]),
        "real_value_mean": float(real.mean()),
        "model_value_mean": float(model_q.mean()),
        "adv_corr_all_actions": _corr(adv_m.ravel(), adv_r.ravel()),
        "adv_corr_real_half_vs_half": _corr(centred(real_a).ravel(), centred(real_b).ravel()),
        "adv_corr_within_support": _corr(sup_m[in_sup], sup_r[in_sup]),
        "support_size_mean": float(support.sum(1).mean()),
        "states_where_actions_differ": int(differ.sum()),
        "model_best_is_real_best": _share(real[rows, best] >= real.max(1) - 1e-9, differ),
        "model_best_within_0.1_of_real_best": _share(real[rows, best] >= real.max(1) - 0.1, differ),
        "random_action_is_real_best": _share((real >= real.max(1, keepdims=True) - 1e-9).mean(1), differ),
        "real_adv_std": float(adv_r.std()),
        "model_adv_std": float(adv_m.std()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders of offline_crafter.py")
    parser.add_argument("--states", type=int, default=60, help="states probed per run")
    parser.add_argument("--every", type=int, default=15, help="env steps of the head's play between probes")
    parser.add_argument("--samples", type=int, default=4, help="rollouts per action, real and imagined")
    parser.add_argument("--head", default="bc", choices=["bc", "actor"], help="the policy that plays and follows")
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--horizon", type=int, default=0, help="steps summed per value (0: the agent's ac.horizon)")
    parser.add_argument("--out", default="offline_advantage_probe.json", help="file name under research/results")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(1)
    from reverie.fileio import write_text

    check_runs(parser, args.runs)
    out: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "runs"}, "runs": {}}
    for run in args.runs:
        start = time.time()
        row = probe(run, args.states, args.every, args.samples, args.head, args.seed, args.horizon)
        row["wall_s"] = time.time() - start
        out["runs"][run.name] = row
        print(run.name, json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / args.out, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
