"""Offline learning (``Dreamer.fit``) and the update phases of ``Learner.update``: PMPO and the policy KL, the
latent ensemble and pessimism, behaviour cloning (plain and return-weighted), missing labels, the phases in order,
checkpoints and resume, features for other learners, policy heads that read observations, online after offline.

Every run uses the ``offline`` then ``debug`` presets and a few dozen updates on tiny recordings.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal, kl_divergence

from reverie import Dreamer
from reverie.actor_critic import Policy
from reverie.cli import main
from reverie.config import Config, ConfigError, make_config, set_key
from reverie.data import Dataset, record
from reverie.envs import Space
from reverie.functional import pmpo_loss, return_to_go
from reverie.learner import Learner
from reverie.logger import read_jsonl
from reverie.offline import dataset_replay
from reverie.world_model import UNCERTAINTY_QUANTILE, Decoder, Encoder, LatentEnsemble, WorldModel

KEYS = ("vector", "action", "reward", "is_first", "is_last", "is_terminal", "action_mask", "reward_mask")


def offline_config(logdir: str | Path, *overrides: str) -> Config:
    """The ``offline`` then ``debug`` presets (as ``reverie train-offline --preset debug``), no final evaluation."""
    return make_config(["offline", "debug"], [f"run.logdir={logdir}", "run.eval_episodes=0", *overrides])


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def windows(dataset: Dataset, length: int) -> dict[str, np.ndarray]:
    """All episodes one after the other (as the replay holds them), cut into rows of ``length`` steps: (B, T, ...)."""
    episodes = list(dataset.episodes())
    stream = {k: np.concatenate([e[k] for e in episodes]) for k in KEYS}
    rows = len(stream["is_first"]) // length
    return {k: v[: rows * length].reshape(rows, length, *v.shape[1:]) for k, v in stream.items()}


def vector_learner(cfg: Config, rule_data: Any, act_space: Space | None = None) -> Learner:
    return Learner(cfg, {"vector": rule_data.OBS_SPACE["vector"]}, act_space or rule_data.DISCRETE)


@pytest.fixture(scope="module")
def rule_ds(rule_data: Any, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """6 CartPole-format episodes of 40 random observations; the next action is ``rule(obs)``; episode 2 unlabelled."""
    return rule_data.write(tmp_path_factory.mktemp("offline") / "rule", [True, True, False, True, True, True])


@pytest.fixture(scope="module")
def mixed_ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Random CartPole play, half the episodes without actions and half without rewards."""
    folder = tmp_path_factory.mktemp("offline") / "mixed"
    return record("CartPole-v1", "random", 8, folder, seed=3, time_limit=40, action_frac=0.5, reward_frac=0.5)


# ---------------------------------------------------------------------------------------------------
# 1-3. The math: PMPO, the policy KL, the latent ensemble


def test_pmpo_loss_hand_checked_value_and_weights() -> None:
    logp = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    adv = torch.tensor([1.0, -1.0, 2.0, -2.0])
    # positive set {0, 2}: mean logp -2; negative set {1, 3}: mean -3 -> -0.5 * -2 + 0.5 * -3 = -0.5
    assert pmpo_loss(logp, adv, torch.ones(4), 0.5).item() == pytest.approx(-0.5)
    assert pmpo_loss(logp, adv, torch.ones(4), 0.8).item() == pytest.approx(-0.8 * -2 + 0.2 * -3)
    # weights [1, 1, 3, 0]: positive mean (-1 - 9) / 4 = -2.5; negative mean -2 / 1 -> 1.25 - 1.0
    assert pmpo_loss(logp, adv, torch.tensor([1.0, 1.0, 3.0, 0.0]), 0.5).item() == pytest.approx(0.25)
    # a zero advantage counts as positive; only the sign matters, so scaling advantages changes nothing
    zero = torch.tensor([0.0, -1.0, 2.0, -2.0])
    assert pmpo_loss(logp, zero, torch.ones(4)).item() == pytest.approx(-0.5)
    assert pmpo_loss(logp, 100 * adv, torch.ones(4)).item() == pytest.approx(-0.5)
    # one set empty: the other set's mean alone
    assert pmpo_loss(logp, adv.abs(), torch.ones(4), 0.5).item() == pytest.approx(-0.5 * -2.5)


def test_pmpo_loss_matches_a_naive_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    logp, adv, weight = (
        -torch.rand(3, 7, generator=gen),
        torch.randn(3, 7, generator=gen),
        torch.rand(3, 7, generator=gen),
    )
    pos = [(w, lp) for lp, a, w in zip(logp.flatten(), adv.flatten(), weight.flatten(), strict=True) if a >= 0]
    neg = [(w, lp) for lp, a, w in zip(logp.flatten(), adv.flatten(), weight.flatten(), strict=True) if a < 0]
    pos_mean = sum(w * lp for w, lp in pos) / sum(w for w, _ in pos)
    neg_mean = sum(w * lp for w, lp in neg) / sum(w for w, _ in neg)
    expected = -0.3 * pos_mean + 0.7 * neg_mean
    assert pmpo_loss(logp, adv, weight, 0.3).item() == pytest.approx(float(expected), rel=1e-5)


def test_pmpo_gradient_raises_good_actions_lowers_bad_ones_and_skips_adv() -> None:
    logp = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 2.0, -2.0], requires_grad=True)
    weight = torch.ones(4, requires_grad=True)
    pmpo_loss(logp, adv, weight, 0.5).backward()
    assert logp.grad is not None
    assert torch.allclose(logp.grad, torch.tensor([-0.25, 0.25, -0.25, 0.25]))  # -alpha/|pos|, (1-alpha)/|neg|
    assert adv.grad is None and weight.grad is None


def test_policy_kl_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 3, generator=gen) * 2, torch.randn(5, 3, generator=gen) * 2
    p, q = Policy(a, True), Policy(b, True)  # logits are the unimixed log-probs
    ref = kl_divergence(Categorical(logits=p.logits), Categorical(logits=q.logits))
    assert torch.allclose(p.kl(q), ref, atol=1e-6)
    assert torch.allclose(q.kl(p), kl_divergence(Categorical(logits=q.logits), Categorical(logits=p.logits)), atol=1e-6)
    assert not torch.allclose(p.kl(q), q.kl(p))  # the direction matters
    assert torch.allclose(p.kl(Policy(a.clone(), True)), torch.zeros(5), atol=1e-6)

    c, d = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)  # 2-dim actions: mean and std
    p, q = Policy(c, False), Policy(d, False)
    ref = kl_divergence(Normal(p.mean, p.std), Normal(q.mean, q.std)).sum(-1)
    assert p.kl(q).shape == (5,) and torch.allclose(p.kl(q), ref, atol=1e-5)
    assert torch.allclose(p.kl(Policy(c.clone(), False)), torch.zeros(5), atol=1e-6)


def test_latent_ensemble_disagreement_loss_and_threshold() -> None:
    cfg = make_config(["debug"], ["model.ensemble=3"]).model
    torch.manual_seed(0)
    ens = LatentEnsemble(10, 2, cfg)
    feat, action = torch.randn(5, 6, 10, requires_grad=True), torch.randn(5, 6, 2)
    u = ens.spread(ens(feat, action))
    assert u.shape == (5, 6) and bool((u > 0).all())

    target = torch.softmax(torch.randn(5, 6, cfg.stoch, cfg.classes), -1)
    mask = (torch.arange(30).reshape(5, 6) % 3 != 0).float()
    loss, disagree = ens.loss(feat, action, target, mask)
    assert torch.allclose(disagree, u)
    first = torch.quantile(u[mask > 0], UNCERTAINTY_QUANTILE)
    assert ens.threshold.item() == pytest.approx(first.item(), rel=1e-5)  # the first batch sets it
    loss.backward()
    assert feat.grad is None  # inputs are detached: the ensemble never moves the world model
    assert all(p.grad is not None for p in ens.parameters())

    _, again = ens.loss(2 * feat.detach(), action, target, mask)  # later batches: EMA at rate 0.01
    second = torch.quantile(again[mask > 0], UNCERTAINTY_QUANTILE)
    assert ens.threshold.item() == pytest.approx((0.99 * first + 0.01 * second).item(), rel=1e-5)
    kept = ens.threshold.item()
    ens.loss(3 * feat.detach(), action, target, torch.zeros_like(mask))  # no real transition: nothing to fold in
    assert ens.threshold.item() == kept

    for head in ens.heads[1:]:
        head.load_state_dict(ens.heads[0].state_dict())
    assert torch.allclose(ens.spread(ens(feat, action)), torch.zeros(5, 6), atol=1e-10)


def test_a_transitions_uncertainty_is_the_members_disagreement_and_reward_spread() -> None:
    cfg = make_config(["debug"], ["model.ensemble=3"]).model
    torch.manual_seed(0)
    wm = WorldModel({"vector": Space(np.float32, (4,))}, 2, cfg)
    state = wm.step(wm.initial(6), torch.randn(6, 2)).state
    action = torch.nn.functional.one_hot(torch.arange(6) % 2, 2).float()

    def step() -> Any:
        torch.manual_seed(3)  # the next latent is sampled: the same draw each time
        return wm.step(state, action, uncertainty=True)

    with torch.no_grad():
        out = step()
        assert out.uncertainty is not None and out.reward_uncertainty is not None and out.unknown is not None
        want = wm.ensemble.spread(wm.ensemble(wm.feat(state), action))
        torch.testing.assert_close(out.uncertainty, want)
        assert torch.equal(out.unknown, torch.zeros(6, dtype=torch.bool))  # an uncalibrated threshold: all known
        wm.ensemble.threshold.fill_(float(out.uncertainty.median()))
        torch.testing.assert_close(step().unknown, out.uncertainty > out.uncertainty.median())
        assert torch.equal(out.reward_uncertainty, torch.zeros(6))  # zero-initialised reward head
        last = [m for m in wm.reward_head.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.normal_(0, 1.0)
        spread = step().reward_uncertainty
        assert bool((spread > 0).any()) and bool((spread >= 0).all())

        # The spread is over what each member predicts: the same next latent from every member gives 0.
        for head in wm.ensemble.heads[1:]:
            head.load_state_dict(wm.ensemble.heads[0].state_dict())
        assert torch.allclose(step().reward_uncertainty, torch.zeros(6))

        # Members whose next latents differ only where the reward head does not look change nothing.
        wm.reward_head = _ConstantOnStoch(wm.reward_head, cfg.deter)
        for head in wm.ensemble.heads:
            for param in head.parameters():
                param.normal_(0, 1.0)
        assert torch.allclose(step().reward_uncertainty, torch.zeros(6))

    alone = WorldModel({"vector": Space(np.float32, (4,))}, 2, make_config(["debug"]).model)
    plain = alone.step(state, action, uncertainty=True)
    assert plain.uncertainty is plain.reward_uncertainty is plain.unknown is None


class _ConstantOnStoch(torch.nn.Module):
    """A reward head that reads only the recurrent part of the features."""

    def __init__(self, head: torch.nn.Module, deter: int):
        super().__init__()
        self.head, self.deter = head, deter

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([feat[..., : self.deter], torch.zeros_like(feat[..., self.deter :])], -1))


def test_ensemble_config_errors() -> None:
    with pytest.raises(ConfigError, match="model.ensemble"):
        make_config(["debug"], ["model.ensemble=1"])
    with pytest.raises(ConfigError, match="offline.pessimism needs an ensemble"):
        make_config(["debug"], ["offline.pessimism=cut"])
    with pytest.raises(ConfigError, match="offline.pessimism='penalty' is not one of"):
        make_config(["debug"], ["model.ensemble=3", "offline.pessimism=penalty"])


# ---------------------------------------------------------------------------------------------------
# 4. One update path: each phase moves its networks and no others


PHASE_MOVES = {
    "online": {"wm", "actor", "critic"},
    "model": {"wm", "bc", "critic"},
    "bc": {"bc"},
    "rl": {"actor", "critic"},
}


@pytest.mark.parametrize("phase", list(PHASE_MOVES))
def test_each_update_phase_moves_only_its_networks(
    phase: str, rule_ds: Dataset, rule_data: Any, tmp_path: Path
) -> None:
    cfg = offline_config(tmp_path, "model.ensemble=2", "ac.input=feat+obs", "optim.warmup=0")
    learner = vector_learner(cfg, rule_data)
    learner.start_rl()  # the prior the rl phase is held to
    parts = {"wm": learner.wm, "bc": learner.bc, "actor": learner.ac.actor, "critic": learner.ac.critic}
    before = {name: state_of(module) for name, module in parts.items()}
    prior = state_of(learner.bc_prior)
    metrics = learner.update(windows(rule_ds, 8), phase, np.random.default_rng(0))  # type: ignore[arg-type]
    moved = {name for name, module in parts.items() if not same(state_of(module), before[name])}
    assert moved == PHASE_MOVES[phase]
    assert same(state_of(learner.bc_prior), prior)  # the frozen prior never moves
    assert learner.updates == 1 and all(np.isfinite(v) for v in metrics.values())


def test_an_unknown_phase_is_an_error(rule_data: Any, tmp_path: Path) -> None:
    learner = vector_learner(offline_config(tmp_path), rule_data)
    with pytest.raises(ValueError, match="Unknown update phase 'warmup': use one of online, model, bc, rl"):
        learner.update({}, "warmup")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# 5. Behaviour cloning learns the recorded rule


@pytest.fixture(scope="module")
def bc_agent(rule_ds: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Dreamer, list[dict[str, float]]]:
    """An agent after 200 model-phase updates on ``rule_ds`` and the metrics of each update."""
    cfg = offline_config(tmp_path_factory.mktemp("bc") / "run", "model.ensemble=0", "train.batch_size=8")
    agent = Dreamer(cfg, rule_ds.obs_space, rule_ds.act_space["action"])
    replay = dataset_replay(rule_ds, chunk=64, seed=0)
    history = [agent.learner.update(replay.sample(8, 8), "model") for _ in range(200)]
    return agent, history


def test_bc_head_learns_the_rule(bc_agent: tuple[Dreamer, list[dict[str, float]]], rule_data: Any) -> None:
    agent, history = bc_agent
    early = np.mean([m["bc/accuracy"] for m in history[:5]])
    late = np.mean([m["bc/accuracy"] for m in history[-20:]])
    assert early < 0.7 and late > 0.85, (early, late)
    assert history[-1]["bc/loss"] < history[0]["bc/loss"] - 0.2
    labelled = np.mean([m["bc/labelled_frac"] for m in history])  # 5 of 6 episodes carry actions
    assert 0.6 < labelled < 0.95, labelled
    # Acting along held-out episodes (the BC head's own actions carried in the state) follows the rule.
    vector = np.random.default_rng(123).normal(0, 0.5, (60, 5, 4)).astype(np.float32)  # (T, N, 4)
    state, hits = None, []
    for t in range(len(vector)):
        obs = {"vector": vector[t], "is_first": np.full(5, t == 0)}
        action, state, _ = agent.learner.policy(obs, state, deterministic=True, head="bc")
        clear = np.abs(vector[t, :, 2]) > 0.05  # away from the decision boundary
        hits.extend((action == rule_data.rule(vector[t]))[clear])
    assert np.mean(hits) > 0.85


# ---------------------------------------------------------------------------------------------------
# 6. Missing actions and rewards


def test_fit_with_missing_labels(mixed_ds: Dataset, tmp_path: Path) -> None:
    flags = [(mixed_ds.episode_info(i)["has_actions"], mixed_ds.episode_info(i)["has_rewards"]) for i in range(8)]
    assert sum(a for a, _ in flags) == 4 and sum(r for _, r in flags) == 4
    overrides = ("offline.rl_frac=0.25", "run.log_every=8", "model.ensemble=2")
    agent = Dreamer(offline_config(tmp_path, *overrides)).fit(mixed_ds, steps=8)
    assert agent.state.offline_updates == 8 and agent.state.offline_phase == "rl"
    assert agent.learner.wm.rssm.no_action.abs().sum() > 0  # the no-action input was trained
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    logged = {k: v for row in rows for k, v in row.items()}
    assert all(np.isfinite(v) for v in logged.values() if isinstance(v, float))


def test_no_action_input_moves_only_with_unlabelled_steps(mixed_ds: Dataset, rule_data: Any) -> None:
    data = windows(mixed_ds, 8)
    labelled = data["action_mask"].min(1) == 1
    assert labelled.any() and (~labelled).any()
    for rows, moves in ((labelled, False), (~labelled, True)):
        learner = vector_learner(offline_config("unused", "model.ensemble=0"), rule_data)
        learner.update({k: v[rows] for k, v in data.items()}, "model")
        assert bool(learner.wm.rssm.no_action.abs().sum() > 0) == moves


# ---------------------------------------------------------------------------------------------------
# 7. The phases of fit


def record_phases(mp: pytest.MonkeyPatch) -> list[str]:
    """Patch ``Learner.update`` to record the phase of every update."""
    phases: list[str] = []
    real = Learner.update

    def update(self: Learner, batch: Any, phase: Any, *args: Any, **kw: Any) -> dict[str, float]:
        phases.append(phase)
        return real(self, batch, phase, *args, **kw)

    mp.setattr(Learner, "update", update)
    return phases


@pytest.fixture(scope="module")
def fitted(rule_ds: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``fit(rule_ds, steps=20)`` with rl_frac 0.5; the networks are snapshot when imagination RL starts."""
    logdir = tmp_path_factory.mktemp("fit") / "run"
    agent = Dreamer(offline_config(logdir, "offline.rl_frac=0.5", "run.log_every=5"))
    at_start: dict[str, Any] = {}
    real_start = Learner.start_rl

    def start_rl(learner: Learner) -> None:
        at_start.update(wm=state_of(learner.wm), bc=state_of(learner.bc), updates=agent.state.offline_updates)
        real_start(learner)
        at_start["actor"] = state_of(learner.ac.actor)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Learner, "start_rl", start_rl)
        phases = record_phases(mp)
        agent.fit(rule_ds, steps=20)
    yield {"agent": agent, "logdir": logdir, "at_start": at_start, "phases": phases}


def test_fit_runs_model_then_imagination_phase(fitted: dict[str, Any]) -> None:
    agent, at_start = fitted["agent"], fitted["at_start"]
    learner = agent.learner
    assert fitted["phases"] == ["model"] * 10 + ["rl"] * 10
    assert agent.state.offline_updates == 20 and agent.state.updates == 20
    assert agent.state.offline_phase == "rl" and at_start["updates"] == 10
    assert same(at_start["actor"], at_start["bc"])  # the actor starts as the BC head
    assert not same(state_of(learner.ac.actor), state_of(learner.bc))  # ... and RL moved it
    assert same(state_of(learner.bc_prior), state_of(learner.bc))  # the prior is the (frozen) BC head
    assert same(state_of(learner.bc), at_start["bc"])
    assert same(state_of(learner.wm), at_start["wm"])  # the world model stayed frozen during RL
    assert not any(p.requires_grad for p in learner.bc_prior.parameters())
    rows = read_jsonl(fitted["logdir"] / "metrics.jsonl")
    keys = [set(row) for row in rows]
    assert "offline/bc/loss" in keys[0] and "offline/ac/prior_kl" in keys[-1]


def test_bc_phase_sits_between_model_and_rl(rule_ds: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="offline.bc_frac"):
        offline_config(tmp_path / "bad", "offline.rl_frac=0.5", "offline.bc_frac=0.6")
    with pytest.MonkeyPatch.context() as mp:
        phases = record_phases(mp)
        agent = Dreamer(offline_config(tmp_path / "fit", "offline.rl_frac=0.25", "offline.bc_frac=0.25"))
        agent.fit(rule_ds, steps=12)
    assert phases == ["model"] * 6 + ["bc"] * 3 + ["rl"] * 3


def test_bc_phase_learns_the_rule_on_frozen_features(rule_ds: Dataset, rule_data: Any, tmp_path: Path) -> None:
    cfg = offline_config(tmp_path / "unit", "model.ensemble=0", "ac.input=feat+obs", "optim.warmup=0")
    learner = vector_learner(cfg, rule_data)
    batch_np = windows(rule_ds, 8)
    learner.update(batch_np, "model")
    losses = [learner.update(batch_np, "bc")["bc/loss"] for _ in range(40)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, losses


@pytest.mark.parametrize("actor_grad", ["reinforce", "dynamics"])
def test_rl_phase_trains_a_continuous_actor_and_leaves_the_model_alone(
    rule_data: Any, tmp_path: Path, actor_grad: str
) -> None:
    ds = rule_data.write(tmp_path / "box", [True, True], rule_data.BOX, rule_data.box_rule)
    cfg = offline_config(tmp_path / "run", f"ac.actor_grad={actor_grad}", "model.ensemble=0")
    if actor_grad == "dynamics":  # DreamerV3's objective through the model's dynamics, no KL or entropy
        cfg.ac.objective, cfg.ac.entropy, cfg.ac.prior_kl = "dreamer", 0.0, 0.0
    learner = vector_learner(cfg, rule_data, rule_data.BOX)
    batch = windows(ds, 8)
    learner.update(batch, "model")
    learner.start_rl()
    wm, actor = state_of(learner.wm), state_of(learner.ac.actor)
    learner.update(batch, "rl", np.random.default_rng(0))
    assert not same(state_of(learner.ac.actor), actor)
    assert same(state_of(learner.wm), wm)


# ---------------------------------------------------------------------------------------------------
# 8. Pessimism


def test_pessimism_cut_ends_rollouts_where_the_model_does_not_know(
    rule_ds: Dataset, rule_data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, torch.Tensor]] = []
    learners = {}
    for mode in ("none", "cut"):
        cfg = offline_config(tmp_path / mode, "model.ensemble=3", f"offline.pessimism={mode}")
        learner = vector_learner(cfg, rule_data)
        learner.update(windows(rule_ds, 8), "model")  # calibrates the threshold on real transitions
        learner.start_rl()
        learners[mode] = learner
        real = learner.ac.imagine_loss
        monkeypatch.setattr(
            learner.ac, "imagine_loss", lambda traj, prior, real=real: seen.append(traj) or real(traj, prior)
        )
    batch = windows(rule_ds, 8)
    for mode, threshold in (("cut", 1e-12), ("cut", 1e9), ("none", 1e-12)):
        learner = learners[mode]
        learner.wm.ensemble.threshold.fill_(threshold)  # 1e-12: every imagined step is unknown; 1e9: none is
        metrics = learner.update(batch, "rl", np.random.default_rng(0))
        traj = seen[-1]
        assert traj["unknown"].shape == traj["uncertainty"].shape == (len(traj["feat"]), 4)
        cut = mode == "cut" and threshold < 1
        assert bool((traj["cont"][:, 1:] == 0).all()) == cut  # a cut rollout ends after its first step
        assert bool((traj["cont"][:, 1:] > 0).all()) == (not cut)
        assert metrics["imag/unknown_frac"] == (1.0 if threshold < 1 else 0.0)


# ---------------------------------------------------------------------------------------------------
# 9. Checkpoint, resume and the command line


def copy_run(fitted: dict[str, Any], dest: Path) -> Path:
    shutil.copytree(fitted["logdir"], dest)
    return dest


def test_load_and_fit_continues_the_counters(fitted: dict[str, Any], rule_ds: Dataset, tmp_path: Path) -> None:
    logdir = copy_run(fitted, tmp_path / "run")
    agent = Dreamer.load(logdir)
    set_key(agent.config, "run.logdir", str(logdir))
    assert agent.state == fitted["agent"].state
    assert same(state_of(agent.learner), state_of(fitted["agent"].learner))
    starts: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Learner, "start_rl", lambda learner: starts.append(1))
        phases = record_phases(mp)
        agent.fit(rule_ds, steps=42)  # rl_frac 0.5 of 42: the boundary moves from 10 to 21, RL goes on
    assert agent.state.offline_updates == 42 and agent.state.updates == 42
    assert phases == ["rl"] * 22 and not starts  # the actor is not reset to the BC head
    assert Dreamer.load(logdir).state.offline_updates == 42


def test_cli_train_offline_errors_and_resume(
    fitted: dict[str, Any],
    rule_ds: Dataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    one_line: Callable[..., None],
) -> None:
    def run(*argv: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["train-offline", *map(str, argv)])
        out, err = capsys.readouterr()
        return code, out, err

    missing = tmp_path / "no-such-data"
    code, _, err = run("--data", missing, "--preset", "debug", "--logdir", tmp_path / "new")
    assert code == 2 and err.startswith("reverie: error: ")
    one_line(err, str(missing))
    assert not (tmp_path / "new").exists()

    code, _, err = run("--data", rule_ds.folder, "--preset", "debug", "--logdir", fitted["logdir"])
    assert code == 2
    one_line(err, str(fitted["logdir"]), "--resume")

    logdir = copy_run(fitted, tmp_path / "run")
    code, out, err = run("--data", rule_ds.folder, "--logdir", logdir, "--resume", "--steps", "24")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["offline_updates"] == 24 and result["data"] == str(rule_ds.folder)
    state = Dreamer.load(logdir).state
    assert state.offline_updates == 24 and state.offline_phase == "rl"


# ---------------------------------------------------------------------------------------------------
# 10. Features for other learners


def test_encode_matches_stepping_encode_step(
    bc_agent: tuple[Dreamer, list[dict[str, float]]], rule_ds: Dataset
) -> None:
    agent, _ = bc_agent
    episode = rule_ds.episode(0)
    length = len(episode["is_first"])
    torch.manual_seed(5)
    feats = agent.encode(episode)
    assert feats.shape == (length, agent.feat_dim) and np.isfinite(feats).all()

    torch.manual_seed(5)  # the stochastic latent is sampled: draw the same samples
    state, steps = None, []
    for t in range(length):
        obs = {"vector": episode["vector"][t : t + 1], "is_first": episode["is_first"][t : t + 1]}
        feat, state = agent.encode_step(obs, state, episode["action"][t : t + 1] if t else None)
        assert feat.shape == (1, agent.feat_dim)
        steps.append(feat[0])
    np.testing.assert_allclose(np.stack(steps), feats, atol=1e-4)

    # Without actions the learned no-action input stands in, whatever the masked-out actions hold.
    torch.manual_seed(5)
    blind = agent.encode({"vector": episode["vector"], "is_first": episode["is_first"]})
    masked = {**episode, "action": (1 - episode["action"]) * (np.arange(length) > 0), "action_mask": np.zeros(length)}
    torch.manual_seed(5)
    np.testing.assert_array_equal(agent.encode(masked), blind)
    deter = agent.config.model.deter
    assert blind.shape == feats.shape and not np.allclose(blind[1:, :deter], feats[1:, :deter])


# ---------------------------------------------------------------------------------------------------
# 11. Strided CNNs


def test_cnn_stride_keeps_encoder_and_decoder_shapes() -> None:
    space = {"image": Space(np.uint8, (64, 64, 3), 0, 255)}
    image = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)
    shapes, strides = [], []
    for presets in (["debug"], ["debug", "cpu_cnn"]):
        cfg = make_config(presets).model
        feat = cfg.deter + cfg.stoch * cfg.classes
        encoder, decoder = Encoder(space, cfg), Decoder(space, feat, cfg)
        with torch.no_grad():
            embed = encoder({"image": image})
            out = decoder.images_of(torch.randn(2, 3, feat))["image"]
            picture = decoder.picture(torch.randn(2, 3, feat))["image"]
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert float(picture.min()) >= 0.0 and float(picture.max()) <= 255.0 and float(picture.max()) > 1.0
        shapes.append((encoder.out_dim, tuple(embed.shape), tuple(out.shape)))
        convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
        strides.append({m.stride for m in convs})
    assert shapes[0] == shapes[1] == (shapes[0][0], (2, 3, shapes[0][0]), (2, 3, 64, 64, 3))
    assert strides == [{(1, 1)}, {(2, 2)}]  # the preset does change the layout


# ---------------------------------------------------------------------------------------------------
# 12. Online learning after offline learning


def test_learn_online_after_fit(fitted: dict[str, Any], tmp_path: Path) -> None:
    logdir = copy_run(fitted, tmp_path / "run")
    agent = Dreamer.load(logdir)
    set_key(agent.config, "run.logdir", str(logdir))
    set_key(agent.config, "env.time_limit", 30)
    set_key(agent.config, "run.eval_episodes", 2)
    agent.learn("CartPole-v1", steps=100)
    state = agent.state
    assert state.env_steps == 100 and state.offline_updates == 20
    # the train ratio (32 replayed steps per env step, batches of 4 x 8) counts online updates only, and an
    # agent that learned offline skips the random prefill (agent_steps - 0 + 1 updates, not - prefill + 1)
    assert agent.config.train.prefill > 0
    assert state.updates - state.offline_updates == state.agent_steps + 1
    assert np.isfinite(agent.last_eval["eval/return"])
    # Online updates keep the actor's KL to the frozen behaviour-cloning prior, which does not move.
    assert agent.config.ac.prior_kl > 0
    logged = [row for row in read_jsonl(logdir / "metrics.jsonl") if "train/ac/prior_kl" in row]
    assert logged and all(np.isfinite(row["train/ac/prior_kl"]) for row in logged)
    assert same(state_of(agent.learner.bc_prior), fitted["agent"].learner.bc_prior.state_dict())


# ---------------------------------------------------------------------------------------------------
# 13. Policy heads that read the observation (``ac.input``)


def test_heads_that_read_the_observation_read_real_and_pictured_ones(
    rule_ds: Dataset, rule_data: Any, tmp_path: Path
) -> None:
    cfg = offline_config(tmp_path / "run", "ac.input=feat+obs", "model.ensemble=0", "train.batch_size=8")
    agent = Dreamer(cfg, rule_ds.obs_space, rule_ds.act_space["action"])
    learner = agent.learner
    assert learner.bc.obs_keys == ["vector"] and learner.ac.actor.obs_keys == ["vector"]
    assert learner.bc.encoder is not learner.ac.actor.encoder  # each head has its own encoder
    feat = torch.randn(5, learner.wm.feat_dim, device=learner.device)
    with pytest.raises(ValueError, match="ac.input=feat\\+obs"):
        learner.bc(feat)
    # The observation changes the policy at the same model state.
    vec = torch.randn(5, 4, device=learner.device)
    with torch.no_grad():
        a, b = (learner.bc(feat, {"vector": v}).logits for v in (vec, -vec))
    assert not torch.allclose(a, b)
    # Imagined rollouts carry the observations the model pictured at every step, which the policy read.
    start = {k: v[:3] for k, v in learner.wm.initial(3, learner.device).items()}
    traj = learner.imagine(start, 4, head="bc")
    assert traj["obs/vector"].shape == (3, 5, 4)
    torch.testing.assert_close(traj["obs/vector"], learner.wm.picture(traj["feat"])["vector"])

    # Behaviour cloning trains the head's own encoder on the recorded observations and learns the rule,
    # which acting on real observations then follows.
    replay = dataset_replay(rule_ds, chunk=64, seed=0)
    encoder = state_of(learner.bc.encoder)
    history = [learner.update(replay.sample(8, 8), "model") for _ in range(120)]
    assert not same(state_of(learner.bc.encoder), encoder)
    assert np.mean([m["bc/accuracy"] for m in history[-20:]]) > 0.85
    vector = np.random.default_rng(7).normal(0, 0.5, (30, 5, 4)).astype(np.float32)
    state, hits = None, []
    for t in range(len(vector)):
        action, state, _ = learner.policy({"vector": vector[t], "is_first": np.full(5, t == 0)}, state, True, "bc")
        clear = np.abs(vector[t, :, 2]) > 0.05
        hits.extend((action == rule_data.rule(vector[t]))[clear])
    assert np.mean(hits) > 0.85

    # RL starts from the head, encoder included, and the checkpoint keeps both encoders.
    learner.start_rl()
    assert same(state_of(learner.ac.actor), state_of(learner.bc))
    learner.update(replay.sample(8, 8), "rl", np.random.default_rng(0))
    assert not same(state_of(learner.ac.actor.encoder), state_of(learner.bc.encoder))
    agent.save_run()
    loaded = Dreamer.load(tmp_path / "run")
    assert same(state_of(loaded.learner.ac.actor), state_of(learner.ac.actor))
    assert same(state_of(loaded.learner.bc), state_of(learner.bc))


def test_data_prior_kl_is_the_actor_prior_kl_on_real_states(rule_ds: Dataset, rule_data: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="offline.data_prior_kl"):
        offline_config(tmp_path / "bad", "offline.data_prior_kl=-1")
    cfg = offline_config(tmp_path / "run", "ac.input=feat+obs", "model.ensemble=0", "offline.data_prior_kl=1.0")
    learner = vector_learner(cfg, rule_data)
    batch_np = windows(rule_ds, 8)
    learner.update(batch_np, "model")
    learner.start_rl()
    torch.manual_seed(0)
    assert learner.update(batch_np, "rl", np.random.default_rng(0))["ac/data_prior_kl"] < 1e-6  # actor == prior
    with torch.no_grad():
        for p in learner.ac.actor.parameters():  # the actor drifts away from its prior
            p.add_(0.3 * torch.randn_like(p))
        batch = learner.sequences(batch_np)
        torch.manual_seed(1)  # the rl phase filters the batch first: the same latent samples as here
        feat = learner.wm.feat(learner.wm.observe(batch)[0])
        actor = learner.ac.actor(feat, {"vector": batch["vector"]})
        prior = learner.bc_prior(feat, {"vector": batch["vector"]})
        p_a, p_b = actor.logits.exp(), prior.logits.exp()
        by_hand = (p_a * (p_a.log() - p_b.log())).sum(-1).mean()
    torch.manual_seed(1)
    got = learner.update(batch_np, "rl", np.random.default_rng(0))["ac/data_prior_kl"]
    assert got > 1e-3 and got == pytest.approx(by_hand.item(), rel=1e-4)


def test_policy_on_observations_alone(rule_ds: Dataset, rule_data: Any, tmp_path: Path) -> None:
    cfg = offline_config(tmp_path / "run", "ac.input=obs", "model.ensemble=0")
    learner = vector_learner(cfg, rule_data)
    assert not learner.bc.reads_feat and not learner.ac.actor.reads_feat
    dev = learner.device
    vec = {"vector": torch.randn(5, 4, device=dev)}
    with torch.no_grad():  # the model state does not move the policy; the observation does
        a, b = (learner.bc(torch.randn(5, learner.wm.feat_dim, device=dev), vec).logits for _ in range(2))
        c = learner.bc(torch.randn(5, learner.wm.feat_dim, device=dev), {"vector": -vec["vector"]}).logits
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)

    # Imagination shows the policy the real observation at the start, the pictured ones after.
    start = learner.wm.initial(3, learner.device)
    first = {"vector": torch.randn(3, 4, device=dev)}
    traj = learner.imagine(start, 4, head="bc", first_obs=first)
    torch.testing.assert_close(traj["obs/vector"][:, 0], first["vector"])
    torch.testing.assert_close(traj["obs/vector"][:, 1:], learner.wm.picture(traj["feat"][:, 1:])["vector"])

    # Behaviour cloning alone needs no pass of the world model, and learns the rule.
    replay = dataset_replay(rule_ds, chunk=64, seed=0)
    model = state_of(learner.wm)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(learner.wm, "observe", lambda *a, **k: pytest.fail("the model was run for an observation policy"))
        history = [learner.update(replay.sample(8, 8), "bc") for _ in range(150)]
    assert same(state_of(learner.wm), model)
    assert np.mean([m["bc/accuracy"] for m in history[-20:]]) > 0.85


def test_bc_head_moving_average_plays_and_starts_rl(rule_ds: Dataset, rule_data: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bc_ema"):
        offline_config(tmp_path / "bad", "offline.bc_ema=1")
    cfg = offline_config(tmp_path / "run", "model.ensemble=0", "offline.bc_ema=0.75", "optim.warmup=0")
    learner = vector_learner(cfg, rule_data)
    assert learner.bc_avg is not None and learner.actor("bc") is learner.bc_avg
    assert vector_learner(offline_config(tmp_path / "off"), rule_data).bc_avg is None
    batch_np = windows(rule_ds, 8)
    for phase in ("model", "bc"):  # both phases that train the head move the average
        avg = state_of(learner.bc_avg)
        learner.update(batch_np, phase)  # type: ignore[arg-type]
        head = state_of(learner.bc)
        assert not same(head, avg)
        for k, v in state_of(learner.bc_avg).items():
            torch.testing.assert_close(v, 0.75 * avg[k] + 0.25 * head[k])
    learner.start_rl()  # RL starts from the average, which is also its prior
    assert same(state_of(learner.ac.actor), state_of(learner.bc_avg))
    assert same(state_of(learner.bc_prior), state_of(learner.bc_avg))

    # A checkpoint saved without the average starts it at its BC head.
    agent = Dreamer(offline_config(tmp_path / "plain", "model.ensemble=0"))
    agent.fit(rule_ds, steps=4)
    agent.save(tmp_path / "plain" / "checkpoint")
    loaded = Dreamer.load(
        tmp_path / "plain", config=offline_config(tmp_path / "plain", "model.ensemble=0", "offline.bc_ema=0.9")
    )
    assert loaded.learner.bc_avg is not None
    assert same(state_of(loaded.learner.bc_avg), state_of(agent.learner.bc))


def test_policy_heads_image_encoder_follows_ac_cnn_depth(rule_data: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ac.cnn_depth"):
        offline_config(tmp_path / "bad", "ac.cnn_depth=-1")
    space = {"image": Space(np.uint8, (16, 16, 3), 0, 255)}

    def channels(module: torch.nn.Module) -> list[int]:
        return [m.out_channels for m in module.modules() if isinstance(m, torch.nn.Conv2d)]

    widths = {}
    for depth in (0, 8):
        cfg = offline_config(tmp_path / f"d{depth}", "ac.input=obs", "model.ensemble=0", f"ac.cnn_depth={depth}")
        learner = Learner(cfg, space, rule_data.DISCRETE)
        widths[depth] = [channels(m) for m in (learner.wm.encoder, learner.bc.encoder, learner.ac.actor.encoder)]
        image = torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8)
        assert learner.bc(torch.zeros(3, 0), {"image": image}).logits.shape == (3, 2)
    model = [cfg.model.cnn_depth * m for m in (2, 3, 4, 4)]
    assert widths[0] == [model, model, model]  # 0: the heads' convolutions are as wide as the model's
    assert widths[8] == [model, [16, 24, 32, 32], [16, 24, 32, 32]]  # the model's own encoder keeps its width


# ---------------------------------------------------------------------------------------------------
# 14. Return-weighted behaviour cloning


def test_return_weights_by_hand(mixed_ds: Dataset, rule_data: Any, tmp_path: Path) -> None:
    bad_values = (
        ("offline.bc_return_temp=-1", "bc_return_temp"),
        ("offline.bc_return_discount=1", "discount"),
        ("offline.bc_return_min_reward=-1", "min_reward"),
    )
    for bad, key in bad_values:
        with pytest.raises(ConfigError, match=key):
            offline_config(tmp_path / "bad", bad)
    np.testing.assert_allclose(return_to_go(np.array([5.0, 0.0, 2.0, 0.0, 1.0]), 0.5), [1.125, 2.25, 0.5, 1, 0])
    rewards = np.array([5.0, 0.1, 2.0, -0.1, 1.0])  # small rewards do not count with a min_reward
    np.testing.assert_allclose(return_to_go(rewards, 0.5, min_reward=1.0), [1.125, 2.25, 0.5, 1, 0])

    # The replay carries each step's return-to-go; episodes without rewards carry 0.
    replay = dataset_replay(mixed_ds, chunk=16, seed=0, return_discount=0.9)
    batch_np = replay.sample(64, 8)
    assert batch_np["return_to_go"].shape == batch_np["reward"].shape
    unrewarded = batch_np["reward_mask"] == 0
    assert unrewarded.any() and (batch_np["return_to_go"][unrewarded] == 0).all()
    assert (batch_np["return_to_go"][~unrewarded] > 1).any()  # CartPole pays 1 a step
    replay = dataset_replay(mixed_ds, chunk=16, seed=0, return_discount=0.9, min_reward=1.5)
    assert (replay.sample(64, 8)["return_to_go"] == 0).all()  # 1 a step is below min_reward

    learner = vector_learner(
        offline_config(tmp_path / "run", "model.ensemble=0", "offline.bc_return_temp=0.5"), rule_data
    )
    batch = {
        "return_to_go": torch.tensor([[0.0, 5.0, 1.0, 0.5, 9.0], [3.0, 0.0, 0.0, 0.0, 0.0]]),
        "reward_mask": torch.tensor([[1.0] * 5, [0.0] * 5]),  # the second row has no rewards
        "reward": torch.zeros(2, 5),
    }
    weight, metrics = learner.bc_weights(batch)
    assert weight is not None
    centred = (torch.tensor([0.0, 5.0, 1.0, 0.5]) - 1.625) / 0.5  # the mean of the rewarded steps: 1.625
    torch.testing.assert_close(weight[0], torch.exp(centred).clamp(max=20.0))
    assert weight[0, 1] == pytest.approx(20.0)  # exp(6.75) capped at 20
    torch.testing.assert_close(weight[1], torch.ones(4))
    assert metrics["bc/weight_max"] == pytest.approx(20.0)
    assert vector_learner(offline_config(tmp_path / "off"), rule_data).bc_weights(batch) == (None, {})


def test_return_weighted_bc_learns_the_rewarded_action_from_random_play(
    rule_ds: Dataset, rule_data: Any, tmp_path: Path
) -> None:
    """Random recorded actions, a reward of 1 wherever the action matched ``rule``: plain BC learns no
    preference, return-weighted BC learns the rule."""
    batch_np = windows(rule_ds, 40)
    rng = np.random.default_rng(0)
    batch_np["action"] = rng.integers(0, 2, batch_np["action"].shape)
    hit = batch_np["action"][:, 1:] == rule_data.rule(batch_np["vector"][:, :-1])
    batch_np["reward"] = np.concatenate([np.zeros((len(hit), 1)), hit], 1).astype(np.float32)
    batch_np["action_mask"] = batch_np["reward_mask"] = np.ones_like(batch_np["action_mask"])
    batch_np["return_to_go"] = np.stack([return_to_go(r, 0.0) for r in batch_np["reward"]])
    test_obs = torch.as_tensor(rng.normal(0, 0.5, (400, 4)), dtype=torch.float32)
    agreement = {}
    for temp in (0.0, 0.25):
        torch.manual_seed(0)
        overrides = ("model.ensemble=0", "ac.input=obs", f"offline.bc_return_temp={temp}")
        learner = vector_learner(offline_config(tmp_path / f"run{temp}", *overrides), rule_data)
        for _ in range(150):
            metrics = learner.update(batch_np, "bc")
        assert ("bc/weight_mean" in metrics) == (temp > 0)
        with torch.no_grad():
            choice = learner.bc(torch.zeros(len(test_obs), 0), {"vector": test_obs}).logits.argmax(-1).numpy()
        agreement[temp] = float((choice == rule_data.rule(test_obs.numpy())).mean())
    assert agreement[0.25] > 0.8, agreement
    assert agreement[0.0] < 0.7, agreement

    # Through fit: the model phase and the BC-alone phase weight their BC terms, RL runs on the same replay.
    overrides = ("offline.bc_return_temp=1.0", "offline.bc_frac=0.25", "run.log_every=2")
    agent = Dreamer(offline_config(tmp_path / "fit", *overrides))
    agent.fit(rule_ds, steps=8)
    rows = [r for r in read_jsonl(tmp_path / "fit" / "metrics.jsonl") if "offline/bc/weight_mean" in r]
    assert len(rows) >= 3 and all(r["offline/bc/weight_mean"] > 0 for r in rows)  # steps 2, 4 (model), 6 (BC)
    assert max(r["offline/bc/weight_max"] for r in rows) > 1
    # offline.bc_return_min_reward above the rule's reward of 1: no return is left, every weight is 1.
    agent = Dreamer(offline_config(tmp_path / "fit_min", *overrides, "offline.bc_return_min_reward=2"))
    agent.fit(rule_ds, steps=8)
    rows = [r for r in read_jsonl(tmp_path / "fit_min" / "metrics.jsonl") if "offline/bc/weight_max" in r]
    assert len(rows) >= 3 and all(r["offline/bc/weight_max"] == pytest.approx(1.0) for r in rows)
