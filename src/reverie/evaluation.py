"""Evaluation in the real env: episodes, the game's episode summary, and what the model promised vs what it gave.

:func:`run_episodes` is the one episode loop of the package: it runs a batch of envs for a number of full
episodes with any acting function (Dreamer heads, the baselines of :mod:`reverie.baselines`, scripts).
:class:`PromiseTracker` adds the check that matters for agents trained in imagination: every ``every``
steps of each episode it imagines ``horizon`` steps ahead from the agent's latent state with the acting
policy, records the return the model promises, then the return the real env gave over those steps.
A model with loopholes promises much more than it delivers.

Example:
    >>> metrics, promises = evaluate(learner, envs, env_id, episodes=10, promise_every=25)  # doctest: +SKIP
    >>> metrics["eval/score"], metrics["eval/promise_gap"]                                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reverie.envs.parallel import BatchEnv, ParallelEnv
from reverie.plugins import summarize

if TYPE_CHECKING:
    from torch import Tensor

    from reverie.learner import Head, Learner, PolicyState

__all__ = ["ActFn", "EpisodeResults", "PromiseTracker", "StepHook", "evaluate", "promised_return", "run_episodes"]

ActFn = Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]
"""``act_fn(obs, first) -> actions``: batched observations ``(N, ...)`` and ``first`` (N,) bool -> ``(N, ...)``."""

StepHook = Callable[[dict[str, np.ndarray], np.ndarray], None]
"""``on_step(obs, live)``: the observations ``(N, ...)`` after an env step and ``live`` (N,) bool, True where
that step counted for an unfinished episode (False after a reset or restart, and once an env is done)."""


@dataclasses.dataclass
class EpisodeResults:
    """Return and length of each episode ``(E,)``, and ``finals[k]``, the ``log/`` keys of episode ``k``'s
    last observation."""

    returns: np.ndarray
    lengths: np.ndarray
    finals: list[dict[str, Any]]

    def metrics(self, prefix: str = "eval", env_id: str | None = None) -> dict[str, float]:
        """``<prefix>/return``, ``return_std``, ``length`` and the summary the game of ``env_id`` gives of the
        episodes (:func:`reverie.plugins.summarize`, e.g. ``score`` and ``success/<name>``)."""
        out = {
            f"{prefix}/return": float(self.returns.mean()),
            f"{prefix}/return_std": float(self.returns.std()),
            f"{prefix}/length": float(self.lengths.mean()),
        }
        summary = summarize(env_id, self.finals) if env_id is not None else {}
        return out | {f"{prefix}/{k}": v for k, v in summary.items()}


def run_episodes(
    envs: BatchEnv | ParallelEnv, act_fn: ActFn, episodes: int | None = None, on_step: StepHook | None = None
) -> EpisodeResults:
    """Run ``episodes`` full episodes (default: one per env) with ``act_fn``; the envs are not closed.

    Episode ``k`` is the ``k // N``-th episode of env ``k % N`` (a fixed assignment, so short episodes are
    not favoured). ``act_fn(obs, first)`` gets the batched observations and ``first`` (N,) bool, True where an
    env began a new episode with this observation (a reset or a restarted worker), so stateful policies
    reset there. The envs are reset at the start and after each ``is_last``; an episode cut short by a
    restarted worker is dropped and run again.

    Args:
        envs: N envs stepped together.
        act_fn: the acting function, see :data:`ActFn`.
        episodes: full episodes to run in all, at least 1.
        on_step: called as ``on_step(obs, live)`` after every env step, see :data:`StepHook`.

    Example:
        >>> from reverie.config import EnvConfig
        >>> from reverie.envs import make_batch_env
        >>> envs = make_batch_env(EnvConfig(num_envs=2, parallel=False), seed=0)
        >>> results = run_episodes(envs, lambda obs, first: np.zeros(2, np.int64), episodes=3)
        >>> results.returns.shape, bool((results.returns == results.lengths).all())  # CartPole: 1 per step
        ((3,), True)
    """
    n = envs.num_envs
    episodes = n if episodes is None else episodes
    if episodes < 1:
        raise ValueError(f"run_episodes needs episodes >= 1, got {episodes}.")
    quota = episodes // n + (np.arange(n) < episodes % n)  # episodes per env
    returns, lengths = np.zeros(episodes), np.zeros(episodes, np.int64)
    finals: list[dict[str, Any]] = [{} for _ in range(episodes)]
    done, ret, length = np.zeros(n, np.int64), np.zeros(n), np.zeros(n, np.int64)  # per env
    space = envs.act_space["action"]
    obs = envs.step({"action": np.zeros((n, *space.shape), space.dtype), "reset": np.ones(n, bool)})
    while (done < quota).any():
        action = act_fn(obs, np.asarray(obs["is_first"], bool))
        obs = envs.step({"action": action, "reset": np.asarray(obs["is_last"], bool)})
        first, last = np.asarray(obs["is_first"], bool), np.asarray(obs["is_last"], bool)
        ret[first], length[first] = 0.0, 0
        live = ~first & (done < quota)
        ret[live] += obs["reward"][live]
        length[live] += 1
        if on_step is not None:
            on_step(obs, live)
        for i in np.flatnonzero(live & last):
            k = done[i] * n + i
            returns[k], lengths[k] = ret[i], length[i]
            finals[k] = {key: value[i] for key, value in obs.items() if key.startswith("log/")}
            done[i] += 1
    return EpisodeResults(returns, lengths, finals)


@dataclasses.dataclass
class _Promise:
    promised: float
    left: int  # env steps still to observe
    real: float = 0.0


def promised_return(traj: dict[str, Tensor], start: int = 1) -> Tensor:
    """The return the model promises over an imagined rollout ``traj`` (:meth:`reverie.learner.Learner.imagine`)
    from its state ``start`` on (1: the states reached after each step from the first): predicted rewards
    weighted by the predicted chance that the episode is still going. (N,)"""
    reward = traj["reward"].float()[:, start:]  # (N, H): reward on reaching state k
    cont = traj["cont"].float()[:, start:]
    alive = torch.cumprod(torch.cat([torch.ones_like(cont[:, :1]), cont[:, :-1]], 1), 1)
    return (alive * reward).sum(1).detach()


class PromiseTracker:
    """Imagined vs real returns over ``horizon`` steps, from every ``every``-th step of each episode.

    Per env step: :meth:`promise` after acting (imagines from the due envs and :meth:`add` s their promises),
    then :meth:`observe` after the env step (adds the real rewards, closes promises after ``horizon`` steps or
    at the episode's ``is_last``, whichever comes first). An env whose step is not ``live`` drops its open
    promises: a restarted worker cut the episode short, as :func:`run_episodes` drops the episode.

    Args:
        horizon: steps per promise.
        every: steps of an episode between promises (0: never); an episode's first step makes one.
        learner: the agent's networks (needed by :meth:`promise` only).
        head: the policy that acts and is imagined: ``actor`` or ``bc``.

    Example:
        >>> tracker = PromiseTracker(horizon=2)
        >>> tracker.add(0, promised=1.5)
        >>> step = {"reward": np.ones(1), "is_first": np.zeros(1, bool), "is_last": np.zeros(1, bool)}
        >>> tracker.observe(step, live=np.ones(1, bool)); tracker.observe(step, live=np.ones(1, bool))
        >>> tracker.closed
        [(1.5, 2.0)]
    """

    def __init__(self, horizon: int, every: int = 0, learner: Learner | None = None, head: Head = "actor"):
        self.horizon, self.every, self.learner, self.head = horizon, every, learner, head
        self.open: dict[int, list[_Promise]] = {}
        """Open promises by env index."""
        self.closed: list[tuple[float, float]] = []
        """(promised, real) return pairs."""
        self.dropped = 0
        """Promises whose episode was cut short by a restarted worker."""
        self._t = np.zeros(0, np.int64)  # (N,) steps of each env's episode so far

    def add(self, env: int, promised: float) -> None:
        """Open a promise of return ``promised`` over the next ``horizon`` steps of env ``env``."""
        self.open.setdefault(env, []).append(_Promise(float(promised), self.horizon))

    def due(self, active: np.ndarray) -> np.ndarray:
        """Env indices that promise at this step: ``active`` (N,) bool and at a multiple of ``every`` steps."""
        if not self.every:
            return np.zeros(0, np.int64)
        self._grow(len(active))
        return np.flatnonzero(active & (self._t % self.every == 0))

    def promise(self, state: PolicyState, active: np.ndarray, obs: dict[str, np.ndarray] | None = None) -> None:
        """Called after the policy step of each env step, with the policy state and ``active`` (N,) bool, the
        envs whose next step counts (neither finished nor at ``is_last``): imagine from the due ones.
        ``obs``: the observations the policy acted on (N, ...), the real start of each imagined rollout
        (without them the model pictures it)."""
        idx = self.due(active)
        if not len(idx):
            return
        learner = self.learner
        assert learner is not None, "PromiseTracker.promise needs the learner"
        first = None
        if obs is not None:
            keys = [k for k in learner.pictured_keys(self.head) if k in obs]
            first = learner.to_tensors({k: np.asarray(obs[k])[idx] for k in keys})
        with torch.no_grad(), learner.autocast(acting=True):
            rows = torch.as_tensor(idx, device=learner.device)
            start = {k: v[rows] for k, v in state.items() if k != "action"}
            traj = learner.imagine(start, self.horizon, self.head, first_obs=first)
            promised = promised_return(traj).cpu().numpy()  # (N,)
        for i, p in zip(idx, promised, strict=True):
            self.add(int(i), float(p))

    def observe(self, obs: dict[str, np.ndarray], live: np.ndarray) -> None:
        """A :data:`StepHook`: add the real rewards of one env step to the open promises, close those due."""
        reward, last = np.asarray(obs["reward"], np.float64), np.asarray(obs["is_last"], bool)
        self._grow(len(live))
        self._t = np.where(np.asarray(obs["is_first"], bool), 0, self._t + live)
        for i in list(self.open):
            if not live[i]:
                self.dropped += len(self.open.pop(i))
                continue
            still = []
            for p in self.open[i]:
                p.real += float(reward[i])
                p.left -= 1
                if p.left <= 0 or last[i]:
                    self.closed.append((p.promised, p.real))
                else:
                    still.append(p)
            if still:
                self.open[i] = still
            else:
                del self.open[i]

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Mean promised and real return, their mean gap (promised - real), mean absolute gap and the count."""
        if not self.closed:
            return {}
        pairs = np.asarray(self.closed)  # (P, 2)
        gap = pairs[:, 0] - pairs[:, 1]
        return {
            f"{prefix}/promised_return": float(pairs[:, 0].mean()),
            f"{prefix}/real_return_h": float(pairs[:, 1].mean()),
            f"{prefix}/promise_gap": float(gap.mean()),
            f"{prefix}/promise_abs_gap": float(np.abs(gap).mean()),
            f"{prefix}/promises": float(len(pairs)),
        }

    def _grow(self, n: int) -> None:
        if len(self._t) < n:
            self._t = np.concatenate([self._t, np.zeros(n - len(self._t), np.int64)])


def evaluate(
    learner: Learner,
    envs: BatchEnv | ParallelEnv,
    env_id: str,
    episodes: int = 10,
    deterministic: bool = False,
    head: Head = "actor",
    promise_every: int = 0,
) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """Run ``episodes`` episodes of the policy ``head``, one in each of the (fresh) ``envs``, which it closes.

    Returns ``eval/return`` (mean), ``eval/return_std``, ``eval/length``, the game's summary (``env_id``) and, with
    ``promise_every``, the promised-vs-real return of :class:`PromiseTracker` (``eval/promise_gap`` and more);
    and the (promised, real) return pairs.

    Raises:
        ValueError: an unknown ``head`` (the choices are named), before any env steps.
    """
    learner.actor(head)  # raises on an unknown head
    tracker = PromiseTracker(learner.cfg.ac.horizon, promise_every, learner, head)
    state: PolicyState | None = None
    finished = np.zeros(envs.num_envs, bool)  # one episode per env

    def act_fn(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
        nonlocal state  # learner.policy resets an env's state at obs["is_first"]
        action, state, _ = learner.policy(obs, state, deterministic, head)
        tracker.promise(state, ~finished & ~np.asarray(obs["is_last"], bool), obs)
        return action

    def on_step(obs: dict[str, np.ndarray], live: np.ndarray) -> None:
        tracker.observe(obs, live)
        finished[live & np.asarray(obs["is_last"], bool)] = True

    try:
        results = run_episodes(envs, act_fn, episodes, on_step)
    finally:
        envs.close()
    return results.metrics("eval", env_id) | tracker.metrics("eval"), list(tracker.closed)
