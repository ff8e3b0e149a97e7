"""DeepMind Control Suite tasks behind the Reverie env contract, from proprioception or pixels.

Env ids are ``dmc:<domain>-<task>`` (``dmc:walker-walk``, ``dmc:cartpole-swingup_sparse``,
``dmc:ball_in_cup-catch``). Observation keys:

* proprio (default): ``"vector"``, float32, every entry of the task's observation dict flattened and
  concatenated in the suite's order (walker-walk: orientations 14, height 1, velocity 9 = 24);
* ``pixels=True``: ``"image"``, uint8 ``(size, size, 3)`` rendered from camera 0 (camera 2 for
  quadruped, as in DreamerV3), headless through ``MUJOCO_GL=egl`` unless ``MUJOCO_GL`` is set.

Actions live in ``[-1, 1]`` on every dim and are mapped to the task's bounds. ``repeat`` physics
control steps are taken per agent step (rewards summed; pixels are rendered once per agent step).
Episodes end at the suite's time limit (1000 control steps for the standard tasks) as a truncation:
``is_last`` without ``is_terminal``; a step with discount 0 is terminal.

Example:
    >>> env = DMCEnv("walker-walk", seed=0, repeat=2)            # doctest: +SKIP
    >>> env.step({"action": np.zeros(6), "reset": True})["vector"].shape  # doctest: +SKIP
    (24,)
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import numpy as np

from reverie.envs.base import Env, Space, reserved_spaces
from reverie.envs.errors import EnvError

__all__ = ["INSTALL", "DMCEnv"]

INSTALL = 'pip install "mujoco==3.17.0" dm_control'
"""The pip command that installs the DeepMind Control Suite (mujoco 4 breaks ``suite.load``)."""

_CAMERAS = {"quadruped": 2}  # DreamerV3's camera choice; 0 for every other domain


def _import_suite() -> Any:
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before dm_control is imported
    try:
        from dm_control import suite
    except ImportError:
        raise EnvError(f"The DeepMind Control suite needs dm_control and mujoco: {INSTALL}") from None
    return suite


def _parse(name: str, suite: Any) -> tuple[str, str]:
    tasks = [f"{d}-{t}" for d, t in suite.ALL_TASKS]
    domain, _, task = name.partition("-")
    if (domain, task) not in suite.ALL_TASKS:
        close = difflib.get_close_matches(name.replace("_", "-"), tasks, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join('dmc:' + c for c in close)}?" if close else ""
        raise EnvError(
            f"Unknown DeepMind Control task 'dmc:{name}'.{hint} Use dmc:<domain>-<task>, e.g. dmc:walker-walk; "
            "the tasks are dm_control.suite.ALL_TASKS."
        )
    return domain, task


class DMCEnv(Env):
    """A DeepMind Control Suite task behind the Reverie contract; see the module docstring.

    Args:
        name: ``<domain>-<task>``, e.g. ``walker-walk`` (a ``dmc:`` prefix is accepted).
        seed: seeds the task's RNG, which draws the initial states of all episodes; None draws one.
        repeat: control steps per agent step (rewards summed).
        pixels: observe rendered frames under ``"image"`` instead of ``"vector"``.
        image_size: side of the rendered frames.
        camera: camera id to render from (default: 2 for quadruped, else 0).
        fast_render: turn off shadows and multisampling. Software (CPU) EGL then renders ~8x faster;
            frames differ slightly from the default look the papers used (mean |diff| ~7/255).

    Raises:
        EnvError: dm_control is not installed, the task is unknown, or the suite fails to load.

    Example:
        >>> env = DMCEnv("cartpole-swingup", seed=0)   # doctest: +SKIP
        >>> env.act_space["action"].shape              # doctest: +SKIP
        (1,)
    """

    def __init__(
        self,
        name: str,
        seed: int | None = None,
        repeat: int = 1,
        pixels: bool = False,
        image_size: int = 64,
        camera: int | None = None,
        fast_render: bool = False,
    ) -> None:
        suite = _import_suite()
        name = name.removeprefix("dmc:")
        domain, task = _parse(name, suite)
        if repeat < 1:
            raise EnvError(f"DMCEnv needs repeat >= 1, got {repeat}.")
        try:
            self._env = suite.load(domain, task, task_kwargs={"random": seed})
        except Exception as err:  # e.g. a mujoco version the installed dm_control does not support
            import mujoco

            raise EnvError(
                f"dm_control failed to load '{name}' with mujoco {mujoco.__version__} ({type(err).__name__}: "
                f"{err}); install the tested versions: {INSTALL}"
            ) from err
        self.id, self.repeat, self.pixels, self.size = f"dmc:{name}", repeat, pixels, image_size
        self.camera = _CAMERAS.get(domain, 0) if camera is None else camera
        if fast_render:
            quality = self._env.physics.model.vis.quality
            quality.offsamples, quality.shadowsize = 0, 0
        spec = self._env.action_spec()
        self._low = np.asarray(spec.minimum, np.float64) * np.ones(spec.shape)
        self._high = np.asarray(spec.maximum, np.float64) * np.ones(spec.shape)
        self._shape = tuple(spec.shape)
        self._obs_size = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        self._done = True

    @property
    def obs_space(self) -> dict[str, Space]:
        if self.pixels:
            spaces = {"image": Space(np.uint8, (self.size, self.size, 3), 0, 255)}
        else:
            spaces = {"vector": Space(np.float32, (self._obs_size,))}
        return {**spaces, **reserved_spaces()}

    @property
    def act_space(self) -> dict[str, Space]:
        return {
            "action": Space(
                np.float32, self._shape, -np.ones(self._shape, np.float32), np.ones(self._shape, np.float32)
            )
        }

    @property
    def dm_env(self) -> Any:
        """The wrapped ``dm_control`` environment."""
        return self._env

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        if action.get("reset", False) or self._done:
            self._done = False
            return self._obs(self._env.reset(), 0.0, is_first=True)
        unit = np.clip(np.asarray(action["action"], np.float64).reshape(self._shape), -1.0, 1.0)
        scaled = self._low + (unit + 1.0) / 2.0 * (self._high - self._low)
        reward = 0.0
        for _ in range(self.repeat):
            time_step = self._env.step(scaled)
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        self._done = time_step.last()
        terminal = self._done and float(time_step.discount) == 0.0
        return self._obs(time_step, reward, is_last=self._done, is_terminal=terminal)

    def _obs(
        self, time_step: Any, reward: float, is_first: bool = False, is_last: bool = False, is_terminal: bool = False
    ) -> dict[str, Any]:
        obs: dict[str, Any]
        if self.pixels:
            obs = {"image": self._render()}
        else:
            parts = [np.asarray(v, np.float32).reshape(-1) for v in time_step.observation.values()]
            obs = {"vector": np.concatenate(parts)}
        obs["reward"] = np.float32(reward)
        obs["is_first"], obs["is_last"], obs["is_terminal"] = is_first, is_last, is_terminal
        return obs

    def _render(self) -> np.ndarray:
        try:
            frame = self._env.physics.render(self.size, self.size, camera_id=self.camera)
        except Exception as err:
            gl = os.environ.get("MUJOCO_GL")
            raise EnvError(
                f"MuJoCo rendering failed under MUJOCO_GL={gl} ({type(err).__name__}: {err}); try MUJOCO_GL=osmesa "
                "(apt-get install libosmesa6) or pixels=False."
            ) from err
        return np.asarray(frame, np.uint8)

    def close(self) -> None:
        self._done = True
        close = getattr(self._env, "close", None)
        if close is not None:
            close()
