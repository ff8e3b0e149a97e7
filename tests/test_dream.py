"""``DreamEnv``: Gymnasium's env checker on pixel and vector CartPole checkpoints, the predictions a step
returns, seeding, truncation, runs without a real env, Dict observations and continuous actions, and
dreams seeded from recorded datasets (episode and start choice, action labels, mismatched datasets).

The checkpoints are ``debug``-preset runs of 80 env steps (17 updates), trained once per session; the
datasets are a few random CartPole episodes of at most 13 steps, recorded once per session.
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
from reverie.data import Dataset, record, rewrite
from reverie.dream import DreamEnv
from reverie.envs import EnvError, Space


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
    keys = {"reward_pred", "cont_pred", "uncertainty", "unknown", "reward_uncertainty", "step"}
    assert set(info) == keys | {"start"} and info["step"] == 0
    assert info["start"] == env.start_info == {"source": "env", "context": 5}
    for t in range(1, 4):
        obs, reward, terminated, truncated, info = env.step(t % 2)
        feat = env.wm.rssm.feat(env.state)
        with torch.no_grad():
            assert reward == info["reward_pred"] == pytest.approx(float(env.wm.reward(feat)[0]))
            assert info["cont_pred"] == pytest.approx(float(env.wm.cont(feat)[0]))
        assert 0.0 <= info["cont_pred"] <= 1.0 and info["step"] == t
        assert info["uncertainty"] is info["unknown"] is info["reward_uncertainty"] is None  # no ensemble
        assert terminated == (info["cont_pred"] < 0.5) and not truncated
        if terminated:
            break
        assert set(info) == keys


def test_step_reports_the_ensembles_uncertainty(tmp_path: Path, debug_config) -> None:
    cfg = debug_config(tmp_path, "env.id=CartPole-v1", "train.steps=80", "run.eval_episodes=1", "model.ensemble=3")
    Dreamer(cfg).learn()
    env = DreamEnv(str(tmp_path), seed=0)
    _, info = env.reset()
    assert info["uncertainty"] is info["unknown"] is info["reward_uncertainty"] is None  # no transition yet
    ens = env.wm.ensemble
    assert ens is not None and float(ens.threshold) > 0  # calibrated on the run's real transitions
    state = env.state
    _, _, _, _, info = env.step(1)
    with torch.no_grad():
        want = float(ens.spread(ens(env.wm.feat(state), env.action_vector(1)))[0])
    assert info["uncertainty"] == pytest.approx(want, rel=1e-5) and info["uncertainty"] > 0
    assert info["unknown"] == (info["uncertainty"] > float(ens.threshold))
    assert isinstance(info["reward_uncertainty"], float) and info["reward_uncertainty"] >= 0
    assert env.end_unknown  # on by default with an ensemble: a step the model does not know ends the dream
    lenient = DreamEnv(env.agent, seed=0, end_unknown=False)
    lenient.reset()
    for threshold, unknown in ((1e-12, True), (1e12, False)):
        ens.threshold.fill_(threshold)
        _, _, terminated, _, info = env.step(0)
        assert info["unknown"] is unknown
        assert terminated == (unknown or info["cont_pred"] < 0.5)
        _, _, terminated, _, info = lenient.step(0)
        assert info["unknown"] is unknown and terminated == (info["cont_pred"] < 0.5)


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


# --------------------------------------------------------------------------------------- dataset starts
def spy_observe(env: DreamEnv, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """Record what the world model filters at each reset: the steps, actions, is_first and action_mask."""
    calls: list[dict[str, torch.Tensor]] = []
    observe = env.wm.observe

    def spy(batch, state=None, embed=None):  # noqa: ANN001, ANN202
        calls.append({**batch, "action_mask": batch.get("action_mask")})
        return observe(batch, state, embed)

    monkeypatch.setattr(env.wm, "observe", spy)
    return calls


def test_dataset_start_passes_env_checker(vector_run: Path, cartpole_data: Path) -> None:
    env = DreamEnv(str(vector_run), seed=0, context=3, real_env=False, dataset=cartpole_data)
    assert env.real_env is None and env.start_source()["source"] == "dataset"
    check(env)
    obs, info = env.reset(seed=1)
    start = info["start"]
    assert start["source"] == "dataset" and start["context"] == 3 and obs in env.observation_space
    episode = env.dataset.episode_info(start["episode"])  # type: ignore[union-attr]
    assert 0 <= start["start"] <= episode["length"] - 3
    assert env.real_obs is None and env.step_real(0) is None
    obs, reward, terminated, truncated, info = env.step(1)
    assert obs in env.observation_space and isinstance(reward, float) and "start" not in info


def test_dataset_start_follows_the_recording(vector_run: Path, cartpole_data: Path, monkeypatch) -> None:
    env = DreamEnv(Dreamer.load(vector_run), seed=0, context=4, real_env=False, dataset=Dataset(cartpole_data))
    calls = spy_observe(env, monkeypatch)
    obs, info = env.reset(options={"episode": 2, "start": 5})
    assert info["start"] == {"source": "dataset", "episode": 2, "start": 5, "context": 4}
    recorded = Dataset(cartpole_data).episode(2)
    (call,) = calls
    assert call["is_first"].tolist() == [[True, False, False, False]]  # from the initial state, as in training
    assert call["action_mask"].tolist() == [[1.0] * 4]
    actions = call["action"][0].argmax(-1).tolist()  # one-hot of the recorded actions that led to steps 5..8
    assert actions == recorded["action"][5:9].tolist()
    np.testing.assert_array_equal(call["vector"][0].cpu().numpy(), recorded["vector"][5:9])
    # The same seed and options give the same dream; another start gives another one.
    again = DreamEnv(env.agent, seed=0, context=4, real_env=False, dataset=cartpole_data)
    assert np.array_equal(again.reset(options={"episode": 2, "start": 5})[0], obs)
    for _ in range(3):
        assert np.array_equal(env.step(0)[0], again.step(0)[0])
    here = env.reset(seed=7, options={"episode": 2, "start": 5})[0]
    assert not np.array_equal(here, again.reset(seed=7, options={"episode": 2, "start": 0})[0])
    # Without options the episode and start are drawn from np_random: the same seed, the same pick.
    picks = [env.reset(seed=seed)[1]["start"] for seed in (0, 0, 1, 2, 3, 4, 5)]
    assert picks[0] == picks[1] and len({(p["episode"], p["start"]) for p in picks}) > 2
    lengths = [Dataset(cartpole_data).episode_info(i)["length"] for i in range(4)]
    assert all(0 <= p["start"] <= lengths[p["episode"]] - 4 for p in picks)
    only_episode = {env.reset(seed=s, options={"episode": 1})[1]["start"]["episode"] for s in range(4)}
    assert only_episode == {1}


def test_dataset_start_options_are_checked(vector_run: Path, cartpole_data: Path) -> None:
    env = DreamEnv(str(vector_run), seed=0, context=4, real_env=False, dataset=cartpole_data)
    lengths = [Dataset(cartpole_data).episode_info(i)["length"] for i in range(4)]
    env.reset(options={"episode": 0, "start": lengths[0] - 4})  # the last window that fits
    state = env.state
    bad = [
        ({"episode": 4}, "out of range"),
        ({"episode": 0, "start": lengths[0] - 3}, "out of range"),
        ({"start": 100}, "out of range"),
        ({"episode": -1}, "non-negative integer"),
        ({"episode": True}, "non-negative integer"),
        ({"start": "3"}, "non-negative integer"),
        ({"level": 2}, "Unknown reset options"),
    ]
    for options, match in bad:
        with pytest.raises(ValueError, match=match):
            env.reset(options=options)
        assert env.state is state  # nothing changed
    assert env.reset(options={"episode": np.int64(3), "start": None})[1]["start"]["episode"] == 3
    with pytest.raises(ValueError, match="need a dataset start"):
        DreamEnv(env.agent, seed=0, real_env=False).reset(options={"episode": 0})
    with pytest.raises(ValueError, match="no episode of at least 99 steps"):
        DreamEnv(env.agent, context=99, real_env=False, dataset=cartpole_data)


def test_dataset_start_beside_the_real_env(vector_run: Path, cartpole_data: Path) -> None:
    env = DreamEnv(str(vector_run), seed=0, context=3, dataset=cartpole_data)
    _, info = env.reset(options={"episode": 1, "start": 2})
    assert info["start"]["source"] == "dataset" and env.real_obs is not None
    assert env.real_obs["is_first"] and not env.real_done  # the real env stands on its own first frame
    assert env.step_real(1) is not None
    env.reset()
    assert env.real_obs["is_first"]


def test_action_free_dataset_uses_the_no_action_input(
    vector_run: Path, cartpole_data: Path, tmp_path: Path, monkeypatch
) -> None:
    unlabeled = rewrite(cartpole_data, tmp_path / "no-actions", action_frac=0.0)
    assert not any(unlabeled.episode_info(i)["has_actions"] for i in range(len(unlabeled)))
    env = DreamEnv(str(vector_run), seed=0, context=3, real_env=False, dataset=unlabeled)
    check(env)
    calls = spy_observe(env, monkeypatch)
    obs, info = env.reset(seed=2, options={"episode": 0, "start": 1})
    assert calls[-1]["action_mask"].tolist() == [[0.0, 0.0, 0.0]] and obs in env.observation_space
    labeled = DreamEnv(env.agent, seed=0, context=3, real_env=False, dataset=cartpole_data)
    assert not np.array_equal(labeled.reset(seed=2, options={"episode": 0, "start": 1})[0], obs)
    assert env.step(1)[0] in env.observation_space
    recorded = record("CartPole-v1", "random", 2, tmp_path / "recorded", seed=1, time_limit=8, action_frac=0.0)
    env = DreamEnv(env.agent, seed=0, context=3, real_env=False, dataset=recorded)
    assert env.reset()[1]["start"]["source"] == "dataset"


def test_mismatched_dataset_is_one_clear_error(
    vector_run: Path, pixel_run: Path, cartpole_data: Path, tiny_dataset, tmp_path_factory, one_line
) -> None:
    pendulum = tiny_dataset("pendulum", "Pendulum-v1")
    with pytest.raises(ValueError) as err:
        DreamEnv(str(vector_run), real_env=False, dataset=pendulum)
    one_line(str(err.value), "Pendulum-v1", "CartPole-v1", str(pendulum), "another env id", "another action space")
    with pytest.raises(ValueError) as err:  # the same env id, but the model reads pixels
        DreamEnv(str(pixel_run), real_env=False, dataset=cartpole_data)
    one_line(str(err.value), "CartPole-v1", "no observation key 'image'", "image (64, 64, 3) uint8", "vector (4,)")
    with pytest.raises(ValueError, match="not a Reverie dataset"):
        DreamEnv(str(vector_run), real_env=False, dataset=tmp_path_factory.mktemp("empty"))


def grid_dream(codec: str, *overrides: str) -> DreamEnv:
    """A dream of an untrained crafter-symbolic model with the grid codec ``codec``, without a real env."""
    from reverie.config import make_config
    from reverie.crafter.env import symbolic_size

    config = make_config(["debug"], [f"model.vector_codec={codec}", *overrides])
    obs_space = {"vector": Space(np.float32, (symbolic_size(),), 0.0, 1.0)}
    agent = Dreamer(config, obs_space, Space(np.int64, (), 0, 17, discrete=True))
    return DreamEnv(agent, seed=0, real_env=False)


def test_each_picture_is_drawn_from_the_last_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a codec that reads the previous observation each dreamed observation is pictured from the one shown
    before it; after a reset there is none. The observation returned is the picture the policy would see."""
    env = grid_dream("crafter_grid_delta")
    seen: list[torch.Tensor | None] = []
    picture = env.wm.decoder.vector.picture

    def spy(feat: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        seen.append(prev)
        return picture(feat, prev)

    monkeypatch.setattr(env.wm.decoder.vector, "picture", spy)
    first, _ = env.reset()
    assert seen[-1] is None
    second, *_ = env.step(3)
    np.testing.assert_allclose(seen[-1][0].cpu().numpy(), first, rtol=1e-6)
    env.step(3)
    np.testing.assert_allclose(seen[-1][0].cpu().numpy(), second, rtol=1e-6)
    assert set(np.unique(first[:1197])) <= {0.0, 1.0}  # sharp one-hot cells, as the game gives them
    env.reset()
    assert seen[-1] is None


def test_reward_reads_the_change_from_the_last_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a reward head that reads what changed, the predicted reward of each dreamed step reads the change
    from the picture shown before it; the members' reward spread too."""
    env = grid_dream("crafter_grid_delta", "model.ensemble=3")
    seen: list[torch.Tensor | None] = []
    change = env.wm.change

    def spy(obs, prev):  # noqa: ANN001, ANN202
        seen.append(None if prev is None else prev["vector"])
        return change(obs, prev)

    monkeypatch.setattr(env.wm, "change", spy)
    first, info = env.reset()
    assert seen[-1] is None
    second, _, _, _, info = env.step(3)
    np.testing.assert_allclose(seen[-1][0].cpu().numpy(), first, rtol=1e-6)
    with torch.no_grad():
        before = {"vector": torch.as_tensor(first, device=env.learner.device)[None]}
        now = {"vector": torch.as_tensor(second, device=env.learner.device)[None]}
        want = env.wm.reward(env.wm.feat(env.state), change(now, before))
    assert info["reward_pred"] == pytest.approx(float(want[0]), rel=1e-5)
    assert isinstance(info["reward_uncertainty"], float) and info["reward_uncertainty"] >= 0
    env.step(3)
    np.testing.assert_allclose(seen[-1][0].cpu().numpy(), second, rtol=1e-6)
