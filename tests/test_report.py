"""``reverie report``: a self-contained HTML page from a tiny run folder (curves, losses, open-loop videos,
Crafter achievements, config), written atomically; the page is checked in Chromium when it is installed.

(``docs/images/report.png`` shows the report of a longer run; ``docs/studio.md`` has the commands.)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from test_dream import PIXELS, tiny_run
from test_studio import chromium_page

import reverie.logger
from reverie.cli import main
from reverie.report import ReportError, build_report, write_report


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, debug_config) -> Path:
    """A copy of the tiny pixel run, plus crafter-style per-episode achievement rows (``stats.jsonl``)."""
    source = tiny_run(tmp_path_factory, debug_config, "pixels", *PIXELS)
    folder = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("replay"))
    rows = [{"length": 100, "achievement_collect_wood": 2, "achievement_wake_up": i % 2} for i in range(4)]
    (folder / "stats.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    logged = {"step": 80, "eval/score": 3.0, "eval/success/collect_wood": 50.0, "episode/achievement/wake_up": 0.5}
    with (folder / "metrics.jsonl").open("a") as f:  # as a Crafter run logs them (reverie.agent, reverie.online)
        f.write(json.dumps(logged) + "\n")
    return folder


@pytest.fixture(scope="module")
def report(run: Path) -> Path:
    return write_report(run)


def test_report_is_one_self_contained_page(run: Path, report: Path) -> None:
    assert report == run / "report.html" and not list(run.glob("*.tmp"))
    page = report.read_text()
    assert page.count("data:image/png;base64,") >= 5  # returns, losses, frame strip, achievements, their trend
    mime = "video/mp4" if reverie.logger._has_ffmpeg() else "image/gif"  # gif where imageio-ffmpeg is missing
    assert f"data:{mime};base64," in page
    assert "report_openloop_image" in page
    for section in ("Learning curves", "Losses", "Open-loop predictions", "Crafter achievements", "Config"):
        assert f"<h2>{section}</h2>" in page
    for key in ("model.deter", "train.batch_size", "env.pixels", "run.video_every"):
        assert f"<td>{key}</td>" in page
    for source in ("eval at step 80: score", "training, step 80: score", "4 episodes in stats.jsonl: score"):
        assert source in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page), "the page loads something remote"
    assert "<script" not in page and "<link" not in page


def test_report_of_a_bare_folder_and_errors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"env": {"id": "crafter"}, "train": {"steps": 10}}))
    page = build_report(tmp_path)
    assert "No episode/return or eval/return logged yet" in page and "<td>train.steps</td>" in page
    assert "Crafter achievements" not in page and "Open-loop" not in page
    with pytest.raises(ReportError, match="No run folder"):
        build_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="is it a run folder"):
        build_report(tmp_path / "empty")


def test_cli_report(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "nested" / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.stat().st_size > 10_000
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "No run folder" in capsys.readouterr().err


def test_report_renders_offline_in_chromium(report: Path, tmp_path: Path) -> None:
    with chromium_page(width=1100, height=1400) as page:
        page.route(
            "**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_()
        )
        page.goto(report.as_uri())
        broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0 and page.evaluate("document.images.length") >= 5
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
