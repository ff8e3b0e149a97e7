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

BETAS = (0.9, 0.999)
"""Momentum and second-moment rates of both optimisers (DreamerV3 and its 2023 paper alike)."""


def _grads(params: list[Tensor]) -> list[Tensor]:
    return [p.grad for p in params if p.grad is not None]


def adaptive_clip_(params: Iterable[Tensor], ratio: float, eps: float = 1e-3) -> None:
    """Scale each gradient in place so that its norm is at most ``ratio * max(|param|, eps)``.

    One multi-tensor kernel per step of the computation, not one per parameter (kernel launches bound a
    small model's update on a GPU).
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    grads = _grads(params)
    limit = ratio * torch.stack(torch._foreach_norm([p.detach() for p in params])).clamp(min=eps)
    norm = torch.stack(torch._foreach_norm(grads))
    scale = torch.clamp(limit / (norm + 1e-12), max=1.0)
    scales: list[Tensor] = list(scale.to(grads[0].dtype).unbind())
    torch._foreach_mul_(grads, scales)


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
            # Parameters that missed updates (no gradient then) are at other step counts: one batch per count.
            by_step: dict[float, list[Tensor]] = {}
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                by_step.setdefault(float(state["step"]), []).append(p)
            for step, ps in by_step.items():
                warm = min(1.0, step / group["warmup"]) if group["warmup"] > 0 else 1.0
                grads = _grads(ps)
                sqs = [self.state[p]["exp_avg_sq"] for p in ps]
                avgs = [self.state[p]["exp_avg"] for p in ps]
                torch._foreach_mul_(sqs, beta2)
                torch._foreach_addcmul_(sqs, grads, grads, value=1 - beta2)
                denom = torch._foreach_div(sqs, 1 - beta2**step)
                torch._foreach_sqrt_(denom)
                torch._foreach_add_(denom, group["eps"])
                torch._foreach_mul_(avgs, beta1)
                torch._foreach_addcdiv_(avgs, grads, denom, value=1 - beta1)
                torch._foreach_add_(ps, avgs, alpha=-group["lr"] * warm / (1 - beta1**step))


def make_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The configured optimiser over parameter groups ``[{"params": ..., "lr": ...}, ...]``."""
    if cfg.name == "laprop":
        return LaProp(groups, lr=cfg.lr, betas=BETAS, eps=cfg.eps, agc=cfg.agc, warmup=cfg.warmup)
    return torch.optim.Adam(groups, lr=cfg.lr, betas=BETAS, eps=cfg.eps)
