"""Train in the dream, act in reality: a learner trained only inside a checkpoint's ``DreamEnv``, then corrected.

For each env, learner and seed (one cell): load the checkpoint of the classic learning benchmark's run of that
seed (an online run that solved its task; ``python benchmarks/learning_classic.py`` makes them), then

* round 0: train the learner only in the checkpoint's dream and play it in the real env;
* rounds 1..R (:func:`reverie.correction.correct`): the learner plays ``--episodes`` real episodes beside the
  model's predictions (round r's real return is theirs), the model is fine-tuned on all real play so far mixed
  with the run's replay (aimed at its reward misses and the real endings), and the learner trains on in the
  corrected model (``sb3``: in 50-step dreams started from moments of the real play; ``reverie``: in imagination);
* the policy ``correct`` hands back (that of the round with the highest real return) plays 20 fresh real
  episodes: ``kept`` in the cell, and what ``seeds_at_0.8`` counts (``seeds_at_0.8_last_round``: round R's).

Learners: ``reverie`` (Reverie's actor-critic, its weights reset, trained in the model's imagination) and ``sb3``
(Stable-Baselines3, default hyperparameters: PPO for discrete actions, SAC for continuous ones; ``pip install
-e .[sb3]``). References per cell: random play, the same learner trained in the real env with as many steps as
the dream gave it in all (for ``reverie``: the online run that made the checkpoint), and the checkpoint's own
actor. ``normalised`` puts the real return on the scale where random play is 0 and the real-trained learner 1.

Writes ``benchmarks/results/dream_transfer.json`` and ``.png``; each cell is kept in ``benchmarks/runs/
dream_transfer/`` as it finishes, so a killed run resumes where it stopped (``--fresh`` starts over)::

    pip install -e .[sb3]
    python benchmarks/dream_transfer.py                          # 2 envs x 2 learners x 3 seeds, 3 rounds
    python benchmarks/dream_transfer.py --envs CartPole-v1 --learners sb3 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results"
RUNS = HERE / "runs" / "dream_transfer"
CHECKPOINTS = HERE / "runs" / "learning_classic"
ENVS = ("CartPole-v1", "Pendulum-v1")
LEARNERS = ("reverie", "sb3")
DREAM_STEPS = {"CartPole-v1": (30_000, 30_000), "Pendulum-v1": (10_000, 5_000)}
"""Steps the ``sb3`` learner trains in the dream: before round 0, then in each correction round."""
REVERIE_UPDATES = (1000, 1000)
"""Imagination updates of the ``reverie`` learner: before round 0, then in each correction round."""


# ----------------------------------------------------------------------------------------------- the learners
def reset_actor_critic(agent: Any, seed: int) -> None:
    """Fresh actor and critic weights (and optimiser moments) for the agent: a learner that knows nothing yet."""
    import torch

    from reverie.learner import Learner

    torch.manual_seed(seed)
    learner = agent.learner
    fresh = Learner(agent.config, learner.obs_space, learner.act_space)
    learner.ac.load_state_dict(fresh.ac.state_dict())
    for p in learner.ac.parameters():
        learner.opt.state.pop(p, None)


def train_in_imagination(agent: Any, replay: Any, updates: int, seed: int) -> None:
    """``updates`` of the actor-critic alone (the ``rl`` phase) in the model's imagination from replayed states."""
    import numpy as np

    rng, t = np.random.default_rng(seed), agent.config.train
    for _ in range(updates):
        agent.learner.update(replay.sample(t.batch_size, t.batch_length), "rl", rng)


# ---------------------------------------------------------------------------------------------- measurements
def real_return(agent: Any, policy: Any, episodes: int, seed: int) -> float:
    """Mean real return of ``policy`` (one DreamEnv-layout observation -> action) over ``episodes`` episodes."""
    import numpy as np

    from reverie.correction import gym_obs
    from reverie.evaluation import run_episodes

    envs = agent.make_envs(episodes, seed)
    keys = list(agent.learner.obs_space)

    def act(obs: dict, first: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(policy(gym_obs(obs, keys, i))) for i in range(envs.num_envs)])

    try:
        return float(run_episodes(envs, act, episodes).returns.mean())
    finally:
        envs.close()


def dream_return(env: Any, policy: Any, episodes: int = 5) -> dict[str, float]:
    """Mean return and length of ``policy`` in the dream ``env`` (``policy`` None: the agent's own actor)."""
    import numpy as np

    returns, lengths = [], []
    for k in range(episodes):
        obs, _ = env.reset(seed=50_000 + k)
        done, total, steps = False, 0.0, 0
        while not done:
            action = env.agent_action() if policy is None else policy(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, steps, done = total + reward, steps + 1, terminated or truncated
        returns.append(total)
        lengths.append(steps)
    return {"return": float(np.mean(returns)), "length": float(np.mean(lengths))}


def real_env(env_id: str) -> Any:
    """The real env as a plain Gymnasium env with the spaces the model uses (Box actions scaled to [-1, 1])."""
    import gymnasium

    env = gymnasium.make(env_id)
    if isinstance(env.action_space, gymnasium.spaces.Box):
        env = gymnasium.wrappers.RescaleAction(env, -1.0, 1.0)
    return env


SOLVED = {"CartPole-v1": 450.0, "Pendulum-v1": -200.0}
"""The learning benchmark's thresholds: a run whose last evaluation reached it solved its task."""


def checkpoint_of(env_id: str, seed: int) -> Path:
    """The newest learning-benchmark run of ``seed`` whose last evaluation reached the task's threshold (else the
    newest): a run that collapsed after solving its task is no model of a solved task."""
    from reverie.logger import read_jsonl

    runs = sorted((CHECKPOINTS / env_id).glob(f"seed{seed}-*"), key=lambda p: p.stat().st_mtime)
    runs = [r for r in runs if (r / "metrics.jsonl").exists()]
    if not runs:
        sys.exit(
            f"dream_transfer: no checkpoint of {env_id} seed {seed} under {CHECKPOINTS}: "
            "run `python benchmarks/learning_classic.py` first (its runs are the checkpoints)."
        )

    def solved(run: Path) -> bool:
        evals = [row["eval/return"] for row in read_jsonl(run / "metrics.jsonl") if "eval/return" in row]
        return bool(evals) and evals[-1] >= SOLVED.get(env_id, float("inf"))

    return next((r for r in reversed(runs) if solved(r)), runs[-1])


# ---------------------------------------------------------------------------------------------- one cell
def run_cell(env_id: str, kind: str, seed: int, rounds: int, episodes: int, out: Path) -> None:
    import torch

    from reverie.agent import Dreamer
    from reverie.correction import correct, run_replay
    from reverie.dream import DreamEnv, gym_space
    from reverie.learners import SB3Learner

    torch.set_num_threads(1)
    run = checkpoint_of(env_id, seed)
    agent = Dreamer.load(run)
    replay = run_replay(run, agent.config, seed)
    cell: dict[str, Any] = {"env": env_id, "learner": kind, "seed": seed, "checkpoint": str(run)}
    cell["checkpoint_env_steps"] = agent.state.env_steps
    space = gym_space(agent.learner.act_space)
    space.seed(seed)
    cell["random_return"] = real_return(agent, lambda o: space.sample(), 20, 90_000 + seed)
    cell["actor_return"] = agent.evaluate(episodes=20)["eval/return"]
    started = time.time()

    def dream(a: Any) -> DreamEnv:  # the dream from the real env's resets, as a user would first try it
        return DreamEnv(a, seed=seed + 1000 * len(cell.get("rounds", [])))

    learner: Any = None
    if kind == "sb3":
        learner = SB3Learner(seed)
        first, later = DREAM_STEPS[env_id]
        learner.learn(dream(agent), first)
        cell["dream_steps"] = {"round0": first, "per_round": later}
    else:
        reset_actor_critic(agent, seed)
        first, later = REVERIE_UPDATES
        train_in_imagination(agent, replay, first, seed)
        cell["imagination_updates"] = {"round0": first, "per_round": later}
    cell["rounds"] = []

    def on_round(reports: list[dict[str, Any]]) -> None:
        r = reports[-1]
        env = dream(agent)
        try:
            dreamt = dream_return(env, None if learner is None else learner.act)
        finally:
            env.close()
        keep = ("exploit_rate", "endings", "missed_endings", "false_endings", "ending_cont", "ending_auroc")
        row = {"round": r["round"], "real_steps": r["real_steps"], "dream_return": dreamt["return"]}
        row |= {"dream_length": dreamt["length"], "real_return": r["real_return"], "seconds": time.time() - started}
        row |= {k: r.get(k) for k in keep} | {"ending_examples": r.get("ending_examples", [])[:2]}
        cell["rounds"].append(row)
        print(
            f"{env_id}/{kind} seed {seed} round {r['round']}: real {r['real_return']:.1f}, dream "
            f"{dreamt['return']:.1f}, endings missed {r['missed_endings']}/{r['endings']}",
            flush=True,
        )

    reports = correct(
        agent,
        replay,
        rounds=rounds,
        episodes=episodes,
        rl_steps=later,
        seed=seed,
        on_round=on_round,
        learner=learner,
        dream_steps=later,
    )
    # the policy correct() handed back (its best round's), on episodes it was not chosen on
    kept = next(r["round"] for r in reports if r["kept"])
    if learner is None:
        kept_return = agent.evaluate(episodes=20, seed=70_000 + seed)["eval/return"]
    else:
        kept_return = real_return(agent, learner.act, 20, 70_000 + seed)
    cell["kept"] = {"round": kept, "real_return": kept_return}
    cell["minutes"] = (time.time() - started) / 60
    if kind == "sb3":
        first, later = DREAM_STEPS[env_id]
        total = first + rounds * later
        reference = SB3Learner(seed)
        reference.learn(real_env(env_id), total)
        cell["real_trained_steps"] = total
        cell["real_trained_return"] = real_return(agent, reference.act, 20, 80_000 + seed)
    else:
        cell["real_trained_return"] = cell["actor_return"]  # Reverie's actor-critic trained with real play
    lo, hi = cell["random_return"], cell["real_trained_return"]
    for row in [*cell["rounds"], cell["kept"]]:
        row |= {"random_return": lo, "real_trained_return": hi, "normalised": (row["real_return"] - lo) / (hi - lo)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell, indent=1) + "\n")
    os.replace(tmp, out)


# ---------------------------------------------------------------------------------------------- the job
def summarise(cells: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {}
    for key in sorted({f"{c['env']}/{c['learner']}" for c in cells}):
        mine = sorted((c for c in cells if f"{c['env']}/{c['learner']}" == key), key=lambda c: c["seed"])
        rounds = []
        for r in range(min(len(c["rounds"]) for c in mine)):
            rows = [c["rounds"][r] for c in mine]
            mean = {
                k: float(np.mean([row[k] for row in rows]))
                for k in (
                    "real_steps",
                    "dream_return",
                    "real_return",
                    "real_trained_return",
                    "random_return",
                    "normalised",
                )
            }
            rounds.append({"round": r, **mean, "normalised_per_seed": [row["normalised"] for row in rows]})
        last = rounds[-1]["normalised_per_seed"] if rounds else []
        kept = [c["kept"]["normalised"] for c in mine]
        out[key] = {
            "rounds": rounds,
            "kept": {"rounds": [c["kept"]["round"] for c in mine], "normalised_per_seed": kept},
            "seeds": {str(c["seed"]): c for c in mine},
            "seeds_at_0.8": f"{sum(v >= 0.8 for v in kept)} of {len(kept)}",
            "seeds_at_0.8_last_round": f"{sum(v >= 0.8 for v in last)} of {len(last)}",
        }
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in result if "/" in k]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for seed, cell in result[key]["seeds"].items():
            ax.plot(
                [r["round"] for r in cell["rounds"]],
                [r["normalised"] for r in cell["rounds"]],
                "o-",
                label=f"seed {seed}",
            )
        kept = result[key]["kept"]
        for i, (r, v) in enumerate(zip(kept["rounds"], kept["normalised_per_seed"], strict=True)):
            ax.plot([r], [v], "*", ms=11, color=f"C{i}", markeredgecolor="black", zorder=3)
        ax.plot([], [], "*", color="grey", label="kept, fresh episodes")
        ax.set_xticks(range(result["rounds"] + 1))
        ax.axhline(0.8, color="grey", ls="--", lw=0.8)
        ax.axhline(1.0, color="black", lw=0.5)
        ax.set(title=key, xlabel="correction round", ylabel="real return (random 0, real-trained 1)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=20, help="real episodes per round")
    parser.add_argument("--jobs", type=int, default=2, help="cells run side by side (one thread each)")
    parser.add_argument("--fresh", action="store_true", help="run every cell again")
    parser.add_argument("--cell", nargs=3, metavar=("ENV", "LEARNER", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = [e for e in args.envs if e not in DREAM_STEPS]
    if unknown:
        sys.exit(f"dream_transfer: no budget for {unknown}; pick from {list(DREAM_STEPS)}.")
    if args.cell:
        env_id, kind, seed = args.cell
        run_cell(env_id, kind, int(seed), args.rounds, args.episodes, RUNS / f"{env_id}_{kind}_{seed}.json")
        return
    if "sb3" in args.learners:
        try:
            import stable_baselines3  # noqa: F401
        except ImportError:
            sys.exit("dream_transfer: the sb3 learner needs Stable-Baselines3: pip install -e .[sb3]")
    todo = [(e, k, s) for e in args.envs for k in args.learners for s in args.seeds]
    for e, _, s in todo:
        checkpoint_of(e, s)  # say what is missing before anything runs
    pending = [c for c in todo if args.fresh or not (RUNS / f"{c[0]}_{c[1]}_{c[2]}.json").exists()]
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    started: list[subprocess.Popen] = []
    for e, k, s in pending:
        while sum(p.poll() is None for p in started) >= args.jobs:
            time.sleep(2)
        cmd = [
            sys.executable,
            __file__,
            "--cell",
            e,
            k,
            str(s),
            "--rounds",
            str(args.rounds),
            "--episodes",
            str(args.episodes),
        ]
        started.append(subprocess.Popen(cmd, env=env))
    failed = [p.args for p in started if p.wait() != 0]
    cells = [
        json.loads((RUNS / f"{e}_{k}_{s}.json").read_text())
        for e, k, s in todo
        if (RUNS / f"{e}_{k}_{s}.json").exists()
    ]
    result = {
        "command": " ".join(["python benchmarks/dream_transfer.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "rounds": args.rounds,
        "episodes_per_round": args.episodes,
        **summarise(cells),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dream_transfer.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, RESULTS / "dream_transfer.png")
    for key in (k for k in result if "/" in k):
        rounds, kept = result[key]["rounds"], [round(v, 2) for v in result[key]["kept"]["normalised_per_seed"]]
        print(key, [round(r["normalised"], 2) for r in rounds], "kept", kept, result[key]["seeds_at_0.8"])
    if failed:
        sys.exit(f"dream_transfer: {len(failed)} cell(s) failed; run again to retry them.")


if __name__ == "__main__":
    main()
