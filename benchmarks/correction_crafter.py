"""The correction loop on Crafter: loopholes of an offline agent at round 0, and how few real rounds close them.

For each seed this fits the source agent (once; resumable) from 200 episodes of the scripted player on symbolic
Crafter with the recipe ``SOURCE`` below, applied after the ``offline`` preset: the world model with the plain grid
codec for the symbolic map (``model.vector_codec=crafter_grid``), a BC head and imagination RL from its features,
1,800 updates (25% RL). Then it runs ``reverie.correction.correct`` on a copy: round 0 watches the agent as it
came, each later round plays ``--episodes`` real episodes, fine-tunes the world model with them and trains the
policy in imagination again. Every seed runs in its own process with one torch thread; finished seeds are kept in
``benchmarks/runs/correction_crafter/seeds.jsonl`` and skipped when the same settings run again.

Writes ``benchmarks/results/correction_crafter.json`` (``{"rounds": [...seed 0...], "per_seed": [[...], ...],
"summary": [...], ...}``: per round the exploit rate and classes with examples, promised vs real return,
uncertainty AUROC on exploit steps, real Crafter score) and ``correction_crafter.png``.

    python benchmarks/correction_crafter.py                     # seeds 0 1 2, 3 rounds of 20 episodes
    python benchmarks/correction_crafter.py --seeds 0 --rounds 1 --episodes 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent / "runs" / "correction_crafter"
DATA = ROOT / "data" / "symbolic-200"  # 200 episodes of the scripted player, 500 steps at most
# The offline agents the published rounds started from: the plain grid codec, a policy on the model's features.
SOURCE = [
    *("model.units=256", "model.hidden=256", "model.classes=16", "model.vector_codec=crafter_grid"),
    *("ac.units=256", "ac.prior_kl=1.0", "optim.lr=1e-3", "train.batch_length=32"),
    *("offline.steps=1800", "offline.rl_frac=0.25", "offline.pessimism=cut"),
]


def source_agent(seed: int) -> Path:
    """The fitted source agent of ``seed`` (fitted here, or resumed, where it is missing or unfinished)."""
    from reverie import Dreamer, make_config

    logdir = ROOT / "source" / f"symbolic_s{seed}"
    settings = [f"run.logdir={logdir}", f"train.seed={seed}", "env.time_limit=500", "run.eval_episodes=0"]
    settings += ["run.progress=false", "run.tensorboard=false"]
    resume = (logdir / "checkpoint").exists()
    agent = Dreamer.load(logdir) if resume else Dreamer(make_config(["offline"], [*SOURCE, *settings]))
    agent.fit(DATA)  # a finished fit returns at once
    return logdir


def run_seed(job: dict[str, Any]) -> dict[str, Any]:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    logging.basicConfig(level=logging.INFO, format=f"seed {job['seed']} %(asctime)s %(message)s", force=True)
    import torch

    torch.set_num_threads(1)
    from reverie import Dreamer
    from reverie.correction import correct

    source = source_agent(job["seed"])
    work = ROOT / f"s{job['seed']}_f{job['focus']}_ft{job['finetune_steps']}_rl{job['rl_steps']}"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(source / "checkpoint", work / "checkpoint")
    agent = Dreamer.load(work)
    agent.config.run.logdir = str(work)
    start = time.time()
    rounds = correct(
        agent,
        DATA,
        job["rounds"],
        job["episodes_per_round"],
        job["finetune_steps"],
        job["rl_steps"],
        seed=job["seed"],
        focus=job["focus"],
    )
    agent.save(work / "checkpoint")  # the corrected agent, for a closer look (the source stays as it is)
    return {"seed": job["seed"], "rounds": rounds, "wall_s": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=20, help="real episodes per round")
    parser.add_argument("--finetune-steps", type=int, default=400, help="world-model updates per round")
    parser.add_argument("--rl-steps", type=int, default=200, help="imagination RL updates per round")
    parser.add_argument("--focus", type=float, default=0.75, help="share of real windows around the model's misses")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from reverie.data import record
    from reverie.fileio import write_text
    from reverie.logger import read_jsonl
    from reverie.plots import plot_rounds

    if not (DATA / "dataset.json").exists():
        shutil.rmtree(DATA, ignore_errors=True)  # what an interrupted recording left
        record("crafter-symbolic", "scripted", 200, DATA, seed=0, time_limit=500)
    settings = {
        "obs": "symbolic",
        "episodes": 200,
        "rounds": args.rounds,
        "episodes_per_round": args.episodes,
        "finetune_steps": args.finetune_steps,
        "rl_steps": args.rl_steps,
        "focus": args.focus,
        "source": SOURCE,
    }
    done_file = ROOT / "seeds.jsonl"
    done_file.parent.mkdir(parents=True, exist_ok=True)
    rows = read_jsonl(done_file) if done_file.exists() else []
    same = [r for r in rows if r["settings"] == settings and r["seed"] in args.seeds]
    todo = [{**settings, "seed": s} for s in args.seeds if s not in {r["seed"] for r in same}]
    print(f"{len(todo)} seeds to run ({len(same)} finished with these settings)", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        for result in pool.map(run_seed, todo):
            result["settings"] = settings
            same.append(result)
            with done_file.open("a") as f:
                f.write(json.dumps(result) + "\n")
    results = sorted(same, key=lambda r: r["seed"])
    per_seed = [r["rounds"] for r in results]
    out = {
        "rounds": per_seed[0],
        "per_seed": per_seed,
        "seeds": len(per_seed),
        "seed_ids": [r["seed"] for r in results],
        "wall_s": [r["wall_s"] for r in results],
        "settings": {**settings, "seeds": [r["seed"] for r in results]},
        "summary": [summarise_seed(r["rounds"]) for r in results],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / "correction_crafter.json", json.dumps(out, indent=1))
    plot_rounds(per_seed, RESULTS / "correction_crafter.png")
    for r, summary in zip(results, out["summary"], strict=True):
        rates = [f"{x['exploit_rate']:.4f}" for x in r["rounds"]]
        scores = [f"{x['real_score']:.2f}" for x in r["rounds"]]
        print(f"seed {r['seed']}: exploit rate by round {rates}, score {scores}, {summary}")


def summarise_seed(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per round after 0: exploit-rate reduction from round 0 and score change; the rounds meeting both
    targets (rate down >= 90% and a higher real score)."""
    base = rounds[0]
    cut = [1.0 - r["exploit_rate"] / base["exploit_rate"] if base["exploit_rate"] else 0.0 for r in rounds[1:]]
    gain = [r["real_score"] - base["real_score"] for r in rounds[1:]]
    met = [i + 1 for i, (c, g) in enumerate(zip(cut, gain, strict=True)) if c >= 0.9 and g > 0]
    return {"exploit_reduction": cut, "score_gain": gain, "rounds_meeting_both": met}


if __name__ == "__main__":
    main()
