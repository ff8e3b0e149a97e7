"""Atari games behind the Reverie env contract with the Atari 100k protocol of DreamerV3.

Env ids are ``atari:<Game>`` (``atari:Pong``, ``atari:MsPacman``; snake case such as
``atari:space_invaders`` is accepted). The protocol, as in DreamerV3's ``atari100k`` config:

* ``ALE/<Game>-v5`` with ``frameskip=1`` and ``repeat_action_probability=0`` (no sticky actions),
  the minimal action set (Pong: 6 actions);
* our own frame skip: ``repeat`` frames per agent step (4), rewards summed and not clipped (the
  model's symlog handles the scale), the observation is the pixel-wise max of the last two frames;
* RGB (``gray=False``) resized to ``size`` x ``size`` with ``cv2.INTER_AREA``: key ``"image"``;
* up to ``noops`` (30) random no-op frames after each reset;
* a limit of 108,000 frames per episode (27,000 agent steps) as a truncation; ``is_terminal`` only at
  game over. Lives are not used as episode ends; ``log/lives`` reports them.

Example:
    >>> env = AtariEnv("Pong", seed=0)                                       # doctest: +SKIP
    >>> env.step({"action": 0, "reset": True})["image"].shape, env.act_space["action"].n  # doctest: +SKIP
    ((64, 64, 3), 6)
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from reverie.envs.base import Env, Space, reserved_spaces
from reverie.envs.errors import EnvError

__all__ = ["INSTALL", "AtariEnv"]

INSTALL = 'pip install "ale-py>=0.9" opencv-python-headless'
"""The pip command that installs the Atari games (ROMs are bundled with ale-py) and OpenCV."""


def _imports() -> tuple[Any, Any]:
    try:
        import ale_py
        import cv2
        import gymnasium
    except ImportError:
        raise EnvError(f"The Atari suite needs ale-py and OpenCV: {INSTALL}") from None
    gymnasium.register_envs(ale_py)
    return gymnasium, cv2


def _game_id(game: str, gymnasium: Any) -> str:
    name = game.removeprefix("atari:")
    if "_" in name or name.islower():
        name = "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    env_id = f"ALE/{name}-v5"
    if env_id not in gymnasium.registry:
        games = sorted(k[4:-3] for k in gymnasium.registry if str(k).startswith("ALE/") and str(k).endswith("-v5"))
        close = difflib.get_close_matches(name, games, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join('atari:' + c for c in close)}?" if close else ""
        raise EnvError(f"Unknown Atari game 'atari:{game}'.{hint} Use atari:<Game> with an ALE game, e.g. atari:Pong.")
    return env_id


class AtariEnv(Env):
    """An Atari game behind the Reverie contract with the Atari 100k protocol; see the module docstring.

    Args:
        game: game name, e.g. ``"Pong"`` (an ``atari:`` prefix is accepted).
        seed: seeds the first reset (the emulator) and the no-op starts; None draws one.
        repeat: frames per agent step (frame skip).
        size: side of the square observation.
        gray: grayscale ``(size, size, 1)`` instead of RGB.
        noops: at most this many no-op frames after each reset (uniform in ``[0, noops]``).
        max_frames: frames per episode before truncation (108,000 = 30 minutes of play).

    Raises:
        EnvError: ale-py or OpenCV is missing, or the game is unknown.

    Example:
        >>> env = AtariEnv("Breakout", seed=0)   # doctest: +SKIP
        >>> env.act_space["action"].n            # doctest: +SKIP
        4
    """

    def __init__(
        self,
        game: str,
        seed: int | None = None,
        repeat: int = 4,
        size: int = 64,
        gray: bool = False,
        noops: int = 30,
        max_frames: int = 108_000,
    ) -> None:
        gymnasium, self._cv2 = _imports()
        if repeat < 1:
            raise EnvError(f"AtariEnv needs repeat >= 1, got {repeat}.")
        env_id = _game_id(game, gymnasium)
        self._env = gymnasium.make(
            env_id,
            frameskip=1,
            repeat_action_probability=0.0,
            full_action_space=False,
            max_num_frames_per_episode=max_frames,
        )
        self.id, self.repeat, self.size, self.gray, self.noops = f"atari:{env_id[4:-3]}", repeat, size, gray, noops
        self._rng = np.random.default_rng(seed)
        self._seed = int(self._rng.integers(2**31 - 1)) if seed is None else seed
        self._seeded = False
        self._frames: tuple[np.ndarray, np.ndarray] | None = None
        self._lives = 0
        self._done = True

    @property
    def obs_space(self) -> dict[str, Space]:
        image = Space(np.uint8, (self.size, self.size, 1 if self.gray else 3), 0, 255)
        return {"image": image, "log/lives": Space(np.int32, (), 0), **reserved_spaces()}

    @property
    def act_space(self) -> dict[str, Space]:
        return {"action": Space(np.int64, (), 0, int(self._env.action_space.n), discrete=True)}

    @property
    def action_meanings(self) -> list[str]:
        """Names of the actions, e.g. ``['NOOP', 'FIRE', 'RIGHT', ...]``."""
        return list(self._env.unwrapped.get_action_meanings())

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        if action.get("reset", False) or self._done:
            return self._reset()
        index = int(np.asarray(action["action"]).reshape(()))
        if not 0 <= index < self._env.action_space.n:
            raise EnvError(f"{self.id} actions are integers in [0, {self._env.action_space.n}), got {index}.")
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.repeat):
            r, terminated, truncated = self._frame(index)
            reward += r
            if terminated or truncated:
                break
        self._done = terminated or truncated
        return self._obs(reward, is_last=self._done, is_terminal=terminated)

    def _reset(self) -> dict[str, Any]:
        seed = None if self._seeded else self._seed
        self._seeded = True
        raw, info = self._env.reset(seed=seed)
        self._frames = (raw, raw)
        self._lives = int(info.get("lives", 0))
        for _ in range(int(self._rng.integers(0, self.noops + 1))):
            _, terminated, truncated = self._frame(0)
            if terminated or truncated:
                raw, info = self._env.reset()
                self._frames, self._lives = (raw, raw), int(info.get("lives", 0))
        self._done = False
        return self._obs(0.0, is_first=True)

    def _frame(self, action: int) -> tuple[float, bool, bool]:
        """Advance one frame, keeping the last two frames; returns (reward, terminated, truncated)."""
        raw, reward, terminated, truncated, info = self._env.step(action)
        assert self._frames is not None
        self._frames = (self._frames[1], raw)
        self._lives = int(info.get("lives", self._lives))
        return float(reward), bool(terminated), bool(truncated)

    def _obs(
        self, reward: float, is_first: bool = False, is_last: bool = False, is_terminal: bool = False
    ) -> dict[str, Any]:
        assert self._frames is not None
        frame = np.maximum(self._frames[0], self._frames[1])  # max-pool the last two frames (flicker)
        if self.gray:
            frame = self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2GRAY)
        image = self._cv2.resize(frame, (self.size, self.size), interpolation=self._cv2.INTER_AREA)
        image = np.asarray(image, np.uint8).reshape(self.size, self.size, -1)
        return {
            "image": image,
            "log/lives": np.int32(self._lives),
            "reward": np.float32(reward),
            "is_first": is_first,
            "is_last": is_last,
            "is_terminal": is_terminal,
        }

    def close(self) -> None:
        self._done = True
        self._env.close()
