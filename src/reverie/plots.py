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
from collections.abc import Mapping, Sequence
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


def plot_rounds(seeds: Sequence[Sequence[dict[str, object]]], path: str | Path) -> Path:
    """Correction rounds: exploit rate, real Crafter score and imagined vs real return per round, one line a seed.

    Args:
        seeds: per seed, the round reports of :func:`reverie.correction.correct`.
        path: PNG to write.
    """
    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    panels = [("exploit_rate", "exploit rate (per real step)"), ("real_score", "real Crafter score (%)")]
    for p, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, 3, p + 1)
        for s, rounds in enumerate(seeds):
            xs = [int(r["round"]) for r in rounds if r.get(key) is not None]  # type: ignore[call-overload]
            ys = [float(r[key]) for r in rounds if r.get(key) is not None]  # type: ignore[arg-type]
            ax.plot(xs, ys, marker="o", color=f"C{s}", label=f"seed {s}")
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 3, 3)
    for s, rounds in enumerate(seeds):
        xs = [int(r["round"]) for r in rounds]  # type: ignore[call-overload]
        ax.plot(xs, [float(r["imagined_return"] or 0.0) for r in rounds], "--", color=f"C{s}")  # type: ignore[arg-type]
        ax.plot(xs, [float(r["real_return_h"] or 0.0) for r in rounds], "-", color=f"C{s}")  # type: ignore[arg-type]
    ax.set_xlabel("round")
    ax.set_ylabel("return over the imagined horizon")
    ax.set_title("dashed: promised by the model, solid: real", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_rates(
    series: Sequence[tuple[str, Mapping[str, float]]],
    path: str | Path,
    title: str = "",
    names: Sequence[str] | None = None,
    ylabel: str = "success rate (%)",
) -> Path:
    """Bar chart of success rates in percent per name (log scale, zero rates drawn as empty slots), several
    series side by side, saved as PNG.

    Args:
        series: ``[(label, {name: rate}), ...]``; the label goes to the legend as given.
        path: PNG to write; parent folders are created.
        title: figure title.
        names: the bars' order (default: the names of the series in first-seen order).
    """
    if names is None:
        names = list(dict.fromkeys(name for _, rates in series for name in rates))
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    for i, (label, rates) in enumerate(series):
        values = [max(float(rates.get(n, 0.0)), 0.0) for n in names]
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [max(v, 0.01) for v in values], width, label=label)  # from 0.01% so zeros show on the log axis
    ax.set_yscale("log")
    ax.set_ylim(0.01, 100)
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.replace("_", " ") for n in names], rotation=60, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
