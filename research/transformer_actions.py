"""Does a CartPole world model know what an action does? One-step action effects, predicted against real.

For states of random-play CartPole episodes (the agent's filter run over the real frames), the real next observation
is computed for both actions by restoring the simulator's state, and the model pictures the next observation for
both actions (``WorldModel.step``, the dream's own step, averaged over ``--draws`` samples). The action effect is
the difference between the two next observations. One step of CartPole changes only the velocities (x_dot,
theta_dot) by an almost constant amount, so per entry the script prints the mean predicted effect over the mean real
one (1: the model knows the push; 0: its dream ignores the action) and the spread of the predicted effect over the
real effect's mean. Run on any CartPole checkpoint:

    python research/transformer_actions.py RUN_FOLDER [RUN_FOLDER ...]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import gymnasium as gym
import numpy as np
import torch

from reverie.agent import Dreamer


def effects(folder: str, episodes: int, draws: int, seed: int, steps: int = 0) -> dict[str, np.ndarray]:
    agent = Dreamer.load(folder)
    learner = agent.learner
    wm = learner.wm
    if steps:  # a transformer's shortcut steps per dreamed frame
        wm.cfg = dataclasses.replace(wm.cfg, sample_steps=steps)
    key = wm.obs_keys[0]
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    real, pred = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        state, first = None, True
        while True:
            state = learner.filter({key: obs[None], "is_first": np.array([first])}, state)
            first = False
            sim = copy.deepcopy(env.unwrapped.state)
            nexts = []
            for a in (0, 1):
                env.unwrapped.state = copy.deepcopy(sim)
                nexts.append(env.step(a)[0])
            env.unwrapped.state = sim
            env.unwrapped.steps_beyond_terminated = None  # a trial step may have ended the episode
            real.append(nexts[1] - nexts[0])
            with torch.no_grad():
                many = {k: v.expand(draws, *v.shape[1:]) for k, v in state.items()}
                pictured = []
                for a in (0, 1):
                    onehot = torch.zeros(draws, 2)
                    onehot[:, a] = 1.0
                    step = wm.step(many, onehot, None, [key])
                    pictured.append(step.obs[key].float().mean(0).numpy())
            pred.append(pictured[1] - pictured[0])
            action = int(rng.integers(2))
            onehot = torch.zeros(1, 2)
            onehot[0, action] = 1.0
            state = {**state, "action": onehot}
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    return {"real": np.array(real), "pred": np.array(pred)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--steps", type=int, nargs="+", default=[0], help="transformer sample steps (0: the run's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for folder, steps in [(f, s) for f in args.runs for s in args.steps]:
        out = effects(folder, args.episodes, args.draws, args.seed, steps)
        real, pred = out["real"], out["pred"]
        mean, spread = pred.mean(0) / real.mean(0), pred.std(0) / np.abs(real.mean(0))
        print(f"{folder} (steps {steps or 'of the run'}): {len(real)} states; x_dot, theta_dot")
        print(f"  mean predicted effect / real: {mean[1]:.2f} {mean[3]:.2f}")
        print(f"  spread of the predicted effect / real: {spread[1]:.2f} {spread[3]:.2f}")


if __name__ == "__main__":
    main()
