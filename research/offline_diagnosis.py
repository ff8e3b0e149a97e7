"""Why the offline world-model agent trails behaviour cloning on raw observations: two measurements.

1. **Copycat check.** On recorded episodes, how often the fitted agent's BC head predicts the action the
   player took at the previous step, against how often the player repeated it, and the head's accuracy
   on repeats vs on changes of action (the decisions). Raw-observation BC (:class:`BCPolicy`, trained
   here) is the reference: it sees no history, so it cannot copy.
2. **Frozen-input heads.** A fresh policy head (the agent's :class:`Actor`) trained by behaviour cloning
   on one input while the world model stays frozen, then played in the real game (sampled actions):
   ``feat`` (the model state, what the agent's policy reads), ``embed`` (the encoder's embedding of the
   current observation), ``both``, ``raw`` (the symlog observation vector itself, symbolic only) and
   ``raw_feat`` (raw and the model state: does the history in the state help or hurt a head that sees
   the present sharply?).
   Same head, data, batches and updates for all: the score says how much of what the policy needs
   each input carries.

3. **False promises on recorded play** (``false_promises``): on the recordings the model learned from,
   the share of steps where the reward the model predicts for the recorded action (next latent sampled
   from the prior, as in imagination and in ``reverie.correction.watch``) exceeds the real one by 0.5
   or more: the exploit rate the model shows on competent play it was trained on, a floor for the
   correction loop's exploit rate.

Needs a fitted agent from ``research/offline_crafter_tagged.py``. Writes
``research/results/offline_diagnosis.json``.

    python research/offline_diagnosis.py --seed 0 --steps 1500
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
ROOT = Path(__file__).parent / "runs" / "offline_crafter"


def paths(obs: str, seed: int, tag: str = "") -> tuple[Path, Path]:
    run = ROOT / "runs" / f"{obs}_200_1_wm{'_' + tag if tag else ''}_s{seed}"
    data = ROOT / "data" / f"{obs}-200-a1"
    if not (run / "checkpoint").exists() or not (data / "dataset.json").exists():
        raise SystemExit(f"No fitted agent at {run} (or no dataset at {data}): run research/offline_crafter_tagged.py.")
    return run, data


def repeat_stats(predict: Any, episodes: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """``predict(episode) -> (T,) argmax actions at each step``; scored on ``action[t + 1]`` vs ``action[t]``."""
    hits = {"repeat": [0, 0], "change": [0, 0]}
    copied = total = 0
    for ep in episodes:
        pred = predict(ep)[1:-1]
        action = np.asarray(ep["action"])
        taken, previous = action[2:], action[1:-1]  # step 0's action is the reset's placeholder
        for name, rows in (("repeat", taken == previous), ("change", taken != previous)):
            hits[name][0] += int((pred == taken)[rows].sum())
            hits[name][1] += int(rows.sum())
        copied += int((pred == previous).sum())
        total += len(pred)
    n = hits["repeat"][1] + hits["change"][1]
    return {
        "data_repeat_rate": hits["repeat"][1] / n,
        "predicts_previous": copied / total,
        "accuracy_repeat": hits["repeat"][0] / hits["repeat"][1],
        "accuracy_change": hits["change"][0] / hits["change"][1],
        "accuracy": (hits["repeat"][0] + hits["change"][0]) / n,
    }


def copycat(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from reverie import Dreamer
    from reverie.baselines import BCPolicy
    from reverie.data import Dataset

    run, data_dir = paths(job["obs"], job["seed"], job["tag"])
    agent, data = Dreamer.load(run), Dataset(data_dir)
    episodes = [data.episode(i) for i in range(0, len(data), 10)]

    def head(ep: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return agent.learner.bc(torch.as_tensor(agent.encode(ep))).logits.argmax(-1).numpy()

    raw = BCPolicy(data.obs_space, data.act_space["action"], seed=job["seed"])
    raw.fit(data, steps=3000)
    return {
        "wm_bc_head": repeat_stats(head, episodes),
        "bc_raw": repeat_stats(lambda ep: raw.act({k: ep[k] for k in raw.spaces}, deterministic=True), episodes),
    }


def false_promises(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(job["seed"])
    from reverie import Dreamer
    from reverie.data import Dataset

    run, data_dir = paths(job["obs"], job["seed"], job["tag"])
    agent, data = Dreamer.load(run), Dataset(data_dir)
    learner, wm = agent.learner, agent.learner.wm
    deter = agent.config.model.deter
    false = rewarded = steps = 0
    for i in range(0, len(data), 5):
        ep = data.episode(i)
        feat = torch.as_tensor(agent.encode(ep))  # (T, F) posterior features
        action = learner.to_tensors({"action": np.asarray(ep["action"])[None]})["action"][0]
        shape = (len(feat) - 1, agent.config.model.stoch, agent.config.model.classes)
        state = {"deter": feat[:-1, :deter], "stoch": feat[:-1, deter:].reshape(shape)}
        with torch.no_grad():
            following = wm.rssm.imagine_step(state, action[1:])  # step t with the action taken there
            promised = wm.reward(wm.rssm.feat(following)).float().numpy()
        real = np.asarray(ep["reward"], np.float64)[1:]
        false += int((promised - real >= 0.5).sum())
        rewarded += int((real >= 0.5).sum())
        steps += len(real)
    return {"false_promise_rate": false / steps, "reward_step_rate": rewarded / steps, "steps": steps}


def frozen_head(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(job["seed"])
    from reverie import Dreamer
    from reverie.actor_critic import Actor
    from reverie.data import Dataset
    from reverie.evaluation import run_episodes
    from reverie.functional import symlog
    from reverie.offline import dataset_replay

    run, data_dir = paths(job["obs"], job["seed"], job["tag"])
    agent = Dreamer.load(run)
    learner, wm, kind = agent.learner, agent.learner.wm, job["input"]
    vector = learner.obs_space.get("vector")
    if kind.startswith("raw") and vector is None:
        raise SystemExit("--inputs raw and raw_feat need symbolic observations (a 'vector' key).")
    replay = dataset_replay(Dataset(data_dir), agent.config.train.replay_chunk, job["seed"])

    def inputs(obs: dict[str, torch.Tensor], feat: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        if kind.startswith("raw"):
            lead = obs["vector"].shape[: obs["vector"].dim() - len(vector.shape)]
            raw = symlog(obs["vector"].reshape(*lead, -1).float())
            return torch.cat([raw, feat], -1) if kind == "raw_feat" else raw
        return {"feat": feat, "embed": embed, "both": torch.cat([feat, embed], -1)}[kind]

    width = {
        "feat": agent.feat_dim,
        "embed": wm.encoder.out_dim,
        "both": agent.feat_dim + wm.encoder.out_dim,
        "raw": int(np.prod(vector.shape)) if vector is not None else 0,
        "raw_feat": int(np.prod(vector.shape)) + agent.feat_dim if vector is not None else 0,
    }[kind]
    head = Actor(width, learner.act_space, learner.cfg.ac)
    opt = torch.optim.Adam(head.parameters(), lr=3e-4)
    accuracy = []
    for _ in range(job["steps"]):
        batch = learner.sequences(replay.sample(16, 32))
        with torch.no_grad():
            embed = wm.encoder({k: batch[k] for k in wm.obs_keys})
            states, _, _ = wm.observe(batch, embed=embed)
            feat = wm.rssm.feat(states).float()
        mask = 1.0 - batch["is_first"][:, 1:].float()  # action[t + 1] was taken at step t
        policy = head(inputs(batch, feat, embed.float())[:, :-1])
        loss = -(policy.log_prob(batch["action"][:, 1:]) * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        hit = (policy.logits.argmax(-1) == batch["action"][:, 1:].argmax(-1)).float()
        accuracy.append(float((hit * mask).sum() / mask.sum()))

    envs = agent.make_envs(job["episodes"], 10_000 + job["seed"])
    state = learner.initial_policy_state(envs.num_envs)

    def act(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
        nonlocal state
        with torch.no_grad():
            data = learner.to_tensors({k: obs[k] for k in wm.obs_keys})
            embed = wm.encoder(data)
            is_first = torch.as_tensor(np.asarray(obs["is_first"]))
            latent, _, _ = wm.rssm.obs_step(state, state["action"], embed, is_first)
            action = head(inputs(data, wm.rssm.feat(latent).float(), embed.float())).sample().float()
        state = {"deter": latent["deter"].float(), "stoch": latent["stoch"].float(), "action": action}
        return learner.decode_action(action)

    try:
        results = run_episodes(envs, act, job["episodes"])
    finally:
        envs.close()
    metrics = results.metrics("eval", "crafter-symbolic")
    return {
        "score": metrics.get("eval/score"),
        "return": metrics["eval/return"],
        "train_accuracy_last_100": float(np.mean(accuracy[-100:])),
    }


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    start = time.time()
    special = {"copycat": copycat, "false_promises": false_promises}
    out = special.get(job["input"], frozen_head)(job)
    return {**job, "result": out, "wall_s": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs", default="symbolic", choices=["symbolic", "pixels"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="read the agent offline_crafter.py fitted with this --tag")
    every = ["copycat", "false_promises", "feat", "embed", "both", "raw", "raw_feat"]
    parser.add_argument("--inputs", nargs="+", default=every)
    parser.add_argument("--steps", type=int, default=1500, help="head updates (batches of 16 x 32 steps)")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per head")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from reverie.fileio import write_text

    known = set(every)
    if set(args.inputs) - known:
        parser.error(f"unknown --inputs {sorted(set(args.inputs) - known)}; choose from {sorted(known)}")
    paths(args.obs, args.seed, args.tag)
    jobs = [
        {
            "obs": args.obs,
            "seed": args.seed,
            "tag": args.tag,
            "input": k,
            "steps": args.steps,
            "episodes": args.episodes,
        }
        for k in args.inputs
    ]
    out_file = RESULTS / "offline_diagnosis.json"
    results: dict[str, Any] = json.loads(out_file.read_text()) if out_file.exists() else {}
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(run_job, jobs):
            tag = f"{row['tag']}_" if row["tag"] else ""
            key = f"{row['obs']}/{tag}s{row['seed']}/{row['input']}"
            results[key] = {k: v for k, v in row.items() if k not in ("obs", "seed", "tag", "input")}
            print(key, json.dumps(row["result"]), f"({row['wall_s'] / 60:.1f} min)", flush=True)
            RESULTS.mkdir(parents=True, exist_ok=True)
            write_text(out_file, json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
