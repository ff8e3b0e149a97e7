"""Fault injection for the reliability tests: an env that misbehaves on chosen steps.

Faults are ``kind@step`` (the ``step``-th non-reset step of the process's life): ``nan_obs``, ``inf_obs`` and
``nan_reward`` return non-finite values; ``raise`` raises, ``exit`` ends the process, ``kill`` sends it SIGKILL
and ``hang`` sleeps for a minute. Two ways in:

* :class:`FaultEnv` (a Reverie env) takes ``faults`` as a constructor argument, for ``Dreamer.learn(factory)``;
* the Gymnasium id ``reverie_fault_env:Faulty-v0`` reads them from the ``REVERIE_FAULTS`` variable
  (``"nan_obs@30,nan_reward@50"``), for the command line and env worker processes.

Its module name is unique on purpose (see ``reverie_crash_env``): env workers import it by name.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from reverie.envs import Env, Space, reserved_spaces

KINDS = ("nan_obs", "inf_obs", "nan_reward", "raise", "exit", "kill", "hang")


def parse(faults: str) -> dict[int, str]:
    """``"nan_obs@30,raise@50"`` -> ``{30: "nan_obs", 50: "raise"}``."""
    out = {}
    for item in filter(None, (part.strip() for part in faults.split(","))):
        kind, _, step = item.partition("@")
        assert kind in KINDS, f"unknown fault {kind!r}; use one of {KINDS}"
        out[int(step)] = kind
    return out


def misbehave(kind: str) -> None:
    """The faults that do not return a value."""
    if kind == "raise":
        raise RuntimeError("injected fault: the simulator raised")
    if kind == "exit":
        os._exit(3)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        time.sleep(60)


class FaultEnv(Env):
    """A 3-vector random walk with a reward for action 1, episodes of ``length`` steps, and ``faults``."""

    def __init__(self, faults: dict[int, str] | str = "", length: int = 20, seed: int = 0) -> None:
        self.faults = parse(faults) if isinstance(faults, str) else dict(faults)
        self.length, self.t, self.life = length, 0, 0
        self.rng = np.random.default_rng(seed)

    @property
    def obs_space(self) -> dict[str, Space]:
        return {"vector": Space(np.float32, (3,), -1.0, 1.0), **reserved_spaces()}

    @property
    def act_space(self) -> dict[str, Space]:
        return {"action": Space(np.int64, (), 0, 2, discrete=True)}

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        vector = self.rng.uniform(-1, 1, 3).astype(np.float32)
        if action["reset"]:
            self.t = 0
            return {"vector": vector, "reward": np.float32(0), "is_first": True, "is_last": False, "is_terminal": False}
        self.t += 1
        self.life += 1
        reward = np.float32(int(np.asarray(action["action"])) == 1)
        kind = self.faults.get(self.life, "")
        misbehave(kind)
        if kind == "nan_obs":
            vector[1] = np.nan
        elif kind == "inf_obs":
            vector[0] = np.inf
        elif kind == "nan_reward":
            reward = np.float32(np.nan)
        last = self.t >= self.length
        return {"vector": vector, "reward": reward, "is_first": False, "is_last": last, "is_terminal": False}


class Faulty(gymnasium.Env):
    """The Gymnasium face of :class:`FaultEnv`, its faults from ``REVERIE_FAULTS``."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self) -> None:
        self.faults = parse(os.environ.get("REVERIE_FAULTS", ""))
        self.t = self.life = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        self.life += 1
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        reward = float(action == 1)
        kind = self.faults.get(self.life, "")
        misbehave(kind)
        if kind == "nan_obs":
            obs[1] = np.nan
        elif kind == "inf_obs":
            obs[0] = np.inf
        elif kind == "nan_reward":
            reward = float("nan")
        return obs, reward, False, self.t >= 20, {}


gymnasium.register("Faulty-v0", entry_point=Faulty)
