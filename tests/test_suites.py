"""DeepMind Control and Atari adapters: contracts, episode ends, errors, and a tiny ``reverie train`` on each."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from reverie.cli import main
from reverie.config import EnvConfig
from reverie.envs import AtariEnv, DMCEnv, EnvError, check_env, make_env
from reverie.envs.base import model_keys


def _check(env) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no episode ended": the probe is much shorter than an episode
        check_env(env, max_steps=20)


def _train(tmp_path: Path, preset: str, env_id: str) -> dict:
    """``reverie train --preset debug <preset> --env <env_id> --steps 60`` with a short eval; its JSON line."""
    logdir = tmp_path / "run"
    argv = ["train", "--preset", "debug", preset, "--env", env_id, "--logdir", str(logdir), "--steps", "60"]
    argv += ["--set", "train.prefill=40", "train.train_ratio=32", "run.eval_episodes=1", "env.time_limit=10"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    assert code == 0
    assert (logdir / "checkpoint" / "meta.json").is_file()
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_missing_packages_name_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dm_control", None)  # import -> ImportError
    monkeypatch.setitem(sys.modules, "ale_py", None)
    with pytest.raises(EnvError, match=r'pip install "mujoco==3.17.0" dm_control'):
        make_env(EnvConfig(id="dmc:walker-walk"), seed=0)
    with pytest.raises(EnvError, match=r'pip install "ale-py>=0.9" opencv-python-headless'):
        make_env(EnvConfig(id="atari:Pong"), seed=0)
    with pytest.raises(EnvError, match="e.g. dmc:walker-walk"):
        make_env(EnvConfig(id="dmc:"), seed=0)


# ---------------------------------------------------------------------------------------------------
# DeepMind Control


@pytest.fixture(scope="module")
def dmc():
    return pytest.importorskip("dm_control")


def test_dmc_proprio_contract_and_truncation(dmc) -> None:
    env = make_env(EnvConfig(id="dmc:walker-walk", action_repeat=2), seed=0)
    _check(env)
    assert model_keys(env.obs_space) == ["vector"] and env.obs_space["vector"].shape == (24,)
    space = env.act_space["action"]
    assert space.shape == (6,) and (space.low == -1).all() and (space.high == 1).all()
    obs = env.step({"action": np.zeros(6), "reset": True})
    assert obs["vector"].dtype == np.float32 and obs["is_first"]
    rng = np.random.default_rng(0)
    for t in range(1, 501):  # 1000 control steps at repeat 2
        obs = env.step({"action": space.sample(rng), "reset": False})
        assert obs["is_last"] == (t == 500) and not obs["is_terminal"], t
        assert 0.0 <= obs["reward"] <= 2.0  # two control steps, each rewarded in [0, 1]
    env.close()


def test_dmc_seed_repeats_initial_states(dmc) -> None:
    first = [DMCEnv("cartpole-swingup", seed=4).step({"action": 0, "reset": True})["vector"] for _ in range(2)]
    assert np.array_equal(first[0], first[1])


def test_dmc_pixels(dmc) -> None:
    env = make_env(EnvConfig(id="dmc:walker-walk", pixels=True), seed=0)
    assert model_keys(env.obs_space) == ["image"]
    first = env.step({"action": np.zeros(6), "reset": True})["image"]
    obs = env.step({"action": np.ones(6), "reset": False})
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 0 and not np.array_equal(first, obs["image"])
    assert DMCEnv("quadruped-walk").camera == 2 and DMCEnv("cheetah-run").camera == 0
    env.close()


def test_dmc_unknown_task_suggests(dmc) -> None:
    with pytest.raises(EnvError, match="Did you mean dmc:walker-walk"):
        make_env(EnvConfig(id="dmc:walker_walk"), seed=0)


def test_train_cli_dmc(dmc, tmp_path: Path) -> None:
    result = _train(tmp_path, "dmc_proprio", "dmc:walker-walk")
    assert result["env"] == "dmc:walker-walk" and result["env_steps"] >= 60
    assert result["eval/length"] == 10 and np.isfinite(result["eval/return"])


# ---------------------------------------------------------------------------------------------------
# Atari


@pytest.fixture(scope="module")
def atari():
    pytest.importorskip("cv2")
    return pytest.importorskip("ale_py")


def test_atari_pong_contract_and_rewards(atari) -> None:
    env = make_env(EnvConfig(id="atari:Pong", action_repeat=4), seed=0)
    _check(env)
    assert isinstance(env, AtariEnv) and env.repeat == 4
    assert model_keys(env.obs_space) == ["image"] and env.act_space["action"].n == 6
    obs = env.step({"action": 0, "reset": True})
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8 and obs["log/lives"] == 0
    rng = np.random.default_rng(0)
    rewards = []
    for _ in range(300):  # ~1200 frames: the random player loses some points
        obs = env.step({"action": rng.integers(6), "reset": False})
        rewards.append(float(obs["reward"]))
        assert not obs["is_last"]
    assert set(rewards) <= {-1.0, 0.0, 1.0} and min(rewards) == -1.0  # unclipped, but Pong's scores are +-1
    env.close()


def test_atari_frame_limit_is_truncation_and_max_pooling(atari) -> None:
    env = AtariEnv("pong", seed=0, noops=0, max_frames=40)  # snake/lower case is accepted
    assert env.id == "atari:Pong" and env.action_meanings[:2] == ["NOOP", "FIRE"]
    env.step({"action": 0, "reset": True})
    ends = [env.step({"action": 1, "reset": False}) for _ in range(10)]  # 10 steps x 4 frames
    assert [o["is_last"] for o in ends] == [False] * 9 + [True] and not ends[-1]["is_terminal"]
    env = AtariEnv("Pong", seed=0, noops=0, size=64)
    env.step({"action": 0, "reset": True})
    obs = env.step({"action": 0, "reset": False})
    import cv2

    assert env._frames is not None
    pooled = np.maximum(*env._frames)
    assert np.array_equal(obs["image"], cv2.resize(pooled, (64, 64), interpolation=cv2.INTER_AREA))


def test_atari_unknown_game_suggests(atari) -> None:
    with pytest.raises(EnvError, match="Did you mean atari:Pong"):
        make_env(EnvConfig(id="atari:Pongg"), seed=0)


def test_train_cli_atari(atari, tmp_path: Path) -> None:
    result = _train(tmp_path, "atari100k", "atari:Pong")
    assert result["env"] == "atari:Pong" and result["env_steps"] >= 60
    assert result["eval/length"] == 10
