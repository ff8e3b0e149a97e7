"""Offline Crafter with named variants (``--tag``): the research version of ``benchmarks/offline_crafter.py``.

This is ``benchmarks/offline_crafter.py`` as it was before the product benchmark kept only the two published
recipes: every variant of ``research/notes/offline_crafter.md`` ran through it (``--tag``, ``--preset``, ``--set``,
``--bc-from``, ``--publish``). It reads and writes ``research/runs/offline_crafter`` and ``research/results``, and
uses config keys and presets that no longer exist (see ``research/README.md``).

Agents learned from scripted-player recordings alone, compared in the real game.

For each observation kind (symbolic, pixels), dataset size (episodes) and action-label fraction:

* ``bc``: behaviour cloning on raw observations (:class:`reverie.baselines.BCPolicy`);
* ``bc_rw`` (``--kinds bc_rw``): the same, return-weighted (``BCPolicy.fit(return_temp=...)``,
  ``--bc-return-temp``, ``--bc-return-discount`` and ``--bc-return-min-reward``): what weighting imitation by
  the recorded returns gives without a world model;
* ``wm_bc``: behaviour cloning on the world model's features (:class:`reverie.baselines.FeatureBC` over
  ``agent.encode``), the model trained by ``Dreamer.fit``;
* ``wm_bc_rl``: world model + BC prior + imagination RL (``Dreamer.fit``, PMPO + KL to the prior);
* ``wm_bc_rl_idm`` (label fractions < 1, with ``--idm``): the same with inverse-dynamics labels instead
  of the no-action input.
* ``wm_bc_rl_relabel`` (label fractions < 1, with ``--idm-data``): the same on a copy of the dataset whose
  unlabelled episodes were labelled beforehand by :class:`reverie.baselines.InverseDynamics` (an
  inverse-dynamics model on raw observations, trained on the labelled episodes; ``<dataset>-idm``);
  ``wm_bc_head_relabel`` is its BC head, ``wm_bc_relabel`` BC on its model's features and those labels. The
  labelling's held-out accuracy and time go to ``meta``.
* ``bc_relabel``, ``bc_rw_relabel`` (label fractions < 1): ``bc`` and ``bc_rw`` on that labelled copy (plain
  ``bc`` below full labels learns from the labelled episodes alone): the inverse-dynamics labelling without a
  world model (VPT's recipe), the baseline the ``*_relabel`` agents are compared with.
* ``wm_feat``: only (b), fitted on the model of a finished ``wm`` job (``wm_relabel`` below full labels) whose
  row lacks it (rows of an earlier version of this script); the agent is loaded, not trained further.

Datasets are recorded once with the scripted player (``--policy``; episodes cut at ``--time-limit``
steps; evaluation uses the same limit) and the partially labelled ones are copies with actions dropped.
Every (setting, seed) job runs in its own process with one torch thread; finished jobs are kept in
``research/runs/offline_crafter/jobs.jsonl``, so an interrupted run continues where it stopped; without that
file (a fresh clone) the jobs of the results JSON count as finished, so a grid goes on from its published results.
Writes ``research/results/offline_crafter.json`` and ``offline_crafter.png``.

    python research/offline_crafter_tagged.py                                   # the acceptance set
    python research/offline_crafter_tagged.py --obs symbolic --episodes 50 200 --fracs 1.0 --seeds 0
    python research/offline_crafter_tagged.py --obs symbolic --fracs 1.0 --kinds wm --tag preset \
        --preset offline_crafter_symbolic --eval-episodes 50        # the symbolic agents' settings
    python research/offline_crafter_tagged.py --obs pixels --fracs 1.0 --kinds wm bc bc_rw --tag weighted \
        --preset offline_crafter_pixels offline_crafter_weighted --bc-return-temp 1 --bc-return-discount 0.97 \
        --bc-return-min-reward 0.5 --eval-episodes 100              # pixels, BC weighted by the achievements
    python research/offline_crafter_tagged.py --obs pixels --episodes 50 1000 --idm-data --data-only  # record, label
    python research/offline_crafter_tagged.py --publish symbolic=curious_ach pixels=px_preset2  # the canonical JSON
    python research/offline_crafter_tagged.py --obs pixels --fracs 1.0 --kinds bc bc_rw --tag new --bc-from weighted \
        --bc-return-min-reward 0.5 --eval-episodes 100              # the same baselines under a new tag, not refitted
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

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent / "runs" / "offline_crafter"
ENV_IDS = {"symbolic": "crafter-symbolic", "pixels": "crafter"}
PRESETS = {"symbolic": ["offline"], "pixels": ["offline", "cpu_cnn"]}
RAW_BC_KINDS = ("bc", "bc_rw", "bc_relabel", "bc_rw_relabel")  # jobs that fit a BCPolicy on raw observations
METHODS = (
    "bc",
    "bc_rw",
    "bc_relabel",
    "bc_rw_relabel",
    "wm_bc",
    "wm_bc_head",
    "wm_bc_rl",
    "wm_bc_rl_idm",
    "wm_bc_relabel",
    "wm_bc_head_relabel",
    "wm_bc_rl_relabel",
)


def dataset_path(obs: str, episodes: int, frac: float, policy: str = "scripted") -> Path:
    """``<obs>-<episodes>-a<frac>``, with ``-curious`` for the ``scripted-curious`` player's recordings."""
    suffix = "" if policy == "scripted" else "-" + policy.removeprefix("scripted-")
    return ROOT / "data" / f"{obs}-{episodes}-a{frac:g}{suffix}"


def relabelled(folder: Path) -> Path:
    """The copy of a partially labelled dataset that :class:`reverie.baselines.InverseDynamics` labelled."""
    return folder.with_name(folder.name + "-idm")


def job_data(job: dict[str, Any]) -> Path:
    """The dataset a job (or its finished row) learns from: the inverse-dynamics-labelled copy for ``*_relabel``
    kinds and for ``wm_feat`` below full labels (whose agent learned from it), the recorded one otherwise."""
    folder = dataset_path(job["obs"], job["episodes"], job["frac"], job.get("policy", "scripted"))
    copy = job["kind"].endswith("_relabel") or (job["kind"] == "wm_feat" and job["frac"] < 1)
    return relabelled(folder) if copy else folder


def run_dir(key: str, kind: str, tag: str, seed: int) -> Path:
    """The run folder of one world-model job: ``<obs>_<episodes>_<frac>_<kind>[_<tag>]_s<seed>``."""
    suffix = f"_{tag}" if tag else ""
    return ROOT / "runs" / f"{key.replace('/', '_')}_{kind}{suffix}_s{seed}"


def policy_dir(key: str, kind: str, tag: str, seed: int) -> Path:
    """Where a raw-observation BC job saves its policy: ``policies/<obs>_<episodes>_<frac>_<kind>[_<tag>]_s<seed>``."""
    suffix = f"_{tag}" if tag else ""
    return ROOT / "policies" / f"{key.replace('/', '_')}_{kind}{suffix}_s{seed}"


def prepare_data(
    obs: str, episodes: int, fracs: list[float], time_limit: int, policy: str = "scripted", idm_steps: int = 0
) -> dict[str, Any]:
    """Record the fully labelled dataset (once), its label-dropped copies and (``idm_steps`` > 0) their
    inverse-dynamics-labelled copies; returns seconds spent (``record_s``) and the labelling reports (``idm``)."""
    from reverie.data import Dataset, record, rewrite

    def unfinished(folder: Path) -> bool:
        """True where ``folder`` holds no finished dataset; what an interrupted run left there is removed."""
        if (folder / "dataset.json").exists():
            return False
        if folder.exists():
            print(f"{folder} holds an unfinished dataset (an interrupted run): writing it again", flush=True)
            shutil.rmtree(folder)
        return True

    times: dict[str, Any] = {}
    full = dataset_path(obs, episodes, 1.0, policy)
    if unfinished(full):
        start = time.time()
        record(ENV_IDS[obs], policy, episodes, full, seed=0, time_limit=time_limit)
        times["record_s"] = time.time() - start
    for frac in fracs:
        path = dataset_path(obs, episodes, frac, policy)
        if frac < 1.0 and unfinished(path):
            rewrite(full, path, action_frac=frac, seed=0)
        if frac < 1.0 and idm_steps and unfinished(relabelled(path)):
            from reverie.baselines import InverseDynamics

            start = time.time()
            source = Dataset(path)
            idm = InverseDynamics(source.obs_space, source.act_space, seed=0)
            _, report = idm.label(source, relabelled(path), steps=idm_steps)
            times.setdefault("idm", {})[path.name] = {**report, "label_s": time.time() - start}
    return times


def bc_weighting(job: dict[str, Any]) -> dict[str, float]:
    """``BCPolicy.fit``'s return-weighting arguments of a raw BC job (none for plain ``bc``)."""
    if job["kind"] not in ("bc_rw", "bc_rw_relabel"):
        return {}
    return {
        "return_temp": job["bc_return_temp"],
        "return_discount": job["bc_return_discount"],
        "return_min_reward": job.get("bc_return_min_reward", 0.0),
    }


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


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One (setting, seed, kind) job in a fresh process: ``kind`` is ``bc`` or ``wm`` (or ``wm_idm``,
    ``wm_relabel``)."""
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    torch.set_num_threads(1)
    from reverie import Dreamer, make_config
    from reverie.baselines import BCPolicy
    from reverie.data import Dataset

    obs, seed, kind, limit = job["obs"], job["seed"], job["kind"], job["time_limit"]
    source = ("wm_relabel" if job["frac"] < 1 else "wm") if kind == "wm_feat" else kind
    data = Dataset(job_data(job))
    env_id, episodes = ENV_IDS[obs], job["eval_episodes"]
    eval_seed = 100_000 + 1000 * seed
    start = time.time()
    out: dict[str, Any] = {**job}
    if kind in RAW_BC_KINDS:
        policy = BCPolicy(data.obs_space, data.act_space["action"], layers=job.get("bc_layers", 2), seed=seed)
        out["fit"] = policy.fit(data, steps=job["bc_steps"], **bc_weighting(job))
        policy.save(policy_dir(job["key"], kind, job.get("tag", ""), seed))  # for offline_paired_eval.py
        out[kind] = _eval_summary(policy.evaluate(env_id, episodes, eval_seed, limit))
    elif kind == "wm_feat":  # (b) on a finished agent's model, which stays as it is
        agent = Dreamer.load(run_dir(job["key"], source, job.get("tag", ""), seed))
        suffix = "_relabel" if source == "wm_relabel" else ""
        out["wm_bc" + suffix] = feature_bc(agent, data, job, eval_seed)
    else:
        logdir = run_dir(job["key"], kind, job.get("tag", ""), seed)
        overrides = [
            f"run.logdir={logdir}",
            f"train.seed={seed}",
            f"env.time_limit={limit}",
            "offline.eval_episodes=0",
            "offline.log_every=100",
            "run.progress=false",
            "run.tensorboard=false",
            *job["extra"],
        ]
        if kind == "wm_idm":
            overrides.append("offline.label_mode=inverse_dynamics")
        resume = (logdir / "checkpoint").exists()
        presets = [*PRESETS[obs], *job.get("presets", [])]
        agent = Dreamer.load(logdir) if resume else Dreamer(make_config(presets, overrides))
        agent.fit(data, steps=job["steps"])
        out["fit_s"] = time.time() - start
        suffix = {"wm": "", "wm_idm": "_idm", "wm_relabel": "_relabel"}[kind]
        metrics = agent.evaluate(episodes=episodes, deterministic=False, head="actor", promise_every=25)
        out["wm_bc_rl" + suffix] = _eval_summary(metrics)
        if kind in ("wm", "wm_relabel"):
            head = agent.evaluate(episodes=episodes, deterministic=False, head="bc", promise_every=25)
            out["wm_bc_head" + suffix] = _eval_summary(head)
        if kind in ("wm", "wm_relabel"):  # (b) on this model, from the labels it learned with
            out["wm_bc" + suffix] = feature_bc(agent, data, job, eval_seed)
    out["wall_s"] = time.time() - start
    return out


def feature_bc(agent: Any, data: Any, job: dict[str, Any], eval_seed: int) -> dict[str, Any]:
    """(b): BC on ``agent``'s features (:class:`reverie.baselines.FeatureBC`), fitted on ``data`` and evaluated."""
    from reverie.baselines import FeatureBC

    policy = FeatureBC(agent, data.act_space["action"], seed=job["seed"])
    policy.fit(data, steps=job["bc_steps"])
    return _eval_summary(policy.evaluate(ENV_IDS[job["obs"]], job["eval_episodes"], eval_seed, job["time_limit"]))


def needs_feature_bc(rows: list[dict[str, Any]], key: str, seed: int, frac: float) -> bool:
    """Whether the finished agent of ``key`` and ``seed`` (``wm``, or ``wm_relabel`` below full labels) has no (b)
    yet: a ``wm_feat`` job fits it. Without a finished agent there is nothing to fit on."""
    source, method = ("wm_relabel", "wm_bc_relabel") if frac < 1 else ("wm", "wm_bc")
    agents = [r for r in rows if r["key"] == key and r["seed"] == seed and r["kind"] == source]
    return bool(agents) and not any(method in r for r in rows if r["key"] == key and r["seed"] == seed)


BC_SETTINGS = (
    "bc_steps",
    "bc_layers",
    "bc_return_temp",
    "bc_return_discount",
    "bc_return_min_reward",
    "time_limit",
    "eval_episodes",
    "policy",
)


def borrow_baselines(jobs: list[dict[str, Any]], source: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split ``jobs`` into those still to run and the finished rows of raw BC jobs (``RAW_BC_KINDS``) that the tag
    ``source`` ran with the same dataset, seed and BC settings (their saved policies copied to this tag's folders,
    the row marked ``borrowed_from``). A baseline's fit and evaluation never read the agent's settings."""
    src_file = ROOT / f"jobs_{source}.jsonl"
    if not src_file.exists():
        raise SystemExit(f"--bc-from {source}: {src_file} does not exist (run offline_crafter.py --tag {source} first)")
    from reverie.logger import read_jsonl

    finished = {}
    for row in read_jsonl(src_file):
        if row["kind"] in RAW_BC_KINDS:
            finished[(row["key"], row["kind"], row["seed"])] = row
    todo, borrowed = [], []
    for job in jobs:
        row = finished.get((job["key"], job["kind"], job["seed"]))
        src_policy = policy_dir(job["key"], job["kind"], source, job["seed"])
        if row is None or not src_policy.exists() or any(row.get(k) != job.get(k) for k in BC_SETTINGS):
            todo.append(job)
            continue
        dst_policy = policy_dir(job["key"], job["kind"], job["tag"], job["seed"])
        if not dst_policy.exists():
            shutil.copytree(src_policy, dst_policy.with_name(dst_policy.name + ".tmp"), dirs_exist_ok=True)
            os.replace(dst_policy.with_name(dst_policy.name + ".tmp"), dst_policy)
        borrowed.append({**row, **{k: v for k, v in job.items() if k not in BC_SETTINGS}, "borrowed_from": source})
    return todo, borrowed


TABLE_COLUMNS = {
    "bc": "(a) BC raw obs",
    "bc_rw": "return-weighted (a)",
    "wm_bc": "(b) BC on features",
    "wm_bc_head": "BC head",
    "wm_bc_rl": "(c) model + BC + RL",
}


def publish(sources: list[str]) -> dict[str, Any]:
    """The canonical ``offline_crafter.json`` (and plot) from ``<obs>=<tag>`` results, one tag per observation
    kind (the runs with that kind's recipe), in the issue's layout: per ``<obs>/<episodes>/<frac>`` the methods
    ``bc``, ``wm_bc``, ``wm_bc_rl`` beside ``bc_rw`` and ``wm_bc_head``. Below full labels the agents trained on
    the inverse-dynamics-labelled copy (``*_relabel``) stand for (a), (b) and (c) where they ran; the method
    without that copy, where it also ran, stays as ``<method>_no_idm``."""
    from reverie.fileio import write_text

    result: dict[str, Any] = {}
    meta: dict[str, Any] = {"sources": {}, "record_s": {}, "idm": {}}
    for source in sources:
        obs, _, tag = source.partition("=")
        if obs not in ENV_IDS or not tag:
            raise SystemExit(f"--publish {source}: expected <obs>=<tag> with <obs> one of {', '.join(ENV_IDS)}")
        path = RESULTS / f"offline_crafter_{tag}.json"
        if not path.exists():
            raise SystemExit(f"--publish {source}: {path} does not exist (run offline_crafter.py --tag {tag} first)")
        tagged = json.loads(path.read_text())
        for key, entry in tagged.items():
            if not key.startswith(obs + "/"):
                continue
            full = float(key.rsplit("/", 1)[1]) >= 1.0
            out: dict[str, Any] = {}
            for method in TABLE_COLUMNS:  # the methods and their neighbours
                relabel = method + "_relabel"
                name = relabel if not full and relabel in entry else method
                if name in entry:
                    out[method] = {**entry[name], "source": name} if name != method else entry[name]
                if name != method and method in entry:  # labelled episodes alone (bc), the no-action input (wm)
                    out[method + "_no_idm"] = entry[method]
            result[key] = {**out, "wall_s": entry.get("wall_s", {})}
        meta["sources"][obs] = tag
        meta["record_s"].update(tagged["meta"].get("record_s", {}))
        meta["idm"].update(tagged["meta"].get("idm", {}))
        if obs == "pixels" and "pixel_pipeline_200_minutes" in tagged["meta"]:
            meta["pixel_pipeline_200_minutes"] = tagged["meta"]["pixel_pipeline_200_minutes"]
    order = sorted(result, key=lambda k: (k.split("/")[0], int(k.split("/")[1]), -float(k.split("/")[2])))
    result = {key: result[key] for key in order} | {"meta": meta}
    write_text(RESULTS / "offline_crafter.json", json.dumps(result, indent=1))
    write_text(RESULTS / "offline_crafter.md", markdown_table(result))
    plot(result, RESULTS / "offline_crafter.png")
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The published grid as a Markdown table for the docs: per setting and method the mean Crafter score over
    the seeds, the seeds' scores after it, and ``†`` where the agents learned from the inverse-dynamics-labelled
    copy; ``-`` where a method did not run."""
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


def aggregate(rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Jobs -> ``{"<obs>/<episodes>/<frac>": {method: {"score": [per seed], "success": {name: [...]}, ...}}}``."""
    table: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: (r["key"], r["seed"])):
        entry = table.setdefault(row["key"], {})
        for method in METHODS:
            if method not in row:
                continue
            res = entry.setdefault(method, {"seeds": [], "score": [], "return": [], "success": {}})
            res["seeds"].append(row["seed"])
            res["score"].append(row[method]["score"])
            res["return"].append(row[method]["return"])
            for name, rate in row[method]["success"].items():
                res["success"].setdefault(name, []).append(rate)
            for key in ("promise_gap", "promised_return", "real_return_h"):
                if key in row[method]:
                    res.setdefault(key, []).append(row[method][key])
        entry.setdefault("wall_s", {})[f"{row['kind']}_s{row['seed']}"] = row["wall_s"]
    return {**table, "meta": meta}


def kind_of(method: str, seed: int, wall: dict[str, float]) -> str:
    """The job kind whose row holds ``method`` (the inverse of ``run_job``'s outputs)."""
    if method in RAW_BC_KINDS:
        return method
    suffix = "_relabel" if method.endswith("_relabel") else "_idm" if method.endswith("_idm") else ""
    if method.startswith("wm_bc_rl") or method.startswith("wm_bc_head"):
        return "wm" + suffix
    return "wm_feat" if f"wm_feat_s{seed}" in wall else "wm" + suffix  # (b): its own job or the model's


def rows_from_results(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Job rows back from an aggregated results JSON (the inverse of ``aggregate``): a fresh clone, whose
    ``research/runs`` is empty, continues a grid from its published results instead of running it again. The
    rows keep what the results hold (scores, successes, promises, wall time), not the jobs' settings."""
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for key, entry in result.items():
        if key == "meta":
            continue
        wall = entry.get("wall_s", {})
        for method, res in entry.items():
            if method not in METHODS:
                continue
            for i, seed in enumerate(res["seeds"]):
                kind = kind_of(method, seed, wall)
                row = rows.setdefault(
                    (key, kind, seed),
                    {
                        "key": key,
                        "kind": kind,
                        "seed": seed,
                        "wall_s": wall.get(f"{kind}_s{seed}", 0.0),
                        "recovered": True,
                    },
                )
                row[method] = {
                    "score": res["score"][i],
                    "return": res["return"][i],
                    "success": {name: rates[i] for name, rates in res["success"].items()},
                    **{k: res[k][i] for k in ("promise_gap", "promised_return", "real_return_h") if k in res},
                }
    return list(rows.values())


def merge_meta(meta: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with ``other``'s entries where it has none (record times and labelling reports kept by another
    invocation or on an earlier machine); the derived ``pixel_pipeline_200_minutes`` is recomputed."""
    merged = dict(meta)  # only those two sections come over: a published file's other keys are its own
    for section in ("record_s", "idm"):
        merged[section] = {**other.get(section, {}), **meta.get(section, {})}
    merged.pop("pixel_pipeline_200_minutes", None)
    return merged


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in result if k != "meta"]
    methods = [m for m in METHODS if any(m in result[k] for k in keys)]
    fig = Figure(figsize=(max(6, 2.2 * len(keys)), 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    for m, method in enumerate(methods):
        for k, key in enumerate(keys):
            scores = [s for s in result[key].get(method, {}).get("score", []) if s is not None]
            if not scores:
                continue
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs", nargs="+", default=["symbolic", "pixels"], choices=list(ENV_IDS))
    parser.add_argument("--episodes", nargs="+", type=int, default=[200])
    parser.add_argument("--fracs", nargs="+", type=float, default=[1.0, 0.1])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--steps", type=int, default=None, help="offline updates of Dreamer.fit (default: the config's offline.steps)"
    )
    parser.add_argument("--bc-steps", type=int, default=3000, help="updates of the BC baselines")
    parser.add_argument(
        "--bc-layers", type=int, default=2, help="hidden layers of (a)'s MLP (the agent's policy head has ac.layers=3)"
    )
    parser.add_argument("--bc-return-temp", type=float, default=1.0, help="bc_rw: BCPolicy.fit's return_temp")
    parser.add_argument("--bc-return-discount", type=float, default=0.97, help="bc_rw: its return_discount")
    parser.add_argument(
        "--bc-return-min-reward", type=float, default=0.0, help="bc_rw: its return_min_reward (0.5: achievements)"
    )
    parser.add_argument("--time-limit", type=int, default=500, help="episode length of data and evaluation")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--idm", action="store_true", help="also run inverse-dynamics labelling for fracs < 1")
    parser.add_argument(
        "--idm-data",
        action="store_true",
        help="also run on copies of the fracs < 1 datasets labelled by a raw-observation inverse-dynamics model",
    )
    parser.add_argument("--idm-steps", type=int, default=5000, help="training steps of that inverse-dynamics model")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["wm", "bc"],
        choices=["wm", "bc", "bc_rw", "bc_relabel", "bc_rw_relabel", "wm_idm", "wm_relabel", "wm_feat"],
        help="which jobs (see above)",
    )
    parser.add_argument(
        "--preset",
        nargs="*",
        default=[],
        help="named presets after the observation kind's (offline_crafter_symbolic, offline_crafter_pixels: the agents'"
        " settings; offline_crafter_weighted after either: BC weighted by the achievements' return)",
    )
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides for Dreamer.fit")
    parser.add_argument(
        "--policy",
        default="scripted",
        choices=["scripted", "scripted-curious"],
        help="the recording player; scripted-curious also presses random craft and place actions (most fail); "
        "use a --tag of its own",
    )
    parser.add_argument(
        "--bc-from",
        default="",
        help="take the finished bc / bc_rw jobs (and saved policies) of this other --tag where their settings match: "
        "the raw-observation baselines do not depend on the agent's settings",
    )
    parser.add_argument("--no-run", action="store_true", help="only rebuild the JSON and plot from finished jobs")
    parser.add_argument(
        "--publish",
        nargs="+",
        metavar="OBS=TAG",
        help="only write the canonical offline_crafter.json from finished tags, one per observation kind "
        "(e.g. symbolic=curious_ach pixels=px_preset2)",
    )
    parser.add_argument(
        "--data-only",
        action="store_true",
        help="only record the datasets and their label-dropped (and, with --idm-data, labelled) copies; no job",
    )
    parser.add_argument(
        "--tag",
        default="",
        help="name of a variant (e.g. grid with --set model.vector_codec=crafter_grid): its own runs, jobs and "
        "results/offline_crafter_<tag>.json",
    )
    args = parser.parse_args()
    if args.publish:
        result = publish(args.publish)
        print(f"wrote {RESULTS / 'offline_crafter.json'}: {', '.join(k for k in result if k != 'meta')}")
        return
    if args.policy != "scripted" and not args.tag:
        parser.error(f"--policy {args.policy} needs a --tag of its own (its runs must not mix with the scripted ones)")

    from reverie.fileio import write_text
    from reverie.logger import read_jsonl

    ROOT.mkdir(parents=True, exist_ok=True)
    suffix = f"_{args.tag}" if args.tag else ""
    jobs_file = ROOT / f"jobs{suffix}.jsonl"
    rows = read_jsonl(jobs_file) if jobs_file.exists() else []  # a line cut by a kill is skipped: that job runs again
    meta_file = ROOT / "meta.json"
    meta: dict[str, Any] = json.loads(meta_file.read_text()) if meta_file.exists() else {"record_s": {}}
    published_file = RESULTS / f"offline_crafter{suffix}.json"
    published = json.loads(published_file.read_text()) if not rows and published_file.exists() else {}
    if "sources" in published.get("meta", {}):  # --publish's canonical file: its methods are renamed, no job rows
        print(f"{published_file} was written by --publish: its jobs are not taken as finished", flush=True)
    elif published:  # a fresh clone: go on from the published results
        rows = rows_from_results(published)
        meta = merge_meta(published.get("meta", {}), meta)  # the times and reports those jobs were run with
        write_text(jobs_file, "".join(json.dumps(row) + "\n" for row in rows))
        write_text(meta_file, json.dumps(meta, indent=1))
        print(f"{len(rows)} finished jobs taken from {published_file} (no {jobs_file})", flush=True)
    done = {(r["key"], r["kind"], r["seed"]) for r in rows}
    jobs = []
    if not args.no_run:
        for obs in args.obs:
            for episodes in args.episodes:
                relabel = args.idm_data or any(k.endswith("_relabel") for k in args.kinds)
                idm_steps = args.idm_steps if relabel else 0
                times = prepare_data(obs, episodes, args.fracs, args.time_limit, args.policy, idm_steps)
                if meta_file.exists():  # another invocation may have recorded meanwhile: keep its entries
                    meta = merge_meta(meta, json.loads(meta_file.read_text()))
                meta.setdefault("idm", {}).update(times.get("idm", {}))
                if "record_s" in times:
                    name = f"{obs}/{episodes}" + ("" if args.policy == "scripted" else f"/{args.policy}")
                    meta["record_s"][name] = times["record_s"]
                write_text(meta_file, json.dumps(meta, indent=1))  # whole or not at all: other tags read it
                if args.data_only:
                    print(f"{obs}/{episodes}: datasets ready", flush=True)
                    continue
                for frac in args.fracs:
                    key = f"{obs}/{episodes}/{frac:g}"
                    kinds = (
                        list(args.kinds) + (["wm_idm"] if args.idm else []) + (["wm_relabel"] if args.idm_data else [])
                    )
                    kinds = [k for k in dict.fromkeys(kinds) if frac < 1 or k in ("wm", "bc", "bc_rw", "wm_feat")]
                    for seed in args.seeds:
                        for kind in kinds:
                            if (key, kind, seed) in done:
                                continue
                            if kind == "wm_feat" and not needs_feature_bc(rows, key, seed, frac):
                                continue
                            jobs.append(
                                {
                                    "key": key,
                                    "obs": obs,
                                    "episodes": episodes,
                                    "frac": frac,
                                    "seed": seed,
                                    "kind": kind,
                                    "steps": args.steps,
                                    "bc_steps": args.bc_steps,
                                    "bc_layers": args.bc_layers,
                                    "bc_return_temp": args.bc_return_temp,
                                    "bc_return_discount": args.bc_return_discount,
                                    "bc_return_min_reward": args.bc_return_min_reward,
                                    "time_limit": args.time_limit,
                                    "eval_episodes": args.eval_episodes,
                                    "extra": list(args.set),
                                    "presets": list(args.preset),
                                    "tag": args.tag,
                                    "policy": args.policy,
                                }
                            )
    if args.data_only:
        return
    if args.bc_from:
        jobs, borrowed = borrow_baselines(jobs, args.bc_from)
        for row in borrowed:
            rows.append(row)
            with jobs_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
        print(f"{len(borrowed)} baseline jobs taken from --tag {args.bc_from}", flush=True)
    print(f"{len(jobs)} jobs to run ({len(rows)} already done)", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            with jobs_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            scores = {m: row[m]["score"] for m in METHODS if m in row}
            print(f"{row['key']} seed {row['seed']} {row['kind']}: {scores} ({row['wall_s'] / 60:.1f} min)", flush=True)
            write_results(rows, meta, suffix)
    if rows:  # nothing finished: the results file (and --publish's, without a tag) stays as it is
        write_results(rows, meta, suffix)
    else:
        print("no finished jobs: nothing written", flush=True)


def write_results(rows: list[dict[str, Any]], meta: dict[str, Any], suffix: str = "") -> None:
    """Aggregate the finished jobs into the JSON and the plot (atomically)."""
    from reverie.fileio import write_text

    pixel = [r for r in rows if r["key"] == "pixels/200/1" and r["seed"] == 0 and r["kind"] == "wm"]
    if pixel and "pixels/200" in meta["record_s"]:
        meta["pixel_pipeline_200_minutes"] = (meta["record_s"]["pixels/200"] + pixel[0]["wall_s"]) / 60
    result = aggregate(rows, meta)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text(RESULTS / f"offline_crafter{suffix}.json", json.dumps(result, indent=1))
    plot(result, RESULTS / f"offline_crafter{suffix}.png")


if __name__ == "__main__":
    main()
