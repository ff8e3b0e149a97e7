"""``reverie report RUN_DIR``: one self-contained HTML page about a run, viewable offline.

The page holds, in this order: a summary (env, steps, last returns), learning curves
(``episode/return``, ``eval/return``) and loss curves (``train/loss/*``) from ``metrics.jsonl``, the
latest open-loop prediction video per key from ``RUN_DIR/videos`` (embedded, plus a strip of frames),
the game's episode summary when the run has one (success rates and a score, e.g. Crafter's achievements),
the correction rounds, and the config as a table. Every image and video is a base64 ``data:`` URI and the
page loads no script or style from anywhere, so it can be mailed or archived as one file.

Success rates come from three sources, each drawn as one series of bars: the last evaluation's
``eval/success/<name>``, the last logging window's ``episode/success/<name>`` of training episodes (both in
``metrics.jsonl``), and per-episode rows in the run's other ``*.jsonl`` files (e.g. crafter's own
``stats.jsonl``) summarised by the run's game (:func:`reverie.plugins.summarize`).

Example:
    >>> write_report("runs/crafter")                          # doctest: +SKIP
    PosixPath('runs/crafter/report.html')
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reverie.config import field_docs
from reverie.errors import ReverieError
from reverie.logger import read_jsonl
from reverie.plots import plot_curves, plot_metrics, plot_rates
from reverie.plugins import summarize

__all__ = ["ReportError", "build_report", "write_report"]

VIDEO_EMBED_LIMIT = 8 * 2**20
"""Videos larger than this (bytes) are shown only as a frame strip, to keep the page small."""
STRIP_FRAMES = 8
"""Frames, evenly spaced over a clip, in the strip shown under each video."""
_VIDEO_NAME = re.compile(r"^(?P<key>.+)_(?P<step>\d+)$")


class ReportError(ReverieError):
    """The run folder cannot be reported on; the message names the folder and what is missing."""


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of ``run_dir`` atomically (temp file, then rename); returns its path.

    Args:
        run_dir: a run folder (``metrics.jsonl``, ``config.json``, ``videos/``; any may be missing).
        out: the HTML file; default ``RUN_DIR/report.html``.

    Raises:
        ReportError: ``run_dir`` is not a folder, or holds none of the files a report is made of.
    """
    page = build_report(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def build_report(run_dir: str | os.PathLike[str]) -> str:
    """The report page of ``run_dir`` as one HTML string (see the module docstring)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ReportError(f"No run folder at '{run}'.")
    metrics = run / "metrics.jsonl"
    config = _read_json(run / "config.json") or _read_json(run / "checkpoint" / "config.json")
    rows = read_jsonl(metrics) if metrics.exists() else []
    if not rows and config is None and not (run / "videos").is_dir():
        raise ReportError(
            f"'{run}' holds no readable metrics.jsonl, config.json or videos/; is it a run folder (reverie train "
            "--logdir)?"
        )
    with tempfile.TemporaryDirectory(prefix="reverie-report-") as tmp:
        png = _PngMaker(Path(tmp))
        sections = [
            _summary(run, rows, config),
            _curves(rows, png),
            _losses(metrics, png),
            _videos(run / "videos"),
            _episode_summary(run, rows, config, png),
            _correction(run, png),
            _config(config),
        ]
    title = f"Reverie report: {run.resolve().name}"
    body = "\n".join(s for s in sections if s)
    return _PAGE.format(title=html.escape(title), body=body)


# --------------------------------------------------------------------- sections
def _summary(run: Path, rows: list[dict[str, Any]], config: dict[str, Any] | None) -> str:
    items = {"run folder": str(run.resolve()), "generated": _now()}
    if config is not None:
        items["env"] = str(config.get("env", {}).get("id", "?"))
    meta = _read_json(run / "checkpoint" / "meta.json")
    if meta is not None:
        state = meta.get("train_state", meta.get("counters", {}))
        items.update({k.replace("_", " "): str(v) for k, v in state.items()})
    if rows:
        items["last logged step"] = str(rows[-1].get("step", "?"))
    for key in ("episode/return", "eval/return"):
        last = [row[key] for row in rows if key in row]
        if last:
            items[f"last {key}"] = f"{last[-1]:.4g}"
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items.items())
    return f'<section><h2>Summary</h2><table class="kv">{cells}</table></section>'


def _curves(rows: list[dict[str, Any]], png: _PngMaker) -> str:
    curves = {key: [(row["step"], row[key]) for row in rows if key in row] for key in ("episode/return", "eval/return")}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return _section("Learning curves", "<p>No episode/return or eval/return logged yet.</p>")
    image = png(lambda path: plot_curves(curves, path, "env steps", "return", "Returns"))
    return _section("Learning curves", _img(image, "returns against env steps"))


def _losses(metrics: Path, png: _PngMaker) -> str:
    if not metrics.exists():
        return ""
    try:
        image = png(lambda path: plot_metrics(metrics, ["train/loss/*"], path))
    except ValueError:  # no loss logged yet (no update before the first write)
        return ""
    return _section("Losses", _img(image, "train/loss/* against env steps"))


def _videos(folder: Path) -> str:
    latest: dict[str, tuple[int, Path]] = {}
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        match = _VIDEO_NAME.match(path.stem)
        if path.suffix not in (".mp4", ".gif") or match is None:
            continue
        step = int(match["step"])
        if match["key"] not in latest or step > latest[match["key"]][0]:
            latest[match["key"]] = (step, path)
    parts = []
    for key, (step, path) in sorted(latest.items()):
        name = html.escape(key)
        data = path.read_bytes()
        if len(data) > VIDEO_EMBED_LIMIT:
            player = f"<p>{path.name} is {len(data) / 2**20:.0f} MB, too large to embed; frames below.</p>"
        elif path.suffix == ".mp4":
            player = f'<video controls loop muted playsinline src="{_uri(data, "video/mp4")}"></video>'
        else:
            player = _img(data, name, "image/gif")
        strip = _frame_strip(path)
        parts.append(f"<figure><figcaption>{name} at step {step}</figcaption>{player}{strip}</figure>")
    if not parts:
        return ""
    note = "<p>Rows: true frames, the model's open-loop prediction, and their difference (grey = right).</p>"
    return _section("Open-loop predictions", note + "".join(parts))


def _frame_strip(path: Path) -> str:
    """Up to :data:`STRIP_FRAMES` frames of a clip side by side, as an embedded PNG ('' if unreadable)."""
    import imageio.v3 as iio
    from PIL import Image

    try:
        frames = np.asarray(iio.imread(path, index=None))  # (T, H, W, C)
    except Exception:  # a codec or file that this machine cannot read: the video above still plays
        return ""
    if frames.ndim != 4 or not len(frames):
        return ""
    picks = np.unique(np.linspace(0, len(frames) - 1, STRIP_FRAMES).round().astype(int))
    gap = np.full((frames.shape[1], 2, frames.shape[3]), 255, np.uint8)
    row = np.concatenate([np.concatenate([frames[i], gap], 1) for i in picks], 1)[:, :-2]
    buffer = io.BytesIO()
    Image.fromarray(row.astype(np.uint8)).save(buffer, format="PNG")
    caption = f"frames {', '.join(str(i) for i in picks)} of {len(frames)}"
    return f'<div class="strip">{_img(buffer.getvalue(), caption)}<small>{caption}</small></div>'


def _episode_summary(run: Path, rows: list[dict[str, Any]], config: dict[str, Any] | None, png: _PngMaker) -> str:
    series = _rate_series(run, rows, str((config or {}).get("env", {}).get("id", "")))
    if not series:
        return ""
    image = png(lambda path: plot_rates([(label, rates) for label, rates, _ in series], path, "Success rates"))
    scores = "".join(
        f"<li>{html.escape(label)}" + (f": score {score:.2f}" if score is not None else "") + "</li>"
        for label, _, score in series
    )
    text = f"<p>Success rates in percent (log scale) of each source:</p><ul>{scores}</ul>"
    trends = ""
    if any("eval/score" in row or "episode/score" in row for row in rows):
        trend = png(lambda path: plot_metrics(run / "metrics.jsonl", ["eval/score", "episode/score"], path))
        trends = _img(trend, "score of evaluations and of training episodes against env steps")
    return _section("Episode summary", text + _img(image, "success rates") + trends)


def _rate_series(run: Path, rows: list[dict[str, Any]], env_id: str) -> list[tuple[str, dict[str, float], Any]]:
    """(label, success rates in percent, score or None) per source: the last evaluation, the last logging window of
    training episodes (``metrics.jsonl``), and per-episode rows of the run's other ``*.jsonl`` files."""
    series = []
    for prefix, label in (("eval/", "eval at step {}"), ("episode/", "training, step {}")):
        logged = [row for row in rows if any(k.startswith(prefix + "success/") for k in row)]
        if logged:
            last = logged[-1]
            cut = len(prefix + "success/")
            rates = {k[cut:]: float(v) for k, v in last.items() if k.startswith(prefix + "success/")}
            series.append((label.format(last["step"]), rates, last.get(prefix + "score")))
    if env_id:
        episodes, files = [], []
        for path in sorted(run.rglob("*.jsonl")):
            if path.name == "metrics.jsonl" or len(path.relative_to(run).parts) > 3:
                continue
            found = read_jsonl(path)
            if summarize(env_id, found):
                episodes += found
                files.append(path.name)
        summary = summarize(env_id, episodes)
        if summary:
            rates = {k[len("success/") :]: v for k, v in summary.items() if k.startswith("success/")}
            series.append((f"{len(episodes)} episodes in {', '.join(files)}", rates, summary.get("score")))
    return series


def _correction(run: Path, png: _PngMaker) -> str:
    """The correction rounds of ``reverie correct`` (``correction.json``): a table, examples and the plot."""
    from reverie.plots import plot_rounds

    data = _read_json(run / "correction.json")
    if not data or not data.get("rounds"):
        return ""
    rounds = data["rounds"]
    head = "<tr><th>round</th><th>score</th><th>promised</th><th>real</th><th>exploit rate</th>"
    head += "<th>AUROC latent</th><th>AUROC reward</th>"
    head += "<th>top exploit classes</th><th>what the game did</th></tr>"
    cells = []
    for r in rounds:
        top = ", ".join(f"{k} ({v})" for k, v in list(r.get("exploits", {}).items())[:4])
        did = ", ".join(f"{k} ({v})" for k, v in r.get("outcomes", {}).items())
        values = [r.get("round"), r.get("real_score"), r.get("imagined_return"), r.get("real_return_h")]
        values += [r.get("exploit_rate"), r.get("uncertainty_auroc"), r.get("reward_uncertainty_auroc")]
        row = "".join(f"<td>{v:.4g}</td>" if isinstance(v, float) else f"<td>{v}</td>" for v in values)
        cells.append(f"<tr>{row}<td>{html.escape(top)}</td><td>{html.escape(did)}</td></tr>")
    examples = rounds[0].get("examples", {})
    listing = "".join(
        f"<li>{html.escape(name)}: step {e['step']} of episode {e['episode']}, promised reward "
        f"{e['predicted_reward']:.2f}, real {e['real_reward']:.2f}, uncertainty {e['uncertainty']:.3f}</li>"
        for name, items in examples.items()
        for e in items[:1]
    )
    image = png(lambda path: plot_rounds([rounds], path))
    text = f"<table>{head}{''.join(cells)}</table><p>Round 0 exploit examples:</p><ul>{listing}</ul>"
    return _section("Correction rounds", text + _img(image, "correction rounds"))


def _config(config: dict[str, Any] | None) -> str:
    if config is None:
        return ""
    docs = field_docs()
    rows = []
    for section, values in config.items():
        for key, value in values.items() if isinstance(values, dict) else [("", values)]:
            dotted = f"{section}.{key}" if key else section
            rows.append(
                f"<tr><td>{html.escape(dotted)}</td><td>{html.escape(json.dumps(value))}</td>"
                f"<td>{html.escape(docs.get(dotted, ''))}</td></tr>"
            )
    table = f'<table class="config"><tr><th>key</th><th>value</th><th></th></tr>{"".join(rows)}</table>'
    return _section("Config", table)


# --------------------------------------------------------------------- helpers
class _PngMaker:
    """Run a plotting function that writes a PNG file into a temp folder; returns the PNG's bytes."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0

    def __call__(self, plot: Callable[[Path], Path]) -> bytes:
        self.count += 1
        return plot(self.folder / f"{self.count}.png").read_bytes()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):  # missing, not UTF-8, not JSON: nothing to show from it
        return None
    return data if isinstance(data, dict) else None


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(data: bytes, alt: str, mime: str = "image/png") -> str:
    return f'<img src="{_uri(data, mime)}" alt="{html.escape(alt)}">'


def _section(title: str, content: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{content}</section>"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 1em 2em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }}
img, video {{ max-width: 100%; }} video, .strip img {{ image-rendering: pixelated; }}
video {{ width: 512px; display: block; }} figure {{ margin: 1em 0; }} figcaption {{ font-weight: 600; }}
.strip small {{ display: block; color: #666; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: 0.15em 0.8em; border-bottom: 1px solid #eee; text-align: left; }}
.kv th {{ color: #555; font-weight: normal; }} .config td:nth-child(2) {{ font-family: monospace; }}
.config td:nth-child(3) {{ color: #666; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
</body>
</html>
"""
