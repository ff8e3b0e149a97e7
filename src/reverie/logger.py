"""One metrics logger with namespaced keys and pluggable outputs.

Keys are ``/``-separated namespaces: ``train/loss/dyn``, ``episode/return``, ``fps/env``,
``report/openloop``. Scalars added between two writes are averaged per key; videos keep the latest
clip per key. :meth:`Logger.write` hands both to every output (JSONL, TensorBoard, terminal, video
files). Library code never prints: the terminal output goes through ``logging.getLogger("reverie")``
and the progress bar stays silent unless stdout is a terminal.

Example:
    >>> logger = Logger([JSONLOutput("runs/demo/metrics.jsonl")])  # doctest: +SKIP
    >>> logger.add({"train/loss/dyn": torch.tensor(0.5), "episode/return": 21.0})  # doctest: +SKIP
    >>> logger.write(step=1000)  # doctest: +SKIP
    >>> read_jsonl("runs/demo/metrics.jsonl")[-1]["episode/return"]  # doctest: +SKIP
    21.0
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import reverie.distributed as distributed

if TYPE_CHECKING:
    import rich.console
    import rich.progress

    from reverie.config import RunConfig

log = logging.getLogger("reverie")

RESERVED_KEYS = ("step", "time")
"""Keys the JSONL rows use themselves; metrics may not take them."""

DEFAULT_TERMINAL_KEYS = ("episode/*", "eval/*", "fps/*", "train/loss/*")
"""Key patterns :func:`make_logger` shows on the terminal line."""

Value = float | int | np.ndarray | np.generic | torch.Tensor


class Output:
    """Where :meth:`Logger.write` sends metrics. Subclass and override :meth:`write`.

    ``write(step, scalars, videos)`` receives the mean of each scalar key since the last write
    (``{"train/loss/dyn": 0.42}``) and the latest video per key as a ``(T, H, W, C)`` uint8 array.
    Either dict may be empty. ``close()`` releases files; it is called once by :meth:`Logger.close`.
    """

    def write(self, step: int, scalars: dict[str, float], videos: dict[str, np.ndarray]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement write(step, scalars, videos).")

    def close(self) -> None:
        """Release resources (default: nothing to release)."""


class Logger:
    """Accumulate scalars and videos under namespaced keys; write them to every output.

    Args:
        outputs: destinations, e.g. ``[JSONLOutput(path), TerminalOutput(["episode/*"])]``.
        step: initial step, used by :meth:`write` when it is called without one (set it when resuming).

    Example:
        >>> logger = Logger([])
        >>> logger.scalar("train/loss/dyn", 1.0)
        >>> logger.scalar("train/loss/dyn", 3.0)
        >>> logger.pending()
        {'train/loss/dyn': 2.0}
    """

    def __init__(self, outputs: list[Output], step: int = 0) -> None:
        self.outputs = list(outputs)
        self.step = step
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._videos: dict[str, np.ndarray] = {}

    def scalar(self, key: str, value: Value) -> None:
        """Add one value to ``key``; the next write logs the mean of the values added since the last."""
        _check_key(key)
        value = _to_float(key, value)
        self._sums[key] = self._sums.get(key, 0.0) + value
        self._counts[key] = self._counts.get(key, 0) + 1

    def scalars(self, metrics: Mapping[str, Value]) -> None:
        """:meth:`scalar` for each item of ``metrics``."""
        for key, value in metrics.items():
            self.scalar(key, value)

    def video(self, key: str, frames: np.ndarray | torch.Tensor) -> None:
        """Keep ``frames`` (T, H, W, C), uint8 or float in [0, 1], C in {1, 3, 4}, for the next write."""
        _check_key(key)
        if isinstance(frames, torch.Tensor):
            frames = frames.detach().cpu().numpy()
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
            raise ValueError(f"Video '{key}' must have shape (T, H, W, C) with C in 1, 3, 4; got {frames.shape}.")
        self._videos[key] = to_uint8(frames)

    def add(self, metrics: Mapping[str, Value]) -> None:
        """Add a dict of metrics, routing by shape: one element -> scalar, 4-D -> video.

        Tensors are detached and moved to the CPU. Reduce other shapes first (e.g. ``x.mean()``).

        Example:
            >>> logger = Logger([])
            >>> logger.add({"train/loss/rep": torch.tensor(0.25), "episode/length": np.int64(200)})
            >>> logger.pending()
            {'train/loss/rep': 0.25, 'episode/length': 200.0}
        """
        for key, value in metrics.items():
            ndim = value.ndim if isinstance(value, np.ndarray | torch.Tensor) else 0
            if ndim == 4:
                self.video(key, value)  # type: ignore[arg-type]
            else:
                self.scalar(key, value)

    def pending(self) -> dict[str, float]:
        """The means the next :meth:`write` would log (without clearing them)."""
        return {key: self._sums[key] / self._counts[key] for key in self._sums}

    def write(self, step: int | None = None) -> None:
        """Send the accumulated means and videos to every output, then clear them.

        Args:
            step: the x-axis value (env steps); defaults to ``self.step``, and becomes it.
        """
        if step is not None:
            self.step = step
        scalars, videos = self.pending(), dict(self._videos)
        self._sums.clear()
        self._counts.clear()
        self._videos.clear()
        if not scalars and not videos:
            return
        for output in self.outputs:
            output.write(self.step, scalars, videos)

    def close(self) -> None:
        """Close every output. Pending metrics are not written; call :meth:`write` first."""
        for output in self.outputs:
            output.close()

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_key(key: str) -> None:
    if not key or key in RESERVED_KEYS or key != key.strip():
        raise ValueError(f"Bad metric key {key!r}: use a namespaced key such as 'train/loss/dyn'.")


def _to_float(key: str, value: Value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Metric '{key}' has shape {tuple(value.shape)}; log a scalar, e.g. x.mean().")
        return float(value.detach().item())
    if isinstance(value, np.ndarray | np.generic):
        if value.size != 1:
            raise ValueError(f"Metric '{key}' has shape {value.shape}; log a scalar, e.g. x.mean().")
        return float(value.item())
    return float(value)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Images as uint8: uint8 passes through, floats in [0, 1] are clipped, scaled and rounded."""
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames.astype(np.float32), 0.0, 1.0) * 255).round().astype(np.uint8)


def video_name(key: str, step: int) -> str:
    """File stem of a video: ``report/openloop`` at step 500 -> ``report_openloop_500``."""
    return f"{key.replace('/', '_')}_{step}"


@functools.cache
def _has_ffmpeg() -> bool:
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()).exists()
    except (ImportError, RuntimeError):
        return False


def write_video(path: str | Path, frames: np.ndarray, fps: float = 16) -> Path:
    """Write (T, H, W, C) frames as mp4 (H.264 via imageio-ffmpeg), or as gif without ffmpeg.

    Odd sides are padded with black to even ones (H.264 with yuv420p needs even sides).

    Returns:
        The path written: ``path`` with suffix ``.mp4``, or ``.gif`` as the fallback.
    """
    import imageio.v2 as iio2
    import imageio.v3 as iio

    frames = to_uint8(np.asarray(frames))
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    frames = frames[..., :3]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _has_ffmpeg():
        T, H, W, _ = frames.shape
        frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))
        out = path.with_suffix(".mp4")
        writer = iio2.get_writer(out, format="FFMPEG", fps=fps, macro_block_size=1)
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
        return out
    out = path.with_suffix(".gif")
    iio.imwrite(out, frames, extension=".gif", duration=1000 / fps, loop=0)
    return out


class JSONLOutput(Output):
    """Append one JSON object per write, ``{"step": s, "time": unix_seconds, key: mean, ...}``.

    The file is opened for each write and closed again, so every row is on disk once ``write``
    returns and a resumed run appends to the same file. Videos are not written here. Non-finite
    values are written as ``NaN`` / ``Infinity``, which :func:`read_jsonl` reads back.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A crash mid-write can leave a partial last line; start the next row on a line of its own.
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open("rb") as f:
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    with self.path.open("a") as g:
                        g.write("\n")

    def write(self, step: int, scalars: dict[str, float], videos: dict[str, np.ndarray]) -> None:
        if not scalars:
            return
        row = {"step": step, "time": round(time.time(), 3), **scalars}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics file, in file order. Lines that do not parse (a crash mid-write) are skipped.

    Example:
        >>> rows = read_jsonl("runs/demo/metrics.jsonl")  # doctest: +SKIP
        >>> [(r["step"], r["episode/return"]) for r in rows if "episode/return" in r]  # doctest: +SKIP
    """
    rows = []
    with Path(path).open(encoding="utf-8", errors="replace") as f:  # a damaged byte spoils its line only
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("Skipping unreadable line %d of %s.", number, path)
    return rows


class TensorBoardOutput(Output):
    """TensorBoard event files for scalars; videos as files plus a first-frame preview image.

    ``SummaryWriter.add_video`` needs moviepy, so each video is written to
    ``logdir/videos/{key with / as _}_{step}.mp4`` (gif without ffmpeg) and its first frame is
    logged with ``add_image`` under the same key.
    """

    def __init__(self, logdir: str | Path, fps: float = 16) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self.fps = fps
        self.writer = SummaryWriter(log_dir=str(self.logdir))

    def write(self, step: int, scalars: dict[str, float], videos: dict[str, np.ndarray]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        for key, frames in videos.items():
            write_video(self.logdir / "videos" / video_name(key, step), frames, self.fps)
            self.writer.add_image(key, frames[0][..., :3], step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class VideoOutput(Output):
    """Write each video to ``directory/{key with / as _}_{step}.mp4`` (gif without ffmpeg)."""

    def __init__(self, directory: str | Path, fps: float = 16) -> None:
        self.directory = Path(directory)
        self.fps = fps

    def write(self, step: int, scalars: dict[str, float], videos: dict[str, np.ndarray]) -> None:
        for key, frames in videos.items():
            write_video(self.directory / video_name(key, step), frames, self.fps)


class TerminalOutput(Output):
    """Log one compact line per write through ``logging.getLogger("reverie")`` at INFO.

    Args:
        keys: glob patterns of the keys to show, in this order (``["episode/*", "fps/*"]``);
            ``None`` shows every scalar. Writes with no matching key log nothing.

    Example line: ``step 12000 | episode/return 21.5 | fps/env 512``
    """

    def __init__(self, keys: Iterable[str] | None = None) -> None:
        self.patterns = None if keys is None else list(keys)

    def select(self, scalars: Mapping[str, float]) -> dict[str, float]:
        """The scalars to show: pattern order first, then key order within a pattern."""
        if self.patterns is None:
            return dict(scalars)
        chosen: dict[str, float] = {}
        for pattern in self.patterns:
            for key in sorted(fnmatch.filter(scalars, pattern)):
                chosen.setdefault(key, scalars[key])
        return chosen

    def write(self, step: int, scalars: dict[str, float], videos: dict[str, np.ndarray]) -> None:
        chosen = self.select(scalars)
        if chosen:
            log.info(" | ".join([f"step {step}"] + [f"{k} {v:.4g}" for k, v in chosen.items()]))


class JobLogger(Logger):
    """The logger of one rank of a distributed job: every write first gathers the scalars every rank added (sums
    and counts), so rank 0's outputs log means over the whole job (episodes of every rank, losses of the whole
    batch). The other ranks have no outputs. Every rank must write at the same points (the loops do).
    """

    def write(self, step: int | None = None) -> None:
        parts = distributed.gather_json([self._sums, self._counts])
        if distributed.world().main:
            for sums, counts in parts[1:]:
                for key, value in sums.items():
                    self._sums[key] = self._sums.get(key, 0.0) + value
                    self._counts[key] = self._counts.get(key, 0) + counts[key]
        super().write(step)


def make_logger(logdir: str | Path, cfg: RunConfig) -> Logger:
    """The run's logger: ``logdir/metrics.jsonl``, TensorBoard in ``logdir`` when ``cfg.tensorboard``,
    and a terminal line with :data:`DEFAULT_TERMINAL_KEYS`. Videos land in ``logdir/videos`` either way. On several
    ranks, a :class:`JobLogger` (outputs on rank 0 only).

    Example:
        >>> logger = make_logger("runs/demo", RunConfig(tensorboard=False))  # doctest: +SKIP
    """
    job = distributed.world()
    if not job.main:
        return JobLogger([])
    logdir = Path(logdir)
    outputs: list[Output] = [JSONLOutput(logdir / "metrics.jsonl"), TerminalOutput(DEFAULT_TERMINAL_KEYS)]
    if cfg.tensorboard:
        outputs.append(TensorBoardOutput(logdir))
    else:
        outputs.append(VideoOutput(logdir / "videos"))
    return JobLogger(outputs) if job.active else Logger(outputs)


def openloop_video(truth: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Stack true frames, model frames and their error into one video, batch side by side.

    The error row is ``(model - truth + 1) / 2``: grey where the model is right, bright where it
    predicts too much, dark where too little (as in DreamerV3's open-loop report).

    Args:
        truth: (B, T, H, W, C), uint8 or float in [0, 1].
        model: same shape as ``truth``.

    Returns:
        (T, 3H, B*W, C) uint8: rows truth / model / error, one column per batch entry.

    Example:
        >>> openloop_video(np.zeros((2, 5, 8, 8, 3)), np.ones((2, 5, 8, 8, 3))).shape
        (5, 24, 16, 3)
    """
    if truth.shape != model.shape or truth.ndim != 5:
        raise ValueError(f"truth and model must share a (B, T, H, W, C) shape; got {truth.shape}, {model.shape}.")
    true = to_uint8(truth).astype(np.float32) / 255  # (B, T, H, W, C)
    pred = to_uint8(model).astype(np.float32) / 255  # (B, T, H, W, C)
    error = (pred - true + 1) / 2
    video = np.concatenate([true, pred, error], axis=2)  # (B, T, 3H, W, C)
    B, T, H3, W, C = video.shape
    video = video.transpose(1, 2, 0, 3, 4).reshape(T, H3, B * W, C)  # (T, 3H, B*W, C)
    return to_uint8(video)


class Progress:
    """A rich progress bar: env steps / total, updates/s, ETA and the latest episode return.

    It draws only when ``enabled`` and stdout is a terminal (or a given ``console`` is one);
    otherwise every method is a no-op, so CI logs hold only the logger's lines.

    Args:
        total: env steps of the run.
        enabled: show the bar (``RunConfig.progress``).
        description: text left of the bar.
        console: draw on this rich console instead of stdout (for tests and embedding).

    Example:
        >>> with Progress(30_000, enabled=True, description="train") as bar:  # doctest: +SKIP
        ...     bar.update(step=1024, updates=32, last_return=None)
    """

    def __init__(
        self,
        total: int,
        enabled: bool = True,
        description: str = "",
        console: rich.console.Console | None = None,
    ) -> None:
        terminal = console.is_terminal if console is not None else sys.stdout.isatty()
        self.enabled = enabled and terminal
        self._rates: deque[tuple[float, int]] = deque(maxlen=32)
        self._bar: rich.progress.Progress | None = None
        if not self.enabled:
            return
        from rich import progress as rp

        self._bar = rp.Progress(
            rp.TextColumn("[bold]{task.description}"),
            rp.BarColumn(),
            rp.MofNCompleteColumn(),
            rp.TextColumn("steps | {task.fields[ups]} upd/s | return {task.fields[ret]} | ETA"),
            rp.TimeRemainingColumn(),
            console=console,
            refresh_per_second=2,
        )
        self._task = self._bar.add_task(description, total=total, ups="-", ret="-")
        self._bar.start()

    def update(self, step: int, updates: int, last_return: float | None = None) -> None:
        """Show ``step`` env steps done, ``updates`` gradient updates so far, and the latest return."""
        if self._bar is None:
            return
        now = time.monotonic()
        self._rates.append((now, updates))
        (t0, u0), (t1, u1) = self._rates[0], self._rates[-1]
        fields: dict[str, Any] = {}
        if t1 > t0:
            fields["ups"] = f"{(u1 - u0) / (t1 - t0):.1f}"
        if last_return is not None:
            fields["ret"] = f"{last_return:.4g}"
        self._bar.update(self._task, completed=step, **fields)

    def close(self) -> None:
        """Stop drawing; safe to call twice."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
