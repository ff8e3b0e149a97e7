"""``DatasetWriter``: writes episodes one at a time, then ``dataset.json`` last (see :mod:`reverie.data`)."""

from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from reverie.data.format import (
    EPISODES_DIR,
    FORMAT,
    INFO_FILE,
    VERSION,
    DatasetError,
    part_name,
    spaces_to_json,
    write_npz,
)
from reverie.envs.base import RESERVED_KEYS, Space, reserved_spaces
from reverie.fileio import fsync_dir, write_text
from reverie.version import __version__

__all__ = ["DatasetWriter"]

log = logging.getLogger("reverie.data")


class DatasetWriter:
    """Write a dataset folder: :meth:`add_episode` per episode, then :meth:`close` (writes ``dataset.json``).

    Args:
        folder: the dataset folder; created, and it must be new or empty.
        env_id: the env the episodes come from (an id of :func:`reverie.envs.make_env`, or any label).
        obs_space: ``{key: Space}`` of the observation dict (``env.obs_space``); the reserved keys
            ``reward, is_first, is_last, is_terminal`` are added when missing.
        act_space: ``env.act_space`` (``{"action": Space}``) or the action's :class:`Space`.
        chunk: steps per episode file; longer episodes are split over several files, so that
            :meth:`reverie.data.Dataset.iter_chunks` reads at most ``chunk`` steps at a time.
        creation: free-form JSON data about how the episodes were made (policy, seed, source...).

    Until :meth:`close` returns, the folder has no ``dataset.json`` and readers refuse it. Used as a
    context manager, ``close`` runs only when the block finishes without an exception.

    Example:
        >>> with DatasetWriter("/tmp/ds", "CartPole-v1", env.obs_space, env.act_space) as writer:  # doctest: +SKIP
        ...     writer.add_episode(steps)  # {key: (T, *shape)}, action[t] = the action that led to step t
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        env_id: str,
        obs_space: dict[str, Space],
        act_space: dict[str, Space] | Space,
        chunk: int = 1024,
        creation: dict[str, Any] | None = None,
    ) -> None:
        if chunk < 1:
            raise DatasetError(f"DatasetWriter needs chunk >= 1, got {chunk}.")
        self.folder = Path(folder)
        if self.folder.exists() and (not self.folder.is_dir() or any(self.folder.iterdir())):
            what = "a dataset" if (self.folder / INFO_FILE).exists() else "files"
            raise DatasetError(
                f"Dataset folder {self.folder} already holds {what}; write to a new folder or delete this one first."
            )
        (self.folder / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
        self.env_id = str(env_id)
        self.obs_space = {**dict(obs_space), **{k: s for k, s in reserved_spaces().items() if k not in obs_space}}
        self.act_space = act_space["action"] if isinstance(act_space, dict) else act_space
        if "action" in self.obs_space:
            raise DatasetError("The observation space has an 'action' key; 'action' is reserved for the action.")
        self.chunk = int(chunk)
        self.creation = dict(creation or {})
        spaces = {**self.obs_space, "action": self.act_space}
        self.keys = {k: (tuple(s.shape), np.dtype(s.dtype)) for k, s in spaces.items()}
        self.episodes: list[dict[str, Any]] = []
        """Per-episode entries of ``dataset.json`` (length, parts, label flags, return, last log values)."""
        self.closed = False

    def add_episode(self, steps: dict[str, Any], has_actions: bool = True, has_rewards: bool = True) -> int:
        """Check one episode and write its files; returns its index.

        Args:
            steps: ``{key: array (T, *shape)}`` for every observation key and ``"action"``, T >= 2 steps in
                the env contract layout: ``is_first`` only at step 0, ``is_last`` at most at the last step,
                ``action[t]`` the action that led to step ``t`` (so ``action[0]`` is zeros, as is
                ``reward[0]``). Values are cast to the space's dtype when the cast stays in kind.
            has_actions: False stores zeros for all actions and marks the episode unlabeled.
            has_rewards: False stores zeros for all rewards and marks the episode unlabeled.

        Raises:
            DatasetError: missing or extra keys, wrong shapes or dtypes, a layout that breaks the convention, or
                NaN or inf values (outside ``log/`` keys).
        """
        if self.closed:
            raise DatasetError(f"DatasetWriter for {self.folder} is closed; open a new writer to add episodes.")
        index = len(self.episodes)
        data = self._check(steps, index)
        bad = [
            k for k, v in data.items() if v.dtype.kind == "f" and not k.startswith("log/") and not np.isfinite(v).all()
        ]
        if bad:
            raise DatasetError(
                f"Episode {index} for {self.folder} holds NaN or inf values in {bad}; it is refused (a dataset "
                "with them would poison every weight they reach). Drop or repair the episode."
            )
        if not has_actions:
            data["action"] = np.zeros_like(data["action"])
        if not has_rewards:
            data["reward"] = np.zeros_like(data["reward"])
        length = len(data["is_first"])
        parts = -(-length // self.chunk)
        for part in range(parts):
            rows = slice(part * self.chunk, (part + 1) * self.chunk)
            write_npz(self.folder / EPISODES_DIR / part_name(index, part), {k: v[rows] for k, v in data.items()})
        last_log = {k: v[-1].item() for k, v in data.items() if k.startswith("log/") and v.ndim == 1}
        self.episodes.append(
            {
                "length": length,
                "parts": parts,
                "has_actions": bool(has_actions),
                "has_rewards": bool(has_rewards),
                "return": float(data["reward"].sum(dtype=np.float64)) if has_rewards else None,
                "terminal": bool(data["is_terminal"][-1]),
                "log": last_log,
            }
        )
        return index

    def _check(self, steps: dict[str, Any], index: int) -> dict[str, np.ndarray]:
        where = f"Episode {index} for {self.folder}"
        missing, extra = sorted(set(self.keys) - set(steps)), sorted(set(steps) - set(self.keys))
        if missing or extra:
            raise DatasetError(
                f"{where} lacks keys {missing} and has unknown keys {extra}; expected {sorted(self.keys)}."
            )
        data: dict[str, np.ndarray] = {}
        for key, (shape, dtype) in self.keys.items():
            arr = np.asarray(steps[key])
            if arr.shape[1:] != shape or arr.ndim != len(shape) + 1:
                raise DatasetError(f"{where}: '{key}' has shape {arr.shape}; expected (T, *{shape}).")
            if arr.dtype != dtype and not np.can_cast(arr.dtype, dtype, "same_kind"):
                raise DatasetError(f"{where}: '{key}' has dtype {arr.dtype}, which does not cast to {dtype}.")
            data[key] = arr.astype(dtype, copy=False)
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise DatasetError(
                f"{where}: arrays of unequal lengths {sorted(lengths)}; each key needs one row per step."
            )
        first, last, term = data["is_first"], data["is_last"], data["is_terminal"]
        problems = [
            (len(first) < 2, "has fewer than 2 steps (the is_first step and at least one transition)"),
            (not first[0] or first[1:].any(), "needs is_first at step 0 and nowhere else"),
            (last[:-1].any(), "has is_last before its last step (split it into episodes)"),
            ((term & ~last).any(), "has is_terminal without is_last"),
            (
                data["action"][0].any() or data["reward"][0] != 0,
                "has a nonzero action or reward at step 0; action[t] and reward[t] are what LED to step t, "
                "so step 0 holds zeros (shift your arrays by one step)",
            ),
        ]
        if self.act_space.discrete:
            actions = data["action"][1:]
            outside = sorted(set(actions[(actions < 0) | (actions >= self.act_space.n)].tolist()))
            problems.append((bool(outside), f"has actions {outside[:5]} outside 0..{self.act_space.n - 1}"))
        for bad, problem in problems:
            if bad:
                raise DatasetError(f"{where} {problem}.")
        return data

    def close(self) -> Path:
        """Write ``dataset.json`` (atomically, after every episode file is durable); returns the folder."""
        if self.closed:
            return self.folder
        if not self.episodes:
            raise DatasetError(f"Dataset {self.folder} has no episodes; add at least one before close().")
        fsync_dir(self.folder / EPISODES_DIR)
        write_text(self.folder / INFO_FILE, json.dumps(self.info(), indent=1))
        fsync_dir(self.folder)
        self.closed = True
        steps = sum(e["length"] for e in self.episodes)
        log.info("Wrote dataset %s: %d episodes, %d steps.", self.folder, len(self.episodes), steps)
        return self.folder

    def info(self) -> dict[str, Any]:
        """The content of ``dataset.json`` for the episodes added so far."""
        n = len(self.episodes)
        return {
            "format": FORMAT,
            "version": VERSION,
            "env_id": self.env_id,
            "obs_space": spaces_to_json(self.obs_space),
            "act_space": spaces_to_json({"action": self.act_space}),
            "keys": {k: {"shape": list(shape), "dtype": dtype.name} for k, (shape, dtype) in self.keys.items()},
            "model_keys": [k for k in self.obs_space if k not in RESERVED_KEYS and not k.startswith("log/")],
            "log_keys": [k for k in self.obs_space if k.startswith("log/")],
            "chunk": self.chunk,
            "episodes": n,
            "steps": sum(e["length"] for e in self.episodes),
            "label_fracs": {
                "actions": sum(e["has_actions"] for e in self.episodes) / max(n, 1),
                "rewards": sum(e["has_rewards"] for e in self.episodes) / max(n, 1),
            },
            "creation": {
                **self.creation,
                "reverie_version": __version__,
                "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            },
            "episode_info": self.episodes,
        }

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            log.warning("Dataset %s left unfinished (no %s) after %s.", self.folder, INFO_FILE, kind.__name__)
