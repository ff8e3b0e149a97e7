"""Does fine-tuning on a policy's real play make the dream reproduce that policy's drift (issue 42)?

A PPO policy trained in a CartPole checkpoint's dream drifts off the track in reality (|x| > 2.4 after ~220
steps) while its dreams keep the cart within 2.2 for 500 steps. This watches the policy for 20 real episodes,
fine-tunes the model on them (the correction loop's ``model`` phase, batches mixing the run's replay and the real
play) for 0 / 300 / 1000 / 3000 updates, and after each measures the dreams of the same policy from the real env's
resets: their length, |x| at steps 50, 100, 200, and the continuation the model gives the real endings.

    OMP_NUM_THREADS=1 python research/dream_drift.py [RUN] [--seed 0]

Finding: see research/notes/dream_transfer.md ("How the dream-trained policy fails").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
RUN = "benchmarks/runs/learning_classic/CartPole-v1/seed0-1796596233"


def dreams(agent, learner, seed: int, episodes: int = 8) -> dict:
    from reverie.dream import DreamEnv

    env = DreamEnv(agent, seed=seed)
    lengths, xs = [], []
    for k in range(episodes):
        obs, _ = env.reset(seed=3000 + k)
        done, traj = False, []
        while not done:
            obs, _, term, trunc, _ = env.step(int(learner.act(obs)))
            traj.append(abs(float(obs[0])))
            done = term or trunc
        lengths.append(len(traj))
        xs.append(traj)
    at = {
        str(t): float(np.median([x[t - 1] for x in xs if len(x) >= t])) if any(len(x) >= t for x in xs) else None
        for t in (50, 100, 200)
    }
    return {"length": float(np.mean(lengths)), "ended_before_500": int(sum(n < 500 for n in lengths)), "abs_x_at": at}


def main() -> None:
    from reverie.agent import Dreamer
    from reverie.correction import RealPlay, exploit_report, mixed_batch, run_replay, watch
    from reverie.learners import SB3Learner

    parser = argparse.ArgumentParser()
    parser.add_argument("run", nargs="?", default=RUN)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    agent = Dreamer.load(args.run)
    learner = SB3Learner(args.seed)
    from reverie.dream import DreamEnv

    learner.learn(DreamEnv(agent, seed=args.seed), 30_000)
    results, checks, eps, _ = watch(agent, 20, 7919, policy=learner.act)
    real_x = [np.abs(e["vector"][:, 0]) for e in eps]
    out = {
        "real_return": float(results.returns.mean()),
        "real_abs_x_at": {str(t): float(np.median([x[t] for x in real_x if len(x) > t])) for t in (50, 100, 200)},
    }
    replay = run_replay(args.run, agent.config, args.seed)
    real = RealPlay(eps, 0.75, 0.5, args.seed)
    t, done, rows = agent.config.train, 0, []
    for target in (0, 300, 1000, 3000):
        while done < target:
            agent.learner.update(mixed_batch(replay, real, t.batch_size, t.batch_length, 0.25), "model")
            done += 1
        _, again, _, _ = watch(agent, 10, 7919, policy=learner.act)  # the same starts: in-sample endings
        rep = exploit_report(again)
        row = {
            "updates": done,
            **dreams(agent, learner, args.seed),
            "ending_cont": rep["ending_cont"],
            "missed_endings": rep["missed_endings"],
            "endings": rep["endings"],
        }
        print(row, flush=True)
        rows.append(row)
    out["finetune"] = rows
    path = Path(__file__).parent / "results" / f"dream_drift_seed{args.seed}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
