"""The online loop with env workers: a crashed worker is restarted, its episode dropped, training goes on."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from reverie import Dreamer, make_config
from reverie.logger import read_jsonl


@pytest.mark.slow
def test_crashed_worker_is_restarted_and_its_episode_discarded(tmp_path, monkeypatch, caplog) -> None:
    marker = tmp_path / "crashed"
    monkeypatch.setenv("REVERIE_TEST_CRASH_MARKER", str(marker))
    cfg = make_config(
        ["debug"],
        [
            "env.id=reverie_crash_env:CrashOnce-v0",
            "env.num_envs=2",
            "train.steps=160",
            "train.prefill=200",  # acting only: this test is about the env loop
            f"run.logdir={tmp_path / 'run'}",
            "run.log_every=20",
        ],
    )
    agent = Dreamer(cfg)
    with caplog.at_level(logging.INFO, logger="reverie"):
        agent.learn()
    assert marker.exists(), "the env never crashed: the test did not test anything"
    assert any("restarted" in r.getMessage() for r in caplog.records)
    params = sum(p.numel() for p in agent.learner.parameters() if p.requires_grad) / 1e6
    start = f"learn: device {agent.learner.device}"  # the run says where it trains, first
    assert any(
        r.getMessage().startswith(start) and f"{params:.2f}M trainable" in r.getMessage() for r in caplog.records
    )
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert any(row.get("env/restarts", 0) > 0 for row in rows)
    assert agent.state.env_steps >= 160
    # The crashed worker's partial episode was dropped from replay: fewer steps stored than taken.
    assert len(agent.replay) < agent.state.agent_steps
    sample = agent.replay.sample(4, 8)
    assert np.isfinite(sample["vector"]).all()


class Walk:
    """A user's own env (no Gymnasium): step right five times to reach the goal."""

    def __init__(self) -> None:
        self.x = self.t = 0

    @property
    def obs_space(self):
        from reverie.envs import Space, reserved_spaces

        return {"vector": Space(np.float32, (1,)), **reserved_spaces()}

    @property
    def act_space(self):
        from reverie.envs import Space

        return {"action": Space(np.int64, (), 0, 2, True)}

    def step(self, action):
        if action["reset"]:
            self.x = self.t = 0
            return self._obs(0.0, True, False)
        self.x += 1 if action["action"] == 1 else -1
        self.t += 1
        done = self.x >= 5
        return self._obs(float(done), False, done, last=done or self.t >= 30)

    def _obs(self, reward, first, terminal, last=False):
        return {
            "vector": np.array([self.x], np.float32),
            "reward": np.float32(reward),
            "is_first": first,
            "is_last": last,
            "is_terminal": terminal,
        }

    def close(self) -> None:
        pass


def test_learn_on_a_users_env_factory(tmp_path) -> None:
    from reverie.envs import check_env

    assert check_env(Walk(), max_steps=200) == []
    agent = Dreamer(make_config(["debug"], [f"run.logdir={tmp_path}", "train.steps=150", "train.prefill=64"]))
    agent.learn(Walk)
    assert agent.state.env_steps >= 150
    assert set(agent.learner.obs_space) == {"vector"}
    metrics = agent.evaluate(episodes=2)
    assert metrics["eval/length"] <= 30 and np.isfinite(metrics["eval/return"])


def test_no_evaluation_episodes_means_no_evaluation(tmp_path) -> None:
    # run.eval_episodes=0 turns evaluation off, the periodic ones included (it used to build an env batch of none).
    logdir = tmp_path / "run"
    overrides = ["train.steps=120", "train.prefill=200", "run.eval_every=40", "run.eval_episodes=0"]
    agent = Dreamer(make_config(["debug"], [*overrides, f"run.logdir={logdir}", "run.log_every=40"]))
    agent.learn()
    assert agent.state.env_steps == 120 and agent.last_eval == {}
    rows = read_jsonl(logdir / "metrics.jsonl")
    assert rows and not any(key.startswith("eval/") for row in rows for key in row)
