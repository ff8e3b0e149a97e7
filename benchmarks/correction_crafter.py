"""The correction loop on Crafter: loopholes of an offline agent at round 0, and how few real rounds close them.

Starts from the offline agents that ``benchmarks/offline_crafter.py`` trained on scripted play (their run
folders, one per seed; ``--source-tag grid`` takes those of its ``--tag grid`` variant, ``--source-rl datakl``
the agents whose RL phase ``benchmarks/offline_rl_phase.py --tag datakl`` re-ran), and runs
``reverie.correction.correct`` on a copy of each: round 0 watches the agent as it came, then each round
plays ``--episodes`` real episodes, fine-tunes the world model with them and trains the policy in
imagination again. Writes ``benchmarks/results/correction_crafter.json``
(``{"rounds": [...seed 0...], "per_seed": [[...], ...], "seeds": n}``) and ``correction_crafter.png``
(``correction_crafter_<tag>.*`` with ``--tag``, so a variant leaves the headline figures alone).

    python benchmarks/correction_crafter.py --obs symbolic --seeds 0 1 2 --rounds 3 --episodes 20
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
ROOT = Path(__file__).parent / "runs"
OFFLINE = ROOT / "offline_crafter"


def run_seed(job: dict[str, Any]) -> dict[str, Any]:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    logging.basicConfig(level=logging.INFO, format=f"seed {job['seed']} %(asctime)s %(message)s", force=True)
    import torch

    torch.set_num_threads(1)
    from reverie import Dreamer
    from reverie.correction import correct

    variant = f"_{job['source_tag']}" if job.get("source_tag") else ""
    rerun = f"_rl_{job['source_rl']}" if job.get("source_rl") else ""
    source = OFFLINE / "runs" / f"{job['obs']}_{job['episodes']}_1_wm{variant}_s{job['seed']}{rerun}"
    if not (source / "checkpoint").exists():
        raise SystemExit(f"No offline agent at {source}: run benchmarks/offline_crafter.py first.")
    weight = f"_w{job['miss_weight']:g}" if job.get("miss_weight", 1.0) != 1.0 else ""
    tag = f"f{job['focus']}_d{job['reward_doubt']}_ft{job['finetune_steps']}{weight}{variant}{rerun}"
    work = ROOT / "correction_crafter" / f"{job['obs']}_s{job['seed']}_{tag}"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(source / "checkpoint", work / "checkpoint")
    agent = Dreamer.load(work)
    agent.config.run.logdir = str(work)
    agent.config.offline.reward_doubt = job["reward_doubt"]
    data = OFFLINE / "data" / f"{job['obs']}-{job['episodes']}-a1"
    start = time.time()
    rounds = correct(
        agent,
        data,
        job["rounds"],
        job["episodes_per_round"],
        job["finetune_steps"],
        job["rl_steps"],
        seed=job["seed"],
        focus=job["focus"],
        miss_weight=job.get("miss_weight", 1.0),
    )
    agent.save(work / "checkpoint")  # the corrected agent, for a closer look (the offline one stays in its run)
    return {"seed": job["seed"], "rounds": rounds, "wall_s": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs", default="symbolic", choices=["symbolic", "pixels"])
    parser.add_argument("--dataset-episodes", type=int, default=200)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=20, help="real episodes per round")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--rl-steps", type=int, default=300)
    parser.add_argument("--focus", type=float, default=0.75, help="share of real windows around the model's misses")
    parser.add_argument(
        "--reward-doubt", type=float, default=0.0, help="imagined reward minus this times the ensemble's reward doubt"
    )
    parser.add_argument("--miss-weight", type=float, default=1.0, help="weight of a miss step in the model's losses")
    parser.add_argument(
        "--source-tag", default="", help="start from the offline agents of `offline_crafter.py --tag TAG` (e.g. grid)"
    )
    parser.add_argument(
        "--source-rl", default="", help="start from the agents that `offline_rl_phase.py --tag TAG` re-trained"
    )
    parser.add_argument("--tag", default="", help="write correction_crafter_<tag>.json/.png instead of the headline")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from reverie.fileio import write_text
    from reverie.logger import read_jsonl
    from reverie.plots import plot_rounds

    jobs = [
        {
            "obs": args.obs,
            "episodes": args.dataset_episodes,
            "seed": seed,
            "rounds": args.rounds,
            "episodes_per_round": args.episodes,
            "finetune_steps": args.finetune_steps,
            "rl_steps": args.rl_steps,
            "focus": args.focus,
            "reward_doubt": args.reward_doubt,
            **({"source_tag": args.source_tag} if args.source_tag else {}),
            **({"source_rl": args.source_rl} if args.source_rl else {}),
            **({"miss_weight": args.miss_weight} if args.miss_weight != 1.0 else {}),
        }
        for seed in args.seeds
    ]
    done_file = ROOT / "correction_crafter" / "seeds.jsonl"
    done_file.parent.mkdir(parents=True, exist_ok=True)
    rows = read_jsonl(done_file) if done_file.exists() else []
    same = [r for r in rows if r["settings"] == _settings(jobs[0])]
    todo = [job for job in jobs if job["seed"] not in {r["seed"] for r in same}]
    print(f"{len(todo)} seeds to run ({len(same)} finished with these settings)", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        for result in pool.map(run_seed, todo):
            result["settings"] = _settings(jobs[0])
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
        "settings": {**_settings(jobs[0]), "seeds": [r["seed"] for r in results]},
        "summary": [summarise_seed(r["rounds"]) for r in results],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"correction_crafter_{args.tag}" if args.tag else "correction_crafter"
    write_text(RESULTS / f"{name}.json", json.dumps(out, indent=1))
    plot_rounds(per_seed, RESULTS / f"{name}.png")
    for r, summary in zip(results, out["summary"], strict=True):
        rates = [f"{x['exploit_rate']:.4f}" for x in r["rounds"]]
        scores = [f"{x['real_score']:.2f}" for x in r["rounds"]]
        print(f"seed {r['seed']}: exploit rate by round {rates}, score {scores}, {summary}")


def _settings(job: dict[str, Any]) -> dict[str, Any]:
    """What makes two seeds' runs comparable (everything but the seed)."""
    return {k: v for k, v in job.items() if k != "seed"}


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
