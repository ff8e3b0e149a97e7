"""Timing harness for sheeprl (PyPI) dreamer_v3_5 (the Nature-recipe port).

Runs sheeprl's own CLI (Hydra overrides from argv) and wraps the module-level
`train` (one gradient step: world model + actor + critic, excl. batch sampling)
with a wall-clock timer; one JSON row per gradient step to $BENCH_OUT.
Prints "PARAMS ..." (world model / actor / critic) at the first step.
env: BENCH_OUT (required), THREADS (torch intra-op threads, default 2)
"""

import json
import os
import time

OUT = os.environ["BENCH_OUT"]
THREADS = int(os.environ.get("THREADS", "2"))

import sheeprl.algos.dreamer_v3_5.dreamer_v3_5 as algo  # noqa: E402
import torch  # noqa: E402

_orig_train = algo.train
_n = [0]


def _count(m):
    return sum(p.numel() for p in m.parameters())


def _train(fabric, cfg, world_model, actor, critic, target_critic, *a, **kw):
    if _n[0] == 0:
        torch.set_num_threads(THREADS)
        wm, ac, cr = _count(world_model), _count(actor), _count(critic)
        print(
            f"PARAMS world_model={wm:,} actor={ac:,} critic={cr:,} total={wm + ac + cr:,} "
            f"(excl. target critic) precision={cfg.fabric.precision} threads={torch.get_num_threads()} "
            f"torch={torch.__version__}",
            flush=True,
        )
    t0 = time.time()
    if _n[0] == 0:
        with open(OUT + ".first_begin", "w") as f:
            f.write(str(t0))
    out = _orig_train(fabric, cfg, world_model, actor, critic, target_critic, *a, **kw)
    dur = time.time() - t0
    _n[0] += 1
    with open(OUT, "a") as f:
        f.write(json.dumps({"i": _n[0], "t0": t0, "dur": dur}) + "\n")
    return out


algo.train = _train

from sheeprl.cli import run  # noqa: E402

run()
