"""Offline learning from recorded play (the Dreamer 4 idea): the loop behind ``Dreamer.fit(dataset, steps)``.

Three phases over the same networks and checkpoint format as online training, each an update phase of
:meth:`reverie.learner.Learner.update`:

1. ``model`` (the first ``1 - offline.rl_frac - offline.bc_frac`` of the updates): the world model learns from
   every episode (a learned no-action input where actions are missing; the reward head only where rewards exist),
   the behaviour-cloning head learns the recorded actions (weighted by the recorded return with
   ``offline.bc_return_temp``), the critic learns the recorded play's lambda-returns;
2. ``bc`` (``offline.bc_frac``): the head goes on alone on the frozen model: a head still learning when the
   model is done gets more updates at a fraction of a model update's cost;
3. ``rl`` (the last ``offline.rl_frac``): the world model is frozen, the actor starts as a copy of the BC head
   and a frozen copy becomes the prior; rollouts start from dataset states, and the actor is trained with
   ``ac.objective`` (PMPO or DreamerV3's) plus ``ac.prior_kl * KL(actor || prior)``; with a latent ensemble,
   ``offline.pessimism=cut`` ends rollouts at transitions the ensemble does not know.

The environment is never touched while training; it is used only to evaluate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

import reverie.distributed as distributed
from reverie.checkpoint import TrainState
from reverie.config import Config
from reverie.data.dataset import Dataset
from reverie.data.format import DatasetError
from reverie.functional import return_to_go
from reverie.interrupt import StopOnSignal
from reverie.learner import Head, Learner, Phase
from reverie.logger import Logger, Progress
from reverie.replay import Replay

log = logging.getLogger("reverie.offline")


def dataset_replay(
    dataset: Dataset,
    chunk: int,
    seed: int,
    return_discount: float | None = None,
    min_reward: float = 0.0,
    episodes: list[int] | None = None,
) -> Replay:
    """An in-memory replay holding every step of ``dataset`` (with label masks), sampled uniformly.

    With ``return_discount`` each step also carries ``return_to_go``, the discounted return the recording
    got after it, ``G_t = r_{t+1} + return_discount * G_{t+1}`` (0 at an episode's last step, and at every
    step of an episode without rewards; rewards smaller in magnitude than ``min_reward`` count as 0), which
    return-weighted behaviour cloning reads. ``episodes`` keeps only those episodes (a rank's shard; default all).
    """
    replay = Replay(None, capacity=dataset.num_steps + 1, chunk=chunk, recent_frac=0.0, seed=seed)
    if return_discount is None and episodes is None:
        dataset.to_replay(replay)
        return replay
    for index in range(len(dataset)) if episodes is None else episodes:
        episode = dataset.episode(index)
        extra: dict[str, np.ndarray] = {}
        if return_discount is not None:
            reward = episode["reward"] * episode["reward_mask"]
            extra["return_to_go"] = return_to_go(reward, return_discount, min_reward)
        for t in range(len(episode["is_first"])):
            replay.add({k: v[t] for k, v in (episode | extra).items()})
    return replay


def recipe_replay(dataset: Dataset, cfg: Config, seed: int) -> Replay:
    """:func:`dataset_replay` as the config's offline recipe needs it (returns-to-go with ``bc_return_temp``); on
    several ranks, this rank's shard of the episodes (every N-th one)."""
    off = cfg.offline
    discount = off.bc_return_discount if off.bc_return_temp > 0 else None
    job, episodes = distributed.world(), None
    if job.active:
        if len(dataset) < job.size:
            raise DatasetError(
                f"Dataset {dataset.folder} holds {len(dataset)} episodes, fewer than the {job.size} ranks that share "
                "them; run on fewer ranks or record more episodes."
            )
        episodes = distributed.shard(range(len(dataset)))
    seed = distributed.rank_seed(seed)
    return dataset_replay(dataset, cfg.train.replay_chunk, seed, discount, off.bc_return_min_reward, episodes)


def phase_at(update: int, total: int, cfg: Config) -> Phase:
    """The phase of offline update ``update`` (0-based) of ``total``: ``model``, then ``bc``, then ``rl``.

    Example:
        >>> from reverie.config import make_config
        >>> cfg = make_config(["offline"], ["offline.rl_frac=0.25", "offline.bc_frac=0.25"])
        >>> [phase_at(u, 8, cfg) for u in range(8)]
        ['model', 'model', 'model', 'model', 'bc', 'bc', 'rl', 'rl']
    """
    off = cfg.offline
    if off.rl_frac > 0 and update >= int(round(total * (1.0 - off.rl_frac))):
        return "rl"
    return "bc" if update >= int(round(total * (1.0 - off.rl_frac - off.bc_frac))) else "model"


class OfflineLoop:
    """Runs :meth:`reverie.agent.Dreamer.fit`: the phases in order, with logging, saving and progress.

    Args:
        learner: the networks.
        replay: the dataset's steps (:func:`recipe_replay`).
        logger: metrics.
        state: the training state; ``offline_updates`` counts this loop's updates across calls and resumes,
            ``offline_phase`` records the phase reached (once ``rl`` began it stays, as the prior is frozen).
        cfg: the config (``offline``, ``train``, ``run``).
        save: checkpoints the run.
        evaluate: evaluates a policy head in the real env; ``eval/...`` metrics.
        name: what the progress bar shows.
    """

    def __init__(
        self,
        learner: Learner,
        replay: Replay,
        logger: Logger,
        state: TrainState,
        cfg: Config,
        save: Callable[[], None],
        evaluate: Callable[[Head], dict[str, float]],
        name: str = "",
    ):
        self.learner, self.replay, self.logger, self.state, self.cfg = learner, replay, logger, state, cfg
        self.save, self.evaluate, self.name = save, evaluate, name
        self.job = distributed.world()
        self.rng = np.random.default_rng(distributed.rank_seed(cfg.train.seed + 7919 * (state.offline_updates + 1)))

    def run(self, total: int, interrupt: StopOnSignal | None = None) -> None:
        """Update until the offline-update counter reaches ``total`` (or ``interrupt`` asks to stop); on several
        ranks, each samples its share of the batch and whether to stop is agreed before each update."""
        cfg, state, t = self.cfg, self.state, self.cfg.train
        batch_size = distributed.split(t.batch_size, "train.batch_size")
        if not distributed.all_ranks(self.replay.longest_stream() >= t.batch_length):
            raise DatasetError(
                f"The dataset has no stretch of {t.batch_length} steps to train on (it holds {len(self.replay)}); "
                "lower train.batch_length or record more episodes."
            )
        start_time, start_updates = time.time(), state.offline_updates
        progress = Progress(total, cfg.run.progress and self.job.main, f"fit {self.name} (updates)")
        progress.update(state.offline_updates, state.offline_updates, None)
        try:
            timed_out = False
            while not distributed.any_rank(
                state.offline_updates >= total or bool(interrupt and interrupt.requested) or timed_out
            ):
                phase = phase_at(state.offline_updates, total, cfg)
                if state.has_prior and cfg.offline.rl_frac > 0:
                    phase = "rl"  # RL began (on a longer budget before, or in an earlier call): it goes on
                if phase == "rl" and not state.has_prior:
                    self.learner.start_rl()
                    log.info("imagination RL starts at offline update %d", state.offline_updates)
                if not state.has_prior:
                    state.offline_phase = "rl" if phase == "rl" else "bc" if phase == "bc" else "model"
                batch = self.replay.sample(batch_size, t.batch_length)
                metrics = self.learner.update(batch, phase, self.rng)
                state.offline_updates += 1
                state.record_update(metrics)
                self.logger.scalars({f"offline/{k}": v for k, v in metrics.items()})
                step = state.offline_updates
                progress.update(step, step, None)
                self._periodic(step, start_time, start_updates)
                if cfg.run.max_minutes and time.time() - start_time > 60 * cfg.run.max_minutes:
                    log.info("run.max_minutes (%.1f) reached at offline update %d", cfg.run.max_minutes, step)
                    timed_out = True
            distributed.agree_to_stop(interrupt)
        finally:
            progress.close()

    def _periodic(self, step: int, t0: float, updates0: int) -> None:
        run = self.cfg.run
        if run.log_every and step % run.log_every == 0:
            self.logger.scalar("fps/updates", (step - updates0) / max(time.time() - t0, 1e-9))
            self.logger.scalar("opt/skipped_updates", float(self.state.skipped_updates))
            self.logger.write(step)
        if run.eval_every and run.eval_episodes and step % run.eval_every == 0:
            if self.job.main:  # rank 0 evaluates
                self.logger.scalars(self.evaluate("actor" if self.state.has_prior else "bc"))
            self.logger.write(step)
        if run.save_every and step % run.save_every == 0:
            self.save()
