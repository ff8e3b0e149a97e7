"""Recorded studio sessions, written as Reverie datasets (:mod:`reverie.data`).

Each *take* (from switching "record" on until it is switched off, the page is closed or the studio
stops) becomes one dataset folder ``<record_dir>/take-<UTC time>-<id>/`` in the layout of
:class:`reverie.data.DatasetWriter`; read it with :class:`reverie.data.Dataset` or
``reverie data info``. Each dreamed episode is one dataset episode:

* the model's observation keys hold what the **dream** showed (decoded predictions, not real frames);
* ``action`` is the env action that led to each step (0 / zeros at the first), ``reward`` the predicted
  reward, ``is_terminal`` where the model predicted ``cont < 0.5``, ``is_last`` at the episode's end
  (or where the player reset or stopped recording);
* ``log/cont`` is the predicted continuation probability.

``dataset.json`` is written when the take ends; its ``creation`` names the checkpoint and says
``"dreamed": true``. Episodes shorter than 2 steps are dropped (a dataset episode needs a transition).

Example:
    >>> rec = TakeRecorder("studio_recordings", "crafter", obs_space, act_space)  # doctest: +SKIP
    >>> rec.add(step); rec.add(step); rec.end_episode(); rec.close()               # doctest: +SKIP
    PosixPath('studio_recordings/take-20261124-150102-3f2a1c')
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from reverie.data import DatasetWriter
from reverie.envs.base import Space

__all__ = ["TakeRecorder"]


class TakeRecorder:
    """Collect dreamed steps into episodes and write them as one dataset.

    Args:
        record_dir: parent folder of the takes.
        env_id: the checkpoint's env id (stored in ``dataset.json``).
        obs_space: spaces of the recorded observation keys (model keys and ``log/cont``).
        act_space: the action space.
        creation: extra ``creation`` metadata (checkpoint, context...).
    """

    def __init__(
        self,
        record_dir: str | os.PathLike[str],
        env_id: str,
        obs_space: dict[str, Space],
        act_space: Space,
        creation: dict[str, Any] | None = None,
    ) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        self.folder = Path(record_dir) / f"take-{stamp}-{uuid.uuid4().hex[:6]}"
        self.env_id, self.obs_space, self.act_space = env_id, obs_space, act_space
        self.creation = {"source": "reverie studio", "dreamed": True, **(creation or {})}
        self.writer: DatasetWriter | None = None
        self.steps: list[dict[str, Any]] = []
        """Steps of the episode being recorded."""

    def add(self, step: dict[str, Any]) -> None:
        """Append one step (a dict with the observation keys, ``action``, ``reward`` and the flags)."""
        self.steps.append(step)

    def end_episode(self) -> int | None:
        """Write the collected steps as one episode (marked ``is_last`` at its end); returns its index."""
        steps, self.steps = self.steps, []
        if len(steps) < 2:
            return None
        data = {key: np.stack([np.asarray(s[key]) for s in steps]) for key in steps[0]}
        data["is_last"][-1] = True
        if self.writer is None:
            self.writer = DatasetWriter(
                self.folder, self.env_id, self.obs_space, self.act_space, creation=self.creation
            )
        return self.writer.add_episode(data)

    def close(self) -> tuple[Path | None, int]:
        """End the episode and the take: writes ``dataset.json``; returns (folder or None, episodes)."""
        self.end_episode()
        if self.writer is None:
            return None, 0
        return self.writer.close(), len(self.writer.episodes)
