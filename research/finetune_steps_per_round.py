"""Is seed 0's CartPole model short of fine-tuning? The product benchmark's CartPole cells with more model
fine-tuning per correction round (``correct`` fine-tunes 300 updates a round by default).

    python research/finetune_steps_per_round.py sb3|reverie FINETUNE SEED [SEED ...]

Same checkpoints, rounds, real episodes and learning budgets as ``benchmarks/dream_transfer.py``. Cells:
research/results/finetune_steps_per_round/. Finding: notes/dream_transfer.md.
"""
import functools
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "benchmarks"))
OUT = HERE / "results" / "finetune_steps_per_round"

if __name__ == "__main__":
    kind, finetune, seeds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if len(seeds) > 1:  # one process per seed, side by side, one thread each
        env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
        procs = [subprocess.Popen([sys.executable, __file__, kind, str(finetune), s], env=env) for s in seeds]
        sys.exit(max(p.wait() for p in procs))
    import dream_transfer as bench

    import reverie.correction as correction

    correction.correct = functools.partial(correction.correct, finetune_steps=finetune)
    seed = int(seeds[0])
    bench.run_cell("CartPole-v1", kind, seed, 3, 20, OUT / f"{kind}_finetune_{finetune}_seed{seed}.json")
