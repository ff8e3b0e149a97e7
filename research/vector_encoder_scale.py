"""Does the vector encoder see how far out the cart is? The default CartPole job with the first encoder layer as is
(Linear -> RMSNorm -> SiLU) or without its norm (Linear -> SiLU; ``--variant nonorm``).

The RMSNorm right after the first Linear divides out the size of ``W symlog(x)``: with small biases the embedding
of a 4-number observation keeps its direction only, so a cart at 1.8 and at 2.4 (the track's end), both other
numbers small, embed alike (cosine 0.994 in a learning-benchmark run). This runs ``reverie train`` (the default
job: classic cartpole) with the variant, then reports how well the run's model reconstructs the cart position
by distance from the centre and what its continuation head says at the real endings.

    python research/vector_encoder_scale.py --variant nonorm --seed 0 --logdir /tmp/ves/nonorm-0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import reverie.codecs as codecs
from reverie.cli import main as cli_main
from reverie.nets import Linear, NormAct

sys.path.append(str(Path(__file__).resolve().parent))
from continuation_probe import replay_features  # noqa: E402


class FirstLayerUnnormed(nn.Sequential):
    """symlog -> Linear -> SiLU, then the remaining NormAct layers."""

    def __init__(self, size: int, units: int, layers: int):
        mods: list[nn.Module] = [Linear(size, units), nn.SiLU()]
        mods += [NormAct(units, units) for _ in range(layers - 1)]
        super().__init__(*mods)
        self.out_dim = units

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(codecs.symlog(x.float()))


def use_unnormed_encoder() -> None:
    """Models built (or loaded) from here on have the first vector-encoder layer without its norm."""
    codecs.MLPCodec.encoder = classmethod(  # type: ignore[method-assign]
        lambda cls, size, cfg: FirstLayerUnnormed(size, cfg.units, cfg.layers)
    )


def probe(run: str) -> dict:
    from reverie.agent import Dreamer

    wm = Dreamer.load(run).learner.wm
    feat, ends, x = replay_features(wm, run)
    with torch.no_grad():
        dec = wm.picture(feat, None, ["vector"])["vector"].float().numpy()
        cont = wm.cont(feat).numpy()
    out: dict = {"steps": len(x)}
    ax = np.abs(x[:, 0])
    for lo, hi in [(0, 1), (1, 1.5), (1.5, 2.0), (2.0, 2.4), (2.4, 9)]:
        m = (ax >= lo) & (ax < hi)
        if m.any():
            out[f"x_err_{lo}-{hi}"] = float(np.median(np.abs(dec[m, 0] - x[m, 0])))
    cart, pole = ends & (ax > 2.4), ends & (np.abs(x[:, 2]) > 0.2094)
    out |= {"cart_endings": int(cart.sum()), "pole_endings": int(pole.sum())}
    out["cont_at_cart_endings"] = float(np.median(cont[cart])) if cart.any() else None
    out["cont_at_pole_endings"] = float(np.median(cont[pole])) if pole.any() else None
    out["false_ending_rate"] = float((cont[~ends] < 0.5).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=["base", "nonorm"], default="base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--set", nargs="*", default=[])
    args = parser.parse_args()
    if args.variant == "nonorm":
        use_unnormed_encoder()
    sets = [f"train.seed={args.seed}", f"run.logdir={args.logdir}", "run.progress=false", *args.set]
    cli_main(["train", "--set", *sets])
    print(json.dumps({"variant": args.variant, "seed": args.seed, **probe(args.logdir)}))


if __name__ == "__main__":
    main()
