"""Actor and critic, trained on rollouts imagined by the world model (DreamerV3).

The actor maps model features to a policy: a categorical with 1% unimix over one-hot actions, or a
bounded normal (mean ``tanh``, std in ``[min_std, max_std]``). With ``ac.obs_input`` it also reads the
current observation through its own encoder (the real one when acting, the decoded one in imagination).
The critic predicts a two-hot value distribution over symexp bins; a slow EMA copy regularises it.
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


def action_dim(space: Space) -> int:
    """Width of the action vector the model sees: one-hot size, or the flat Box size."""
    return space.n if space.discrete else int(math.prod(space.shape))


class Policy:
    """A batch of action distributions; actions are vectors (one-hot when discrete)."""

    def __init__(self, out: Tensor, discrete: bool, cfg: ActorCriticConfig):
        self.discrete = discrete
        if discrete:
            self.logits = unimix_logits(out, cfg.unimix)  # (..., K) log-probs
        else:
            mean, std = out.float().chunk(2, -1)
            self.mean = torch.tanh(mean)
            self.std = (cfg.max_std - cfg.min_std) * torch.sigmoid(std + 2.0) + cfg.min_std

    def restrict(self, allowed: Tensor) -> Policy:
        """The discrete policy renormalised over the ``allowed`` actions (bool, same shape as the logits)."""
        if not self.discrete:
            raise ValueError("Only a discrete policy can be restricted to a set of actions.")
        out = copy.copy(self)
        out.logits = torch.log_softmax(self.logits.masked_fill(~allowed, -1e4), -1)  # exp(-1e4) is exactly 0
        return out

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


def within_support(policy: Policy, prior: Policy, tau: float) -> Policy:
    """``policy`` restricted to the actions ``prior`` gives at least ``tau`` times its top probability
    (discrete BCQ's rule, Fujimoto et al. 2019); unchanged when ``tau`` is 0 or actions are continuous."""
    if tau <= 0 or not policy.discrete:
        return policy
    top = prior.logits.detach().max(-1, keepdim=True).values
    return policy.restrict(prior.logits.detach() >= top + math.log(tau))


class Actor(nn.Module):
    """Features (and, with an ``encoder``, observations) -> :class:`Policy`.

    The output layer starts at scale 0.01 (near-uniform policy). ``encoder`` (an observation encoder
    with ``out_dim``, ``images`` and ``vectors``) gives the policy its own sharp view of the present next
    to the model state; ``forward`` then needs ``obs`` in env units (images 0-255, raw vectors). With an
    encoder and ``cfg.feat_input`` false the policy reads the observation alone and ignores ``feat``: the
    world model then serves it as a simulator of observations (MOPO/MOReL-style offline model-based RL).
    """

    def __init__(self, feat_dim: int, space: Space, cfg: ActorCriticConfig, encoder: Encoder | None = None):
        super().__init__()
        self.cfg, self.discrete = cfg, space.discrete
        self.encoder = encoder
        self.reads_feat = encoder is None or cfg.feat_input
        inp = (feat_dim if self.reads_feat else 0) + (encoder.out_dim if encoder is not None else 0)
        out = action_dim(space) * (1 if space.discrete else 2)
        self.net = MLP(inp, cfg.units, cfg.layers, out=out, out_scale=0.01)

    @property
    def obs_keys(self) -> list[str]:
        """The observation keys the policy reads (none without an encoder)."""
        if self.encoder is None:
            return []
        return [*self.encoder.images, *self.encoder.vectors]

    def forward(self, feat: Tensor, obs: dict[str, Tensor] | None = None) -> Policy:
        if self.encoder is not None:
            if obs is None:
                raise ValueError(
                    "This policy reads observations (ac.obs_input=true): pass obs, or call Learner.head_policy, "
                    "which decodes them from the features."
                )
            seen = self.encoder(obs).to(feat.dtype)
            feat = torch.cat([feat, seen], -1) if self.reads_feat else seen
        return Policy(self.net(feat), self.discrete, self.cfg)


class Critic(nn.Module):
    """Features -> two-hot value logits; zero-initialised output, so it starts predicting 0."""

    def __init__(self, feat_dim: int, cfg: ActorCriticConfig, bins: int):
        super().__init__()
        self.net = MLP(feat_dim, cfg.units, cfg.layers, out=bins, out_scale=0.0)

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat)


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
        self.retnorm = ReturnNorm(cfg.retnorm_rate, cfg.retnorm_limit, cfg.retnorm_low, cfg.retnorm_high)
        self.register_buffer("bins", twohot_bins(bins), persistent=False)
        self.gamma = 1.0 - 1.0 / cfg.return_horizon

    def value(self, feat: Tensor, slow: bool = False) -> Tensor:
        """Mean of the (slow) critic's value distribution."""
        net = self.slow_critic if slow else self.critic
        return twohot_decode(net(feat), self.bins)

    def update_slow(self) -> None:
        soft_update(self.slow_critic, self.critic, self.cfg.slow_rate)

    def imagine_loss(
        self, traj: dict[str, Tensor], reward: Tensor, cont: Tensor, prior: Actor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Actor and critic losses on an imagined trajectory.

        Args:
            traj: ``feat`` (N, H+1, F) and ``action`` (N, H+1, A) of the rollout (action t taken at t), and
                ``obs/<key>`` (N, H+1, ...) the decoded observations when the actor reads them.
            reward: (N, H+1) predicted reward arriving at each state.
            cont: (N, H+1) continue probability of each state (index 0: the real one).
            prior: a frozen behaviour-cloning actor; with ``cfg.prior_kl > 0`` the actor pays
                ``prior_kl * KL(policy || prior)``; with ``cfg.prior_support > 0`` its policy is restricted
                to the prior's likely actions (as it was when the rollout was imagined).

        Returns:
            ``(actor_loss, critic_loss, returns (N, H), metrics)``.
        """
        cfg = self.cfg
        feat, action = traj["feat"], traj["action"]
        disc = self.gamma * cont  # (N, H+1)
        value = self.value(feat.detach())  # (N, H+1)
        ret = lambda_return(reward, disc, value, cfg.lam)  # (N, H)
        weight = torch.cumprod(cont, 1)[:, :-1].detach()  # chance that state t is still in the episode
        scale = self.retnorm.update(ret)
        adv = (ret - value[:, :-1]) / scale  # (N, H)
        obs = {k[4:]: v[:, :-1].detach() for k, v in traj.items() if k.startswith("obs/")} or None
        policy = self.actor(feat[:, :-1].detach() if cfg.actor_grad == "reinforce" else feat[:, :-1], obs)
        prior_policy = None
        if prior is not None and (cfg.prior_kl > 0 or cfg.prior_support > 0):
            with torch.no_grad():
                prior_policy = prior(feat[:, :-1].detach(), obs)
            policy = within_support(policy, prior_policy, cfg.prior_support)
        entropy = policy.entropy()
        if cfg.objective == "pmpo":
            logp = policy.log_prob(action[:, :-1])
            actor_loss = pmpo_loss(logp, ret - value[:, :-1], weight, cfg.pmpo_alpha)
            actor_loss = actor_loss - (weight * cfg.entropy * entropy).mean()
        else:
            objective = policy.log_prob(action[:, :-1]) * adv.detach() if cfg.actor_grad == "reinforce" else adv
            actor_loss = -(weight * (objective + cfg.entropy * entropy)).mean()
        extra = {}
        if prior_policy is not None and cfg.prior_kl > 0:
            kl = (weight * policy.kl(prior_policy)).mean()
            actor_loss = actor_loss + cfg.prior_kl * kl
            extra["ac/prior_kl"] = kl.detach()
        logits = self.critic(feat[:, :-1].detach())
        slow = self.value(feat[:, :-1].detach(), slow=True)
        critic_loss = twohot_loss(logits, ret.detach(), self.bins)
        critic_loss = critic_loss + cfg.slow_reg * twohot_loss(logits, slow.detach(), self.bins)
        critic_loss = (weight * critic_loss).mean()
        metrics = {
            "ac/return": ret.mean().detach(),
            "ac/value": value.mean().detach(),
            "ac/adv_std": adv.std().detach(),
            "ac/entropy": entropy.mean().detach(),
            "ac/retnorm_scale": scale.detach(),
            "ac/imag_reward": reward.mean().detach(),
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
        loss = loss + self.cfg.slow_reg * twohot_loss(logits, slow.detach(), self.bins)
        return loss.mean()
