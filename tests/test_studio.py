"""The dream studio: the server on an ephemeral localhost port, the WebSocket protocol (including bad
messages, which must never take the server down), recording into a dataset, dreams seeded from a
dataset, the CLI, and the page itself driven by Debian's Chromium through Playwright (skipped when
either is missing).

Every server runs on a background thread with a lifetime, so a failing test cannot leave it running.
"""

from __future__ import annotations

import asyncio
import json
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from reverie import Dreamer
from reverie.cli import _parser, main

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


@pytest.fixture(scope="module", autouse=True)
def aiohttp() -> None:
    """The studio tests skip without aiohttp."""
    pytest.importorskip("aiohttp", reason="the studio's server needs aiohttp: pip install 'reverie[studio]'")


@pytest.fixture(scope="module")
def agent(pixel_run: Path) -> Dreamer:
    return Dreamer.load(pixel_run)


@pytest.fixture(scope="module")
def vector_agent(vector_run: Path) -> Dreamer:
    """The vector CartPole run (a model that reads what ``reverie.data.record`` stores)."""
    return Dreamer.load(vector_run)


@contextmanager
def studio_url(agent: Dreamer, record_dir: Path, lifetime: float = 60.0, **kw: Any) -> Iterator[str]:
    from reverie.studio import Studio, serve_in_thread

    with serve_in_thread(Studio(agent, record_dir=record_dir, seed=0, **kw), port=0, lifetime=lifetime) as url:
        yield url


def exchange(url: str, *messages: Any, origin: str | None = None) -> list[dict[str, Any]]:
    """Connect, read ``info``, then send each message (str as is, dict as JSON, bytes as binary) and read
    the replies until a ``pong`` sent after each one; returns info and every reply, in order."""
    import aiohttp

    async def run() -> list[dict[str, Any]]:
        headers = {"Origin": origin} if origin else None
        async with aiohttp.ClientSession() as http, http.ws_connect(url + "ws", headers=headers) as ws:
            replies = [await ws.receive_json(timeout=30)]
            for message in messages:
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_str(message if isinstance(message, str) else json.dumps(message))
                await ws.send_str('{"type": "ping"}')
                while (reply := await ws.receive_json(timeout=30))["type"] != "pong":
                    replies.append(reply)
            return replies

    return asyncio.run(run())


# --------------------------------------------------------------------------------------- server and protocol
def test_server_binds_localhost_serves_the_page_and_stops_by_itself(agent: Dreamer, tmp_path: Path) -> None:
    from reverie.studio import Studio, serve_in_thread

    with serve_in_thread(Studio(agent, record_dir=tmp_path), port=0, lifetime=1.5) as url:
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":8765/")
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.headers["Content-Type"].startswith("text/html")
            assert "Content-Security-Policy" in page.headers
            html = page.read().decode()
        assert 'src="/static/studio.js"' in html and "http" not in html.split("<body>")[1]
        with urllib.request.urlopen(url + "static/studio.js", timeout=10) as script:
            assert b"new WebSocket" in script.read()
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "static/secrets.txt", timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # past its lifetime the server stops on its own
            try:
                urllib.request.urlopen(url, timeout=1).close()
            except urllib.error.URLError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the studio kept serving past its lifetime")


def test_protocol_reset_step_and_bad_messages(agent: Dreamer, tmp_path: Path) -> None:
    bad = [
        "{not json",
        b"\x00binary",
        {"type": "jump"},
        ["not", "an", "object"],
        {"type": "step", "action": 0},  # before any reset
    ]
    after_reset = [
        {"type": "step", "action": 7},
        {"type": "step", "action": -1},
        {"type": "step", "action": "left"},
        {"type": "step"},
        {"type": "options", "real": "yes"},
        {"type": "options", "volume": 3},
        {"type": "reset", "seed": "x"},
        "x" * 20_000,
    ]
    with studio_url(agent, tmp_path) as url:
        replies = exchange(url, *bad, {"type": "reset", "seed": 1}, *after_reset, {"type": "step", "action": 1})
        info, rest = replies[0], replies[1:]
        assert info["type"] == "info" and info["action"] == {"discrete": True, "n": 2, "names": ["0", "1"]}
        assert info["obs"] == {"image": {"shape": [64, 64, 3], "image": True}} and info["has_real_env"]
        assert info["start"] == {"source": "env", "env": "CartPole-v1"}
        kinds = [r["type"] for r in rest]
        assert kinds == ["error"] * len(bad) + ["frame"] + ["error"] * len(after_reset) + ["frame"], kinds
        errors = [r["message"] for r in rest if r["type"] == "error"]
        assert "not valid JSON" in errors[0] and "binary" in errors[1] and "Unknown message type" in errors[2]
        assert "out of range" in errors[6] and "limit" in errors[-1]
        reset, step = rest[len(bad)], rest[-1]
        assert reset["step"] == 0 and reset["frames"]["image"].startswith("data:image/png;base64,")
        assert reset["start"] == step["start"] == {"source": "env", "context": 5}
        assert step["step"] == 1 and step["action"] == 1 and 0.0 <= step["cont"] <= 1.0
        assert isinstance(step["reward"], float) and step["uncertainty"] is None and step["real"] is None
        # The server is still alive and serves a new connection.
        again = exchange(url, {"type": "reset"}, {"type": "step", "agent": True})
        assert [r["type"] for r in again] == ["info", "frame", "frame"]


def test_internal_errors_and_foreign_origins(agent: Dreamer, tmp_path: Path, monkeypatch) -> None:
    import aiohttp

    def broken(*args: Any) -> None:
        raise RuntimeError("model exploded")

    with studio_url(agent, tmp_path) as url:
        with pytest.raises(aiohttp.WSServerHandshakeError, match="403"):
            exchange(url, origin="http://evil.example")
        monkeypatch.setattr("reverie.dream.DreamEnv.step", broken)
        replies = exchange(url, {"type": "reset"}, {"type": "step", "action": 0})
        assert replies[-1] == {"type": "error", "message": "Internal error (RuntimeError: model exploded)"}
        monkeypatch.undo()
        assert exchange(url, {"type": "reset"}, {"type": "step", "action": 0})[-1]["type"] == "frame"


def test_real_env_side_by_side_and_recording(agent: Dreamer, tmp_path: Path) -> None:
    from reverie.data import Dataset

    steps = [{"type": "step", "action": i % 2} for i in range(4)]
    with studio_url(agent, tmp_path / "takes") as url:
        replies = exchange(
            url,
            {"type": "options", "record": True, "real": True},  # real on: a fresh dream from real frames
            *steps,
            {"type": "reset"},
            *steps,
            {"type": "options", "record": False},
        )
    frames = [r for r in replies if r["type"] == "frame"]
    assert len(frames) == 10 and all(f["recording"] and f["real"] is not None for f in frames)
    assert frames[1]["real"]["frames"]["image"].startswith("data:image/png") and frames[1]["real_reward"] == 1.0
    saved = replies[-1]
    assert saved["type"] == "saved" and saved["episodes"] == 2
    dataset = Dataset(saved["path"])
    assert len(dataset) == 2 and dataset.num_steps == 10 and dataset.env_id == "CartPole-v1"
    episode = dataset.episode(0)
    assert episode["image"].shape == (5, 64, 64, 3) and list(episode["action"]) == [0, 0, 1, 0, 1]
    assert episode["reward"][0] == 0.0 and episode["is_first"][0] and episode["is_last"][-1]
    assert episode["reward"][1] == pytest.approx(frames[1]["reward"], rel=1e-6)


def test_cli_studio_serves_until_sigterm_and_saves_the_take(pixel_run: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "reverie.cli", "studio", "--ckpt", str(pixel_run), "--port", "0"]
    command += ["--record-to", str(tmp_path)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = None, time.monotonic() + 180  # a loaded machine starts python slowly
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stderr], [], [], 1.0)[0]:
                found = re.search(r"http://127\.0\.0\.1:\d+/", proc.stderr.readline())
                url = found and found.group(0)
        assert url, f"no URL logged; exit code {proc.poll()}"
        replies = exchange(url, {"type": "options", "record": True}, {"type": "reset"}, {"type": "step", "action": 1})
        assert [r["type"] for r in replies] == ["info", "frame", "frame"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    (take,) = tmp_path.glob("take-*")
    assert (take / "dataset.json").exists()
    from reverie.data import Dataset

    assert Dataset(take).info["creation"]["start"] == {"source": "env", "env": "CartPole-v1"}


def test_studio_starts_from_a_dataset(vector_agent: Dreamer, cartpole_data: Path, tmp_path: Path) -> None:
    from reverie.data import Dataset

    with studio_url(vector_agent, tmp_path / "takes", start=str(cartpole_data)) as url:
        replies = exchange(
            url,
            {"type": "options", "record": True},
            {"type": "reset", "episode": 2, "start": 3},
            {"type": "step", "action": 1},
            {"type": "reset", "episode": 9},  # out of range: an error, and the dream goes on
            {"type": "reset", "start": "3"},
            {"type": "reset", "episode": 1.5},
            {"type": "step", "action": 0},
            {"type": "reset"},  # the page's Reset button: a new dream from the same dataset
            {"type": "options", "real": True},  # the real env beside it, from its own reset
            {"type": "step", "action": 0},
            {"type": "options", "record": False},
        )
    info, rest = replies[0], replies[1:]
    assert info["start"] == {
        "source": "dataset",
        "path": str(cartpole_data),
        "env": "CartPole-v1",
        "episodes": 4,
        "steps": Dataset(cartpole_data).num_steps,
    }
    kinds = [r["type"] for r in rest]
    assert kinds == ["frame", "frame", "error", "error", "error", "frame", "frame", "frame", "frame", "saved"], kinds
    frames = [r for r in rest if r["type"] == "frame"]
    assert frames[0]["start"] == {"source": "dataset", "episode": 2, "start": 3, "context": 5}
    assert frames[0]["step"] == 0 and frames[0]["vectors"]["vector"] and frames[0]["real"] is None
    assert frames[1]["start"] == frames[0]["start"] and frames[2]["step"] == 2  # the errors changed nothing
    errors = [r["message"] for r in rest if r["type"] == "error"]
    assert "out of range" in errors[0] and "non-negative integer" in errors[1] and "non-negative" in errors[2]
    for frame in frames[3:]:
        assert frame["start"]["source"] == "dataset"
    assert frames[4]["real"] is not None and frames[4]["step"] == 0 and frames[5]["real"] is not None
    take = Dataset(rest[-1]["path"])
    assert take.info["creation"]["start"]["source"] == "dataset"
    assert take.episode(0)["vector"].shape == (3, 4)  # the dream's own frames, from the dataset's start


def test_studio_refuses_a_dataset_of_another_env(
    pixel_run: Path, agent: Dreamer, cartpole_data: Path, tmp_path: Path, capsys, one_line
) -> None:
    from reverie.studio import Studio

    with pytest.raises(ValueError, match="no observation key 'image'"):
        Studio(agent, record_dir=tmp_path, start=cartpole_data)
    assert main(["studio", "--ckpt", str(pixel_run), "--start", str(cartpole_data), "--port", "0"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    one_line(message, "reverie: error:", str(cartpole_data), "CartPole-v1", "image (64, 64, 3) uint8")
    assert main(["studio", "--ckpt", str(pixel_run), "--start", str(tmp_path / "missing")]) == 2
    one_line(capsys.readouterr().err.strip().splitlines()[-1], "reverie: error:", "does not exist")
    with studio_url(agent, tmp_path) as url:  # an env start takes no episode or start
        replies = exchange(url, {"type": "reset", "episode": 0}, {"type": "reset", "episode": None})
    assert "--start DATASET" in replies[1]["message"] and replies[2]["type"] == "frame"


def test_cli_subcommands_parse() -> None:
    args = _parser().parse_args(["studio", "--ckpt", "runs/x"])
    assert (args.host, args.port, args.record_to, args.context) == ("127.0.0.1", 8765, "studio_recordings", 5)
    assert args.start == "env" and args.data is None
    args = _parser().parse_args(["studio", "--ckpt", "runs/x", "--start", "data/cp", "--record-to", "takes"])
    assert (args.start, args.record_to) == ("data/cp", "takes")
    assert _parser().parse_args(["studio", "--ckpt", "runs/x", "--data", "old"]).data == "old"  # deprecated alias
    args = _parser().parse_args(["report", "runs/x", "--out", "r.html"])
    assert (args.run_dir, args.out) == ("runs/x", "r.html")


# --------------------------------------------------------------------------------------- the page in Chromium
def step_text(page: Any) -> int:
    return int(page.text_content("#step"))


def test_browser_plays_50_steps_with_the_keyboard(agent: Dreamer, tmp_path: Path, chromium_page) -> None:
    with chromium_page() as page, studio_url(agent, tmp_path, lifetime=120) as url:
        page.goto(url)
        page.wait_for_function("document.querySelector('#dream-screen img')?.src.startsWith('data:image/png')")
        first = page.get_attribute("#dream-screen img", "src")
        assert "0-9" in page.text_content("#keys") and page.text_content("#env") == "CartPole-v1"
        assert page.text_content("#start") == "start: real env (5 frames, random actions)"
        page.check("#real")
        page.wait_for_selector("#real-view:not([hidden])")
        played = 0
        while played < 50:
            if page.locator("#dream-view.over").count():  # the model predicted the end: Esc starts a new dream
                page.keyboard.press("Escape")
                page.wait_for_function("document.getElementById('step').textContent === '0'")
            before = step_text(page)
            page.keyboard.press(str(played % 2))
            page.wait_for_function(f"document.getElementById('step').textContent === '{before + 1}'")
            played += 1
            if played == 1:  # the real env stepped with the same action (until its own episode ends)
                assert page.text_content("#real-reward") == "1.000"
        assert page.get_attribute("#dream-screen img", "src") != first
        assert 0.0 <= float(page.text_content("#cont-text")) <= 1.0
        page.check("#agent")  # the policy plays on its own
        start = step_text(page)
        page.wait_for_function(f"Number(document.getElementById('step').textContent) !== {start}", timeout=10_000)
        page.uncheck("#agent")
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / "studio.png"))
    assert (IMAGES / "studio.png").stat().st_size < 200_000


def test_browser_header_shows_the_dataset_start(
    vector_agent: Dreamer, cartpole_data: Path, tmp_path: Path, chromium_page
) -> None:
    with chromium_page() as page, studio_url(vector_agent, tmp_path, start=cartpole_data) as url:
        page.goto(url)
        # before the first dream the header names the dataset ("(4 episodes)"); then the episode it started from
        page.wait_for_function("/episode \\d/.test(document.getElementById('start').textContent)")
        text = page.text_content("#start")
        assert re.fullmatch(r"start: dataset data-cartpole, episode \d, steps \d+-\d+", text), text
        assert page.get_attribute("#start", "title") == str(cartpole_data)
        page.keyboard.press("1")
        page.wait_for_function("document.getElementById('step').textContent === '1'")
        page.click("#reset")  # Reset keeps the dataset start
        page.wait_for_function("document.getElementById('step').textContent === '0'")
        assert page.text_content("#start").startswith("start: dataset data-cartpole, episode ")
