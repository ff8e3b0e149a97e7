"""Adapter from any registered Gymnasium id to the Reverie env contract.

Observation keys:

* a 1-D (or other non-image) Box -> ``"vector"`` (float32, flattened);
* a uint8 ``(H, W, C)`` Box -> ``"image"`` (a uint8 ``(H, W)`` Box gets a channel axis and a
  channel-first ``(C, H, W)`` one with C in 1, 3, 4 is transposed);
* a Discrete / MultiBinary / MultiDiscrete observation -> a float32 vector (Discrete one-hot);
* a Dict (or Tuple) -> one key per leaf, nested names joined with ``/`` (``"arm/joints"``; the
  entries of a top-level Tuple are ``"obs/0"``, ``"obs/1"``, ...).
  A leaf whose name would start with ``log/`` or clash with a reserved key is prefixed ``obs/``.

Example:
    >>> env = GymEnv("CartPole-v1", seed=0)
    >>> sorted(env.obs_space)
    ['is_first', 'is_last', 'is_terminal', 'reward', 'vector']
    >>> env.step({"action": 0, "reset": True})["is_first"]
    True
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces as gs

from reverie.envs.base import RESERVED_KEYS, Env, Space, reserved_spaces
from reverie.envs.errors import EnvError
from reverie.envs.wrappers import resize_image
from reverie.plugins import games

__all__ = ["GymEnv", "unknown_id_message"]

logger = logging.getLogger("reverie.envs")

# A leaf of the observation: its key, its Space and how to turn the raw gym value into it.
_Leaf = tuple[str, Space, Callable[[Any], np.ndarray]]


def unknown_id_message(env_id: str) -> str:
    """One line naming an unknown id, the closest ids (Gymnasium's and the registered games') and where to find
    the rest.

    Example:
        >>> unknown_id_message("CartPol-v1")[:61]
        "Unknown environment id 'CartPol-v1'. Did you mean CartPole-v1"
    """
    ids = [str(k) for k in gymnasium.registry] + [i for game in games() for i in game.env_ids]
    lower = {i.lower(): i for i in ids}
    close = [lower[m] for m in difflib.get_close_matches(env_id.lower(), list(lower), n=3, cutoff=0.6)]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"Unknown environment id '{env_id}'.{hint} Use a registered Gymnasium id "
        "(list them with gymnasium.pprint_registry()), install the package that registers it, "
        "or write your own reverie.envs.Env."
    )


def _make(env_id: str, **kwargs: Any) -> gymnasium.Env:
    try:
        return gymnasium.make(env_id, **kwargs)
    except (gymnasium.error.UnregisteredEnv, ModuleNotFoundError):
        raise EnvError(unknown_id_message(env_id)) from None
    except gymnasium.error.DependencyNotInstalled as err:
        text = " ".join(str(err).split())
        raise EnvError(f"Environment '{env_id}' needs a package that is not installed: {text}") from None


def _box_leaf(name: str, space: gs.Box) -> _Leaf:
    image_name, name = name or "image", name or "vector"
    shape = tuple(space.shape)
    if space.dtype == np.uint8 and len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        hwc = (shape[1], shape[2], shape[0])  # channel-first frames become (H, W, C)
        return image_name, Space(np.uint8, hwc, 0, 255), lambda x: np.asarray(x, np.uint8).transpose(1, 2, 0)
    if space.dtype == np.uint8 and len(shape) == 3:
        return image_name, Space(np.uint8, shape, 0, 255), lambda x: np.asarray(x, np.uint8)
    if space.dtype == np.uint8 and len(space.shape) == 2:
        shape = (*space.shape, 1)
        return image_name, Space(np.uint8, shape, 0, 255), lambda x: np.asarray(x, np.uint8)[..., None]
    size = int(np.prod(space.shape))
    low = np.asarray(space.low, np.float32).reshape(size)
    high = np.asarray(space.high, np.float32).reshape(size)
    return name, Space(np.float32, (size,), low, high), lambda x: np.asarray(x, np.float32).reshape(size)


def _leaves(space: gs.Space, name: str = "") -> list[_Leaf]:
    """Flatten a (possibly nested) gym observation space into leaves; ``name`` is "" at the top."""
    if isinstance(space, gs.Dict):
        return _nested([(str(k), v) for k, v in space.spaces.items()], name)
    if isinstance(space, gs.Tuple):
        return _nested([(str(i), v) for i, v in enumerate(space.spaces)], name or "obs")
    if isinstance(space, gs.Box):
        return [_box_leaf(name, space)]
    key = name or "vector"
    if isinstance(space, gs.Discrete):
        one_hot, start = np.eye(int(space.n), dtype=np.float32), int(space.start)
        return [(key, Space(np.float32, (int(space.n),), 0.0, 1.0), lambda x: one_hot[int(x) - start])]
    if isinstance(space, (gs.MultiBinary, gs.MultiDiscrete)):
        size = int(np.prod(space.shape))
        return [(key, Space(np.float32, (size,)), lambda x: np.asarray(x, np.float32).reshape(size))]
    raise EnvError(
        f"Observation space {space} is not supported; use Box, Discrete, MultiBinary, MultiDiscrete, "
        "Dict or Tuple, or convert it with a gymnasium.ObservationWrapper."
    )


def _nested(items: list[tuple[str, gs.Space]], prefix: str) -> list[_Leaf]:
    out: list[_Leaf] = []
    for key, sub in items:
        full = f"{prefix}/{key}" if prefix else key
        if full.startswith("log/") or full in RESERVED_KEYS:
            full = f"obs/{full}"
        # The leaves' getters read from ``sub``; wrap them to first index into the parent value.
        out.extend((k, s, _index(key, fn)) for k, s, fn in _leaves(sub, full))
    return out


def _index(key: str, fn: Callable[[Any], np.ndarray]) -> Callable[[Any], np.ndarray]:
    def get(value: Any) -> np.ndarray:
        return fn(value[int(key)] if isinstance(value, tuple) else value[key])

    return get


def _act_space(space: gs.Space) -> Space:
    if isinstance(space, gs.Discrete):
        return Space(np.int64, (), 0, int(space.n), discrete=True)
    if isinstance(space, gs.Box):
        low = np.asarray(space.low, np.float32)
        high = np.asarray(space.high, np.float32)
        return Space(np.float32, tuple(space.shape), low, high)
    raise EnvError(
        f"Action space {space} is not supported; Reverie handles Discrete and Box actions. "
        "Convert it with a gymnasium.ActionWrapper (e.g. flatten MultiDiscrete into one Discrete)."
    )


class GymEnv(Env):
    """A Gymnasium env behind the Reverie contract.

    Args:
        env_id: registered Gymnasium id, optionally prefixed ``gym:`` (``"gym:CartPole-v1"``).
        seed: seed of the first reset; later resets continue the env's RNG.
        pixels: observe rendered ``rgb_array`` frames under ``"image"`` instead of the env's observation.
        image_size: side of the rendered frames after resizing (only with ``pixels``).
        **kwargs: passed to ``gymnasium.make``.

    Raises:
        EnvError: unknown id, missing dependency, or an unsupported space.

    Example:
        >>> env = GymEnv("Pendulum-v1", seed=1)
        >>> env.act_space["action"].shape
        (1,)
    """

    def __init__(
        self, env_id: str, seed: int | None = None, pixels: bool = False, image_size: int = 64, **kwargs: Any
    ) -> None:
        name = env_id.removeprefix("gym:")
        if pixels:
            kwargs.setdefault("render_mode", "rgb_array")
        self._env = _make(name, **kwargs)
        self.id = name
        self._seed = seed
        self._pixels = pixels
        self._size = image_size
        self._done = True
        self._seeded = False
        if pixels and "rgb_array" not in self._env.metadata.get("render_modes", []):
            self._env.close()
            raise EnvError(f"'{name}' cannot render rgb_array frames; use pixels=False.")
        if pixels:
            self._leaves: list[_Leaf] = []
            self._obs_spaces = {"image": Space(np.uint8, (image_size, image_size, 3), 0, 255)}
        else:
            self._leaves = _leaves(self._env.observation_space)
            self._obs_spaces = {key: space for key, space, _ in self._leaves}
        self._action = _act_space(self._env.action_space)
        self._start = int(getattr(self._env.action_space, "start", 0))

    @property
    def obs_space(self) -> dict[str, Space]:
        return {**self._obs_spaces, **reserved_spaces()}

    @property
    def act_space(self) -> dict[str, Space]:
        return {"action": self._action}

    @property
    def gym_env(self) -> gymnasium.Env:
        """The wrapped Gymnasium env."""
        return self._env

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        if action.get("reset", False) or self._done:
            seed = None if self._seeded else self._seed
            self._seeded = True
            raw, _ = self._env.reset(seed=seed)
            self._done = False
            return self._obs(raw, 0.0, is_first=True)
        raw, reward, terminated, truncated, _ = self._env.step(self._gym_action(action["action"]))
        self._done = bool(terminated or truncated)
        return self._obs(raw, reward, is_last=self._done, is_terminal=bool(terminated))

    def close(self) -> None:
        self._env.close()

    def _gym_action(self, action: Any) -> Any:
        if self._action.discrete:
            return int(np.asarray(action).reshape(())) + self._start
        return np.asarray(action, self._env.action_space.dtype).reshape(self._action.shape)

    def _obs(
        self, raw: Any, reward: Any, is_first: bool = False, is_last: bool = False, is_terminal: bool = False
    ) -> dict[str, Any]:
        obs: dict[str, Any]
        obs = {"image": self._render()} if self._pixels else {key: fn(raw) for key, _, fn in self._leaves}
        obs["reward"] = np.float32(reward)
        obs["is_first"] = is_first
        obs["is_last"] = is_last
        obs["is_terminal"] = is_terminal
        return obs

    def _render(self) -> np.ndarray:
        frame = np.asarray(self._env.render(), np.uint8)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, -1)
        return resize_image(frame[..., :3], self._size)
