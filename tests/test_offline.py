"""Tests of offline learning (``Dreamer.fit``, :mod:`reverie.offline`): PMPO and the prior KL by hand, the
latent ensemble and pessimism, behaviour cloning of a known rule, missing labels, the two phases,
checkpoint/resume and the CLI, ``encode`` / ``encode_step``, strided CNNs and online learning afterwards.

Every agent uses the ``offline`` + ``debug`` presets and datasets of a few hundred steps.
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
from test_baselines import BOX, DISCRETE, OBS_SPACE, box_rule, rule, write_dataset
from torch.distributions import Categorical, Normal, kl_divergence

import reverie.offline as offline
from reverie import Dreamer
from reverie.actor_critic import Policy, within_support
from reverie.cli import main
from reverie.config import ActorCriticConfig, Config, ConfigError, make_config, set_key
from reverie.data import Dataset, record
from reverie.envs import Space
from reverie.functional import pmpo_loss, return_to_go, symexp
from reverie.learner import Learner
from reverie.logger import read_jsonl
from reverie.world_model import Decoder, Encoder, LatentEnsemble, WorldModel

KEYS = ("vector", "action", "reward", "is_first", "is_last", "is_terminal", "action_mask", "reward_mask")


def offline_config(logdir: str | Path, *overrides: str) -> Config:
    """The ``offline`` then ``debug`` presets (as ``reverie train-offline --preset debug``), no final evaluation."""
    return make_config(["offline", "debug"], [f"run.logdir={logdir}", "offline.eval_episodes=0", *overrides])


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


@pytest.fixture(scope="module")
def rule_ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """6 CartPole-format episodes of 40 random observations; the next action is ``rule(obs)``; episode 2 unlabelled."""
    return write_dataset(tmp_path_factory.mktemp("offline") / "rule", [True, True, False, True, True, True])


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
    cfg = make_config(["debug"]).ac
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 3, generator=gen) * 2, torch.randn(5, 3, generator=gen) * 2
    p, q = Policy(a, True, cfg), Policy(b, True, cfg)  # logits are the unimixed log-probs
    ref = kl_divergence(Categorical(logits=p.logits), Categorical(logits=q.logits))
    assert torch.allclose(p.kl(q), ref, atol=1e-6)
    assert torch.allclose(q.kl(p), kl_divergence(Categorical(logits=q.logits), Categorical(logits=p.logits)), atol=1e-6)
    assert not torch.allclose(p.kl(q), q.kl(p))  # the direction matters
    assert torch.allclose(p.kl(Policy(a.clone(), True, cfg)), torch.zeros(5), atol=1e-6)

    c, d = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)  # 2-dim actions: mean and std
    p, q = Policy(c, False, cfg), Policy(d, False, cfg)
    ref = kl_divergence(Normal(p.mean, p.std), Normal(q.mean, q.std)).sum(-1)
    assert p.kl(q).shape == (5,) and torch.allclose(p.kl(q), ref, atol=1e-5)
    assert torch.allclose(p.kl(Policy(c.clone(), False, cfg)), torch.zeros(5), atol=1e-6)


def test_latent_ensemble_disagreement_loss_and_threshold() -> None:
    cfg = make_config(["debug"], ["model.ensemble=3"]).model
    torch.manual_seed(0)
    ens = LatentEnsemble(10, 2, cfg)
    feat, action = torch.randn(5, 6, 10, requires_grad=True), torch.randn(5, 6, 2)
    u = ens.disagreement(feat, action)
    assert u.shape == (5, 6) and bool((u > 0).all())

    target = torch.softmax(torch.randn(5, 6, cfg.stoch, cfg.classes), -1)
    mask = (torch.arange(30).reshape(5, 6) % 3 != 0).float()
    loss, disagree = ens.loss(feat, action, target, mask)
    assert torch.allclose(disagree, u)
    first = torch.quantile(u[mask > 0], cfg.uncertainty_quantile)
    assert ens.threshold.item() == pytest.approx(first.item(), rel=1e-5)  # the first batch sets it
    loss.backward()
    assert feat.grad is None  # inputs are detached: the ensemble never moves the world model
    assert all(p.grad is not None for p in ens.parameters())

    _, again = ens.loss(2 * feat.detach(), action, target, mask)  # later batches: EMA at rate 0.01
    second = torch.quantile(again[mask > 0], cfg.uncertainty_quantile)
    assert ens.threshold.item() == pytest.approx((0.99 * first + 0.01 * second).item(), rel=1e-5)

    for head in ens.heads[1:]:
        head.load_state_dict(ens.heads[0].state_dict())
    assert torch.allclose(ens.disagreement(feat, action), torch.zeros(5, 6), atol=1e-10)


def test_reward_disagreement_is_the_spread_of_the_members_rewards() -> None:
    cfg = make_config(["debug"], ["model.ensemble=3"]).model
    torch.manual_seed(0)
    wm = WorldModel({"vector": Space(np.float32, (4,))}, 2, cfg)
    state = wm.rssm.imagine_step(wm.rssm.initial(6), torch.randn(6, 2))
    action = torch.nn.functional.one_hot(torch.arange(6) % 2, 2).float()
    with torch.no_grad():
        zero = wm.reward_disagreement(state, action)
        assert zero.shape == (6,) and torch.equal(zero, torch.zeros(6))  # zero-initialised reward head
        last = [m for m in wm.reward_head.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.normal_(0, 1.0)
        spread = wm.reward_disagreement(state, action)
        assert bool((spread > 0).any()) and bool((spread >= 0).all())

        # The spread is over what each member predicts: the same next latent from every member gives 0.
        for head in wm.ensemble.heads[1:]:
            head.load_state_dict(wm.ensemble.heads[0].state_dict())
        assert torch.allclose(wm.reward_disagreement(state, action), torch.zeros(6))

        # A member whose next latent differs only where the reward head does not look changes nothing.
        wm.reward_head = _ConstantOnStoch(wm.reward_head, wm.rssm.cfg.deter)
        torch.manual_seed(1)
        for head in wm.ensemble.heads:
            for param in head.parameters():
                param.normal_(0, 1.0)
        assert torch.allclose(wm.reward_disagreement(state, action), torch.zeros(6))

    alone = WorldModel({"vector": Space(np.float32, (4,))}, 2, make_config(["debug"]).model)
    assert torch.equal(alone.reward_disagreement(state, action), torch.zeros(6))


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
    with pytest.raises(ConfigError, match="offline.reward_doubt needs an ensemble"):
        make_config(["debug"], ["offline.reward_doubt=2"])
    with pytest.raises(ConfigError, match="offline.reward_doubt must be >= 0"):
        make_config(["debug"], ["model.ensemble=3", "offline.reward_doubt=-1"])


# ---------------------------------------------------------------------------------------------------
# 4. Behaviour cloning learns the recorded rule


@pytest.fixture(scope="module")
def bc_agent(rule_ds: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Dreamer, list[dict[str, float]]]:
    """An agent after 200 phase-1 updates on ``rule_ds`` and the metrics of each update."""
    cfg = offline_config(tmp_path_factory.mktemp("bc") / "run", "model.ensemble=0", "train.batch_size=8")
    agent = Dreamer(cfg, rule_ds.obs_space, rule_ds.act_space["action"])
    replay = offline.dataset_replay(rule_ds, chunk=64, seed=0)
    history = [offline.model_update(agent.learner, replay.sample(8, 8)) for _ in range(200)]
    return agent, history


def test_bc_head_learns_the_rule(bc_agent: tuple[Dreamer, list[dict[str, float]]]) -> None:
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
        hits.extend((action == rule(vector[t]))[clear])
    assert np.mean(hits) > 0.85


# ---------------------------------------------------------------------------------------------------
# 5. Missing actions and rewards


def test_fit_with_missing_labels_in_both_label_modes(mixed_ds: Dataset, tmp_path: Path) -> None:
    flags = [(mixed_ds.episode_info(i)["has_actions"], mixed_ds.episode_info(i)["has_rewards"]) for i in range(8)]
    assert sum(a for a, _ in flags) == 4 and sum(r for _, r in flags) == 4
    logged = {}
    for mode in ("no_action", "inverse_dynamics"):
        overrides = (f"offline.label_mode={mode}", "offline.rl_frac=0.25", "offline.log_every=8", "model.ensemble=2")
        agent = Dreamer(offline_config(tmp_path / mode, *overrides)).fit(mixed_ds, steps=8)
        assert agent.counters["offline_updates"] == 8 and agent.counters["rl_started"] == 1
        assert (agent.learner.idm is not None) == (mode == "inverse_dynamics")
        assert agent.learner.wm.rssm.no_action.abs().sum() > 0  # the no-action input was trained
        rows = read_jsonl(tmp_path / mode / "metrics.jsonl")
        logged[mode] = {k: v for row in rows for k, v in row.items()}
        assert all(np.isfinite(v) for v in logged[mode].values() if isinstance(v, float))
    assert "offline/idm/loss" in logged["inverse_dynamics"] and "offline/idm/loss" not in logged["no_action"]


def test_label_actions_fills_exactly_the_unlabelled_transitions(mixed_ds: Dataset) -> None:
    cfg = offline_config("unused", "offline.label_mode=inverse_dynamics", "model.ensemble=0")
    learner = Learner(cfg, {"vector": mixed_ds.obs_space["vector"]}, mixed_ds.act_space["action"])
    batch = learner.to_tensors(windows(mixed_ds, 12))
    batch["is_first"][:, 0] = True
    old_mask, old_action = batch["action_mask"].clone(), batch["action"].clone()
    assert 0 < old_mask.mean() < 1
    embed = learner.wm.encoder({"vector": batch["vector"]})
    out, loss, metrics = offline.label_actions(learner, batch, embed)

    first = batch["is_first"].bool()
    filled = (old_mask == 0) & ~first
    filled[:, 0] = False
    assert bool(filled.any())
    assert bool((out["action_mask"][filled] == 1).all())  # every unlabelled transition is labelled now
    assert torch.equal(out["action_mask"][~filled], old_mask[~filled])  # labelled and first steps keep theirs
    assert torch.equal(out["action"][~filled], old_action[~filled])  # recorded actions and first steps unchanged
    assert torch.equal(
        out["action"][filled].sum(-1), torch.ones(int(filled.sum()), device=learner.device)
    )  # guesses are one-hot
    assert torch.equal(batch["action_mask"], old_mask)  # the input batch is not modified in place
    assert np.isfinite(metrics["idm/accuracy"].item())

    # The inverse model learns only from labelled transitions: changing the unknown actions changes nothing.
    other = {**batch, "action": old_action.clone()}
    other["action"][filled] = torch.tensor([0.0, 1.0], device=learner.device)
    _, loss_other, _ = offline.label_actions(learner, other, embed)
    assert torch.equal(loss, loss_other)
    loss.backward()
    assert all(p.grad is not None for p in learner.idm.parameters())  # type: ignore[union-attr]
    assert all(p.grad is None for p in learner.wm.encoder.parameters())  # embeddings are detached


def test_no_action_input_moves_only_with_unlabelled_steps(mixed_ds: Dataset) -> None:
    data = windows(mixed_ds, 8)
    labelled = data["action_mask"].min(1) == 1
    assert labelled.any() and (~labelled).any()
    for rows, moves in ((labelled, False), (~labelled, True)):
        learner = Learner(
            offline_config("unused", "model.ensemble=0"), {"vector": mixed_ds.obs_space["vector"]}, DISCRETE
        )
        offline.model_update(learner, {k: v[rows] for k, v in data.items()})
        assert bool(learner.wm.rssm.no_action.abs().sum() > 0) == moves


# ---------------------------------------------------------------------------------------------------
# 6. The two phases


@pytest.fixture(scope="module")
def fitted(rule_ds: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``fit(rule_ds, steps=20)`` with rl_frac 0.5; the networks are snapshot when imagination RL starts."""
    logdir = tmp_path_factory.mktemp("fit") / "run"
    agent = Dreamer(offline_config(logdir, "offline.rl_frac=0.5", "offline.log_every=5"))
    at_start: dict[str, Any] = {}
    real_start = offline.start_rl

    def start_rl(learner: Learner) -> None:
        at_start.update(wm=state_of(learner.wm), bc=state_of(learner.bc), updates=agent.counters["offline_updates"])
        real_start(learner)
        at_start["actor"] = state_of(learner.ac.actor)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(offline, "start_rl", start_rl)
        agent.fit(rule_ds, steps=20)
    yield {"agent": agent, "logdir": logdir, "at_start": at_start}


def test_fit_runs_model_then_imagination_phase(fitted: dict[str, Any]) -> None:
    agent, at_start = fitted["agent"], fitted["at_start"]
    learner = agent.learner
    assert agent.counters["offline_updates"] == 20 and agent.counters["updates"] == 20
    assert agent.counters["rl_started"] == 1 and at_start["updates"] == 10
    assert same(at_start["actor"], at_start["bc"])  # the actor starts as the BC head
    assert not same(state_of(learner.ac.actor), state_of(learner.bc))  # ... and RL moved it
    assert same(state_of(learner.bc_prior), state_of(learner.bc))  # the prior is the (frozen) BC head
    assert same(state_of(learner.bc), at_start["bc"])
    assert same(state_of(learner.wm), at_start["wm"])  # the world model stayed frozen during RL
    assert not any(p.requires_grad for p in learner.bc_prior.parameters())
    rows = read_jsonl(fitted["logdir"] / "metrics.jsonl")
    keys = [set(row) for row in rows]
    assert "offline/bc/loss" in keys[0] and "offline/ac/prior_kl" in keys[-1]


def _box_learner(tmp_path: Path, actor_grad: str) -> tuple[Learner, dict[str, np.ndarray]]:
    ds = write_dataset(tmp_path / "box", [True, True], act_space=BOX, expert=box_rule)
    cfg = offline_config(tmp_path / "run", f"ac.actor_grad={actor_grad}", "model.ensemble=0")
    learner = Learner(cfg, {"vector": OBS_SPACE["vector"]}, BOX)
    return learner, windows(ds, 8)


@pytest.mark.parametrize(
    "actor_grad",
    ["reinforce", "dynamics"],
)
def test_imagination_update_leaves_the_world_model_alone(tmp_path: Path, actor_grad: str) -> None:
    learner, batch = _box_learner(tmp_path, actor_grad)
    offline.model_update(learner, batch)
    offline.start_rl(learner)
    wm, actor = state_of(learner.wm), state_of(learner.ac.actor)
    offline.imagination_update(learner, batch, np.random.default_rng(0))
    assert not same(state_of(learner.ac.actor), actor)
    assert same(state_of(learner.wm), wm)


def test_dreamer_objective_through_dynamics_trains_the_actor(tmp_path: Path) -> None:
    learner, batch = _box_learner(tmp_path, "dynamics")
    learner.cfg.ac.objective, learner.cfg.ac.entropy, learner.cfg.ac.prior_kl = "dreamer", 0.0, 0.0
    offline.model_update(learner, batch)
    offline.start_rl(learner)
    actor = state_of(learner.ac.actor)
    offline.imagination_update(learner, batch, np.random.default_rng(0))
    assert not same(state_of(learner.ac.actor), actor)


# ---------------------------------------------------------------------------------------------------
# 7. Pessimism


def test_pessimism_cut_and_penalty() -> None:
    cfg = make_config(["debug"], ["model.ensemble=3", "offline.pessimism=cut", "offline.pessimism_scale=2.5"])
    learner = Learner(cfg, {"vector": OBS_SPACE["vector"]}, DISCRETE)
    ens = learner.wm.ensemble
    assert ens is not None
    with torch.no_grad():
        traj = learner.imagine(learner.wm.rssm.initial(6), horizon=4)
    reward, cont = torch.randn(6, 5, device=learner.device), torch.full((6, 5), 0.9, device=learner.device)
    u = ens.disagreement(traj["feat"][:, :-1], traj["action"][:, :-1]).detach()  # (N, H)
    assert bool((u > 0).all())

    ens.threshold.fill_(0.0)  # every imagined transition is "unknown"
    r, c, metrics = offline.pessimism(learner, traj, reward, cont)
    assert torch.equal(r, reward) and torch.equal(c[:, 0], cont[:, 0])
    assert (
        torch.equal(c[:, 1:], torch.zeros(6, 4, device=learner.device)) and metrics["imag/unknown_frac"].item() == 1.0
    )
    ens.threshold.fill_(1e9)  # nothing is unknown: nothing is cut
    _, c, metrics = offline.pessimism(learner, traj, reward, cont)
    assert torch.equal(c, cont) and metrics["imag/unknown_frac"].item() == 0.0

    learner.cfg.offline.pessimism = "penalty"
    r, c, _ = offline.pessimism(learner, traj, reward, cont)
    assert torch.equal(c, cont) and torch.equal(r[:, 0], reward[:, 0])
    assert torch.allclose(r[:, 1:], reward[:, 1:] - 2.5 * u)
    learner.cfg.offline.pessimism = "none"
    r, c, _ = offline.pessimism(learner, traj, reward, cont)
    assert torch.equal(r, reward) and torch.equal(c, cont)


def test_reward_doubt_penalises_the_rewards_the_members_disagree_on() -> None:
    cfg = make_config(["debug"], ["model.ensemble=3", "offline.reward_doubt=4"])
    learner = Learner(cfg, {"vector": OBS_SPACE["vector"]}, DISCRETE)
    wm = learner.wm
    with torch.no_grad():
        # A reward head that reads the stochastic latent: the members' different modes give different rewards.
        for param in wm.reward_head[-1].parameters():  # zero at initialisation
            torch.nn.init.normal_(param, std=1.0)
        traj = learner.imagine(wm.rssm.initial(6), horizon=4)
    reward, cont = torch.randn(6, 5, device=learner.device), torch.full((6, 5), 0.9, device=learner.device)
    r, c, metrics = offline.pessimism(learner, traj, reward, cont)

    # The doubt of transition t -> t+1, computed from states as watch() and DreamEnv do
    deter = cfg.model.deter
    ru = torch.stack(
        [
            wm.reward_disagreement(
                {
                    "deter": traj["feat"][:, t, :deter],
                    "stoch": traj["feat"][:, t, deter:].reshape(6, cfg.model.stoch, cfg.model.classes),
                },
                traj["action"][:, t],
            )
            for t in range(4)
        ],
        1,
    )
    assert bool((ru > 0).any())
    assert torch.equal(c, cont) and torch.equal(r[:, 0], reward[:, 0])
    torch.testing.assert_close(r[:, 1:], reward[:, 1:] - 4.0 * ru)
    assert metrics["imag/reward_doubt"].item() == pytest.approx(ru.mean().item(), rel=1e-5)
    learner.cfg.offline.reward_doubt = 0.0
    r, _, _ = offline.pessimism(learner, traj, reward, cont)
    assert torch.equal(r, reward)


# ---------------------------------------------------------------------------------------------------
# 8. Checkpoint, resume and the command line


def copy_run(fitted: dict[str, Any], dest: Path) -> Path:
    shutil.copytree(fitted["logdir"], dest)
    return dest


def test_load_and_fit_continues_the_counters(fitted: dict[str, Any], rule_ds: Dataset, tmp_path: Path) -> None:
    logdir = copy_run(fitted, tmp_path / "run")
    agent = Dreamer.load(logdir)
    set_key(agent.config, "run.logdir", str(logdir))
    assert agent.counters == fitted["agent"].counters
    assert same(state_of(agent.learner), state_of(fitted["agent"].learner))
    starts: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(offline, "start_rl", lambda learner: starts.append(1))
        agent.fit(rule_ds, steps=30)
    assert agent.counters["offline_updates"] == 30 and agent.counters["updates"] == 30
    assert agent.counters["rl_started"] == 1 and not starts  # RL goes on; the actor is not reset to the BC head
    assert Dreamer.load(logdir).counters["offline_updates"] == 30


def test_resume_with_a_larger_budget_stays_in_rl(fitted: dict[str, Any], rule_ds: Dataset, tmp_path: Path) -> None:
    logdir = copy_run(fitted, tmp_path / "run")
    agent = Dreamer.load(logdir)
    set_key(agent.config, "run.logdir", str(logdir))
    calls: list[int] = []
    real = offline.model_update

    def model_update(*args: Any) -> dict[str, float]:
        calls.append(agent.counters["offline_updates"])
        return real(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(offline, "model_update", model_update)
        agent.fit(rule_ds, steps=42)  # rl_frac 0.5 of 42: the boundary moves from 10 to 21
    assert calls == []


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
    counters = Dreamer.load(logdir).counters
    assert counters["offline_updates"] == 24 and counters["rl_started"] == 1


# ---------------------------------------------------------------------------------------------------
# 9. Features for other learners


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
    deter = agent.learner.wm.rssm.cfg.deter
    assert blind.shape == feats.shape and not np.allclose(blind[1:, :deter], feats[1:, :deter])


# ---------------------------------------------------------------------------------------------------
# 10. Strided CNNs


def test_cnn_stride_keeps_encoder_and_decoder_shapes() -> None:
    space = {"image": Space(np.uint8, (64, 64, 3), 0, 255)}
    image = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)
    shapes, strides = [], []
    for presets in (["debug"], ["debug", "cpu_cnn"]):
        cfg = make_config(presets).model
        encoder, decoder = Encoder(space, cfg), Decoder(space, 24, cfg)
        with torch.no_grad():
            embed = encoder({"image": image})
        with torch.no_grad():
            out = decoder(torch.randn(2, 3, 24))["image"]
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        shapes.append((encoder.out_dim, tuple(embed.shape), tuple(out.shape)))
        convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
        strides.append({m.stride for m in convs})
    assert shapes[0] == shapes[1] == (shapes[0][0], (2, 3, shapes[0][0]), (2, 3, 64, 64, 3))
    assert strides == [{(1, 1)}, {(2, 2)}]  # the preset does change the layout


# ---------------------------------------------------------------------------------------------------
# 11. Online learning after offline learning


def test_learn_online_after_fit(fitted: dict[str, Any], tmp_path: Path) -> None:
    logdir = copy_run(fitted, tmp_path / "run")
    agent = Dreamer.load(logdir)
    set_key(agent.config, "run.logdir", str(logdir))
    set_key(agent.config, "env.time_limit", 30)
    agent.learn("CartPole-v1", steps=100)
    counters = agent.counters
    assert counters["env_steps"] == 100 and counters["offline_updates"] == 20
    # the train ratio (32 replayed steps per env step, batches of 4 x 8) counts online updates only, and an
    # agent that learned offline skips the random prefill (agent_steps - 0 + 1 updates, not - prefill + 1)
    assert agent.config.train.prefill > 0
    assert counters["updates"] - counters["offline_updates"] == counters["agent_steps"] + 1
    assert np.isfinite(agent.last_eval["eval/return"])
    # Online updates keep the actor's KL to the frozen behaviour-cloning prior, which does not move.
    assert agent.config.ac.prior_kl > 0
    logged = [row for row in read_jsonl(logdir / "metrics.jsonl") if "train/ac/prior_kl" in row]
    assert logged and all(np.isfinite(row["train/ac/prior_kl"]) for row in logged)
    assert same(state_of(agent.learner.bc_prior), fitted["agent"].learner.bc_prior.state_dict())


# ---------------------------------------------------------------------------------------------------
# 12. Policy heads that read the observation (``ac.obs_input``)


def test_obs_input_heads_read_real_and_decoded_observations(rule_ds: Dataset, tmp_path: Path) -> None:
    cfg = offline_config(tmp_path / "run", "ac.obs_input=true", "model.ensemble=0", "train.batch_size=8")
    agent = Dreamer(cfg, rule_ds.obs_space, rule_ds.act_space["action"])
    learner = agent.learner
    assert learner.bc.obs_keys == ["vector"] and learner.ac.actor.obs_keys == ["vector"]
    assert learner.bc.encoder is not learner.ac.actor.encoder  # each head has its own encoder
    feat = torch.randn(5, learner.wm.rssm.feat_dim, device=learner.device)
    with pytest.raises(ValueError, match="ac.obs_input"):
        learner.bc(feat)
    # The observation changes the policy at the same model state.
    vec = torch.randn(5, 4, device=learner.device)
    with torch.no_grad():
        a, b = (learner.bc(feat, {"vector": v}).logits for v in (vec, -vec))
    assert not torch.allclose(a, b)
    # Without an observation, the head sees the model's decoded one (vectors back out of symlog space).
    with torch.no_grad():
        decoded = learner.decoded_obs(feat, ["vector"])
        torch.testing.assert_close(decoded["vector"], symexp(learner.wm.decoder(feat)["vector"]))
        torch.testing.assert_close(learner.head_policy(learner.bc, feat).logits, learner.bc(feat, decoded).logits)
    # Imagined rollouts carry the decoded observations the policy saw at every step.
    start = {k: v[:3] for k, v in learner.wm.rssm.initial(3, learner.device).items()}
    traj = learner.imagine(start, 4, head="bc")
    assert traj["obs/vector"].shape == (3, 5, 4)
    torch.testing.assert_close(traj["obs/vector"], learner.decoded_obs(traj["feat"], ["vector"])["vector"])

    # Behaviour cloning trains the head's own encoder on the recorded observations and learns the rule,
    # which acting on real observations then follows.
    replay = offline.dataset_replay(rule_ds, chunk=64, seed=0)
    encoder = state_of(learner.bc.encoder)
    history = [offline.model_update(learner, replay.sample(8, 8)) for _ in range(120)]
    assert not same(state_of(learner.bc.encoder), encoder)
    assert np.mean([m["bc/accuracy"] for m in history[-20:]]) > 0.85
    vector = np.random.default_rng(7).normal(0, 0.5, (30, 5, 4)).astype(np.float32)
    state, hits = None, []
    for t in range(len(vector)):
        action, state, _ = learner.policy({"vector": vector[t], "is_first": np.full(5, t == 0)}, state, True, "bc")
        clear = np.abs(vector[t, :, 2]) > 0.05
        hits.extend((action == rule(vector[t]))[clear])
    assert np.mean(hits) > 0.85

    # RL starts from the head, encoder included, and the checkpoint keeps both encoders.
    offline.start_rl(learner)
    assert same(state_of(learner.ac.actor), state_of(learner.bc))
    offline.imagination_update(learner, replay.sample(8, 8), np.random.default_rng(0))
    assert not same(state_of(learner.ac.actor.encoder), state_of(learner.bc.encoder))
    agent.save_run()
    loaded = Dreamer.load(tmp_path / "run")
    assert same(state_of(loaded.learner.ac.actor), state_of(learner.ac.actor))
    assert same(state_of(loaded.learner.bc), state_of(learner.bc))


def learner_at_rl_start(cfg: Config, dataset: Dataset) -> tuple[Learner, dict[str, np.ndarray]]:
    """A vector-obs learner after one model update, at the start of imagination RL, and the batch it saw."""
    learner = Learner(cfg, {"vector": OBS_SPACE["vector"]}, DISCRETE)
    batch_np = windows(dataset, 8)
    offline.model_update(learner, batch_np)
    offline.start_rl(learner)
    return learner, batch_np


def test_data_prior_kl_is_the_actor_prior_kl_on_real_states(rule_ds: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="offline.data_prior_kl"):
        offline_config(tmp_path / "bad", "offline.data_prior_kl=-1")
    cfg = offline_config(tmp_path / "run", "ac.obs_input=true", "model.ensemble=0", "offline.data_prior_kl=1.0")
    learner, batch_np = learner_at_rl_start(cfg, rule_ds)
    batch = learner.sequences(batch_np)
    with torch.no_grad():
        states, _, _ = learner.wm.observe(batch)
        feat = learner.wm.rssm.feat(states)
        assert offline.data_prior_kl(learner, feat, batch).item() == pytest.approx(0.0, abs=1e-6)  # actor == prior
        for p in learner.ac.actor.parameters():  # the actor drifts away from its prior
            p.add_(0.3 * torch.randn_like(p))
        actor = learner.ac.actor(feat, {"vector": batch["vector"]})
        prior = learner.bc_prior(feat, {"vector": batch["vector"]})
        p_a, p_b = actor.logits.exp(), prior.logits.exp()
        by_hand = (p_a * (p_a.log() - p_b.log())).sum(-1).mean()
        got = offline.data_prior_kl(learner, feat, batch)
    assert got.item() > 1e-3
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-4)
    metrics = offline.imagination_update(learner, batch_np, np.random.default_rng(0))
    assert metrics["ac/data_prior_kl"] > 0


def test_rl_critic_data_keeps_the_critic_on_the_recorded_returns(rule_ds: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="offline.rl_critic_data"):
        offline_config(tmp_path / "bad", "offline.rl_critic_data=-1")
    losses = {}
    for scale in (0.0, 1.0):
        torch.manual_seed(0)
        cfg = offline_config(tmp_path / f"run{scale}", "model.ensemble=0", f"offline.rl_critic_data={scale}")
        learner, batch_np = learner_at_rl_start(cfg, rule_ds)
        batch = learner.sequences(batch_np)
        with torch.no_grad():
            states, _, _ = learner.wm.observe(batch)
            feat = learner.wm.rssm.feat(states)
            before = offline.data_critic_loss(learner, feat, batch).item()
        rng = np.random.default_rng(0)
        for _ in range(40):
            metrics = offline.imagination_update(learner, batch_np, rng)
        with torch.no_grad():
            losses[scale] = offline.data_critic_loss(learner, feat, batch).item()
        assert ("loss/critic_data" in metrics) == (scale > 0)
    # The imagined returns alone bring the critic only part of the way to the recorded ones.
    assert losses[1.0] < before
    assert losses[1.0] < 0.9 * losses[0.0]


def test_policy_on_observations_alone(rule_ds: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ac.obs_input=true"):
        offline_config(tmp_path / "bad", "ac.feat_input=false")
    cfg = offline_config(tmp_path / "run", "ac.obs_input=true", "ac.feat_input=false", "model.ensemble=0")
    learner = Learner(cfg, {"vector": OBS_SPACE["vector"]}, DISCRETE)
    assert not learner.bc.reads_feat and not learner.ac.actor.reads_feat
    dev = learner.device
    vec = {"vector": torch.randn(5, 4, device=dev)}
    with torch.no_grad():  # the model state does not move the policy; the observation does
        a, b = (learner.bc(torch.randn(5, learner.wm.rssm.feat_dim, device=dev), vec).logits for _ in range(2))
        c = learner.bc(torch.randn(5, learner.wm.rssm.feat_dim, device=dev), {"vector": -vec["vector"]}).logits
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)

    # Imagination shows the policy the real observation at the start, the decoded ones after.
    start = learner.wm.rssm.initial(3, learner.device)
    first = {"vector": torch.randn(3, 4, device=dev)}
    traj = learner.imagine(start, 4, head="bc", first_obs=first)
    torch.testing.assert_close(traj["obs/vector"][:, 0], first["vector"])
    decoded = learner.decoded_obs(traj["feat"][:, 1:], ["vector"])["vector"]
    torch.testing.assert_close(traj["obs/vector"][:, 1:], decoded)

    # Behaviour cloning alone needs no pass of the world model, and learns the rule.
    replay = offline.dataset_replay(rule_ds, chunk=64, seed=0)
    model = state_of(learner.wm)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(learner.wm, "observe", lambda *a, **k: pytest.fail("the model was run for an observation policy"))
        history = [offline.bc_update(learner, replay.sample(8, 8)) for _ in range(150)]
    assert same(state_of(learner.wm), model)
    assert np.mean([m["bc/accuracy"] for m in history[-20:]]) > 0.85


def test_bc_phase_trains_only_the_head_between_model_and_rl(rule_ds: Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="offline.bc_frac"):
        offline_config(tmp_path / "bad", "offline.rl_frac=0.5", "offline.bc_frac=0.6")
    cfg = offline_config(tmp_path / "unit", "model.ensemble=0", "ac.obs_input=true", "optim.warmup=0")
    learner = Learner(cfg, {"vector": OBS_SPACE["vector"]}, DISCRETE)
    batch_np = windows(rule_ds, 8)
    offline.model_update(learner, batch_np)
    wm, critic, actor = state_of(learner.wm), state_of(learner.ac.critic), state_of(learner.ac.actor)
    head = state_of(learner.bc)
    losses = [offline.bc_update(learner, batch_np)["bc/loss"] for _ in range(40)]
    assert same(state_of(learner.wm), wm) and same(state_of(learner.ac.critic), critic)
    assert same(state_of(learner.ac.actor), actor)
    assert not same(state_of(learner.bc), head)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, losses  # the head learns the rule on frozen features

    calls: list[str] = []  # the phases of fit, in order: model, BC alone, imagination RL
    with pytest.MonkeyPatch.context() as mp:
        for name in ("model_update", "bc_update", "imagination_update"):
            real = getattr(offline, name)
            mp.setattr(offline, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
        agent = Dreamer(offline_config(tmp_path / "fit", "offline.rl_frac=0.25", "offline.bc_frac=0.25"))
        agent.fit(rule_ds, steps=12)
    assert calls == ["model_update"] * 6 + ["bc_update"] * 3 + ["imagination_update"] * 3


def test_bc_head_moving_average_plays_and_starts_rl(rule_ds: Dataset, tmp_path: Path) -> None:
    for bad, key in (("offline.bc_ema=1", "bc_ema"), ("offline.bc_shift=-1", "bc_shift")):
        with pytest.raises(ConfigError, match=key):
            offline_config(tmp_path / "bad", bad)
    cfg = offline_config(tmp_path / "run", "model.ensemble=0", "offline.bc_ema=0.75", "optim.warmup=0")
    learner = Learner(cfg, {"vector": OBS_SPACE["vector"]}, DISCRETE)
    assert learner.bc_avg is not None and learner.actor("bc") is learner.bc_avg
    assert Learner(offline_config(tmp_path / "off"), {"vector": OBS_SPACE["vector"]}, DISCRETE).bc_avg is None
    batch_np = windows(rule_ds, 8)
    for update in (offline.model_update, offline.bc_update):  # both phases that train the head move the average
        avg = state_of(learner.bc_avg)
        update(learner, batch_np)
        head = state_of(learner.bc)
        assert not same(head, avg)
        for k, v in state_of(learner.bc_avg).items():
            torch.testing.assert_close(v, 0.75 * avg[k] + 0.25 * head[k])
    offline.start_rl(learner)  # RL starts from the average, which is also its prior
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


def test_bc_shift_moves_only_the_images_the_policy_reads(rule_ds: Dataset, tmp_path: Path) -> None:
    seen: list[tuple[tuple[int, ...], int]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(offline, "random_shift", lambda images, pad: seen.append((tuple(images.shape), pad)) or images + 1)
        cfg = offline_config(tmp_path / "vec", "ac.obs_input=true", "offline.bc_shift=2")
        learner = Learner(cfg, {"vector": OBS_SPACE["vector"]}, DISCRETE)
        offline.bc_update(learner, windows(rule_ds, 8))
        assert seen == []  # a vector is not moved
        space = {"image": Space(np.uint8, (16, 16, 3), 0, 255)}
        cfg = offline_config(tmp_path / "img", "ac.obs_input=true", "model.ensemble=0")
        learner = Learner(cfg, space, DISCRETE)
        batch = {
            "image": torch.randint(0, 256, (2, 5, 16, 16, 3), dtype=torch.uint8),
            "action": torch.nn.functional.one_hot(torch.randint(0, 2, (2, 5)), 2).float(),
            "is_first": torch.zeros(2, 5),
        }
        feat = torch.zeros(2, 5, learner.wm.rssm.feat_dim)
        plain, _ = offline.bc_loss(learner.bc, feat, batch)
        assert seen == []
        moved, _ = offline.bc_loss(learner.bc, feat, batch, shift=2)
        assert seen == [((2, 4, 16, 16, 3), 2)]  # the policy's view of the steps it is scored on
        assert not torch.allclose(plain, moved)


def test_policy_heads_image_encoder_follows_ac_cnn_depth(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ac.cnn_depth"):
        offline_config(tmp_path / "bad", "ac.cnn_depth=-1")
    space = {"image": Space(np.uint8, (16, 16, 3), 0, 255)}

    def channels(module: torch.nn.Module) -> list[int]:
        return [m.out_channels for m in module.modules() if isinstance(m, torch.nn.Conv2d)]

    widths = {}
    for depth in (0, 8):
        flags = ("ac.obs_input=true", "ac.feat_input=false", "model.ensemble=0", f"ac.cnn_depth={depth}")
        cfg = offline_config(tmp_path / f"d{depth}", *flags)
        learner = Learner(cfg, space, DISCRETE)
        widths[depth] = [channels(m) for m in (learner.wm.encoder, learner.bc.encoder, learner.ac.actor.encoder)]
        image = torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8)
        assert learner.bc(torch.zeros(3, 0), {"image": image}).logits.shape == (3, 2)
    model = [cfg.model.cnn_depth * m for m in (2, 3, 4, 4)]
    assert widths[0] == [model, model, model]  # 0: the heads' convolutions are as wide as the model's
    assert widths[8] == [model, [16, 24, 32, 32], [16, 24, 32, 32]]  # the model's own encoder keeps its width


def test_prior_support_restricts_the_actor_to_the_priors_likely_actions(rule_ds: Dataset, tmp_path: Path) -> None:
    cfg = ActorCriticConfig(unimix=0.0)
    prior = Policy(torch.log(torch.tensor([[0.5, 0.3, 0.04, 0.16]])), True, cfg)
    policy = Policy(torch.log(torch.tensor([[0.1, 0.2, 0.6, 0.1]])), True, cfg)
    kept = within_support(policy, prior, 0.1)  # allowed: prior probability >= 0.05
    assert torch.allclose(kept.logits.exp(), torch.tensor([[0.25, 0.5, 0.0, 0.25]]), atol=1e-6)
    assert torch.isfinite(kept.entropy()).all() and torch.isfinite(kept.kl(prior)).all()
    assert within_support(policy, prior, 0.0) is policy
    with pytest.raises(ConfigError, match="ac.prior_support"):
        offline_config(tmp_path / "bad", "ac.prior_support=1")

    cfg_run = offline_config(tmp_path / "run", "model.ensemble=0", "ac.prior_support=0.1", "ac.prior_kl=0.3")
    learner, batch_np = learner_at_rl_start(cfg_run, rule_ds)
    with torch.no_grad():  # the prior all but rules out action 1; the actor prefers it
        learner.bc_prior.net[-1].bias.copy_(torch.tensor([0.0, -6.0]))
        learner.ac.actor.net[-1].bias.copy_(torch.tensor([0.0, 6.0]))
        states, _, _ = learner.wm.observe(learner.sequences(batch_np))
        feat = learner.wm.rssm.feat(states)
        assert learner.ac.actor(feat).logits.exp()[..., 1].mean() > 0.9
        assert learner.head_policy(learner.ac.actor, feat).logits.exp()[..., 1].max() == 0.0
        assert learner.head_policy(learner.bc, feat).logits.exp()[..., 1].min() > 0.0  # other heads: as they are
        start = {k: v.reshape(-1, *v.shape[2:]) for k, v in states.items()}
        traj = learner.imagine(start, 5)
    assert traj["action"][..., 1].sum() == 0  # imagination never takes the excluded action
    obs = {"vector": batch_np["vector"][:, 0], "is_first": np.ones(len(batch_np["vector"]), bool)}
    actions, _, _ = learner.policy(obs, None, deterministic=False)
    assert (actions == 0).all()  # ... nor does acting
    metrics = offline.imagination_update(learner, batch_np, np.random.default_rng(0))
    assert np.isfinite(metrics["loss/actor"]) and np.isfinite(metrics["ac/prior_kl"])

    agent = Dreamer(offline_config(tmp_path / "online", "ac.prior_support=0.1"))
    with pytest.raises(ConfigError, match="fit\\(dataset\\) it first"):
        agent.learn("CartPole-v1", steps=10)


def test_one_step_values_score_each_action_of_each_start(
    rule_ds: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad, key in (("offline.one_step_samples=0", "offline.one_step_samples"), ("ac.prior_kl=0", "ac.prior_kl > 0")):
        with pytest.raises(ConfigError, match=key):
            offline_config(tmp_path / "bad", "offline.rl_objective=one_step", bad)
    cfg = offline_config(tmp_path / "run", "model.ensemble=0", "offline.rl_objective=one_step")
    learner, batch_np = learner_at_rl_start(cfg, rule_ds)
    batch = learner.sequences(batch_np)
    with torch.no_grad():
        states, _, _ = learner.wm.observe(batch)
    start = {k: v[:, 3] for k, v in states.items()}  # the state at step 3 of each row
    n, samples = len(start["deter"]), 3

    # A reward that reveals which start and which action each imagined step came from.
    def tagged(traj: dict[str, torch.Tensor], prev_obs: Any = None, change: Any = None) -> torch.Tensor:
        assert traj["feat"].shape[:2] == (n * learner.action_dim * samples, 2)
        which = traj["action"][:, 0].argmax(-1).float()
        return torch.stack([torch.zeros_like(which), which + 10.0 * traj["feat"][:, 0, 0]], 1)

    monkeypatch.setattr(learner, "imagined_reward", tagged)
    with torch.no_grad():
        q = offline.one_step_values(learner, start, {}, samples)
    feat0 = learner.wm.rssm.feat(start)[:, 0]
    expected = torch.arange(learner.action_dim).float()[None] + 10.0 * feat0[:, None]
    assert q.shape == (n, learner.action_dim)
    torch.testing.assert_close(q, expected)


def test_one_step_objective_moves_the_actor_to_prior_times_exp_q(
    rule_ds: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = offline_config(
        tmp_path / "run",
        "model.ensemble=0",
        "offline.rl_objective=one_step",
        "ac.prior_kl=1.0",
        "ac.entropy=0.0",
        "optim.lr=3e-3",
        "offline.imag_starts=32",
    )
    learner, batch_np = learner_at_rl_start(cfg, rule_ds)
    bonus = torch.tensor([0.0, 1.0])  # the model says action 1 pays 1 more, everywhere

    def values(learner_: Learner, start: dict[str, torch.Tensor], seen: Any, samples: int) -> torch.Tensor:
        return bonus.expand(len(start["deter"]), -1)

    monkeypatch.setattr(offline, "one_step_values", values)
    batch = learner.sequences(batch_np)
    with torch.no_grad():
        feat = learner.wm.rssm.feat(learner.wm.observe(batch)[0])
        prior = learner.bc_prior(feat).logits
    target = torch.log_softmax(prior + bonus, -1)  # prior * exp(Q / 1), renormalised

    def gap() -> float:
        with torch.no_grad():
            logits = learner.ac.actor(feat).logits
        return float((logits.exp() * (logits - target)).sum(-1).mean())  # KL(actor || target)

    wm, critic = state_of(learner.wm), state_of(learner.ac.critic)
    before = gap()
    rng = np.random.default_rng(0)
    for _ in range(60):
        metrics = offline.one_step_update(learner, batch_np, rng)
    assert before > 0.05
    assert gap() < 0.2 * before
    assert metrics["ac/prior_kl"] > 0.01
    assert same(state_of(learner.wm), wm) and same(state_of(learner.ac.critic), critic)
    box, box_batch = _box_learner(tmp_path / "box", "reinforce")
    with pytest.raises(ValueError, match="discrete action space"):
        offline.one_step_update(box, box_batch, rng)
    box_ds = write_dataset(tmp_path / "box_ds", [True], act_space=BOX, expert=box_rule)
    agent = Dreamer(offline_config(tmp_path / "box_run", "model.ensemble=0", "offline.rl_objective=one_step"))
    with pytest.raises(ValueError, match="discrete action space"):  # before any update, not when RL begins
        agent.fit(box_ds, steps=4)
    assert agent.counters["offline_updates"] == 0


def test_return_weights_by_hand(mixed_ds: Dataset, tmp_path: Path) -> None:
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
    replay = offline.dataset_replay(mixed_ds, chunk=16, seed=0, return_discount=0.9)
    batch_np = replay.sample(64, 8)
    assert batch_np["return_to_go"].shape == batch_np["reward"].shape
    unrewarded = batch_np["reward_mask"] == 0
    assert unrewarded.any() and (batch_np["return_to_go"][unrewarded] == 0).all()
    assert (batch_np["return_to_go"][~unrewarded] > 1).any()  # CartPole pays 1 a step
    replay = offline.dataset_replay(mixed_ds, chunk=16, seed=0, return_discount=0.9, min_reward=1.5)
    assert (replay.sample(64, 8)["return_to_go"] == 0).all()  # 1 a step is below min_reward

    cfg = offline_config(tmp_path / "run", "model.ensemble=0", "offline.bc_return_temp=0.5", "offline.bc_weight_max=7")
    learner = Learner(cfg, {"vector": OBS_SPACE["vector"]}, DISCRETE)
    batch = {
        "return_to_go": torch.tensor([[0.0, 2.0, 1.0, 0.5, 9.0], [3.0, 0.0, 0.0, 0.0, 0.0]]),
        "reward_mask": torch.tensor([[1.0] * 5, [0.0] * 5]),  # the second row has no rewards
        "reward": torch.zeros(2, 5),
    }
    weight, metrics = offline.return_weights(learner, batch)
    centred = (torch.tensor([0.0, 2.0, 1.0, 0.5]) - 0.875) / 0.5  # the mean of the rewarded steps: 0.875
    torch.testing.assert_close(weight[0], torch.exp(centred).clamp(max=7.0))
    assert weight[0, 1] == pytest.approx(7.0)  # exp(2.25) capped at bc_weight_max
    torch.testing.assert_close(weight[1], torch.ones(4))
    assert metrics["bc/weight_max"] == pytest.approx(7.0)


def test_return_weighted_bc_learns_the_rewarded_action_from_random_play(rule_ds: Dataset, tmp_path: Path) -> None:
    """Random recorded actions, a reward of 1 wherever the action matched ``rule``: plain BC learns no
    preference, return-weighted BC learns the rule."""
    batch_np = windows(rule_ds, 40)
    rng = np.random.default_rng(0)
    batch_np["action"] = rng.integers(0, 2, batch_np["action"].shape)
    hit = batch_np["action"][:, 1:] == rule(batch_np["vector"][:, :-1])
    batch_np["reward"] = np.concatenate([np.zeros((len(hit), 1)), hit], 1).astype(np.float32)
    batch_np["action_mask"] = batch_np["reward_mask"] = np.ones_like(batch_np["action_mask"])
    batch_np["return_to_go"] = np.stack([return_to_go(r, 0.0) for r in batch_np["reward"]])
    test_obs = torch.as_tensor(rng.normal(0, 0.5, (400, 4)), dtype=torch.float32)
    agreement = {}
    for temp in (0.0, 0.25):
        torch.manual_seed(0)
        overrides = ("model.ensemble=0", "ac.obs_input=true", "ac.feat_input=false")
        learner = Learner(
            offline_config(tmp_path / f"run{temp}", *overrides, f"offline.bc_return_temp={temp}"),
            {"vector": OBS_SPACE["vector"]},
            DISCRETE,
        )
        for _ in range(150):
            metrics = offline.bc_update(learner, batch_np)
        assert ("bc/weight_mean" in metrics) == (temp > 0)
        with torch.no_grad():
            choice = learner.bc(torch.zeros(len(test_obs), 0), {"vector": test_obs}).logits.argmax(-1).numpy()
        agreement[temp] = float((choice == rule(test_obs.numpy())).mean())
    assert agreement[0.25] > 0.8, agreement
    assert agreement[0.0] < 0.7, agreement

    # Through fit: the model phase and the BC-alone phase weight their BC terms, RL runs on the same replay.
    overrides = ("offline.bc_return_temp=1.0", "offline.bc_frac=0.25", "offline.log_every=2")
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


def test_crafter_presets_hold_the_benchmark_settings() -> None:
    """The pixel and weighting presets are the ``--set`` lists the offline Crafter benchmark's agents ran with
    (docs/offline_results.md), and the weighting, applied last, turns the symbolic preset's support rule off."""
    weighting = [
        "ac.prior_support=0.0",
        "offline.bc_return_temp=1.0",
        "offline.bc_return_discount=0.97",
        "offline.bc_return_min_reward=0.5",
    ]
    pixels = "model.units=256 ac.units=256 model.hidden=256 model.classes=16 optim.lr=1e-3 train.batch_length=32"
    pixels += " offline.pessimism=cut ac.obs_input=true ac.feat_input=false offline.imag_starts=64"
    # the px_cnn8_kl3 re-run: heads twice as wide, averaged, 1,950 updates in all; 450 RL updates, KL weights 3
    pixels += " ac.cnn_depth=8 offline.bc_ema=0.995 ac.prior_kl=3.0 offline.data_prior_kl=3.0"
    pixels += " offline.steps=2400 offline.bc_frac=0.25 offline.rl_frac=0.1875"
    by_hand = make_config(["offline", "cpu_cnn"], [*pixels.split(), *weighting])
    assert make_config(["offline", "cpu_cnn", "offline_crafter_pixels", "offline_crafter_weighted"]) == by_hand
    assert make_config(["offline", "cpu_cnn", "offline_crafter_pixels"]) != by_hand  # the weighting is its own
    symbolic = make_config(["offline", "offline_crafter_symbolic"])
    assert symbolic.ac.prior_support == 0.1 and symbolic.offline.bc_return_temp == 0.0
    weighted = make_config(["offline", "offline_crafter_symbolic", "offline_crafter_weighted"])
    assert weighted == make_config(["offline", "offline_crafter_symbolic"], weighting)
