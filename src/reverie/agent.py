"""``Dreamer``: the agent users hold. The verbs are those of Stable-Baselines3 and d3rlpy.

Example:
    >>> from reverie import Dreamer, make_config
    >>> agent = Dreamer(make_config(["debug"], ["run.logdir=/tmp/reverie-doc"]))  # doctest: +SKIP
    >>> agent.learn("CartPole-v1", steps=400)                                     # doctest: +SKIP
    >>> agent.save("/tmp/reverie-doc/ckpt"); agent = Dreamer.load("/tmp/reverie-doc/ckpt")  # doctest: +SKIP
    >>> action, state = agent.predict(obs, state=None, deterministic=True)        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reverie.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from reverie.config import Config, make_config, set_key
from reverie.envs import BatchEnv, Env, ParallelEnv, make_batch_env, make_env
from reverie.envs.base import Space, model_keys
from reverie.learner import Learner, PolicyState
from reverie.logger import Logger, make_logger
from reverie.replay import Replay

log = logging.getLogger("reverie")

EnvFactory = Callable[[], Env]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def achievement_metrics(finals: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    """Crafter-style score and success rates (percent) from the ``log/achievement_*`` keys of finished episodes.

    Empty when the env reports no achievements.
    """
    from reverie.crafter_eval import LOG_PREFIX, achievement_table, crafter_score

    if not finals or not any(k.startswith(LOG_PREFIX) for k in finals[0]):
        return {}
    rates = achievement_table(finals)
    out = {f"{prefix}/score": crafter_score(rates)}
    out.update({f"{prefix}/success/{name}": rate for name, rate in rates.items()})
    return out


class Dreamer:
    """A DreamerV3 agent: world model plus actor-critic trained in imagination.

    Args:
        config: the full config (default: :func:`make_config` with no presets).
        obs_space: observation spaces; default: read from ``config.env`` when first needed.
        act_space: the action space, likewise.
    """

    def __init__(
        self,
        config: Config | None = None,
        obs_space: dict[str, Space] | None = None,
        act_space: Space | None = None,
    ):
        self.config = config or make_config()
        if self.config.train.threads:
            torch.set_num_threads(self.config.train.threads)
        seed_everything(self.config.train.seed)
        self.counters = {"env_steps": 0, "agent_steps": 0, "updates": 0, "runs": 0}
        self._learner: Learner | None = None
        self._replay: Replay | None = None
        self._logger: Logger | None = None
        self.env_factory: EnvFactory | None = None
        """A user's env factory given to :meth:`learn`; None means ``config.env``."""
        if obs_space is not None and act_space is not None:
            self._build(obs_space, act_space)

    # ----------------------------------------------------------------- construction
    def _build(self, obs_space: dict[str, Space], act_space: Space) -> None:
        keys = model_keys(obs_space)
        self._learner = Learner(self.config, {k: obs_space[k] for k in keys}, act_space)

    def make_envs(self, count: int, seed: int, parallel: bool = False) -> BatchEnv | ParallelEnv:
        """``count`` envs from the user's factory (see :meth:`learn`) or from ``config.env``."""
        if self.env_factory is None:
            return make_batch_env(dataclasses.replace(self.config.env, num_envs=count, parallel=parallel), seed)
        factories = [self.env_factory] * count
        return ParallelEnv(factories) if parallel and count > 1 else BatchEnv(factories)

    def _spaces_from_env(self) -> None:
        env = self.env_factory() if self.env_factory is not None else make_env(self.config.env, self.config.train.seed)
        try:
            self._build(env.obs_space, env.act_space["action"])
        finally:
            env.close()

    @property
    def learner(self) -> Learner:
        """The networks; built from ``config.env`` on first use if no spaces were given."""
        if self._learner is None:
            self._spaces_from_env()
        assert self._learner is not None
        return self._learner

    @property
    def logdir(self) -> Path:
        return Path(self.config.run.logdir)

    @property
    def replay(self) -> Replay:
        """The run's replay, stored in ``logdir/replay`` (loaded back on resume)."""
        if self._replay is None:
            t = self.config.train
            self._replay = Replay(
                self.logdir / "replay",
                t.replay_size,
                t.replay_chunk,
                t.recent_frac,
                t.seed + self.counters["updates"],
            )
        return self._replay

    @property
    def logger(self) -> Logger:
        if self._logger is None:
            self._logger = make_logger(self.logdir, self.config.run)
        return self._logger

    # ----------------------------------------------------------------- the verbs
    def learn(self, env: str | EnvFactory | None = None, steps: int | None = None) -> Dreamer:
        """Train online until the env-step counter reaches ``steps`` (default ``train.steps``).

        Args:
            env: an env id (overrides ``config.env.id``), or a zero-argument function that builds one of
                your own :class:`reverie.envs.Env` (a module-level function or ``functools.partial`` when
                ``env.num_envs > 1``, since worker processes receive it pickled). Default: ``config.env``.
            steps: the total env-step budget, counting steps of earlier calls and resumed runs.

        Example:
            >>> agent = Dreamer(make_config(["classic"]))             # doctest: +SKIP
            >>> agent.learn(functools.partial(MyEnv, level=3), 20_000)  # doctest: +SKIP
        """
        from reverie.online import OnlineTrainer

        if callable(env):
            self.env_factory = env
        elif env is not None and env != self.config.env.id:
            if self._learner is not None:
                raise ValueError(f"This agent was built for env '{self.config.env.id}'; it cannot learn '{env}'.")
            set_key(self.config, "env.id", env)
        total = steps if steps is not None else self.config.train.steps
        _ = self.learner  # builds the networks (and checks the env) before anything is written
        self.logdir.mkdir(parents=True, exist_ok=True)
        (self.logdir / "config.json").write_text(self.config.to_json())
        if not (self.logdir / "checkpoint").exists():
            self.save_run()  # a run killed before its first periodic save can still be resumed
        trainer = OnlineTrainer(self, self.logger)
        self.counters["runs"] += 1
        trainer.run(total)
        metrics = self.evaluate(episodes=self.config.run.eval_episodes)
        self.logger.scalars(metrics)
        self.logger.write(self.counters["env_steps"])
        self.last_eval = metrics
        self.save_run()
        return self

    def update(self) -> dict[str, float]:
        """One gradient update on a batch from replay; returns ``train/...`` metrics."""
        t = self.config.train
        batch = self.replay.sample(t.batch_size, t.batch_length)
        metrics = self.learner.train_step(batch)
        self.counters["updates"] += 1
        return {f"train/{k}": v for k, v in metrics.items()}

    def report(self, batch_size: int = 4, context: int = 5) -> dict[str, np.ndarray]:
        """Open-loop prediction videos (truth / model / error rows) for each image key.

        Returns ``{"report/openloop/<key>": frames (T, 3H, B*W, C) uint8}``; empty for vector-only models.
        """
        from reverie.logger import openloop_video

        learner = self.learner
        if not learner.wm.decoder.images:
            return {}
        length = min(self.config.train.batch_length, 50)
        batch = learner.to_tensors(self.replay.sample(batch_size, max(length, context + 2)))
        batch["is_first"][:, 0] = True
        videos = learner.wm.openloop(batch, context)
        return {
            f"report/openloop/{key}": openloop_video(truth.cpu().numpy(), model.cpu().numpy())
            for key, (truth, model) in videos.items()
        }

    def predict(
        self, obs: dict[str, Any], state: PolicyState | None = None, deterministic: bool = False
    ) -> tuple[np.ndarray, PolicyState]:
        """Choose actions for one observation dict or a batch of them (leading axis N).

        Args:
            obs: an observation dict as envs return it; ``is_first`` resets the state. Unbatched
                observations give an unbatched action.
            state: the state returned by the previous call (None at the start).
            deterministic: take the policy's mode instead of sampling.

        Returns:
            ``(action, state)``.
        """
        learner = self.learner
        key = next(iter(learner.obs_space))
        batched = np.ndim(obs[key]) > len(learner.obs_space[key].shape)
        data = {k: np.asarray(obs[k]) if batched else np.asarray(obs[k])[None] for k in learner.obs_space}
        n = len(data[key])
        data["is_first"] = np.broadcast_to(np.asarray(obs.get("is_first", state is None), bool), (n,)).copy()
        action, state, _ = learner.policy(data, state, deterministic)
        return (action if batched else action[0]), state

    def evaluate(self, env: str | None = None, episodes: int = 10, deterministic: bool = True) -> dict[str, float]:
        """Run ``episodes`` full episodes in fresh envs; returns ``eval/return`` (mean) and more."""
        cfg = self.config
        seed = cfg.train.seed + 10_000 + self.counters["env_steps"]
        if env is not None:
            envs = make_batch_env(dataclasses.replace(cfg.env, id=env, num_envs=episodes, parallel=False), seed)
        else:
            envs = self.make_envs(episodes, seed)
        returns, lengths = np.zeros(episodes), np.zeros(episodes, np.int64)
        done = np.zeros(episodes, bool)
        finals: list[dict[str, Any]] = [{} for _ in range(episodes)]  # log/ keys at each episode's end
        space = envs.act_space["action"]
        noop = np.stack([space.sample(np.random.default_rng(0))] * episodes)
        obs = envs.step({"action": noop, "reset": np.ones(episodes, bool)})
        state = None
        try:
            while not done.all():
                action, state = self.predict(obs, state, deterministic)
                obs = envs.step({"action": action, "reset": np.zeros(episodes, bool)})
                live = ~done
                returns[live] += obs["reward"][live]
                lengths[live] += 1
                for i in np.flatnonzero(live & np.asarray(obs["is_last"], bool)):
                    finals[i] = {k: v[i] for k, v in obs.items() if k.startswith("log/")}
                done |= np.asarray(obs["is_last"], bool)
        finally:
            envs.close()
        metrics = {
            "eval/return": float(returns.mean()),
            "eval/return_std": float(returns.std()),
            "eval/length": float(lengths.mean()),
        }
        metrics.update(achievement_metrics(finals, "eval"))
        return metrics

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        learner = self.learner
        return {"model": learner.state_dict(), "optim": learner.opt.state_dict()}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write a checkpoint folder (config, weights, optimiser state, counters, spaces) atomically."""
        learner = self.learner
        return save_checkpoint(
            directory,
            self.config,
            self.state_dict(),
            dict(self.counters),
            learner.obs_space,
            learner.act_space,
        )

    def save_run(self) -> None:
        """Flush the replay, then checkpoint into ``logdir/checkpoint``: what ``--resume`` continues from.

        The replay goes first, so a kill in between never leaves counters ahead of the data on disk.
        """
        if self._replay is not None:
            self._replay.save()
        self.save(self.logdir / "checkpoint")

    @classmethod
    def load(cls, directory: str | os.PathLike, config: Config | None = None) -> Dreamer:
        """Rebuild an agent from a checkpoint folder (or a run folder holding ``checkpoint/``).

        Args:
            directory: the checkpoint or run folder.
            config: replaces the stored config (model sizes must match the weights).
        """
        data = load_checkpoint(directory)
        agent = cls(config or data["config"], data["obs_space"], data["act_space"])
        learner = agent.learner
        try:
            learner.load_state_dict(data["state"]["model"])
            learner.opt.load_state_dict(data["state"]["optim"])
        except (KeyError, RuntimeError, ValueError) as err:
            reason = str(err).splitlines()[0][:160]
            raise CheckpointError(f"Checkpoint '{data['path']}' does not fit this config: {reason}") from None
        agent.counters.update(data["counters"])
        return agent
