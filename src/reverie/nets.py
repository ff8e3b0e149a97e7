"""Building blocks: RMSNorm MLPs, block-diagonal linears, the 64x64 conv encoder and decoder.

All hidden layers are Linear -> RMSNorm -> SiLU with truncated-normal fan-in initialisation
(DreamerV3). Shapes: B batch (any leading dims), D features, G blocks, C channels.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def init_fan_in(weight: Tensor, fan_in: int, scale: float = 1.0) -> None:
    """Truncated normal (2 std) with std ``scale / sqrt(fan_in)``, corrected for the truncation.

    ``scale`` multiplies the weights, as DreamerV3's ``outscale`` does (0.01 for the actor's output).
    """
    std = scale / math.sqrt(fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


class Linear(nn.Linear):
    """``nn.Linear`` with fan-in init; ``scale=0`` makes a zero output layer (reward and value heads)."""

    def __init__(self, inp: int, out: int, bias: bool = True, scale: float = 1.0):
        super().__init__(inp, out, bias)
        if scale == 0:
            nn.init.zeros_(self.weight)
        else:
            init_fan_in(self.weight, inp, scale)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` computed in float32 and returned in the input's dtype.

    Under bf16 autocast the input is bf16 and the weight float32; ``nn.RMSNorm`` then falls back from the fused
    kernel to several elementwise ones (and warns). Normalising in float32, as DreamerV3 does, keeps the fused
    kernel and the precision.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), self.normalized_shape, self.weight, self.eps).to(x.dtype)


class NormAct(nn.Sequential):
    """Linear (with bias, as DreamerV3's) -> RMSNorm -> SiLU."""

    def __init__(self, inp: int, out: int):
        super().__init__(Linear(inp, out), RMSNorm(out, eps=1e-4), nn.SiLU())


class MLP(nn.Sequential):
    """``layers`` NormAct layers of width ``units``, then an optional output Linear.

    Example:
        >>> MLP(8, 16, layers=2, out=3)(torch.zeros(5, 8)).shape
        torch.Size([5, 3])
    """

    def __init__(self, inp: int, units: int, layers: int, out: int | None = None, out_scale: float = 1.0):
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(NormAct(inp if i == 0 else units, units))
        last = units if layers else inp
        if out is not None:
            mods.append(Linear(last, out, scale=out_scale))
        super().__init__(*mods)
        self.out_dim = out if out is not None else last


class BlockLinear(nn.Module):
    """Block-diagonal linear: G independent (inp/G -> out/G) maps on the G slices of the last axis."""

    def __init__(self, inp: int, out: int, blocks: int, fan_in: int | None = None, bias: bool = True):
        super().__init__()
        assert inp % blocks == 0 and out % blocks == 0, (inp, out, blocks)
        self.blocks = blocks
        self.weight = nn.Parameter(torch.empty(blocks, inp // blocks, out // blocks))
        self.bias = nn.Parameter(torch.zeros(out)) if bias else None
        init_fan_in(self.weight, fan_in or inp // blocks)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.blocks, x.shape[-1] // self.blocks)  # (B, G, D/G)
        y = torch.bmm(x.transpose(0, 1), self.weight.to(x.dtype)).transpose(0, 1)  # (B, G, O/G)
        y = y.reshape(*lead, -1)
        return y if self.bias is None else y + self.bias.to(y.dtype)


class ChannelNorm(nn.Module):
    """RMSNorm over the channel axis of (B, C, H, W) maps."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = RMSNorm(channels, eps=1e-4)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _conv(inp: int, out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    padding = kernel // 2 if stride == 1 else (kernel - stride) // 2
    conv = nn.Conv2d(inp, out, kernel, stride=stride, padding=padding)
    init_fan_in(conv.weight, inp * kernel * kernel)
    assert conv.bias is not None
    nn.init.zeros_(conv.bias)
    return conv


@torch.library.custom_op("reverie::max_pool2", mutates_args=())
def _max_pool2(x: Tensor) -> tuple[Tensor, Tensor]:
    """2x2 max pooling (stride 2), and the argmax indices its backward needs."""
    out, index = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
    return out, index


@_max_pool2.register_fake
def _(x: Tensor) -> tuple[Tensor, Tensor]:
    corner = x[:, :, ::2, ::2]
    return torch.empty_like(corner), torch.empty_like(corner, dtype=torch.int64)


@torch.library.custom_op("reverie::max_pool2_backward", mutates_args=())
def _max_pool2_backward(grad: Tensor, x: Tensor, index: Tensor) -> Tensor:
    return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, index)


@_max_pool2_backward.register_fake
def _(grad: Tensor, x: Tensor, index: Tensor) -> Tensor:
    return torch.empty_like(x)


def _max_pool2_setup(ctx: Any, inputs: tuple[Tensor], output: tuple[Tensor, Tensor]) -> None:
    ctx.save_for_backward(inputs[0], output[1])


def _max_pool2_grad(ctx: Any, grad: Tensor, _index_grad: Tensor | None) -> Tensor:
    x, index = ctx.saved_tensors
    return _max_pool2_backward(grad.contiguous(memory_format=_layout(x)), x, index)  # type: ignore[no-any-return]


def _layout(x: Tensor) -> torch.memory_format:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


_max_pool2.register_autograd(_max_pool2_grad, setup_context=_max_pool2_setup)


class MaxPool2(nn.Module):
    """2x2 max pooling with stride 2, as one opaque op: the compiler calls the library's kernels instead of
    generating its own (which were several times slower on a CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        return _max_pool2(x)[0]  # type: ignore[no-any-return]


_UP_TAPS = torch.tensor(
    [[[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1]]],
    dtype=torch.float32,
)
"""(2, 3, 5): which taps of a 5-tap kernel on a 2x nearest-upsampled axis land on each of the 3 low-resolution
neighbours (offsets -1, 0, +1), for output pixels of even (row 0) and odd (row 1) index."""


class UpConv(nn.Conv2d):
    """2x nearest upsampling then a 5x5 conv (padding 2), computed without the upsampled map.

    Every output pixel of the conv on the upsampled map reads only a 3x3 neighbourhood of the low-resolution map,
    with taps summed by the pixel's parity. So the same function is a 3x3 conv on the low-resolution map with four
    outputs per channel (one per parity pair), then a pixel shuffle: ~2.8x fewer multiply-adds, no upsampled copy,
    and the same 5x5 weights (state dict and parameter count of ``nn.Conv2d(inp, out, 5, padding=2)``).

    Example:
        >>> conv = UpConv(4, 2)
        >>> x = torch.randn(1, 4, 8, 8)
        >>> ref = conv._conv_forward(F.interpolate(x, scale_factor=2.0), conv.weight, conv.bias)
        >>> bool(torch.allclose(conv(x), ref, atol=1e-5))
        True
    """

    def __init__(self, inp: int, out: int):
        super().__init__(inp, out, 5, padding=2)
        init_fan_in(self.weight, inp * 25)
        assert self.bias is not None
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        out, inp = self.weight.shape[:2]
        taps = _UP_TAPS.to(self.weight.device, self.weight.dtype)
        weight = torch.einsum("ayk,bxl,oikl->aboiyx", taps, taps, self.weight).reshape(4 * out, inp, 3, 3)
        assert self.bias is not None
        y = F.conv2d(x, weight.to(x.dtype), self.bias.repeat(4).to(x.dtype), padding=1)  # (B, 4 * O, h, w)
        # Pixel shuffle with the phase outermost in the channels: in channels-last memory each output pixel's
        # channels are one contiguous run.
        n, _, h, w = y.shape
        y = y.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, out).transpose(2, 3).reshape(n, 2 * h, 2 * w, out)
        return y.permute(0, 3, 1, 2)  # (B, O, 2h, 2w), channels-last in memory


Layout = Literal["dreamerv3", "reverie0.1"]
"""Conv layouts: the official DreamerV3 one, or the one of Reverie 0.1's checkpoints (see :class:`ConvEncoder`)."""


class ConvEncoder(nn.Module):
    """Images (B, H, W, C) uint8 -> features (B, D): 4 stages that each halve the side.

    ``stride=False`` (official DreamerV3): conv(k5) -> maxpool 2 -> norm -> SiLU. ``stride=True``: conv(k4,
    stride 2) -> norm -> SiLU (DreamerV2's layout), about 3x cheaper on a CPU because no layer runs at full
    resolution. Channels are ``depth * (2, 3, 4, 4)``; a 64x64 input leaves a 4x4 map. ``layout="reverie0.1"``
    pools after the activation, as Reverie 0.1 did (its checkpoints load with it).
    """

    def __init__(
        self,
        channels: int,
        depth: int,
        size: int = 64,
        mults: tuple[int, ...] = (2, 3, 4, 4),
        stride: bool = False,
        layout: Layout = "dreamerv3",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        inp = channels
        for mult in mults:
            out = depth * mult
            if stride:
                layers += [_conv(inp, out, 4, stride=2), ChannelNorm(out), nn.SiLU()]
            elif layout == "dreamerv3":
                layers += [_conv(inp, out, 5), MaxPool2(), ChannelNorm(out), nn.SiLU()]
            else:
                layers += [_conv(inp, out, 5), ChannelNorm(out), nn.SiLU(), MaxPool2()]
            inp = out
        self.net = nn.Sequential(*layers)
        side = size // 2 ** len(mults)
        self.out_dim = inp * side * side

    def forward(self, image: Tensor) -> Tensor:
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).permute(0, 3, 1, 2)  # (B, C, H, W)
        x = x.float() / 255.0 - 0.5
        return self.net(x).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """Features (B, D) -> images (B, H, W, C) in [0, 1]: the encoder mirrored, with 2x nearest upsampling
    then conv(k5) (``stride=False``, computed as one :class:`UpConv`) or transposed conv(k4, stride 2)
    (``stride=True``) per stage.

    The first map (side 4, ``4 * depth`` channels) comes, as in the official code, from a block-diagonal linear of
    the recurrent state ``feat[..., :deter]`` (8 blocks, each giving ``1/8`` of the channels) plus a 2-layer MLP of
    the stochastic state, then norm and SiLU: ~8x fewer weights than a dense projection of the features, which
    ``layout="reverie0.1"`` keeps for Reverie 0.1's checkpoints.
    """

    def __init__(
        self,
        inp: int,
        channels: int,
        depth: int,
        size: int = 64,
        mults: tuple[int, ...] = (2, 3, 4, 4),
        stride: bool = False,
        deter: int = 0,
        units: int = 0,
        layout: Layout = "dreamerv3",
        blocks: int = 8,
    ):
        super().__init__()
        self.side = size // 2 ** len(mults)
        widths = [depth * m for m in reversed(mults)]  # e.g. 4d, 4d, 3d, 2d
        self.start, self.deter, self.blocks = widths[0], deter, blocks
        space = widths[0] * self.side * self.side
        self.layout = layout
        if layout == "dreamerv3":
            assert 0 < deter < inp and units > 0 and widths[0] % blocks == 0, (deter, inp, units, widths[0])
            self.space_deter = BlockLinear(deter, space, blocks)
            self.space_stoch = nn.Sequential(NormAct(inp - deter, 2 * units), Linear(2 * units, space))
            self.space_norm = ChannelNorm(widths[0])
        else:
            self.proj = Linear(inp, space)
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            out = widths[i + 1] if i + 1 < len(widths) else channels
            if stride:
                up = nn.ConvTranspose2d(width, out, 4, stride=2, padding=1)
                init_fan_in(up.weight, width * 4)  # each output pixel sees 2x2 taps per input channel
                assert up.bias is not None
                nn.init.zeros_(up.bias)
                layers.append(up)
            else:
                layers += [nn.Identity(), UpConv(width, out)]  # upsample + conv in one (state-dict keys of both)
            if i + 1 < len(widths):
                layers += [ChannelNorm(out), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def _space(self, feat: Tensor) -> Tensor:
        """The first map (B, C, side, side) from features (B, F)."""
        n, s, c = len(feat), self.side, self.start
        if self.layout != "dreamerv3":
            return self.proj(feat).reshape(n, c, s, s)
        x0 = self.space_deter(feat[:, : self.deter])  # (B, G * side * side * C/G)
        x0 = x0.reshape(n, self.blocks, s, s, c // self.blocks).permute(0, 1, 4, 2, 3).reshape(n, c, s, s)
        x1 = self.space_stoch(feat[:, self.deter :]).reshape(n, s, s, c).permute(0, 3, 1, 2)  # channels last
        return F.silu(self.space_norm(x0 + x1))

    def forward(self, feat: Tensor) -> Tensor:
        lead = feat.shape[:-1]
        x = self._space(feat.reshape(-1, feat.shape[-1]))  # (B, C, 4, 4)
        x = torch.sigmoid(self.net(x).float())  # (B, C, H, W)
        return x.permute(0, 2, 3, 1).reshape(*lead, *x.shape[-2:], x.shape[1])


def soft_update(target: nn.Module, source: nn.Module, rate: float) -> None:
    """``target = (1 - rate) * target + rate * source`` parameter-wise (EMA)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, rate)


def onehot(index: Tensor, n: int) -> Tensor:
    """Float one-hot of integer ``index``."""
    return F.one_hot(index.long(), n).float()
