"""The optimiser of the newest DreamerV3 code: adaptive gradient clipping, then LaProp, with warm-up.

LaProp (Ziyin et al. 2020) normalises the gradient by its RMS *before* the momentum average, unlike
Adam which normalises the averaged gradient. Adaptive gradient clipping (Brock et al. 2021) rescales
each parameter's gradient so that ``|g| <= agc * max(|w|, 1e-3)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from reverie.config import OptimConfig


def adaptive_clip_(params: Iterable[Tensor], ratio: float, eps: float = 1e-3) -> None:
    """Scale each gradient in place so that its norm is at most ``ratio * max(|param|, eps)``."""
    for p in params:
        if p.grad is None:
            continue
        limit = ratio * torch.clamp(p.detach().norm(), min=eps)
        norm = p.grad.detach().norm()
        p.grad.mul_(torch.clamp(limit / (norm + 1e-12), max=1.0))


class LaProp(torch.optim.Optimizer):
    """LaProp with optional adaptive gradient clipping and linear warm-up.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> opt = LaProp([w], lr=0.1, warmup=0)
        >>> w.sum().backward(); opt.step()
        >>> bool((w < 1).all())
        True
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 4e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-20,
        agc: float = 0.3,
        warmup: int = 1000,
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, agc=agc, warmup=warmup)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["agc"] > 0:
                adaptive_clip_(params, group["agc"])
            beta1, beta2 = group["betas"]
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = float(state["step"])
                warm = min(1.0, step / group["warmup"]) if group["warmup"] > 0 else 1.0
                sq, avg = state["exp_avg_sq"], state["exp_avg"]
                sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (sq / (1 - beta2**step)).sqrt_().add_(group["eps"])
                avg.mul_(beta1).addcdiv_(p.grad, denom, value=1 - beta1)
                p.add_(avg, alpha=-group["lr"] * warm / (1 - beta1**step))


def make_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The configured optimiser over parameter groups ``[{"params": ..., "lr": ...}, ...]``."""
    if cfg.name == "laprop":
        return LaProp(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, agc=cfg.agc, warmup=cfg.warmup)
    return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
