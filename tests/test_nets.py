"""Tests of the building blocks in ``reverie.nets`` and the LaProp optimiser in ``reverie.optim``."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from reverie.nets import MLP, BlockLinear, ConvDecoder, ConvEncoder, Linear, init_fan_in, onehot, soft_update
from reverie.optim import LaProp, adaptive_clip_

# ---------------------------------------------------------------------------------------------------
# layers


def test_mlp_shapes_and_out_dim() -> None:
    net = MLP(8, 16, layers=2, out=3)
    assert net.out_dim == 3
    assert net(torch.zeros(5, 8)).shape == (5, 3)
    assert net(torch.randn(2, 7, 8)).shape == (2, 7, 3)
    hidden = MLP(8, 16, layers=2)
    assert hidden.out_dim == 16 and hidden(torch.randn(4, 8)).shape == (4, 16)
    linear = MLP(8, 16, layers=0, out=5)
    assert linear.out_dim == 5 and linear(torch.randn(4, 8)).shape == (4, 5)
    assert MLP(8, 16, layers=0).out_dim == 8


def test_linear_scale_zero_outputs_zero() -> None:
    layer = Linear(12, 7, scale=0.0)
    out = layer(torch.randn(9, 12) * 100)
    assert torch.equal(out, torch.zeros(9, 7))
    mlp = MLP(12, 16, layers=2, out=31, out_scale=0.0)
    assert torch.equal(mlp(torch.randn(3, 12)), torch.zeros(3, 31))


def test_fan_in_init_variance_and_truncation() -> None:
    torch.manual_seed(0)
    w = torch.empty(400, 1000)
    init_fan_in(w, 1000, scale=2.0)  # scale multiplies the std (DreamerV3's outscale)
    assert abs(w.std().item() - 2.0 / math.sqrt(1000)) < 0.02 * 2.0 / math.sqrt(1000)
    std = 2.0 / math.sqrt(1000) / 0.87962566103423978
    assert w.abs().max() <= 2 * std + 1e-7
    layer = Linear(1000, 300)
    assert abs(layer.weight.std().item() - math.sqrt(1 / 1000)) < 0.03 * math.sqrt(1 / 1000)
    assert torch.equal(layer.bias, torch.zeros(300))


def test_block_linear_equals_dense_block_diagonal() -> None:
    torch.manual_seed(0)
    blocks, inp, out = 4, 12, 8
    layer = BlockLinear(inp, out, blocks)
    with torch.no_grad():
        layer.bias.normal_()
    i, o = inp // blocks, out // blocks
    dense = torch.zeros(inp, out)
    for g in range(blocks):
        dense[g * i : (g + 1) * i, g * o : (g + 1) * o] = layer.weight[g].detach()
    x = torch.randn(3, 5, inp)
    assert layer(x).shape == (3, 5, out)
    assert torch.allclose(layer(x), x @ dense + layer.bias.detach(), atol=1e-6)
    # no leakage across blocks: changing block 0's input only changes block 0's output
    x2 = x.clone()
    x2[..., :i] += 1.0
    diff = (layer(x2) - layer(x)).abs().amax((0, 1))
    assert (diff[:o] > 0).all() and (diff[o:] == 0).all()


def test_conv_encoder_64x64_to_4x4_map() -> None:
    torch.manual_seed(0)
    depth = 2
    enc = ConvEncoder(3, depth, size=64)
    assert enc.out_dim == depth * 4 * 4 * 4
    image = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)  # (B, T, H, W, C)
    feat = enc(image)
    assert feat.shape == (2, 3, enc.out_dim)
    maps = enc.net(torch.zeros(1, 3, 64, 64))
    assert maps.shape == (1, depth * 4, 4, 4)
    # features depend on the pixels
    assert not torch.allclose(enc(image[:, :1]), enc(255 - image[:, :1]))


def test_conv_decoder_shape_and_range() -> None:
    torch.manual_seed(0)
    for layout in ("dreamerv3", "reverie0.1"):
        dec = ConvDecoder(24, 3, depth=2, size=64, deter=16, units=8, layout=layout)  # type: ignore[arg-type]
        out = dec(torch.randn(2, 3, 24) * 10)
        assert out.shape == (2, 3, 64, 64, 3)
        assert (out >= 0).all() and (out <= 1).all()
        assert out.std() > 0
        assert dec(torch.randn(4, 24)).shape == (4, 64, 64, 3)


def test_conv_decoder_projects_each_block_of_the_recurrent_state_to_its_own_channels() -> None:
    """The official layout: block g of ``deter`` (8 blocks) feeds channels g*C/8 .. (g+1)*C/8 - 1 of the first map
    (through a block-diagonal linear), and the stochastic state feeds all channels through an MLP."""
    torch.manual_seed(0)
    dec = ConvDecoder(24, 3, depth=4, size=64, deter=16, units=8)  # first map: 16 channels, 2 per block
    feat = torch.randn(5, 24)
    with torch.no_grad():
        base = dec.space_deter(feat[:, :16]).reshape(5, 8, 4, 4, 2).permute(0, 1, 4, 2, 3).reshape(5, 16, 4, 4)
        moved = feat.clone()
        moved[:, 2:4] += 1.0  # block 1 of the recurrent state (deter 16 / 8 blocks = 2 each)
        again = dec.space_deter(moved[:, :16]).reshape(5, 8, 4, 4, 2).permute(0, 1, 4, 2, 3).reshape(5, 16, 4, 4)
        changed = (again - base).abs().amax((0, 2, 3)) > 0
        assert changed.tolist() == [c in (2, 3) for c in range(16)]
        stoch = feat.clone()
        stoch[:, 16:] += 1.0
        assert not torch.allclose(dec._space(stoch), dec._space(feat))


def test_soft_update_moves_toward_source_by_rate() -> None:
    torch.manual_seed(0)
    source, target = MLP(4, 8, 1, out=2), MLP(4, 8, 1, out=2)
    before = copy.deepcopy(target)
    soft_update(target, source, 0.25)
    for t, b, s in zip(target.parameters(), before.parameters(), source.parameters(), strict=True):
        assert torch.allclose(t, 0.75 * b + 0.25 * s, atol=1e-7)
    soft_update(target, source, 1.0)
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        assert torch.equal(t, s)


def test_onehot() -> None:
    assert torch.equal(onehot(torch.tensor([2, 0]), 3), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))


# ---------------------------------------------------------------------------------------------------
# LaProp and adaptive gradient clipping


def naive_laprop(grads: list[list[float]], p0: list[float], lr: float, b1: float, b2: float, warmup: int):
    """Reference LaProp on plain floats: RMS-normalise the gradient, then average it with momentum."""
    p, m, v = list(p0), [0.0] * len(p0), [0.0] * len(p0)
    trace = []
    for step, grad in enumerate(grads, 1):
        warm = min(1.0, step / warmup) if warmup else 1.0
        for j, g in enumerate(grad):
            v[j] = b2 * v[j] + (1 - b2) * g * g
            m[j] = b1 * m[j] + (1 - b1) * g / math.sqrt(v[j] / (1 - b2**step))
            p[j] -= lr * warm * m[j] / (1 - b1**step)
        trace.append(list(p))
    return trace


def run_laprop(grads: list[list[float]], p0: list[float], **kwargs) -> list[list[float]]:
    w = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = LaProp([w], **kwargs)
    trace = []
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        trace.append(w.detach().tolist())
    return trace


def test_laprop_hand_computed_steps() -> None:
    # step 1: v_hat = g^2, so the update is lr * sign(g): 1.0 - 0.1 = 0.9, -1.0 + 0.1 = -0.9
    # step 2 (g = 1 after g = 2): v = 0.999 * 0.001 * 4 + 0.001 * 1 = 0.004996, v_hat = v / 0.001999,
    #   m = 0.9 * 0.1 * 1 + 0.1 * 1 / sqrt(v_hat), p = 0.9 - 0.1 * m / 0.19
    trace = run_laprop([[2.0, -3.0], [1.0, -3.0]], [1.0, -1.0], lr=0.1, warmup=0, agc=0.0)
    assert trace[0] == pytest.approx([0.9, -0.9], abs=1e-12)
    v_hat = (0.999 * 0.001 * 4 + 0.001 * 1) / (1 - 0.999**2)
    m = 0.9 * 0.1 + 0.1 / math.sqrt(v_hat)
    assert trace[1][0] == pytest.approx(0.9 - 0.1 * m / 0.19, abs=1e-12)
    assert trace[1][0] == pytest.approx(0.819339, abs=1e-6)  # Adam would give 0.80678
    assert trace[1][1] == pytest.approx(-0.8, abs=1e-12)  # constant gradient: steps of exactly lr


def test_laprop_matches_naive_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    grads = (torch.randn(12, 5, generator=gen, dtype=torch.float64) * 3).tolist()
    p0 = torch.randn(5, generator=gen, dtype=torch.float64).tolist()
    for warmup in (0, 4):
        got = run_laprop(grads, p0, lr=0.01, betas=(0.8, 0.99), warmup=warmup, agc=0.0)
        ref = naive_laprop(grads, p0, lr=0.01, b1=0.8, b2=0.99, warmup=warmup)
        assert torch.allclose(
            torch.tensor(got, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64), atol=1e-12
        )


def test_laprop_warmup_scales_steps() -> None:
    grads = [[1.0, -2.0]] * 12
    warm = torch.tensor(run_laprop(grads, [0.0, 0.0], lr=0.1, warmup=10, agc=0.0))
    cold = torch.tensor(run_laprop(grads, [0.0, 0.0], lr=0.1, warmup=0, agc=0.0))
    zero = torch.zeros(1, 2, dtype=torch.float64)
    dwarm, dcold = torch.cat([zero, warm]).diff(dim=0), torch.cat([zero, cold]).diff(dim=0)
    assert torch.allclose(dwarm[0], torch.tensor([-0.01, 0.01], dtype=torch.float64), atol=1e-12)
    for k in range(12):
        assert torch.allclose(dwarm[k], dcold[k] * min(1.0, (k + 1) / 10), atol=1e-12), k


def test_adaptive_clip_limits_large_grads() -> None:
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    w.grad = torch.tensor([30.0, 0.0])
    adaptive_clip_([w], ratio=0.3)
    assert torch.allclose(w.grad, torch.tensor([1.5, 0.0]))  # norm 0.3 * 5, direction kept
    tiny = torch.nn.Parameter(torch.zeros(4))  # |w| below eps: limit is ratio * 1e-3
    tiny.grad = torch.ones(4)
    adaptive_clip_([tiny], ratio=0.3)
    assert tiny.grad.norm().item() == pytest.approx(0.3e-3, rel=1e-5)
    assert torch.allclose(tiny.grad, torch.full((4,), 0.15e-3))


def test_adaptive_clip_leaves_small_grads_alone() -> None:
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([0.6, -0.8])  # norm 1 < 1.5
    adaptive_clip_([w], ratio=0.3)
    assert torch.equal(w.grad, torch.tensor([0.6, -0.8]))
    nograd = torch.nn.Parameter(torch.ones(2))
    adaptive_clip_([nograd], ratio=0.3)  # parameters without gradients are skipped
    assert nograd.grad is None


def test_laprop_applies_agc_before_the_moments() -> None:
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LaProp([w], lr=0.1, warmup=0, agc=0.3)
    w.grad = torch.tensor([30.0, 0.0])
    opt.step()
    sq = opt.state[w]["exp_avg_sq"]
    assert torch.allclose(sq, 0.001 * torch.tensor([1.5, 0.0]) ** 2)


def test_laprop_minimises_a_quadratic() -> None:
    torch.manual_seed(0)
    target = torch.tensor([1.0, -2.0, 0.5, 3.0])
    scales = torch.tensor([1.0, 10.0, 0.1, 3.0])
    w = torch.nn.Parameter(torch.zeros(4))
    opt = LaProp([w], lr=0.05, warmup=10, agc=0.0)

    def loss() -> torch.Tensor:
        return (scales * (w - target) ** 2).sum()

    start = loss().item()
    for _ in range(400):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 1e-3 * start
    assert torch.allclose(w.detach(), target, atol=0.05)


def test_rms_norm_in_float32_under_bf16_autocast() -> None:
    """The norm returns the input's dtype, computed in float32 (the fused kernel, no dtype-mismatch warning),
    and keeps ``nn.RMSNorm``'s parameter names (checkpoints load either way)."""
    import warnings

    from reverie.nets import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(8, eps=1e-4)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 8) * 3
    plain = torch.nn.RMSNorm(8, eps=1e-4)
    plain.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(x), plain(x))
    with warnings.catch_warnings(), torch.autocast("cpu", dtype=torch.bfloat16):
        warnings.simplefilter("error")
        y = norm(x.bfloat16())
    assert y.dtype == torch.bfloat16
    exact = x.bfloat16().float() * torch.rsqrt(x.bfloat16().float().pow(2).mean(-1, keepdim=True) + 1e-4) * norm.weight
    torch.testing.assert_close(y, exact.bfloat16(), rtol=0, atol=0)


def test_laprop_batches_parameters_at_their_own_step_counts() -> None:
    """Several parameters updated together (multi-tensor kernels), one of them without a gradient every other
    step, with clipping: each moves exactly as it would alone, at its own step count."""
    torch.manual_seed(0)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    alone = [torch.nn.Parameter(p.detach().clone()) for p in params]
    together = LaProp(params, lr=0.05, warmup=3, agc=0.3)
    each = [LaProp([q], lr=0.05, warmup=3, agc=0.3) for q in alone]
    for t in range(6):
        for i, (p, q, shape) in enumerate(zip(params, alone, shapes, strict=True)):
            grad = None if i == 1 and t % 2 == 0 else torch.randn(shape) * 10  # large: clipping acts
            p.grad = None if grad is None else grad.clone()
            q.grad = None if grad is None else grad.clone()
        together.step()
        for opt in each:
            opt.step()
    for p, q in zip(params, alone, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert [int(together.state[p]["step"]) for p in params] == [6, 3, 6]
