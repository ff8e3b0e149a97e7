"""A Gymnasium env whose first process life crashes mid-episode (for the worker-restart tests).

Its module name is unique on purpose: some installed packages ship a top-level ``tests`` package, so
``tests.<module>`` may not resolve in the env worker processes, while this folder is on ``sys.path``.

The crash happens once per marker file named by ``REVERIE_TEST_CRASH_MARKER``: the first env to reach
step 15 creates the marker and raises; later envs (the restarted worker) run normally.
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium
import numpy as np
from gymnasium import spaces


class CrashOnce(gymnasium.Env):
    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self) -> None:
        self.t = 0
        self.total = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        self.total += 1
        marker = os.environ.get("REVERIE_TEST_CRASH_MARKER")
        if marker and self.total == 15 and not Path(marker).exists():
            Path(marker).write_text("crashed")
            raise RuntimeError("simulated env crash")
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return obs, float(action), False, self.t >= 40, {}


gymnasium.register("CrashOnce-v0", entry_point=CrashOnce)
