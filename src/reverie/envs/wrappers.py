"""Small wrappers that change one thing about an :class:`~reverie.envs.base.Env`.

Each wrapper is an ``Env`` itself, so they stack:

Example:
    >>> env = TimeLimit(ActionRepeat(NormalizeActions(GymEnv("Pendulum-v1")), 2), 100)  # doctest: +SKIP
    >>> env.act_space["action"].high                                                     # doctest: +SKIP
    array([1.], dtype=float32)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image

from reverie.envs.base import Env, Space
from reverie.envs.errors import EnvError

__all__ = ["ActionRepeat", "NormalizeActions", "ResizeImage", "TimeLimit", "Wrapper", "resize_image"]


class Wrapper(Env):
    """Forwards spaces, ``step`` and ``close`` to the wrapped env; subclasses override what they change.

    Args:
        env: the env to wrap.

    Example:
        >>> Wrapper(GymEnv("CartPole-v1")).unwrapped  # doctest: +SKIP
        <reverie.envs.gym.GymEnv object at ...>
    """

    def __init__(self, env: Env) -> None:
        self.env = env

    @property
    def obs_space(self) -> dict[str, Space]:
        return self.env.obs_space

    @property
    def act_space(self) -> dict[str, Space]:
        return self.env.act_space

    @property
    def unwrapped(self) -> Env:
        """The innermost env."""
        env = self.env
        while isinstance(env, Wrapper):
            env = env.env
        return env

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()


class TimeLimit(Wrapper):
    """Ends episodes after ``steps`` steps with ``is_last`` but not ``is_terminal`` (a truncation).

    Args:
        env: the env to wrap.
        steps: agent steps per episode, counted from the reset.

    Example:
        >>> env = TimeLimit(GymEnv("CartPole-v1"), 5)  # doctest: +SKIP
    """

    def __init__(self, env: Env, steps: int) -> None:
        super().__init__(env)
        if steps < 1:
            raise ValueError(f"TimeLimit needs steps >= 1, got {steps}; leave the wrapper out for no limit.")
        self.steps = steps
        self._count = 0

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        obs = self.env.step(action)
        self._count = 0 if obs["is_first"] else self._count + 1
        if self._count >= self.steps and not obs["is_last"]:
            obs = {**obs, "is_last": True}
        return obs


class ActionRepeat(Wrapper):
    """Repeats each action ``repeat`` times, summing rewards and stopping early at ``is_last``.

    Args:
        env: the env to wrap.
        repeat: env steps per agent step.

    Example:
        >>> env = ActionRepeat(GymEnv("Pendulum-v1"), 2)  # doctest: +SKIP
    """

    def __init__(self, env: Env, repeat: int) -> None:
        super().__init__(env)
        if repeat < 1:
            raise ValueError(f"ActionRepeat needs repeat >= 1, got {repeat}.")
        self.repeat = repeat

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        if action.get("reset", False):
            return self.env.step(action)
        total = 0.0
        for _ in range(self.repeat):
            obs = self.env.step(action)
            total += float(obs["reward"])
            if obs["is_last"]:
                break
        return {**obs, "reward": np.float32(total)}


class NormalizeActions(Wrapper):
    """The agent acts in ``[-1, 1]`` on every bounded dim of a Box action; mapped to the env's bounds.

    Dims with an infinite bound and discrete actions pass through unchanged. Actions outside
    ``[-1, 1]`` are clipped before mapping.

    Args:
        env: the env to wrap.

    Example:
        >>> env = NormalizeActions(GymEnv("Pendulum-v1"))  # bounds [-2, 2]  # doctest: +SKIP
        >>> env.step({"action": np.array([1.0]), "reset": False})  # applies torque 2.0  # doctest: +SKIP
    """

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        space = env.act_space["action"]
        self._space = space
        if space.discrete:
            self._mask = np.zeros(space.shape, bool)
            return
        self._low = np.broadcast_to(np.asarray(space.low, np.float64), space.shape)
        self._high = np.broadcast_to(np.asarray(space.high, np.float64), space.shape)
        self._mask = np.isfinite(self._low) & np.isfinite(self._high)

    @property
    def act_space(self) -> dict[str, Space]:
        space = self._space
        if not self._mask.any():
            return {"action": space}
        low = np.where(self._mask, -1.0, self._low).astype(space.dtype)
        high = np.where(self._mask, 1.0, self._high).astype(space.dtype)
        return {"action": dataclasses.replace(space, low=low, high=high)}

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        if action.get("reset", False) or not self._mask.any():
            return self.env.step(action)
        a = np.asarray(action["action"], np.float64).reshape(self._space.shape)
        unit = (np.clip(a, -1.0, 1.0) + 1.0) / 2.0
        mapped = np.where(self._mask, self._low + unit * (self._high - self._low), a)
        return self.env.step({**action, "action": mapped.astype(self._space.dtype)})


def resize_image(image: np.ndarray, size: int, resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    """Resize a uint8 ``(H, W, C)`` image to ``(size, size, C)`` with Pillow.

    Example:
        >>> resize_image(np.zeros((400, 600, 3), np.uint8), 64).shape
        (64, 64, 3)
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.dtype != np.uint8:
        raise EnvError(f"resize_image needs a uint8 (H, W, C) image, got {image.dtype} {image.shape}.")
    if image.shape[:2] == (size, size):
        return image
    if image.shape[2] in (3, 4):
        return np.asarray(Image.fromarray(image).resize((size, size), resample))
    channels = [Image.fromarray(image[:, :, c]).resize((size, size), resample) for c in range(image.shape[2])]
    return np.stack([np.asarray(c) for c in channels], -1)


class ResizeImage(Wrapper):
    """Resizes uint8 ``(H, W, C)`` observations to ``(size, size, C)``.

    Args:
        env: the env to wrap.
        size: side of the square output images.
        keys: image keys to resize (default: every image key whose size differs).

    Example:
        >>> env = ResizeImage(GymEnv("CarRacing-v3"), 64)  # 96x96 -> 64x64  # doctest: +SKIP
    """

    def __init__(self, env: Env, size: int, keys: list[str] | None = None) -> None:
        super().__init__(env)
        self.size = size
        spaces = env.obs_space
        if keys is None:
            keys = [k for k, s in spaces.items() if s.is_image and s.shape[:2] != (size, size)]
        for key in keys:
            if key not in spaces or not spaces[key].is_image:
                raise EnvError(f"ResizeImage: '{key}' is not a uint8 (H, W, C) observation of this env.")
        self.keys = keys

    @property
    def obs_space(self) -> dict[str, Space]:
        spaces = dict(self.env.obs_space)
        for key in self.keys:
            shape = (self.size, self.size, spaces[key].shape[2])
            spaces[key] = dataclasses.replace(spaces[key], shape=shape, low=0, high=255)
        return spaces

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        obs = self.env.step(action)
        if not self.keys:
            return obs
        return {**obs, **{k: resize_image(obs[k], self.size) for k in self.keys}}
