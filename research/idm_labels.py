"""How right the inverse-dynamics labeller (``reverie data label``) is, per action, against the true labels.

Labels a partially labelled dataset with :class:`reverie.baselines.InverseDynamics` and compares the inferred
actions with those of the fully labelled recording it was made from (the offline Crafter datasets:
``symbolic-200-a0.1`` from ``symbolic-200-a1``). Writes ``research/results/idm_labels.json``: held-out and
inferred accuracy, per-action recall and counts, fit time.

    python research/idm_labels.py                       # the 10% symbolic Crafter dataset
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).parent / "runs" / "offline_crafter" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partial", type=Path, default=DATA / "symbolic-200-a0.1")
    parser.add_argument("--full", type=Path, default=DATA / "symbolic-200-a1")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="idm_labels")
    args = parser.parse_args()
    from reverie.baselines import InverseDynamics
    from reverie.data import Dataset

    for folder in (args.partial, args.full):
        if not (folder / "dataset.json").exists():
            raise SystemExit(
                f"{folder} is not a dataset; `python research/offline_crafter_tagged.py --obs symbolic --fracs 1.0 0.1` "
                "records both."
            )
    partial, full = Dataset(args.partial), Dataset(args.full)
    n = partial.act_space["action"].n
    tmp = Path(tempfile.mkdtemp())
    try:
        start = time.time()
        idm = InverseDynamics(partial.obs_space, partial.act_space, seed=args.seed)
        labelled, report = idm.label(partial, tmp / "labelled", steps=args.steps, seed=args.seed)
        seconds = time.time() - start
        confusion = np.zeros((n, n), np.int64)  # (true, inferred)
        for i in labelled.info["creation"]["inferred_episodes"]:
            truth = full.episode(i, masks=False)["action"][1:]
            guess = labelled.episode(i, masks=False)["action"][1:]
            np.add.at(confusion, (truth, guess), 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = confusion.sum(1)
    names = [str(a) for a in range(n)]
    if "crafter" in partial.env_id:
        from reverie.crafter.scripted.rules import ACTIONS

        names = list(ACTIONS)
    result = {
        "settings": {"partial": str(args.partial), "full": str(args.full), "steps": args.steps, "seed": args.seed},
        **report,
        "inferred_accuracy": float(confusion.trace() / max(confusion.sum(), 1)),
        "recall": {name: (float(confusion[a, a] / counts[a]) if counts[a] else None) for a, name in enumerate(names)},
        "count": {name: int(counts[a]) for a, name in enumerate(names)},
        "label_s": seconds,
    }
    from reverie.fileio import write_text

    RESULTS.mkdir(exist_ok=True)
    write_text(RESULTS / f"{args.out}.json", json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("recall", "count")}))
    print({k: round(v, 2) for k, v in result["recall"].items() if v is not None})


if __name__ == "__main__":
    main()
