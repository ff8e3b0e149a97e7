"""Environments: the contract, the Gymnasium adapter, wrappers, a checker and batched envs.

Example:
    >>> from reverie.config import EnvConfig
    >>> env = make_env(EnvConfig(id="Pendulum-v1", time_limit=50), seed=0)
    >>> env.act_space["action"].high
    array([1.], dtype=float32)
"""

from __future__ import annotations

from functools import partial

import numpy as np

from reverie.config import EnvConfig
from reverie.envs.base import RESERVED_KEYS, Env, Space, model_keys, reserved_spaces
from reverie.envs.checker import check_env, check_gym_env
from reverie.envs.errors import EnvError, EnvWarning
from reverie.envs.gym import GymEnv
from reverie.envs.parallel import BatchEnv, ParallelEnv
from reverie.envs.wrappers import ActionRepeat, NormalizeActions, ResizeImage, TimeLimit, Wrapper

__all__ = [
    "RESERVED_KEYS",
    "ActionRepeat",
    "BatchEnv",
    "Env",
    "EnvError",
    "EnvWarning",
    "GymEnv",
    "NormalizeActions",
    "ParallelEnv",
    "ResizeImage",
    "Space",
    "TimeLimit",
    "Wrapper",
    "check_env",
    "check_gym_env",
    "make_batch_env",
    "make_env",
    "model_keys",
    "reserved_spaces",
]

# Suites that get their own adapters later; their ids must not fall through to Gymnasium.
_PLANNED_SUITES = {"crafter": "Crafter", "dmc": "DeepMind Control", "atari": "Atari"}


def make_env(cfg: EnvConfig, seed: int) -> Env:
    """Build one env from its config section: the adapter, then the wrappers the config asks for.

    Order: ``ResizeImage`` (images not ``cfg.image_size``), ``NormalizeActions`` (bounded Box
    actions), ``ActionRepeat`` (``cfg.action_repeat > 1``), ``TimeLimit`` (``cfg.time_limit > 0``,
    counted in agent steps).

    Args:
        cfg: the ``env`` config section.
        seed: seed of the env's first reset.

    Raises:
        EnvError: unknown id, or a suite that is not supported yet.

    Example:
        >>> make_env(EnvConfig(id="CartPole-v1"), seed=0).act_space["action"].n
        2
    """
    suite = cfg.id.split(":", 1)[0] if ":" in cfg.id else cfg.id
    if suite in _PLANNED_SUITES:
        raise EnvError(
            f"env.id '{cfg.id}': the {_PLANNED_SUITES[suite]} suite is not supported yet; use a Gymnasium id "
            "such as CartPole-v1 or Pendulum-v1, or write a reverie.envs.Env."
        )
    env: Env = GymEnv(cfg.id, seed=seed, pixels=cfg.pixels, image_size=cfg.image_size)
    if any(s.is_image and s.shape[:2] != (cfg.image_size,) * 2 for s in env.obs_space.values()):
        env = ResizeImage(env, cfg.image_size)
    action = env.act_space["action"]
    if not action.discrete:
        bounded = np.isfinite(np.asarray(action.low)) & np.isfinite(np.asarray(action.high))
        if bounded.any():
            env = NormalizeActions(env)
    if cfg.action_repeat > 1:
        env = ActionRepeat(env, cfg.action_repeat)
    if cfg.time_limit > 0:
        env = TimeLimit(env, cfg.time_limit)
    return env


def make_batch_env(cfg: EnvConfig, seed: int) -> BatchEnv | ParallelEnv:
    """``cfg.num_envs`` envs from :func:`make_env`; env ``i`` gets seed ``seed + i``.

    Worker processes (:class:`ParallelEnv`) when ``cfg.num_envs > 1`` and ``cfg.parallel``, else
    a serial :class:`BatchEnv`.

    Example:
        >>> envs = make_batch_env(EnvConfig(num_envs=2, parallel=False), seed=0)
        >>> envs.num_envs
        2
    """
    factories = [partial(make_env, cfg, seed + i) for i in range(cfg.num_envs)]
    if cfg.num_envs > 1 and cfg.parallel:
        return ParallelEnv(factories)
    return BatchEnv(factories)
