"""Correction for a dream-trained learner with short dreams branched from real play (issue 42).

The transfer benchmark's cell (``benchmarks/dream_transfer.py``) with one change: in the correction rounds the
learner's dreams, which start from moments of the real play, are cut after ``--steps`` dreamed steps (truncated,
so the learner bootstraps its value there), as Reverie's own actor learns from rollouts of ``ac.horizon`` steps
from replayed states: the model's errors then compound over a few dozen steps instead of hundreds.

    OMP_NUM_THREADS=1 python research/dream_short_branches.py [--env CartPole-v1] [--seed 0] [--steps 50]

Writes research/results/dream_short_branches_<env>_<seed>.json. Finding: research/notes/dream_transfer.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def main() -> None:
    import dream_transfer

    import reverie.dream

    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    base = reverie.dream.DreamEnv

    class Branch(base):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **kw):
            if kw.get("dataset") is not None:  # the correction rounds' dreams
                kw["max_steps"] = args.steps
            super().__init__(*a, **kw)

    reverie.dream.DreamEnv = Branch
    out = Path(__file__).parent / "results" / f"dream_short_branches_{args.env}_{args.seed}_{args.steps}.json"
    dream_transfer.run_cell(args.env, "sb3", args.seed, 3, 20, out)


if __name__ == "__main__":
    main()
