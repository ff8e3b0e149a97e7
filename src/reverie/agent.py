"""``Dreamer``: the agent users hold. The verbs are those of Stable-Baselines3 and d3rlpy.

The facade composes the parts (learner, replay, envs, logger, training state) and hands them to the loops
(:mod:`reverie.online`, :mod:`reverie.offline`, :mod:`reverie.evaluation`); the loops never import it.

Example:
    >>> from reverie import Dreamer, make_config
    >>> agent = Dreamer(make_config(["debug"], ["run.logdir=/tmp/reverie-doc"]))  # doctest: +SKIP
    >>> agent.learn("CartPole-v1", steps=400)                                     # doctest: +SKIP
    >>> agent.save("/tmp/reverie-doc/ckpt"); agent = Dreamer.load("/tmp/reverie-doc/ckpt")  # doctest: +SKIP
    >>> action, state = agent.predict(obs, state=None, deterministic=True)        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import reverie.distributed as distributed
from reverie.checkpoint import CheckpointError, TrainState, holds_run, load_checkpoint, save_checkpoint
from reverie.config import Config, make_config, set_key
from reverie.data.dataset import Dataset
from reverie.data.format import DatasetError
from reverie.envs import BatchEnv, Env, EnvError, ParallelEnv, make_batch_env, make_env
from reverie.envs.base import Space, model_keys
from reverie.evaluation import evaluate
from reverie.fileio import FolderLock, write_text
from reverie.interrupt import StopOnSignal
from reverie.learner import Head, Learner, PolicyState
from reverie.logger import Logger, make_logger, openloop_video
from reverie.offline import OfflineLoop, recipe_replay
from reverie.online import Callbacks, OnlineLoop, replay_update
from reverie.replay import Replay
from reverie.seeding import seed_everything

log = logging.getLogger("reverie")

EnvFactory = Callable[[], Env]


class Dreamer:
    """A DreamerV3 agent: world model plus actor-critic trained in imagination, online or from recordings.

    Args:
        config: the full config (default: :func:`make_config` with no presets: the DreamerV3 recipe at size1m;
            ``reverie train`` without arguments adds the ``classic`` preset).
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
        distributed.init(self.config.train.device)  # launched by torchrun: join the job (else nothing)
        if self.config.train.threads:
            torch.set_num_threads(self.config.train.threads)
        seed_everything(self.config.train.seed)
        self.state = TrainState()
        """Counters and the offline phase reached; saved with every checkpoint."""
        self.last_eval: dict[str, float] = {}
        self.last_promises: list[tuple[float, float]] = []
        """(promised, real) return pairs of the last evaluation with ``promise_every``."""
        self._learner: Learner | None = None
        self._replay: Replay | None = None
        self._logger: Logger | None = None
        self.env_factory: EnvFactory | None = None
        """A user's env factory given to :meth:`learn`; None means ``config.env``."""
        self._loaded = False  # from a checkpoint: its run folder may be continued
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
        """The run's replay, stored in ``logdir/replay`` (loaded back on resume); on several ranks each keeps its
        shard, ``logdir/replay/rank<r>``, with its share of ``train.replay_size``."""
        if self._replay is None:
            t, job = self.config.train, distributed.world()
            seed = distributed.rank_seed(t.seed + self.state.updates)
            folder = self.logdir / "replay" / f"rank{job.rank}" if job.active else self.logdir / "replay"
            self._replay = Replay(folder, t.replay_size // job.size, t.replay_chunk, t.recent_frac, seed)
        return self._replay

    @property
    def logger(self) -> Logger:
        if self._logger is None:
            self._logger = make_logger(self.logdir, self.config.run)
        return self._logger

    @contextlib.contextmanager
    def _run(self, verb: str) -> Iterator[StopOnSignal]:
        """One ``learn`` or ``fit``: claim the run folder (a lock; a new agent never takes over a folder that holds
        a run), write its config and a first checkpoint (a run killed before its first periodic save can still be
        resumed), and on SIGINT or SIGTERM let the loop stop, save the run and raise ``KeyboardInterrupt``.

        On several ranks rank 0 holds the lock and writes; every rank starts from rank 0's weights and then draws
        its own random numbers."""
        log.info("%s: %s", verb, self.learner.describe())
        job = distributed.world()
        with FolderLock(self.logdir) if job.main else contextlib.nullcontext():
            taken = not self._loaded and self.state.runs == 0 and job.main and holds_run(self.logdir)
            if distributed.from_main(taken):
                raise CheckpointError(
                    f"Run folder '{self.logdir}' already holds a run; continue it (Dreamer.load, reverie train "
                    "--resume) or pick another folder (reverie train --overwrite starts afresh and deletes it)."
                )
            if job.active:
                distributed.broadcast_module(self.learner)
                seed_everything(distributed.rank_seed(self.config.train.seed))
            if job.main:
                write_text(self.logdir / "config.json", self.config.to_json())
            if distributed.from_main(not (self.logdir / "checkpoint").exists()):
                self.save_run()
            self.state.runs += 1
            with StopOnSignal() as stop:
                try:
                    yield stop
                except EnvError:  # an env that keeps crashing: keep what was learned, then report it
                    if not job.active:  # (on several ranks the others cannot join a save: the last one holds)
                        self.save_run()
                    raise
            if stop.requested:
                self.save_run()
                raise KeyboardInterrupt(f"{stop.requested}: the run was saved at its last step")

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
        if callable(env):
            self.env_factory = env
        elif env is not None and env != self.config.env.id:
            if self._learner is not None:
                raise ValueError(f"This agent was built for env '{self.config.env.id}'; it cannot learn '{env}'.")
            set_key(self.config, "env.id", env)
        total = steps if steps is not None else self.config.train.steps
        cfg, job = self.config, distributed.world()
        distributed.split(cfg.train.batch_size, "train.batch_size")  # before the prefill, not after it
        if self.state.agent_steps and self.state.ranks != job.size:
            raise CheckpointError(
                f"This run trained on {self.state.ranks} rank(s), each with its own replay shard; continue it on as "
                f"many (torchrun --nproc-per-node {self.state.ranks}), or start a new run."
            )
        self.state.ranks = job.size
        with self._run("learn") as stop:
            seed = distributed.rank_seed(cfg.train.seed + 1000 * (self.state.runs - 1))
            envs = self.make_envs(cfg.env.num_envs, seed, cfg.env.parallel)
            callbacks = Callbacks(lambda: self.evaluate(episodes=cfg.run.eval_episodes), self.save_run, self.report)
            OnlineLoop(self.learner, self.replay, envs, self.logger, self.state, cfg, callbacks).run(total, stop)
            if not stop.requested:
                self._final_evaluation(self.state.env_steps, deterministic=True, head="actor", promise_every=0)
                self.save_run()
        return self

    def update(self) -> dict[str, float]:
        """One online gradient update on a batch from replay; returns ``train/...`` metrics.

        An agent whose offline RL froze a behaviour-cloning prior keeps its KL to it (``ac.prior_kl``).
        """
        return replay_update(self.learner, self.replay, self.state, self.config.train)

    def report(self, batch_size: int = 4, context: int = 5) -> dict[str, np.ndarray]:
        """Open-loop prediction videos (truth / model / error rows) for each image key.

        Returns ``{"report/openloop/<key>": frames (T, 3H, B*W, C) uint8}``; empty for vector-only models.
        """
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

    def evaluate(
        self,
        env: str | None = None,
        episodes: int = 10,
        deterministic: bool = True,
        head: Head = "actor",
        promise_every: int = 0,
        seed: int | None = None,
    ) -> dict[str, float]:
        """Run ``episodes`` full episodes in fresh envs; returns ``eval/return`` (mean) and more.

        Args:
            env: evaluate on this env id instead of the configured one.
            episodes: episodes, run side by side.
            deterministic: take the policy's mode instead of sampling.
            head: ``actor`` (the RL policy) or ``bc`` (the behaviour-cloning head of an offline agent).
            promise_every: every this many steps, compare the return the model promises over the next
                ``ac.horizon`` steps with what the env gives (``eval/promise_gap`` and more; 0: off).
            seed: the envs' seed (default: from ``train.seed`` and the env steps so far).
        """
        cfg, learner = self.config, self.learner
        learner.actor(head)  # an unknown head fails before any env is made
        if episodes < 1 or promise_every < 0:
            raise ValueError(
                f"evaluate needs episodes >= 1 and promise_every >= 0, got {episodes} and {promise_every}."
            )
        seed = cfg.train.seed + 10_000 + self.state.env_steps if seed is None else seed
        if env is not None:
            envs = make_batch_env(dataclasses.replace(cfg.env, id=env, num_envs=episodes, parallel=False), seed)
            self._check_env_fits(envs, env)
        else:
            envs = self.make_envs(episodes, seed)
        metrics, self.last_promises = evaluate(
            learner, envs, env or cfg.env.id, episodes, deterministic, head, promise_every
        )
        return metrics

    def _check_env_fits(self, envs: BatchEnv | ParallelEnv, env_id: str) -> None:
        """Raise :class:`EnvError` (closing ``envs``) when their observations or actions differ from the model's."""
        learner = self.learner
        have = {k: tuple(envs.obs_space[k].shape) for k in model_keys(envs.obs_space)}
        want = {k: tuple(s.shape) for k, s in learner.obs_space.items()}
        act, mine = envs.act_space["action"], learner.act_space
        same_act = act.discrete == mine.discrete and act.shape == mine.shape and (not act.discrete or act.n == mine.n)
        if have != want or not same_act:
            envs.close()
            raise EnvError(
                f"Env '{env_id}' (observations {have}) does not fit this agent, trained on '{self.config.env.id}' "
                f"(observations {want}, its action space): evaluate it on an env with the same spaces."
            )

    def _final_evaluation(self, step: int, deterministic: bool, head: Head, promise_every: int) -> None:
        """The evaluation at the end of ``learn`` or ``fit`` (``run.eval_episodes``; 0: none), logged at ``step``."""
        episodes = self.config.run.eval_episodes
        if episodes and distributed.world().main:  # rank 0 evaluates; every rank writes (the logger gathers)
            self.last_eval = self.evaluate(
                episodes=episodes, deterministic=deterministic, head=head, promise_every=promise_every
            )
            self.logger.scalars(self.last_eval)
        self.logger.write(step)

    def fit(self, dataset: str | os.PathLike[str] | Dataset, steps: int | None = None) -> Dreamer:
        """Learn world model and agent from a recorded dataset alone; the env is used only to evaluate at the end.

        Episodes without actions train the model through a learned no-action input; episodes without rewards
        train everything but the reward head. See :mod:`reverie.offline` for the phases.

        Args:
            dataset: a dataset folder (``reverie data record`` writes one) or a :class:`reverie.data.Dataset`.
            steps: the total number of offline updates, counting earlier calls and resumed runs
                (default ``offline.steps``).

        Example:
            >>> agent = Dreamer(make_config(["offline"], ["run.logdir=runs/off"]))  # doctest: +SKIP
            >>> agent.fit("data/recorded-play", steps=3000)                        # doctest: +SKIP
            >>> agent.evaluate(episodes=10, promise_every=25)                       # doctest: +SKIP
        """
        data = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        self.adopt_dataset(data)
        total = steps if steps is not None else self.config.offline.steps
        cfg = self.config

        def evaluate_head(head: Head) -> dict[str, float]:
            return self.evaluate(episodes=cfg.run.eval_episodes, head=head)

        with self._run("fit") as stop:
            log.info("loading %d steps of %s into memory", data.num_steps, data.folder)
            replay = recipe_replay(data, cfg, cfg.train.seed + self.state.offline_updates)
            parts = (self.learner, replay, self.logger, self.state, cfg)
            OfflineLoop(*parts, self.save_run, evaluate_head, data.env_id).run(total, stop)
            if not stop.requested:
                self.save_run()
                head: Head = "actor" if self.state.has_prior else "bc"
                self._final_evaluation(self.state.offline_updates, False, head, cfg.run.promise_every)
        return self

    def adopt_dataset(self, data: Dataset) -> None:
        """Build the networks for the dataset's spaces, or check that the existing ones fit them.

        Raises:
            ValueError: the dataset's observation keys, shapes or action space differ from this agent's.
        """
        obs_space, act_space = data.obs_space, data.act_space["action"]
        if self._learner is None:
            set_key(self.config, "env.id", data.env_id)
            limit = data.info.get("creation", {}).get("time_limit")
            if limit and not self.config.env.time_limit:  # evaluate on the episodes the data was recorded on
                set_key(self.config, "env.time_limit", int(limit))
            self._build(obs_space, act_space)
            return
        learner = self._learner
        want = {k: tuple(s.shape) for k, s in learner.obs_space.items()}
        have = {k: tuple(obs_space[k].shape) for k in learner.obs_space if k in obs_space}
        if (
            want != have
            or act_space.discrete != learner.act_space.discrete
            or act_space.shape != learner.act_space.shape
        ):
            raise DatasetError(
                f"Dataset {data.folder} (env '{data.env_id}', keys {sorted(obs_space)}) does not fit this agent, "
                f"built for '{self.config.env.id}' with keys {sorted(want)}. Fit a new agent on it."
            )

    @torch.no_grad()
    def encode(self, episode: dict[str, np.ndarray]) -> np.ndarray:
        """The world model's features (T, F) of one recorded episode, filtered from its first step.

        ``episode`` holds the observation keys and ``is_first`` as (T, ...) arrays (``Dataset.episode(i)``
        gives one); ``action`` and ``action_mask`` are used when present, otherwise the learned no-action
        input stands in. Use the features for other learners (e.g. :class:`reverie.baselines.FeatureBC`).
        """
        learner = self.learner
        length = len(episode["is_first"])
        batch = {k: np.asarray(episode[k])[None] for k in learner.obs_space}
        batch["is_first"] = np.asarray(episode["is_first"], bool)[None]
        if "action" in episode:
            batch["action"] = np.asarray(episode["action"])[None]
            if "action_mask" in episode:
                batch["action_mask"] = np.asarray(episode["action_mask"], np.float32)[None]
        tensors = learner.to_tensors(batch)
        if "action" not in tensors:
            tensors["action"] = torch.zeros(1, length, learner.action_dim, device=learner.device)
            tensors["action_mask"] = torch.zeros(1, length, device=learner.device)
        tensors["is_first"][:, 0] = True
        with learner.autocast():
            states, _, _ = learner.wm.observe(tensors)
        return learner.wm.feat(states)[0].float().cpu().numpy()

    @torch.no_grad()
    def encode_step(
        self, obs: dict[str, Any], state: PolicyState | None = None, action: np.ndarray | None = None
    ) -> tuple[np.ndarray, PolicyState]:
        """Features (N, F) after one batched observation, for acting with other learners on model features.

        Args:
            obs: observations (N, ...) with ``is_first`` (which resets an env's state).
            state: the state returned by the previous call (None at the start).
            action: the env actions (N, ...) taken since the previous observation (None at the start).
        """
        learner = self.learner
        if state is not None and action is not None:
            state = {
                **state,
                "action": learner.encode_action(torch.as_tensor(np.asarray(action), device=learner.device)),
            }
        latent = learner.filter(obs, state)
        new_state = {**latent, "action": torch.zeros(len(obs["is_first"]), learner.action_dim, device=learner.device)}
        return learner.wm.feat(latent).float().cpu().numpy(), new_state

    @property
    def feat_dim(self) -> int:
        """Width of the features :meth:`encode` returns."""
        return self.learner.wm.feat_dim

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        learner = self.learner
        return {"model": learner.state_dict(), "optim": learner.opt.state_dict()}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write a checkpoint folder (config, weights, optimiser state, training state, spaces) atomically."""
        learner = self.learner
        return save_checkpoint(
            directory, self.config, self.state_dict(), self.state, learner.obs_space, learner.act_space
        )

    def save_run(self) -> None:
        """Flush the replay, then checkpoint into ``logdir/checkpoint``: what ``--resume`` continues from.

        The replay goes first, so a kill in between never leaves counters ahead of the data on disk; on several
        ranks every rank writes its replay shard and rank 0 then the one checkpoint.
        """
        if self._replay is not None:
            self._replay.save()
        distributed.barrier()
        if distributed.world().main:
            self.save(self.logdir / "checkpoint")

    @classmethod
    def load(cls, directory: str | os.PathLike, config: Config | None = None) -> Dreamer:
        """Rebuild an agent from a checkpoint folder (or a run folder holding ``checkpoint/``).

        Args:
            directory: the checkpoint or run folder.
            config: replaces the stored config (model sizes must match the weights).
        """
        data = load_checkpoint(directory)
        config = config or data["config"]
        device = config.train.device
        if device.startswith("cuda") and not torch.cuda.is_available():  # saved on a GPU machine: go on here
            log.warning(
                "Checkpoint '%s' was trained with train.device=%s; no GPU here, using the CPU.", data["path"], device
            )
            config.train.device = "cpu"
        agent = cls(config, data["obs_space"], data["act_space"])
        learner = agent.learner
        weights = data["state"]["model"]
        if data["format"] < 3:  # layers that had no bias before a norm: a zero bias computes what they computed
            weights = {k: torch.zeros_like(v) for k, v in learner.state_dict().items() if k.endswith(".bias")} | weights
        try:
            learner.load_state_dict(weights)
        except (KeyError, RuntimeError, ValueError) as err:
            reason = str(err).splitlines()[0][:160]
            raise CheckpointError(f"Checkpoint '{data['path']}' does not fit this config: {reason}") from None
        configured = [{k: v for k, v in g.items() if k != "params"} for g in learner.opt.param_groups]
        try:
            learner.opt.load_state_dict(data["state"]["optim"])
        except (KeyError, ValueError) as err:  # the parameters changed (a checkpoint of an earlier version)
            log.warning("Checkpoint '%s': optimiser state not restored (%s); it starts afresh.", data["path"], err)
        for group, settings in zip(learner.opt.param_groups, configured, strict=True):
            group.update(settings)  # the moments resume; learning rates and the rest follow the config
        agent.state = data["train_state"]
        agent._loaded = True
        return agent
