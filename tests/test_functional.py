"""Tests of the pure math in ``reverie.functional``: hand values, naive loops and gradient sides."""

from __future__ import annotations

import math

import pytest
import torch

from reverie.functional import (
    ReturnNorm,
    categorical_kl,
    kl_balance,
    lambda_return,
    log_softmax,
    masked_mean,
    percentile_range,
    sample_onehot,
    softmax,
    symexp,
    symlog,
    twohot_bins,
    twohot_decode,
    twohot_encode,
    twohot_loss,
    unimix_logits,
)

E = math.e


def close(a: torch.Tensor, b: torch.Tensor | float, atol: float = 1e-6, rtol: float = 1e-5) -> bool:
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), rtol, atol)


# ---------------------------------------------------------------------------------------------------
# symlog / symexp


def test_symlog_hand_values() -> None:
    x = torch.tensor([E - 1, -(E - 1), 0.0, E**2 - 1], dtype=torch.float64)
    assert close(symlog(x), torch.tensor([1.0, -1.0, 0.0, 2.0]), atol=1e-12)
    assert symlog(torch.tensor(0.0)).item() == 0.0


def test_symexp_hand_values() -> None:
    x = torch.tensor([1.0, -1.0, 0.0, 2.0], dtype=torch.float64)
    assert close(symexp(x), torch.tensor([E - 1, -(E - 1), 0.0, E**2 - 1]), atol=1e-12)


def test_symlog_symexp_round_trip_wide_range() -> None:
    mags = torch.logspace(-6, 6, 121, dtype=torch.float64)
    x = torch.cat([-mags.flip(0), torch.zeros(1, dtype=torch.float64), mags])
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-10, atol=1e-12)
    assert torch.allclose(symlog(symexp(symlog(x))), symlog(x), rtol=1e-10, atol=1e-12)
    assert close(symexp(symlog(torch.tensor(1e6, dtype=torch.float64))), 1e6, atol=1e-6)
    # float32 too, at relative precision
    x32 = x.float()
    assert torch.allclose(symexp(symlog(x32)), x32, rtol=1e-5, atol=1e-6)


def test_symlog_is_odd_and_monotone() -> None:
    x = torch.linspace(-50, 50, 1001, dtype=torch.float64)
    assert torch.equal(symlog(-x), -symlog(x))
    assert (symlog(x).diff() > 0).all()


# ---------------------------------------------------------------------------------------------------
# two-hot


def test_twohot_encode_between_bins_splits_linearly_in_raw_space() -> None:
    bins = torch.tensor([-4.0, 0.0, 1.0, 10.0])
    out = twohot_encode(torch.tensor(3.25), bins)  # 3.25 is a quarter of the way from 1 to 10
    assert close(out, torch.tensor([0.0, 0.0, 0.75, 0.25]))
    out = twohot_encode(torch.tensor(-1.0), bins)  # three quarters of the way from -4 to 0
    assert close(out, torch.tensor([0.25, 0.75, 0.0, 0.0]))


def test_twohot_encode_on_bin_is_onehot() -> None:
    bins = torch.tensor([-4.0, 0.0, 1.0, 10.0])
    for i, b in enumerate(bins):
        expected = torch.zeros(4)
        expected[i] = 1.0
        assert torch.equal(twohot_encode(b, bins), expected), (i, twohot_encode(b, bins))


def test_twohot_encode_clamps_outside_range_to_end_bins() -> None:
    bins = torch.tensor([-4.0, 0.0, 1.0, 10.0])
    assert torch.equal(twohot_encode(torch.tensor(-100.0), bins), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.equal(twohot_encode(torch.tensor(1e9), bins), torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_twohot_encode_batch_shape_and_weights_sum_to_one() -> None:
    bins = twohot_bins(255)
    gen = torch.Generator().manual_seed(0)
    x = symexp(torch.randn(4, 7, generator=gen) * 8)  # raw values spanning many magnitudes
    out = twohot_encode(x, bins)
    assert out.shape == (4, 7, 255)
    assert (out >= 0).all()
    assert torch.allclose(out.sum(-1), torch.ones(4, 7))
    assert ((out > 0).sum(-1) <= 2).all()


def test_twohot_encode_then_expectation_recovers_x() -> None:
    bins = twohot_bins(255).double()
    gen = torch.Generator().manual_seed(1)
    x = symexp(torch.empty(1000, dtype=torch.float64).uniform_(-19.9, 19.9, generator=gen))
    recovered = twohot_encode(x, bins) @ bins
    assert torch.allclose(recovered, x, rtol=1e-9, atol=1e-9)
    # the paper's example raw-space property on small bins too
    small = torch.tensor([0.0, 1.0, 2.0])
    assert close(twohot_encode(torch.tensor(0.25), small), torch.tensor([0.75, 0.25, 0.0]))


def test_twohot_encode_carries_no_gradient_to_target() -> None:
    bins = twohot_bins(31)
    target = torch.tensor([0.5, -3.0], requires_grad=True)
    logits = torch.zeros(2, 31, requires_grad=True)
    twohot_loss(logits, target, bins).sum().backward()
    assert target.grad is None
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_twohot_bins_shape_ends_and_approximate_symmetry() -> None:
    bins = twohot_bins(255)
    assert bins.shape == (255,)
    assert (bins.diff() > 0).all()
    assert close(bins[-1], symexp(torch.tensor(20.0)), rtol=1e-6)
    assert close(bins[0], -symexp(torch.tensor(20.0)), rtol=1e-6)
    assert abs(bins[127].item()) < 1e-6
    assert torch.allclose(bins, -bins.flip(0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("num", [255, 31])
def test_twohot_bins_exactly_symmetric_with_zero_bin(num: int) -> None:
    bins = twohot_bins(num)
    assert bins[num // 2].item() == 0.0
    assert torch.equal(bins, -bins.flip(0))
    expected = torch.zeros(num)
    expected[num // 2] = 1.0
    assert torch.equal(twohot_encode(torch.tensor(0.0), bins), expected)


def test_twohot_decode_of_peaked_logits_returns_that_bin() -> None:
    bins = twohot_bins(31)
    for i in (0, 7, 15, 22, 30):
        logits = torch.full((31,), -50.0)
        logits[i] = 50.0
        assert close(twohot_decode(logits, bins), bins[i], rtol=1e-5, atol=1e-5)


def test_twohot_decode_is_softmax_expectation() -> None:
    bins = torch.tensor([-1.0, 0.0, 2.0])
    logits = torch.log(torch.tensor([0.2, 0.3, 0.5]))
    assert close(twohot_decode(logits, bins), -0.2 + 1.0)


@pytest.mark.parametrize("num", [255, 31])
def test_twohot_decode_of_uniform_logits_is_zero(num: int) -> None:
    assert abs(twohot_decode(torch.zeros(3, num), twohot_bins(num))).max().item() < 1e-3


def test_twohot_loss_hand_value_and_gradient() -> None:
    bins = torch.tensor([0.0, 1.0, 2.0])
    logits = torch.zeros(3, requires_grad=True)
    loss = twohot_loss(logits, torch.tensor(0.25), bins)
    assert close(loss, math.log(3.0))  # cross-entropy of any target against uniform is ln K
    loss.backward()
    # d CE / d logits = softmax - target
    assert close(logits.grad, torch.tensor([1 / 3 - 0.75, 1 / 3 - 0.25, 1 / 3]))


def test_twohot_loss_minimal_at_target() -> None:
    bins = twohot_bins(31).double()
    target = torch.tensor(2.5, dtype=torch.float64)
    best = torch.log(twohot_encode(target, bins).clamp(min=1e-30))
    best_loss = twohot_loss(best, target, bins)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        other = best + 0.5 * torch.randn(31, generator=gen, dtype=torch.float64)
        assert twohot_loss(other, target, bins) > best_loss
    for shift in (-1.0, 1.0, 10.0):
        other = torch.log(twohot_encode(target + shift, bins).clamp(min=1e-30))
        assert twohot_loss(other, target, bins) > best_loss
    # gradient descent on the logits converges to a prediction of the target
    logits = torch.zeros(31, dtype=torch.float64, requires_grad=True)
    for _ in range(300):
        (grad,) = torch.autograd.grad(twohot_loss(logits, target, bins), logits)
        with torch.no_grad():
            logits -= 5.0 * grad
    assert close(twohot_decode(logits.detach(), bins), 2.5, atol=1e-2)


# ---------------------------------------------------------------------------------------------------
# lambda returns


def naive_lambda_return(reward, cont, value, lam):  # type: ignore[no-untyped-def]
    """The n-step definition: G^lam_t = (1-lam) sum_{n<N} lam^(n-1) G^(n)_t + lam^(N-1) G^(N)_t."""
    B, T = reward.shape
    out = torch.zeros(B, T - 1, dtype=torch.float64)
    for b in range(B):
        for t in range(T - 1):
            horizon = T - 1 - t  # steps until the last (bootstrap) state
            nstep = []
            for n in range(1, horizon + 1):
                g, disc = 0.0, 1.0
                for k in range(1, n + 1):
                    g += disc * float(reward[b, t + k])
                    disc *= float(cont[b, t + k])
                nstep.append(g + disc * float(value[b, t + n]))
            total = sum((1 - lam) * lam ** (n - 1) * nstep[n - 1] for n in range(1, horizon))
            out[b, t] = total + lam ** (horizon - 1) * nstep[-1]
    return out


def test_lambda_return_hand_computed_three_steps() -> None:
    reward = torch.tensor([0.0, 1.0, 2.0])
    cont = torch.tensor([1.0, 0.9, 0.5])
    value = torch.tensor([3.0, 4.0, 6.0])
    # R_1 = 2 + 0.5 * (0.05 * 6 + 0.95 * 6) = 5
    # R_0 = 1 + 0.9 * (0.05 * 4 + 0.95 * 5) = 1 + 0.9 * 4.95 = 5.455
    out = lambda_return(reward, cont, value, 0.95)
    assert out.shape == (2,)
    assert close(out, torch.tensor([5.455, 5.0]), atol=1e-5)


def test_lambda_return_matches_naive_nstep_definition() -> None:
    gen = torch.Generator().manual_seed(0)
    B, T = 3, 7
    reward = torch.randn(B, T, generator=gen, dtype=torch.float64)
    cont = torch.rand(B, T, generator=gen, dtype=torch.float64)
    value = torch.randn(B, T, generator=gen, dtype=torch.float64)
    for lam in (0.0, 0.5, 0.95, 1.0):
        out = lambda_return(reward, cont, value, lam)
        assert out.shape == (B, T - 1)
        assert torch.allclose(out, naive_lambda_return(reward, cont, value, lam), atol=1e-10), lam


def test_lambda_return_lam0_is_one_step_td() -> None:
    gen = torch.Generator().manual_seed(1)
    reward, cont, value = (torch.randn(4, 6, generator=gen, dtype=torch.float64) for _ in range(3))
    expected = reward[:, 1:] + cont[:, 1:] * value[:, 1:]
    assert torch.allclose(lambda_return(reward, cont, value, 0.0), expected, atol=1e-12)


def test_lambda_return_lam1_is_discounted_monte_carlo_with_bootstrap() -> None:
    gen = torch.Generator().manual_seed(2)
    B, T = 2, 5
    reward = torch.randn(B, T, generator=gen, dtype=torch.float64)
    cont = torch.rand(B, T, generator=gen, dtype=torch.float64)
    value = torch.randn(B, T, generator=gen, dtype=torch.float64)
    expected = torch.zeros(B, T - 1, dtype=torch.float64)
    for t in range(T - 1):
        disc = torch.ones(B, dtype=torch.float64)
        for k in range(t + 1, T):
            expected[:, t] += disc * reward[:, k]
            disc = disc * cont[:, k]
        expected[:, t] += disc * value[:, -1]
    assert torch.allclose(lambda_return(reward, cont, value, 1.0), expected, atol=1e-12)
    # the docstring example
    r, c, v = torch.tensor([0.0, 1.0, 1.0]), torch.ones(3), torch.zeros(3)
    assert torch.equal(lambda_return(r, c, v, 1.0), torch.tensor([2.0, 1.0]))


def test_lambda_return_gradient_reaches_reward_and_value() -> None:
    reward = torch.randn(2, 4, requires_grad=True)
    value = torch.randn(2, 4, requires_grad=True)
    cont = torch.full((2, 4), 0.9)
    lambda_return(reward, cont, value, 0.95).sum().backward()
    assert reward.grad[:, 0].abs().sum() == 0  # reward at index 0 is unused
    assert (reward.grad[:, 1:] != 0).all()
    assert value.grad[:, 0].abs().sum() == 0  # no return bootstraps from state 0
    assert (value.grad[:, 1:] != 0).all()


# ---------------------------------------------------------------------------------------------------
# KL terms


def test_categorical_kl_zero_for_equal() -> None:
    logits = torch.randn(3, 5, 4)
    assert torch.allclose(categorical_kl(logits, logits), torch.zeros(3), atol=1e-6)
    # shift invariance of logits
    assert torch.allclose(categorical_kl(logits, logits + 7.0), torch.zeros(3), atol=1e-5)


def test_categorical_kl_two_class_hand_value() -> None:
    p = torch.log(torch.tensor([[0.5, 0.5]]))  # (S=1, K=2)
    q = torch.log(torch.tensor([[0.25, 0.75]]))
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3)
    assert close(categorical_kl(p, q), 0.5 * math.log(4 / 3))
    # KL(q || p) = 0.25 ln(0.5) + 0.75 ln(1.5)
    assert close(categorical_kl(q, p), 0.25 * math.log(0.5) + 0.75 * math.log(1.5))


@pytest.mark.parametrize("classes", [4, 32])
def test_categorical_kl_matches_torch_distributions(classes: int) -> None:
    gen = torch.Generator().manual_seed(0)
    lhs = torch.randn(2, 3, 8, classes, generator=gen) * 2
    rhs = torch.randn(2, 3, 8, classes, generator=gen) * 2
    dist = torch.distributions
    ref = dist.kl_divergence(dist.Categorical(logits=lhs), dist.Categorical(logits=rhs)).sum(-1)
    assert categorical_kl(lhs, rhs).shape == (2, 3)
    assert torch.allclose(categorical_kl(lhs, rhs), ref, atol=1e-5)


def test_kl_balance_values_clipped_at_free_nats() -> None:
    gen = torch.Generator().manual_seed(0)
    post = torch.randn(6, 4, 4, generator=gen) * 3
    prior = torch.randn(6, 4, 4, generator=gen) * 3
    kl = categorical_kl(post, prior)
    free = float(kl.median())
    dyn, rep = kl_balance(post, prior, free)
    assert torch.allclose(dyn, kl.clamp(min=free))
    assert torch.allclose(rep, kl.clamp(min=free))
    assert (dyn >= free).all() and (dyn > free).any() and (dyn == free).any()


def test_kl_balance_gradient_sides() -> None:
    gen = torch.Generator().manual_seed(1)
    post = (torch.randn(3, 4, 4, generator=gen) * 3).requires_grad_()
    prior = (torch.randn(3, 4, 4, generator=gen) * 3).requires_grad_()
    dyn, rep = kl_balance(post, prior, free_nats=0.0)
    assert (dyn > 0).all()
    dyn.sum().backward()
    assert post.grad is None or post.grad.abs().sum() == 0
    assert prior.grad is not None and prior.grad.abs().sum() > 0
    post.grad, prior.grad = None, None
    dyn, rep = kl_balance(post, prior, free_nats=0.0)
    rep.sum().backward()
    assert prior.grad is None or prior.grad.abs().sum() == 0
    assert post.grad is not None and post.grad.abs().sum() > 0


def test_kl_balance_no_gradient_below_free_nats() -> None:
    post = (torch.randn(3, 4, 4) * 0.01).requires_grad_()
    prior = (torch.randn(3, 4, 4) * 0.01).requires_grad_()
    dyn, rep = kl_balance(post, prior, free_nats=1.0)
    assert torch.equal(dyn, torch.ones(3)) and torch.equal(rep, torch.ones(3))
    (dyn + rep).sum().backward()
    for t in (post, prior):
        assert t.grad is None or t.grad.abs().sum() == 0


# ---------------------------------------------------------------------------------------------------
# categoricals


@pytest.mark.parametrize("classes", [4, 255])
def test_unimix_logits_probabilities(classes: int) -> None:
    logits = torch.randn(5, classes) * 30
    logits[:, 0] = 1000.0  # extreme: softmax is exactly one-hot in float32
    probs = unimix_logits(logits, 0.01).exp()
    assert torch.allclose(probs.sum(-1), torch.ones(5), atol=1e-5)
    assert (probs >= 0.01 / classes * (1 - 1e-5)).all()
    assert close(probs[:, 1:].min(), 0.01 / classes, rtol=1e-4)
    assert close(probs[:, 0], 0.99 + 0.01 / classes, rtol=1e-5)
    # unimix 0 is the plain log-softmax
    assert torch.allclose(unimix_logits(logits, 0.0), torch.log_softmax(logits, -1))


def test_sample_onehot_forward_is_onehot() -> None:
    logits = torch.randn(64, 8, 5)
    sample = sample_onehot(logits, torch.Generator().manual_seed(0))
    assert sample.shape == (64, 8, 5)
    hard = sample.round()
    assert torch.equal(hard.sum(-1), torch.ones(64, 8))
    assert torch.equal(((hard == 0) | (hard == 1)), torch.ones_like(hard, dtype=torch.bool))
    assert (sample - hard).abs().max() < 1e-6


def test_sample_onehot_forward_is_exact_onehot() -> None:
    sample = sample_onehot(torch.randn(64, 8, 5), torch.Generator().manual_seed(0))
    assert torch.equal(sample, sample.round())


def test_sample_onehot_frequencies_match_probs() -> None:
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    n = 40_000
    logits = torch.log(probs).expand(n, 4)
    counts = sample_onehot(logits, torch.Generator().manual_seed(0)).sum(0)
    expected = probs * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.3, (counts, chi2)  # 3 dof, p ~ 1e-3
    # a zero-probability class is never drawn
    logits = torch.log(torch.tensor([0.0, 0.5, 0.5])).expand(5000, 3)
    assert sample_onehot(logits, torch.Generator().manual_seed(1))[:, 0].sum() == 0


def test_sample_onehot_straight_through_gradient() -> None:
    logits = torch.randn(3, 4, requires_grad=True)
    weights = torch.randn(3, 4)
    (sample_onehot(logits) * weights).sum().backward()
    # the gradient is that of (probs * weights).sum()
    ref = logits.detach().clone().requires_grad_()
    (torch.softmax(ref, -1) * weights).sum().backward()
    assert torch.allclose(logits.grad, ref.grad, atol=1e-6)
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("classes", [3, 16, 17, 255])
def test_softmax_helpers_match_torch(classes: int) -> None:
    x = (torch.randn(4, 6, classes) * 20).requires_grad_()
    ref = x.detach().clone().requires_grad_()
    assert torch.allclose(softmax(x), torch.softmax(ref, -1), atol=1e-6)
    assert torch.allclose(log_softmax(x), torch.log_softmax(ref, -1), atol=1e-5)
    w = torch.randn(4, 6, classes)
    (softmax(x) * w + log_softmax(x) * w).sum().backward()
    (torch.softmax(ref, -1) * w + torch.log_softmax(ref, -1) * w).sum().backward()
    assert torch.allclose(x.grad, ref.grad, atol=1e-5)
    big = torch.tensor([[1000.0, 0.0, -1000.0]])
    assert torch.allclose(softmax(big), torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.isfinite(log_softmax(big)).all()


# ---------------------------------------------------------------------------------------------------
# return normalisation and masked mean


def test_percentile_range_hand_value() -> None:
    x = torch.linspace(0, 100, 101).reshape(1, 101)  # quantiles fall on integers
    assert close(percentile_range(x, 0.05, 0.95), 90.0, atol=1e-4)
    assert close(percentile_range(x, 0.0, 1.0), 100.0)
    x = torch.tensor([0.0, 10.0])  # linear interpolation: q05 = 0.5, q95 = 9.5
    assert close(percentile_range(x, 0.05, 0.95), 9.0, atol=1e-5)


def test_return_norm_rate_one_is_the_percentile_range() -> None:
    norm = ReturnNorm(rate=1.0)
    assert close(norm.update(torch.linspace(0, 100, 101)), 90.0, atol=1e-4)
    assert close(norm.update(torch.linspace(0, 10, 101)), 9.0, atol=1e-4)  # forgets the past


def test_return_norm_ema_from_zero_and_limit() -> None:
    norm = ReturnNorm(rate=0.01, limit=1.0)
    assert close(norm.scale(), 1.0)  # starts at the limit
    norm.update(torch.linspace(0, 1000, 101))  # range 900
    assert close(norm.range, 9.0, atol=1e-4)  # 0.01 * 900, no debiasing
    assert close(norm.scale(), 9.0, atol=1e-4)
    norm.update(torch.linspace(0, 1000, 101))
    assert close(norm.range, 0.99 * 9.0 + 9.0, atol=1e-3)
    small = ReturnNorm(rate=0.01, limit=1.0)
    assert close(small.update(torch.linspace(0, 10, 101)), 1.0)  # range 0.09 < limit
    assert close(small.range, 0.09, atol=1e-6)


def test_masked_mean() -> None:
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, 4.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert close(masked_mean(x, mask), 2.5)
    assert close(masked_mean(x, None), x.mean())
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0
    x = x.clone().requires_grad_()
    masked_mean(x, mask).backward()
    assert torch.equal(x.grad, mask.float() / 4)
