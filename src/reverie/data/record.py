"""Record episodes of a policy into a dataset: ``record(env_id, policy, episodes, folder)``.

Policies are looked up by name: ``"random"`` for any env, then the recording policies the env's game registers
with :mod:`reverie.plugins` (Crafter: ``"scripted"``, ``"scripted-curious"``); any other string is taken as a
checkpoint folder of :class:`reverie.Dreamer`. A policy is built as ``factory(env, seed)`` and then called as
``policy(obs) -> action`` for one env.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reverie.config import EnvConfig
from reverie.data.dataset import Dataset
from reverie.data.format import DatasetError, check_frac, label_plan
from reverie.data.writer import DatasetWriter
from reverie.envs import Env, make_env
from reverie.errors import ReverieError
from reverie.plugins import policy as game_policy
from reverie.plugins import policy_names

__all__ = ["POLICIES", "CheckpointPolicy", "Policy", "PolicyError", "RandomPolicy", "make_policy", "record"]

log = logging.getLogger("reverie.data")


class PolicyError(ReverieError):
    """An unknown policy name or a checkpoint that does not fit the env; the message lists the choices."""


class Policy(Protocol):
    """Chooses the action for one observation dict of one env (state is kept inside, reset on ``is_first``)."""

    def __call__(self, obs: dict[str, Any]) -> Any: ...


PolicyFactory = Callable[[Env, int], Policy]
"""``factory(env, seed) -> Policy``: builds a policy for one env (it may read the env's internals)."""


class RandomPolicy:
    """Uniform random actions from the env's action space, drawn from a generator seeded by ``seed``.

    Example:
        >>> from reverie.envs import GymEnv
        >>> policy = RandomPolicy(GymEnv("CartPole-v1"), seed=0)
        >>> int(policy({"is_first": True})) in (0, 1)
        True
    """

    def __init__(self, env: Env, seed: int) -> None:
        self.space = env.act_space["action"]
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        return self.space.sample(self.rng)


class CheckpointPolicy:
    """A trained :class:`reverie.Dreamer` acting through ``predict``, its recurrent state carried across steps.

    Args:
        checkpoint: a checkpoint folder or a run folder holding ``checkpoint/``.
        env: the env it acts in; its observations must hold the keys the agent was trained on.
        seed: seeds torch, so that sampled actions repeat.
        deterministic: take the policy's mode instead of sampling.

    Raises:
        PolicyError: the agent was trained on other observation keys or shapes, or another action space.
    """

    def __init__(self, checkpoint: str | os.PathLike[str], env: Env, seed: int, deterministic: bool = False) -> None:
        import torch

        from reverie.agent import Dreamer

        self.agent = Dreamer.load(checkpoint)
        self.deterministic = deterministic
        want = self.agent.learner.obs_space
        have = env.obs_space
        wrong = [k for k, s in want.items() if k not in have or tuple(have[k].shape) != tuple(s.shape)]
        act, env_act = self.agent.learner.act_space, env.act_space["action"]
        if wrong or act.discrete != env_act.discrete or tuple(act.shape) != tuple(env_act.shape):
            raise PolicyError(
                f"Checkpoint {checkpoint} was trained on env '{self.agent.config.env.id}' (observation keys "
                f"{sorted(want)}); it does not fit this env (keys {sorted(have)}, mismatched {wrong}). "
                f"Record with the env the checkpoint was trained on."
            )
        self.dtype = env_act.dtype
        self.state: Any = None
        torch.manual_seed(seed)

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        if obs["is_first"]:
            self.state = None
        action, self.state = self.agent.predict(obs, self.state, self.deterministic)
        return np.asarray(action, self.dtype)


POLICIES: dict[str, PolicyFactory] = {"random": RandomPolicy}
"""Policies for any env: name -> ``factory(env, seed)``. A game's own policies are registered with its
:class:`reverie.plugins.Game`."""


def make_policy(policy: str, env: Env, seed: int, env_id: str = "") -> Policy:
    """The policy named ``policy`` (in :data:`POLICIES`, or registered by the game of ``env_id``), or a
    :class:`CheckpointPolicy` when it is a folder.

    Raises:
        PolicyError: neither a known name nor an existing folder; the message lists the names.
    """
    if policy in POLICIES:
        return POLICIES[policy](env, seed)
    factory = game_policy(env_id, policy)
    if factory is not None:
        return factory(env, seed)  # type: ignore[no-any-return]
    if Path(policy).is_dir():
        return CheckpointPolicy(policy, env, seed)
    names = sorted(POLICIES) + policy_names(env_id)
    raise PolicyError(
        f"Unknown policy '{policy}' for env '{env_id}': known policies are {', '.join(names)}, or give a checkpoint "
        f"folder (what `reverie train --logdir DIR` writes)."
    )


def record(
    env_id: str,
    policy: str,
    episodes: int,
    folder: str | os.PathLike[str],
    seed: int = 0,
    time_limit: int | None = None,
    action_frac: float = 1.0,
    reward_frac: float = 1.0,
    chunk: int = 1024,
) -> Dataset:
    """Run ``policy`` for ``episodes`` full episodes of ``env_id`` and write them as a dataset.

    Args:
        env_id: an id of :func:`reverie.envs.make_env` (``crafter``, ``CartPole-v1``, ``dmc:walker-walk``...).
        policy: ``"random"``, another name in :data:`POLICIES`, or a checkpoint folder.
        episodes: episodes to record.
        folder: the dataset folder (new or empty).
        seed: seeds the env (episode worlds), the policy and the choice of unlabeled episodes.
        time_limit: truncate episodes after this many steps (None: the env's own limit).
        action_frac: share of episodes that keep their actions (exactly ``round(action_frac * episodes)``);
            the others store zeros and ``has_actions=False``, as unlabeled video would.
        reward_frac: likewise for rewards.
        chunk: steps per episode file.

    Returns:
        The finished :class:`Dataset`.

    Example:
        >>> ds = record("crafter", "random", episodes=3, folder="data/crafter-random", time_limit=200)  # doctest: +SKIP
    """
    if episodes < 1:
        raise DatasetError(f"record needs episodes >= 1, got {episodes}.")
    keep_actions = label_plan(episodes, check_frac("action_frac", action_frac), [seed, 0])
    keep_rewards = label_plan(episodes, check_frac("reward_frac", reward_frac), [seed, 1])
    env = make_env(EnvConfig(id=env_id, time_limit=time_limit or 0), seed)
    creation = {"source": "record", "policy": str(policy), "seed": seed, "time_limit": time_limit}
    try:
        actor = make_policy(policy, env, seed, env_id)
        writer = DatasetWriter(folder, env_id, env.obs_space, env.act_space, chunk, creation)
        for index in range(episodes):
            steps = _run_episode(env, actor)
            writer.add_episode(steps, bool(keep_actions[index]), bool(keep_rewards[index]))
            log.info("recorded episode %d/%d: %d steps", index + 1, episodes, len(steps["is_first"]))
        writer.close()
    finally:
        env.close()
    return Dataset(folder)


def _run_episode(env: Env, policy: Policy) -> dict[str, np.ndarray]:
    """One episode as ``{key: (T, ...)}``; ``action[t]`` led to step ``t`` (zeros at the first step)."""
    space = env.act_space["action"]
    action = np.zeros(space.shape, space.dtype)
    obs = env.step({"action": action, "reset": True})
    steps, actions = [obs], [action]
    while not obs["is_last"]:
        action = np.asarray(policy(obs), space.dtype)
        obs = env.step({"action": action, "reset": False})
        steps.append(obs)
        actions.append(action)
    data = {key: np.stack([np.asarray(s[key]) for s in steps]) for key in steps[0]}
    data["action"] = np.stack(actions)
    return data
