"""Does the learner starve between correction rounds? The product benchmark's CartPole cells with more learning per
correction round (the benchmark gives PPO 10k dream steps, five rollouts of 2,048 steps, after each fine-tuning,
and Reverie's actor 300 imagination updates).

    python research/dream_steps_per_round.py sb3|reverie PER_ROUND SEED [SEED ...] [--finetune N]

``--finetune N``: the model's fine-tuning updates a round too (``correct``'s default 300), cells in
results/finetune_steps_per_round/ (``sb3 30000 0 2 --finetune 1200`` is the benchmark's budget with 4x the tuning).

Same checkpoints, rounds and real episodes as ``benchmarks/dream_transfer.py``; the real-trained reference gets as
many steps as the dream gave in all. Cells: research/results/dream_steps_per_round/. Finding: notes/dream_transfer.md.
"""

import functools
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "benchmarks"))
OUT = HERE / "results" / "dream_steps_per_round"

if __name__ == "__main__":
    args = sys.argv[1:]
    finetune = int(args.pop(args.index("--finetune") + 1)) if "--finetune" in args else None
    args = [a for a in args if a != "--finetune"]
    kind, per_round, seeds = args[0], int(args[1]), args[2:]
    if len(seeds) > 1:  # one process per seed, side by side, one thread each
        env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
        tail = [] if finetune is None else ["--finetune", str(finetune)]
        procs = [subprocess.Popen([sys.executable, __file__, kind, str(per_round), s, *tail], env=env) for s in seeds]
        sys.exit(max(p.wait() for p in procs))
    import dream_transfer as bench

    import reverie.correction as correction

    bench.DREAM_STEPS["CartPole-v1"] = (bench.DREAM_STEPS["CartPole-v1"][0], per_round)
    bench.REVERIE_UPDATES = (bench.REVERIE_UPDATES[0], per_round)
    seed = int(seeds[0])
    if finetune is None:
        name = f"per_round_{per_round}_seed{seed}" if kind == "sb3" else f"reverie_per_round_{per_round}_seed{seed}"
        out = OUT / f"{name}.json"
    else:  # run_cell imports correct when it runs: the module's function with more fine-tuning
        correction.correct = functools.partial(correction.correct, finetune_steps=finetune)
        out = OUT.parent / "finetune_steps_per_round" / f"{kind}_finetune_{finetune}_seed{seed}.json"
    bench.run_cell("CartPole-v1", kind, seed, 3, 20, out)
