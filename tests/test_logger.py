"""Logger, outputs, progress bar and plots."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import rich.console
import torch

import reverie.logger
from reverie.config import RunConfig
from reverie.logger import (
    JSONLOutput,
    Logger,
    Output,
    Progress,
    TensorBoardOutput,
    TerminalOutput,
    VideoOutput,
    make_logger,
    openloop_video,
    read_jsonl,
)
from reverie.plots import plot_curves, plot_metrics


class Recorder(Output):
    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float], dict[str, np.ndarray]]] = []

    def write(self, step: int, scalars: dict[str, float], videos: dict[str, np.ndarray]) -> None:
        self.calls.append((step, scalars, videos))


def test_jsonl_averages_per_write(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    logger = Logger([JSONLOutput(path)])
    logger.scalar("train/loss/dyn", 1.0)
    logger.scalar("train/loss/dyn", 2.0)
    logger.scalars({"train/loss/dyn": 6.0, "fps/env": 100})
    logger.write(step=10)
    logger.scalar("train/loss/dyn", 5.0)
    logger.write(step=20)
    logger.write(step=30)  # nothing pending: no row
    rows = read_jsonl(path)
    assert [r["step"] for r in rows] == [10, 20]
    assert rows[0]["train/loss/dyn"] == pytest.approx(3.0)
    assert rows[0]["fps/env"] == 100.0
    assert rows[1] == {"step": 20, "time": rows[1]["time"], "train/loss/dyn": 5.0}


def test_resume_appends_to_same_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    first = Logger([JSONLOutput(path)])
    first.scalar("episode/return", 1.0)
    first.write(100)
    first.close()
    with path.open("a") as f:
        f.write('{"step": 150, "episode/ret')  # a crash mid-write
    second = Logger([JSONLOutput(path)], step=200)
    second.scalar("episode/return", 2.0)
    second.write()
    rows = read_jsonl(path)
    assert [(r["step"], r["episode/return"]) for r in rows] == [(100, 1.0), (200, 2.0)]


def test_add_accepts_tensors_arrays_and_routes_videos() -> None:
    rec = Recorder()
    logger = Logger([rec])
    weight = torch.ones((), requires_grad=True)
    frames = np.zeros((3, 4, 4, 3), np.uint8)
    logger.add(
        {
            "train/loss/rep": weight * 2,
            "train/grad": torch.tensor([4.0]),
            "episode/length": np.int64(7),
            "episode/return": np.array(1.5, np.float32),
            "fps/env": 3,
            "report/openloop": frames,
        }
    )
    logger.write(5)
    step, scalars, videos = rec.calls[0]
    assert step == 5
    assert scalars == {
        "train/loss/rep": 2.0,
        "train/grad": 4.0,
        "episode/length": 7.0,
        "episode/return": 1.5,
        "fps/env": 3.0,
    }
    assert list(videos) == ["report/openloop"]
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        logger.add({"train/loss/rep": torch.ones(2)})
    with pytest.raises(ValueError, match="namespaced key"):
        logger.scalar("step", 1.0)


def test_tensorboard_event_file_and_video(tmp_path: Path) -> None:
    out = TensorBoardOutput(tmp_path)
    logger = Logger([out])
    logger.scalar("train/loss/dyn", 1.0)
    logger.video("report/openloop", np.random.default_rng(0).random((4, 8, 8, 3)))
    logger.write(3)
    logger.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))
    video = next((tmp_path / "videos").glob("report_openloop_3.*"))
    assert iio.imread(video, index=None).shape[0] == 4


@pytest.mark.parametrize("ffmpeg", [True, False])
def test_video_output_frame_count_and_odd_sides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ffmpeg: bool) -> None:
    if not ffmpeg:
        monkeypatch.setattr(reverie.logger, "_has_ffmpeg", lambda: False)
    elif not reverie.logger._has_ffmpeg():
        pytest.skip("imageio-ffmpeg (a dependency of reverie) is not installed here")
    frames = np.random.default_rng(0).integers(0, 256, (6, 9, 11, 3), dtype=np.uint8)
    logger = Logger([VideoOutput(tmp_path / "videos")])
    logger.video("report/openloop", frames)
    logger.write(42)
    (video,) = (tmp_path / "videos").iterdir()
    assert video.name == "report_openloop_42." + ("mp4" if ffmpeg else "gif")
    read = iio.imread(video, index=None)
    assert read.shape[0] == 6
    assert read.shape[1] >= 9 and read.shape[2] >= 11


def test_terminal_output_logs_selected_keys(caplog: pytest.LogCaptureFixture) -> None:
    logger = Logger([TerminalOutput(["episode/*", "fps/env"])])
    logger.scalars({"train/loss/dyn": 1.0, "fps/env": 512.0, "episode/return": 21.5})
    with caplog.at_level(logging.INFO, logger="reverie"):
        logger.write(12000)
    assert caplog.messages == ["step 12000 | episode/return 21.5 | fps/env 512"]


def test_make_logger_outputs(tmp_path: Path) -> None:
    logger = make_logger(str(tmp_path), RunConfig(tensorboard=False))
    logger.scalar("episode/return", 1.0)
    logger.video("report/openloop", np.zeros((2, 4, 4, 3), np.uint8))
    logger.write(1)
    logger.close()
    assert read_jsonl(tmp_path / "metrics.jsonl")[0]["episode/return"] == 1.0
    assert len(list((tmp_path / "videos").iterdir())) == 1
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_openloop_video_shape_and_error_row() -> None:
    B, T, H, W, C = 2, 3, 4, 5, 3
    truth = np.zeros((B, T, H, W, C), np.uint8)
    model = np.full((B, T, H, W, C), 1.0, np.float32)
    model[1] = 0.0  # second column predicts exactly
    video = openloop_video(truth, model)
    assert video.shape == (T, 3 * H, B * W, C) and video.dtype == np.uint8
    assert (video[:, :H] == 0).all()  # truth row
    assert (video[:, H : 2 * H, :W] == 255).all()  # model row, first column
    assert (video[:, 2 * H :, :W] == 255).all()  # predicts too much: bright
    assert (video[:, 2 * H :, W:] == 128).all()  # exact: grey
    under = openloop_video(np.full((1, T, H, W, C), 255, np.uint8), np.zeros((1, T, H, W, C)))
    assert (under[:, 2 * H :] == 0).all()  # predicts too little: dark
    with pytest.raises(ValueError, match="shape"):
        openloop_video(truth, model[:1])


def test_progress_disabled_is_silent(capfd: pytest.CaptureFixture[str]) -> None:
    for enabled in (False, True):  # True: stdout is captured, so not a terminal
        with Progress(100, enabled=enabled, description="train") as bar:
            bar.update(step=50, updates=10, last_return=3.0)
        assert not bar.enabled
    assert capfd.readouterr() == ("", "")


def test_progress_draws_on_terminal() -> None:
    buffer = io.StringIO()
    console = rich.console.Console(file=buffer, force_terminal=True, width=120)
    with Progress(100, enabled=True, description="train", console=console) as bar:
        bar.update(step=50, updates=10, last_return=3.0)
        bar.update(step=60, updates=20, last_return=4.25)
    text = buffer.getvalue()
    assert "60/100" in text and "return 4.25" in text and "upd/s" in text


def test_plots_written(tmp_path: Path) -> None:
    curve = plot_curves(
        {"seed 0": [(0, 1.0), (10, 5.0)], "seed 1": [(0, 2.0), (10, 4.0)]},
        tmp_path / "plots" / "curve.png",
        "env steps",
        "return",
        "test",
        threshold=4.5,
    )
    path = tmp_path / "metrics.jsonl"
    logger = Logger([JSONLOutput(path)])
    for step in range(3):
        logger.scalars({"train/loss/dyn": 1.0 / (step + 1), "train/loss/rep": 0.5, "fps/env": 9})
        logger.write(step)
    losses = plot_metrics(path, ["train/loss/*"], tmp_path / "losses.png")
    for png in (curve, losses):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="fps/env"):
        plot_metrics(path, ["eval/*"], tmp_path / "none.png")
