"""Re-run only the imagination-RL phase of finished ``offline_crafter.py`` agents, with other RL settings.

During RL the world model and the behaviour-cloning head are frozen, so a finished run's checkpoint holds
them exactly as they were when RL began. This script copies each seed's agent, rewinds its offline-update
counter to the start of the RL phase, lets ``Dreamer.fit`` start RL again from the BC head (actor and
prior reset to it; the critic and the return normaliser keep what the first RL phase learned) with the
``--set`` overrides, and evaluates the new actor in the real game as ``offline_crafter.py`` does.
With ``--bc-steps N`` the rerun rewinds to the end of the model phase instead: the BC head first trains
``N`` more updates alone on the frozen model (``offline.bc_frac``), then RL runs as many updates as before;
the BC head is evaluated too. ``--bc-reset`` also starts that head from fresh weights (and fresh optimiser
moments): for a head that reads observations alone (``ac.feat_input=false``), whose updates never touch the
model, that re-trains it as a new run would with the ``--set`` head settings, on the same world model.
``--no-rl`` stops after the head (evaluated alone); the same command without it goes on with RL from there.
``--from-rerun TAG`` starts from an earlier re-run's finished agent (``--tag TAG``) instead of the source run (its
re-trained head, say); with ``--more-rl N`` that agent's actor, critic and optimiser moments continue for ``N`` more
RL updates, as if its RL phase had been ``N`` longer.

    python research/offline_rl_phase.py --source-tag obs --tag datakl --set offline.data_prior_kl=1.0

Writes ``research/results/offline_rl_phase_<tag>.json``, ``{"<obs>/<episodes>/<label fraction>": ...}`` (other
settings already in the file are kept): per seed the new actor's score and success rates next to the
source run's BC head and RL actor.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from offline_crafter_tagged import ENV_IDS, RESULTS, _eval_summary, dataset_path, run_dir

POLICY_HEADS = ("bc.", "bc_avg.", "bc_prior.", "ac.actor.")


def _transplant(first: Any, cfg: Any) -> Any:
    """A new agent with ``cfg``, whose policy heads are shaped otherwise (``ac.cnn_depth``, say): the source's
    world model, critic and counters, fresh heads and a fresh optimiser (the moments cannot follow reshaped
    weights; a head re-trained from fresh weights needs nothing else of the source)."""
    from reverie import Dreamer

    agent = Dreamer(cfg, first.learner.obs_space, first.learner.act_space)
    ours = agent.learner.state_dict()
    keep = {
        k: v
        for k, v in first.learner.state_dict().items()
        if not k.startswith(POLICY_HEADS) and k in ours and ours[k].shape == v.shape
    }
    missing = [k for k in ours if k not in keep and not k.startswith(POLICY_HEADS)]
    if missing:
        raise SystemExit(f"--set changes more than the policy heads ({missing[:3]}...): only heads can be re-trained.")
    agent.learner.load_state_dict(keep, strict=False)
    agent.counters.update(first.counters)
    return agent


def _rewound(first: Any, cfg: Any, job: dict[str, Any], src: Path, logdir: Path, total: int) -> tuple[Any, int]:
    """The agent to fit and its new update count: the source rewound to the start of RL (or of the BC phase with
    ``bc_steps``, its head re-trained from fresh weights with ``bc_reset``), or the rerun resumed from ``logdir``."""
    import torch

    from reverie import Dreamer
    from reverie.config import set_key
    from reverie.learner import Learner

    rl_start = int(round(total * (1.0 - cfg.offline.rl_frac)))
    restart = rl_start
    if job.get("bc_steps"):  # model phase | BC alone for bc_steps | RL for as many updates as the source
        restart = int(round(total * (1.0 - cfg.offline.rl_frac - cfg.offline.bc_frac)))
        rl_steps = 0 if job.get("no_rl") else total - rl_start
        total = restart + job["bc_steps"] + rl_steps
        set_key(cfg, "offline.rl_frac", str(rl_steps / total))
        set_key(cfg, "offline.bc_frac", str(job["bc_steps"] / total))
    with torch.random.fork_rng(devices=[]):  # only the shapes count here
        fresh_bc = Learner(cfg, first.learner.obs_space, first.learner.act_space).bc.state_dict()
    old_bc = first.learner.bc.state_dict()
    reshaped = fresh_bc.keys() != old_bc.keys() or any(v.shape != old_bc[k].shape for k, v in fresh_bc.items())
    if reshaped and not job.get("bc_reset"):
        raise SystemExit("--set reshapes the policy heads: re-train them from fresh weights with --bc-reset.")
    if (logdir / "checkpoint").exists():  # resume the rerun where it stopped; the phases' shares follow this job
        agent = Dreamer.load(logdir, config=cfg)  # (a --no-rl rerun goes on with RL when run again without it)
    else:
        agent = _transplant(first, cfg) if reshaped else Dreamer.load(src, config=cfg)
        agent.counters.update(offline_updates=restart, updates=restart, rl_started=0)
        if job.get("bc_reset"):
            torch.manual_seed(cfg.train.seed)
            learner = agent.learner
            fresh = Learner(cfg, learner.obs_space, learner.act_space).bc.state_dict()
            for param in learner.bc.parameters():
                learner.opt.state.pop(param, None)
            learner.bc.load_state_dict(fresh)
            if learner.bc_avg is not None:
                learner.bc_avg.load_state_dict(fresh)
    return agent, total


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    torch.set_num_threads(1)
    from reverie import Dreamer
    from reverie.config import set_key
    from reverie.data import Dataset
    from reverie.logger import read_jsonl

    src = Path(job["source"])
    logdir = src.with_name(f"{src.name}_rl_{job['tag']}")
    if job.get("from_rerun"):
        src = src.with_name(f"{src.name}_rl_{job['from_rerun']}")
    start = time.time()
    first = Dreamer.load(src)
    cfg = first.config
    set_key(cfg, "run.logdir", str(logdir))
    for item in job["extra"]:
        key, value = item.split("=", 1)
        set_key(cfg, key, value)
    total = first.counters["offline_updates"]
    out: dict[str, Any] = {**job}
    if job.get("more_rl"):  # the source's RL phase goes on: nothing rewinds, nothing resets
        if not first.counters["rl_started"]:
            raise SystemExit(f"{src} stopped before RL (a --no-rl re-run): nothing to go on from.")
        rl_updates = total - int(round(total * (1.0 - cfg.offline.rl_frac)))
        total += job["more_rl"]
        out["rl_updates"] = rl_updates + job["more_rl"]
        set_key(cfg, "offline.rl_frac", str(out["rl_updates"] / total))
        set_key(cfg, "offline.bc_frac", str(min(cfg.offline.bc_frac, 1.0 - cfg.offline.rl_frac)))
        agent = Dreamer.load(logdir if (logdir / "checkpoint").exists() else src, config=cfg)
    else:
        agent, total = _rewound(first, cfg, job, src, logdir, total)
    agent.fit(Dataset(dataset_path(job["obs"], job["episodes"], job["frac"], job["policy"])), steps=total)
    if not job.get("no_rl"):
        out["wm_bc_rl"] = _eval_summary(
            agent.evaluate(episodes=job["eval_episodes"], deterministic=False, head="actor", promise_every=25)
        )
    if job.get("bc_steps"):
        head = agent.evaluate(episodes=job["eval_episodes"], deterministic=False, head="bc", promise_every=25)
        out["wm_bc_head"] = _eval_summary(head)
        rows = [r for r in read_jsonl(logdir / "metrics.jsonl") if "offline/bc/accuracy" in r]
        out["bc_accuracy"] = rows[-1]["offline/bc/accuracy"] if rows else None
    out["wall_s"] = time.time() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs", default="symbolic", choices=list(ENV_IDS))
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--frac", type=float, default=1.0)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--policy", default="scripted", help="the recording player of the source runs (offline_crafter.py --policy)"
    )
    parser.add_argument("--source-tag", default="", help="the offline_crafter.py --tag of the agents")
    parser.add_argument("--tag", required=True, help="name of this RL variant (logdir suffix, results file)")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for the new RL phase")
    parser.add_argument(
        "--bc-steps", type=int, default=0, help="first train the BC head alone this many updates (offline.bc_frac)"
    )
    parser.add_argument(
        "--bc-reset", action="store_true", help="with --bc-steps: the head starts from fresh weights (see above)"
    )
    parser.add_argument(
        "--no-rl", action="store_true", help="with --bc-steps: stop after the head (run again without it to go on)"
    )
    parser.add_argument(
        "--from-rerun", default="", help="start from the agents offline_rl_phase.py --tag FROM_RERUN re-ran"
    )
    parser.add_argument(
        "--more-rl", type=int, default=0, help="with --from-rerun: this many more RL updates on the re-run's actor"
    )
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    if (args.bc_reset or args.no_rl) and not args.bc_steps:
        parser.error("--bc-reset and --no-rl re-train the head: give its updates with --bc-steps")
    if args.more_rl and (not args.from_rerun or args.bc_steps):
        parser.error("--more-rl goes on with RL from a re-run: give it --from-rerun (and no --bc-steps)")

    jobs = []
    for seed in args.seeds:
        src = run_dir(f"{args.obs}/{args.episodes}/{args.frac:g}", "wm", args.source_tag, seed)
        if not (src / "checkpoint").exists():
            raise SystemExit(f"No finished run at {src}: run offline_crafter.py with --tag {args.source_tag} first.")
        if args.from_rerun and not (src.with_name(f"{src.name}_rl_{args.from_rerun}") / "checkpoint").exists():
            raise SystemExit(f"No re-run of {src.name} tagged {args.from_rerun}: run offline_rl_phase.py first.")
        jobs.append(
            {
                "obs": args.obs,
                "episodes": args.episodes,
                "frac": args.frac,
                "seed": seed,
                "source": str(src),
                "tag": args.tag,
                "extra": args.set,
                "eval_episodes": args.eval_episodes,
                "bc_steps": args.bc_steps,
                "bc_reset": args.bc_reset,
                "no_rl": args.no_rl,
                "from_rerun": args.from_rerun,
                "more_rl": args.more_rl,
                "policy": args.policy,
            }
        )
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(run_job, jobs))
    source_file = RESULTS / f"offline_crafter{'_' + args.source_tag if args.source_tag else ''}.json"
    source = json.loads(source_file.read_text()) if source_file.exists() else {}
    key = f"{args.obs}/{args.episodes}/{args.frac:g}"
    before = source.get(key, {})
    out: dict[str, Any] = {
        "setting": key,
        "source_tag": args.source_tag,
        "overrides": args.set,
        "bc_steps": args.bc_steps,
        "bc_reset": args.bc_reset,
        "no_rl": args.no_rl,
        "from_rerun": args.from_rerun,
        "more_rl": args.more_rl,
        "seeds": {},
    }
    for row in rows:
        seed = row["seed"]
        entry = {k: row[k] for k in ("wm_bc_rl", "wm_bc_head", "bc_accuracy", "rl_updates", "wall_s") if k in row}
        for method in ("wm_bc_head", "wm_bc_rl"):
            seeds = before.get(method, {}).get("seeds", [])
            if seed in seeds:
                entry[f"source_{method}_score"] = before[method]["score"][seeds.index(seed)]
        out["seeds"][str(seed)] = entry
        head = f", BC head {entry['wm_bc_head']['score']:.2f}" if "wm_bc_head" in entry else ""
        actor = f"{entry['wm_bc_rl']['score']:.2f}" if "wm_bc_rl" in entry else "no RL"
        source = f"source BC head {entry.get('source_wm_bc_head_score')}, RL {entry.get('source_wm_bc_rl_score')}"
        print(f"seed {seed}: {actor}{head} ({source})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"offline_rl_phase_{args.tag}.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    table[key] = out
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=2))
    tmp.replace(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
