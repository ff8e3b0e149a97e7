"""Checkpoints of Reverie 0.1.0 (format 1, before the config clean-up) load and compute what they computed then.

``tests/data/checkpoints_v0_1`` holds three such checkpoints and the reference outputs they gave (see its README).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from reverie import Dreamer

DATA = Path(__file__).parent / "data" / "checkpoints_v0_1"
CASES = [("cartpole_online", "actor"), ("crafter_symbolic_offline", "bc"), ("crafter_pixels_idm", "bc")]


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(DATA / "reference.npz") as data:
        return dict(data)


@pytest.mark.parametrize(("name", "head"), CASES)
def test_format_1_checkpoint_computes_what_it_computed(
    name: str, head: str, reference: dict[str, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="reverie"):
        agent = Dreamer.load(DATA / name)
    upgraded = [r.getMessage() for r in caplog.records if "earlier Reverie (format 1)" in r.getMessage()]
    assert len(upgraded) == 1 and "\n" not in upgraded[0]
    assert "model.blocks" in upgraded[0] and "ac.obs_input" in upgraded[0]  # every dropped key is named
    learner = agent.learner
    episode = {k[len(name) + 4 :]: v for k, v in reference.items() if k.startswith(f"{name}/in/")}
    torch.manual_seed(0)
    feat = agent.encode(episode)
    deter = learner.cfg.model.deter
    np.testing.assert_allclose(feat[:, :deter], reference[f"{name}/feat_deter"], atol=1e-5)
    obs = {k: episode[k][:1] for k in learner.obs_space} | {"is_first": np.ones(1, bool)}
    torch.manual_seed(0)
    _, state, _ = learner.policy(obs, None, True, head)  # type: ignore[arg-type]
    actor = learner.actor(head)  # type: ignore[arg-type]
    seen = learner.to_tensors({k: obs[k] for k in actor.obs_keys}) or None
    logits = actor(learner.wm.feat(state), seen).logits.detach().numpy()
    np.testing.assert_allclose(logits, reference[f"{name}/logits"], atol=1e-5)


def test_format_1_settings_map_to_todays_keys() -> None:
    symbolic = Dreamer.load(DATA / "crafter_symbolic_offline")
    assert symbolic.config.model.vector_codec == "crafter_grid_delta"  # the five grid switches were all on
    assert symbolic.config.ac.input == "obs"  # obs_input=true, feat_input=false
    assert symbolic.state.has_prior  # counters["rl_started"] = 1
    pixels = Dreamer.load(DATA / "crafter_pixels_idm")
    assert pixels.config.ac.input == "feat+obs"
    assert not any(k.startswith("idm.") for k in pixels.learner.state_dict())
    assert pixels.state.offline_phase == "model" and not pixels.state.has_prior


def test_a_format_1_run_resumes_and_saves_format_2(tmp_path: Path) -> None:
    agent = Dreamer.load(DATA / "cartpole_online")
    agent.config.run.logdir = str(tmp_path / "run")
    agent.config.run.eval_episodes = 1
    agent.learn(steps=agent.state.env_steps + 80)
    assert agent.state.env_steps >= 280
    again = Dreamer.load(tmp_path / "run")
    assert again.state == agent.state
