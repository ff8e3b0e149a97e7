"""The math of DreamerV3 as pure functions: each has a hand-checked test in ``tests/test_functional.py``.

Shapes: B batch, T time, K bins or classes, S latent variables.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import reverie.distributed as distributed


def softmax(x: Tensor) -> Tensor:
    """Softmax over the last axis; written out for small axes, where it is ~3x faster on CPU."""
    if x.shape[-1] > 16:
        return torch.softmax(x, -1)
    e = (x - x.detach().amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def log_softmax(x: Tensor) -> Tensor:
    """Log-softmax over the last axis; written out for small axes, as :func:`softmax`."""
    if x.shape[-1] > 16:
        return F.log_softmax(x, -1)
    z = x - x.detach().amax(-1, keepdim=True)
    return z - z.exp().sum(-1, keepdim=True).log()


def symlog(x: Tensor) -> Tensor:
    """``sign(x) * ln(1 + |x|)``: compresses large magnitudes, identity near zero.

    Example:
        >>> symlog(torch.tensor([0.0, 1.0, -1.0]))
        tensor([ 0.0000,  0.6931, -0.6931])
    """
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: Tensor) -> Tensor:
    """Inverse of :func:`symlog`: ``sign(x) * (exp(|x|) - 1)``."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def twohot_bins(num: int = 255, low: float = -20.0, high: float = 20.0) -> Tensor:
    """Bin positions in raw value space: ``symexp(linspace(low, high, num))`` (DreamerV3).

    For symmetric ranges and odd ``num`` the negative half is the mirror of the positive half and the
    middle bin is exactly 0, so that 0 encodes as a one-hot.
    """
    if low == -high and num % 2 == 1:
        half = symexp(torch.linspace(0.0, high, num // 2 + 1))  # starts at exactly 0
        return torch.cat([-half[1:].flip(0), half])
    return symexp(torch.linspace(low, high, num))


def twohot_encode(x: Tensor, bins: Tensor) -> Tensor:
    """Two-hot weights of ``x`` over sorted ``bins``: (...,) -> (..., K).

    The two neighbouring bins share the weight in proportion to closeness, linearly in the space the
    bins live in (raw values for :func:`twohot_bins`), so that ``weights @ bins == x`` inside the range.
    Values outside the range go wholly to the end bin.

    Example:
        >>> twohot_encode(torch.tensor(0.25), torch.tensor([0.0, 1.0, 2.0]))
        tensor([0.7500, 0.2500, 0.0000])
    """
    x = x.detach().to(bins.dtype)
    k = bins.numel()
    above = torch.searchsorted(bins, x.contiguous(), right=True).clamp(1, k - 1)  # index of upper bin
    below = above - 1
    lo, hi = bins[below], bins[above]
    w_hi = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    out = torch.zeros(*x.shape, k, dtype=bins.dtype, device=bins.device)
    out.scatter_(-1, below.unsqueeze(-1), (1.0 - w_hi).unsqueeze(-1))
    out.scatter_add_(-1, above.unsqueeze(-1), w_hi.unsqueeze(-1))
    return out


def twohot_decode(logits: Tensor, bins: Tensor) -> Tensor:
    """Expected value of the softmax over ``bins``: (..., K) -> (...,).

    With an odd number of symmetric bins the two halves are summed outward from the middle and then
    added, so that uniform logits give exactly 0 despite bins of magnitude ~5e8 (as the official code).
    """
    weighted = torch.softmax(logits.float(), -1) * bins
    k = bins.shape[0]
    if k % 2 == 0:
        return weighted.sum(-1)
    m = k // 2
    return weighted[..., m] + (weighted[..., :m].flip(-1) + weighted[..., m + 1 :]).sum(-1)


def twohot_loss(logits: Tensor, target: Tensor, bins: Tensor) -> Tensor:
    """Cross-entropy between the softmax of ``logits`` and the two-hot of ``target``: (..., K) -> (...,)."""
    return -(twohot_encode(target, bins) * F.log_softmax(logits.float(), -1)).sum(-1)


def lambda_return(reward: Tensor, cont: Tensor, value: Tensor, lam: float) -> Tensor:
    """TD(lambda) returns along the last axis.

    ``R_t = r_{t+1} + c_{t+1} * ((1 - lam) * v_{t+1} + lam * R_{t+1})`` with ``R_{T-1} = v_{T-1}``.

    Args:
        reward: (..., T) reward arriving at each state (index 0 unused).
        cont: (..., T) discount at each state (gamma times the continue probability).
        value: (..., T) value estimate of each state.
        lam: lambda in [0, 1]; 0 gives one-step TD targets, 1 Monte-Carlo returns bootstrapped at the end.

    Returns:
        (..., T - 1) returns of states 0 .. T-2.

    Example:
        >>> r = torch.tensor([0.0, 1.0, 1.0]); c = torch.ones(3); v = torch.zeros(3)
        >>> lambda_return(r, c, v, 1.0)
        tensor([2., 1.])
    """
    assert reward.shape == cont.shape == value.shape, (reward.shape, cont.shape, value.shape)
    returns = []
    last = value[..., -1]
    for t in reversed(range(reward.shape[-1] - 1)):
        last = reward[..., t + 1] + cont[..., t + 1] * ((1 - lam) * value[..., t + 1] + lam * last)
        returns.append(last)
    return torch.stack(returns[::-1], -1)


def categorical_kl(lhs_logits: Tensor, rhs_logits: Tensor) -> Tensor:
    """KL(lhs || rhs) of independent categoricals (..., S, K), summed over S: -> (...,)."""
    lhs_logp = log_softmax(lhs_logits.float())
    rhs_logp = log_softmax(rhs_logits.float())
    return (lhs_logp.exp() * (lhs_logp - rhs_logp)).sum((-2, -1))


def kl_balance(post_logits: Tensor, prior_logits: Tensor, free_nats: float) -> tuple[Tensor, Tensor]:
    """DreamerV3's two KL terms, each clipped below at ``free_nats``.

    Returns ``(dyn, rep)``: ``dyn = max(free, KL(sg(post) || prior))`` trains the prior,
    ``rep = max(free, KL(post || sg(prior)))`` trains the posterior (the representation).
    """
    dyn = categorical_kl(post_logits.detach(), prior_logits)
    rep = categorical_kl(post_logits, prior_logits.detach())
    return dyn.clamp(min=free_nats), rep.clamp(min=free_nats)


def unimix_logits(logits: Tensor, unimix: float) -> Tensor:
    """Log-probabilities of ``(1 - unimix) * softmax(logits) + unimix / K``."""
    if unimix <= 0:
        return log_softmax(logits.float())
    probs = softmax(logits.float())
    probs = (1 - unimix) * probs + unimix / logits.shape[-1]
    return torch.log(probs)


def sample_onehot(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Straight-through one-hot sample of a categorical: forward is one-hot, gradient is the probs'."""
    probs = softmax(logits.float())
    # Inverse-CDF sampling: several times faster than torch.multinomial for small K on CPU.
    u = torch.rand(*probs.shape[:-1], 1, device=probs.device, generator=generator)
    index = (probs.detach().cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)
    onehot = F.one_hot(index, probs.shape[-1]).to(probs.dtype)
    return onehot + (probs - probs.detach())


def percentile_range(x: Tensor, low: float, high: float) -> Tensor:
    """``quantile(x, high) - quantile(x, low)`` over all entries (a scalar)."""
    flat = x.detach().float().flatten()
    q = torch.quantile(flat, torch.tensor([low, high], device=flat.device))
    return q[1] - q[0]


class ReturnNorm(torch.nn.Module):
    """EMA of the 5th-95th percentile range of returns; advantages are divided by ``max(limit, range)``.

    The EMA starts at zero without debiasing, as in the official code, so early scales are ``limit``.

    Example:
        >>> norm = ReturnNorm(rate=1.0)
        >>> scale = norm.update(torch.linspace(0, 100, 101))
        >>> round(float(scale), 1)
        90.0
    """

    range: Tensor

    def __init__(self, rate: float = 0.01, limit: float = 1.0, low: float = 0.05, high: float = 0.95):
        super().__init__()
        self.rate, self.limit, self.low, self.high = rate, limit, low, high
        self.register_buffer("range", torch.zeros(()))

    def update(self, returns: Tensor) -> Tensor:
        """Fold a batch of returns into the EMA and return the current scale.

        On several ranks the percentiles are those of the whole batch (every rank's returns).
        """
        new = percentile_range(distributed.gather_rows(returns.detach()), self.low, self.high).to(self.range.device)
        self.range.mul_(1 - self.rate).add_(self.rate * new)
        return self.scale()

    def scale(self) -> Tensor:
        """``max(limit, range)``."""
        return torch.clamp(self.range, min=self.limit)


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``x`` over entries where ``mask`` is 1 (all entries when mask is None); 0 if none."""
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def pmpo_loss(logp: Tensor, adv: Tensor, weight: Tensor, alpha: float = 0.5) -> Tensor:
    """PMPO (Dreamer 4): raise the log-probability of actions with non-negative advantage, lower the rest.

    ``L = -alpha * mean_{A >= 0} logp + (1 - alpha) * mean_{A < 0} logp``, each mean taken over its own set
    (weighted by ``weight``, e.g. the chance that an imagined state is still in the episode). Only the sign
    of the advantage matters, so returns need no normalisation.

    Args:
        logp: (...) log-probabilities of the taken actions (gradient flows here).
        adv: (...) advantages (treated as constants).
        weight: (...) non-negative weights (constants).
        alpha: weight of the positive set.
    """
    weight = weight.detach().to(logp.dtype)
    pos = (adv.detach() >= 0).to(logp.dtype) * weight
    neg = (adv.detach() < 0).to(logp.dtype) * weight
    pos_mean = (pos * logp).sum() / pos.sum().clamp(min=1e-8)
    neg_mean = (neg * logp).sum() / neg.sum().clamp(min=1e-8)
    return -alpha * pos_mean + (1.0 - alpha) * neg_mean


def return_to_go(reward: np.ndarray, discount: float, min_reward: float = 0.0) -> np.ndarray:
    """``G_t = r_{t+1} + discount * G_{t+1}`` along one episode's rewards (T,), ``G_{T-1} = 0`` (float32).

    Rewards smaller in magnitude than ``min_reward`` count as 0 (e.g. Crafter's +-0.1 health changes beside its
    +1 achievements).

    Example:
        >>> return_to_go(np.array([0.0, 1.0, 0.0, 1.0]), 0.5)
        array([1.25, 0.5 , 1.  , 0.  ], dtype=float32)
        >>> return_to_go(np.array([0.0, 1.0, -0.1, 1.0]), 0.5, min_reward=0.5)
        array([1.25, 0.5 , 1.  , 0.  ], dtype=float32)
    """
    reward = np.where(np.abs(reward) >= min_reward, reward, 0.0)
    out = np.zeros(len(reward), np.float64)
    for t in range(len(reward) - 2, -1, -1):
        out[t] = reward[t + 1] + discount * out[t + 1]
    return out.astype(np.float32)


def rwr_weights(returns: Tensor, known: Tensor, temp: float, weight_max: float) -> Tensor:
    """Reward-weighted regression's weights: ``exp((G - mean G) / temp)`` capped at ``weight_max``, the mean
    over the entries where ``known`` is 1; entries where it is 0 (no recorded rewards) weigh 1.

    Example:
        >>> rwr_weights(torch.tensor([0.0, 1.0, 5.0]), torch.tensor([1.0, 1.0, 0.0]), 0.5, 20.0)
        tensor([0.3679, 2.7183, 1.0000])
    """
    centred = (returns - masked_mean(returns, known)) / temp
    weight = torch.exp(centred.clamp(max=math.log(weight_max)))
    return known * weight + (1.0 - known)
