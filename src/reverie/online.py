"""The online loop: act in envs, store steps in replay, update at the train ratio, evaluate, save.

The loop takes the agent and an env factory; the agent knows nothing about loops.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reverie.envs.base import model_keys
from reverie.logger import Logger, Progress

if TYPE_CHECKING:
    from reverie.agent import Dreamer

log = logging.getLogger("reverie.online")

RECORD_KEYS = ("reward", "is_first", "is_last", "is_terminal")
ACHIEVEMENT = "log/achievement_"


class EpisodeStats:
    """Running return and length per env; finished episodes are handed to the logger."""

    def __init__(self, n: int):
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
            unlocked = {k[len(ACHIEVEMENT) :]: float(obs[k][i] > 0) for k in obs if k.startswith(ACHIEVEMENT)}
            if unlocked:  # per-achievement success rate over the episodes of each logging window
                logger.scalars({f"episode/achievement/{k}": v for k, v in unlocked.items()})
                logger.scalar("episode/achievements", sum(unlocked.values()))


class OnlineTrainer:
    """Runs :meth:`Dreamer.learn`: one object per call, holding the envs and the loop state."""

    def __init__(self, agent: Dreamer, logger: Logger):
        self.agent, self.cfg, self.logger = agent, agent.config, logger
        env = self.cfg.env
        self.envs = agent.make_envs(env.num_envs, self.cfg.train.seed + 1000 * agent.counters["runs"], env.parallel)
        self.keys = model_keys(self.envs.obs_space)
        self.rng = np.random.default_rng(self.cfg.train.seed + agent.counters["env_steps"])
        self.stats = EpisodeStats(self.envs.num_envs)
        self.stop = False
        self.warned = False
        # An agent that learned offline acts with its own policy from the first step (no random prefill).
        self.prefill = 0 if agent.counters["offline_updates"] else self.cfg.train.prefill

    def _random_actions(self) -> np.ndarray:
        space = self.envs.act_space["action"]
        return np.stack([space.sample(self.rng) for _ in range(self.envs.num_envs)])

    def _record(self, obs: dict[str, np.ndarray], prev_action: np.ndarray) -> None:
        replay = self.agent.replay
        for i in range(self.envs.num_envs):
            step = {k: obs[k][i] for k in (*self.keys, *RECORD_KEYS)}
            step["action"] = prev_action[i]
            replay.add(step, stream=i)

    def run(self, total: int) -> None:
        """Train until the agent's env-step counter reaches ``total``."""
        agent, cfg, counters = self.agent, self.cfg, self.agent.counters
        learner = agent.learner
        n, repeat = self.envs.num_envs, cfg.env.action_repeat
        batch_steps = cfg.train.batch_size * cfg.train.batch_length
        obs = self.envs.step({"action": self._random_actions(), "reset": np.ones(n, bool)})
        prev_action = np.zeros((n, learner.action_dim), np.float32)
        state = None
        marks = {k: counters["env_steps"] for k in ("log", "save", "eval", "video")}
        start_time, start_steps, start_updates = time.time(), counters["env_steps"], counters["updates"]
        progress = Progress(total, cfg.run.progress, f"train {cfg.env.id}")
        try:
            while counters["env_steps"] < total and not self.stop:
                self._record(obs, prev_action)
                self.stats.update(obs, self.logger)
                action, state, vec = learner.policy(obs, state)
                if counters["env_steps"] < self.prefill:
                    action = self._random_actions()
                    state["action"] = vec = learner.encode_action(torch.as_tensor(action, device=learner.device))
                reset = np.asarray(obs["is_last"], bool)
                obs = self.envs.step({"action": action, "reset": reset})
                prev_action = vec.cpu().numpy().astype(np.float32)
                prev_action[np.asarray(obs["is_first"], bool)] = 0.0
                for i in getattr(self.envs, "last_restarts", []):
                    dropped = agent.replay.discard_open_episode(i)
                    self.logger.scalar("env/restarts", 1.0)
                    log.warning("env worker %d restarted; discarded %d steps of its episode", i, dropped)
                counters["agent_steps"] += n
                counters["env_steps"] += n * repeat
                if counters["env_steps"] >= self.prefill and self._replay_ready():
                    # The ratio counts agent steps after prefill, so training starts without a burst.
                    trained = counters["agent_steps"] - self.prefill // repeat
                    online_updates = counters["updates"] - counters["offline_updates"]
                    due = int(trained * cfg.train.train_ratio / batch_steps) + 1 - online_updates
                    for _ in range(max(0, due)):
                        self.logger.scalars(agent.update())
                progress.update(counters["env_steps"], counters["updates"], self.stats.last_return)
                if cfg.run.max_minutes and time.time() - start_time > 60 * cfg.run.max_minutes:
                    log.info(
                        "run.max_minutes (%.1f) reached at env step %d", cfg.run.max_minutes, counters["env_steps"]
                    )
                    self.stop = True
                self._periodic(marks, start_time, start_steps, start_updates)
        finally:
            progress.close()
            self.envs.close()

    def _replay_ready(self) -> bool:
        """Whether replay holds a full training sequence (a resumed run may have lost its replay folder)."""
        need = self.cfg.train.batch_length
        if self.agent.replay.longest_stream() >= need:
            return True
        if not self.warned:
            log.warning("replay holds no sequence of %d steps yet: acting without updates until it does", need)
            self.warned = True
        return False

    def _periodic(self, marks: dict[str, int], t0: float, steps0: int, updates0: int) -> None:
        agent, run, step = self.agent, self.cfg.run, self.agent.counters["env_steps"]
        if run.eval_every and step - marks["eval"] >= run.eval_every:
            marks["eval"] = step
            metrics = agent.evaluate(episodes=run.eval_episodes)
            self.logger.scalars(metrics)
            if metrics["eval/return"] >= run.stop_at_return:
                log.info("eval/return %.1f reached run.stop_at_return at step %d", metrics["eval/return"], step)
                self.stop = True
        if step - marks["log"] >= run.log_every:
            marks["log"] = step
            elapsed = max(time.time() - t0, 1e-9)
            self.logger.scalars(
                {
                    "fps/env": (step - steps0) / elapsed,
                    "fps/updates": (agent.counters["updates"] - updates0) / elapsed,
                    "replay/steps": float(len(agent.replay)),
                }
            )
            self.logger.write(step)
        if run.video_every and step - marks["video"] >= run.video_every and len(agent.replay):
            marks["video"] = step
            for key, frames in agent.report().items():
                self.logger.video(key, frames)
        if run.save_every and step - marks["save"] >= run.save_every:
            marks["save"] = step
            agent.save_run()


def final_report(agent: Dreamer, metrics: dict[str, Any]) -> str:
    """One line for the terminal at the end of a run."""
    parts = [f"env steps {agent.counters['env_steps']}", f"updates {agent.counters['updates']}"]
    for key in ("eval/return", "eval/length"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.1f}")
    return ", ".join(parts)
