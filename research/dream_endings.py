"""Why a dream-trained CartPole policy fails in reality (issue 42): how its real episodes end (pole angle or cart
position), and where its dreams take the cart and the pole, with the continuation the model gives there.

    OMP_NUM_THREADS=1 python research/dream_endings.py [RUN] [--steps 30000] [--seed 0]

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


def main() -> None:
    import gymnasium

    from reverie.agent import Dreamer
    from reverie.dream import DreamEnv
    from reverie.learners import SB3Learner

    parser = argparse.ArgumentParser()
    parser.add_argument("run", nargs="?", default=RUN)
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    agent = Dreamer.load(args.run)
    learner = SB3Learner(args.seed)
    learner.learn(DreamEnv(agent, seed=args.seed), args.steps)
    real = gymnasium.make("CartPole-v1")
    causes, lengths = [], []
    for k in range(10):
        obs, _ = real.reset(seed=1000 + k)
        done, n = False, 0
        while not done:
            obs, _, term, trunc, _ = real.step(int(learner.act(obs)))
            n, done = n + 1, term or trunc
        lengths.append(n)
        causes.append("time" if not term else ("position" if abs(obs[0]) > 2.4 else "angle"))
    dream = DreamEnv(agent, seed=args.seed)
    dreams = []
    for k in range(5):
        obs, _ = dream.reset(seed=2000 + k)
        done, xs, ths, conts = False, [], [], []
        while not done:
            obs, _, term, trunc, info = dream.step(int(learner.act(obs)))
            xs.append(float(obs[0]))
            ths.append(float(obs[2]))
            conts.append(info["cont_pred"])
            done = term or trunc
        xs_, conts_ = np.array(xs), np.array(conts)
        past = np.abs(xs_) > 2.4
        dreams.append(
            {
                "length": len(xs),
                "max_abs_x": float(np.abs(xs_).max()),
                "max_abs_theta": float(np.abs(ths).max()),
                "steps_past_x_limit": int(past.sum()),
                "cont_past_x_limit": float(np.median(conts_[past])) if past.any() else None,
                "x_at": [round(v, 2) for v in xs_[:: max(1, len(xs) // 10)]],
            }
        )
    out = {
        "run": args.run,
        "steps": args.steps,
        "seed": args.seed,
        "real_lengths": lengths,
        "real_causes": causes,
        "dreams": dreams,
    }
    print(json.dumps(out, indent=1))
    path = Path(__file__).parent / "results" / f"dream_endings_seed{args.seed}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
