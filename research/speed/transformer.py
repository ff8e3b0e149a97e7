"""The transformer world model against the RSSM at CartPole's shapes: seconds per eager fp32 online update, with the
world-model loss and the imagination timed apart, and the parameter counts.

    python research/speed/transformer.py            # classic preset, 2 threads
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

import reverie  # noqa: F401  (OpenMP and cache settings)
from reverie.config import make_config
from reverie.envs.base import Space
from reverie.learner import Learner


def timed(fn, n: int = 5) -> float:
    fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return float(np.median(out))


def main() -> None:
    over = sys.argv[1:]
    rng = np.random.default_rng(0)
    for kind in ("rssm", "transformer"):
        torch.manual_seed(0)
        cfg = make_config(["classic"], ["env.id=CartPole-v1", f"model.kind={kind}", *over])
        learner = Learner(cfg, {"vector": Space(np.float32, (4,))}, Space(np.int64, (), 0, 2, discrete=True))
        B, T = cfg.train.batch_size, cfg.train.batch_length
        batch = {
            "vector": rng.normal(size=(B, T, 4)).astype(np.float32),
            "action": rng.integers(0, 2, (B, T)),
            "reward": np.ones((B, T), np.float32),
            "is_first": np.eye(1, T, dtype=bool).repeat(B, 0),
            "is_terminal": np.zeros((B, T), bool),
        }
        update = timed(lambda: learner.update(batch, "online"))
        tensors = learner.sequences(batch)
        wm_loss = timed(lambda: learner.wm.loss(tensors))
        with torch.no_grad():
            states = learner.wm.observe(tensors)[0]
            start = {k: v.reshape(-1, *v.shape[2:]) for k, v in states.items()}
            imagine = timed(lambda: learner.imagine(start, cfg.ac.horizon))
        params = sum(p.numel() for p in learner.wm.parameters())
        print(f"{kind}: update {update * 1e3:.0f} ms, wm loss fwd {wm_loss * 1e3:.0f} ms, "
              f"imagination {imagine * 1e3:.0f} ms, world model {params:,} parameters", flush=True)


if __name__ == "__main__":
    main()
