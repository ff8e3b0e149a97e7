"""PNG plots of learning curves and logged metrics.

Figures are drawn with ``matplotlib.figure.Figure`` on the Agg canvas, never through ``pyplot``, so
plotting works without a display and leaves the caller's matplotlib backend alone.

Example:
    >>> plot_curves({"seed 0": [(0, 10.0), (1000, 80.0)]}, "curve.png", "env steps", "return",
    ...             "CartPole", threshold=500.0)  # doctest: +SKIP
    >>> plot_metrics("runs/demo/metrics.jsonl", ["train/loss/*"], "losses.png")  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reverie.logger import read_jsonl


def plot_curves(
    curves: dict[str, list[tuple[float, float]]],
    path: str | Path,
    xlabel: str = "env steps",
    ylabel: str = "return",
    title: str = "",
    threshold: float | None = None,
) -> Path:
    """Draw one line per label and save a PNG.

    Args:
        curves: label -> ``[(x, y), ...]`` points, e.g. one entry per seed or per method.
        path: PNG to write; parent folders are created.
        xlabel, ylabel, title: axis labels and title.
        threshold: draw a dashed horizontal line here (e.g. the score that counts as solved).

    Returns:
        The path written.
    """
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, points in curves.items():
        xs, ys = zip(*sorted(points), strict=True) if points else ((), ())
        ax.plot(xs, ys, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", label=f"threshold {threshold:g}")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if curves or threshold is not None:
        ax.legend()
    return _save(fig, path)


def plot_metrics(jsonl_path: str | Path, keys: Sequence[str], path: str | Path) -> Path:
    """Plot metrics from a :class:`~reverie.logger.JSONLOutput` file against ``step``, one panel per key.

    Args:
        jsonl_path: the run's ``metrics.jsonl``.
        keys: keys or glob patterns, e.g. ``["train/loss/*", "episode/return"]``.
        path: PNG to write.

    Raises:
        ValueError: no key of the file matches ``keys``; the message lists the keys there are.
    """
    rows = read_jsonl(jsonl_path)
    present = sorted({key for row in rows for key in row} - {"step", "time"})
    chosen = list(dict.fromkeys(k for pattern in keys for k in sorted(fnmatch.filter(present, pattern))))
    if not chosen:
        raise ValueError(f"No metric in {jsonl_path} matches {list(keys)}; it has {present}.")
    cols = min(3, len(chosen))
    nrows = math.ceil(len(chosen) / cols)
    fig = Figure(figsize=(4 * cols, 3 * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for i, key in enumerate(chosen):
        ax = fig.add_subplot(nrows, cols, i + 1)
        points = [(row["step"], row[key]) for row in rows if key in row]
        ax.plot([x for x, _ in points], [y for _, y in points])
        ax.set(title=key, xlabel="step")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
