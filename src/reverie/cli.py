"""The ``reverie`` command line: ``train``, ``train-offline``, ``correct``, ``eval``, ``check-env``, ``data``,
``studio``, ``report``.

Examples::

    reverie train                                  # CartPole-v1 on the built-in default
    reverie train --preset classic --env Pendulum-v1 --logdir runs/pendulum
    reverie train --preset debug --set train.batch_size=8 --logdir runs/x --resume
    reverie eval --ckpt runs/pendulum --episodes 10
    reverie train-offline --data data/crafter-scripted --logdir runs/offline --steps 3000
    reverie check-env Pendulum-v1
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import reverie.distributed as distributed
from reverie.checkpoint import CheckpointError, delete_run, find_checkpoint, holds_run, read_config
from reverie.config import (
    Config,
    ConfigError,
    all_keys,
    apply_overrides,
    field_docs,
    load_presets,
    make_config,
    set_key,
    validate,
)
from reverie.data import cli as data_cli
from reverie.errors import ReverieError
from reverie.fileio import FolderLock

if TYPE_CHECKING:
    from reverie.agent import Dreamer

log = logging.getLogger("reverie")


def _config_help() -> str:
    docs = field_docs()
    cfg = Config().to_dict()
    lines = []
    for key in all_keys():
        section, name = key.split(".")
        lines.append(f"  {key:<24} {cfg[section][name]!r:<14} {docs.get(key, '')}")
    names = textwrap.fill(", ".join(load_presets()), width=110, initial_indent="  ", subsequent_indent="  ")
    presets = f"presets (--preset NAME ..., applied left to right; values in reverie/presets.yaml):\n{names}\n\n"
    return presets + "config keys (--set KEY=VALUE):\n" + "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reverie", description="Agents that learn inside world models.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train an agent online",
        epilog=_config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "--preset",
        nargs="*",
        default=[],
        help="named presets, applied left to right (with neither --preset nor --env: classic cartpole)",
    )
    train.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    train.add_argument("--env", help="env id (same as --set env.id=ID)")
    train.add_argument("--steps", type=int, help="env steps (same as --set train.steps=N)")
    train.add_argument("--logdir", help="run folder (same as --set run.logdir=DIR)")
    train.add_argument("--seed", type=int, help="seed (same as --set train.seed=N)")
    train.add_argument("--resume", action="store_true", help="continue the run in --logdir")
    train.add_argument("--overwrite", action="store_true", help="start afresh in --logdir, deleting the run there")

    off = sub.add_parser(
        "train-offline",
        help="learn world model and agent from a recorded dataset (no env interaction until the final evaluation)",
        epilog=_config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    off.add_argument("--data", required=True, help="dataset folder (see `reverie data record`)")
    off.add_argument("--preset", nargs="*", default=[], help="named presets after 'offline', left to right")
    off.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    off.add_argument("--steps", type=int, help="offline updates in all (same as --set offline.steps=N)")
    off.add_argument("--logdir", help="run folder (same as --set run.logdir=DIR)")
    off.add_argument("--seed", type=int, help="seed (same as --set train.seed=N)")
    off.add_argument("--resume", action="store_true", help="continue the run in --logdir")
    off.add_argument("--overwrite", action="store_true", help="start afresh in --logdir, deleting the run there")

    cor = sub.add_parser("correct", help="find the model's loopholes with a little real play and close them")
    cor.add_argument("--from", dest="ckpt", required=True, help="checkpoint or run folder (of train or train-offline)")
    cor.add_argument("--data", help="the dataset the agent learned from (default: the run's own replay)")
    cor.add_argument(
        "--learner",
        help="correct this learner instead of the agent's actor: sb3 (Stable-Baselines3 PPO/SAC) or module:factory",
    )
    cor.add_argument("--dream-steps", type=int, default=30_000, help="--learner: its dream steps per round")
    cor.add_argument("--rounds", type=int, default=3, help="correction rounds after round 0")
    cor.add_argument("--episodes", type=int, default=20, help="real episodes per round")
    cor.add_argument("--finetune-steps", type=int, default=300, help="world-model updates per round")
    cor.add_argument("--rl-steps", type=int, default=300, help="imagination RL updates per round")
    cor.add_argument("--real-frac", type=float, default=0.25, help="share of each batch drawn from real play")
    cor.add_argument("--margin", type=float, default=0.5, help="promised minus real reward that marks an exploit")
    cor.add_argument("--focus", type=float, default=0.75, help="share of real windows around the model's misses")
    cor.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="offline.* overrides, e.g. offline.imag_starts=64"
    )
    cor.add_argument("--out", help="run folder for the corrected agent and correction.json (default: --from)")
    cor.add_argument("--seed", type=int, default=0)

    ev = sub.add_parser("eval", help="evaluate a checkpoint")
    ev.add_argument("--ckpt", required=True, help="checkpoint folder or run folder")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--env", help="env id (default: the one it was trained on)")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    ev.add_argument("--head", choices=["actor", "bc"], default="actor", help="policy: RL actor or BC head")
    ev.add_argument("--promise-every", type=int, default=0, help="compare imagined and real returns every N steps")
    ev.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="train.* overrides, e.g. train.device=cpu"
    )

    check = sub.add_parser("check-env", help="validate an env against the Reverie contract")
    check.add_argument("env", help="env id, e.g. CartPole-v1, crafter, dmc:walker-walk, atari:Pong")
    check.add_argument("--max-steps", type=int, default=10_000, help="random steps probed for an episode end")
    data_cli.add_parser(sub)

    studio = sub.add_parser("studio", help="play inside a checkpoint's world model in the browser")
    studio.add_argument("--ckpt", required=True, help="checkpoint folder or run folder")
    studio.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    studio.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    studio.add_argument(
        "--start",
        default="env",
        metavar="env|DATASET_DIR",
        help="what seeds each dream: 'env' (real frames, random actions; default) or a dataset folder of the "
        "checkpoint's env (recorded steps and actions; write ./env for a folder named env)",
    )
    studio.add_argument(
        "--record-to", default="studio_recordings", metavar="DIR", help="parent folder of recorded takes"
    )
    studio.add_argument("--data", metavar="DIR", help=argparse.SUPPRESS)  # deprecated name of --record-to
    studio.add_argument("--context", type=int, default=5, help="frames (real or recorded) that seed each dream")

    report = sub.add_parser("report", help="write a self-contained HTML report of a run")
    report.add_argument("run_dir", help="run folder (metrics.jsonl, config.json, videos/)")
    report.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html)")
    return parser


FIXED_ON_RESUME = (
    "model.",
    "env.id",
    "env.pixels",
    "env.image_size",
    "ac.units",
    "ac.layers",
    "ac.input",
    "ac.cnn_depth",
)
"""Keys a resumed run cannot change: they shape the networks or the observations."""


def _get(tree: dict[str, Any], key: str) -> Any:
    section, name = key.split(".")
    return tree[section][name]


DEFAULT_PRESETS = ["classic", "cartpole"]
"""What a bare ``reverie train`` runs: CartPole-v1 on the classic-control budget, until it is solved."""


def _train_config(args: argparse.Namespace) -> Config:
    presets = args.preset if args.preset or args.env else DEFAULT_PRESETS
    overrides = list(args.set)
    for flag, key in (
        ("env", "env.id"),
        ("steps", "train.steps"),
        ("logdir", "run.logdir"),
        ("seed", "train.seed"),
    ):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    return make_config(presets, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    cfg = _train_config(args)
    job = distributed.init(cfg.train.device)
    agent = _new_or_resumed(args, cfg)
    agent.learn()
    result = {"env": agent.config.env.id, "env_steps": agent.state.env_steps, **agent.last_eval}
    if job.active:
        result["ranks"] = job.size
    result["wall_s"] = round(time.perf_counter() - start, 1)
    if job.main:
        print(json.dumps(result))
    return 0


def cmd_train_offline(args: argparse.Namespace) -> int:
    from reverie.data import DatasetError

    overrides = list(args.set)
    for flag, key in (("steps", "offline.steps"), ("logdir", "run.logdir"), ("seed", "train.seed")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    cfg = make_config(["offline", *args.preset], overrides)
    job = distributed.init(cfg.train.device)
    if args.resume:
        args.preset, args.env, args.steps = None, None, None  # offline.steps came in through the overrides
        args.set = overrides
    agent = _new_or_resumed(args, cfg)
    try:
        agent.fit(args.data)
    except DatasetError as err:
        raise ConfigError(str(err)) from None
    result = {"data": args.data, "offline_updates": agent.state.offline_updates, **agent.last_eval}
    if job.active:
        result["ranks"] = job.size
    if job.main:
        print(json.dumps(result))
    return 0


def cmd_correct(args: argparse.Namespace) -> int:
    from reverie.agent import Dreamer
    from reverie.correction import correct, run_replay
    from reverie.data import DatasetError
    from reverie.dream import DreamEnv
    from reverie.fileio import write_text
    from reverie.learners import make_learner
    from reverie.plots import plot_rounds
    from reverie.replay import ReplayError

    if args.rounds < 0 or args.episodes < 1:
        raise ConfigError(f"correct needs --rounds >= 0 and --episodes >= 1, got {args.rounds} and {args.episodes}.")
    if not 0.0 <= args.real_frac < 1.0:
        raise ConfigError(f"--real-frac must lie in [0, 1), got {args.real_frac}.")
    if not 0.0 <= args.focus <= 1.0:
        raise ConfigError(f"--focus must lie in [0, 1], got {args.focus}.")
    if args.dream_steps < 1:
        raise ConfigError(f"--dream-steps must be at least 1, got {args.dream_steps}.")
    for flag, value in (("--finetune-steps", args.finetune_steps), ("--rl-steps", args.rl_steps)):
        if value < 0:
            raise ConfigError(f"{flag} must be 0 or more (updates per round), got {value}.")
    if args.margin < 0:
        raise ConfigError(f"--margin must be 0 or more (reward promised beyond the real one), got {args.margin}.")
    learner = None
    if args.learner:
        try:
            learner = make_learner(args.learner, args.seed)
        except (ValueError, ImportError) as err:
            raise ConfigError(f"--learner: {err}") from None
    agent = Dreamer.load(args.ckpt)
    try:
        apply_overrides(agent.config, args.set, section="offline")
    except ConfigError as err:
        raise ConfigError(f"correct --set: {err} The model and agent sizes come from the checkpoint.") from None
    validate(agent.config)
    source = find_checkpoint(args.ckpt)
    run = source.parent if source == Path(args.ckpt) else Path(args.ckpt)  # --from a checkpoint folder: its run
    out = Path(args.out) if args.out else run
    try:
        data = args.data if args.data else run_replay(run, agent.config, args.seed)
    except ReplayError as err:
        raise ConfigError(str(err)) from None
    set_key(agent.config, "run.logdir", str(out))
    if learner is not None:  # round 0 is the learner trained in the dream as it came
        learner.learn(DreamEnv(agent, seed=args.seed), args.dream_steps)

    def save(reports: list[dict[str, Any]], policy: bool = True) -> None:  # after every round: a crash loses one
        out.mkdir(parents=True, exist_ok=True)  # only now: bad input leaves no half-made folder
        write_text(out / "correction.json", json.dumps({"rounds": reports, "seeds": 1}, indent=1))
        if not policy:
            return
        agent.save(out / "checkpoint")
        if learner is not None and callable(getattr(learner, "save", None)):
            learner.save(out / "learner")  # type: ignore[attr-defined]

    try:
        rounds = correct(
            agent,
            data,
            args.rounds,
            args.episodes,
            args.finetune_steps,
            args.rl_steps,
            args.real_frac,
            args.margin,
            args.seed,
            args.focus,
            on_round=save,
            learner=learner,
            dream_steps=args.dream_steps,
        )
    except DatasetError as err:
        raise ConfigError(str(err)) from None
    kept = next(r["round"] for r in rounds if r["kept"])
    save(rounds, policy=kept != rounds[-1]["round"])  # the reports say which round was kept; its policy over the last
    plot_rounds([rounds], out / "correction.png")
    for r in rounds:
        top = ", ".join(f"{k} {v}" for k, v in list(r["exploits"].items())[:3])
        print(
            f"round {r['round']}: return {r['real_return']:.1f}, exploit rate {r['exploit_rate']:.4f} ({top}), "
            f"score {r['real_score']}, endings missed {r['missed_endings']} of {r['endings']}"
        )
    summary = {k: [r[k] for r in rounds] for k in ("real_return", "exploit_rate", "missed_endings")}
    print(f"kept the policy of round {kept} (its real return was the highest)")
    print(json.dumps({"out": str(out), **summary, "kept_round": kept}))
    return 0


def _new_or_resumed(args: argparse.Namespace, cfg: Config) -> Dreamer:
    """The run's agent with ``--resume``, else a new one (refusing to overwrite an existing run)."""
    from reverie.agent import Dreamer  # noqa: F811 (runtime import; the annotation uses TYPE_CHECKING)

    logdir, job = Path(cfg.run.logdir), distributed.world()
    if logdir.is_dir() and job.main:
        FolderLock(logdir).acquire().release()  # another process on this run: say so before loading anything
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in --logdir and --overwrite deletes it: choose one.")
    if args.resume:
        agent = _resume(args, logdir)
    else:
        if distributed.from_main(job.main and holds_run(logdir)):  # rank 0 looks; nothing is written before
            if not args.overwrite:
                raise ConfigError(
                    f"Run folder '{logdir}' already holds a run. Add --resume to continue it, --overwrite to delete "
                    "it and start afresh, or pick another --logdir."
                )
            if job.main:
                with FolderLock(logdir):  # not while another process runs there
                    delete_run(logdir)
        agent = Dreamer(cfg)
    distributed.barrier()  # every rank has read the run folder before rank 0 writes to it
    return agent


def _resume(args: argparse.Namespace, logdir: Path) -> Dreamer:
    """The agent of the run in ``logdir``, with ``--steps`` and ``--set`` applied on top of its config."""
    from reverie.agent import Dreamer  # noqa: F811 (runtime import; the annotation uses TYPE_CHECKING)

    try:
        find_checkpoint(logdir)
    except CheckpointError:
        raise CheckpointError(
            f"Nothing to resume in '{logdir}': it has no checkpoint yet. Drop --resume to start a new run."
        ) from None
    fixed = [flag for flag in ("preset", "env", "seed") if getattr(args, flag)]
    if fixed:
        names = ", ".join(f"--{f}" for f in fixed)
        raise ConfigError(f"{names} cannot change a run being resumed; drop them (or start a new run).")
    saved = read_config(logdir)
    before = saved.to_dict()
    apply_overrides(saved, args.set)  # explicit overrides still apply on resume (e.g. a longer budget)
    validate(saved)
    after = saved.to_dict()
    changed = [key for key in all_keys() if key.startswith(FIXED_ON_RESUME) and _get(after, key) != _get(before, key)]
    if changed:
        raise ConfigError(
            f"{', '.join(changed)} cannot change in a run being resumed (they shape the networks or the data); "
            "start a new run with another --logdir."
        )
    agent = Dreamer.load(logdir, saved)
    set_key(agent.config, "run.logdir", str(logdir))  # the folder may have moved since it was written
    if args.steps is not None:
        agent.config.train.steps = args.steps
    log.info("resuming %s at env step %d", logdir, agent.state.env_steps)
    return agent


def cmd_eval(args: argparse.Namespace) -> int:
    from reverie.agent import Dreamer

    if args.episodes < 1 or args.promise_every < 0:
        raise ConfigError(
            f"eval needs --episodes >= 1 and --promise-every >= 0, got {args.episodes} and {args.promise_every}."
        )
    config = read_config(args.ckpt)
    apply_overrides(config, args.set, section="train")
    validate(config)
    agent = Dreamer.load(args.ckpt, config)
    metrics = agent.evaluate(
        args.env, args.episodes, deterministic=not args.stochastic, head=args.head, promise_every=args.promise_every
    )
    if "eval/score" in metrics:  # Crafter: the per-achievement table, then the score
        rates = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("eval/success/")}
        for name, rate in sorted(rates.items(), key=lambda kv: -kv[1]):
            print(f"{name:<20} {rate:6.1f}%")
        print(f"{'Crafter score':<20} {metrics['eval/score']:6.2f}%  ({args.episodes} episodes)")
    print(json.dumps({"env": args.env or agent.config.env.id, **metrics}))
    return 0


def cmd_check_env(args: argparse.Namespace) -> int:
    from reverie.config import EnvConfig
    from reverie.envs import check_env, make_env

    env = make_env(EnvConfig(id=args.env), seed=0)  # Gymnasium ids and the suites (crafter, dmc:, atari:)
    try:
        warnings = check_env(env, max_steps=args.max_steps)
    finally:
        env.close()
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"{args.env}: passes the Reverie env contract" + (f" ({len(warnings)} warnings)" if warnings else ""))
    return 0


def cmd_studio(args: argparse.Namespace) -> int:
    from reverie.studio import INSTALL

    try:
        from reverie.studio.server import Studio
    except ImportError as err:
        print(f"reverie: error: the studio needs aiohttp ({err}): {INSTALL}", file=sys.stderr)
        return 2
    record_to = args.record_to
    if args.data is not None:
        log.warning("reverie studio: --data is deprecated; use --record-to (the folder of recorded takes)")
        record_to = args.data if record_to == "studio_recordings" else record_to
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is no TCP port; use 1-65535, or 0 for any free one.")
    try:
        studio = Studio(args.ckpt, record_dir=record_to, context=args.context, start=args.start)
    except ValueError as err:  # a --start dataset that cannot be read or does not fit the checkpoint
        print(f"reverie: error: {err}", file=sys.stderr)
        return 2
    try:
        studio.run(args.host, args.port)
    except OSError as err:  # port taken, address not available
        print(f"reverie: error: cannot serve on {args.host}:{args.port} ({err.strerror or err}).", file=sys.stderr)
        return 2
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reverie.report import ReportError, write_report

    try:
        print(write_report(args.run_dir, args.out))
    except ReportError as err:
        print(f"reverie: error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``reverie`` command."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    commands = {"train": cmd_train, "train-offline": cmd_train_offline, "eval": cmd_eval, "check-env": cmd_check_env}
    commands.update({"data": data_cli.run, "correct": cmd_correct})
    commands.update({"studio": cmd_studio, "report": cmd_report})
    try:
        if args.command not in ("train", "train-offline"):
            distributed.refuse(args.command)
        return commands[args.command](args)
    except ReverieError as err:
        return _fail(str(err))
    except OSError as err:  # a folder that cannot be written, a full disk, a file where a folder should be
        return _fail(os_message(err))
    except (MemoryError, RuntimeError) as err:
        if distributed.world().active and distributed.broken_off(err):
            return _fail(distributed.RankError.about(err))
        if not isinstance(err, MemoryError) and "allocate" not in str(err):
            raise  # a bug, not bad input: keep the traceback
        return _fail("out of memory: lower train.batch_size, train.batch_length or the model size (a smaller preset).")
    except KeyboardInterrupt:
        print("reverie: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()


def run() -> NoReturn:
    """The ``reverie`` command and ``python -m reverie``: :func:`main`, then the process ends with its status
    (a ``torchrun`` rank without the interpreter's teardown, see :func:`reverie.distributed.exit_process`)."""
    distributed.exit_process(main())


def _fail(message: str) -> int:
    """Print one error line (the first line of ``message``) and return the exit status of bad input."""
    print(f"reverie: error: {message.strip().splitlines()[0] if message.strip() else 'unknown error'}", file=sys.stderr)
    return 2


def os_message(err: OSError) -> str:
    """One line for a failed file operation: what failed, on which path, and what to do.

    Example:
        >>> import errno
        >>> os_message(OSError(errno.ENOSPC, "No space left on device", "runs/x/state.pt"))
        "No space left on device: 'runs/x/state.pt'; free some disk space or write elsewhere."
    """
    hints = {
        errno.ENOSPC: "free some disk space or write elsewhere",
        errno.EDQUOT: "free some disk space or write elsewhere",
        errno.EACCES: "pick a folder you can write to (--logdir, --out)",
        errno.EPERM: "pick a folder you can write to (--logdir, --out)",
        errno.EROFS: "pick a folder on a writable file system",
        errno.ENOTDIR: "a file stands where a folder is needed; move it or pick another path",
        errno.EEXIST: "a file stands where a folder is needed; move it or pick another path",
        errno.EISDIR: "a folder stands where a file is needed; pick another path",
        errno.ENOENT: "check the path",
    }
    where = f": '{err.filename}'" if err.filename else ""
    hint = hints.get(err.errno or 0, "check the path and its permissions")
    return f"{err.strerror or err}{where}; {hint}."


if __name__ == "__main__":
    sys.exit(main())
