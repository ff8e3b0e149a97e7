"""Sequence replay for DreamerV3-style training, kept on disk in chunks so that a run resumes with its data.

Each parallel env writes to its own *stream*. A stream is a sequence of time steps held in chunks of
``chunk`` steps: preallocated numpy arrays, one per key. ``sample`` returns windows of consecutive steps of
one stream; a window may cross chunk and episode boundaries (the model resets its state on ``is_first``).

On-disk format (one folder per replay):

* ``{stream:03d}-{seq:08d}.npz``: one chunk, in the zip layout ``np.savez_compressed`` writes: one
  ``{key}.npy`` entry per key, each of shape ``(length, *shape)`` (written with ``zipfile`` directly, as
  ``np.savez_compressed`` reserves the names ``file`` and ``allow_pickle``). ``seq`` is one counter for
  all streams, so it orders chunks by age across streams (eviction drops the smallest first).
* A chunk is written when it fills up, and its unfinished tail by :meth:`Replay.save`. Every write goes to
  ``{name}.tmp`` in the same folder, is fsynced and then ``os.replace``-d over ``{name}``, so a file
  is either the old or the new version, never half of one, and re-saving a chunk never duplicates data.
  ``save()`` also fsyncs the folder, so the renames survive a power loss, not just a killed process.
* Loading never unpickles (``allow_pickle=False``). Leftover ``*.tmp`` files of a crashed write are removed.
  Other files in the folder are ignored.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reverie.errors import ReverieError
from reverie.fileio import fsync_dir, write_npz

__all__ = ["Replay", "ReplayError"]

logger = logging.getLogger("reverie.replay")

_NAME = re.compile(r"^(\d+)-(\d+)\.npz$")
_PY_SCALARS = (bool, int, float)
_SCALAR_FITS: dict[tuple[type, np.dtype[Any]], bool] = {}


class ReplayError(ReverieError):
    """A replay file cannot be used; the message names the file, the problem and the fix."""


@dataclass
class _Chunk:
    """Consecutive steps of one stream: ``length`` of the rows of ``data`` are used, ``saved`` are on disk."""

    seq: int
    data: dict[str, np.ndarray]
    length: int = 0
    saved: int = 0


@dataclass
class _Stream:
    """The chunks of one stream, oldest first; ``starts[i]`` is the stream index of chunk i's first step."""

    chunks: list[_Chunk] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return self.starts[-1] + self.chunks[-1].length - self.starts[0] if self.chunks else 0

    def append(self, ch: _Chunk) -> None:
        self.starts.append(self.starts[-1] + self.chunks[-1].length if self.chunks else 0)
        self.chunks.append(ch)

    def pop(self, index: int = -1) -> _Chunk:
        """Remove a chunk; only the first or the last, so that the stream stays contiguous."""
        self.starts.pop(index)
        return self.chunks.pop(index)


class Replay:
    """Chunked sequence replay with optional on-disk persistence.

    Args:
        directory: folder for chunk files (created if missing); chunk files already there are loaded, so a
            resumed run gets its data back. ``None`` keeps everything in memory.
        capacity: steps kept; beyond it whole oldest chunks are evicted (memory and disk). The chunk each
            stream is filling is never evicted, so the replay may exceed ``capacity`` by less than one
            chunk per stream.
        chunk: steps per chunk (and per file).
        recent_frac: share of each batch drawn from windows that end in the newest quarter (at least
            ``length`` steps) of each stream, an approximation of DreamerV3's online queue. The rest is
            uniform over all windows.
        seed: seed of the sampler's own ``np.random.Generator``.

    All steps must share keys, shapes and dtypes (the first step defines them). Keys starting ``log/`` are
    dropped. Not thread-safe, and one folder serves one ``Replay`` at a time.

    Example:
        >>> replay = Replay(None, chunk=8, recent_frac=0.5, seed=1)
        >>> for t in range(20):
        ...     replay.add({"step": np.int64(t), "is_first": t == 0, "log/score": 0.0}, stream=t % 2)
        >>> batch = replay.sample(4, 6)  # 4 windows of 6 consecutive steps of one stream each
        >>> len(replay), replay.num_episodes, batch["step"].shape, sorted(batch)
        (20, 1, (4, 6), ['is_first', 'step'])
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        capacity: int = 1_000_000,
        chunk: int = 1024,
        recent_frac: float = 0.0,
        seed: int = 0,
    ) -> None:
        if capacity < 1 or chunk < 1:
            raise ReplayError(f"Replay needs capacity >= 1 and chunk >= 1, got {capacity} and {chunk}.")
        if not 0.0 <= recent_frac <= 1.0:
            raise ReplayError(f"Replay recent_frac must lie in [0, 1], got {recent_frac}.")
        self.directory = None if directory is None else Path(directory)
        self.capacity = int(capacity)
        self.chunk = int(chunk)
        self.recent_frac = float(recent_frac)
        self._rng = np.random.default_rng(seed)
        self._streams: dict[int, _Stream] = {}
        self._spec: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
        self._size = 0
        self._next_seq = 0
        self._unloaded: list[Path] = []  # files older than capacity allowed; deleted on the first eviction
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load()

    def add(self, step: dict[str, Any], stream: int = 0) -> None:
        """Append one time step to stream ``stream`` (one stream per parallel env).

        Args:
            step: key -> numpy array or scalar; ``log/`` keys are dropped. Python scalars may be given
                for any key whose dtype they cast to safely in kind (``1.0`` for a float32 reward).
            stream: id of the env that produced the step.

        Raises:
            ReplayError: a key is missing or extra, a value's shape or dtype differs from the first step, or a
                float value is NaN or infinite (the step is not stored).
        """
        st = self._streams.get(stream)
        if st is None or not st.chunks or st.chunks[-1].length >= self.chunk:
            if not self._spec:
                self._define_spec(step)
            st = self._new_chunk(stream)
        ch = st.chunks[-1]
        try:
            self._fill(ch, step)
        except ReplayError:
            if ch.length == 0:  # keep no empty chunks around
                st.pop()
            raise
        ch.length += 1
        self._size += 1
        if ch.length >= self.chunk:
            if self.directory is not None:
                self._write(stream, ch)
            if self._size > self.capacity:
                self._evict()

    def _fill(self, ch: _Chunk, step: dict[str, Any]) -> None:
        """Check ``step`` against the arrays of ``ch`` and write it at index ``ch.length``."""
        i, n, data = ch.length, 0, ch.data
        for key, value in step.items():
            arr = data.get(key)
            if arr is None:
                if key.startswith("log/"):
                    continue
                raise ReplayError(f"Replay step has unknown key '{key}'; expected keys {sorted(data)}.")
            if type(value) is np.ndarray:
                if value.shape != arr.shape[1:] or value.dtype != arr.dtype:
                    self._mismatch(key, value, arr)
            else:
                self._check_other(key, value, arr)
            arr[i] = value
            if arr.dtype.kind == "f" and not np.isfinite(arr[i]).all():
                raise ReplayError(f"Replay step has NaN or inf in '{key}'; the step is refused (sanitise it first).")
            n += 1
        if n != len(data):
            missing = sorted(set(data) - set(step))
            raise ReplayError(f"Replay step lacks keys {missing}; expected keys {sorted(data)}.")

    def _define_spec(self, step: dict[str, Any]) -> None:
        for key, value in step.items():
            if key.startswith("log/"):
                continue
            value = np.asarray(value)
            if value.dtype.kind in "OV":
                raise ReplayError(f"Replay key '{key}' has dtype {value.dtype}; store numbers or booleans.")
            self._spec[key] = (value.shape, value.dtype)

    @staticmethod
    def _mismatch(key: str, value: Any, arr: np.ndarray) -> None:
        got = np.asarray(value)
        raise ReplayError(
            f"Replay key '{key}': expected shape {arr.shape[1:]} dtype {arr.dtype}, "
            f"got shape {got.shape} dtype {got.dtype}. All steps must match the first step."
        )

    def _check_other(self, key: str, value: Any, arr: np.ndarray) -> None:
        """Checks numpy scalars (exact dtype), Python scalars and lists (same-kind cast) before storing."""
        if isinstance(value, np.generic):
            if arr.ndim != 1 or value.dtype != arr.dtype:
                self._mismatch(key, value, arr)
        elif type(value) in _PY_SCALARS:
            if arr.ndim != 1 or not _scalar_fits(type(value), arr.dtype):
                self._mismatch(key, value, arr)
        else:
            got = np.asarray(value)
            if got.shape != arr.shape[1:] or not np.can_cast(got.dtype, arr.dtype, "same_kind"):
                self._mismatch(key, value, arr)

    def _new_chunk(self, stream: int) -> _Stream:
        st = self._streams.setdefault(stream, _Stream())
        data = {k: np.empty((self.chunk, *shape), dtype) for k, (shape, dtype) in self._spec.items()}
        st.append(_Chunk(self._next_seq, data))
        self._next_seq += 1
        return st

    def sample(self, batch_size: int, length: int) -> dict[str, np.ndarray]:
        """Draw ``batch_size`` windows of ``length`` consecutive steps, each from one stream.

        Returns:
            key -> array of shape ``(batch_size, length, *shape)`` with the stored dtype. The first
            ``round(batch_size * recent_frac)`` rows come from windows ending in the newest quarter.

        Raises:
            ValueError: no stream holds ``length`` steps yet.
        """
        if batch_size < 1 or length < 1:
            raise ValueError(f"Replay.sample needs batch_size, length >= 1; got {batch_size}, {length}.")
        ids = [s for s in sorted(self._streams) if len(self._streams[s]) >= length]
        if not ids:
            longest = max((len(s) for s in self._streams.values()), default=0)
            raise ValueError(
                f"Replay.sample(length={length}) needs a stream with at least {length} steps; the longest "
                f"has {longest}. Collect more steps before training (e.g. raise train.prefill)."
            )
        sizes = np.array([len(self._streams[s]) for s in ids], np.int64)
        n_recent = int(round(batch_size * self.recent_frac))
        recent = np.minimum(sizes, np.maximum(length, sizes // 4))  # newest steps per stream
        low = np.maximum(0, sizes - recent - length + 1)  # first start of a window ending there
        high = sizes - length + 1  # one past the last start
        rows = [self._draw(low, high, n_recent), self._draw(np.zeros_like(low), high, batch_size - n_recent)]
        out = {k: np.empty((batch_size, length, *shape), dtype) for k, (shape, dtype) in self._spec.items()}
        b = 0
        for which, starts in rows:
            for w, s in zip(which.tolist(), starts.tolist(), strict=True):
                self._copy_window(self._streams[ids[w]], s, length, out, b)
                b += 1
        return out

    def _draw(self, low: np.ndarray, high: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (stream position, start) pairs, uniform over all starts in ``[low, high)`` of all streams."""
        counts = np.cumsum(high - low)
        flat = self._rng.integers(0, counts[-1], size=n)
        which = np.searchsorted(counts, flat, side="right")
        return which, low[which] + flat - (counts[which] - (high - low)[which])

    @staticmethod
    def _copy_window(st: _Stream, start: int, length: int, out: dict[str, np.ndarray], b: int) -> None:
        """Copy steps ``[start, start + length)`` of a stream into row ``b`` of ``out``, chunk by chunk."""
        pos = st.starts[0] + start
        ci = bisect.bisect_right(st.starts, pos) - 1
        pos -= st.starts[ci]
        done = 0
        while done < length:
            ch = st.chunks[ci]
            take = min(length - done, ch.length - pos)
            for key, arr in ch.data.items():
                out[key][b, done : done + take] = arr[pos : pos + take]
            done += take
            ci += 1
            pos = 0

    def __len__(self) -> int:
        return self._size

    @property
    def num_episodes(self) -> int:
        """Number of stored ``is_first`` steps (0 when the steps have no ``is_first`` key)."""
        if "is_first" not in self._spec:
            return 0
        chunks = (ch for st in self._streams.values() for ch in st.chunks)
        return sum(int(np.count_nonzero(ch.data["is_first"][: ch.length])) for ch in chunks)

    def longest_stream(self) -> int:
        """Steps in the longest stream: windows up to this length can be sampled."""
        return max((len(st) for st in self._streams.values()), default=0)

    def stats(self) -> dict[str, int]:
        """Counts: ``steps``, ``episodes``, ``chunks``, ``streams`` (with data) and ``bytes`` on disk."""
        size = 0
        if self.directory is not None:
            with os.scandir(self.directory) as entries:
                size = sum(e.stat().st_size for e in entries if _NAME.match(e.name))
        return {
            "steps": self._size,
            "episodes": self.num_episodes,
            "chunks": sum(len(st.chunks) for st in self._streams.values()),
            "streams": sum(1 for st in self._streams.values() if st.chunks),
            "bytes": size,
        }

    def __repr__(self) -> str:
        return f"Replay({str(self.directory)!r}, steps={self._size}, capacity={self.capacity})"

    def save(self) -> None:
        """Write the unfinished chunk of every stream, replacing its previous partial file.

        After ``save()``, a new ``Replay`` on the same folder holds exactly the steps added so far.
        A no-op for memory-only replays.
        """
        if self.directory is None:
            return
        for stream, st in self._streams.items():
            for ch in st.chunks:
                if ch.saved != ch.length:
                    self._write(stream, ch)
        fsync_dir(self.directory)  # makes this and all earlier renames and removals durable

    def discard_open_episode(self, stream: int) -> int:
        """Drop the steps of the stream's unfinished episode, back to and including its last ``is_first``.

        Use it when an env worker crashed mid-episode. Files of affected chunks are rewritten or removed so
        that disk and memory agree. Returns the number of steps dropped (0 when the last stored step ends
        an episode). When the stream holds no ``is_first`` at all, all its steps are dropped.

        Example:
            >>> replay = Replay(None, chunk=4)
            >>> for t in range(6):
            ...     replay.add({"is_first": t in (0, 3), "is_last": t == 2}, stream=0)
            >>> replay.discard_open_episode(0), len(replay)
            (3, 3)
        """
        st = self._streams.get(stream)
        if st is None or not st.chunks:
            return 0
        if "is_first" not in self._spec or "is_last" not in self._spec:
            raise ValueError("Replay.discard_open_episode needs steps with 'is_first' and 'is_last' keys.")
        last = st.chunks[-1]
        if last.data["is_last"][last.length - 1]:
            return 0
        cut_chunk, cut = 0, 0  # drop everything when no is_first is stored
        for ci in range(len(st.chunks) - 1, -1, -1):
            ch = st.chunks[ci]
            firsts = np.flatnonzero(ch.data["is_first"][: ch.length])
            if len(firsts):
                cut_chunk, cut = ci, int(firsts[-1])
                break
        else:  # the episode may begin in files left unloaded (see _load): they go too
            self._drop_unloaded(stream)
        dropped = len(st) - (st.starts[cut_chunk] - st.starts[0] + cut)
        for ch in st.chunks[cut_chunk + 1 :]:
            self._remove_file(stream, ch)
        del st.chunks[cut_chunk + 1 :], st.starts[cut_chunk + 1 :]
        ch = st.chunks[-1]
        if cut == 0:
            self._remove_file(stream, st.pop())
        else:
            ch.length = cut
            if ch.saved > cut and self.directory is not None:
                self._write(stream, ch)
        if st.chunks:
            self._reopen(st)
        if self.directory is not None:
            fsync_dir(self.directory)
        self._size -= dropped
        logger.info("Discarded %d steps of the open episode of stream %d.", dropped, stream)
        return dropped

    def _evict(self) -> None:
        """Drop whole oldest chunks (smallest ``seq``) until within capacity; never a chunk still filling."""
        self._drop_unloaded()  # older than every loaded chunk: they go first
        while self._size > self.capacity:
            done = (s for s, st in self._streams.items() if len(st.chunks) > 1 or len(st) >= self.chunk)
            best = min(done, key=lambda s: self._streams[s].chunks[0].seq, default=None)
            if best is None:
                return
            st = self._streams[best]
            ch = st.pop(0)
            self._size -= ch.length
            self._remove_file(best, ch)

    def _drop_unloaded(self, stream: int | None = None) -> None:
        """Delete the files ``_load`` left unloaded, of one stream or all."""
        for path in [p for p in self._unloaded if stream is None or p.name.startswith(f"{stream:03d}-")]:
            path.unlink(missing_ok=True)
            self._unloaded.remove(path)

    def _reopen(self, st: _Stream) -> None:
        """Give a stream's last chunk room for ``chunk`` steps, so that ``add`` can continue filling it."""
        ch = st.chunks[-1]
        have = next(iter(ch.data.values())).shape[0]
        if ch.length < self.chunk and have < self.chunk:
            for key, arr in ch.data.items():
                grown = np.empty((self.chunk, *arr.shape[1:]), arr.dtype)
                grown[: ch.length] = arr[: ch.length]
                ch.data[key] = grown

    def _path(self, stream: int, ch: _Chunk) -> Path:
        assert self.directory is not None
        return self.directory / f"{stream:03d}-{ch.seq:08d}.npz"

    def _write(self, stream: int, ch: _Chunk) -> None:
        """Atomically write a chunk's stored steps: temp file, fsync, ``os.replace`` over the old version."""
        write_npz(self._path(stream, ch), {key: arr[: ch.length] for key, arr in ch.data.items()})
        ch.saved = ch.length

    def _remove_file(self, stream: int, ch: _Chunk) -> None:
        if self.directory is not None and ch.saved:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path(stream, ch))
            ch.saved = 0

    def _load(self) -> None:
        """Load the chunk files of ``self.directory``, newest first until ``capacity`` is reached.

        Older files are left alone, so that reading a large folder as an offline dataset deletes nothing;
        a replay that keeps growing deletes them on its first eviction, as it would have evicted them.
        """
        assert self.directory is not None
        found: list[tuple[int, int, Path]] = []
        for path in self.directory.iterdir():
            if path.name.endswith(".tmp") and _NAME.match(path.name[:-4]):
                logger.warning("Removing %s, left over from an interrupted replay write.", path)
                path.unlink(missing_ok=True)
            elif match := _NAME.match(path.name):
                found.append((int(match[2]), int(match[1]), path))
        loaded: list[tuple[int, _Chunk]] = []
        first: Path | None = None
        for seq, stream, path in sorted(found, reverse=True):
            if self._size >= self.capacity:
                self._unloaded.append(path)
                continue
            data = self._read(path, first)
            first = first or path
            length = len(next(iter(data.values())))
            loaded.append((stream, _Chunk(seq, data, length, saved=length)))
            self._size += length
        for stream, ch in reversed(loaded):
            self._streams.setdefault(stream, _Stream()).append(ch)
        for st in self._streams.values():
            self._reopen(st)
        self._next_seq = max((seq for seq, _, _ in found), default=-1) + 1
        if loaded:
            logger.info("Loaded %d steps in %d chunk files from %s.", self._size, len(loaded), self.directory)
        if self._unloaded:
            msg = "Replay capacity reached: %d older files in %s not loaded; the first eviction deletes them."
            logger.warning(msg, len(self._unloaded), self.directory)

    def _read(self, path: Path, newest: Path | None) -> dict[str, np.ndarray]:
        """Read and check one chunk file against ``newest`` (the file read first); raises ReplayError."""
        fix = f"Delete or move away {path} (the rest of the replay loads without it)."
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {name: npz[name] for name in npz.files}
        except Exception as err:
            raise ReplayError(
                f"Replay file {path} is corrupt or truncated ({type(err).__name__}: {err}). {fix}"
            ) from err
        lengths = {len(arr) if arr.ndim else -1 for arr in data.values()}
        if not data or len(lengths) != 1 or min(lengths) < 1:
            raise ReplayError(f"Replay file {path} holds no steps or arrays of unequal lengths. {fix}")
        spec = {k: (arr.shape[1:], arr.dtype) for k, arr in data.items()}
        if not self._spec:
            self._spec = spec
        elif spec != self._spec:
            raise ReplayError(
                f"Replay file {path} has keys/shapes/dtypes {_fmt(spec)} but {newest} has "
                f"{_fmt(self._spec)}; all files of one replay must match. Move the files that do not "
                f"belong out of {path.parent}."
            )
        return data


def _scalar_fits(kind: type, dtype: np.dtype[Any]) -> bool:
    """Whether a Python bool/int/float may be stored in ``dtype`` (a cast within its kind); memoised."""
    fits = _SCALAR_FITS.get((kind, dtype))
    if fits is None:
        fits = _SCALAR_FITS[kind, dtype] = bool(np.can_cast(kind, dtype, "same_kind"))
    return fits


def _fmt(spec: dict[str, tuple[tuple[int, ...], np.dtype[Any]]]) -> str:
    return "{" + ", ".join(f"{k}: {s} {d}" for k, (s, d) in sorted(spec.items())) + "}"
