"""``DreamEnv``: Gymnasium's env checker on pixel and vector CartPole checkpoints, the predictions a step
returns, seeding, truncation, runs without a real env, Dict observations and continuous actions.

The checkpoints are ``debug``-preset runs of 80 env steps (17 updates), trained once per session.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import error as gym_error
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from reverie import Dreamer
from reverie.dream import DreamEnv
from reverie.envs import EnvError, Space

PIXELS = ("env.pixels=true", "run.video_every=40", "run.log_every=20")
"""Overrides of the pixel run: CartPole from 64x64 frames, open-loop videos every 40 steps, metrics every 20."""


def tiny_run(tmp_path_factory: pytest.TempPathFactory, debug_config, name: str, *overrides: str) -> Path:
    """A run folder trained for 80 CartPole steps, shared by every test module of the session."""
    folder = tmp_path_factory.getbasetemp() / f"tiny-{name}"
    if not (folder / "checkpoint").exists():
        cfg = debug_config(folder, "env.id=CartPole-v1", "train.steps=80", "run.eval_episodes=1", *overrides)
        Dreamer(cfg).learn()
    return folder


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory: pytest.TempPathFactory, debug_config) -> Path:
    return tiny_run(tmp_path_factory, debug_config, "pixels", *PIXELS)


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory: pytest.TempPathFactory, debug_config) -> Path:
    return tiny_run(tmp_path_factory, debug_config, "vector")


def check(env: DreamEnv) -> None:
    """Gymnasium's checker, with its advisory warnings (unbounded boxes, no spec) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env)


def test_env_checker_passes_on_pixels(pixel_run: Path) -> None:
    env = DreamEnv(str(pixel_run), seed=0, render_mode="rgb_array")
    assert env.observation_space == spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == spaces.Discrete(2)
    check(env)
    obs, _ = env.reset(seed=1)
    assert obs.dtype == np.uint8 and obs.shape == (64, 64, 3)
    assert np.array_equal(env.render(), obs)


def test_env_checker_passes_on_vectors(vector_run: Path) -> None:
    env = DreamEnv(str(vector_run), seed=0)
    assert isinstance(env.observation_space, spaces.Box) and env.observation_space.shape == (4,)
    check(env)
    obs, _ = env.reset(seed=1)
    assert obs.dtype == np.float32 and obs in env.observation_space


def test_step_returns_the_heads_predictions(vector_run: Path) -> None:
    env = DreamEnv(str(vector_run), seed=0)
    _, info = env.reset()
    assert set(info) == {"reward_pred", "cont_pred", "uncertainty", "step"} and info["step"] == 0
    for t in range(1, 4):
        obs, reward, terminated, truncated, info = env.step(t % 2)
        feat = env.wm.rssm.feat(env.state)
        with torch.no_grad():
            assert reward == info["reward_pred"] == pytest.approx(float(env.wm.reward(feat)[0]))
            assert info["cont_pred"] == pytest.approx(float(env.wm.cont(feat)[0]))
        assert 0.0 <= info["cont_pred"] <= 1.0 and info["uncertainty"] is None and info["step"] == t
        assert terminated == (info["cont_pred"] < 0.5) and not truncated
        if terminated:
            break


def test_same_seed_same_dream_and_global_rng_untouched(pixel_run: Path) -> None:
    agent = Dreamer.load(pixel_run)
    rollouts = []
    for seed in (3, 3, 4):
        env = DreamEnv(agent, seed=seed)
        torch.manual_seed(0)
        before = torch.get_rng_state()
        frames = [env.reset()[0]] + [env.step(a)[0] for a in (0, 1, 1, 0)]
        assert torch.equal(torch.get_rng_state(), before), "DreamEnv moved the global torch RNG"
        rollouts.append(np.stack(frames))
    assert np.array_equal(rollouts[0], rollouts[1])
    assert not np.array_equal(rollouts[0], rollouts[2])


def test_truncation_agent_and_actions(vector_run: Path) -> None:
    env = DreamEnv(str(vector_run), seed=0, max_steps=3)
    with pytest.raises(gym_error.ResetNeeded):
        env.step(0)
    env.reset()
    with pytest.raises(ValueError, match="not in the action space"):
        env.step(2)
    assert env.agent_action(deterministic=True) in (0, 1)
    for t in range(1, 4):
        _, _, terminated, truncated, _ = env.step(env.agent_action())
        assert truncated == (t == 3 and not terminated)
        if terminated:
            break


def test_real_env_beside_the_dream(vector_run: Path) -> None:
    env = DreamEnv(str(vector_run), seed=0, context=3)
    env.reset()
    assert env.real_obs is not None and not env.real_done
    real = env.step_real(1)
    assert real is not None and set(real) >= {"vector", "reward", "is_last"}
    alone = DreamEnv(str(vector_run), seed=0, real_env=False)
    alone.reset()
    assert alone.real_env is None and alone.step_real(0) is None
    with pytest.raises(EnvError, match="smaller context"):
        DreamEnv(str(vector_run), seed=0, context=600).reset()  # CartPole ends far earlier at random


def test_dict_observations_and_continuous_actions() -> None:
    from reverie.config import make_config

    obs_space = {"image": Space(np.uint8, (64, 64, 3), 0, 255), "vector": Space(np.float32, (3,), -1.0, 1.0)}
    agent = Dreamer(make_config(["debug"]), obs_space, Space(np.float32, (2,), -1.0, 1.0))
    env = DreamEnv(agent, seed=0, real_env=False)
    assert isinstance(env.observation_space, spaces.Dict) and set(env.observation_space) == {"image", "vector"}
    assert env.action_space == spaces.Box(-1.0, 1.0, (2,), np.float32)
    check(env)
    obs, *_ = env.step(np.array([0.5, -0.5], np.float32))
    assert obs["image"].dtype == np.uint8 and np.all(np.abs(obs["vector"]) <= 1.0)
    with pytest.raises(ValueError, match="not in the action space"):
        env.step(np.array([2.0, 0.0], np.float32))
