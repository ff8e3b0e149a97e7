"""CartPole-v1 with the classic preset at two train ratios: env steps, updates and wall time to an eval of 500.

Asks whether fewer updates per env step reach CartPole's 500 in less wall time (the default job's 5 minutes).
    python research/classic_ratio.py --ratios 64 32 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from learning_classic import run_one  # noqa: E402

OUT = Path(__file__).parent / "results" / "classic_ratio.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[64.0, 32.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-every", type=int, default=1250)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results: dict = json.loads(OUT.read_text()) if OUT.exists() else {}
    jobs = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for ratio in args.ratios:
            for seed in args.seeds:
                extra = [f"train.train_ratio={ratio}", "run.stop_at_return=500"]
                logdir = f"/tmp/classic_ratio/r{ratio:g}-s{seed}"
                jobs[(ratio, seed)] = pool.submit(run_one, "CartPole-v1", seed, 30_000, args.eval_every, logdir, extra)
        for (ratio, seed), job in jobs.items():
            out = job.result()
            results.setdefault(f"ratio{ratio:g}", {})[str(seed)] = out
            print(ratio, seed, out["curve"][-1], round(out["wall_s"]), out["updates"], flush=True)
            OUT.parent.mkdir(exist_ok=True)
            OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
