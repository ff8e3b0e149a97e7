"""Actor and critic, trained on rollouts imagined by the world model (DreamerV3).

The actor maps model features to a policy: a categorical with 1% unimix over one-hot actions, or a
bounded normal (mean ``tanh``, std in ``[0.1, 1]``). With ``ac.input`` ``obs`` or ``feat+obs`` it reads the
current observation through its own encoder (the real one when acting, the pictured one in imagination).
The critic predicts a two-hot value distribution over symexp bins; a slow EMA copy regularises it.
The recipe's constants (DreamerV3, Dreamer 4) are the module's upper-case names.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from reverie.config import ActorCriticConfig
from reverie.envs.base import Space
from reverie.functional import (
    ReturnNorm,
    lambda_return,
    masked_mean,
    pmpo_loss,
    sample_onehot,
    twohot_bins,
    twohot_decode,
    twohot_loss,
    unimix_logits,
)
from reverie.nets import MLP, soft_update

if TYPE_CHECKING:
    from reverie.world_model import Encoder

UNIMIX = 0.01
"""Share of uniform mixed into the discrete policy."""
MIN_STD, MAX_STD = 0.1, 1.0
"""Bounds of the continuous policy's standard deviation."""
RETNORM_RATE, RETNORM_LIMIT, RETNORM_LOW, RETNORM_HIGH = 0.01, 1.0, 0.05, 0.95
"""Return normalisation: EMA rate of the 5th-95th percentile range; advantages are divided by max(1, range)."""
SLOW_RATE, SLOW_REG = 0.02, 1.0
"""EMA rate of the slow critic, and the scale of the critic's regulariser towards it."""
PMPO_ALPHA = 0.5
"""PMPO's weight of the positive-advantage set (1 - alpha on the negative set), Dreamer 4."""


def action_dim(space: Space) -> int:
    """Width of the action vector the model sees: one-hot size, or the flat Box size."""
    return space.n if space.discrete else int(math.prod(space.shape))


class Policy:
    """A batch of action distributions; actions are vectors (one-hot when discrete)."""

    def __init__(self, out: Tensor, discrete: bool):
        self.discrete = discrete
        if discrete:
            self.logits = unimix_logits(out, UNIMIX)  # (..., K) log-probs
        else:
            mean, std = out.float().chunk(2, -1)
            self.mean = torch.tanh(mean)
            self.std = (MAX_STD - MIN_STD) * torch.sigmoid(std + 2.0) + MIN_STD

    def sample(self) -> Tensor:
        if self.discrete:
            return sample_onehot(self.logits)
        return self.mean + self.std * torch.randn_like(self.mean)  # reparameterised

    def mode(self) -> Tensor:
        if self.discrete:
            return nn.functional.one_hot(self.logits.argmax(-1), self.logits.shape[-1]).float()
        return self.mean

    def log_prob(self, action: Tensor) -> Tensor:
        if self.discrete:
            return (action.detach() * self.logits).sum(-1)
        var = self.std**2
        logp = -((action.detach() - self.mean) ** 2) / (2 * var) - torch.log(self.std) - 0.5 * math.log(2 * math.pi)
        return logp.sum(-1)

    def kl(self, other: Policy) -> Tensor:
        """KL(self || other) per batch entry: the reverse KL to a prior when ``other`` is the prior."""
        if self.discrete:
            return (self.logits.exp() * (self.logits - other.logits)).sum(-1)
        var, other_var = self.std**2, other.std**2
        kl = torch.log(other.std / self.std) + (var + (self.mean - other.mean) ** 2) / (2 * other_var) - 0.5
        return kl.sum(-1)

    def entropy(self) -> Tensor:
        if self.discrete:
            return -(self.logits.exp() * self.logits).sum(-1)
        return (0.5 + 0.5 * math.log(2 * math.pi) + torch.log(self.std)).sum(-1)


class Actor(nn.Module):
    """Features (and, with an ``encoder``, observations) -> :class:`Policy`.

    The output layer starts at scale 0.01 (near-uniform policy). ``encoder`` (an observation encoder
    with ``out_dim`` and ``keys``) gives the policy its own sharp view of the present next to the model state;
    ``forward`` then needs ``obs`` in env units (images 0-255, raw vectors). With ``ac.input=obs`` the policy
    reads the observation alone and ignores ``feat``: the world model then serves it as a simulator of
    observations (MOPO/MOReL-style offline model-based RL).
    """

    def __init__(self, feat_dim: int, space: Space, cfg: ActorCriticConfig, encoder: Encoder | None = None):
        super().__init__()
        self.cfg, self.discrete = cfg, space.discrete
        self.encoder = encoder
        self.reads_feat = encoder is None or cfg.input != "obs"
        inp = (feat_dim if self.reads_feat else 0) + (encoder.out_dim if encoder is not None else 0)
        out = action_dim(space) * (1 if space.discrete else 2)
        self.net = MLP(inp, cfg.units, cfg.layers, out=out, out_scale=0.01)

    @property
    def obs_keys(self) -> list[str]:
        """The observation keys the policy reads (none without an encoder)."""
        return [] if self.encoder is None else self.encoder.keys

    def forward(self, feat: Tensor, obs: dict[str, Tensor] | None = None) -> Policy:
        if self.encoder is not None:
            if obs is None:
                raise ValueError(
                    f"This policy reads observations (ac.input={self.cfg.input}): pass obs, e.g. the world model's "
                    "picture of them (WorldModel.picture)."
                )
            seen = self.encoder(obs).to(feat.dtype)
            feat = torch.cat([feat, seen], -1) if self.reads_feat else seen
        return Policy(self.net(feat), self.discrete)


class Critic(nn.Module):
    """Features -> two-hot value logits; zero-initialised output, so it starts predicting 0."""

    def __init__(self, feat_dim: int, cfg: ActorCriticConfig, bins: int):
        super().__init__()
        self.net = MLP(feat_dim, cfg.units, cfg.layers, out=bins, out_scale=0.0)

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat)


def bc_loss(
    actor: Actor, feat: Tensor, batch: dict[str, Tensor], weight: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Behaviour cloning: negative log-likelihood of the recorded action taken at each step, over labelled steps.

    ``action[t + 1]`` is the action taken at step ``t`` (it led to step ``t + 1``), so the policy at ``feat[:, t]``
    (B, T, F) is scored on it wherever ``t + 1`` continues the episode and carries a label (``action_mask``, and
    ``bc_mask`` where rows of an agent's own play are not demonstrations). ``weight`` (B, T - 1), if given, weights
    each step's term; the loss is the weighted mean over labelled steps.
    """
    mask = 1.0 - batch["is_first"][:, 1:].float()
    for key in ("action_mask", "bc_mask"):
        if key in batch:
            mask = mask * batch[key][:, 1:].float()
    obs = {k: batch[k][:, :-1] for k in actor.obs_keys} or None  # the policy's own view of the recorded steps
    policy = actor(feat[:, :-1], obs)
    target = batch["action"][:, 1:]
    weighted = mask if weight is None else mask * weight
    loss = -(policy.log_prob(target) * weighted).sum() / weighted.sum().clamp(min=1e-6)
    metrics = {"bc/loss": loss.detach(), "bc/labelled_frac": mask.mean()}
    if policy.discrete:
        hit = (policy.logits.argmax(-1) == target.argmax(-1)).float()
        metrics["bc/accuracy"] = masked_mean(hit, mask).detach()
    return loss, metrics


def replay_lambda_return(reward: Tensor, disc: Tensor, boot: Tensor, is_first: Tensor, lam: float) -> Tensor:
    """Lambda-returns along real replayed sequences (B, T) -> (B, T - 1), cut at episode starts.

    Where step t+1 begins a new episode, the return of step t is its own bootstrap value, so no
    return ever mixes two episodes.
    """
    cut = is_first[:, 1:].float()
    rets = []
    last = boot[:, -1]
    for t in reversed(range(reward.shape[1] - 1)):
        nxt = reward[:, t + 1] + disc[:, t + 1] * ((1 - lam) * boot[:, t + 1] + lam * last)
        last = cut[:, t] * boot[:, t] + (1 - cut[:, t]) * nxt
        rets.append(last)
    return torch.stack(rets[::-1], 1)


class ActorCritic(nn.Module):
    """Actor, critic, slow critic and return normaliser, with the imagination losses."""

    bins: Tensor

    def __init__(self, feat_dim: int, space: Space, cfg: ActorCriticConfig, bins: int, encoder: Encoder | None = None):
        super().__init__()
        self.cfg = cfg
        self.actor = Actor(feat_dim, space, cfg, encoder)
        self.critic = Critic(feat_dim, cfg, bins)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.retnorm = ReturnNorm(RETNORM_RATE, RETNORM_LIMIT, RETNORM_LOW, RETNORM_HIGH)
        self.register_buffer("bins", twohot_bins(bins), persistent=False)
        self.gamma = 1.0 - 1.0 / cfg.return_horizon

    def value(self, feat: Tensor, slow: bool = False) -> Tensor:
        """Mean of the (slow) critic's value distribution."""
        net = self.slow_critic if slow else self.critic
        return twohot_decode(net(feat), self.bins)

    def update_slow(self) -> None:
        soft_update(self.slow_critic, self.critic, SLOW_RATE)

    def imagine_loss(
        self, traj: dict[str, Tensor], prior: Actor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Actor and critic losses on an imagined trajectory.

        Args:
            traj: ``feat`` (N, H+1, F) and ``action`` (N, H+1, A) of the rollout (action t taken at t), ``reward``
                (N, H+1) predicted on arriving at each state (index 0 unused), ``cont`` (N, H+1) the continue
                probability of each state (index 0: the real one), and ``obs/<key>`` (N, H+1, ...) the pictured
                observations when the actor reads them.
            prior: a frozen behaviour-cloning actor; with ``cfg.prior_kl > 0`` the actor pays
                ``prior_kl * KL(policy || prior)``.

        Returns:
            ``(actor_loss, critic_loss, returns (N, H), metrics)``.
        """
        cfg = self.cfg
        feat, action, reward, cont = traj["feat"], traj["action"], traj["reward"], traj["cont"]
        disc = self.gamma * cont  # (N, H+1)
        # One pass of the critic over the rollout: its values (no gradient) make the returns, its logits the loss.
        all_logits = self.critic(feat.detach())  # (N, H+1, K)
        value = twohot_decode(all_logits.detach(), self.bins)  # (N, H+1)
        ret = lambda_return(reward, disc, value, cfg.lam)  # (N, H)
        weight = torch.cumprod(cont, 1)[:, :-1].detach()  # chance that state t is still in the episode
        scale = self.retnorm.update(ret)
        adv = (ret - value[:, :-1]) / scale  # (N, H)
        obs = {k[4:]: v[:, :-1].detach() for k, v in traj.items() if k.startswith("obs/")} or None
        policy = self.actor(feat[:, :-1].detach() if cfg.actor_grad == "reinforce" else feat[:, :-1], obs)
        entropy = policy.entropy()
        if cfg.objective == "pmpo":
            logp = policy.log_prob(action[:, :-1])
            actor_loss = pmpo_loss(logp, ret - value[:, :-1], weight, PMPO_ALPHA)
            actor_loss = actor_loss - (weight * cfg.entropy * entropy).mean()
        else:
            objective = policy.log_prob(action[:, :-1]) * adv.detach() if cfg.actor_grad == "reinforce" else adv
            actor_loss = -(weight * (objective + cfg.entropy * entropy)).mean()
        extra = {}
        if prior is not None and cfg.prior_kl > 0:
            with torch.no_grad():
                prior_policy = prior(feat[:, :-1].detach(), obs)
            kl = (weight * policy.kl(prior_policy)).mean()
            actor_loss = actor_loss + cfg.prior_kl * kl
            extra["ac/prior_kl"] = kl.detach()
        logits = all_logits[:, :-1]
        slow = self.value(feat[:, :-1].detach(), slow=True)
        critic_loss = twohot_loss(logits, ret.detach(), self.bins)
        critic_loss = critic_loss + SLOW_REG * twohot_loss(logits, slow.detach(), self.bins)
        critic_loss = (weight * critic_loss).mean()
        metrics = {
            "ac/return": ret.mean().detach(),
            "ac/value": value.mean().detach(),
            "ac/adv_std": adv.std().detach(),
            "ac/entropy": entropy.mean().detach(),
            "ac/retnorm_scale": scale.detach(),
            "ac/imag_reward": reward[:, 1:].mean().detach(),
            **extra,
        }
        return actor_loss, critic_loss, ret, metrics

    def repval_loss(self, feat: Tensor, batch: dict[str, Tensor], boot: Tensor) -> Tensor:
        """Critic loss on replayed real sequences, bootstrapped from the imagined returns.

        Args:
            feat: (B, T, F) posterior features of the replayed batch (gradient reaches the model).
            batch: the replayed batch (``reward``, ``is_terminal``, ``is_first``).
            boot: (B, T) imagined return from each replayed state.
        """
        disc = self.gamma * (1.0 - batch["is_terminal"].float())
        ret = replay_lambda_return(batch["reward"].float(), disc, boot.detach(), batch["is_first"], self.cfg.lam)
        logits = self.critic(feat[:, :-1])
        slow = self.value(feat[:, :-1].detach(), slow=True)
        loss = twohot_loss(logits, ret, self.bins)
        loss = loss + SLOW_REG * twohot_loss(logits, slow.detach(), self.bins)
        return loss.mean()
