"""The online loop: act in envs, store steps in replay, update at the train ratio, evaluate, save.

The loop takes the parts it needs (learner, replay, envs, logger, training state) and three callbacks of the
agent that composes them (evaluate, save, videos); it knows nothing about the agent.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np
import torch

import reverie.distributed as distributed
from reverie.checkpoint import TrainState
from reverie.config import Config, TrainConfig
from reverie.envs.base import model_keys
from reverie.envs.parallel import BatchEnv, ParallelEnv
from reverie.interrupt import StopOnSignal
from reverie.learner import Learner
from reverie.logger import Logger, Progress
from reverie.plugins import summarize
from reverie.replay import Replay

log = logging.getLogger("reverie.online")

RECORD_KEYS = ("reward", "is_first", "is_last", "is_terminal")
"""The reserved keys stored with each step, beside the model's observation keys and the action."""


def replay_update(learner: Learner, replay: Replay, state: TrainState, train: TrainConfig) -> dict[str, float]:
    """One ``online`` update on a batch from ``replay``, counted in ``state``; returns ``train/...`` metrics.

    An agent whose offline RL froze a behaviour-cloning prior keeps its KL to it (``ac.prior_kl``). On several ranks
    each samples its share of ``train.batch_size`` and the gradients are averaged (:mod:`reverie.distributed`).
    """
    batch = replay.sample(distributed.split(train.batch_size, "train.batch_size"), train.batch_length)
    metrics = learner.update(batch, "online", prior=state.has_prior)
    state.record_update(metrics)
    return {f"train/{k}": v for k, v in metrics.items()}


class EpisodeStats:
    """Running return and length per env; finished episodes go to the logger (with the game's summary of each,
    e.g. ``episode/success/<name>``, averaged over the logging window into success rates)."""

    def __init__(self, n: int, env_id: str):
        self.env_id = env_id
        self.ret = np.zeros(n)
        self.length = np.zeros(n, np.int64)
        self.last_return: float | None = None

    def update(self, obs: dict[str, np.ndarray], logger: Logger) -> None:
        first = np.asarray(obs["is_first"], bool)
        self.ret[first], self.length[first] = 0.0, 0
        self.ret += np.asarray(obs["reward"], np.float64)
        self.length += ~first
        for i in np.flatnonzero(obs["is_last"]):
            self.last_return = float(self.ret[i])
            logger.scalars({"episode/return": self.ret[i], "episode/length": float(self.length[i])})
            final = {k: v[i] for k, v in obs.items() if k.startswith("log/")}
            logger.scalars({f"episode/{k}": v for k, v in summarize(self.env_id, [final]).items()})


@dataclasses.dataclass
class Callbacks:
    """What the loop asks of the agent that runs it."""

    evaluate: Callable[[], dict[str, float]]
    """Evaluate the policy in fresh envs; ``eval/...`` metrics."""
    save: Callable[[], None]
    """Checkpoint the run (replay first)."""
    videos: Callable[[], dict[str, np.ndarray]]
    """Open-loop prediction videos by metric key (empty for vector models)."""


class OnlineLoop:
    """Runs :meth:`reverie.agent.Dreamer.learn`: one object per call, holding the envs and the loop state.

    Args:
        learner: the networks.
        replay: where steps go and batches come from.
        envs: the envs to act in (closed at the end).
        logger: metrics.
        state: the training state (counters; ``offline_phase`` says whether the actor keeps its BC prior).
        cfg: the config (``train``, ``run``, ``env``).
        callbacks: evaluate, save and videos.
    """

    def __init__(
        self,
        learner: Learner,
        replay: Replay,
        envs: BatchEnv | ParallelEnv,
        logger: Logger,
        state: TrainState,
        cfg: Config,
        callbacks: Callbacks,
    ):
        self.learner, self.replay, self.envs, self.logger = learner, replay, envs, logger
        self.state, self.cfg, self.callbacks = state, cfg, callbacks
        self.keys = model_keys(self.envs.obs_space)
        self.job = distributed.world()
        self.rng = np.random.default_rng(distributed.rank_seed(cfg.train.seed + state.env_steps))
        self.stats = EpisodeStats(self.envs.num_envs, cfg.env.id)
        self.stop = False
        self.warned = False
        self.ready = False
        # An agent that learned offline acts with its own policy from the first step (no random prefill).
        self.prefill = 0 if state.offline_updates else cfg.train.prefill

    def _random_actions(self) -> np.ndarray:
        space = self.envs.act_space["action"]
        return np.stack([space.sample(self.rng) for _ in range(self.envs.num_envs)])

    def _record(self, obs: dict[str, np.ndarray], prev_action: np.ndarray) -> None:
        for i in range(self.envs.num_envs):
            step = {k: obs[k][i] for k in (*self.keys, *RECORD_KEYS)}
            step["action"] = prev_action[i]
            self.replay.add(step, stream=i)

    def update(self) -> dict[str, float]:
        """One online update on a replayed batch; ``train/...`` metrics."""
        return replay_update(self.learner, self.replay, self.state, self.cfg.train)

    def run(self, total: int, interrupt: StopOnSignal | None = None) -> None:
        """Train until the env-step counter reaches ``total`` (or ``interrupt`` asks to stop).

        On several ranks the counters count the whole job's steps (every rank steps its envs once per pass, in
        step), so the train ratio, prefill, budget and every cadence mean what they mean in one process; whether
        to stop is agreed by all ranks at the top of each pass.
        """
        cfg, counters, learner = self.cfg, self.state, self.learner
        n, repeat, ranks = self.envs.num_envs, cfg.env.action_repeat, self.job.size
        batch_steps = cfg.train.batch_size * cfg.train.batch_length
        obs = self.envs.step({"action": self._random_actions(), "reset": np.ones(n, bool)})
        prev_action = np.zeros((n, learner.action_dim), np.float32)
        state = None
        marks = dict.fromkeys(("log", "save", "eval", "video"), counters.env_steps)
        start_time, start_steps, start_updates = time.time(), counters.env_steps, counters.updates
        progress = Progress(total, cfg.run.progress and self.job.main, f"train {cfg.env.id}")
        try:
            while not distributed.any_rank(
                counters.env_steps >= total or self.stop or bool(interrupt and interrupt.requested)
            ):
                self._record(obs, prev_action)
                self.stats.update(obs, self.logger)
                action, state, vec = learner.policy(obs, state)
                if counters.env_steps < self.prefill:
                    action = self._random_actions()
                    state["action"] = vec = learner.encode_action(torch.as_tensor(action, device=learner.device))
                reset = np.asarray(obs["is_last"], bool)
                obs = self.envs.step({"action": action, "reset": reset})
                prev_action = vec.cpu().numpy().astype(np.float32)
                prev_action[np.asarray(obs["is_first"], bool)] = 0.0
                for i in getattr(self.envs, "last_restarts", []):
                    dropped = self.replay.discard_open_episode(i)
                    self.logger.scalar("env/restarts", 1.0)
                    log.warning("env worker %d restarted; discarded %d steps of its episode", i, dropped)
                for i in getattr(self.envs, "last_nonfinite", []):
                    if not counters.nonfinite_steps:
                        log.warning("env %d returned NaN or inf (set to 0 and counted in env/nonfinite_steps)", i)
                    counters.nonfinite_steps += 1
                counters.agent_steps += n * ranks
                counters.env_steps += n * repeat * ranks
                if counters.env_steps >= self.prefill and self._replay_ready():
                    # The ratio counts agent steps after prefill, so training starts without a burst.
                    trained = counters.agent_steps - self.prefill // repeat
                    online_updates = counters.updates - counters.offline_updates
                    due = int(trained * cfg.train.train_ratio / batch_steps) + 1 - online_updates
                    for _ in range(max(0, due)):
                        self.logger.scalars(self.update())
                progress.update(counters.env_steps, counters.updates, self.stats.last_return)
                if cfg.run.max_minutes and self._timed_out(start_time):
                    log.info("run.max_minutes (%.1f) reached at env step %d", cfg.run.max_minutes, counters.env_steps)
                    self.stop = True
                self._periodic(marks, start_time, start_steps, start_updates)
            distributed.agree_to_stop(interrupt)
        finally:
            progress.close()
            self.envs.close()
            self.logger.scalars(faults(counters))  # written with the run's last metrics

    def _timed_out(self, start_time: float) -> bool:
        return time.time() - start_time > 60 * self.cfg.run.max_minutes

    def _replay_ready(self) -> bool:
        """Whether replay (every rank's) holds a full training sequence (a resumed run may have lost its replay)."""
        need = self.cfg.train.batch_length
        if self.ready or distributed.all_ranks(self.replay.longest_stream() >= need):
            self.ready = True
            return True
        if not self.warned:
            log.warning("replay holds no sequence of %d steps yet: acting without updates until it does", need)
            self.warned = True
        return False

    def _periodic(self, marks: dict[str, int], t0: float, steps0: int, updates0: int) -> None:
        run, step = self.cfg.run, self.state.env_steps
        if run.eval_every and run.eval_episodes and step - marks["eval"] >= run.eval_every:
            marks["eval"] = step
            metrics = self.callbacks.evaluate() if self.job.main else {}  # rank 0 evaluates; the stop is agreed
            self.logger.scalars(metrics)
            if metrics and metrics["eval/return"] >= run.stop_at_return:
                log.info("eval/return %.1f reached run.stop_at_return at step %d", metrics["eval/return"], step)
                self.stop = True
        if step - marks["log"] >= run.log_every:
            marks["log"] = step
            elapsed = max(time.time() - t0, 1e-9)
            self.logger.scalars(
                {
                    "fps/env": (step - steps0) / elapsed,
                    "fps/updates": (self.state.updates - updates0) / elapsed,
                    "replay/steps": float(len(self.replay)),
                    **faults(self.state),
                }
            )
            self.logger.write(step)
        if run.video_every and step - marks["video"] >= run.video_every and len(self.replay) and self.job.main:
            marks["video"] = step
            for key, frames in self.callbacks.videos().items():
                self.logger.video(key, frames)
        if run.save_every and step - marks["save"] >= run.save_every:
            marks["save"] = step
            self.callbacks.save()


def faults(state: TrainState) -> dict[str, float]:
    """The fault counters of a run, as metrics: env steps that held NaN or inf, updates skipped."""
    return {"env/nonfinite_steps": float(state.nonfinite_steps), "opt/skipped_updates": float(state.skipped_updates)}
