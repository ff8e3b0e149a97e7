"""Variants of the transfer benchmark's cell (``benchmarks/dream_transfer.py``), issue 42.

``--variant short-branches`` (the ``sb3`` learner): in the correction rounds the learner's dreams, which start
from moments of the real play, are cut after ``--steps`` dreamed steps (truncated, so the learner bootstraps its
value there), as Reverie's own actor learns from ``ac.horizon``-step rollouts from replayed states. Adopted as
``correction.BRANCH_STEPS`` = 50; its seed 0 and 1 cells are the benchmark's.

``--variant online-phase`` (the ``reverie`` learner): the fine-tuning uses the ``online`` phase (model, actor and
critic from imagination, the online run's recipe) instead of the ``model`` phase, which also moves the critic
toward the replay's recorded returns. Not adopted.

    OMP_NUM_THREADS=1 python research/dream_transfer_variants.py --variant short-branches [--seed 0] [--steps 50]
    OMP_NUM_THREADS=1 python research/dream_transfer_variants.py --variant online-phase [--seed 0]

Writes research/results/dream_short_branches_<env>_<seed>_<steps>.json or
correction_online_phase_<env>_<seed>.json. Findings: research/notes/dream_transfer.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
RESULTS = Path(__file__).parent / "results"


def short_branches(steps: int) -> None:
    """Make every DreamEnv with a dataset start (the correction rounds' dreams) last ``steps`` steps."""
    import reverie.dream

    base = reverie.dream.DreamEnv

    class Branch(base):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **kw):
            if kw.get("dataset") is not None:
                kw["max_steps"] = steps
            super().__init__(*a, **kw)

    reverie.dream.DreamEnv = Branch


def online_phase() -> None:
    """Make the ``model`` phase updates of the correction loop ``online`` phase updates."""
    from reverie.learner import Learner

    update = Learner.update

    def online_for_model(self, batch, phase, rng=None, prior=False):
        if phase == "model":
            return update(self, {k: v for k, v in batch.items() if k != "bc_mask"}, "online")
        return update(self, batch, phase, rng, prior)

    Learner.update = online_for_model


def main() -> None:
    import dream_transfer

    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=["short-branches", "online-phase"], required=True)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50, help="short-branches: dreamed steps per branch")
    args = parser.parse_args()
    if args.variant == "short-branches":
        short_branches(args.steps)
        kind, out = "sb3", RESULTS / f"dream_short_branches_{args.env}_{args.seed}_{args.steps}.json"
    else:
        online_phase()
        kind, out = "reverie", RESULTS / f"correction_online_phase_{args.env}_{args.seed}.json"
    dream_transfer.run_cell(args.env, kind, args.seed, 3, 20, out)


if __name__ == "__main__":
    main()
