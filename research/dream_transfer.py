"""Round 0 of dream transfer (issue 42): a Stable-Baselines3 learner trained only inside a checkpoint's DreamEnv,
then evaluated in the real env, beside the same learner trained in the real env, random play and the checkpoint's
own actor. Runs in a venv with stable-baselines3 on top of the project's packages:

    python -m venv --system-site-packages ~/.cache/reverie-sb3 && ~/.cache/reverie-sb3/bin/pip install \
        stable-baselines3==2.9.2
    OMP_NUM_THREADS=1 ~/.cache/reverie-sb3/bin/python research/dream_transfer.py RUN_FOLDER [--steps 20000]
        [--end-unknown on|off|default]

Writes research/results/dream_transfer_<env>.json. Finding: see research/notes/dream_transfer.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium
import numpy as np
import torch

torch.set_num_threads(1)


def real_env(env_id: str) -> gymnasium.Env:
    """The real env with the spaces the checkpoint's model uses (bounded Box actions scaled to [-1, 1])."""
    env = gymnasium.make(env_id)
    if isinstance(env.action_space, gymnasium.spaces.Box):
        env = gymnasium.wrappers.RescaleAction(env, -1.0, 1.0)
    return env


def evaluate(policy, env_id: str, episodes: int = 10, seed: int = 10_000) -> float:
    env = real_env(env_id)
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def learner(env: gymnasium.Env, seed: int):
    from stable_baselines3 import PPO, SAC

    if isinstance(env.action_space, gymnasium.spaces.Box):
        return SAC("MlpPolicy", env, seed=seed, verbose=0, learning_starts=1000)
    return PPO("MlpPolicy", env, seed=seed, verbose=0)


def dream_stats(env, policy, episodes: int = 10) -> dict:
    """Dream episodes of ``policy``: length, predicted return and how often a step was unknown."""
    lengths, returns, unknown = [], [], []
    for k in range(episodes):
        obs, _ = env.reset(seed=20_000 + k)
        done, total, steps, flagged = False, 0.0, 0, 0
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total, steps, flagged = total + reward, steps + 1, flagged + bool(info.get("unknown"))
            done = terminated or truncated
        lengths.append(steps)
        returns.append(total)
        unknown.append(flagged / max(steps, 1))
    return {"length": float(np.mean(lengths)), "return": float(np.mean(returns)), "unknown_frac": float(np.mean(unknown))}


def force_termination(cls, how: str) -> None:
    """Replace DreamEnv's termination rule: ``sample`` ends with probability 1 - cont_pred, ``threshold`` at 0.5."""
    step = cls.step

    def patched(self, action):
        obs, reward, terminated, truncated, info = step(self, action)
        unknown = bool(self.end_unknown and info["unknown"])
        if how == "sample":
            terminated = unknown or bool(self.np_random.random() > info["cont_pred"])
        else:
            terminated = unknown or info["cont_pred"] < 0.5
        return obs, reward, terminated, truncated and not terminated, info

    cls.step = patched


def main() -> None:
    from reverie.agent import Dreamer
    from reverie.dream import DreamEnv

    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--end-unknown", choices=["on", "off", "default"], default="default")
    parser.add_argument("--termination", choices=["env", "sample", "threshold"], default="env",
                        help="env: DreamEnv's own; sample / threshold: force Bernoulli(1 - cont) or cont < 0.5")
    args = parser.parse_args()
    if args.termination != "env":
        force_termination(DreamEnv, args.termination)
    agent = Dreamer.load(args.run)
    env_id = agent.config.env.id
    limit = real_env(env_id).spec.max_episode_steps or 1000
    end = {"on": True, "off": False, "default": None}[args.end_unknown]
    dream = DreamEnv(agent, seed=args.seed, max_steps=limit, end_unknown=end)
    out: dict = {"run": args.run, "env": env_id, "steps": args.steps, "end_unknown": dream.end_unknown}
    out["termination"] = args.termination
    space = dream.action_space
    out["random_return"] = evaluate(lambda o: space.sample(), env_id)
    out["reverie_actor_return"] = agent.evaluate(episodes=10)["eval/return"]
    out["dream_random"] = dream_stats(dream, lambda o: space.sample())

    start = time.time()
    in_dream = learner(dream, args.seed)
    in_dream.learn(args.steps)
    out["dream_train_s"] = round(time.time() - start, 1)

    def dreamed(o):
        return in_dream.predict(o, deterministic=True)[0]

    out["dream_trained_real_return"] = evaluate(dreamed, env_id)
    out["dream_trained_in_dream"] = dream_stats(dream, dreamed)

    start = time.time()
    in_real = learner(real_env(env_id), args.seed)
    in_real.learn(args.steps)
    out["real_train_s"] = round(time.time() - start, 1)
    out["real_trained_real_return"] = evaluate(lambda o: in_real.predict(o, deterministic=True)[0], env_id)
    lo, hi = out["random_return"], out["real_trained_real_return"]
    out["normalised"] = (out["dream_trained_real_return"] - lo) / (hi - lo) if hi != lo else None
    print(json.dumps(out, indent=1))
    folder = Path(__file__).parent / "results"
    folder.mkdir(exist_ok=True)
    (folder / f"dream_transfer_{env_id}_{args.end_unknown}_{args.termination}_seed{args.seed}.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
