"""Offline Crafter: agents learned from recorded play alone, compared in the real game.

Two recipes, the published ones, one per observation kind (their settings are the lists ``SYMBOLIC`` and
``PIXELS`` below, applied after the ``offline`` preset, and for pixels ``cpu_cnn``). For each dataset size
(``--episodes``), action-label fraction (``--fracs``) and seed, these methods are fitted and played in the game:

* ``bc``: behaviour cloning on raw observations (:class:`reverie.baselines.BCPolicy`), method (a);
* ``bc_rw``: the same, each step weighted by the discounted return of the achievements that followed it;
* ``wm``: ``Dreamer.fit`` with the recipe, which gives three methods: ``wm_bc`` (BC on the world model's
  features, :class:`reverie.baselines.FeatureBC`, method (b)), ``wm_bc_head`` (the agent's own BC head) and
  ``wm_bc_rl`` (world model + BC prior + imagination RL, method (c));
* ``wm_tf`` (only when asked: ``--kinds wm_tf``): the same fit on the transformer world model
  (``model.kind=transformer``), methods ``wm_bc_tf``, ``wm_bc_head_tf`` and ``wm_bc_rl_tf`` ((c) on it, in the table).

Below full labels the unlabelled episodes are first labelled by an inverse-dynamics model on raw observations
(``reverie data label``; ``<dataset>-idm``), and every method also runs on that copy (``bc_relabel``,
``bc_rw_relabel``, ``wm_relabel``); plain ``bc`` and ``bc_rw`` there learn from the labelled episodes alone.

Datasets are recorded once (symbolic: the ``scripted-curious`` player, which also presses craft and place actions
that fail; pixels: ``scripted``), episodes cut at 500 steps; evaluation uses the same limit, 100 episodes with
sampled actions. Every (setting, seed, kind) job runs in its own process with one torch thread and is appended to
``benchmarks/runs/offline_crafter/recipe/jobs.jsonl``, so an interrupted run continues where it stopped. The
jobs are merged into ``benchmarks/results/offline_crafter.json`` (per ``<obs>/<episodes>/<frac>`` and method the
scores, returns and success rates per seed; below full labels the methods on the labelled copy stand for (a), (b),
(c) with ``source`` naming them, and plain (a) on the labelled episodes alone is ``bc_no_idm``), with
``offline_crafter.png`` and the table ``offline_crafter.md``. The cells already in that file count as finished:
``--redo`` runs them again (each finished job then replaces its published seed).

``--paired`` plays every method of a seed on the same worlds (env ``i`` seeded ``world seed + i``, one episode
each, 300 by default), since one 100-episode evaluation moves by about two points and the jobs above evaluate each
method on worlds of its own. Per seed it gives each method's score and its difference to (a) with a 90% bootstrap
interval over the worlds; below full labels, the share of the full-label score each method keeps on the same
worlds. It needs the jobs' agents (``runs/``) and refits a missing raw-BC policy; results go to
``benchmarks/results/offline_crafter_paired.json`` under the setting's key.

    python benchmarks/offline_crafter.py --obs symbolic --episodes 200 --fracs 1.0   # one cell, 3 seeds
    python benchmarks/offline_crafter.py --obs symbolic pixels --episodes 50 200 1000 --data-only  # record, label
    python benchmarks/offline_crafter.py --obs pixels --fracs 1.0 --paired           # the same 300 worlds
    python benchmarks/offline_crafter.py --obs pixels --fracs 1.0 --kinds wm_tf      # (c) on the transformer
    python benchmarks/offline_crafter.py --no-run                                    # rebuild JSON, plot, table
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent / "runs" / "offline_crafter"
JOBS = ROOT / "recipe"  # run folders, saved policies and the job files of the two recipes
ENV_IDS = {"symbolic": "crafter-symbolic", "pixels": "crafter"}
PRESETS = {"symbolic": ["offline"], "pixels": ["offline", "cpu_cnn"]}
PLAYERS = {"symbolic": "scripted-curious", "pixels": "scripted"}  # who records each kind's datasets
WEIGHTED = ["offline.bc_return_temp=1.0", "offline.bc_return_discount=0.97", "offline.bc_return_min_reward=0.5"]
# Symbolic: a policy on the observation alone, the world model its simulator of observations with the grid codec
# that pictures each observation from the one before; 1,350 model, 3,000 BC-alone and 450 RL updates; RL held to the
# BC prior by a KL of 1 on imagined and recorded states; BC weighted by the achievements' return in every phase.
SYMBOLIC = [
    *("model.units=256", "model.hidden=256", "model.classes=16", "model.vector_codec=crafter_grid_delta"),
    *("ac.units=256", "ac.prior_kl=1.0", "ac.input=obs", "optim.lr=1e-3", "train.batch_length=32"),
    *("offline.steps=4800", "offline.bc_frac=0.625", "offline.rl_frac=0.09375", "offline.pessimism=cut"),
    "offline.data_prior_kl=1.0",
    *WEIGHTED,
]
# Pixels: the policy reads the frame alone through its own CNN, twice as wide as the model's; 1,350 model (the head
# learning alongside), 600 head-alone and 450 RL updates; the head's moving average plays and becomes the prior,
# RL is held to it by KL weights of 3; 64 imagined rollout starts (every imagined step is decoded and read).
PIXELS = [
    *("model.units=256", "model.hidden=256", "model.classes=16"),
    *("ac.units=256", "ac.prior_kl=3.0", "ac.input=obs", "ac.cnn_depth=8", "optim.lr=1e-3", "train.batch_length=32"),
    *("offline.steps=2400", "offline.bc_frac=0.25", "offline.rl_frac=0.1875", "offline.pessimism=cut"),
    *("offline.data_prior_kl=3.0", "offline.imag_starts=64", "offline.bc_ema=0.995"),
    *WEIGHTED,
]
RECIPES = {"symbolic": SYMBOLIC, "pixels": PIXELS}
BC = {"steps": 3000, "layers": 2, "return_temp": 1.0, "return_discount": 0.97, "return_min_reward": 0.5}
TIME_LIMIT, IDM_STEPS = 500, 5000
# Paired worlds: the pixel recipe's head width and KL were chosen on worlds 500,000-500,299, so its paired
# evaluation uses fresh ones.
WORLD_SEEDS = {"symbolic": 500_000, "pixels": 600_000}
RAW_BC_KINDS = ("bc", "bc_rw", "bc_relabel", "bc_rw_relabel")
METHODS = (
    *RAW_BC_KINDS,
    *("wm_bc", "wm_bc_head", "wm_bc_rl", "wm_bc_relabel", "wm_bc_head_relabel", "wm_bc_rl_relabel"),
    *("wm_bc_tf", "wm_bc_head_tf", "wm_bc_rl_tf"),  # the same recipe on the transformer world model (wm_tf jobs)
)
TABLE_COLUMNS = {
    "bc": "(a) BC raw obs",
    "bc_rw": "return-weighted (a)",
    "wm_bc": "(b) BC on features",
    "wm_bc_head": "BC head",
    "wm_bc_rl": "(c) model + BC + RL",
    "wm_bc_rl_tf": "(c) on the transformer",
}


def dataset_path(obs: str, episodes: int, frac: float) -> Path:
    """``<obs>-<episodes>-a<frac>``, with ``-curious`` for the ``scripted-curious`` player's recordings."""
    suffix = "" if PLAYERS[obs] == "scripted" else "-" + PLAYERS[obs].removeprefix("scripted-")
    return ROOT / "data" / f"{obs}-{episodes}-a{frac:g}{suffix}"


def relabelled(folder: Path) -> Path:
    """The copy of a partially labelled dataset whose missing actions inverse dynamics filled in."""
    return folder.with_name(folder.name + "-idm")


def job_data(obs: str, episodes: int, frac: float, kind: str) -> Path:
    """The dataset a job learns from: the labelled copy for ``*_relabel`` kinds, the recorded one otherwise."""
    folder = dataset_path(obs, episodes, frac)
    return relabelled(folder) if kind.endswith("_relabel") else folder


def job_dir(key: str, kind: str, seed: int) -> Path:
    """An agent's run folder or a raw-BC policy's: ``<obs>_<episodes>_<frac>_<kind>_s<seed>``."""
    return JOBS / ("runs" if kind.startswith("wm") else "policies") / f"{key.replace('/', '_')}_{kind}_s{seed}"


def prepare_data(obs: str, episodes: int, fracs: list[float]) -> dict[str, Any]:
    """Record the fully labelled dataset (once), its label-dropped copies and their inverse-dynamics-labelled
    copies; returns the recording's seconds (``record_s``) and the labelling reports (``idm``) of what it made."""
    from reverie.baselines import InverseDynamics
    from reverie.data import Dataset, record, rewrite

    def unfinished(folder: Path) -> bool:
        if (folder / "dataset.json").exists():
            return False
        if folder.exists():  # an interrupted run left it half written
            shutil.rmtree(folder)
        return True

    out: dict[str, Any] = {"idm": {}}
    full = dataset_path(obs, episodes, 1.0)
    if unfinished(full):
        start = time.time()
        record(ENV_IDS[obs], PLAYERS[obs], episodes, full, seed=0, time_limit=TIME_LIMIT)
        out["record_s"] = time.time() - start
    for frac in (f for f in fracs if f < 1):
        path = dataset_path(obs, episodes, frac)
        if unfinished(path):
            rewrite(full, path, action_frac=frac, seed=0)
        if unfinished(relabelled(path)):
            start, source = time.time(), Dataset(path)
            idm = InverseDynamics(source.obs_space, source.act_space, seed=0)
            _, report = idm.label(source, relabelled(path), steps=IDM_STEPS)
            out["idm"][path.name] = {**report, "label_s": time.time() - start}
    return out


def _eval_summary(metrics: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "score": metrics.get("eval/score"),
        "return": metrics.get("eval/return"),
        "success": {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("eval/success/")},
    }
    for key in ("promised_return", "real_return_h", "promise_gap", "promise_abs_gap"):
        if f"eval/{key}" in metrics:
            out[key] = metrics[f"eval/{key}"]
    return out


def fit_bc(obs: str, episodes: int, frac: float, kind: str, seed: int) -> tuple[Any, dict[str, float]]:
    """A raw-observation BC policy of ``kind`` fitted with the recipe's settings (seeded), and its fit report."""
    from reverie.baselines import BCPolicy
    from reverie.data import Dataset

    data = Dataset(job_data(obs, episodes, frac, kind))
    policy = BCPolicy(data.obs_space, data.act_space["action"], layers=BC["layers"], seed=seed)
    weights = {k: v for k, v in BC.items() if k.startswith("return_")} if kind.startswith("bc_rw") else {}
    return policy, policy.fit(data, steps=BC["steps"], **weights)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One (setting, seed, kind) job in a fresh process; returns its row: the job and each method's summary."""
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    torch.set_num_threads(1)
    from reverie import Dreamer, make_config
    from reverie.baselines import FeatureBC
    from reverie.data import Dataset

    obs, episodes, frac, kind, seed = job["obs"], job["episodes"], job["frac"], job["kind"], job["seed"]
    env_id, n, eval_seed = ENV_IDS[obs], job["eval_episodes"], 100_000 + 1000 * seed
    start, out = time.time(), dict(job)
    if kind in RAW_BC_KINDS:
        policy, out["fit"] = fit_bc(obs, episodes, frac, kind, seed)
        policy.save(job_dir(job["key"], kind, seed))  # for --paired
        out[kind] = _eval_summary(policy.evaluate(env_id, n, eval_seed, TIME_LIMIT))
    else:
        logdir = job_dir(job["key"], kind, seed)
        overrides = [*RECIPES[obs], f"run.logdir={logdir}", f"train.seed={seed}", f"env.time_limit={TIME_LIMIT}"]
        overrides += ["run.eval_episodes=0", "run.progress=false", "run.tensorboard=false"]
        overrides += ["model.kind=transformer"] if kind.startswith("wm_tf") else []
        agent = (
            Dreamer.load(logdir) if (logdir / "checkpoint").exists() else Dreamer(make_config(PRESETS[obs], overrides))
        )
        data = Dataset(job_data(obs, episodes, frac, kind))
        agent.fit(data)  # resumable: the total is offline.steps
        out["fit_s"] = time.time() - start
        suffix = kind.removeprefix("wm")
        for head, method in (("actor", "wm_bc_rl"), ("bc", "wm_bc_head")):
            metrics = agent.evaluate(episodes=n, deterministic=False, head=head, promise_every=25)
            out[method + suffix] = _eval_summary(metrics)
        features = FeatureBC(agent, data.act_space["action"], seed=seed)  # (b) on this model, from its labels
        features.fit(data, steps=BC["steps"])
        out["wm_bc" + suffix] = _eval_summary(features.evaluate(env_id, n, eval_seed, TIME_LIMIT))
    out["wall_s"] = time.time() - start
    return out


# --- results: job rows <-> the published layout --------------------------------------------------------------


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows -> ``{"<obs>/<episodes>/<frac>": {method: {"seeds", "score", "return", "success", ...}, "wall_s"}}``;
    where two rows hold one (setting, method, seed), the later row's counts."""
    latest = {(row["key"], method, row["seed"]): i for i, row in enumerate(rows) for method in METHODS if method in row}
    table: dict[str, Any] = {}
    for i in sorted(set(latest.values()), key=lambda i: (rows[i]["key"], rows[i]["seed"], i)):
        row = rows[i]
        entry = table.setdefault(row["key"], {})
        for method in (m for m in METHODS if latest.get((row["key"], m, row["seed"])) == i):
            res = entry.setdefault(method, {"seeds": [], "score": [], "return": [], "success": {}})
            res["seeds"].append(row["seed"])
            res["score"].append(row[method]["score"])
            res["return"].append(row[method]["return"])
            for name, rate in row[method]["success"].items():
                res["success"].setdefault(name, []).append(rate)
            for name in ("promise_gap", "promised_return", "real_return_h"):
                if name in row[method]:
                    res.setdefault(name, []).append(row[method][name])
        entry.setdefault("wall_s", {})[f"{row['kind']}_s{row['seed']}"] = row["wall_s"]
    return table


def published(table: dict[str, Any]) -> dict[str, Any]:
    """The aggregated table in the published layout: below full labels the ``*_relabel`` method stands for its
    plain name (with ``source``) and the plain one, where it ran too, becomes ``<method>_no_idm``."""
    result: dict[str, Any] = {}
    order = sorted(table, key=lambda k: (k.split("/")[0], int(k.split("/")[1]), -float(k.split("/")[2])))
    for key in order:
        entry, out = table[key], {}
        full = float(key.rsplit("/", 1)[1]) >= 1.0
        for method in TABLE_COLUMNS:
            name = method + "_relabel" if not full and method + "_relabel" in entry else method
            if name in entry:
                out[method] = {**entry[name], "source": name} if name != method else entry[name]
            if name != method and method in entry:
                out[method + "_no_idm"] = entry[method]
        out |= {m: entry[m] for m in METHODS if m.endswith("_tf") and m in entry}  # (b) and head on the transformer
        result[key] = {**out, "wall_s": entry.get("wall_s", {})}
    return result


def kind_of(method: str, seed: int, wall: dict[str, float]) -> str:
    """The job kind whose row holds ``method`` (``wm_feat``: (b) fitted by an earlier version in a job of its own)."""
    if method in RAW_BC_KINDS:
        return method
    suffix = next((s for s in ("_relabel", "_tf") if method.endswith(s)), "")
    if method.startswith(("wm_bc_rl", "wm_bc_head")) or f"wm_feat_s{seed}" not in wall:
        return "wm" + suffix
    return "wm_feat"


def rows_from_published(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Job rows back from the published file (the inverse of ``published(aggregate(rows))``), marked
    ``recovered``: the rows keep what the file holds (scores, successes, promises, wall time)."""
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for key, entry in result.items():
        if key == "meta":
            continue
        wall = entry.get("wall_s", {})
        for job, wall_s in wall.items():  # in the order the jobs finished, as aggregate lists them
            kind, _, seed = job.rpartition("_s")
            rows[(key, kind, int(seed))] = {"key": key, "kind": kind, "seed": int(seed), "wall_s": wall_s}
        for name, res in entry.items():
            if name == "wall_s":
                continue
            method = name.removesuffix("_no_idm") if name.endswith("_no_idm") else res.get("source", name)
            for i, seed in enumerate(res["seeds"]):
                kind = kind_of(method, seed, wall)
                row = rows.setdefault((key, kind, seed), {"key": key, "kind": kind, "seed": seed, "wall_s": 0.0})
                row[method] = {
                    "score": res["score"][i],
                    "return": res["return"][i],
                    "success": {k: rates[i] for k, rates in res["success"].items()},
                    **{k: res[k][i] for k in ("promise_gap", "promised_return", "real_return_h") if k in res},
                }
    return [{**row, "recovered": True} for row in rows.values()]


def markdown_table(result: dict[str, Any]) -> str:
    """The grid as a Markdown table: per setting and method the mean Crafter score over the seeds, the seeds'
    scores, ``†`` where the methods learned from the inverse-dynamics-labelled copy, ``-`` where none ran."""
    lines = ["| setting | " + " | ".join(TABLE_COLUMNS.values()) + " |", "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for key in (k for k in result if k != "meta"):
        cells = []
        for method in TABLE_COLUMNS:
            entry = result[key].get(method, {})
            scores = [s for s in entry.get("score", []) if s is not None]
            seeds = " / ".join(f"{s:.2f}" for s in scores)
            mark = " †" if entry.get("source", "").endswith("_relabel") else ""
            cells.append(f"**{sum(scores) / len(scores):.2f}** ({seeds}){mark}" if scores else "-")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in result if k != "meta"]
    methods = [m for m in TABLE_COLUMNS if any(m in result[k] for k in keys)]
    fig = Figure(figsize=(max(6, 2.2 * len(keys)), 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(methods))
    for m, method in enumerate(methods):
        for k, key in enumerate(keys):
            scores = [s for s in result[key].get(method, {}).get("score", []) if s is not None]
            if scores:
                x = k + (m - (len(methods) - 1) / 2) * width
                ax.bar(x, sum(scores) / len(scores), width, color=f"C{m}", label=method if k == 0 else None)
                ax.scatter([x] * len(scores), scores, color="k", s=8, zorder=3)
    ax.set_xticks(range(len(keys)), keys, rotation=15)
    ax.set_ylabel("Crafter score (%)")
    ax.set_title("Offline Crafter from scripted play: mean over seeds (dots: seeds)")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_results(rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Aggregate the rows (published ones first) into ``offline_crafter.json``, its plot and table (atomically)."""
    from reverie.fileio import write_text

    pixel = [r for r in rows if (r["key"], r["kind"], r["seed"]) == ("pixels/200/1", "wm", 0) and "recovered" not in r]
    if pixel and "pixels/200" in meta.get("record_s", {}):
        meta["pixel_pipeline_200_minutes"] = (meta["record_s"]["pixels/200"] + pixel[-1]["wall_s"]) / 60
    result = {**published(aggregate(rows)), "meta": meta}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / "offline_crafter.json", json.dumps(result, indent=1))
    write_text(RESULTS / "offline_crafter.md", markdown_table(result))
    plot(result, RESULTS / "offline_crafter.png")
    return result


# --- paired evaluation: every method of a seed on the same worlds --------------------------------------------

AGENT_METHODS = {"wm_bc_head": "bc", "wm_bc_rl": "actor"}  # method -> the agent's head that plays it


def _unlocked(finals: list[dict[str, Any]]) -> np.ndarray:
    """(E, 22) 0/1: which achievements each episode unlocked."""
    from reverie.crafter.score import ACHIEVEMENTS, LOG_PREFIX

    return np.array([[float(f.get(LOG_PREFIX + name, 0) > 0) for name in ACHIEVEMENTS] for f in finals])


def score(unlocked: np.ndarray) -> float:
    """The Crafter score of an (E, 22) unlocked matrix."""
    from reverie.crafter.score import crafter_score

    return crafter_score((100.0 * unlocked.mean(0)).tolist())


def play(job: dict[str, Any]) -> dict[str, Any]:
    """Play one method of one seed on the job's worlds; returns the job with ``unlocked`` and ``returns``."""
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(job["world_seed"])
    from reverie.config import EnvConfig
    from reverie.envs import make_batch_env
    from reverie.evaluation import run_episodes

    start, method, key, seed = time.time(), job["method"], job["key"], job["seed"]
    obs, episodes, frac = key.split("/")[0], int(key.split("/")[1]), float(key.split("/")[2])
    env_cfg = EnvConfig(id=ENV_IDS[obs], num_envs=job["episodes"], parallel=False, time_limit=TIME_LIMIT)
    if method in RAW_BC_KINDS:
        folder = job_dir(key, method, seed)
        if (folder / "meta.json").exists():
            from reverie.baselines import BCPolicy

            policy = BCPolicy.load(folder)
        else:  # a published cell whose policy was not kept: the same seeded fit again
            policy, _ = fit_bc(obs, episodes, frac, method, seed)
            policy.save(folder)

        def act_fn(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
            return policy.act(obs, deterministic=False)

    else:
        from reverie import Dreamer

        agent = Dreamer.load(job["run"])
        learner, head, state = agent.learner, AGENT_METHODS[method.removesuffix("_relabel")], None

        def act_fn(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
            nonlocal state  # learner.policy resets an env's state at obs["is_first"]
            with torch.no_grad():
                action, state, _ = learner.policy(obs, state, False, head)  # type: ignore[arg-type]
            return action

    envs = make_batch_env(env_cfg, job["world_seed"])
    try:
        results = run_episodes(envs, act_fn, job["episodes"])
    finally:
        envs.close()
    unlocked = _unlocked(results.finals).astype(int).tolist()
    return {**job, "unlocked": unlocked, "returns": results.returns.tolist(), "wall_s": time.time() - start}


def summarise(rows: list[dict[str, Any]], resamples: int = 1000) -> dict[str, Any]:
    """Per seed each method's score and return and, against (a) on the same worlds, the score difference with a
    90% bootstrap interval (the worlds resampled, the same draw for both); across seeds the scores and (a)'s spread."""
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
            if method != "bc" and "bc" in methods and len(methods["bc"]["unlocked"]) == len(unlocked):
                base = np.array(methods["bc"]["unlocked"], float)
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
    """Per seed, each ``*_relabel`` method's score over the same method's with all labels on the same worlds, with
    a 90% bootstrap interval: the share of the full-label score that the label fraction keeps."""
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


def paired(key: str, seeds: list[int], episodes: int, world_seed: int, workers: int) -> None:
    """Play every method of ``key``'s seeds on the same worlds; write the summary when all seeds are done."""
    from reverie.fileio import write_text
    from reverie.logger import read_jsonl

    full = float(key.rsplit("/", 1)[1]) >= 1
    methods = ["bc", "bc_rw", "wm_bc_head", "wm_bc_rl"] if full else ["bc_relabel", "bc_rw_relabel"]
    methods += [] if full else ["wm_bc_head_relabel", "wm_bc_rl_relabel"]
    rows_file = JOBS / "paired.jsonl"
    same = [r for r in (read_jsonl(rows_file) if rows_file.exists() else []) if r["episodes"] == episodes]
    same = [r for r in same if r["world_seed"] == world_seed]
    rows = [r for r in same if r["key"] == key and r["seed"] in seeds]
    done = {(r["seed"], r["method"]) for r in rows}
    jobs, missing = [], []
    for seed, method in ((s, m) for s in seeds for m in methods if (s, m) not in done):
        job = {"key": key, "seed": seed, "method": method, "episodes": episodes, "world_seed": world_seed}
        if method not in RAW_BC_KINDS:
            kind = "wm_relabel" if method.endswith("_relabel") else "wm"
            job["run"] = str(job_dir(key, kind, seed))
            if not (Path(job["run"]) / "checkpoint").exists():
                missing.append(job["run"])
                continue
        jobs.append(job)
    print(f"{key}: {len(jobs)} evaluations to run ({len(done)} done)", flush=True)
    with ProcessPoolExecutor(workers) as pool:
        for future in as_completed([pool.submit(play, job) for job in jobs]):
            row = future.result()
            rows.append(row)
            with rows_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"{key} seed {row['seed']} {row['method']}: {score(np.array(row['unlocked'], float)):.2f}", flush=True
            )
    if missing or len(rows) < len(seeds) * len(methods):
        print(f"{key}: no summary written; agents not fitted yet: {', '.join(missing) or '-'}", flush=True)
        return
    summary = summarise(rows)
    summary["settings"] = {"key": key, "episodes": episodes, "world_seed": world_seed}
    if not full:
        full_key = key.rsplit("/", 1)[0] + "/1"
        ratios = label_ratio(rows, [r for r in same if r["key"] == full_key and r["seed"] in seeds])
        if ratios:
            summary["of_full_labels"] = ratios
    path = RESULTS / "offline_crafter_paired.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result[key] = summary
    write_text(path, json.dumps(result, indent=1) + "\n")
    for seed, entry in summary["seeds"].items():
        cells = [
            f"{m} {r['score']:.2f}" + (f" ({r['minus_bc']:+.2f})" if "minus_bc" in r else "") for m, r in entry.items()
        ]
        print(f"{key} seed {seed}: " + "; ".join(cells))


# --- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs", nargs="+", default=["symbolic", "pixels"], choices=list(ENV_IDS))
    parser.add_argument("--episodes", nargs="+", type=int, default=[200], help="recorded episodes per dataset")
    parser.add_argument("--fracs", nargs="+", type=float, default=[1.0, 0.1], help="shares of labelled episodes")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=["wm", "bc", "bc_rw"], choices=["wm", "bc", "bc_rw", "wm_tf"])
    parser.add_argument("--eval-episodes", type=int, default=100, help="evaluation episodes of each method")
    parser.add_argument("--workers", type=int, default=2, help="processes (pixels at 1,000 episodes: ~6 GB each)")
    parser.add_argument("--data-only", action="store_true", help="only record and label the datasets")
    parser.add_argument("--no-run", action="store_true", help="only rebuild the JSON, plot and table")
    parser.add_argument("--redo", action="store_true", help="run the cells already published again")
    parser.add_argument("--paired", action="store_true", help="play each setting's methods on the same worlds")
    parser.add_argument("--paired-episodes", type=int, default=300, help="--paired: worlds (one episode each)")
    parser.add_argument(
        "--world-seed",
        type=int,
        default=0,
        help="--paired: env i is seeded this + i (0: 500,000 for symbolic, 600,000 for pixels)",
    )
    args = parser.parse_args()
    from reverie.fileio import write_text
    from reverie.logger import read_jsonl

    if args.paired:
        for obs in args.obs:
            world_seed = args.world_seed or WORLD_SEEDS[obs]
            for key in (f"{obs}/{e}/{f:g}" for e in args.episodes for f in sorted(args.fracs, reverse=True)):
                paired(key, args.seeds, args.paired_episodes, world_seed, args.workers)
        return
    JOBS.mkdir(parents=True, exist_ok=True)
    jobs_file, meta_file, results_file = JOBS / "jobs.jsonl", ROOT / "meta.json", RESULTS / "offline_crafter.json"
    old = json.loads(results_file.read_text()) if results_file.exists() else {}
    rows = rows_from_published(old) + (read_jsonl(jobs_file) if jobs_file.exists() else [])  # a cut line: run again
    meta: dict[str, Any] = {**old.get("meta", {})}
    meta.setdefault("record_s", {}), meta.setdefault("idm", {})
    done = {(r["key"], r["kind"], r["seed"]) for r in rows if not (args.redo and r.get("recovered"))}
    jobs = []
    for obs in [] if args.no_run else args.obs:
        for episodes in args.episodes:
            made = prepare_data(obs, episodes, args.fracs)
            if meta_file.exists():  # what another invocation recorded meanwhile
                local = json.loads(meta_file.read_text())
                for section in ("record_s", "idm"):
                    meta[section] = {**local.get(section, {}), **meta.get(section, {})}
            meta["idm"].update(made["idm"])
            if "record_s" in made:
                name = f"{obs}/{episodes}" + ("" if PLAYERS[obs] == "scripted" else f"/{PLAYERS[obs]}")
                meta["record_s"][name] = made["record_s"]
            write_text(meta_file, json.dumps({s: meta[s] for s in ("record_s", "idm")}, indent=1))
            for frac in [] if args.data_only else args.fracs:
                key = f"{obs}/{episodes}/{frac:g}"
                kinds = list(args.kinds) + ([] if frac >= 1 else [k + "_relabel" for k in args.kinds])
                for seed, kind in ((s, k) for s in args.seeds for k in kinds if (key, k, s) not in done):
                    job = {"key": key, "obs": obs, "episodes": episodes, "frac": frac, "seed": seed, "kind": kind}
                    jobs.append({**job, "eval_episodes": args.eval_episodes})
    if args.data_only:
        return
    print(f"{len(jobs)} jobs to run ({len(done)} done)", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        for future in as_completed([pool.submit(run_job, job) for job in jobs]):
            row = future.result()
            rows.append(row)
            with jobs_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            scores = {m: round(row[m]["score"], 2) for m in METHODS if m in row}
            print(f"{row['key']} seed {row['seed']} {row['kind']}: {scores} ({row['wall_s'] / 60:.1f} min)", flush=True)
            write_results(rows, meta)
    if rows:
        write_results(rows, meta)
        print(f"wrote {results_file}")


if __name__ == "__main__":
    main()
