"""``Dataset``: reads a finished dataset folder, one episode file at a time (see :mod:`reverie.data`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reverie.data.format import (
    EPISODES_DIR,
    FORMAT,
    INFO_FILE,
    MASKS,
    PART_NAME,
    VERSION,
    DatasetError,
    check_frac,
    label_plan,
    part_name,
    read_npz,
    spaces_from_json,
)
from reverie.envs.base import Space

if TYPE_CHECKING:
    from reverie.replay import Replay

__all__ = ["Dataset", "label_flags"]

_REQUIRED = ("env_id", "obs_space", "act_space", "keys", "chunk", "episodes", "steps", "episode_info")


class Dataset:
    """A finished dataset folder written by :class:`reverie.data.DatasetWriter`.

    Opening reads only ``dataset.json`` and lists the episode files; episodes are read on demand, one
    file at a time, so memory stays bounded by one episode (:meth:`episodes`) or one file
    (:meth:`iter_chunks`, :meth:`iter_steps`, :meth:`to_replay`).

    Steps come with two extra float32 arrays, ``action_mask`` and ``reward_mask``: 1 where the label is
    known (the episode's ``has_actions`` / ``has_rewards`` flag, broadcast over its steps), 0 where it was
    dropped and is stored as zeros. Pass ``masks=False`` to leave them out.

    Args:
        folder: the dataset folder.

    Raises:
        DatasetError: no such folder, no ``dataset.json`` (an unfinished or interrupted write), another
            format version, or episode files that do not match ``dataset.json``.

    Example:
        >>> ds = Dataset("runs/crafter-random")                 # doctest: +SKIP
        >>> len(ds), ds.num_steps, ds.env_id                    # doctest: +SKIP
        (10, 18342, 'crafter')
        >>> for episode in ds.episodes():                        # doctest: +SKIP
        ...     episode["image"].shape, episode["action_mask"][0]
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._info = self._read_info()
        self.obs_space: dict[str, Space] = spaces_from_json(self._info["obs_space"])
        """``{key: Space}`` of the observations (reserved and ``log/`` keys included)."""
        self.act_space: dict[str, Space] = spaces_from_json(self._info["act_space"])
        """``{"action": Space}``."""
        self.keys: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {
            k: (tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in self._info["keys"].items()
        }
        """``{key: (shape, dtype)}`` of the stored arrays (one step; files hold ``(T, *shape)``)."""
        self._check_files()

    # ----------------------------------------------------------------- metadata
    def _read_info(self) -> dict[str, Any]:
        folder, path = self.folder, self.folder / INFO_FILE
        if not folder.is_dir():
            raise DatasetError(f"No dataset at {folder}: the folder does not exist.")
        if not path.exists():
            parts = list((folder / EPISODES_DIR).glob("*.npz")) if (folder / EPISODES_DIR).is_dir() else []
            if parts:
                raise DatasetError(
                    f"Dataset {folder} is unfinished: it has {len(parts)} episode files but no {INFO_FILE}, which "
                    f"DatasetWriter.close() writes last (the recording was interrupted or is still running). "
                    f"Record it again into a new folder, or delete {folder}."
                )
            raise DatasetError(f"{folder} is not a Reverie dataset: it has no {INFO_FILE}.")
        try:
            info = json.loads(path.read_text())
            kind, version = info.get("format"), info.get("version")
        except (OSError, ValueError, AttributeError) as err:
            raise DatasetError(f"{path} is unreadable ({type(err).__name__}: {err}); re-record the dataset.") from None
        if kind != FORMAT:
            raise DatasetError(f"{path} is not a Reverie dataset file (format {kind!r}, expected {FORMAT!r}).")
        if version != VERSION:
            raise DatasetError(
                f"{path} has format version {version}; this Reverie reads version {VERSION}. "
                f"Use the Reverie version that wrote it, or re-record the dataset."
            )
        missing = [k for k in _REQUIRED if k not in info]
        try:
            lengths = [int(e["length"]) for e in info.get("episode_info", []) if int(e["parts"]) >= 1]
        except (KeyError, TypeError, ValueError):
            missing.append("episode_info[].length/parts")
        if missing:
            raise DatasetError(f"{path} lacks the fields {missing}; it is corrupt. Re-record the dataset.")
        if info["episodes"] != len(lengths) or info["steps"] != sum(lengths):
            raise DatasetError(
                f"{path} is inconsistent: it declares {info['episodes']} episodes and {info['steps']} steps but "
                f"lists {len(lengths)} episodes with {sum(lengths)} steps; re-record the dataset."
            )
        return info

    def _check_files(self) -> None:
        """The episode files on disk are exactly those that ``dataset.json`` lists."""
        folder = self.folder / EPISODES_DIR
        present = {p.name for p in folder.iterdir() if PART_NAME.match(p.name)} if folder.is_dir() else set()
        expected = {part_name(i, p) for i, e in enumerate(self._info["episode_info"]) for p in range(e["parts"])}
        missing, extra = sorted(expected - present), sorted(present - expected)
        if missing:
            raise DatasetError(
                f"Dataset {self.folder} is incomplete: {len(missing)} of the {len(expected)} episode files that "
                f"{INFO_FILE} lists are missing from {folder} (first: {missing[0]}). Restore them or re-record it."
            )
        if extra:
            raise DatasetError(
                f"Dataset {self.folder} has {len(extra)} episode files that {INFO_FILE} does not list (first: "
                f"{folder / extra[0]}): files from another write. Move them out of {folder}."
            )

    @property
    def info(self) -> dict[str, Any]:
        """The content of ``dataset.json`` (a copy)."""
        return json.loads(json.dumps(self._info))

    @property
    def env_id(self) -> str:
        return str(self._info["env_id"])

    @property
    def chunk(self) -> int:
        """Steps per episode file."""
        return int(self._info["chunk"])

    def __len__(self) -> int:
        """Number of episodes."""
        return int(self._info["episodes"])

    @property
    def num_steps(self) -> int:
        """Number of steps over all episodes."""
        return int(self._info["steps"])

    def episode_info(self, index: int) -> dict[str, Any]:
        """``length``, ``parts``, ``has_actions``, ``has_rewards``, ``return`` (None without rewards),
        ``terminal`` and ``log`` (the last step's value of each scalar ``log/`` key) of one episode."""
        return dict(self._info["episode_info"][self._index(index)])

    def _index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"Episode {index} out of range: dataset {self.folder} has {n} episodes.")
        return index % n

    def __repr__(self) -> str:
        return f"Dataset({str(self.folder)!r}, env_id={self.env_id!r}, episodes={len(self)}, steps={self.num_steps})"

    # ----------------------------------------------------------------- data
    def _read_part(self, index: int, part: int) -> dict[str, np.ndarray]:
        meta = self._info["episode_info"][index]
        path = self.folder / EPISODES_DIR / part_name(index, part)
        data = read_npz(path)
        want = min(self.chunk, meta["length"] - part * self.chunk)
        if set(data) != set(self.keys):
            raise DatasetError(
                f"Dataset file {path} holds keys {sorted(data)} but {INFO_FILE} declares {sorted(self.keys)}; "
                f"the file belongs to another dataset. Re-record the dataset."
            )
        for key, (shape, dtype) in self.keys.items():
            arr = data[key]
            if arr.shape != (want, *shape) or arr.dtype != dtype:
                raise DatasetError(
                    f"Dataset file {path}: '{key}' has shape {arr.shape} {arr.dtype} but {INFO_FILE} declares "
                    f"{(want, *shape)} {dtype}; the file does not belong to this dataset. Re-record the dataset."
                )
            if arr.dtype.kind == "f" and not key.startswith("log/") and not np.isfinite(arr).all():
                raise DatasetError(
                    f"Dataset file {path}: '{key}' holds NaN or inf values, which would poison every weight they "
                    "reach; repair that episode or record the dataset again without it."
                )
        return data

    def _with_masks(self, data: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
        meta = self._info["episode_info"][index]
        length = len(data["is_first"])
        for label, key in MASKS.items():
            data[key] = np.full(length, float(meta[f"has_{label}s"]), np.float32)
        return data

    def episode(self, index: int, masks: bool = True) -> dict[str, np.ndarray]:
        """All steps of one episode: ``{key: array (T, *shape)}``, plus the masks unless ``masks=False``."""
        index = self._index(index)
        parts = [self._read_part(index, p) for p in range(self._info["episode_info"][index]["parts"])]
        data = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in self.keys}
        return self._with_masks(data, index) if masks else data

    def episodes(self, masks: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Yield the episodes in order, one in memory at a time (see :meth:`episode`)."""
        for index in range(len(self)):
            yield self.episode(index, masks)

    def iter_chunks(self, masks: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Yield the episode files in order: ``{key: array (L, *shape)}`` with ``L <= chunk`` steps each.

        Consecutive chunks of one episode continue it; a new episode starts with ``is_first``.
        """
        for index, meta in enumerate(self._info["episode_info"]):
            for part in range(meta["parts"]):
                data = self._read_part(index, part)
                yield self._with_masks(data, index) if masks else data

    def iter_steps(self, masks: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Yield single steps in order, as ``{key: value}`` in the layout ``env.step`` returns (numpy values)."""
        for data in self.iter_chunks(masks):
            for t in range(len(data["is_first"])):
                yield {k: v[t] for k, v in data.items()}

    def to_replay(self, replay: Replay, stream: int = 0, masks: bool = True) -> int:
        """Add every step to ``replay`` (``log/`` keys are dropped by the replay); returns the steps added.

        Episodes go one after the other into ``stream``; replay windows that cross an episode boundary
        start a new episode at ``is_first``, as with online data. With ``masks`` the replay also stores
        ``action_mask`` and ``reward_mask``, which the world model's loss reads.

        Example:
            >>> replay = Replay(None, chunk=256)            # doctest: +SKIP
            >>> Dataset("runs/crafter").to_replay(replay)  # doctest: +SKIP
            18342
        """
        added = 0
        for step in self.iter_steps(masks):
            replay.add(step, stream)
            added += 1
        return added


def label_flags(dataset: Dataset, action_frac: float, reward_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode ``(has_actions, has_rewards)`` after dropping labels from ``dataset``.

    Exactly ``round(frac * len(dataset))`` episodes are drawn to keep each label (seeded); an episode
    that already lacks a label keeps lacking it, so labels are only ever removed.
    """
    n = len(dataset)
    infos = [dataset.episode_info(i) for i in range(n)]
    had_actions = np.array([e["has_actions"] for e in infos], bool)
    had_rewards = np.array([e["has_rewards"] for e in infos], bool)
    actions = label_plan(n, check_frac("action_frac", action_frac), [seed, 0]) & had_actions
    rewards = label_plan(n, check_frac("reward_frac", reward_frac), [seed, 1]) & had_rewards
    return actions, rewards
