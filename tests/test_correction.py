"""Tests of the correction loop (:mod:`reverie.correction`): the AUROC, the exploit report, watching real play
beside the model, mixed batches of recorded and real play, :func:`correct` and ``reverie correct``.

The agent is fitted for 20 offline updates (``offline`` + ``debug`` presets, an ensemble of 3) on three scripted
Crafter-symbolic episodes of 40 steps.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import crafter
import numpy as np
import pytest
import torch

import reverie.correction as correction
from reverie import Dreamer
from reverie.actor_critic import bc_loss
from reverie.checkpoint import find_checkpoint
from reverie.cli import main
from reverie.config import make_config, set_key
from reverie.correction import (
    Check,
    RealPlay,
    auroc,
    correct,
    ending_report,
    exploit_report,
    mixed_batch,
    run_replay,
    watch,
)
from reverie.data import Dataset, record
from reverie.dream import DreamEnv
from reverie.learner import Learner
from reverie.offline import dataset_replay
from reverie.replay import ReplayError
from reverie.report import build_report

REPORT_KEYS = (
    "round",
    "real_score",
    "imagined_return",
    "real_return",
    "exploit_rate",
    "exploits",
    "uncertainty_auroc",
    "reward_uncertainty_auroc",
)
LAYOUT_KEYS = ("vector", "action", "reward", "is_first", "is_last", "is_terminal")


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check(
    action_name: str = "noop",
    predicted: float = 0.0,
    real: float = 0.0,
    uncertainty: float = 0.0,
    step: int = 0,
    reward_uncertainty: float = 0.0,
) -> Check:
    return Check(0, step, 0, action_name, predicted, real, 1.0, 1.0, uncertainty, reward_uncertainty)


@pytest.fixture(scope="module")
def crafter_ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Three scripted Crafter-symbolic episodes of 40 steps (41 stored steps each)."""
    return record("crafter-symbolic", "scripted", 3, tmp_path_factory.mktemp("correct") / "ds", time_limit=40)


@pytest.fixture(scope="module")
def fitted_run(crafter_ds: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Dreamer, Path]:
    """An agent after ``fit(crafter_ds, steps=20)`` (imagination RL from update 14) and its run folder.

    Tests that change the agent load their own copy from the run folder."""
    logdir = tmp_path_factory.mktemp("correct") / "run"
    cfg = make_config(["offline", "debug"], [f"run.logdir={logdir}", "run.eval_episodes=0", "model.ensemble=3"])
    agent = Dreamer(cfg).fit(crafter_ds, steps=20)
    assert agent.state.has_prior
    return agent, logdir


def load_copy(logdir: Path, dest: Path) -> Dreamer:
    shutil.copytree(logdir, dest)
    agent = Dreamer.load(dest)
    set_key(agent.config, "run.logdir", str(dest))
    return agent


# ---------------------------------------------------------------------------------------------------
# 1. AUROC


def test_auroc_hand_checked_values() -> None:
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc(np.array([0.8, 0.9, 0.1, 0.2]), np.array([0, 0, 1, 1])) == 0.0
    assert auroc(np.full(5, 0.3), np.array([0, 1, 0, 1, 1])) == 0.5  # all tied: every pair counts half
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75  # the doctest
    # positives {0.5, 0.2}, negatives {0.5, 0.1}: pairs (0.5>0.1) 1, (0.5=0.5) 0.5, (0.2>0.1) 1, (0.2<0.5) 0
    assert auroc(np.array([0.5, 0.2, 0.5, 0.1]), np.array([True, True, False, False])) == pytest.approx(2.5 / 4)
    assert auroc(np.array([0.1, 0.2]), np.array([1, 1])) is None
    assert auroc(np.array([0.1, 0.2]), np.array([0, 0])) is None
    assert auroc(np.array([]), np.array([], bool)) is None


def test_auroc_matches_a_naive_pairwise_loop() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = rng.integers(0, 6, 40) / 5.0  # coarse values: plenty of ties
        labels = rng.random(40) < 0.3
        pos = [s for s, y in zip(scores, labels, strict=True) if y]
        neg = [s for s, y in zip(scores, labels, strict=True) if not y]
        wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
        assert auroc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))


# ---------------------------------------------------------------------------------------------------
# 2. The exploit report


def test_exploit_report_marks_counts_and_caps_examples() -> None:
    checks = [
        check("make_wood_pickaxe", predicted=1.0, real=0.0, step=0),  # promised 1, got 0: exploit
        check("make_wood_pickaxe", predicted=0.9, real=0.0, step=1),
        check("make_wood_pickaxe", predicted=0.5, real=0.0, step=2),  # gap exactly the margin: exploit
        check("make_wood_pickaxe", predicted=0.7, real=0.0, step=3),
        check("place_table", predicted=1.2, real=0.1, step=4),
        check("place_table", predicted=1.0, real=1.0, step=5),  # promise kept
        check("noop", predicted=0.49, real=0.0, step=6),  # just under the margin
        check("do", predicted=0.0, real=1.0, step=7),  # reward the model did not expect is no exploit
    ]
    report = exploit_report(checks, margin=0.5, examples=3)
    assert [c.exploit for c in checks] == [True, True, True, True, True, False, False, False]
    assert report["steps"] == 8 and report["exploit_rate"] == 5 / 8
    assert report["exploits"] == {"make_wood_pickaxe": 4, "place_table": 1}
    assert list(report["exploits"]) == ["make_wood_pickaxe", "place_table"]  # most common first
    assert [e["step"] for e in report["examples"]["make_wood_pickaxe"]] == [0, 1, 2]  # capped at 3, in order
    assert report["examples"]["place_table"] == [dataclasses.asdict(checks[4])]
    assert report["examples"]["place_table"][0]["exploit"] is True
    json.dumps(report)  # goes into correction.json as it is

    assert report["outcomes"] == {"unknown": 5}  # these checks carry no inventory effect

    again = exploit_report(checks, margin=0.8, examples=1)  # re-marks with the new margin
    assert [c.exploit for c in checks] == [True, True, False, False, True, False, False, False]
    assert again["exploits"] == {"make_wood_pickaxe": 2, "place_table": 1}
    assert [len(v) for v in again["examples"].values()] == [1, 1]


def test_exploit_outcomes_say_what_the_game_did() -> None:
    checks = [
        dataclasses.replace(check("make_wood_pickaxe", predicted=1.0), effect=False),  # nothing happened
        dataclasses.replace(check("make_wood_pickaxe", predicted=0.9), effect=False),
        dataclasses.replace(check("place_table", predicted=1.0), effect=True),  # placed, achievement done before
        dataclasses.replace(check("move_left", predicted=0.0, real=-0.7), effect=False),  # hurt, not foreseen
        dataclasses.replace(check("do", predicted=0.0, real=-0.1), effect=False),  # too small a loss to count
    ]
    report = exploit_report(checks)
    assert report["outcomes"] == {"no effect": 2, "effect, no reward": 1, "damage": 1}
    assert report["exploit_rate"] == 4 / 5 and list(report["outcomes"])[0] == "no effect"
    assert correction.outcome(check(real=-0.7)) == "damage" and correction.outcome(check()) == "unknown"


def test_exploit_report_uncertainty_means_and_auroc() -> None:
    flagged = [check(predicted=1.0, uncertainty=u) for u in (0.6, 0.8)]
    others = [check(predicted=0.0, uncertainty=u) for u in (0.1, 0.2, 0.3)]
    report = exploit_report(flagged + others)
    assert report["uncertainty_exploit"] == pytest.approx(0.7)
    assert report["uncertainty_other"] == pytest.approx(0.2)
    assert report["uncertainty_auroc"] == 1.0  # uncertainty is higher on exactly the exploit steps

    flipped = [check(predicted=1.0, uncertainty=u) for u in (0.1, 0.2)] + [check(uncertainty=0.9)]
    assert exploit_report(flipped)["uncertainty_auroc"] == 0.0

    # The reward uncertainty is scored the same way, independently of the latent one.
    both = [check(predicted=1.0, uncertainty=0.1, reward_uncertainty=0.5), check(uncertainty=0.9)]
    both.append(check(uncertainty=0.2, reward_uncertainty=0.25))
    report = exploit_report(both)
    assert report["uncertainty_auroc"] == 0.0 and report["reward_uncertainty_auroc"] == 1.0
    assert report["reward_uncertainty_exploit"] == pytest.approx(0.5)
    assert report["reward_uncertainty_other"] == pytest.approx(0.125)

    honest = exploit_report([check(uncertainty=0.4), check(uncertainty=0.6)])
    assert honest["exploit_rate"] == 0.0 and honest["exploits"] == {} and honest["examples"] == {}
    assert honest["uncertainty_exploit"] is None and honest["uncertainty_other"] == pytest.approx(0.5)
    assert honest["uncertainty_auroc"] is None


def test_exploit_report_of_no_steps() -> None:
    empty = exploit_report([])
    assert empty["steps"] == 0 and empty["exploit_rate"] == 0.0 and empty["exploits"] == {}
    assert empty["uncertainty_exploit"] is None and empty["uncertainty_other"] is None
    assert empty["uncertainty_auroc"] is None


# ---------------------------------------------------------------------------------------------------
# 3. Watching real play beside the model


def test_watch_checks_every_real_step_and_returns_dataset_episodes(
    fitted_run: tuple[Dreamer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, _ = fitted_run
    sent = record_env_steps(agent, monkeypatch)
    for seed in range(4, 12):  # the first seeds where an episode earns reward: the bookkeeping is not vacuous
        sent.clear()  # (seed 4 on a CPU; the policy trained on a GPU plays otherwise)
        torch.manual_seed(0)
        results, checks, episodes, tracker = watch(agent, 3, seed)
        if results.returns.sum() > 0:
            break
    assert len(results.returns) == len(episodes) == 3
    assert len(checks) == results.lengths.sum() == 3 * 40
    assert results.returns.sum() > 0, "no reward in any episode: pick another seed"
    assert tracker.closed  # promises were made and kept track of (every 25 steps from the first)

    names = list(crafter.constants.actions)
    assert all(c.action_name == names[c.action] for c in checks)
    assert "noop" in names and "make_wood_pickaxe" in names
    assert all(np.isfinite([c.predicted_reward, c.predicted_cont, c.uncertainty]).all() for c in checks)
    assert all(c.uncertainty > 0 for c in checks)  # ensemble of 3: the members never agree exactly
    assert all(np.isfinite(c.reward_uncertainty) and c.reward_uncertainty >= 0 for c in checks)

    by_episode: dict[int, list[Check]] = {}
    for c in checks:
        by_episode.setdefault(c.episode, []).append(c)
    assert sorted(by_episode) == [0, 1, 2]  # one episode per env: episode k ran in env k
    matched = set()
    for k, own in by_episode.items():
        assert [c.step for c in own] == list(range(results.lengths[k]))
        assert sum(c.real_reward for c in own) == pytest.approx(results.returns[k])
        (index,) = [i for i, ep in enumerate(episodes) if list(ep["action"][1:]) == [c.action for c in own]]
        matched.add(index)
        ep, real = episodes[index], env_episode(sent, k)
        for key in LAYOUT_KEYS:  # exactly what env k emitted, with the action that led to each step
            np.testing.assert_array_equal(ep[key], real[key], err_msg=key)
        np.testing.assert_array_equal(ep["reward"][1:], [c.real_reward for c in own])
        np.testing.assert_allclose(ep["promised_reward"][1:], [c.predicted_reward for c in own], rtol=1e-6)
        assert ep["promised_reward"][0] == 0.0
        np.testing.assert_array_equal(1.0 - ep["is_terminal"][1:], [c.real_cont for c in own])
    assert matched == {0, 1, 2}

    vitals = [f"log/inventory_{name}" for name in ("health", "food", "drink", "energy")]
    items = [k for k in sent[0][1] if k.startswith("log/inventory_") and k not in vitals]
    assert len(items) == 12  # sapling, wood, ..., iron_sword
    for k, own in by_episode.items():  # effect: the inventory (vitals aside) after the step differs from before
        held = []
        for _, obs in sent:
            held.append([obs[key][k] for key in items])
            if obs["is_last"][k]:
                break
        changed = (np.diff(np.array(held), axis=0) != 0).any(-1)
        assert [c.effect for c in own] == changed.tolist()
    assert all(not c.effect for c in checks if c.action_name == "noop")
    assert any(c.effect for c in checks)  # something was collected, e.g. the wood of the rewarded episode

    for ep in episodes:
        length = len(ep["is_first"])
        assert {*LAYOUT_KEYS, "promised_reward", "promised_cont"} == set(ep)  # the model's and the reserved keys
        assert all(len(v) == length for v in ep.values()) and length == 41
        assert ep["vector"].shape == (41, *agent.learner.obs_space["vector"].shape)
        assert ep["action"][0] == 0 and ep["action"].dtype == np.int64 and ep["reward"][0] == 0.0
        np.testing.assert_array_equal(ep["is_first"], np.arange(length) == 0)
        np.testing.assert_array_equal(ep["is_last"], np.arange(length) == length - 1)
    assert sorted(float(ep["reward"].sum()) for ep in episodes) == pytest.approx(sorted(results.returns))


def record_env_steps(agent: Dreamer, monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Make ``agent.make_envs`` log every batched step: (actions sent (N,), observations returned)."""
    sent: list[tuple[np.ndarray, dict[str, Any]]] = []
    make_envs = agent.make_envs

    def logged_envs(*args: Any, **kwargs: Any) -> Any:
        envs = make_envs(*args, **kwargs)
        step = envs.step

        def logged_step(action: dict[str, Any]) -> dict[str, Any]:
            obs = step(action)
            sent.append((np.array(action["action"]), {k: np.array(v) for k, v in obs.items()}))
            return obs

        monkeypatch.setattr(envs, "step", logged_step)
        return envs

    monkeypatch.setattr(agent, "make_envs", logged_envs)
    return sent


def env_episode(sent: list[tuple[np.ndarray, dict[str, Any]]], i: int) -> dict[str, np.ndarray]:
    """Env ``i``'s first episode as the env saw it (Crafter is not reproducible from its seed: replaying the
    actions in a fresh env may diverge, as its creatures are balanced by picking from sets)."""
    steps = []
    for action, obs in sent:
        steps.append({"action": action[i], **{k: obs[k][i] for k in LAYOUT_KEYS if k != "action"}})
        if obs["is_last"][i]:
            break
    assert steps[0]["is_first"]
    steps[0]["action"] = np.zeros_like(steps[0]["action"])  # the reset's action is no action
    return {k: np.stack([s[k] for s in steps]) for k in LAYOUT_KEYS}


# ---------------------------------------------------------------------------------------------------
# 4. Mixed batches of recorded and real play


def fake_real_episodes(ds: Dataset, reward: float, length: int | None = None) -> list[dict[str, np.ndarray]]:
    """Dataset episodes in the layout :func:`watch` returns, cut to ``length`` steps, every reward ``reward``."""
    out = []
    for ep in ds.episodes(masks=False):
        ep = {k: ep[k][:length] for k in LAYOUT_KEYS}
        ep["reward"] = np.full_like(ep["reward"], reward)
        out.append(ep)
    return out


def test_mixed_batch_rows_and_bc_mask(crafter_ds: Dataset) -> None:
    data = dataset_replay(crafter_ds, 64, seed=0)
    real = RealPlay(fake_real_episodes(crafter_ds, 7.0), seed=0)
    assert not (data.sample(64, 8)["reward"] == 7.0).any()  # the real rows are recognisable

    batch = mixed_batch(data, real, 8, 8, real_frac=0.25)
    assert set(batch) == set(data.sample(1, 8)) | {"bc_mask"}  # every dataset key, the label masks included
    assert all(v.shape[:2] == (8, 8) for v in batch.values())
    from_real = (batch["reward"] == 7.0).all(1)
    assert from_real.tolist() == [False] * 6 + [True] * 2
    assert not (batch["reward"][:6] == 7.0).any()
    np.testing.assert_array_equal(batch["bc_mask"], np.repeat([[1.0]] * 6 + [[0.0]] * 2, 8, 1))
    assert batch["bc_mask"].dtype == np.float32
    np.testing.assert_array_equal(batch["action_mask"][6:], 1.0)  # real actions and rewards are labelled
    np.testing.assert_array_equal(batch["reward_mask"][6:], 1.0)

    short = RealPlay(fake_real_episodes(crafter_ds, 7.0, length=5)[:1], seed=0)
    assert short.longest_stream() == 5
    for other in (None, short):
        batch = mixed_batch(data, other, 8, 8, real_frac=0.25)  # none, or none as long as a row: all dataset rows
        assert not (batch["reward"] == 7.0).any() and batch["reward"].shape == (8, 8)
        np.testing.assert_array_equal(batch["bc_mask"], np.ones((8, 8)))


def test_real_play_aims_windows_at_the_models_misses(crafter_ds: Dataset) -> None:
    eps = fake_real_episodes(crafter_ds, 0.0)  # 3 episodes of 41 steps
    for e, ep in enumerate(eps):
        ep["where"] = 100 * e + np.arange(len(ep["reward"]))  # (episode, step) of every row
        ep["promised_reward"] = np.zeros(len(ep["reward"]), np.float32)
    eps[1]["promised_reward"][30] = 0.9  # promised, not given: an exploit
    eps[2]["reward"][5] = 1.0  # given, not promised: also a miss
    eps[0]["promised_reward"][12] = 0.3  # within the margin: not a miss

    play = RealPlay(eps, focus=1.0, margin=0.5, seed=0)
    assert play.misses == [(1, 30), (2, 5)]
    windows = play.sample(300, 8)
    assert "promised_reward" not in windows and windows["where"].shape == (300, 8)
    np.testing.assert_array_equal(np.diff(windows["where"], axis=1), 1)  # inside one episode, in order
    holds = [{130, 205} & set(row.tolist()) for row in windows["where"]]
    assert all(len(h) == 1 for h in holds)  # every window holds one of the misses
    assert {next(iter(h)) for h in holds} == {130, 205}
    place = [int(np.flatnonzero(row == 130)[0]) for row in windows["where"] if 130 in row]
    assert len(set(place)) == 8  # at every place in the window, so the model sees what led to it
    np.testing.assert_array_equal(windows["action_mask"], 1.0)
    np.testing.assert_array_equal(windows["reward_mask"], 1.0)

    uniform = RealPlay(eps, focus=0.0, margin=0.5, seed=0).sample(600, 8)["where"]
    share = np.mean([bool({130, 205} & set(row.tolist())) for row in uniform])
    assert 0.05 < share < 0.35  # 2 * 8 of the 3 * 34 window starts hold a miss: about 0.16
    assert len({int(row[0]) for row in uniform}) > 60  # starts spread over all episodes

    mixed = RealPlay([{k: v[:5] for k, v in eps[0].items()}, eps[1]], focus=0.0, seed=0)
    assert mixed.longest_stream() == 41 and (mixed.sample(50, 8)["where"] >= 100).all()  # too short: never drawn
    with pytest.raises(ValueError, match="No real episode is 42 steps long"):
        mixed.sample(1, 42)
    with pytest.raises(ValueError, match="focus must lie in"):
        RealPlay(eps, focus=1.5)


def test_mixed_batch_keeps_a_dataset_row_and_rejects_bad_fractions(crafter_ds: Dataset) -> None:
    data = dataset_replay(crafter_ds, 64, seed=0)
    real = RealPlay(fake_real_episodes(crafter_ds, 7.0), seed=0)
    batch = mixed_batch(data, real, 4, 8, real_frac=0.9)  # round(3.6) = 4 rows would leave no recordings
    assert (batch["reward"][3:] == 7.0).all() and batch["bc_mask"][:1].all() and not batch["bc_mask"][1:].any()
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="real_frac"):
            mixed_batch(data, real, 4, 8, real_frac=bad)


def test_bc_loss_ignores_rows_with_bc_mask_zero(crafter_ds: Dataset, fitted_run: tuple[Dreamer, Path]) -> None:
    agent, _ = fitted_run
    learner = agent.learner
    data = dataset_replay(crafter_ds, 64, seed=0)
    real = RealPlay(fake_real_episodes(crafter_ds, 7.0), seed=1)
    batch = learner.to_tensors(mixed_batch(data, real, 8, 8, real_frac=0.25))
    feat = torch.randn(8, 8, agent.feat_dim, generator=torch.Generator().manual_seed(0)).to(learner.device)
    with torch.no_grad():
        mixed, _ = bc_loss(learner.bc, feat, batch)
        rows = {k: v[:6] for k, v in batch.items() if k != "bc_mask"}
        dataset_only, _ = bc_loss(learner.bc, feat[:6], rows)
        everything, _ = bc_loss(learner.bc, feat, {k: v for k, v in batch.items() if k != "bc_mask"})
        other = {**batch, "action": batch["action"].clone()}
        other["action"][6:] = torch.roll(other["action"][6:], 1, -1)  # the agent's own actions changed
        changed, _ = bc_loss(learner.bc, feat, other)
    assert mixed.item() == pytest.approx(dataset_only.item(), rel=1e-6)
    # The real rows would have counted (by little where the head is near uniform: 1e-4 apart on a GPU run).
    assert mixed.item() != pytest.approx(everything.item(), rel=1e-5)
    assert changed.item() == mixed.item()


# ---------------------------------------------------------------------------------------------------
# 5. The correction loop


def test_correct_fine_tunes_between_rounds(
    crafter_ds: Dataset, fitted_run: tuple[Dreamer, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = load_copy(fitted_run[1], tmp_path / "run")
    before = {"wm": state_of(agent.learner.wm), "actor": state_of(agent.learner.ac.actor)}
    counters = dataclasses.replace(agent.state)
    seen: list[dict[str, Any]] = []  # the networks as each round's real play found them
    phases: list[str] = []
    real_rows: list[float] = []
    real_watch, real_update = correction.watch, Learner.update

    def spy_watch(*args: Any, **kwargs: Any) -> Any:
        seen.append({"wm": state_of(agent.learner.wm), "actor": state_of(agent.learner.ac.actor)})
        return real_watch(*args, **kwargs)

    def spy_update(learner: Learner, batch: dict[str, np.ndarray], phase: Any, *args: Any) -> Any:
        phases.append(phase)
        real_rows.append(float((batch["bc_mask"] == 0).all(1).sum()))
        return real_update(learner, batch, phase, *args)

    monkeypatch.setattr(correction, "watch", spy_watch)
    monkeypatch.setattr(Learner, "update", spy_update)
    so_far: list[list[int]] = []
    reports = correct(
        agent,
        crafter_ds,
        rounds=1,
        episodes=2,
        finetune_steps=3,
        rl_steps=3,
        on_round=lambda rows: so_far.append([r["round"] for r in rows]),
    )

    assert [r["round"] for r in reports] == [0, 1] and so_far == [[0], [0, 1]]
    for r in reports:
        assert set(REPORT_KEYS) <= set(r)
        assert r["steps"] == 2 * 40 and 0.0 <= r["exploit_rate"] <= 1.0
        assert r["real_score"] is not None and np.isfinite(r["imagined_return"]) and np.isfinite(r["real_return"])
        assert sum(r["exploits"].values()) == round(r["exploit_rate"] * r["steps"])
    json.dumps(reports)  # what correction.json holds
    assert [r["real_steps"] for r in reports] == [2 * 41, 4 * 41]  # stored steps (reset included) so far

    assert phases == ["model"] * 3 + ["rl"] * 3 and real_rows == [1.0] * 6  # 0.25 of a batch of 4 is real play
    assert len(seen) == 2 and same(seen[0]["wm"], before["wm"]) and same(seen[0]["actor"], before["actor"])
    assert not same(seen[1]["wm"], seen[0]["wm"])  # fine-tuned between the rounds
    assert not same(seen[1]["actor"], seen[0]["actor"])  # and the policy trained in imagination again
    assert same(state_of(agent.learner.wm), seen[1]["wm"])  # nothing after the last round's real play
    assert agent.state.env_steps - counters.env_steps == reports[-1]["real_steps"]
    assert agent.state.updates - counters.updates == 6
    assert agent.state.offline_updates == counters.offline_updates


def test_correct_repeats_with_the_same_seed(
    crafter_ds: Dataset, fitted_run: tuple[Dreamer, Path], tmp_path: Path
) -> None:
    def run(name: str, seed: int) -> list[tuple[Any, ...]]:
        agent = load_copy(fitted_run[1], tmp_path / name)
        torch.manual_seed(1234 + len(name))  # whatever the global state was before
        # one round of watching: the later rounds also hang on Crafter's creatures, which do not always
        # replay (their updates follow object hashes), so they are not compared
        reports = correct(agent, crafter_ds, rounds=0, episodes=2, seed=seed)
        return [(r["exploit_rate"], r["real_return"], r["imagined_return"], r["steps"]) for r in reports]

    first = run("a", 3)
    assert run("bb", 3) == first  # sampled actions and latents follow the seed
    assert run("ccc", 4) != first


def test_correct_refuses_negative_budgets(fitted_run: tuple[Dreamer, Path], tmp_path: Path) -> None:
    agent = load_copy(fitted_run[1], tmp_path / "run")
    for bad in ({"finetune_steps": -3}, {"rl_steps": -1}, {"margin": -0.5}):
        with pytest.raises(ValueError, match="must be 0 or more"):
            correct(agent, None, rounds=1, episodes=1, **bad)


# ---------------------------------------------------------------------------------------------------
# 6. The command line


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["correct", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


FAST = ("--rounds", "1", "--episodes", "2", "--finetune-steps", "2", "--rl-steps", "2")


def test_cli_correct_writes_report_plot_and_checkpoint(
    crafter_ds: Dataset, fitted_run: tuple[Dreamer, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(fitted_run[1], run)
    meta = (run / "checkpoint" / "meta.json").read_text()
    out = tmp_path / "corrected"
    argv = ("--focus", "0.8", "--set", "offline.imag_starts=32")
    code, stdout, err = run_cli(capsys, "--from", run, "--data", crafter_ds.folder, *FAST, *argv, "--out", out)
    assert code == 0, err

    written = json.loads((out / "correction.json").read_text())
    assert written["seeds"] == 1 and [r["round"] for r in written["rounds"]] == [0, 1]
    assert all(set(REPORT_KEYS) <= set(r) for r in written["rounds"])
    assert (out / "correction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = build_report(out)  # the HTML report's "Correction rounds" section: one row per round
    assert "Correction rounds" in page and "AUROC reward" in page and "what the game did" in page
    for r in written["rounds"]:  # Crafter logs its inventory: every exploit has an outcome, none unknown
        assert sum(r["outcomes"].values()) == sum(r["exploits"].values()) and "unknown" not in r["outcomes"]
    assert page.count("<tr><td>") >= len(written["rounds"])
    summary = json.loads(stdout.strip().splitlines()[-1])
    each = {k: [r[k] for r in written["rounds"]] for k in ("real_return", "exploit_rate", "missed_endings")}
    (kept,) = [r["round"] for r in written["rounds"] if r["kept"]]  # the best round's policy is what --out holds
    assert kept == max(range(2), key=lambda i: (each["real_return"][i], i))
    assert summary == {"out": str(out), **each, "kept_round": kept}

    corrected = Dreamer.load(out)
    assert corrected.config.offline.imag_starts == 32  # the policy was trained with the override, and keeps it
    assert find_checkpoint(out) == out / "checkpoint"
    assert corrected.state.env_steps == written["rounds"][-1]["real_steps"]
    assert corrected.state.updates == fitted_run[0].state.updates + 4
    assert not same(state_of(corrected.learner.wm), state_of(fitted_run[0].learner.wm))
    assert (run / "checkpoint" / "meta.json").read_text() == meta  # --from is left as it was


def test_cli_correct_keeps_finished_rounds_when_a_later_one_crashes(
    crafter_ds: Dataset,
    fitted_run: tuple[Dreamer, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_update = Learner.update

    def crash(learner: Learner, batch: Any, phase: Any, *args: Any) -> Any:
        if phase == "rl":
            raise RuntimeError("killed while training in imagination")
        return real_update(learner, batch, phase, *args)

    monkeypatch.setattr(Learner, "update", crash)
    out = tmp_path / "corrected"
    with pytest.raises(RuntimeError, match="killed"):
        run_cli(capsys, "--from", fitted_run[1], "--data", crafter_ds.folder, *FAST, "--out", out)
    written = json.loads((out / "correction.json").read_text())
    assert [r["round"] for r in written["rounds"]] == [0]  # round 0 was watched and kept
    saved = Dreamer.load(out)
    assert saved.state.env_steps == fitted_run[0].state.env_steps + written["rounds"][0]["real_steps"]
    assert same(state_of(saved.learner.wm), state_of(fitted_run[0].learner.wm))  # the agent round 0 watched


def test_cli_correct_errors(
    crafter_ds: Dataset,
    fitted_run: tuple[Dreamer, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    one_line: Callable[..., None],
) -> None:
    run, out = fitted_run[1], tmp_path / "out"
    missing = tmp_path / "no-such-data"
    code, _, err = run_cli(capsys, "--from", run, "--data", missing, *FAST, "--out", out)
    assert code == 2 and err.startswith("reverie: error: ")
    one_line(err, str(missing))
    assert not out.exists()

    for override, problem in (("model.units=8", "Only offline.* keys"), ("offline.data_prior_kl=-1", ">= 0")):
        argv = [*FAST, "--set", override]
        code, _, err = run_cli(capsys, "--from", run, "--data", crafter_ds.folder, *argv, "--out", out)
        assert code == 2 and err.startswith("reverie: error: ")
        one_line(err, problem)
        assert not out.exists()

    for flag, value in (("--episodes", "0"), ("--rounds", "-1")):
        argv = [*FAST, flag, value]  # the later flag wins
        code, _, err = run_cli(capsys, "--from", run, "--data", crafter_ds.folder, *argv, "--out", out)
        assert code == 2 and err.startswith("reverie: error: ")
        one_line(err, "--episodes >= 1")
        assert not out.exists()

    for flag, value in (("--finetune-steps", "-3"), ("--rl-steps", "-1"), ("--margin", "-0.5")):
        code, _, err = run_cli(capsys, "--from", run, "--data", crafter_ds.folder, *FAST, flag, value, "--out", out)
        assert code == 2 and err.startswith("reverie: error: ")
        one_line(err, f"{flag} must be 0 or more")
        assert not out.exists()


def test_cli_correct_from_a_checkpoint_folder_updates_its_run(
    crafter_ds: Dataset, fitted_run: tuple[Dreamer, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(fitted_run[1], run)
    code, _, err = run_cli(capsys, "--from", run / "checkpoint", "--data", crafter_ds.folder, *FAST)
    assert code == 0, err
    assert Dreamer.load(run).state.env_steps > 0  # the run now holds the corrected agent
    assert not (run / "checkpoint" / "checkpoint").exists()


# ---------------------------------------------------------------------------------------------------
# 7. Any learner: a policy that trains in the dream, on an online run (its own replay) and continuous actions


class ConstantLearner:
    """Always the same action; records what it was trained on and what it saw."""

    def __init__(self, action: Any):
        self.action, self.trained, self.seen = action, [], []

    def learn(self, env: Any, steps: int) -> None:
        self.trained.append((env, steps, state_of(env.agent.learner.wm)))

    def act(self, obs: Any) -> Any:
        self.seen.append(obs)
        return self.action


def make_constant_learner(seed: int) -> ConstantLearner:
    """``reverie correct --learner test_correction:make_constant_learner``: always push right."""
    return ConstantLearner(1)


def ending_check(cont: float, real_cont: float, uncertainty: float = 0.0, unknown: bool = False) -> Check:
    return Check(0, 0, 0, "a", 0.0, 0.0, cont, real_cont, uncertainty, 0.0, unknown)


def test_ending_report_counts_missed_and_false_endings() -> None:
    checks = [
        ending_check(0.9, 0.0, 0.5, True),  # a real ending the model missed (it said go on), flagged unknown
        ending_check(0.2, 0.0, 0.1),  # a real ending it saw
        ending_check(0.3, 1.0, 0.2),  # a false ending
        ending_check(0.99, 1.0, 0.0),
    ]
    report = ending_report(checks)
    assert (report["endings"], report["missed_endings"], report["false_endings"]) == (2, 1, 1)
    assert report["ending_cont"] == pytest.approx(0.55)
    assert report["ending_auroc"] == auroc(np.array([0.1, 0.8, 0.7, 0.01]), np.array([1, 1, 0, 0]))
    assert report["ending_uncertainty_auroc"] == 0.75 and report["ending_unknown_rate"] == 0.5
    assert [e["predicted_cont"] for e in report["ending_examples"]] == [0.9]
    none = ending_report([ending_check(0.9, 1.0)])
    assert none["endings"] == 0 and none["ending_auroc"] is None and none["ending_cont"] is None


def test_real_play_aims_at_the_real_endings() -> None:
    length = 12
    ep = {
        "is_first": np.arange(length) == 0,
        "is_terminal": np.arange(length) == length - 1,
        "reward": np.ones(length, np.float32),
        "promised_reward": np.ones(length, np.float32),
        "promised_cont": np.r_[np.ones(length - 1), 0.9].astype(np.float32),  # go on, said the model at the end
    }
    assert RealPlay([ep]).misses == [(0, length - 1)]
    seen = {**ep, "promised_cont": np.r_[np.ones(length - 1), 0.1].astype(np.float32)}
    assert RealPlay([seen]).misses == [(0, length - 1)]  # also where it saw the ending: it is to keep seeing it
    cut = {**seen, "is_terminal": np.zeros(length, bool)}  # a time limit: no ending to aim at
    assert RealPlay([cut]).misses == []
    unwatched = {k: v for k, v in ep.items() if k != "promised_cont"}  # real play recorded without the model
    assert RealPlay([unwatched]).misses == []


def test_correct_any_learner_on_an_online_run(vector_run: Path, tmp_path: Path) -> None:
    agent = load_copy(vector_run, tmp_path / "run")
    before = {"wm": state_of(agent.learner.wm), "actor": state_of(agent.learner.ac.actor)}
    learner = ConstantLearner(1)
    reports = correct(agent, None, rounds=1, episodes=2, finetune_steps=2, learner=learner, dream_steps=7)

    assert [r["round"] for r in reports] == [0, 1]
    ((env, steps, wm),) = learner.trained  # after round 0's fine-tuning, in the corrected dream
    assert isinstance(env, DreamEnv) and env.agent is agent and steps == 7
    source = env.start_source()  # the dreams start from moments of round 0's real play, and are short
    assert env.max_steps == correction.BRANCH_STEPS
    assert source["source"] == "dataset" and source["episodes"] == 2 and source["steps"] == reports[0]["real_steps"]
    assert not same(wm, before["wm"]) and same(wm, state_of(agent.learner.wm))
    assert same(state_of(agent.learner.ac.actor), before["actor"])  # the agent's own actor did not train
    space = DreamEnv(agent, real_env=False).observation_space
    assert learner.seen and all(space.contains(obs) for obs in learner.seen)  # observations as the dream gives them
    for r in reports:  # always right: CartPole ends each episode by falling, well within its time limit
        assert r["endings"] == 2 and r["real_return"] < 50 and r["imagined_return"] is None
        assert 0 <= r["missed_endings"] <= 2 and r["ending_auroc"] is not None
    json.dumps(reports)


class SwitchingLearner:
    """Balances the pole until it first trains, then always pushes left; its weights are the number of trainings."""

    def __init__(self) -> None:
        self.trainings = 0

    def learn(self, env: Any, steps: int) -> None:
        self.trainings += 1

    def act(self, obs: Any) -> Any:
        return int(obs[2] + 0.5 * obs[3] > 0) if self.trainings == 0 else 0

    def state_dict(self) -> dict[str, int]:
        return {"trainings": self.trainings}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.trainings = state["trainings"]


def test_correct_hands_back_the_round_that_played_best(vector_run: Path, tmp_path: Path) -> None:
    agent = load_copy(vector_run, tmp_path / "run")
    learner = SwitchingLearner()
    reports = correct(agent, None, rounds=2, episodes=2, finetune_steps=2, learner=learner, dream_steps=3)
    returns = [r["real_return"] for r in reports]
    assert returns[0] > 3 * max(returns[1:])  # balancing, then pushing left: the corrected learner played worse
    assert [r["kept"] for r in reports] == [True, False, False]
    assert learner.trainings == 0  # handed back as it played in round 0

    class Forgetful(SwitchingLearner):  # no weights to put back: the last round's policy stays
        state_dict = load_state_dict = None  # type: ignore[assignment]

    forgetful = Forgetful()
    reports = correct(agent, None, rounds=1, episodes=2, finetune_steps=2, learner=forgetful, dream_steps=3)
    assert [r["kept"] for r in reports] == [False, True] and forgetful.trainings == 1


def test_correct_hands_back_the_agent_of_its_best_round(
    vector_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's own actor comes back with the model it was trained in, from the round whose real play scored
    highest; a later round that played as well wins the tie (its model has seen more real play)."""
    agent = load_copy(vector_run, tmp_path / "run")
    weights, watch = [], correction.watch
    scripted = iter([30.0, 10.0, 30.0, 20.0])  # real returns of rounds 0-3: round 2 ties round 0, and is later

    def watch_scripted(agent: Dreamer, *args: Any, **kwargs: Any) -> Any:
        results, *rest = watch(agent, *args, **kwargs)
        weights.append(state_of(agent.learner))
        results.returns = np.full_like(results.returns, next(scripted))
        return results, *rest

    monkeypatch.setattr(correction, "watch", watch_scripted)
    reports = correct(agent, None, rounds=3, episodes=1, finetune_steps=2, rl_steps=2)
    assert [r["kept"] for r in reports] == [False, False, True, False]
    assert not same(weights[2], weights[3]) and not same(weights[2], weights[0])  # each round moved the agent
    assert same(state_of(agent.learner), weights[2])  # model, actor and critic as they played round 2


def test_correct_runs_on_a_transformer_with_its_ensemble(tmp_path: Path, debug_config: Callable[..., Any]) -> None:
    """The correction loop, unchanged, on the transformer world model: the real play is watched with its
    ensemble's doubt at every step, the model is fine-tuned, and the learner's corrected dream ends where the
    model does not know (on by default with an ensemble)."""
    over = ["train.steps=80", "run.eval_episodes=0", "model.kind=transformer", "model.ensemble=3"]
    agent = Dreamer(debug_config(tmp_path / "run", *over)).learn()
    before = state_of(agent.learner.wm)
    learner = ConstantLearner(1)
    reports = correct(agent, None, rounds=1, episodes=2, finetune_steps=2, learner=learner, dream_steps=7)

    ((env, steps, wm),) = learner.trained
    assert isinstance(env, DreamEnv) and env.end_unknown and steps == 7
    assert not same(wm, before)  # fine-tuned on the real play before the learner trained
    for r in reports:
        assert r["endings"] == 2 and r["ending_auroc"] is not None
        assert r["uncertainty_other"] > 0 and r["ending_uncertainty_auroc"] is not None


def test_watch_any_policy_with_continuous_actions(
    tmp_path: Path, debug_config: Callable[..., Any], one_line: Callable[..., None]
) -> None:
    cfg = debug_config(tmp_path / "pendulum", "env.id=Pendulum-v1", "train.steps=80", "run.eval_episodes=0")
    agent = Dreamer(cfg).learn()
    results, checks, episodes, tracker = watch(agent, 1, 0, policy=lambda obs: np.array([0.5], np.float32))
    assert len(checks) == results.lengths.sum() == 200 and not tracker.closed
    assert all(c.action == [0.5] and c.action_name == "action" for c in checks)
    (ep,) = episodes
    np.testing.assert_array_equal(ep["action"][1:], np.full((200, 1), 0.5, np.float32))
    assert (ep["action"][0] == 0).all() and ep["promised_cont"][0] == 1.0
    report = exploit_report(checks)
    assert report["endings"] == 0 and report["ending_auroc"] is None  # Pendulum is cut by its time limit only
    with pytest.raises(ReplayError) as err:
        run_replay(tmp_path / "elsewhere", cfg)
    one_line(str(err.value), "No replay at", "--data")


def test_cli_correct_any_learner_without_data(
    vector_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_line: Callable[..., None]
) -> None:
    out = tmp_path / "out"
    learner = "test_correction:make_constant_learner"
    argv = ("--rounds", "1", "--episodes", "2", "--finetune-steps", "2", "--dream-steps", "5")
    code, stdout, err = run_cli(capsys, "--from", vector_run, "--learner", learner, *argv, "--out", out)
    assert code == 0, err
    summary = json.loads(stdout.splitlines()[-1])
    assert len(summary["real_return"]) == 2 and all(r < 50 for r in summary["real_return"])
    assert summary["kept_round"] == 1  # a learner without state_dict: its last round's policy is the one there is
    assert [r["round"] for r in json.loads((out / "correction.json").read_text())["rounds"]] == [0, 1]
    for bad, problem in (("nothing", "Unknown learner"), ("no_such_module:f", "cannot be imported")):
        code, _, err = run_cli(capsys, "--from", vector_run, "--learner", bad, *argv, "--out", tmp_path / "x")
        assert code == 2 and err.startswith("reverie: error: ")
        one_line(err, problem)
    empty = tmp_path / "no-replay"
    shutil.copytree(vector_run, empty, ignore=shutil.ignore_patterns("replay"))
    code, _, err = run_cli(capsys, "--from", empty, *argv, "--out", tmp_path / "y")
    assert code == 2
    one_line(err, "No replay at", "--data")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_sb3_learner_trains_in_the_dream_acts_and_saves(vector_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    from reverie.learners import make_learner

    agent = Dreamer.load(vector_run)
    learner = make_learner("sb3", seed=0)
    learner.learn(DreamEnv(agent, seed=0), 64)  # one rollout of PPO's 2048 steps
    assert type(learner.model).__name__ == "PPO" and learner.model.num_timesteps == 2048  # type: ignore[attr-defined]
    env = DreamEnv(agent, seed=1)
    obs, _ = env.reset()
    assert env.action_space.contains(int(learner.act(obs)))
    learner.learn(env, 64)  # keeps training, in the new env
    assert learner.model.num_timesteps == 4096  # type: ignore[attr-defined]
    weights = torch.load(learner.save(tmp_path / "learner"), weights_only=True)  # type: ignore[attr-defined]
    assert weights and all(isinstance(v, torch.Tensor) for v in weights.values())
