"""``reverie data record | info | convert | label``: the dataset commands of the ``reverie`` CLI.

Examples::

    reverie data record --env crafter --policy random --episodes 10 --out data/crafter-random --time-limit 500
    reverie data record --env CartPole-v1 --policy runs/cartpole --episodes 50 --out data/cartpole-expert
    reverie data info data/crafter-random
    reverie data convert data/crafter-random data/crafter-30pct --action-frac 0.3
    reverie data convert data/crafter-random crafter-random --to minari   # Minari id reverie/crafter-random-v0
    reverie data convert reverie/crafter-random-v0 data/crafter-back      # Minari -> Reverie
    reverie data label data/crafter-10pct data/crafter-10pct-idm          # fill in actions (inverse dynamics)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from reverie.data.dataset import Dataset
from reverie.plugins import summarize

__all__ = ["add_parser", "describe", "run"]


def add_parser(sub: Any) -> None:
    """Register ``data`` and its subcommands on the ``reverie`` subparsers ``sub``."""
    data = sub.add_parser("data", help="record, inspect and convert datasets of recorded play")
    cmds = data.add_subparsers(dest="data_command", required=True)

    rec = cmds.add_parser("record", help="record episodes of a policy into a new dataset folder")
    rec.add_argument("--env", required=True, help="env id, e.g. crafter, crafter-symbolic, CartPole-v1")
    rec.add_argument(
        "--policy", default="random", help="random, scripted or scripted-curious (Crafter), or a checkpoint folder"
    )
    rec.add_argument("--episodes", type=int, required=True, help="episodes to record")
    rec.add_argument("--out", required=True, help="dataset folder to create (new or empty)")
    rec.add_argument("--seed", type=int, default=0, help="seed of the env, the policy and the label dropping")
    rec.add_argument("--time-limit", type=int, help="truncate episodes after this many steps")
    rec.add_argument("--action-frac", type=float, default=1.0, help="share of episodes that keep their actions")
    rec.add_argument("--reward-frac", type=float, default=1.0, help="share of episodes that keep their rewards")

    info = cmds.add_parser("info", help="summarise a dataset: sizes, keys, labels, returns, Crafter achievements")
    info.add_argument("dir", help="dataset folder")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")

    conv = cmds.add_parser(
        "convert",
        help="copy a dataset with fewer labels, or convert Reverie <-> Minari",
        description="SRC is a Reverie dataset folder or (with --to reverie, when no such path exists) a Minari "
        "dataset id. DST is a folder, or with --to minari a Minari id (NAME alone becomes reverie/NAME-v0).",
    )
    conv.add_argument("src", help="Reverie dataset folder or Minari dataset id")
    conv.add_argument("dst", help="Reverie dataset folder or Minari dataset id")
    conv.add_argument("--to", choices=["reverie", "minari"], default="reverie", help="format to write")
    conv.add_argument("--action-frac", type=float, default=1.0, help="share of episodes that keep their actions")
    conv.add_argument("--reward-frac", type=float, default=1.0, help="share of episodes that keep their rewards")
    conv.add_argument("--seed", type=int, default=0, help="seed of the choice of unlabeled episodes")

    lab = cmds.add_parser(
        "label",
        help="copy a dataset with its missing actions filled in by an inverse-dynamics model",
        description="Trains reverie.baselines.InverseDynamics (which action led from one observation to the next) "
        "on SRC's labelled episodes, minus a held-out share that measures its accuracy, and writes DST with every "
        "episode labelled: recorded actions kept, the others inferred.",
    )
    lab.add_argument("src", help="Reverie dataset folder with some labelled episodes")
    lab.add_argument("dst", help="dataset folder to create (new or empty)")
    lab.add_argument("--steps", type=int, default=5000, help="training steps of the inverse-dynamics model")
    lab.add_argument("--held-out", type=float, default=0.2, help="share of labelled episodes kept to measure accuracy")
    lab.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and held-out choice")


def run(args: argparse.Namespace) -> int:
    """Run ``reverie data <command>`` (dataset, policy and missing-Minari errors are one-line errors of the
    ``reverie`` command: :class:`reverie.errors.ReverieError`)."""
    commands = {"record": _record, "info": _info, "convert": _convert, "label": _label}
    return commands[args.data_command](args)


def _record(args: argparse.Namespace) -> int:
    from reverie.data.record import record

    ds = record(
        args.env,
        args.policy,
        args.episodes,
        args.out,
        seed=args.seed,
        time_limit=args.time_limit,
        action_frac=args.action_frac,
        reward_frac=args.reward_frac,
    )
    print(json.dumps({"dataset": str(ds.folder), "env": ds.env_id, "episodes": len(ds), "steps": ds.num_steps}))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from reverie.data.convert import convert

    out = convert(args.src, args.dst, args.to, args.action_frac, args.reward_frac, args.seed)
    print(json.dumps({"from": args.src, "to": out, "format": args.to}))
    return 0


def _label(args: argparse.Namespace) -> int:
    from reverie.baselines import InverseDynamics

    source = Dataset(args.src)
    idm = InverseDynamics(source.obs_space, source.act_space, seed=args.seed)
    out, report = idm.label(source, args.dst, steps=args.steps, held_out=args.held_out, seed=args.seed)
    shown = {k: None if np.isnan(v) else v for k, v in report.items()}  # no held-out episode: no accuracy
    print(json.dumps({"dataset": str(out.folder), "episodes": len(out), **shown}))
    return 0


def _info(args: argparse.Namespace) -> int:
    summary = describe(Dataset(args.dir))
    print(json.dumps(summary, indent=1) if args.json else _format(summary))
    return 0


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def describe(ds: Dataset) -> dict[str, Any]:
    """Summary of a dataset from its ``dataset.json`` alone (no episode file is read).

    Returns ``folder, env_id, episodes, steps, length, label_fracs, returns`` (over episodes with
    rewards; None without), ``keys``, ``creation`` and ``summary``: what the env's game makes of the episodes'
    last ``log/`` values (:func:`reverie.plugins.summarize`; Crafter: ``score`` and ``success/<achievement>`` in
    percent), empty for other envs.
    """
    info = ds.info
    eps = info["episode_info"]
    summary: dict[str, Any] = {
        "folder": str(ds.folder),
        "env_id": ds.env_id,
        "episodes": len(ds),
        "steps": ds.num_steps,
        "length": _stats([e["length"] for e in eps]),
        "label_fracs": info["label_fracs"],
        "returns": _stats([e["return"] for e in eps if e["return"] is not None]),
        "keys": info["keys"],
        "creation": info["creation"],
        "summary": summarize(ds.env_id, [e["log"] for e in eps]),
    }
    return summary


def _format(s: dict[str, Any]) -> str:
    """The text of ``reverie data info``."""
    lines = [
        f"dataset   {s['folder']}",
        f"env       {s['env_id']}",
        f"episodes  {s['episodes']}  steps {s['steps']}  "
        f"length mean {s['length']['mean']:.1f} min {s['length']['min']:.0f} max {s['length']['max']:.0f}",
        f"labels    actions in {100 * s['label_fracs']['actions']:.0f}% of episodes, "
        f"rewards in {100 * s['label_fracs']['rewards']:.0f}%",
    ]
    r = s["returns"]
    lines.append(
        f"returns   mean {r['mean']:.3f} min {r['min']:.3f} max {r['max']:.3f}" if r else "returns   (no rewards)"
    )
    creation = ", ".join(f"{k}={v}" for k, v in s["creation"].items() if not isinstance(v, dict))
    lines += [f"created   {creation}", "keys"]
    logs = [k for k in s["keys"] if k.startswith("log/")]
    for key, spec in s["keys"].items():
        if not key.startswith("log/"):
            lines.append(f"  {key:<14} {tuple(spec['shape'])!s:<14} {spec['dtype']}")
    if logs:
        groups: dict[str, int] = {}
        for key in logs:  # log/achievement_collect_wood -> log/achievement_*
            head, sep, _ = key[4:].partition("_")
            groups[f"log/{head}_*" if sep else key] = groups.get(f"log/{head}_*" if sep else key, 0) + 1
        names = ", ".join(f"{g} ({n})" if n > 1 else g for g, n in groups.items())
        lines.append(f"  {len(logs)} log/ keys, for evaluation only: {names}")
    if s["summary"]:
        lines.append(f"summary of the episodes ({s['env_id']}):")
        lines += [f"  {name:<28} {value:8.2f}" for name, value in s["summary"].items()]
    return "\n".join(lines)
