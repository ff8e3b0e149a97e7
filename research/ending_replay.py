"""Does CartPole's online run hold 500 when replay windows are aimed at episode endings? (issue 38's default job)

The world model's continuation head learns the cart-off-the-track endings slowly: they are ~0.3% of the steps, and at
the base rate a fresh head on frozen features still predicts 0.97 there after 300 updates. This runs the default job
(``classic cartpole``) with a share ``--frac`` of each batch's windows placed so that a real ending (``is_terminal``)
lies at a uniform position inside, and prints the evaluations.

    python research/ending_replay.py --frac 0.25 --logdir /tmp/er25 [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from reverie.agent import Dreamer
from reverie.config import make_config
from reverie.replay import Replay


def aimed_sample(frac: float):
    plain = Replay.sample

    def sample(self: Replay, batch_size: int, length: int) -> dict[str, np.ndarray]:
        out = plain(self, batch_size, length)
        ends = []  # (stream id, index in stream) of every terminal step
        for sid, st in self._streams.items():
            if len(st) < length:
                continue
            for start, ch in zip(st.starts, st.chunks, strict=True):
                hits = np.flatnonzero(ch.data["is_terminal"][: ch.length])
                ends.extend((sid, start - st.starts[0] + int(h)) for h in hits)
        n = int(round(batch_size * frac))
        if not ends or not n:
            return out
        rows = self._rng.choice(batch_size, n, replace=False)
        for b in rows:
            sid, pos = ends[self._rng.integers(len(ends))]
            st = self._streams[sid]
            start = int(np.clip(pos - self._rng.integers(length), 0, len(st) - length))
            self._copy_window(st, start, length, out, int(b))
        return out

    Replay.sample = sample  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frac", type=float, default=0.25)
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--set", nargs="*", default=[])
    args = parser.parse_args()
    if args.frac:
        aimed_sample(args.frac)
    cfg = make_config(["classic", "cartpole"], [f"run.logdir={args.logdir}", "run.progress=false", *args.set])
    start = time.time()
    agent = Dreamer(cfg).learn()
    wall = round(time.time() - start, 1)
    print({"frac": args.frac, "env_steps": agent.state.env_steps, "wall_s": wall, "last_eval": agent.last_eval})


if __name__ == "__main__":
    main()
