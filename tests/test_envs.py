"""Tests of the env layer: Gymnasium adapter, wrappers, checker and batched envs."""

from __future__ import annotations

import logging
import os
import time
import warnings
from functools import partial
from typing import Any

import gymnasium
import numpy as np
import pytest

from reverie.config import EnvConfig
from reverie.envs import (
    ActionRepeat,
    BatchEnv,
    Env,
    EnvError,
    EnvWarning,
    GymEnv,
    NormalizeActions,
    ParallelEnv,
    ResizeImage,
    Space,
    TimeLimit,
    Wrapper,
    check_env,
    make_batch_env,
    make_env,
    reserved_spaces,
)

# ---------------------------------------------------------------------------------------------------
# Tiny envs. Module level so that worker processes can unpickle their factories.


class CountEnv(Env):
    """Observes its step count; reward 1 per step; terminates after ``length`` steps.

    ``crash`` ("raise", "exit" or "hang") happens on the ``crash_step``-th non-reset step of the env's life.
    """

    def __init__(self, length: int = 10, crash: str = "", crash_step: int = 0, action_bound: float = 1.0):
        self.length, self.crash, self.crash_step = length, crash, crash_step
        self.bound = action_bound
        self.t = 0
        self.life = 0

    @property
    def obs_space(self) -> dict[str, Space]:
        return {"vector": Space(np.float32, (1,)), **reserved_spaces()}

    @property
    def act_space(self) -> dict[str, Space]:
        return {"action": Space(np.float32, (1,), -self.bound, self.bound)}

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        if action["reset"]:
            self.t = 0
            return self._obs(0.0, first=True)
        self.life += 1
        if self.life == self.crash_step:
            if self.crash == "raise":
                raise RuntimeError("boom: simulator exploded")
            if self.crash == "exit":
                os._exit(3)
            if self.crash == "hang":
                time.sleep(60)
        self.t += 1
        done = self.t >= self.length
        return self._obs(1.0, last=done, terminal=done)

    def _obs(self, reward: float, first: bool = False, last: bool = False, terminal: bool = False) -> dict:
        return {
            "vector": np.array([self.t], np.float32),
            "reward": np.float32(reward),
            "is_first": first,
            "is_last": last,
            "is_terminal": terminal,
        }


class ImageEnv(CountEnv):
    """A CountEnv that also observes a uint8 image of the given shape."""

    def __init__(self, shape: tuple[int, ...] = (32, 48, 3)):
        super().__init__()
        self.shape = shape

    @property
    def obs_space(self) -> dict[str, Space]:
        return {**super().obs_space, "image": Space(np.uint8, self.shape, 0, 255)}

    def _obs(self, reward: float, first: bool = False, last: bool = False, terminal: bool = False) -> dict:
        image = np.random.default_rng(self.t).integers(0, 256, self.shape).astype(np.uint8)
        return {**super()._obs(reward, first, last, terminal), "image": image}


class Recorder(Wrapper):
    """Remembers the last action it forwarded."""

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        self.last = action
        return self.env.step(action)


class TinyDictEnv(gymnasium.Env):
    """A Gymnasium env with a nested Dict observation."""

    observation_space = gymnasium.spaces.Dict(
        {
            "pos": gymnasium.spaces.Box(-1, 1, (3,), np.float64),
            "cam": gymnasium.spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "chw": gymnasium.spaces.Box(0, 255, (3, 8, 6), np.uint8),
            "gray": gymnasium.spaces.Box(0, 255, (8, 6), np.uint8),
            "grid": gymnasium.spaces.Box(0, 1, (2, 2), np.float32),
            "arm": gymnasium.spaces.Dict({"vel": gymnasium.spaces.Box(-1, 1, (2,), np.float32)}),
            "log": gymnasium.spaces.Dict({"x": gymnasium.spaces.Box(-1, 1, (1,), np.float32)}),
        }
    )
    action_space = gymnasium.spaces.Discrete(3)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: int) -> tuple[dict, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.5, False, False, {}


if "ReverieTinyDict-v0" not in gymnasium.registry:
    gymnasium.register("ReverieTinyDict-v0", entry_point=TinyDictEnv, max_episode_steps=4)


def reset_and(env: Env, action: Any = 0) -> dict[str, Any]:
    return env.step({"action": action, "reset": True})


# ---------------------------------------------------------------------------------------------------
# GymEnv


def test_cartpole_contract_and_termination() -> None:
    env = GymEnv("CartPole-v1", seed=0)
    assert set(env.obs_space) == {"vector", "reward", "is_first", "is_last", "is_terminal"}
    assert env.act_space["action"] == Space(np.int64, (), 0, 2, discrete=True)
    obs = reset_and(env)
    assert obs["is_first"] and not obs["is_last"] and obs["reward"] == 0
    for key, space in env.obs_space.items():
        value = np.asarray(obs[key])
        assert value.dtype == np.dtype(space.dtype) and value.shape == space.shape, key
    for _ in range(200):  # always pushing left topples the pole well within 200 steps
        obs = env.step({"action": 0, "reset": False})
        assert not obs["is_first"]
        if obs["is_last"]:
            break
    assert obs["is_last"] and obs["is_terminal"]


def test_truncation_is_last_without_is_terminal() -> None:
    env = GymEnv("CartPole-v1", seed=0, max_episode_steps=3)  # gymnasium's own truncation
    reset_and(env)
    flags = [env.step({"action": t % 2, "reset": False}) for t in range(3)]
    assert [(o["is_last"], o["is_terminal"]) for o in flags] == [(False, False)] * 2 + [(True, False)]
    limited = TimeLimit(GymEnv("CartPole-v1", seed=0), 2)  # the wrapper's truncation
    reset_and(limited)
    flags = [limited.step({"action": t % 2, "reset": False}) for t in range(2)]
    assert [(o["is_last"], o["is_terminal"]) for o in flags] == [(False, False), (True, False)]
    assert reset_and(limited)["is_first"] and not limited.step({"action": 0, "reset": False})["is_last"]


def test_seed_first_reset_only() -> None:
    a, b = GymEnv("CartPole-v1", seed=3), GymEnv("CartPole-v1", seed=3)
    first_a, first_b = reset_and(a)["vector"], reset_and(b)["vector"]
    np.testing.assert_array_equal(first_a, first_b)
    assert not np.array_equal(reset_and(a)["vector"], first_a)  # the RNG continues


def test_pixels_cartpole() -> None:
    env = GymEnv("gym:CartPole-v1", seed=0, pixels=True)
    assert env.obs_space["image"].shape == (64, 64, 3) and "vector" not in env.obs_space
    image = reset_and(env)["image"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.min() < image.max()
    env.close()


def test_dict_obs_flattening() -> None:
    env = GymEnv("ReverieTinyDict-v0", seed=0)
    keys = set(env.obs_space) - set(reserved_spaces())
    assert keys == {"pos", "cam", "chw", "gray", "grid", "arm/vel", "obs/log/x"}
    assert env.obs_space["cam"].is_image and env.obs_space["grid"].shape == (4,)
    assert env.obs_space["chw"].shape == (8, 6, 3) and env.obs_space["gray"].shape == (8, 6, 1)
    obs = reset_and(env)
    assert obs["pos"].dtype == np.float32 and obs["cam"].shape == (8, 8, 3) and obs["arm/vel"].shape == (2,)
    assert obs["chw"].shape == (8, 6, 3) and obs["gray"].shape == (8, 6, 1)
    with pytest.warns(EnvWarning, match="ResizeImage"):
        notes = check_env(env)
    assert [n.split()[1] for n in notes] == ["'cam'", "'chw'", "'gray'"]
    # check_env checks every step's keys, shapes and dtypes; the episode ends by truncation.
    assert check_env(ResizeImage(env, 64)) == []


def test_unknown_env_id() -> None:
    with pytest.raises(EnvError, match="Did you mean CartPole-v1") as info:
        GymEnv("CartPol-v1")
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(EnvError, match="dmc:walker-walk|dm_control"):
        make_env(EnvConfig(id="dmc:walker_walk"), seed=0)


def test_unsupported_action_space() -> None:
    if "ReverieMultiBinary-v0" not in gymnasium.registry:
        gymnasium.register("ReverieMultiBinary-v0", entry_point=_multibinary_env)
    with pytest.raises(EnvError, match="Action space MultiBinary"):
        GymEnv("ReverieMultiBinary-v0")


def _multibinary_env() -> gymnasium.Env:
    env = TinyDictEnv()
    env.action_space = gymnasium.spaces.MultiBinary(2)
    return env


# ---------------------------------------------------------------------------------------------------
# Wrappers


def test_normalize_actions_maps_to_bounds() -> None:
    recorder = Recorder(GymEnv("Pendulum-v1", seed=0))
    env = NormalizeActions(recorder)
    space = env.act_space["action"]
    np.testing.assert_array_equal(space.low, [-1.0])
    np.testing.assert_array_equal(space.high, [1.0])
    reset_and(env)
    for agent, applied in [(-1.0, -2.0), (1.0, 2.0), (0.0, 0.0), (0.5, 1.0), (7.0, 2.0)]:
        env.step({"action": np.array([agent], np.float32), "reset": False})
        np.testing.assert_allclose(recorder.last["action"], [applied])
        assert recorder.last["action"].dtype == np.float32


def test_action_repeat_sums_rewards_and_stops_at_last() -> None:
    inner = CountEnv(length=5)
    env = ActionRepeat(inner, 3)
    assert reset_and(env)["reward"] == 0 and inner.t == 0
    obs = env.step({"action": np.zeros(1), "reset": False})
    assert obs["reward"] == 3 and inner.t == 3
    obs = env.step({"action": np.zeros(1), "reset": False})
    assert obs["reward"] == 2 and inner.t == 5 and obs["is_last"] and obs["is_terminal"]


def test_resize_image() -> None:
    for shape in [(32, 48, 3), (100, 80, 1), (20, 20, 2)]:
        env = ResizeImage(ImageEnv(shape), 64)
        assert env.obs_space["image"].shape == (64, 64, shape[2])
        image = reset_and(env, np.zeros(1))["image"]
        assert image.shape == (64, 64, shape[2]) and image.dtype == np.uint8


def test_make_env_wrappers() -> None:
    env = make_env(EnvConfig(id="Pendulum-v1", action_repeat=2, time_limit=4), seed=0)
    assert isinstance(env, TimeLimit) and isinstance(env.env, ActionRepeat)
    assert isinstance(env.env.env, NormalizeActions)
    np.testing.assert_array_equal(env.act_space["action"].high, [1.0])
    reset_and(env, np.zeros(1))
    flags = [env.step({"action": np.ones(1), "reset": False}) for _ in range(4)]
    assert [o["is_last"] for o in flags] == [False, False, False, True] and not flags[-1]["is_terminal"]


# ---------------------------------------------------------------------------------------------------
# check_env


def test_check_env_passes_cartpole() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_env(GymEnv("CartPole-v1", seed=0)) == []


class MissingKey(CountEnv):
    @property
    def obs_space(self) -> dict[str, Space]:
        return {k: v for k, v in super().obs_space.items() if k != "is_terminal"}


class Float64Reward(CountEnv):
    def _obs(self, reward: float, first: bool = False, last: bool = False, terminal: bool = False) -> dict:
        return {**super()._obs(reward, first, last, terminal), "reward": float(reward)}


class NotFirst(CountEnv):
    def _obs(self, reward: float, first: bool = False, last: bool = False, terminal: bool = False) -> dict:
        return super()._obs(reward, False, last, terminal)


class TerminalNotLast(CountEnv):
    def _obs(self, reward: float, first: bool = False, last: bool = False, terminal: bool = False) -> dict:
        return super()._obs(reward, first, False, terminal)


class ExtraKey(CountEnv):
    def _obs(self, reward: float, first: bool = False, last: bool = False, terminal: bool = False) -> dict:
        return {**super()._obs(reward, first, last, terminal), "log/x": 1.0}


class NanReward(CountEnv):
    def _obs(self, reward: float, first: bool = False, last: bool = False, terminal: bool = False) -> dict:
        return {**super()._obs(reward, first, last, terminal), "reward": np.float32(0 if first else np.nan)}


class WrongActKey(CountEnv):
    @property
    def act_space(self) -> dict[str, Space]:
        return {"move": super().act_space["action"]}


@pytest.mark.parametrize(
    "env_class, match",
    [
        (MissingKey, "lacks the reserved keys"),
        (Float64Reward, "float64 .* obs_space says float32"),
        (NotFirst, "is_first=True"),
        (TerminalNotLast, "is_terminal=True with is_last=False"),
        (ExtraKey, r"undeclared \['log/x'\]"),
        (NanReward, "not finite"),
        (WrongActKey, r"\{'action': Space\}"),
    ],
)
def test_check_env_raises_on_contract_violations(env_class: type, match: str) -> None:
    with pytest.raises(EnvError, match=match):
        check_env(env_class())


def test_check_env_warns() -> None:
    with pytest.warns(EnvWarning, match="unbounded.*NormalizeActions"):
        notes = check_env(CountEnv(action_bound=np.inf))
    assert len(notes) == 1
    with pytest.warns(EnvWarning, match="huge"):
        check_env(CountEnv(action_bound=1000.0))
    with pytest.warns(EnvWarning, match="ResizeImage"):
        check_env(ImageEnv((32, 48, 3)))
    with pytest.warns(EnvWarning, match="No episode ended within 20"):
        check_env(CountEnv(length=1000), max_steps=20)


# ---------------------------------------------------------------------------------------------------
# BatchEnv and ParallelEnv


def test_parallel_matches_batch() -> None:
    cfg = EnvConfig(id="CartPole-v1", num_envs=2, parallel=True)
    serial = make_batch_env(EnvConfig(id="CartPole-v1", num_envs=2, parallel=False), seed=5)
    assert isinstance(serial, BatchEnv)
    with make_batch_env(cfg, seed=5) as parallel:
        assert isinstance(parallel, ParallelEnv) and parallel.num_envs == 2
        assert set(parallel.obs_space) == set(serial.obs_space)
        reset, ended = np.ones(2, bool), 0
        for t in range(60):  # a few episodes: each env is reset after its is_last
            actions = {"action": np.array([t % 2, (t // 3) % 2]), "reset": reset}
            a, b = serial.step(actions), parallel.step(actions)
            assert parallel.last_restarts == []
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
                assert a[key].dtype == b[key].dtype and a[key].shape[0] == 2
            reset = a["is_last"]
            ended += int(reset.sum())
        assert ended >= 1  # the resets after is_last were exercised too
    assert not np.array_equal(a["vector"][0], a["vector"][1])  # seeds differ per env
    parallel.close()  # idempotent
    serial.close()
    serial.close()


def test_parallel_restarts_crashed_workers(caplog: pytest.LogCaptureFixture) -> None:
    # Worker 0 is healthy; worker 1 raises and worker 2 dies on its third step.
    factories = [partial(CountEnv, 100, crash=mode, crash_step=3) for mode in ["", "raise", "exit"]]
    with ParallelEnv(factories) as envs:
        reset = {"action": np.zeros((3, 1), np.float32), "reset": np.ones(3, bool)}
        move = {"action": np.zeros((3, 1), np.float32), "reset": np.zeros(3, bool)}
        assert envs.step(reset)["is_first"].all()
        with caplog.at_level(logging.WARNING, logger="reverie.envs"):
            for _ in range(2):
                obs = envs.step(move)
                assert envs.last_restarts == []
            obs = envs.step(move)  # the third step crashes workers 1 and 2
        assert envs.last_restarts == [1, 2] and envs.restarts == [0, 1, 1]
        assert obs["is_first"].tolist() == [False, True, True] and obs["vector"][:, 0].tolist() == [3, 0, 0]
        for i, reason in [(1, "boom: simulator exploded"), (2, "exit code 3")]:
            assert f"Env worker {i} crashed" in caplog.text and reason in caplog.text
        for t in range(2):  # the fresh workers keep stepping
            obs = envs.step(move)
            assert envs.last_restarts == [] and obs["vector"][:, 0].tolist() == [4 + t, 1 + t, 1 + t]


def test_parallel_hung_worker_counts_as_crash_and_gives_up() -> None:
    envs = ParallelEnv([partial(CountEnv, 100, crash="hang", crash_step=1)], max_restarts=0, timeout=1.0)
    envs.step({"action": np.zeros((1, 1), np.float32), "reset": np.ones(1, bool)})
    with pytest.raises(EnvError, match="worker 0 crashed more than max_restarts=0 times.*hung"):
        envs.step({"action": np.zeros((1, 1), np.float32), "reset": np.zeros(1, bool)})
    assert not any(proc.is_alive() for proc in envs._procs)
    envs.close()  # already closed by the give-up: a no-op


def test_parallel_rejects_unpicklable_factory() -> None:
    with pytest.raises(EnvError, match="cannot be pickled"):
        ParallelEnv([lambda: CountEnv()])
