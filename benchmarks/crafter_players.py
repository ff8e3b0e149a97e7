"""Crafter players: the random and the scripted player over full episodes, scored as in the Crafter paper.

Each player plays ``--episodes`` episodes (episode ``i`` in the world of seed ``i``, the player seeded
with ``i`` too, so the scripted player's style varies across episodes) under the standard protocol:
an episode ends at death or after 10,000 steps. Reported per player: the Crafter score and the
success rate of each achievement (:mod:`reverie.crafter.score`), the mean episode length, deaths, the
number of craft or place actions that failed (the game ignored them; the scripted player must have
none) and the wall time. The players are built by :func:`reverie.data.make_policy`, exactly as
``reverie data record --policy ...`` builds them.

    python benchmarks/crafter_players.py                      # 100 episodes each, two worker processes
    python benchmarks/crafter_players.py --episodes 10 --workers 1

Writes ``benchmarks/results/crafter_players.json`` as ``{"random": {"score": x, "success": {name: rate},
"episodes": n, "mean_length": l, "wall_s": t, ...}, "scripted": {...}, "config": {...}}`` and the bar
chart ``crafter_players.png``. The published random-agent score is 1.6.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from reverie.crafter.env import CrafterEnv  # noqa: E402
from reverie.crafter.score import ACHIEVEMENTS, LOG_PREFIX, achievement_table, crafter_score, plot_achievements  # noqa: E402
from reverie.data import make_policy  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PLAYERS = ("random", "scripted")
CRAFTS = ("make_", "place_")


def play_episode(job: tuple[str, int, int]) -> dict[str, Any]:
    """One episode of ``player`` in the world of ``seed``: achievements, length, death, failed crafts."""
    player, seed, length = job
    start = time.perf_counter()
    env = CrafterEnv(seed=seed, symbolic=True, length=length)  # the symbolic variant skips rendering
    names = env.crafter_env.action_names
    policy = make_policy(player, env, seed, "crafter-symbolic")
    obs = env.step({"action": 0, "reset": True})
    steps = failed = 0
    while not obs["is_last"]:
        action = int(policy(obs))
        name = names[action]
        before = obs.get(LOG_PREFIX + name) if name.startswith(CRAFTS) else None
        obs = env.step({"action": action})
        steps += 1
        if before is not None and obs[LOG_PREFIX + name] <= before:
            failed += 1
    return {
        "seed": seed,
        "achievements": {name: int(obs[LOG_PREFIX + name]) for name in ACHIEVEMENTS},
        "length": steps,
        "dead": bool(obs["is_terminal"]),
        "failed_crafts": failed,
        "seconds": time.perf_counter() - start,
    }


def evaluate(player: str, episodes: int, length: int, workers: int) -> dict[str, Any]:
    """Play ``episodes`` episodes (in ``workers`` processes) and summarise them."""
    jobs = [(player, seed, length) for seed in range(episodes)]
    start = time.perf_counter()
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            runs = list(pool.imap_unordered(play_episode, jobs))
    else:
        runs = [play_episode(job) for job in jobs]
    wall = time.perf_counter() - start
    runs.sort(key=lambda run: run["seed"])
    success = achievement_table([run["achievements"] for run in runs])
    lengths = [run["length"] for run in runs]
    return {
        "score": crafter_score(success),
        "success": success,
        "episodes": len(runs),
        "mean_length": float(np.mean(lengths)),
        "median_length": float(np.median(lengths)),
        "deaths": sum(run["dead"] for run in runs),
        "achievements_seen": sum(rate > 0 for rate in success.values()),
        "failed_crafts": sum(run["failed_crafts"] for run in runs),
        "wall_s": wall,
        "steps_per_s": sum(lengths) / sum(run["seconds"] for run in runs),
        "lengths": lengths,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=100, help="episodes per player")
    parser.add_argument(
        "--length", type=int, default=10000, help="steps before an episode is cut (the protocol: 10000)"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--players", nargs="+", default=list(PLAYERS), choices=PLAYERS, help="players to run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and PNG")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for player in args.players:
        results[player] = summary = evaluate(player, args.episodes, args.length, args.workers)
        print(
            f"{player}: score {summary['score']:.2f}, {summary['achievements_seen']} achievements seen, "
            f"mean length {summary['mean_length']:.0f}, {summary['failed_crafts']} failed crafts, "
            f"{summary['wall_s']:.0f} s"
        )
    results["config"] = {
        "episodes": args.episodes,
        "length": args.length,
        "workers": args.workers,
        "env": "CrafterEnv(symbolic=True); episode i: world seed i, player seed i",
        "machine": platform.processor() or platform.machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crafter_players.json").write_text(json.dumps(results, indent=1))
    series = [(player, results[player]["success"]) for player in args.players]
    plot_achievements(series, args.out / "crafter_players.png", f"Crafter players, {args.episodes} episodes each")


if __name__ == "__main__":
    main()
