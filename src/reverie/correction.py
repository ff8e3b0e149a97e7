"""The correction loop: the agent hunts the model's loopholes, a little real play closes them.

An agent trained inside a model learned from recordings exploits what the recordings never showed
(competent play never tries a craft without its materials, so the model may believe it works). Each
round of :func:`correct`:

1. runs the policy for a few real episodes while the world model predicts every step alongside
   (:func:`watch`, with :meth:`reverie.world_model.WorldModel.step`): the reward and continuation it expects
   from the action just chosen, and the ensemble's disagreement about that transition (over the whole next
   latent, and over the reward the members' next latents would give);
2. lists the **exploits**: steps where the model promised reward the game did not give, grouped by
   action (a game's action names say which reward was promised), with examples;
3. adds the real episodes to the training data, oversampled so that a few real steps count
   (``real_frac`` of every batch), fine-tunes the world model, and trains the policy in imagination
   again.

Round 0 is the agent as it came. :func:`auroc` scores how well each uncertainty flags the exploit
steps.

Example:
    >>> agent = Dreamer.load("runs/offline")                                        # doctest: +SKIP
    >>> rounds = correct(agent, "data/recorded-play", rounds=3, episodes=20)      # doctest: +SKIP
    >>> [r["exploit_rate"] for r in rounds]                                         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from reverie.agent import Dreamer
from reverie.data.dataset import Dataset
from reverie.envs.base import model_keys
from reverie.evaluation import EpisodeResults, PromiseTracker, run_episodes
from reverie.learner import Head, PolicyState
from reverie.offline import dataset_replay
from reverie.online import RECORD_KEYS
from reverie.plugins import game_for, resolve
from reverie.replay import Replay
from reverie.seeding import seed_everything

__all__ = ["Check", "RealPlay", "auroc", "correct", "exploit_report", "outcome", "watch"]

log = logging.getLogger("reverie.correction")


@dataclasses.dataclass
class Check:
    """One real step checked against the model's prediction for it."""

    episode: int
    step: int
    action: int
    action_name: str
    predicted_reward: float
    real_reward: float
    predicted_cont: float
    real_cont: float
    uncertainty: float
    reward_uncertainty: float = 0.0
    exploit: bool = False
    effect: bool | None = None
    """Whether the action had an effect the game logs (e.g. an inventory changed); None where
    the env's game has no effect hook (:mod:`reverie.plugins`)."""


def outcome(c: Check, margin: float = 0.5) -> str:
    """What the game did at an exploit step: ``"damage"`` (the real reward fell ``margin`` or more below
    zero where the model expected none), ``"no effect"`` (the action did nothing the game logs, e.g. a craft
    without its materials), ``"effect, no reward"`` (it worked but paid nothing, e.g. a reward given only once)
    or ``"unknown"`` (the game has no effect hook)."""
    if c.real_reward <= -margin:
        return "damage"
    if c.effect is None:
        return "unknown"
    return "effect, no reward" if c.effect else "no effect"


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count half); None if one class is empty.

    Example:
        >>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
        0.75
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def action_names(env_id: str, n: int) -> list[str]:
    """The game's action names (:mod:`reverie.plugins`), else ``action_<i>``."""
    game = game_for(env_id)
    if game is not None and len(game.action_names) == n:
        return list(game.action_names)
    return [f"action_{i}" for i in range(n)]


def watch(
    agent: Dreamer, episodes: int, seed: int, head: Head = "actor", promise_every: int = 25
) -> tuple[EpisodeResults, list[Check], list[dict[str, np.ndarray]], PromiseTracker]:
    """Run ``episodes`` real episodes with the model predicting every step alongside.

    Returns the episode results, one :class:`Check` per real step, the episodes as arrays (for
    training, in the dataset layout: ``action[t]`` led to step ``t``; ``promised_reward[t]`` is the
    reward the model predicted for that step, 0 at the first) and the promise tracker.
    """
    learner, cfg = agent.learner, agent.config
    if not learner.act_space.discrete:
        raise ValueError("watch/correct support discrete action spaces for now.")
    envs = agent.make_envs(episodes, seed)
    names = action_names(cfg.env.id, learner.action_dim)
    keys = model_keys(envs.obs_space)
    tracker = PromiseTracker(cfg.ac.horizon, promise_every, learner, head)
    n = envs.num_envs
    state: PolicyState | None = None
    pending: tuple[np.ndarray, ...] = ()  # (action, predicted reward and cont, the two uncertainties) of the step
    last_action = np.zeros(n, np.int64)
    promised = np.zeros(n, np.float32)  # the model's reward for each env's latest step
    checks: list[Check] = []
    open_eps: list[list[dict[str, np.ndarray]]] = [[] for _ in range(n)]  # steps of each env's episode so far
    finished: list[dict[str, np.ndarray]] = []
    episode_ids = np.arange(n)
    game = game_for(cfg.env.id)  # the game's effect hook: did the action do something its log/ keys show?
    effect = resolve(game.effect) if game is not None and game.effect is not None else None
    effect_keys = [
        k for k in (game.effect_keys if effect is not None and game is not None else ()) if k in envs.obs_space
    ]
    before: dict[str, np.ndarray] = {}  # each env's effect keys when its action was chosen

    def record(obs: dict[str, np.ndarray], i: int, action: int) -> None:
        step = {k: np.asarray(obs[k][i]) for k in (*keys, *RECORD_KEYS)}
        open_eps[i].append({**step, "action": np.asarray(action), "promised_reward": promised[i].copy()})

    def act(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
        nonlocal state, pending, last_action
        action, state, vec = learner.policy(obs, state, False, head)
        with torch.no_grad(), learner.autocast(acting=True):
            latent = {"deter": state["deter"], "stoch": state["stoch"]}
            now = learner.to_tensors({k: obs[k] for k in learner.wm.obs_keys})  # the next picture starts from it
            step = learner.dream_step(latent, vec, now)
            reward, cont = step.reward.float().cpu().numpy(), step.cont.float().cpu().numpy()
            u, ru = np.zeros(n), np.zeros(n)
            if step.uncertainty is not None and step.reward_uncertainty is not None:
                u, ru = step.uncertainty.cpu().numpy(), step.reward_uncertainty.cpu().numpy()
        pending = (np.asarray(action), reward, cont, u, ru)
        before.update({k: np.array(obs[k]) for k in effect_keys})
        tracker.promise(state, ~np.asarray(obs["is_last"], bool), obs)
        for i in range(n):
            if first[i]:
                open_eps[i] = []
                promised[i] = 0.0
            record(obs, i, 0 if first[i] else int(last_action[i]))
        last_action = np.asarray(action)
        return action

    def on_step(obs: dict[str, np.ndarray], live: np.ndarray) -> None:
        tracker.observe(obs, live)
        action, reward, cont, u, ru = pending
        real_cont = 1.0 - np.asarray(obs["is_terminal"], np.float64)
        changed = effect(before, obs) if effect is not None else np.zeros(n, bool)
        for i in map(int, np.flatnonzero(live)):
            a = int(action[i])
            name = names[a] if a < len(names) else str(a)
            promised[i] = reward[i]
            step = len(open_eps[i]) - 1  # the step the action was taken at
            checks.append(
                Check(
                    int(episode_ids[i]),
                    step,
                    a,
                    name,
                    float(reward[i]),
                    float(obs["reward"][i]),
                    float(cont[i]),
                    float(real_cont[i]),
                    float(u[i]),
                    float(ru[i]),
                    effect=bool(changed[i]) if effect is not None else None,
                )
            )
            if obs["is_last"][i]:
                record(obs, i, a)
                finished.append({k: np.stack([s[k] for s in open_eps[i]]) for k in open_eps[i][0]})
                open_eps[i] = []
                episode_ids[i] += n

    try:
        results = run_episodes(envs, act, episodes, on_step)
    finally:
        envs.close()
    return results, checks, finished, tracker


def exploit_report(checks: list[Check], margin: float = 0.5, examples: int = 3) -> dict[str, Any]:
    """Mark and count exploits: steps whose predicted reward exceeds the real one by ``margin`` or more.

    Returns ``exploit_rate`` (exploits per real step), ``exploits`` ({action name: count}),
    ``outcomes`` ({:func:`outcome`: count} over the exploits), ``examples`` ({action name: [step
    records]}), and the uncertainty on exploit steps vs the others with its AUROC for flagging them.
    """
    for c in checks:
        c.exploit = c.predicted_reward - c.real_reward >= margin
    flagged = [c for c in checks if c.exploit]
    counts = Counter(c.action_name for c in flagged)
    by_class: dict[str, list[dict[str, Any]]] = {}
    for c in flagged:
        if len(by_class.setdefault(c.action_name, [])) < examples:
            by_class[c.action_name].append(dataclasses.asdict(c))
    labels = np.array([c.exploit for c in checks], dtype=bool)
    out: dict[str, Any] = {
        "steps": len(checks),
        "exploit_rate": len(flagged) / max(len(checks), 1),
        "exploits": dict(counts.most_common()),
        "outcomes": dict(Counter(outcome(c, margin) for c in flagged).most_common()),
        "examples": by_class,
    }
    for name in ("uncertainty", "reward_uncertainty"):
        u = np.array([getattr(c, name) for c in checks])
        out[f"{name}_exploit"] = float(u[labels].mean()) if labels.any() else None
        out[f"{name}_other"] = float(u[~labels].mean()) if (~labels).any() else None
        out[f"{name}_auroc"] = auroc(u, labels)
    return out


class RealPlay:
    """The real episodes of the rounds so far, sampled as training windows that stay inside one episode.

    A ``focus`` share of the windows is aimed at the model's misses: each holds a step (at a random
    place in the window) whose real reward differs from ``promised_reward`` by ``margin`` or more, so
    that the few steps that expose a loophole are seen often, not once in a thousand windows.

    Example:
        >>> ep = {"is_first": np.arange(40) == 0, "reward": np.zeros(40), "promised_reward": np.eye(40)[30]}
        >>> play = RealPlay([ep], focus=1.0, seed=0)
        >>> play.misses, play.longest_stream()
        ([(0, 30)], 40)
        >>> windows = play.sample(4, 8)  # every window holds step 30, where the model promised 1 and got 0
        >>> bool((windows["reward"] == 0).all()), sorted(windows)
        (True, ['action_mask', 'is_first', 'reward', 'reward_mask'])
    """

    def __init__(
        self,
        episodes: list[dict[str, np.ndarray]],
        focus: float = 0.75,
        margin: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= focus <= 1.0:
            raise ValueError(f"focus must lie in [0, 1] (the share of windows around the model's misses), got {focus}.")
        self.focus, self.rng = focus, np.random.default_rng(seed)
        self.episodes: list[dict[str, np.ndarray]] = []
        self.misses: list[tuple[int, int]] = []  # (episode, step)
        for i, ep in enumerate(episodes):
            length = len(ep["is_first"])
            ep = {k: v for k, v in ep.items() if k != "promised_reward"}
            ep |= {"action_mask": np.ones(length, np.float32), "reward_mask": np.ones(length, np.float32)}
            if "promised_reward" in episodes[i]:
                miss = np.abs(episodes[i]["promised_reward"] - ep["reward"]) >= margin
                self.misses += [(i, int(t)) for t in np.flatnonzero(miss)]
            self.episodes.append(ep)

    def longest_stream(self) -> int:
        """Length of the longest episode (windows are at most this long)."""
        return max((len(ep["is_first"]) for ep in self.episodes), default=0)

    def sample(self, batch: int, length: int) -> dict[str, np.ndarray]:
        """``batch`` windows of ``length`` steps (B, T, ...) from episodes at least that long."""
        lengths = np.array([len(ep["is_first"]) for ep in self.episodes])
        room = np.maximum(lengths - length + 1, 0)  # window starts per episode
        if not room.sum():
            raise ValueError(f"No real episode is {length} steps long (the longest has {self.longest_stream()}).")
        misses = [(i, t) for i, t in self.misses if room[i]]
        rows = []
        for _ in range(batch):
            if misses and self.rng.random() < self.focus:
                i, t = misses[self.rng.integers(len(misses))]
                start = int(np.clip(t - self.rng.integers(length), 0, lengths[i] - length))
            else:
                i = int(self.rng.choice(len(room), p=room / room.sum()))
                start = int(self.rng.integers(room[i]))
            rows.append({k: v[start : start + length] for k, v in self.episodes[i].items()})
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def mixed_batch(
    data: Replay, real: RealPlay | None, batch: int, length: int, real_frac: float
) -> dict[str, np.ndarray]:
    """A batch of ``round(real_frac * batch)`` windows of real play and the rest from the dataset; the BC
    head learns only from the dataset rows (``bc_mask``), since real rows are the agent's own actions."""
    if not 0.0 <= real_frac < 1.0:
        raise ValueError(f"real_frac must lie in [0, 1) (the recordings keep a share of each batch), got {real_frac}.")
    n_real = int(round(real_frac * batch)) if real is not None and real.longest_stream() >= length else 0
    n_real = min(n_real, batch - 1)
    parts = [data.sample(batch - n_real, length)]
    if n_real:
        assert real is not None
        parts.append(real.sample(n_real, length))
    keys = [k for k in parts[0] if all(k in p for p in parts)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    out["bc_mask"] = (np.arange(batch) < batch - n_real).astype(np.float32)[:, None].repeat(length, 1)
    return out


def correct(
    agent: Dreamer,
    dataset: str | os.PathLike[str] | Dataset,
    rounds: int = 3,
    episodes: int = 20,
    finetune_steps: int = 300,
    rl_steps: int = 300,
    real_frac: float = 0.25,
    margin: float = 0.5,
    seed: int = 0,
    focus: float = 0.75,
    on_round: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run round 0 (the agent as it is) and ``rounds`` correction rounds; returns one report per round.

    Each report: ``round``, ``real_score`` (the game's score, if its summary has one), ``real_return``,
    ``imagined_return`` and ``real_return_h`` (promised vs real over ``ac.horizon`` steps), ``exploit_rate``,
    ``exploits``, ``examples``, ``uncertainty_auroc`` / ``reward_uncertainty_auroc`` and the mean of each uncertainty
    on exploit vs other steps, ``real_steps``.

    ``focus``: share of the real windows aimed at a step where the model's reward missed by ``margin``
    (:class:`RealPlay`). The fine-tuning is :meth:`reverie.learner.Learner.update`'s ``model`` phase on batches
    mixing recordings and real play, the policy's training its ``rl`` phase.

    ``on_round(reports)`` runs after each round's report, with the agent as it was watched in that round
    (e.g. to save the agent and the reports so far: a crash loses at most the round in progress).
    """
    seed_everything(seed)  # sampled actions and latents: the same seed repeats a run
    if not 0.0 <= real_frac < 1.0:
        raise ValueError(f"real_frac must lie in [0, 1) (the recordings keep a share of each batch), got {real_frac}.")
    data = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    agent.adopt_dataset(data)
    if not agent.state.has_prior:  # an agent fitted without RL: its actor starts from the BC head
        agent.learner.start_rl()
        agent.state.offline_phase = "rl"
    cfg = agent.config
    t = cfg.train
    data_replay = dataset_replay(data, t.replay_chunk, seed)
    real_eps: list[dict[str, np.ndarray]] = []
    rng = np.random.default_rng(seed)
    reports = []
    for r in range(rounds + 1):
        results, checks, new_eps, tracker = watch(agent, episodes, seed + 7919 * (r + 1))
        real_eps.extend(new_eps)
        agent.state.env_steps += sum(len(e["is_first"]) for e in new_eps)
        metrics = {**results.metrics("eval", cfg.env.id), **tracker.metrics("eval")}
        row = {
            "round": r,
            "real_score": metrics.get("eval/score"),
            "real_return": metrics["eval/return"],
            "imagined_return": metrics.get("eval/promised_return"),
            "real_return_h": metrics.get("eval/real_return_h"),
            "success": {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("eval/success/")},
            "real_steps": sum(len(e["is_first"]) for e in real_eps),
            **exploit_report(checks, margin),
        }
        reports.append(row)
        log.info("round %d: exploit rate %.4f, score %s", r, row["exploit_rate"], row["real_score"])
        if on_round is not None:
            on_round(reports)
        if r == rounds:
            break
        real = RealPlay(real_eps, focus, margin, seed + r)
        log.info("round %d: fine-tuning on %d real steps (%d misses)", r + 1, row["real_steps"], len(real.misses))
        for _ in range(finetune_steps):
            batch = mixed_batch(data_replay, real, t.batch_size, t.batch_length, real_frac)
            agent.state.record_update(agent.learner.update(batch, "model"))
        for _ in range(rl_steps):
            batch = mixed_batch(data_replay, real, t.batch_size, t.batch_length, real_frac)
            agent.state.record_update(agent.learner.update(batch, "rl", rng))
    return reports
