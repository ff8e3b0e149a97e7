"""Paired evaluation of the offline Crafter policies: every method of a seed on the same worlds, many episodes.

One 100-episode Crafter evaluation of a fixed network moves by about two points between sets of worlds and
sampled actions (``offline_eval_noise.py``), as much as the methods differ, and ``offline_crafter.py``
evaluates each method on worlds of its own. This script takes the finished jobs of one
``offline_crafter.py --tag`` setting and, for each seed, plays every method on the *same* ``--episodes`` worlds
(env ``i`` seeded ``--world-seed + i``, one episode each):

* ``bc``, ``bc_rw`` (and ``bc_relabel``, ``bc_rw_relabel`` below full labels): raw-observation BC, loaded from
  ``runs/offline_crafter/policies/`` where ``offline_crafter.py`` saved it, otherwise refitted with the job's
  settings and seed (the fit is seeded);
* ``wm_bc_head``, ``wm_bc_rl``: the agent's BC head and its RL actor (``wm`` jobs); with ``--key`` at a label
  fraction below 1, ``wm_bc_head_relabel`` and ``wm_bc_rl_relabel`` (``wm_relabel`` jobs).

For each seed and method it reports the Crafter score and return; for each method against ``bc`` the score
difference with a 90% bootstrap interval (the worlds resampled, the same draw for both methods: the
difference's uncertainty from the worlds and the sampled actions, not from training). At a label fraction below 1,
where the full-label agents of the same setting were played on the same worlds, it also gives what share of their
score the relabelled agents keep (``of_full_labels``, with a 90% bootstrap interval). Every (seed, method)
job runs in its own process; finished jobs are kept in ``runs/offline_crafter/paired_<tag>.jsonl`` (a rerun
continues) and the summary goes to
``research/results/offline_paired_<tag>_<obs>_<episodes>_<frac>.json`` (with ``_e<episodes>_w<world seed>``
appended where those differ from the defaults).

With ``--rerun TAG`` the agent methods are the agents ``offline_rl_phase.py --tag TAG`` re-ran from that
setting's runs (``<run>_rl_<TAG>``); their rows go to ``paired_<tag>_rl_<TAG>.jsonl`` and the summary to
``offline_paired_<tag>_rl_<TAG>_...json``, while ``bc`` and ``bc_rw`` are shared with the setting's own file (the
same policies on the same worlds). A head-only re-run (``--no-rl``) plays its heads alone, one that went on with
RL from another re-run (``--more-rl``) its actors alone.

    python research/offline_paired_eval.py --tag curious_ach --key symbolic/200/1 --episodes 300
    python research/offline_paired_eval.py --tag curious_ach --key symbolic/200/0.1 --methods wm_bc_rl_relabel
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from offline_crafter_tagged import (
    ENV_IDS,
    RAW_BC_KINDS,
    RESULTS,
    ROOT,
    bc_weighting,
    job_data,
    policy_dir,
    run_dir,
)

AGENT_METHODS = {
    "wm_bc_head": ("wm", "bc"),
    "wm_bc_rl": ("wm", "actor"),
    "wm_bc_head_relabel": ("wm_relabel", "bc"),
    "wm_bc_rl_relabel": ("wm_relabel", "actor"),
}
METHODS = (*RAW_BC_KINDS, *AGENT_METHODS)


def _unlocked(finals: list[dict[str, Any]]) -> np.ndarray:
    """(E, 22) 0/1: which achievements each episode unlocked."""
    from reverie.crafter.score import ACHIEVEMENTS, LOG_PREFIX

    return np.array([[float(f.get(LOG_PREFIX + name, 0) > 0) for name in ACHIEVEMENTS] for f in finals])


def score(unlocked: np.ndarray) -> float:
    """The Crafter score of an (E, 22) unlocked matrix."""
    from reverie.crafter.score import crafter_score

    return crafter_score((100.0 * unlocked.mean(0)).tolist())


def play(job: dict[str, Any]) -> dict[str, Any]:
    """Run one method of one seed on the job's worlds; returns the job with ``unlocked`` and ``returns``."""
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(job["world_seed"])
    from reverie.config import EnvConfig
    from reverie.envs import make_batch_env
    from reverie.evaluation import run_episodes

    start = time.time()
    method, episodes = job["method"], job["episodes"]
    env_cfg = EnvConfig(id=job["env_id"], num_envs=episodes, parallel=False, time_limit=job["time_limit"])
    if method in RAW_BC_KINDS:
        policy = _bc_policy(job)

        def act_fn(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
            return policy.act(obs, deterministic=False)

    else:
        from reverie import Dreamer

        agent = Dreamer.load(job["run"])
        if agent.state.offline_updates < agent.config.offline.steps:
            raise ValueError(f"{job['run']} has not finished its fit: wait for offline_crafter.py")
        own = agent.config.env
        if (own.id, own.time_limit, own.action_repeat) != (env_cfg.id, env_cfg.time_limit, env_cfg.action_repeat):
            raise ValueError(f"{job['run']} was trained on {own}, not on the evaluation's {env_cfg}")
        learner, head, state = agent.learner, AGENT_METHODS[method][1], None

        def act_fn(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
            nonlocal state  # learner.policy resets an env's state at obs["is_first"]
            with torch.no_grad():
                action, state, _ = learner.policy(obs, state, False, head)  # type: ignore[arg-type]
            return action

    envs = make_batch_env(env_cfg, job["world_seed"])
    try:
        results = run_episodes(envs, act_fn, episodes)
    finally:
        envs.close()
    return {
        **job,
        "unlocked": _unlocked(results.finals).astype(int).tolist(),
        "returns": results.returns.tolist(),
        "wall_s": time.time() - start,
    }


def _bc_policy(job: dict[str, Any]) -> Any:
    """The saved raw-observation BC policy of the job, or the same one fitted again from its settings."""
    from reverie.baselines import BCPolicy
    from reverie.data import Dataset

    row, folder = job["row"], Path(job["policy"])
    if (folder / "meta.json").exists():
        return BCPolicy.load(folder)
    data = Dataset(job_data(row))
    policy = BCPolicy(data.obs_space, data.act_space["action"], layers=row.get("bc_layers", 2), seed=row["seed"])
    fit = policy.fit(data, steps=row["bc_steps"], **bc_weighting(row))
    if abs(fit["bc/loss"] - row["fit"]["bc/loss"]) > 1e-3:  # the seeded fit should repeat the job's
        print(f"warning: refitted {row['kind']} seed {row['seed']}: loss {fit['bc/loss']} vs {row['fit']['bc/loss']}")
    policy.save(folder)
    return policy


def summarise(rows: list[dict[str, Any]], resamples: int = 1000) -> dict[str, Any]:
    """Per seed: each method's score and return, and against ``bc`` the score difference with a 90% bootstrap
    interval over the shared worlds; across seeds: the scores per method and (a)'s spread."""
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_seed.setdefault(row["seed"], {})[row["method"]] = row
    out: dict[str, Any] = {"seeds": {}}
    rng = np.random.default_rng(0)
    for seed, methods in sorted(by_seed.items()):
        entry: dict[str, Any] = {}
        for method, row in sorted(methods.items(), key=lambda kv: METHODS.index(kv[0])):
            unlocked = np.array(row["unlocked"], float)
            entry[method] = {"score": score(unlocked), "return": float(np.mean(row["returns"]))}
            if method != "bc" and "bc" in methods:
                base = np.array(methods["bc"]["unlocked"], float)
                if len(base) != len(unlocked):
                    continue
                picks = rng.integers(0, len(base), (resamples, len(base)))
                diffs = [score(unlocked[p]) - score(base[p]) for p in picks]
                entry[method]["minus_bc"] = score(unlocked) - score(base)
                entry[method]["minus_bc_90"] = [float(np.percentile(diffs, 5)), float(np.percentile(diffs, 95))]
        out["seeds"][str(seed)] = entry
    for method in METHODS:
        scores = [out["seeds"][s][method]["score"] for s in out["seeds"] if method in out["seeds"][s]]
        if scores:
            out.setdefault("score", {})[method] = scores
    if "bc" in out.get("score", {}):
        out["bc_spread"] = max(out["score"]["bc"]) - min(out["score"]["bc"])
    return out


def label_ratio(rows: list[dict[str, Any]], full_rows: list[dict[str, Any]], resamples: int = 1000) -> dict[str, Any]:
    """Per seed, the score of each relabelled agent (``rows``, a label fraction below 1) over the same seed's agent
    with all labels (``full_rows``, played on the same worlds), with a 90% bootstrap interval (the same worlds
    resampled for both): the share of the full-label score that the fraction keeps."""
    full = {(r["seed"], r["method"]): np.array(r["unlocked"], float) for r in full_rows}
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: (r["seed"], r["method"])):
        base = full.get((row["seed"], row["method"].removesuffix("_relabel")))
        unlocked = np.array(row["unlocked"], float)
        if not row["method"].endswith("_relabel") or base is None or len(base) != len(unlocked):
            continue
        picks = rng.integers(0, len(base), (resamples, len(base)))
        ratios = [score(unlocked[p]) / max(score(base[p]), 1e-9) for p in picks]
        out.setdefault(str(row["seed"]), {})[row["method"]] = {
            "ratio": score(unlocked) / max(score(base), 1e-9),
            "ratio_90": [float(np.percentile(ratios, 5)), float(np.percentile(ratios, 95))],
            "full_score": score(base),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", required=True, help="the offline_crafter.py --tag whose jobs to evaluate")
    parser.add_argument("--key", default="symbolic/200/1", help="<obs>/<episodes>/<label fraction>")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--episodes", type=int, default=300, help="worlds per evaluation (one episode each)")
    parser.add_argument("--world-seed", type=int, default=500_000, help="env i is seeded world_seed + i")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rerun", default="", help="evaluate the agents offline_rl_phase.py --tag RERUN re-ran")
    args = parser.parse_args()

    suffix = f"_{args.tag}"
    source = ROOT / f"jobs{suffix}.jsonl"
    if not source.exists():
        parser.error(f"no finished jobs at {source}: run offline_crafter.py --tag {args.tag} first")
    from reverie.logger import read_jsonl

    finished = {(r["key"], r["kind"], r["seed"]): r for r in read_jsonl(source)}
    out_file = ROOT / f"paired{suffix}.jsonl"
    agent_file = ROOT / f"paired{suffix}_rl_{args.rerun}.jsonl" if args.rerun else out_file
    if args.rerun:
        suffix += f"_rl_{args.rerun}"

    def read_rows(path: Path, agents: bool) -> list[dict[str, Any]]:
        rows = read_jsonl(path) if path.exists() else []
        return [
            r
            for r in rows
            if r["key"] == args.key and r["episodes"] == args.episodes and agents == (r["method"] in AGENT_METHODS)
        ]

    rows = read_rows(out_file, False) + read_rows(agent_file, True)
    rerun_done: set[int] = set()  # seeds whose re-run finished (offline_rl_phase.py writes them at the end)
    if args.rerun:
        rerun_file = RESULTS / f"offline_rl_phase_{args.rerun}.json"
        reruns = json.loads(rerun_file.read_text()) if rerun_file.exists() else {}
        rerun = reruns.get(args.key, {})
        rerun_done = {int(seed) for seed in rerun.get("seeds", {})}
        if rerun.get("no_rl"):  # its actor is still the source's: only the re-trained heads
            args.methods = [m for m in args.methods if m not in AGENT_METHODS or AGENT_METHODS[m][1] == "bc"]
        elif rerun.get("more_rl"):  # RL went on from another re-run: the head is that one's, only the actors
            args.methods = [m for m in args.methods if m not in AGENT_METHODS or AGENT_METHODS[m][1] != "bc"]
    done = {(r["seed"], r["method"]) for r in rows if r["world_seed"] == args.world_seed}
    jobs = []
    for seed in args.seeds:
        for method in args.methods:
            kind = AGENT_METHODS[method][0] if method in AGENT_METHODS else method
            row = finished.get((args.key, kind, seed))
            agent_dir = run_dir(args.key, kind, args.tag, seed)
            if args.rerun:
                agent_dir = agent_dir.with_name(f"{agent_dir.name}_rl_{args.rerun}")
            if row is None and method in AGENT_METHODS and (agent_dir / "checkpoint").exists():
                row = finished.get((args.key, "bc", seed))  # a fitted agent still being evaluated: bc's settings
            if row is None or (seed, method) in done:
                continue
            if args.rerun and method in AGENT_METHODS and seed not in rerun_done:
                print(f"seed {seed}: no finished offline_rl_phase.py --tag {args.rerun} run, {method} skipped")
                continue
            job = {
                "key": args.key,
                "seed": seed,
                "method": method,
                "episodes": args.episodes,
                "world_seed": args.world_seed,
                "env_id": ENV_IDS[row["obs"]],
                "time_limit": row["time_limit"],
            }
            if method in AGENT_METHODS:
                job["run"] = str(agent_dir)
            else:
                job |= {"row": row, "policy": str(policy_dir(args.key, kind, args.tag, seed))}
            jobs.append(job)
    print(f"{len(jobs)} evaluations to run ({len(done)} already done)", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        for future in as_completed([pool.submit(play, job) for job in jobs]):
            row = future.result()
            rows.append(row)
            with (agent_file if row["method"] in AGENT_METHODS else out_file).open("a") as f:
                f.write(json.dumps({k: v for k, v in row.items() if k != "row"}) + "\n")
            print(
                f"seed {row['seed']} {row['method']}: {score(np.array(row['unlocked'], float)):.2f} "
                f"({row['wall_s'] / 60:.1f} min)",
                flush=True,
            )
    from reverie.fileio import write_text

    summary = summarise([r for r in rows if r["world_seed"] == args.world_seed])
    summary["settings"] = {"tag": args.tag, "key": args.key, "episodes": args.episodes, "world_seed": args.world_seed}
    if float(args.key.rsplit("/", 1)[1]) < 1:
        full_key = args.key.rsplit("/", 1)[0] + "/1"
        full_rows = read_jsonl(agent_file) if agent_file.exists() else []
        full_rows = [
            r
            for r in full_rows
            if r["key"] == full_key and r["episodes"] == args.episodes and r["world_seed"] == args.world_seed
        ]
        ratios = label_ratio([r for r in rows if r["world_seed"] == args.world_seed], full_rows)
        if ratios:
            summary["of_full_labels"] = ratios
    RESULTS.mkdir(parents=True, exist_ok=True)
    defaults = (parser.get_default("episodes"), parser.get_default("world_seed"))
    default = (args.episodes, args.world_seed) == defaults  # other runs must not overwrite its summary
    extra = "" if default else f"_e{args.episodes}_w{args.world_seed}"
    name = f"offline_paired{suffix}_{args.key.replace('/', '_')}{extra}.json"
    write_text(RESULTS / name, json.dumps(summary, indent=1))
    for seed, entry in summary["seeds"].items():
        cells = []
        for method, res in entry.items():
            interval = res.get("minus_bc_90")
            cells.append(
                f"{method} {res['score']:.2f}"
                + (f" ({res['minus_bc']:+.2f}, 90% {interval[0]:+.2f}..{interval[1]:+.2f})" if interval else "")
            )
        print(f"seed {seed}: " + "; ".join(cells))
    for seed, entry in summary.get("of_full_labels", {}).items():
        cells = [
            f"{method} {res['ratio']:.0%} of {res['full_score']:.2f} (90% {low:.0%}..{high:.0%})"
            for method, res in entry.items()
            for low, high in [res["ratio_90"]]
        ]
        print(f"seed {seed}, share of the full-label score: " + "; ".join(cells))
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
