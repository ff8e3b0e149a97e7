"""Tests of the evaluation loop: episodes assigned to envs, the per-step hook, promise bookkeeping by hand,
and ``Dreamer.evaluate`` with promises on CartPole."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reverie import Dreamer, evaluation
from reverie.config import EnvConfig, make_config
from reverie.envs import make_batch_env
from reverie.evaluation import EpisodeResults, PromiseTracker, run_episodes


def rule(obs: dict[str, np.ndarray]) -> np.ndarray:
    """Push right when the pole leans right: episodes of varied length."""
    return (obs["vector"][..., 2] > 0).astype(np.int64)


def test_run_episodes_assigns_episodes_to_envs_and_calls_on_step() -> None:
    """5 episodes on 2 envs: env 0 runs episodes 0, 2, 4 and env 1 runs 1, 3, as each env alone would."""
    firsts: list[np.ndarray] = []
    lives: list[np.ndarray] = []

    def act_fn(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
        firsts.append(first)
        return rule(obs)

    cfg = EnvConfig(num_envs=2, parallel=False, time_limit=15)
    results = run_episodes(make_batch_env(cfg, seed=3), act_fn, 5, on_step=lambda obs, live: lives.append(live))
    returns, lengths = results.returns, results.lengths
    assert returns.shape == lengths.shape == (5,) and len(results.finals) == 5 and np.array_equal(returns, lengths)
    assert firsts[0].all() and sum(f.sum() for f in firsts) >= 5 and len(lives) == len(firsts)
    assert np.array_equal(np.sum(lives, 0), [lengths[0::2].sum(), lengths[1::2].sum()])  # live: counted steps
    for env, episodes in ((0, [0, 2, 4]), (1, [1, 3])):
        alone = make_batch_env(EnvConfig(num_envs=1, time_limit=15), seed=3 + env)
        assert np.array_equal(run_episodes(alone, lambda o, f: rule(o), len(episodes)).returns, returns[episodes])
    with pytest.raises(ValueError, match="episodes >= 1"):
        run_episodes(make_batch_env(cfg, seed=0), act_fn, 0)


def test_episode_results_metrics() -> None:
    results = EpisodeResults(np.array([1.0, 3.0]), np.array([2, 4]), [{}, {}])
    assert results.metrics("x") == {"x/return": 2.0, "x/return_std": 1.0, "x/length": 3.0}


def step(reward: list[float], first: list[bool], last: list[bool]) -> dict[str, np.ndarray]:
    return {"reward": np.array(reward), "is_first": np.array(first), "is_last": np.array(last)}


def test_promise_bookkeeping_by_hand() -> None:
    """Horizon 3: rewards add up, promises close after 3 steps or early at ``is_last``; not live drops them."""
    tracker = PromiseTracker(horizon=3)
    assert tracker.metrics() == {}
    for env, promised in ((0, 5.0), (0, 1.0), (1, 2.0), (2, 4.0)):
        tracker.add(env, promised)
    live = np.ones(3, bool)
    tracker.observe(step([1, 2, 3], [False] * 3, [False] * 3), live)
    tracker.observe(step([1, 2, 3], [False] * 3, [False, True, False]), live)  # env 1 ends: closes after 2 steps
    assert tracker.closed == [(2.0, 4.0)] and set(tracker.open) == {0, 2}
    tracker.observe(step([0.5, 9, 3], [False, True, False], [False] * 3), np.array([True, False, True]))
    assert tracker.closed == [(2.0, 4.0), (5.0, 2.5), (1.0, 2.5), (4.0, 9.0)] and tracker.open == {}
    tracker.add(2, 7.0)
    tracker.add(0, 1.0)
    tracker.observe(step([1, 1, 1], [False, False, True], [False] * 3), np.array([True, True, False]))  # restart
    assert tracker.dropped == 1 and set(tracker.open) == {0} and tracker.open[0][0].real == 1.0
    assert len(tracker.closed) == 4
    metrics = tracker.metrics("eval")
    assert metrics == {
        "eval/promised_return": 3.0,  # (2 + 5 + 1 + 4) / 4
        "eval/real_return_h": 4.5,  # (4 + 2.5 + 2.5 + 9) / 4
        "eval/promise_gap": -1.5,  # (-2 + 2.5 - 1.5 - 5) / 4
        "eval/promise_abs_gap": 2.75,
        "eval/promises": 4.0,
    }


def test_promises_due_every_steps_of_each_episode() -> None:
    tracker = PromiseTracker(horizon=3, every=2)
    active = np.ones(3, bool)
    assert list(tracker.due(active)) == [0, 1, 2]  # each episode's first step
    tracker.observe(step([0, 0, 0], [False] * 3, [False] * 3), np.array([True, True, False]))
    assert list(tracker.due(active)) == [2]
    tracker.observe(step([0, 0, 0], [False, True, False], [False] * 3), np.array([True, False, True]))
    assert list(tracker.due(active)) == [0, 1] and list(tracker.due(np.array([True, False, True]))) == [0]
    assert len(PromiseTracker(horizon=3).due(active)) == 0  # every=0: never


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Dreamer:
    return Dreamer(make_config(["debug"], [f"run.logdir={tmp_path_factory.mktemp('eval')}"]))


def test_evaluate_promises_cartpole(agent: Dreamer, monkeypatch: pytest.MonkeyPatch) -> None:
    """3 episodes; a promise at steps 0, 5, 10, ... of each, whose real return is min(horizon, steps left)."""
    seen: list[EpisodeResults] = []

    def spy(*args: object, **kwargs: object) -> EpisodeResults:
        seen.append(run_episodes(*args, **kwargs))  # type: ignore[arg-type]
        return seen[-1]

    monkeypatch.setattr(evaluation, "run_episodes", spy)
    metrics = agent.evaluate(episodes=3, promise_every=5)
    (results,) = seen
    lengths = results.lengths
    assert len(lengths) == 3 and (lengths > 0).all() and np.array_equal(results.returns, lengths)
    assert metrics["eval/length"] == pytest.approx(lengths.mean())
    horizon = agent.config.ac.horizon
    expected = sorted(min(horizon, n - t) for n in lengths for t in range(0, n, 5))
    assert sorted(real for _, real in agent.last_promises) == expected
    assert metrics["eval/promises"] == len(expected) > 0
    keys = ("promised_return", "real_return_h", "promise_gap", "promise_abs_gap")
    assert all(math.isfinite(metrics[f"eval/{k}"]) for k in keys)


def test_evaluate_bc_head_and_unknown_head(agent: Dreamer) -> None:
    metrics = agent.evaluate(episodes=2, head="bc", promise_every=3, deterministic=False)
    assert math.isfinite(metrics["eval/return"]) and metrics["eval/promises"] > 0
    with pytest.raises(ValueError, match="'actor'.*'bc'"):
        agent.evaluate(episodes=1, head="critic")  # type: ignore[arg-type]


def test_promises_imagine_from_the_observation_the_policy_acted_on(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy that reads observations starts each imagined rollout from the real one, not a decoded one."""
    logdir = tmp_path_factory.mktemp("obs_eval")
    agent = Dreamer(make_config(["debug"], [f"run.logdir={logdir}", "ac.input=feat+obs"]))
    learner = agent.learner
    acted: list[np.ndarray] = []
    starts: list[tuple[np.ndarray, np.ndarray]] = []  # (rollout starts, what the policy acted on this step)
    policy, imagine = learner.policy, learner.imagine

    def policy_spy(obs, *args, **kwargs):  # noqa: ANN001, ANN202
        acted.append(np.array(obs["vector"]))
        return policy(obs, *args, **kwargs)

    def imagine_spy(*args, first_obs=None, **kwargs):  # noqa: ANN001, ANN202
        assert first_obs is not None
        starts.append((first_obs["vector"].cpu().numpy(), acted[-1]))
        return imagine(*args, first_obs=first_obs, **kwargs)

    monkeypatch.setattr(learner, "policy", policy_spy)
    monkeypatch.setattr(learner, "imagine", imagine_spy)
    agent.evaluate(episodes=2, promise_every=4)
    assert starts and len(starts) <= len(acted)
    for start, now in starts:  # each start is the observation one of the envs acted on at that step
        assert all(np.isclose(now, row, atol=1e-6).all(-1).any() for row in start)
