"""Tests of recorded-play datasets: the on-disk format, label dropping, recording, the CLI and Minari."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reverie.cli import main
from reverie.data import (
    POLICIES,
    Dataset,
    DatasetError,
    DatasetWriter,
    MinariMissing,
    PolicyError,
    export_minari,
    import_minari,
    label_plan,
    record,
    rewrite,
)
from reverie.data.format import spaces_to_json
from reverie.envs import Env, Space, reserved_spaces
from reverie.replay import Replay

OBS_SPACE = {
    "vector": Space(np.float32, (3,)),
    "image": Space(np.uint8, (8, 8, 3), 0, 255),
    "log/achievement_collect_wood": Space(np.int32, ()),
    **reserved_spaces(),
}
ACT_SPACE = {"action": Space(np.float32, (2,), -1.0, 1.0)}


def make_episode(length: int, seed: int, terminal: bool = True) -> dict[str, np.ndarray]:
    """A synthetic episode in the contract layout: zeros for the action and reward of step 0."""
    rng = np.random.default_rng(seed)
    action = rng.uniform(-1, 1, (length, 2)).astype(np.float32)
    action[0] = 0
    reward = rng.normal(size=length).astype(np.float32)
    reward[0] = 0
    last = np.arange(length) == length - 1
    return {
        "vector": rng.normal(size=(length, 3)).astype(np.float32),
        "image": rng.integers(0, 256, (length, 8, 8, 3), np.uint8),
        "log/achievement_collect_wood": np.cumsum(rng.integers(0, 2, length)).astype(np.int32),
        "reward": reward,
        "is_first": np.arange(length) == 0,
        "is_last": last,
        "is_terminal": last & terminal,
        "action": action,
    }


def write(folder: Path, lengths: list[int], chunk: int = 4) -> list[dict[str, np.ndarray]]:
    episodes = [make_episode(n, seed=i, terminal=i % 2 == 0) for i, n in enumerate(lengths)]
    with DatasetWriter(folder, "synthetic", OBS_SPACE, ACT_SPACE, chunk=chunk, creation={"by": "test"}) as writer:
        for episode in episodes:
            writer.add_episode(episode)
    return episodes


def test_round_trip_exact(tmp_path: Path) -> None:
    episodes = write(tmp_path / "ds", [9, 2, 4])
    ds = Dataset(tmp_path / "ds")
    assert (len(ds), ds.num_steps, ds.env_id, ds.chunk) == (3, 15, "synthetic", 4)
    assert sorted((tmp_path / "ds" / "episodes").iterdir())[0].name == "000000-0000.npz"
    assert len(list((tmp_path / "ds" / "episodes").glob("*.npz"))) == 3 + 1 + 1  # 9 steps in 3 files of <= 4
    assert spaces_to_json(ds.obs_space) == spaces_to_json(OBS_SPACE)
    assert spaces_to_json(ds.act_space) == spaces_to_json(ACT_SPACE)
    for i, want in enumerate(episodes):
        got = ds.episode(i, masks=False)
        assert set(got) == set(want)
        for key in want:
            assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key
    info = ds.episode_info(0)
    assert info["length"] == 9 and info["parts"] == 3 and info["terminal"]
    assert info["return"] == pytest.approx(float(episodes[0]["reward"].sum()))
    assert info["log"] == {"log/achievement_collect_wood": int(episodes[0]["log/achievement_collect_wood"][-1])}
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["format"] == "reverie-dataset" and meta["version"] == 1 and meta["creation"]["by"] == "test"
    assert meta["model_keys"] == ["vector", "image"] and meta["log_keys"] == ["log/achievement_collect_wood"]
    assert np.array_equal(ds.episode(-1)["vector"], episodes[-1]["vector"])


def test_streaming_reads_one_file_at_a_time(tmp_path: Path) -> None:
    episodes = write(tmp_path / "ds", [9, 2, 4], chunk=4)
    ds = Dataset(tmp_path / "ds")
    chunks = list(ds.iter_chunks())
    assert [len(c["is_first"]) for c in chunks] == [4, 4, 1, 2, 4]
    assert [bool(c["is_first"][0]) for c in chunks] == [True, False, False, True, True]
    steps = list(ds.iter_steps())
    assert len(steps) == ds.num_steps
    flat = np.concatenate([e["vector"] for e in episodes])
    assert np.array_equal(np.stack([s["vector"] for s in steps]), flat)
    assert steps[0]["image"].shape == (8, 8, 3) and steps[0]["action_mask"] == 1.0
    assert [len(e["is_first"]) for e in ds.episodes()] == [9, 2, 4]


def test_writer_refuses_bad_layouts(tmp_path: Path, one_line: Callable[..., None]) -> None:
    writer = DatasetWriter(tmp_path / "ds", "synthetic", OBS_SPACE, ACT_SPACE)
    shifted = make_episode(5, 0)
    shifted["action"][0] = 0.5  # the action taken AT step 0 instead of the one that led to it
    cases: list[tuple[dict[str, Any], str]] = [
        (shifted, "LED to step t"),
        ({k: v for k, v in make_episode(5, 0).items() if k != "reward"}, "lacks keys ['reward']"),
        ({**make_episode(5, 0), "is_first": np.ones(5, bool)}, "is_first at step 0 and nowhere else"),
        ({**make_episode(5, 0), "vector": np.zeros((5, 4), np.float32)}, "'vector' has shape (5, 4)"),
        ({**make_episode(5, 0), "image": np.zeros((5, 8, 8, 3), np.float32)}, "does not cast to uint8"),
        (make_episode(1, 0), "fewer than 2 steps"),
    ]
    for steps, needle in cases:
        with pytest.raises(DatasetError) as err:
            writer.add_episode(steps)
        one_line(str(err.value), needle, "Episode 0")
    with pytest.raises(DatasetError, match="no episodes"):
        writer.close()
    write(tmp_path / "full", [3])
    with pytest.raises(DatasetError, match="already holds a dataset"):
        DatasetWriter(tmp_path / "full", "synthetic", OBS_SPACE, ACT_SPACE)


def test_label_dropping_exact_fractions(tmp_path: Path) -> None:
    plan = label_plan(10, 0.3, seed=[5, 0])
    assert plan.sum() == 3 and np.array_equal(plan, label_plan(10, 0.3, seed=[5, 0]))
    assert label_plan(10, 0.25, seed=0).sum() == 3 and label_plan(7, 1.0, 0).all() and not label_plan(7, 0.0, 0).any()
    write(tmp_path / "full", [3] * 10)
    dropped = rewrite(tmp_path / "full", tmp_path / "part", action_frac=0.3, reward_frac=0.5, seed=5)
    flags = [dropped.episode_info(i) for i in range(10)]
    assert sum(f["has_actions"] for f in flags) == 3 and sum(f["has_rewards"] for f in flags) == 5
    assert dropped.info["label_fracs"] == {"actions": 0.3, "rewards": 0.5}
    full = Dataset(tmp_path / "full")
    for i, (a, b) in enumerate(zip(full.episodes(), dropped.episodes(), strict=True)):
        assert np.array_equal(b["action_mask"], np.full(3, float(flags[i]["has_actions"]), np.float32))
        assert np.array_equal(b["reward_mask"], np.full(3, float(flags[i]["has_rewards"]), np.float32))
        assert np.array_equal(b["action"], a["action"] if flags[i]["has_actions"] else np.zeros_like(a["action"]))
        assert np.array_equal(b["reward"], a["reward"] if flags[i]["has_rewards"] else np.zeros_like(a["reward"]))
        assert (flags[i]["return"] is None) == (not flags[i]["has_rewards"])
        assert np.array_equal(b["vector"], a["vector"])
    # The same seed picks the same episodes; dropping again only removes labels.
    again = rewrite(tmp_path / "full", tmp_path / "again", action_frac=0.3, reward_frac=0.5, seed=5)
    assert [again.episode_info(i)["has_actions"] for i in range(10)] == [f["has_actions"] for f in flags]
    fewer = rewrite(dropped, tmp_path / "fewer", action_frac=0.6, seed=1)
    kept = [fewer.episode_info(i)["has_actions"] for i in range(10)]
    assert all(f["has_actions"] for f, k in zip(flags, kept, strict=True) if k) and sum(kept) <= 3
    with pytest.raises(ValueError, match="action_frac must lie in"):
        rewrite(tmp_path / "full", tmp_path / "bad", action_frac=1.5)


def test_unfinished_or_mismatched_dataset_refused(tmp_path: Path, one_line: Callable[..., None]) -> None:
    writer = DatasetWriter(tmp_path / "half", "synthetic", OBS_SPACE, ACT_SPACE)
    writer.add_episode(make_episode(4, 0))  # never closed: a recording killed mid-way
    with pytest.raises(DatasetError) as err:
        Dataset(tmp_path / "half")
    one_line(str(err.value), str(tmp_path / "half"), "unfinished", "dataset.json", "new folder")
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset(tmp_path / "nothing")

    write(tmp_path / "ds", [9, 2])
    (tmp_path / "ds" / "episodes" / "000000-0001.npz").unlink()
    with pytest.raises(DatasetError) as err:
        Dataset(tmp_path / "ds")
    one_line(str(err.value), "incomplete", "000000-0001.npz")

    write(tmp_path / "extra", [2])
    (tmp_path / "extra" / "episodes" / "000005-0000.npz").write_bytes(b"")
    with pytest.raises(DatasetError, match="does not list"):
        Dataset(tmp_path / "extra")

    write(tmp_path / "steps", [5])
    meta = json.loads((tmp_path / "steps" / "dataset.json").read_text())
    meta["steps"] = 99
    (tmp_path / "steps" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="declares 1 episodes and 99 steps"):
        Dataset(tmp_path / "steps")


def test_corrupt_or_foreign_file_names_the_file(tmp_path: Path, one_line: Callable[..., None]) -> None:
    write(tmp_path / "ds", [6, 3])
    path = tmp_path / "ds" / "episodes" / "000001-0000.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    ds = Dataset(tmp_path / "ds")
    assert ds.episode(0)["vector"].shape == (6, 3)  # the other episodes still read
    with pytest.raises(DatasetError) as err:
        ds.episode(1)
    one_line(str(err.value), str(path), "corrupt or truncated")

    write(tmp_path / "other", [5])  # a whole file of another dataset with another length
    swapped = tmp_path / "ds" / "episodes" / "000000-0001.npz"
    swapped.write_bytes((tmp_path / "other" / "episodes" / "000000-0000.npz").read_bytes())
    with pytest.raises(DatasetError) as err:
        list(Dataset(tmp_path / "ds").iter_chunks())
    one_line(str(err.value), str(swapped), "does not belong")


def test_to_replay_samples_with_masks(tmp_path: Path) -> None:
    write(tmp_path / "full", [12] * 4)
    ds = rewrite(tmp_path / "full", tmp_path / "ds", action_frac=0.5, seed=0)
    replay = Replay(None, chunk=16, seed=0)
    assert ds.to_replay(replay) == 48 and len(replay) == 48 and replay.num_episodes == 4
    batch = replay.sample(8, 10)
    assert set(batch) == set(ds.keys) - {"log/achievement_collect_wood"} | {"action_mask", "reward_mask"}
    assert batch["action_mask"].shape == (8, 10) and batch["action_mask"].dtype == np.float32
    assert (batch["reward_mask"] == 1).all() and set(np.unique(batch["action_mask"])) <= {0.0, 1.0}
    unlabeled = batch["action_mask"] == 0
    assert not batch["action"][unlabeled].any()  # dropped actions are zeros


# ----------------------------------------------------------------- recording
class AlternatingPolicy:
    """Right, right, left, right, right, left...; remembers what it chose, to check the stored alignment."""

    def __init__(self, env: Env, seed: int) -> None:
        self.chosen: list[int] = []
        AlternatingPolicy.last = self

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        self.chosen.append(0 if len(self.chosen) % 3 == 2 else 1)
        return np.int64(self.chosen[-1])

    last: AlternatingPolicy


def test_record_action_alignment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(POLICIES, "alternate", AlternatingPolicy)
    ds = record("CartPole-v1", "alternate", 1, tmp_path / "ds", seed=0)
    ep = ds.episode(0)
    assert ep["action"][0] == 0 and ep["reward"][0] == 0 and ep["is_first"][0]
    assert np.array_equal(ep["action"][1:], AlternatingPolicy.last.chosen)  # action[t] led to step t
    # Physics agrees: pushing right (1) raises the cart velocity between step t-1 and step t.
    dv = np.diff(ep["vector"][:, 1])
    assert np.array_equal(dv > 0, ep["action"][1:] == 1)
    assert ep["is_last"][-1] and ep["is_terminal"][-1] and not ep["is_last"][:-1].any()


def test_record_random_cartpole_reproducible(tmp_path: Path) -> None:
    a = record("CartPole-v1", "random", 4, tmp_path / "a", seed=3, time_limit=20, action_frac=0.5, reward_frac=0.25)
    b = record("CartPole-v1", "random", 4, tmp_path / "b", seed=3, time_limit=20, action_frac=0.5, reward_frac=0.25)
    assert len(a) == 4 and all(a.episode_info(i)["length"] <= 21 for i in range(4))
    assert a.info["label_fracs"] == {"actions": 0.5, "rewards": 0.25}
    for x, y in zip(a.episodes(), b.episodes(), strict=True):
        assert all(np.array_equal(x[k], y[k]) for k in x)
    assert a.info["creation"]["policy"] == "random" and a.info["creation"]["seed"] == 3


@pytest.fixture(scope="module")
def crafter_ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    pytest.importorskip("crafter")
    return record("crafter", "random", 2, tmp_path_factory.mktemp("crafter") / "ds", seed=0, time_limit=50)


def test_record_crafter(crafter_ds: Dataset) -> None:
    ds = crafter_ds
    assert len(ds) == 2 and ds.num_steps == 102 and ds.env_id == "crafter"
    ep = ds.episode(1)
    assert ep["image"].shape == (51, 64, 64, 3) and ep["image"].dtype == np.uint8
    assert ep["is_last"][-1] and not ep["is_terminal"][-1]  # the time limit truncates
    assert len([k for k in ep if k.startswith("log/achievement_")]) == 22
    assert set(ds.episode_info(0)["log"]) >= {"log/achievement_collect_wood", "log/inventory_wood"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from reverie import Dreamer, make_config

    logdir = tmp_path_factory.mktemp("agent")
    overrides = ["train.prefill=32", "train.steps=40", f"run.logdir={logdir}", "run.eval_episodes=1"]
    Dreamer(make_config(["debug"], overrides)).learn()
    return logdir


def test_record_from_checkpoint(tmp_path: Path, checkpoint: Path, one_line: Callable[..., None]) -> None:
    a = record("CartPole-v1", str(checkpoint), 2, tmp_path / "a", seed=1, time_limit=30)
    b = record("CartPole-v1", str(checkpoint / "checkpoint"), 2, tmp_path / "b", seed=1, time_limit=30)
    assert len(a) == 2 and a.info["creation"]["policy"] == str(checkpoint)
    for x, y in zip(a.episodes(), b.episodes(), strict=True):
        assert np.array_equal(x["action"], y["action"])  # the state is carried and the sampling seeded
    with pytest.raises(PolicyError) as err:
        record("Pendulum-v1", str(checkpoint), 1, tmp_path / "c")
    one_line(str(err.value), "does not fit", "CartPole-v1")
    with pytest.raises(PolicyError) as err:
        record("CartPole-v1", "expert", 1, tmp_path / "d")
    one_line(str(err.value), "Unknown policy 'expert'", "CartPole-v1", "random", "checkpoint folder")


# ----------------------------------------------------------------- CLI and Minari
def test_cli_record_info_convert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    out = tmp_path / "rec"
    argv = ["data", "record", "--env", "crafter-symbolic", "--episodes", "3", "--out", str(out)]
    assert main([*argv, "--time-limit", "20", "--seed", "2", "--reward-frac", "0.34"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "dataset": str(out),
        "env": "crafter-symbolic",
        "episodes": 3,
        "steps": 63,
    }
    assert main(["data", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "episodes  3  steps 63" in text and "rewards in 33%" in text and "summary of the episodes" in text
    assert "vector" in text and "(1219,)" in text and "success/collect_wood" in text
    assert main(["data", "info", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rates = {k: v for k, v in summary["summary"].items() if k.startswith("success/")}
    assert len(rates) == 22 and 0 <= summary["summary"]["score"] <= 100  # the game's summary: Crafter's
    assert summary["label_fracs"]["rewards"] == pytest.approx(1 / 3) and summary["returns"]["min"] is not None

    assert main(["data", "convert", str(out), str(tmp_path / "fewer"), "--action-frac", "0.34"]) == 0
    assert Dataset(tmp_path / "fewer").info["label_fracs"]["actions"] == pytest.approx(1 / 3)
    assert main(["data", "convert", str(out), "rec", "--to", "minari"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["to"] == "reverie/rec-v0"
    assert main(["data", "convert", "reverie/rec-v0", str(tmp_path / "back")]) == 0
    back, orig = Dataset(tmp_path / "back"), Dataset(out)
    for x, y in zip(orig.episodes(), back.episodes(), strict=True):
        assert all(np.array_equal(x[k], y[k]) for k in x)

    capsys.readouterr()
    assert main(["data", "info", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "record", "--env", "CartPole-v1", "--policy", "expert", "--episodes", "1", "--out", "x"]) == 2
    assert "Unknown policy 'expert'" in capsys.readouterr().err
    assert main(["data", "convert", str(out), "rec", "--to", "minari"]) == 2
    assert "exists already" in capsys.readouterr().err


def assert_same(a: Dataset, b: Dataset) -> None:
    assert a.keys == b.keys and a.env_id == b.env_id
    assert spaces_to_json(a.obs_space) == spaces_to_json(b.obs_space)
    assert spaces_to_json(a.act_space) == spaces_to_json(b.act_space)
    for i, (x, y) in enumerate(zip(a.episodes(), b.episodes(), strict=True)):
        for key in x:
            assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), (i, key)
        assert a.episode_info(i) == b.episode_info(i)


def test_minari_round_trip_identical(tmp_path: Path, crafter_ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    # Pixels: JPEG would change most of them; the export stores them raw.
    assert export_minari(crafter_ds, "reverie/crafter-v0") == "reverie/crafter-v0"
    assert_same(crafter_ds, import_minari("reverie/crafter-v0", tmp_path / "crafter"))
    # Vectors, with some labels dropped: flags and zeros survive.
    cartpole = record("CartPole-v1", "random", 5, tmp_path / "cp", seed=0, action_frac=0.4, reward_frac=0.6)
    export_minari(cartpole, "reverie/cartpole-v0")
    assert_same(cartpole, import_minari("reverie/cartpole-v0", tmp_path / "cp-back"))

    import minari

    mds = minari.load_dataset("reverie/crafter-v0")
    assert mds.storage.metadata["jpeg_encoding"] is False and mds.total_steps == crafter_ds.num_steps - 2
    first = next(mds.iterate_episodes())
    assert np.array_equal(first.observations, crafter_ds.episode(0)["image"])
    assert np.array_equal(first.actions, crafter_ds.episode(0)["action"][1:])
    with pytest.raises(DatasetError, match="Cannot open Minari dataset 'reverie/none-v0'"):
        import_minari("reverie/none-v0", tmp_path / "none")


def test_import_foreign_minari_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    minari = pytest.importorskip("minari")
    from gymnasium import spaces
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    obs_space = spaces.Dict({"pos": spaces.Box(-1, 1, (2,)), "arm": spaces.Dict({"joints": spaces.Box(-1, 1, (3,))})})
    act_space = spaces.Box(-1, 1, (2,))
    rng = np.random.default_rng(0)
    episode = EpisodeBuffer(
        observations={
            "pos": rng.uniform(-1, 1, (6, 2)).astype(np.float32),
            "arm": {"joints": rng.uniform(-1, 1, (6, 3)).astype(np.float32)},
        },
        actions=rng.uniform(-1, 1, (5, 2)).astype(np.float32),
        rewards=np.arange(5, dtype=np.float64),
        terminations=np.array([0, 0, 0, 0, 0], bool),
        truncations=np.array([0, 0, 0, 0, 1], bool),
        infos={},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about each optional metadata field left out
        minari.create_dataset_from_buffers(
            "other/task-v0", [episode], observation_space=obs_space, action_space=act_space, jpeg_encoding=False
        )
    ds = import_minari("other/task-v0", tmp_path / "ds")
    ep = ds.episode(0)
    assert ds.env_id == "minari:other/task-v0" and set(ds.info["model_keys"]) == {"pos", "arm/joints"}
    assert np.array_equal(ep["arm/joints"], episode.observations["arm"]["joints"])
    assert np.array_equal(ep["action"][1:], episode.actions) and not ep["action"][0].any()
    assert np.array_equal(ep["reward"], [0, 0, 1, 2, 3, 4]) and ep["is_last"][-1] and not ep["is_terminal"].any()


def test_missing_minari_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_line: Callable[..., None]
) -> None:
    write(tmp_path / "ds", [3])
    monkeypatch.setitem(sys.modules, "minari", None)  # what an install without Minari looks like
    with pytest.raises(MinariMissing) as err:
        export_minari(tmp_path / "ds", "reverie/ds-v0")
    one_line(str(err.value), 'pip install "minari[hdf5]>=0.5.4"')


def test_a_games_policy_is_not_offered_for_other_envs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["data", "record", "--env", "CartPole-v1", "--policy", "scripted", "--episodes", "1", "--out"]
    assert main([*argv, str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "Unknown policy 'scripted' for env 'CartPole-v1'" in err and "known policies are random" in err
    assert not (tmp_path / "x").exists()
