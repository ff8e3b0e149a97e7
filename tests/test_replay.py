"""Tests of the chunked, disk-backed sequence replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reverie.replay import Replay, ReplayError


def make_step(t: int, stream: int = 0, first: bool = False, last: bool = False) -> dict[str, Any]:
    """One step whose ``step`` key counts time, so that windows can be checked for contiguity."""
    return {
        "step": np.int64(t),
        "stream": np.int64(stream),
        "obs": np.full(3, t, np.float32),
        "reward": np.float32(t),
        "is_first": first,
        "is_last": last,
        "is_terminal": False,
        "log/info": 1.0,
    }


def fill(replay: Replay, start: int, stop: int, stream: int = 0, episode: int = 0) -> None:
    """Add steps ``start..stop-1``; episodes of ``episode`` steps begin at multiples of it (0: none)."""
    for t in range(start, stop):
        first = episode > 0 and t % episode == 0
        last = episode > 0 and t % episode == episode - 1
        replay.add(make_step(t, stream, first, last), stream=stream)


def content(replay: Replay) -> np.ndarray:
    """All ``step`` values of a single-stream replay, oldest first (one window spanning everything)."""
    return replay.sample(1, len(replay))["step"][0]


def chunk_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.npz"))


def test_add_sample_shapes_and_contiguity() -> None:
    replay = Replay(None, chunk=16, seed=3)
    for t in range(200):
        for s in range(3):
            replay.add(make_step(1000 * s + t, s, first=t % 50 == 0), stream=s)
    assert len(replay) == 600 and replay.num_episodes == 12
    batch = replay.sample(32, 40)  # 40 > chunk: every window crosses chunk boundaries
    assert batch["obs"].shape == (32, 40, 3) and batch["obs"].dtype == np.float32
    assert batch["step"].shape == (32, 40) and batch["is_first"].dtype == np.bool_
    assert set(batch) == {"step", "stream", "obs", "reward", "is_first", "is_last", "is_terminal"}
    assert (np.diff(batch["step"], axis=1) == 1).all()
    assert (batch["stream"] == batch["stream"][:, :1]).all(), "a window mixed streams"
    assert (batch["step"] // 1000 == batch["stream"]).all()
    np.testing.assert_array_equal(batch["obs"][..., 0], batch["step"])
    assert len(np.unique(batch["stream"][:, 0])) > 1


def test_sample_needs_a_long_enough_stream() -> None:
    replay = Replay(None, chunk=4)
    with pytest.raises(ValueError, match="at least 5 steps"):
        replay.sample(2, 5)
    fill(replay, 0, 4, stream=0)
    fill(replay, 0, 4, stream=1)
    with pytest.raises(ValueError, match="longest has 4"):
        replay.sample(2, 5)
    fill(replay, 4, 5, stream=1)
    assert (replay.sample(8, 5)["stream"] == 1).all()


def test_log_keys_dropped(tmp_path: Path) -> None:
    replay = Replay(tmp_path, chunk=5)
    fill(replay, 0, 5)
    assert "log/info" not in replay.sample(1, 5)
    with np.load(tmp_path / chunk_files(tmp_path)[0]) as npz:
        assert sorted(npz.files) == sorted(k for k in make_step(0) if not k.startswith("log/"))


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("obs", np.zeros(4, np.float32), r"'obs'.*expected shape \(3,\).*got shape \(4,\)"),
        ("obs", np.zeros(3, np.float64), r"'obs'.*dtype float32.*got .*dtype float64"),
        ("step", np.float32(1), r"'step'.*dtype int64.*got .*dtype float32"),
        ("step", 1.5, r"'step'.*dtype int64.*got .*dtype float64"),
        ("reward", np.zeros(2, np.float32), r"'reward'.*expected shape \(\).*got shape \(2,\)"),
        ("extra", 1, r"unknown key 'extra'"),
    ],
)
def test_key_mismatch_raises_and_leaves_replay_usable(key: str, value: Any, pattern: str) -> None:
    replay = Replay(None, chunk=2)
    fill(replay, 0, 2)  # the next add opens a new chunk: a failed add must not leave it empty
    step = make_step(2)
    step[key] = value
    with pytest.raises(ValueError, match=pattern):
        replay.add(step)
    fill(replay, 2, 4)
    np.testing.assert_array_equal(content(replay), np.arange(4))


def test_missing_key_and_python_scalars() -> None:
    replay = Replay(None)
    fill(replay, 0, 1)
    step = make_step(1)
    del step["is_last"]
    with pytest.raises(ValueError, match=r"lacks keys \['is_last'\]"):
        replay.add(step)
    step = make_step(1)
    step["reward"] = 2.5  # a Python float fits the float32 reward
    replay.add(step)
    assert replay.sample(1, 2)["reward"].dtype == np.float32
    with pytest.raises(ValueError, match="'is_first'"):
        replay.add({**make_step(0), "is_first": 1}, stream=5)  # an int is no bool
    assert replay.stats()["chunks"] == 1 and replay.discard_open_episode(5) == 0
    assert len(replay) == 2


def test_chunk_files_written_when_chunk_fills(tmp_path: Path) -> None:
    replay = Replay(tmp_path, chunk=10)
    fill(replay, 0, 9)
    assert chunk_files(tmp_path) == []
    fill(replay, 9, 25)
    assert chunk_files(tmp_path) == ["000-00000000.npz", "000-00000001.npz"]
    with np.load(tmp_path / "000-00000001.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["step"], np.arange(10, 20))
        assert npz["obs"].shape == (10, 3)
    assert not list(tmp_path.glob("*.tmp"))
    stats = replay.stats()
    assert stats["steps"] == 25 and stats["chunks"] == 3 and stats["streams"] == 1
    assert stats["bytes"] == sum(p.stat().st_size for p in tmp_path.glob("*.npz")) > 0


def test_save_and_reload_reproduce_content_and_sampling(tmp_path: Path) -> None:
    replay = Replay(tmp_path, chunk=16, recent_frac=0.5, seed=7)
    for s, n in enumerate([40, 23, 70]):  # partial chunks in every stream
        fill(replay, 1000 * s, 1000 * s + n, stream=s, episode=10)
    replay.save()
    loaded = Replay(tmp_path, chunk=16, recent_frac=0.5, seed=7)  # never added to: an offline dataset
    assert len(loaded) == len(replay) == 133
    assert loaded.num_episodes == replay.num_episodes
    assert loaded.stats() == replay.stats()
    for _ in range(3):
        a, b = replay.sample(8, 12), loaded.sample(8, 12)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
            assert a[key].dtype == b[key].dtype


def test_no_duplicates_after_repeated_saves_and_resume(tmp_path: Path) -> None:
    replay = Replay(tmp_path, chunk=10)
    fill(replay, 0, 7)
    replay.save()
    fill(replay, 7, 13)  # fills the saved partial chunk and starts another
    replay.save()
    replay.save()
    fill(replay, 13, 15)  # not saved: lost on reload, by design
    loaded = Replay(tmp_path, chunk=10)
    np.testing.assert_array_equal(content(loaded), np.arange(13))
    fill(loaded, 13, 31)  # the resumed run continues the open chunk
    loaded.save()
    again = Replay(tmp_path, chunk=10)
    np.testing.assert_array_equal(content(again), np.arange(31))
    assert chunk_files(tmp_path) == [f"000-{i:08d}.npz" for i in range(4)]


def test_capacity_evicts_oldest_chunks_and_files(tmp_path: Path) -> None:
    replay = Replay(tmp_path, capacity=30, chunk=10)
    fill(replay, 0, 55)
    assert len(replay) == 35  # 3 full chunks plus the open one
    np.testing.assert_array_equal(content(replay), np.arange(20, 55))
    assert chunk_files(tmp_path) == ["000-00000002.npz", "000-00000003.npz", "000-00000004.npz"]
    replay.save()
    assert len(Replay(tmp_path, capacity=100, chunk=10)) == 35


def test_capacity_evicts_oldest_across_streams() -> None:
    replay = Replay(None, capacity=20, chunk=5)
    fill(replay, 0, 10, stream=0)  # the two oldest chunks
    fill(replay, 100, 120, stream=1)
    assert len(replay) == 20
    assert replay.stats()["streams"] == 1
    assert (replay.sample(4, 20)["stream"] == 1).all()


def test_discard_open_episode_across_written_chunks(tmp_path: Path) -> None:
    replay = Replay(tmp_path, chunk=10)
    fill(replay, 0, 28, episode=15)  # episode 2 starts at 15 in a written chunk and is unfinished
    fill(replay, 0, 12, stream=1, episode=5)
    replay.save()
    assert replay.discard_open_episode(0) == 13
    assert len(replay) == 15 + 12 and replay.num_episodes == 1 + 3
    assert sorted(p.name for p in tmp_path.glob("000-*")) == ["000-00000000.npz", "000-00000001.npz"]
    loaded = Replay(tmp_path, chunk=10)  # disk agrees with memory without another save()
    assert len(loaded) == 27
    fill(replay, 15, 40, episode=15)
    replay.save()
    loaded = Replay(tmp_path, chunk=10)
    assert len(loaded) == len(replay) == 52
    batch = loaded.sample(64, 40)
    np.testing.assert_array_equal(batch["step"], np.broadcast_to(np.arange(40), (64, 40)))


def test_discard_open_episode_edge_cases(tmp_path: Path) -> None:
    replay = Replay(tmp_path, chunk=10)
    assert replay.discard_open_episode(0) == 0  # empty stream
    fill(replay, 0, 20, episode=10)
    assert replay.discard_open_episode(0) == 0  # the last episode is finished
    fill(replay, 20, 23, episode=10)  # episode starting exactly at a chunk start
    assert replay.discard_open_episode(0) == 3
    assert chunk_files(tmp_path) == ["000-00000000.npz", "000-00000001.npz"]
    fill(replay, 100, 104, stream=2)  # a stream without any is_first: all of it is open
    replay.save()
    assert replay.discard_open_episode(2) == 4
    assert len(replay) == 20 and chunk_files(tmp_path) == ["000-00000000.npz", "000-00000001.npz"]
    np.testing.assert_array_equal(content(Replay(tmp_path, chunk=10)), np.arange(20))


def test_resume_with_another_chunk_size_then_discard(tmp_path: Path) -> None:
    replay = Replay(tmp_path, chunk=2)
    fill(replay, 0, 3, episode=2)  # chunks [0, 1] [2]; the episode opened at 2 is unfinished
    replay.save()
    loaded = Replay(tmp_path, chunk=5)
    assert loaded.discard_open_episode(0) == 1  # removes the newest chunk, reopens the short older one
    fill(loaded, 2, 9)
    loaded.save()
    np.testing.assert_array_equal(content(Replay(tmp_path, chunk=5)), np.arange(9))


def test_loading_over_capacity_deletes_nothing_until_eviction(tmp_path: Path) -> None:
    fill(Replay(tmp_path, chunk=10), 0, 40)
    offline = Replay(tmp_path, capacity=15, chunk=10)  # newest chunks first, up to capacity
    np.testing.assert_array_equal(content(offline), np.arange(20, 40))
    assert len(chunk_files(tmp_path)) == 4
    fill(offline, 40, 50)  # a growing replay evicts: the unloaded older files go first
    assert chunk_files(tmp_path) == ["000-00000004.npz"]
    np.testing.assert_array_equal(content(offline), np.arange(40, 50))


def test_any_key_name_round_trips(tmp_path: Path) -> None:
    replay = Replay(tmp_path, chunk=2)
    for t in range(2):
        replay.add({"file": np.int64(t), "allow_pickle": np.zeros((2, 2), np.uint8), "a/b": t > 0})
    loaded = Replay(tmp_path, chunk=2).sample(1, 2)
    assert loaded["file"].tolist() == [[0, 1]] and loaded["a/b"].tolist() == [[False, True]]
    assert loaded["allow_pickle"].shape == (1, 2, 2, 2)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_error_names_the_file(tmp_path: Path, damage: str) -> None:
    replay = Replay(tmp_path, chunk=10)
    fill(replay, 0, 20)
    path = tmp_path / "000-00000001.npz"
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"x" * 100, "empty": b""}[damage])
    with pytest.raises(ReplayError, match=r"000-00000001\.npz.*Delete") as info:
        Replay(tmp_path, chunk=10)
    assert isinstance(info.value, ValueError)


def test_mismatched_file_error_names_the_file(tmp_path: Path) -> None:
    fill(Replay(tmp_path, chunk=5), 0, 5)
    other = Replay(tmp_path / "other", chunk=5)
    other.add({"x": np.zeros(2, np.float32)})
    other.save()
    (tmp_path / "other" / "000-00000000.npz").rename(tmp_path / "001-00000009.npz")
    with pytest.raises(ReplayError, match=r"000-00000000\.npz has keys.* but .*001-00000009\.npz has"):
        Replay(tmp_path, chunk=5)


def test_leftover_temp_file_ignored_and_removed(tmp_path: Path) -> None:
    replay = Replay(tmp_path, chunk=10)
    fill(replay, 0, 15)
    replay.save()
    leftover = tmp_path / "000-00000002.npz.tmp"
    leftover.write_bytes(b"half a write")
    (tmp_path / "notes.txt.tmp").write_text("not a chunk: left alone")
    loaded = Replay(tmp_path, chunk=10)
    np.testing.assert_array_equal(content(loaded), np.arange(15))
    assert not leftover.exists() and (tmp_path / "notes.txt.tmp").exists()


def test_recent_frac_one_samples_only_newest_quarter() -> None:
    replay = Replay(None, chunk=32, recent_frac=1.0)
    fill(replay, 0, 400, stream=0)
    fill(replay, 1000, 1100, stream=1)
    ends = np.concatenate([replay.sample(16, 10)["step"][:, -1] for _ in range(50)])
    newest = np.where(ends >= 1000, ends >= 1100 - 25, ends >= 400 - 100)
    assert newest.all(), "a window ended outside the newest quarter of its stream"
    assert np.isin([399, 1099], ends).all()


def test_recent_frac_half_mixes_recent_and_uniform() -> None:
    replay = Replay(None, chunk=64, recent_frac=0.5, seed=1)
    fill(replay, 0, 4000)
    ends = np.stack([replay.sample(8, 16)["step"][:, -1] for _ in range(100)])  # (draws, B)
    assert (ends[:, :4] >= 3000).all()
    assert (ends[:, 4:] < 3000).mean() > 0.5


def test_equal_seeds_sample_identically() -> None:
    replays = [Replay(None, chunk=8, seed=s) for s in (5, 5, 6)]
    for replay in replays:
        for s in range(3):
            fill(replay, 100 * s, 100 * s + 50, stream=s, episode=7)
    a, b, c = (r.sample(16, 12) for r in replays)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["step"], c["step"])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="recent_frac"):
        Replay(None, recent_frac=1.5)
    with pytest.raises(ValueError, match="capacity"):
        Replay(None, capacity=0)
    replay = Replay(None)
    fill(replay, 0, 3)
    with pytest.raises(ValueError, match="batch_size"):
        replay.sample(0, 2)
