"""Environments: the contract, the Gymnasium and suite adapters, wrappers, a checker and batched envs.

Env ids understood by :func:`make_env`:

* the ids of a game registered with :mod:`reverie.plugins`, e.g. ``crafter`` (64x64 pixels) and
  ``crafter-symbolic`` (a vector), :mod:`reverie.crafter` (``pip install "crafter>=1.8" numba``);
* a Gymnasium id (``CartPole-v1``, ``gym:Pendulum-v1``): :class:`GymEnv`;
* ``dmc:<domain>-<task>`` (``dmc:walker-walk``; ``env.pixels=true`` for images): :class:`DMCEnv`
  (``pip install "mujoco==3.17.0" dm_control``);
* ``atari:<Game>`` (``atari:Pong``, the Atari 100k protocol): :class:`AtariEnv`
  (``pip install "ale-py>=0.9" opencv-python-headless``).

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
from reverie.envs.atari import AtariEnv
from reverie.envs.base import RESERVED_KEYS, Env, Space, model_keys, reserved_spaces
from reverie.envs.checker import check_env, check_gym_env
from reverie.envs.dmc import DMCEnv
from reverie.envs.errors import EnvError, EnvWarning
from reverie.envs.gym import GymEnv
from reverie.envs.parallel import BatchEnv, ParallelEnv
from reverie.envs.wrappers import ActionRepeat, NormalizeActions, ResizeImage, TimeLimit, Wrapper
from reverie.plugins import game_for, resolve

__all__ = [
    "RESERVED_KEYS",
    "ActionRepeat",
    "AtariEnv",
    "BatchEnv",
    "DMCEnv",
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


def _adapter(cfg: EnvConfig, seed: int) -> tuple[Env, bool]:
    """The adapter for ``cfg.id`` (a registered game's, a suite's or :class:`GymEnv`) and whether it repeats
    actions itself.

    DMC and Atari repeat actions inside the adapter (``cfg.action_repeat`` control steps or frames),
    so that frames are rendered and max-pooled once per agent step.
    """
    game = game_for(cfg.id)
    if game is not None and game.make_env is not None:
        return resolve(game.make_env)(cfg, seed), False
    suite, _, name = cfg.id.partition(":")
    if suite not in ("dmc", "atari"):
        return GymEnv(cfg.id, seed=seed, pixels=cfg.pixels, image_size=cfg.image_size), False
    if not name:
        example = "dmc:walker-walk" if suite == "dmc" else "atari:Pong"
        raise EnvError(f"env.id '{cfg.id}' names no task; use {suite}:<name>, e.g. {example}.")
    if suite == "dmc":
        return DMCEnv(name, seed, repeat=cfg.action_repeat, pixels=cfg.pixels, image_size=cfg.image_size), True
    return AtariEnv(name, seed, repeat=cfg.action_repeat, size=cfg.image_size), True


def make_env(cfg: EnvConfig, seed: int) -> Env:
    """Build one env from its config section: the adapter, then the wrappers the config asks for.

    Order: ``ResizeImage`` (images not ``cfg.image_size``), ``NormalizeActions`` (bounded Box
    actions), ``ActionRepeat`` (``cfg.action_repeat > 1``, unless the DMC or Atari adapter repeats
    itself), ``TimeLimit`` (``cfg.time_limit > 0``, counted in agent steps).

    Args:
        cfg: the ``env`` config section.
        seed: seed of the env's first reset.

    Raises:
        EnvError: unknown id, or a suite whose package is not installed (the message has the pip command).

    Example:
        >>> make_env(EnvConfig(id="CartPole-v1"), seed=0).act_space["action"].n
        2
    """
    env, repeats = _adapter(cfg, seed)
    if any(s.is_image and s.shape[:2] != (cfg.image_size,) * 2 for s in env.obs_space.values()):
        env = ResizeImage(env, cfg.image_size)
    action = env.act_space["action"]
    if not action.discrete:
        bounded = np.isfinite(np.asarray(action.low)) & np.isfinite(np.asarray(action.high))
        if bounded.any():
            env = NormalizeActions(env)
    if cfg.action_repeat > 1 and not repeats:
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
