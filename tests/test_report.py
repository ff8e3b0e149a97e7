"""``reverie report``: a self-contained HTML page from a tiny run folder (curves, losses, open-loop videos,
the game's episode summary, config), written atomically; the page is checked in Chromium when it is installed.

(``docs/images/report.png`` shows the report of a longer run; ``docs/studio.md`` has the commands.)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import reverie.logger
from reverie.cli import main
from reverie.report import ReportError, build_report, write_report


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, pixel_run: Path) -> Path:
    """A copy of the tiny pixel run dressed as a Crafter run: its config names the game, its metrics hold the
    game's summary as evaluations and training log it, and crafter's own per-episode rows (``stats.jsonl``)."""
    folder = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(pixel_run, folder, ignore=shutil.ignore_patterns("replay"))
    config = json.loads((folder / "config.json").read_text())
    config["env"]["id"] = "crafter"
    (folder / "config.json").write_text(json.dumps(config))
    rows = [{"length": 100, "achievement_collect_wood": 2, "achievement_wake_up": i % 2} for i in range(4)]
    (folder / "stats.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    logged = {"step": 80, "eval/score": 3.0, "eval/success/collect_wood": 50.0}
    logged |= {"episode/score": 1.0, "episode/success/wake_up": 50.0}
    with (folder / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(logged) + "\n")
    return folder


@pytest.fixture(scope="module")
def report(run: Path) -> Path:
    return write_report(run)


def test_report_is_one_self_contained_page(run: Path, report: Path) -> None:
    assert report == run / "report.html" and not list(run.glob("*.tmp"))
    page = report.read_text()
    assert page.count("data:image/png;base64,") >= 5  # returns, losses, frame strip, success rates, score trend
    mime = "video/mp4" if reverie.logger._has_ffmpeg() else "image/gif"  # gif where imageio-ffmpeg is missing
    assert f"data:{mime};base64," in page
    assert "report_openloop_image" in page
    for section in ("Learning curves", "Losses", "Open-loop predictions", "Episode summary", "Config"):
        assert f"<h2>{section}</h2>" in page
    for key in ("model.deter", "train.batch_size", "env.pixels", "run.video_every"):
        assert f"<td>{key}</td>" in page
    for source in ("eval at step 80: score 3.00", "training, step 80: score 1.00", "4 episodes in stats.jsonl: score"):
        assert source in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page), "the page loads something remote"
    assert "<script" not in page and "<link" not in page


def test_report_of_a_bare_folder_and_errors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"env": {"id": "crafter"}, "train": {"steps": 10}}))
    page = build_report(tmp_path)
    assert "No episode/return or eval/return logged yet" in page and "<td>train.steps</td>" in page
    assert "Episode summary" not in page and "Open-loop" not in page
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


def test_report_renders_offline_in_chromium(report: Path, tmp_path: Path, chromium_page) -> None:
    with chromium_page(width=1100, height=1400) as page:
        page.route(
            "**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_()
        )
        page.goto(report.as_uri())
        broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0 and page.evaluate("document.images.length") >= 5
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
