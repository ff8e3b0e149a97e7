"""How much does one evaluation of a finished offline agent vary? Repeat it and see.

A Crafter score is a geometric mean of achievement success rates, and the rare achievements (a stone
pickaxe in 2-5 episodes of 50) move it a lot, so two evaluations of the same network can differ by more
than two training variants do. For each finished ``offline_crafter.py`` run this evaluates, ``--repeats``
times with ``--episodes`` sampled-action episodes each (fresh env seeds per repeat):

- ``bc``: the behaviour-cloning head;
- ``actor``: the RL actor as the run left it;
- ``head_in_support``: the actor reset to the BC head (as imagination RL starts) and acting within the
  head's own support (``ac.prior_support``): what the support rule alone does, before any RL update;
- ``head_as_actor``: the same without the support rule (it should play as ``bc`` does).

    python research/offline_eval_noise.py --runs research/runs/offline_crafter/runs/<run> ... --repeats 3

Writes ``research/results/<--out>``: per run and policy the scores of every repeat, their mean and spread.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from offline_crafter_tagged import RESULTS, _eval_summary


def evaluate_run(run: Path, repeats: int, episodes: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from reverie import Dreamer
    from reverie.offline import start_rl

    scores: dict[str, list[float]] = {}
    for repeat in range(repeats):
        agent = Dreamer.load(run)
        agent.config.train.seed += 1000 * (repeat + 1)  # the evaluation's env seeds follow it: new worlds
        tau = agent.config.ac.prior_support
        for name in ("bc", "actor"):
            result = agent.evaluate(episodes=episodes, deterministic=False, head=name)  # type: ignore[arg-type]
            scores.setdefault(name, []).append(_eval_summary(result)["score"])
        start_rl(agent.learner)  # the actor becomes the BC head again
        for name, support in (("head_in_support", tau), ("head_as_actor", 0.0)):
            agent.config.ac.prior_support = support  # the learner reads the same config
            result = agent.evaluate(episodes=episodes, deterministic=False, head="actor")
            scores.setdefault(name, []).append(_eval_summary(result)["score"])
        print(f"{run.name} repeat {repeat}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in scores.items()), flush=True)
    return {
        name: {"scores": values, "mean": sum(values) / len(values), "spread": max(values) - min(values)}
        for name, values in scores.items()
    } | {"prior_support": tau}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="finished offline_crafter.py run folders")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--out", default="offline_eval_noise.json", help="file name in research/results/")
    args = parser.parse_args()
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    for run in args.runs:
        if not (run / "checkpoint").exists():
            raise SystemExit(f"No finished run at {run} (no checkpoint folder): give offline_crafter.py run folders.")
    start = time.time()
    out = {
        "repeats": args.repeats,
        "episodes": args.episodes,
        "runs": {run.name: evaluate_run(run, args.repeats, args.episodes) for run in args.runs},
    }
    out["wall_s"] = time.time() - start
    from reverie.fileio import write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / args.out, json.dumps(out, indent=1))
    print(f"wrote {RESULTS / args.out}")


if __name__ == "__main__":
    main()
