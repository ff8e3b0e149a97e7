"""Vector codecs: how the world model reads one vector observation and pictures it back.

A codec (``model.vector_codec``) gives the world model three things for the vector key of an observation:

* an **encoder** ``(..., N) -> (..., out_dim)`` from env units (``encoder(size, cfg)``);
* a **decoder** (``decoder(feat_dim, size, cfg)``) with ``loss(feat, target, prev) -> (B, T)`` and
  ``picture(feat, prev) -> (..., N)``: the observation the model pictures behind the features, in env units, which
  is what a policy that reads observations sees in imagination and what the dream shows (``prev``: the previous
  observation, read by decoders with ``reads_prev``; all zeros or None where there is none);
* optionally **what the reward head reads** beside the features: ``change(now, prev) -> (..., change_dim)``, and a
  ``gate(change) -> (...,) bool`` that forces a zero reward where it is False.

The core's codec is :class:`MLPCodec` (DreamerV3's symlog MLPs with a squared error). Games register their own
codecs by name with :mod:`reverie.plugins`.

Example:
    >>> from reverie.config import ModelConfig
    >>> cfg = ModelConfig(units=16, layers=1)
    >>> enc, dec = MLPCodec.encoder(5, cfg), MLPCodec.decoder(32, 5, cfg)
    >>> enc(torch.zeros(2, 5)).shape, dec.picture(torch.zeros(2, 32)).shape
    (torch.Size([2, 16]), torch.Size([2, 5]))
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn

from reverie.config import ModelConfig
from reverie.functional import symexp, symlog
from reverie.nets import MLP

__all__ = ["MLPCodec", "VectorCodec", "VectorDecoder", "VectorEncoder"]


class VectorEncoder(Protocol):
    """What a codec's encoder provides: a module ``(..., N) -> (..., out_dim)`` from env units."""

    out_dim: int

    def __call__(self, x: Tensor) -> Tensor: ...


class VectorDecoder(nn.Module):
    """What a codec's decoder provides (subclass it)."""

    reads_prev: bool = False
    """Whether :meth:`loss` and :meth:`picture` read the previous observation."""

    def loss(self, feat: Tensor, target: Tensor, prev: Tensor | None = None) -> Tensor:
        """(B, T) loss of the vector observations ``target`` (B, T, N) behind features ``feat`` (B, T, F)."""
        raise NotImplementedError

    def picture(self, feat: Tensor, prev: Tensor | None = None) -> Tensor:
        """(..., N) the observation the model pictures behind ``feat`` (..., F), in env units."""
        raise NotImplementedError


class VectorCodec:
    """A way to encode and decode one vector observation. Subclasses define :meth:`encoder` and :meth:`decoder`,
    and optionally what the reward head reads (``change_dim`` > 0 with :meth:`change` and :meth:`gate`)."""

    change_dim: ClassVar[int] = 0
    """Width of :meth:`change` (0: the reward head reads the features alone)."""

    @classmethod
    def encoder(cls, size: int, cfg: ModelConfig) -> VectorEncoder:
        """A module ``(..., size) -> (..., out_dim)`` with an ``out_dim`` attribute."""
        raise NotImplementedError

    @classmethod
    def decoder(cls, feat_dim: int, size: int, cfg: ModelConfig) -> VectorDecoder:
        raise NotImplementedError

    @staticmethod
    def change(now: Tensor, prev: Tensor | None) -> Tensor:
        """(..., change_dim) what the reward head reads about the step from ``prev`` to ``now`` (env units)."""
        raise NotImplementedError

    @staticmethod
    def gate(change: Tensor) -> Tensor | None:
        """(...,) bool, False where the reward must be zero; None: no gate."""
        return None


class SymlogEncoder(MLP):
    """``MLP(symlog(x))``: DreamerV3's vector encoder."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(symlog(x.float()))


class SymlogDecoder(VectorDecoder):
    """An MLP predicting the vector in symlog space, trained by squared error (summed over the vector)."""

    def __init__(self, feat_dim: int, size: int, cfg: ModelConfig):
        super().__init__()
        self.net = MLP(feat_dim, cfg.units, cfg.layers, out=size)

    def loss(self, feat: Tensor, target: Tensor, prev: Tensor | None = None) -> Tensor:
        return ((self.net(feat).float() - symlog(target.float())) ** 2).sum(-1)

    def picture(self, feat: Tensor, prev: Tensor | None = None) -> Tensor:
        return symexp(self.net(feat).float())


class MLPCodec(VectorCodec):
    """The core codec for any vector: symlog + MLP in, MLP out with a squared error in symlog space (DreamerV3)."""

    @classmethod
    def encoder(cls, size: int, cfg: ModelConfig) -> VectorEncoder:
        return SymlogEncoder(size, cfg.units, cfg.layers)

    @classmethod
    def decoder(cls, feat_dim: int, size: int, cfg: ModelConfig) -> VectorDecoder:
        return SymlogDecoder(feat_dim, size, cfg)


def previous_frames(obs: Tensor, is_first: Tensor | None) -> Tensor:
    """(B, T, N) observations -> the one before each step inside its episode, all zeros for "none" (at the
    first step of the batch and where ``is_first`` (B, T) starts an episode)."""
    prev = torch.cat([torch.zeros_like(obs[:, :1]), obs[:, :-1]], 1).float()
    if is_first is not None:
        prev = prev * (1.0 - is_first.float()).unsqueeze(-1)
    return prev
