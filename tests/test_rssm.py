"""Tests of the RSSM, the world-model loss, the policy distributions and the replay lambda-returns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reverie.actor_critic import Actor, Critic, Policy, replay_lambda_return
from reverie.config import make_config
from reverie.envs.base import Space
from reverie.functional import kl_balance, lambda_return
from reverie.rssm import BLOCKS, RSSM
from reverie.world_model import WorldModel

EMBED, ACT = 6, 3


@pytest.fixture
def cfg():  # type: ignore[no-untyped-def]
    return make_config(["debug"]).model


@pytest.fixture
def rssm(cfg) -> RSSM:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return RSSM(cfg, embed_dim=EMBED, action_dim=ACT)


def random_state(rssm: RSSM, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, rssm.cfg.classes, (batch, rssm.cfg.stoch), generator=gen)
    stoch = torch.nn.functional.one_hot(idx, rssm.cfg.classes).float()
    return {"deter": torch.randn(batch, rssm.cfg.deter, generator=gen).tanh(), "stoch": stoch}


def sequence(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    embed = torch.randn(batch, length, EMBED, generator=gen)
    action = torch.randn(batch, length, ACT, generator=gen)
    is_first = torch.zeros(batch, length)
    is_first[:, 0] = 1
    return embed, action, is_first


# ---------------------------------------------------------------------------------------------------
# RSSM


def test_observe_shapes_and_distributions(rssm: RSSM, cfg) -> None:  # type: ignore[no-untyped-def]
    B, T = 2, 5
    states, post, prior = rssm.observe(*sequence(B, T, seed=0))
    assert states["deter"].shape == (B, T, cfg.deter)
    assert states["stoch"].shape == (B, T, cfg.stoch, cfg.classes)
    assert post.shape == prior.shape == (B, T, cfg.stoch, cfg.classes)
    for logp in (post, prior):  # log-probs with the 1% unimix
        assert torch.allclose(logp.exp().sum(-1), torch.ones(B, T, cfg.stoch), atol=1e-5)
        assert (logp.exp() >= cfg.unimix / cfg.classes * (1 - 1e-5)).all()
    assert torch.allclose(states["stoch"].sum(-1), torch.ones(B, T, cfg.stoch), atol=1e-5)
    assert rssm.feat({k: v[:, -1] for k, v in states.items()}).shape == (B, rssm.feat_dim)
    assert rssm.feat_dim == cfg.deter + cfg.stoch * cfg.classes


def test_is_first_resets_state(rssm: RSSM) -> None:
    B, T = 2, 5
    embed, action, is_first = sequence(B, T, seed=1)
    torch.manual_seed(123)
    fresh, fresh_post, _ = rssm.observe(embed, action, is_first)

    # a different history, then the same sequence starting with is_first: identical, sampling included
    g_embed, g_action, g_first = sequence(B, 4, seed=2)
    garbage, _, _ = rssm.observe(g_embed * 5, g_action * 3, g_first)
    last = {k: v[:, -1] for k, v in garbage.items()}
    assert last["deter"].abs().sum() > 0
    torch.manual_seed(123)
    resumed, resumed_post, _ = rssm.observe(embed, action, is_first, state=last)
    assert torch.allclose(resumed["deter"], fresh["deter"], atol=1e-6)
    assert torch.equal(resumed["stoch"].round(), fresh["stoch"].round())
    assert torch.allclose(resumed_post, fresh_post, atol=1e-5)

    # control: without the reset flag the history leaks in
    torch.manual_seed(123)
    leaked, _, _ = rssm.observe(embed, action, torch.zeros(B, T), state=last)
    assert not torch.allclose(leaked["deter"][:, 0], fresh["deter"][:, 0], atol=1e-3)


def test_reset_step_deter_is_deterministic(rssm: RSSM) -> None:
    """Within one sequence: the deter at a reset step depends only on the zero state and zero action."""
    B = 2
    g_embed, g_action, _ = sequence(B, 3, seed=3)
    embed, action, _ = sequence(B, 4, seed=4)
    is_first = torch.zeros(B, 7)
    is_first[:, 3] = 1  # garbage steps 0..2 without a reset at 0, then the sequence
    states, _, _ = rssm.observe(torch.cat([g_embed, embed], 1), torch.cat([g_action, action], 1), is_first)
    zero_action_deter = rssm.core(rssm.initial(B), torch.zeros(B, ACT))
    assert torch.allclose(states["deter"][:, 3], zero_action_deter, atol=1e-6)
    # the action given at a reset step is ignored
    first = torch.ones(B, 1)
    with_action, _, _ = rssm.obs_step(random_state(rssm, B), action[:, 0] * 10, embed[:, 0], first[:, 0])
    assert torch.allclose(with_action["deter"], zero_action_deter, atol=1e-6)


def test_all_zero_inputs_keep_deter_at_zero(rssm: RSSM) -> None:
    deter = rssm.core(rssm.initial(3), torch.zeros(3, ACT))
    assert torch.equal(deter, torch.zeros_like(deter))


def test_update_gate_bias_is_minus_one(rssm: RSSM) -> None:
    """With the gate layer's weights zeroed, gates are its bias: reset sigmoid(0), update sigmoid(0 - 1)."""
    D, G = rssm.cfg.deter, BLOCKS
    with torch.no_grad():
        rssm.core_gates.weight.zero_()
        rssm.core_gates.bias.zero_()
        rssm.core_gates.bias.view(G, 3, D // G)[:, 1] = 2.0  # candidate pre-activation
    state = random_state(rssm, 4, seed=5)
    deter = rssm.core(state, torch.randn(4, ACT))
    update = 1 / (1 + math.e)  # sigmoid(-1)
    cand = math.tanh(0.5 * 2.0)  # tanh(sigmoid(0) * 2)
    assert torch.allclose(deter, update * cand + (1 - update) * state["deter"], atol=1e-6)


def test_action_mask_selects_learned_no_action(rssm: RSSM) -> None:
    B = 2
    state = random_state(rssm, B, seed=6)
    a1, a2 = torch.randn(B, ACT), torch.randn(B, ACT)
    with torch.no_grad():
        rssm.no_action.normal_()
    masked = torch.zeros(B)
    assert torch.allclose(rssm.core(state, a1, masked), rssm.core(state, a2, masked), atol=1e-6)
    known = torch.ones(B)
    assert not torch.allclose(rssm.core(state, a1, known), rssm.core(state, a2, known), atol=1e-4)
    assert torch.allclose(rssm.core(state, a1, known), rssm.core(state, a1), atol=1e-6)
    mixed = torch.tensor([0.0, 1.0])
    diff = (rssm.core(state, a1, mixed) - rssm.core(state, a2, mixed)).abs().amax(-1)
    assert diff[0] < 1e-6 and diff[1] > 1e-4
    # the no-action vector is what the masked step reads, and it learns from the loss
    out = rssm.core(state, a1, masked)
    with torch.no_grad():
        rssm.no_action.add_(1.0)
    assert not torch.allclose(rssm.core(state, a1, masked), out, atol=1e-4)
    rssm.zero_grad()
    rssm.core(state, a1, masked).pow(2).sum().backward()
    assert rssm.no_action.grad is not None and rssm.no_action.grad.abs().sum() > 0
    rssm.zero_grad()
    rssm.core(state, a1, known).pow(2).sum().backward()
    assert rssm.no_action.grad is None or rssm.no_action.grad.abs().sum() == 0


def test_action_mask_through_observe(rssm: RSSM) -> None:
    B, T = 2, 4
    embed, action, is_first = sequence(B, T, seed=7)
    mask = torch.zeros(B, T)
    torch.manual_seed(0)
    a, _, _ = rssm.observe(embed, action, is_first, action_mask=mask)
    torch.manual_seed(0)
    b, _, _ = rssm.observe(embed, action * -2 + 1, is_first, action_mask=mask)
    assert torch.allclose(a["deter"], b["deter"], atol=1e-6)


def test_prior_loss_gradient_reaches_core(rssm: RSSM) -> None:
    embed, action, is_first = sequence(2, 4, seed=8)
    _, post, prior = rssm.observe(embed, action, is_first)
    dyn, _ = kl_balance(post, prior, free_nats=0.0)
    dyn.mean().backward()
    for name in ("core_shared", "core_block", "core_gates", "in_deter", "in_stoch", "in_action", "prior_net"):
        grads = [p.grad for p in getattr(rssm, name).parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_imagine_step_keeps_shapes(rssm: RSSM, cfg) -> None:  # type: ignore[no-untyped-def]
    B = 3
    state = rssm.initial(B)
    for _ in range(3):
        state = rssm.imagine_step(state, torch.randn(B, ACT))
        assert state["deter"].shape == (B, cfg.deter)
        assert state["stoch"].shape == (B, cfg.stoch, cfg.classes)
        assert torch.allclose(state["stoch"].sum(-1), torch.ones(B, cfg.stoch), atol=1e-5)
    assert rssm.feat(state).shape == (B, rssm.feat_dim)
    assert state["deter"].abs().sum() > 0


# ---------------------------------------------------------------------------------------------------
# world model


def make_batch(obs_space: dict[str, Space], B: int, T: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch: dict[str, torch.Tensor] = {}
    for key, space in obs_space.items():
        if space.is_image:
            batch[key] = torch.randint(0, 256, (B, T, *space.shape), generator=gen, dtype=torch.uint8)
        else:
            batch[key] = torch.randn(B, T, *space.shape, generator=gen) * 10
    batch["action"] = torch.nn.functional.one_hot(torch.randint(0, ACT, (B, T), generator=gen), ACT).float()
    batch["reward"] = torch.randn(B, T, generator=gen)
    batch["is_first"] = torch.zeros(B, T, dtype=torch.bool)
    batch["is_first"][:, 0] = True
    batch["is_terminal"] = torch.zeros(B, T, dtype=torch.bool)
    batch["is_terminal"][0, -1] = True
    return batch


SPACES = {
    "vector": {"obs": Space(np.float32, (5,))},
    "image": {"image": Space(np.uint8, (64, 64, 3), 0, 255)},
    "both": {"image": Space(np.uint8, (64, 64, 3), 0, 255), "obs": Space(np.float32, (2, 3))},
}


@pytest.mark.parametrize("kind", list(SPACES))
def test_world_model_loss_finite(cfg, kind: str) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    space = SPACES[kind]
    wm = WorldModel(space, ACT, cfg)
    batch = make_batch(space, 2, 3, seed=0)
    total, states, metrics = wm.loss(batch)
    assert total.shape == () and torch.isfinite(total)
    assert states["deter"].shape == (2, 3, cfg.deter)
    for key in ("rec", "rew", "con", "dyn", "rep"):
        value = metrics[f"loss/{key}"]
        assert value.shape == () and torch.isfinite(value), key
    for key in space:
        assert torch.isfinite(metrics[f"loss/rec/{key}"]), key
    assert metrics["loss/dyn"] >= cfg.free_nats and metrics["loss/rep"] >= cfg.free_nats
    total.backward()
    assert all(p.grad is not None for p in wm.encoder.parameters())


def test_reward_mask_zero_removes_reward_gradient(cfg) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    space = SPACES["vector"]
    wm = WorldModel(space, ACT, cfg)
    batch = make_batch(space, 2, 3, seed=1)

    def head_grad(mask: torch.Tensor) -> float:
        wm.zero_grad()
        total, _, metrics = wm.loss({**batch, "reward_mask": mask})
        total.backward()
        return sum(float(p.grad.abs().sum()) for p in wm.reward_head.parameters() if p.grad is not None)

    assert head_grad(torch.ones(2, 3)) > 0  # control: the reward loss trains the head
    assert head_grad(torch.zeros(2, 3)) == 0.0
    _, _, metrics = wm.loss({**batch, "reward_mask": torch.zeros(2, 3)})
    assert metrics["loss/rew"].item() == 0.0


# ---------------------------------------------------------------------------------------------------
# actor and critic


@pytest.fixture
def ac_cfg():  # type: ignore[no-untyped-def]
    return make_config(["debug"]).ac


def test_discrete_policy_has_unimix() -> None:
    K = 5
    out = torch.full((4, K), -1e4)
    out[:, 2] = 1e4
    policy = Policy(out, discrete=True)
    probs = policy.logits.exp()
    assert torch.allclose(probs.sum(-1), torch.ones(4), atol=1e-5)
    assert (probs >= 0.01 / K * (1 - 1e-5)).all()  # DreamerV3's 1% unimix
    assert torch.allclose(probs[:, 0], torch.full((4,), 0.01 / K), rtol=1e-4)
    assert torch.equal(policy.mode(), torch.nn.functional.one_hot(torch.full((4,), 2), K).float())
    torch.manual_seed(0)
    sample = policy.sample()
    assert torch.allclose(sample.sum(-1), torch.ones(4), atol=1e-5)
    action = torch.nn.functional.one_hot(torch.tensor([0, 2, 2, 4]), K).float()
    assert torch.allclose(policy.log_prob(action), (action * probs.log()).sum(-1), atol=1e-5)


def test_continuous_policy_bounds_and_log_prob() -> None:
    gen = torch.Generator().manual_seed(0)
    out = torch.cat([torch.randn(50, 4, generator=gen) * 100, torch.randn(50, 4, generator=gen) * 100], -1)
    policy = Policy(out, discrete=False)
    assert (policy.std >= 0.1).all() and (policy.std <= 1.0).all()  # DreamerV3's bounds
    assert (policy.mean >= -1).all() and (policy.mean <= 1).all()
    moderate = Policy(torch.randn(6, 8, generator=gen), discrete=False)
    action = torch.randn(6, 4, generator=gen)
    ref = torch.distributions.Normal(moderate.mean, moderate.std)
    assert torch.allclose(moderate.log_prob(action), ref.log_prob(action).sum(-1), atol=1e-5)
    assert torch.allclose(moderate.entropy(), ref.entropy().sum(-1), atol=1e-5)


def test_actor_and_critic_start_near_uniform(ac_cfg) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    actor = Actor(10, Space(np.int64, (), 0, 4, discrete=True), ac_cfg)
    probs = actor(torch.randn(7, 10)).logits.exp()
    assert torch.allclose(probs, torch.full((7, 4), 0.25), atol=0.05)
    critic = Critic(10, ac_cfg, bins=31)
    assert torch.equal(critic(torch.randn(7, 10)), torch.zeros(7, 31))


def test_actor_output_layer_std_is_outscale_over_sqrt_fan_in() -> None:
    torch.manual_seed(0)
    cfg = make_config(["debug"], ["ac.units=256"]).ac
    actor = Actor(10, Space(np.int64, (), 0, 8, discrete=True), cfg)
    weight = actor.net[-1].weight  # (out, units)
    assert weight.shape == (8, 256)
    ratio = weight.std().item() / (0.01 / math.sqrt(256))
    assert 0.8 < ratio < 1.25, ratio


def test_replay_lambda_return_equals_lambda_return_without_starts() -> None:
    gen = torch.Generator().manual_seed(0)
    B, T = 3, 8
    reward, boot = torch.randn(B, T, generator=gen), torch.randn(B, T, generator=gen)
    disc = 0.99 * (torch.rand(B, T, generator=gen) > 0.2).float()
    is_first = torch.zeros(B, T)
    expected = lambda_return(reward, disc, boot, 0.95)
    assert torch.allclose(replay_lambda_return(reward, disc, boot, is_first, 0.95), expected, atol=1e-6)
    is_first[:, 0] = 1  # a start at index 0 precedes every return: nothing to cut
    assert torch.allclose(replay_lambda_return(reward, disc, boot, is_first, 0.95), expected, atol=1e-6)


def test_replay_lambda_return_never_mixes_episodes() -> None:
    gen = torch.Generator().manual_seed(1)
    B, T, k = 2, 9, 5  # a new episode begins at step k
    reward, boot = torch.randn(B, T, generator=gen), torch.randn(B, T, generator=gen)
    disc = torch.full((B, T), 0.99)
    is_first = torch.zeros(B, T)
    is_first[:, k] = 1
    ret = replay_lambda_return(reward, disc, boot, is_first, 0.95)
    assert ret.shape == (B, T - 1)
    assert torch.allclose(ret[:, k - 1], boot[:, k - 1])  # the step before a start is its own bootstrap
    assert torch.allclose(ret[:, k - 2], reward[:, k - 1] + disc[:, k - 1] * boot[:, k - 1], atol=1e-6)
    # the later episode is an independent lambda-return
    assert torch.allclose(ret[:, k:], lambda_return(reward[:, k:], disc[:, k:], boot[:, k:], 0.95), atol=1e-6)
    # and changing anything in one episode leaves the other's returns untouched
    reward2, boot2 = reward.clone(), boot.clone()
    reward2[:, k:] += 100
    boot2[:, k:] -= 100
    ret2 = replay_lambda_return(reward2, disc, boot2, is_first, 0.95)
    assert torch.equal(ret2[:, :k], ret[:, :k])
    reward3, boot3 = reward.clone(), boot.clone()
    reward3[:, :k] += 100
    boot3[:, :k] -= 100
    ret3 = replay_lambda_return(reward3, disc, boot3, is_first, 0.95)
    assert torch.equal(ret3[:, k:], ret[:, k:])
