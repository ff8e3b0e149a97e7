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
            "env.id=tests.crash_env:CrashOnce-v0",
            "env.num_envs=2",
            "train.steps=160",
            "train.prefill=200",  # acting only: this test is about the env loop
            f"run.logdir={tmp_path / 'run'}",
            "run.log_every=20",
        ],
    )
    agent = Dreamer(cfg)
    with caplog.at_level(logging.WARNING, logger="reverie"):
        agent.learn()
    assert marker.exists(), "the env never crashed: the test did not test anything"
    assert any("restarted" in r.getMessage() for r in caplog.records)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert any(row.get("env/restarts", 0) > 0 for row in rows)
    assert agent.counters["env_steps"] >= 160
    # The crashed worker's partial episode was dropped from replay: fewer steps stored than taken.
    assert len(agent.replay) < agent.counters["agent_steps"]
    sample = agent.replay.sample(4, 8)
    assert np.isfinite(sample["vector"]).all()
