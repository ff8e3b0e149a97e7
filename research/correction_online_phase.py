"""Does Reverie's actor lose its real return in the first correction round because the ``model`` phase moves the
critic toward the replay's recorded returns (issue 42)? The transfer benchmark's ``reverie`` cell with the
fine-tuning done by the ``online`` phase (the online run's own recipe: model, actor and critic from imagination)
instead of the ``model`` phase.

    OMP_NUM_THREADS=1 python research/correction_online_phase.py [--env CartPole-v1] [--seed 0]

Writes research/results/correction_online_phase_<env>_<seed>.json. Finding: research/notes/dream_transfer.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def main() -> None:
    import dream_transfer

    from reverie.learner import Learner

    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    update = Learner.update

    def online_for_model(self, batch, phase, rng=None, prior=False):
        if phase == "model":
            batch = {k: v for k, v in batch.items() if k != "bc_mask"}
            return update(self, batch, "online")
        return update(self, batch, phase, rng, prior)

    Learner.update = online_for_model
    out = Path(__file__).parent / "results" / f"correction_online_phase_{args.env}_{args.seed}.json"
    dream_transfer.run_cell(args.env, "reverie", args.seed, 3, 20, out)


if __name__ == "__main__":
    main()
