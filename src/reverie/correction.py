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
steps, and how well the continuation head and the uncertainty flag the real episode endings.

The policy may be the agent's own actor (trained in imagination) or **any learner** that trains on
:class:`reverie.dream.DreamEnv` (:class:`DreamLearner`: e.g. a Stable-Baselines3 model behind two methods):
it is watched the same way, and after fine-tuning the model it trains again in the corrected dream. The
training data is a recorded dataset (an offline agent) or, without one, the checkpoint's own replay (an
online run).

Example:
    >>> agent = Dreamer.load("runs/offline")                                        # doctest: +SKIP
    >>> rounds = correct(agent, "data/recorded-play", rounds=3, episodes=20)      # doctest: +SKIP
    >>> [r["exploit_rate"] for r in rounds]                                         # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import gymnasium
import numpy as np
import torch

from reverie.agent import Dreamer
from reverie.config import Config
from reverie.data.dataset import Dataset
from reverie.data.writer import DatasetWriter
from reverie.envs.base import model_keys
from reverie.evaluation import EpisodeResults, PromiseTracker, run_episodes
from reverie.learner import Head, PolicyState
from reverie.offline import dataset_replay
from reverie.online import RECORD_KEYS
from reverie.plugins import game_for, resolve
from reverie.replay import Replay, ReplayError
from reverie.seeding import seed_everything

__all__ = [
    "Check",
    "DreamLearner",
    "RealPlay",
    "auroc",
    "correct",
    "ending_report",
    "exploit_report",
    "outcome",
    "real_play_dataset",
    "run_replay",
    "watch",
]

log = logging.getLogger("reverie.correction")


@dataclasses.dataclass
class Check:
    """One real step checked against the model's prediction for it."""

    episode: int
    step: int
    action: int | list[float]
    action_name: str
    predicted_reward: float
    real_reward: float
    predicted_cont: float
    real_cont: float
    uncertainty: float
    reward_uncertainty: float = 0.0
    unknown: bool = False
    """The model flagged the step as unknown (its ensemble's disagreement above the calibrated threshold)."""
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


BRANCH_STEPS = 50
"""Length of the dreams a :class:`DreamLearner` trains in after a correction round. They start from moments of the
real play (the states the learner itself reached, where the model was wrong), not only from the env's reset, and
end (truncated: the learner bootstraps its value there) before the model's errors compound: a long open-loop dream
of CartPole keeps a drifting cart on the track for 500 steps where the real one leaves it after ~220. Short
branches from real states are what Reverie's own actor learns from (``ac.horizon`` steps) and what makes it
transfer. In ``benchmarks/dream_transfer.py`` (CartPole-v1, PPO, seeds 0 and 1) they lifted the real return after
3 rounds from 314 and 251 (500-step dreams from the same starts) to 425 and 340."""

Policy = Callable[[Any], Any]
"""Any policy: one observation as :class:`reverie.dream.DreamEnv` gives it (an array for a one-key model, else a
dict) -> one action of its action space."""


class DreamLearner(Protocol):
    """A learner that trains inside the dream (e.g. a Stable-Baselines3 model behind these two methods).

    A learner that also has ``state_dict()`` and ``load_state_dict(state)`` (its policy's weights) is handed back
    by :func:`correct` as it was in the round whose real play went best; without them it stays as the last round
    left it.

    Example:
        >>> class Random:
        ...     def learn(self, env, steps): self.space = env.action_space
        ...     def act(self, obs): return self.space.sample()
    """

    def learn(self, env: gymnasium.Env, steps: int) -> None:
        """Train (on) for ``steps`` steps of ``env`` (a :class:`reverie.dream.DreamEnv`)."""

    def act(self, obs: Any) -> Any:
        """The action for one observation of the env it learned in."""


def gym_obs(obs: dict[str, np.ndarray], keys: list[str], i: int) -> Any:
    """Row ``i`` of batched observations in :class:`reverie.dream.DreamEnv`'s layout (an array for one key)."""
    return np.asarray(obs[keys[0]][i]) if len(keys) == 1 else {k: np.asarray(obs[k][i]) for k in keys}


def watch(
    agent: Dreamer,
    episodes: int,
    seed: int,
    head: Head = "actor",
    promise_every: int = 25,
    policy: Policy | None = None,
) -> tuple[EpisodeResults, list[Check], list[dict[str, np.ndarray]], PromiseTracker]:
    """Run ``episodes`` real episodes with the model predicting every step alongside.

    The actions come from the agent's ``head``, or from ``policy`` (any policy, see :data:`Policy`; the model then
    filters the real observations beside it and makes no imagined-return promises).

    Returns the episode results, one :class:`Check` per real step, the episodes as arrays (for
    training, in the dataset layout: ``action[t]`` led to step ``t``; ``promised_reward[t]`` and
    ``promised_cont[t]`` are the reward and continuation the model predicted for that step, 0 and 1 at the
    first) and the promise tracker.
    """
    learner, cfg = agent.learner, agent.config
    space = learner.act_space
    envs = agent.make_envs(episodes, seed)
    names = action_names(cfg.env.id, learner.action_dim) if space.discrete else ["action"]
    keys = model_keys(envs.obs_space)
    dream_keys = list(learner.obs_space)  # what a policy of the dream reads, in DreamEnv's order
    tracker = PromiseTracker(cfg.ac.horizon, promise_every if policy is None else 0, learner, head)
    n = envs.num_envs
    state: PolicyState | None = None
    pending: tuple[np.ndarray, ...] = ()  # (action, predicted reward and cont, the uncertainties) of the step
    no_action = np.zeros(space.shape, np.int64 if space.discrete else np.float32)
    last_action = np.stack([no_action] * n)
    promised = np.zeros(n, np.float32)  # the model's reward for each env's latest step
    promised_cont = np.ones(n, np.float32)  # and its continuation
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

    def record(obs: dict[str, np.ndarray], i: int, action: np.ndarray) -> None:
        step = {k: np.asarray(obs[k][i]) for k in (*keys, *RECORD_KEYS)}
        promises = {"promised_reward": promised[i].copy(), "promised_cont": promised_cont[i].copy()}
        open_eps[i].append({**step, "action": np.asarray(action), **promises})

    def choose(obs: dict[str, np.ndarray]) -> tuple[np.ndarray, PolicyState, torch.Tensor]:
        if policy is None:
            return learner.policy(obs, state, False, head)
        latent = learner.filter(obs, state)
        action = np.stack([np.asarray(policy(gym_obs(obs, dream_keys, i)), no_action.dtype) for i in range(n)])
        vec = learner.encode_action(torch.as_tensor(action, device=learner.device))
        return action, {**latent, "action": vec}, vec

    def act(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
        nonlocal state, pending, last_action
        action, state, vec = choose(obs)
        with torch.no_grad(), learner.autocast(acting=True):
            latent = {k: v for k, v in state.items() if k != "action"}
            now = learner.to_tensors({k: obs[k] for k in learner.wm.obs_keys})  # the next picture starts from it
            step = learner.dream_step(latent, vec, now)
            reward, cont = step.reward.float().cpu().numpy(), step.cont.float().cpu().numpy()
            u, ru, unknown = np.zeros(n), np.zeros(n), np.zeros(n, bool)
            if step.uncertainty is not None and step.reward_uncertainty is not None:
                u, ru = step.uncertainty.cpu().numpy(), step.reward_uncertainty.cpu().numpy()
                unknown = step.unknown.cpu().numpy() if step.unknown is not None else unknown
        pending = (np.asarray(action), reward, cont, u, ru, unknown)
        before.update({k: np.array(obs[k]) for k in effect_keys})
        if policy is None:
            tracker.promise(state, ~np.asarray(obs["is_last"], bool), obs)
        for i in range(n):
            if first[i]:
                open_eps[i] = []
                promised[i], promised_cont[i] = 0.0, 1.0
            record(obs, i, no_action if first[i] else last_action[i])
        last_action = np.asarray(action)
        return action

    def on_step(obs: dict[str, np.ndarray], live: np.ndarray) -> None:
        tracker.observe(obs, live)
        action, reward, cont, u, ru, unknown = pending
        real_cont = 1.0 - np.asarray(obs["is_terminal"], np.float64)
        changed = effect(before, obs) if effect is not None else np.zeros(n, bool)
        for i in map(int, np.flatnonzero(live)):
            a = int(action[i]) if space.discrete else [float(x) for x in np.ravel(action[i])]
            name = (names[a] if a < len(names) else str(a)) if isinstance(a, int) else names[0]
            promised[i], promised_cont[i] = reward[i], cont[i]
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
                    bool(unknown[i]),
                    effect=bool(changed[i]) if effect is not None else None,
                )
            )
            if obs["is_last"][i]:
                record(obs, i, action[i])
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
    return out | ending_report(checks, examples)


def ending_report(checks: list[Check], examples: int = 3) -> dict[str, Any]:
    """How the model saw the real episode endings (the game's terminations; time limits do not count).

    Returns ``endings`` (real terminations), ``missed_endings`` (the model said the episode goes on:
    continuation >= 0.5, where a dream would have gone on), ``false_endings`` (it said < 0.5 where the game
    went on), ``ending_cont`` (the median continuation it gave the real endings), ``ending_auroc`` (of
    ``1 - continuation`` for flagging them), ``ending_uncertainty_auroc`` and ``ending_unknown_rate`` (how
    well and how often the ensemble's doubt flagged them) and ``ending_examples`` (missed endings).
    """
    ended = np.array([c.real_cont < 0.5 for c in checks], bool)
    cont = np.array([c.predicted_cont for c in checks])
    missed = [c for c, e in zip(checks, ended, strict=True) if e and c.predicted_cont >= 0.5]
    return {
        "endings": int(ended.sum()),
        "missed_endings": len(missed),
        "false_endings": int(((cont < 0.5) & ~ended).sum()),
        "ending_cont": float(np.median(cont[ended])) if ended.any() else None,
        "ending_auroc": auroc(1.0 - cont, ended),
        "ending_uncertainty_auroc": auroc(np.array([c.uncertainty for c in checks]), ended),
        "ending_unknown_rate": float(np.mean([c.unknown for c in checks if c.real_cont < 0.5]))
        if ended.any()
        else None,
        "ending_examples": [dataclasses.asdict(c) for c in missed[:examples]],
    }


class RealPlay:
    """The real episodes of the rounds so far, sampled as training windows that stay inside one episode.

    A ``focus`` share of the windows is aimed at the model's misses: each holds a step (at a random
    place in the window) whose real reward differs from ``promised_reward`` by ``margin`` or more, or where the
    game ended (``is_terminal``, in episodes watched with ``promised_cont``: whether the model saw that ending
    or not, so that it keeps what it learned from the rounds before), so that the few steps that expose a
    loophole are seen often, not once in a thousand windows.

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
            ep = {k: v for k, v in ep.items() if not k.startswith("promised_")}
            ep |= {"action_mask": np.ones(length, np.float32), "reward_mask": np.ones(length, np.float32)}
            miss = np.zeros(length, bool)
            if "promised_reward" in episodes[i]:
                miss |= np.abs(episodes[i]["promised_reward"] - ep["reward"]) >= margin
            if "promised_cont" in episodes[i]:  # every real ending: rare, and what a lenient dream leaves out
                miss |= np.asarray(ep["is_terminal"], bool)
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
    if len(parts) == 2 and parts[0]["action"].ndim == parts[1]["action"].ndim + 1:  # an online replay's one-hot
        width = parts[0]["action"].shape[-1]
        parts[1]["action"] = np.eye(width, dtype=parts[0]["action"].dtype)[parts[1]["action"].astype(np.int64)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    out["bc_mask"] = (np.arange(batch) < batch - n_real).astype(np.float32)[:, None].repeat(length, 1)
    return out


def correct(
    agent: Dreamer,
    dataset: str | os.PathLike[str] | Dataset | Replay | None = None,
    rounds: int = 3,
    episodes: int = 20,
    finetune_steps: int = 300,
    rl_steps: int = 300,
    real_frac: float = 0.25,
    margin: float = 0.5,
    seed: int = 0,
    focus: float = 0.75,
    on_round: Callable[[list[dict[str, Any]]], None] | None = None,
    learner: DreamLearner | None = None,
    dream_steps: int = 30_000,
) -> list[dict[str, Any]]:
    """Run round 0 (the policy as it is) and ``rounds`` correction rounds; returns one report per round.

    The policy is handed back as it was in the round whose real return was highest (the latest of equals; that
    round's report has ``kept`` True): the agent's own actor with the model it was trained in, a learner with
    ``state_dict``/``load_state_dict`` alone (the model stays corrected by every round), any other learner as the
    last round left it. The rounds' real play is the validation: a round can make the policy worse (the learner
    finds a new mistake of the corrected model), and the loop does not hand that back over a better one.

    Each report: ``round``, ``real_score`` (the game's score, if its summary has one), ``real_return``,
    ``imagined_return`` and ``real_return_h`` (promised vs real over ``ac.horizon`` steps; the agent's own actor
    only), ``exploit_rate``, ``exploits``, ``examples``, ``uncertainty_auroc`` / ``reward_uncertainty_auroc`` and
    the mean of each uncertainty on exploit vs other steps, the endings (:func:`ending_report`), ``real_steps``.

    Args:
        dataset: the recordings the model learned from (an offline agent), or a replay (an online run's:
            :func:`run_replay`); None: the replay of the agent's ``run.logdir``.
        focus: share of the real windows aimed at a step the model missed (:class:`RealPlay`).
        learner: any learner that trains in the dream (:class:`DreamLearner`): it acts in the real episodes and
            after each fine-tuning trains ``dream_steps`` steps in a :class:`reverie.dream.DreamEnv` of the
            corrected model whose dreams start from moments of the real play so far (:func:`real_play_dataset`)
            and last :data:`BRANCH_STEPS` steps. None: the agent's own actor, trained ``rl_steps`` updates in
            imagination (from replayed and real states, ``ac.horizon`` steps each).
        on_round: runs after each round's report, with the agent as it was watched in that round (e.g. to save
            the agent and the reports so far: a crash loses at most the round in progress).

    The fine-tuning is :meth:`reverie.learner.Learner.update`'s ``model`` phase on batches mixing the data and
    real play, the actor's training its ``rl`` phase.
    """
    from reverie.dream import DreamEnv

    seed_everything(seed)  # sampled actions and latents: the same seed repeats a run
    if not 0.0 <= real_frac < 1.0:
        raise ValueError(f"real_frac must lie in [0, 1) (the recordings keep a share of each batch), got {real_frac}.")
    if min(finetune_steps, rl_steps, margin) < 0:
        got = f"{finetune_steps}, {rl_steps}, {margin}"
        raise ValueError(f"finetune_steps, rl_steps and margin must be 0 or more, got {got}.")
    cfg = agent.config
    t = cfg.train
    if isinstance(dataset, Replay):
        data_replay = dataset
    elif dataset is not None:
        data = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        agent.adopt_dataset(data)
        if not agent.state.has_prior and learner is None:  # an agent fitted without RL: its actor starts from BC
            agent.learner.start_rl()
            agent.state.offline_phase = "rl"
        data_replay = dataset_replay(data, t.replay_chunk, seed)
    else:
        data_replay = run_replay(agent.logdir, agent.config, seed)
    real_eps: list[dict[str, np.ndarray]] = []
    rng = np.random.default_rng(seed)
    reports: list[dict[str, Any]] = []
    restorable = learner is None or all(callable(getattr(learner, m, None)) for m in ("state_dict", "load_state_dict"))
    best: tuple[float, int, Any] = (-np.inf, 0, None)  # real return, round, the policy's weights then
    for r in range(rounds + 1):
        policy = learner.act if learner is not None else None
        results, checks, new_eps, tracker = watch(agent, episodes, seed + 7919 * (r + 1), policy=policy)
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
        if restorable and row["real_return"] >= best[0]:  # no copy of the last round's: it is the policy held
            weights = agent.state_dict() if learner is None else learner.state_dict()  # type: ignore[attr-defined]
            best = (row["real_return"], r, copy.deepcopy(weights) if r < rounds else None)
        log.info(
            "round %d: real return %.1f, exploit rate %.4f, endings missed %d of %d",
            r,
            row["real_return"],
            row["exploit_rate"],
            row["missed_endings"],
            row["endings"],
        )
        if on_round is not None:
            on_round(reports)
        if r == rounds:
            break
        real = RealPlay(real_eps, focus, margin, seed + r)
        log.info("round %d: fine-tuning on %d real steps (%d misses)", r + 1, row["real_steps"], len(real.misses))
        for _ in range(finetune_steps):
            batch = mixed_batch(data_replay, real, t.batch_size, t.batch_length, real_frac)
            agent.state.record_update(agent.learner.update(batch, "model"))
        if learner is not None:
            with tempfile.TemporaryDirectory(prefix="reverie-real-play-") as folder:
                play = real_play_dataset(agent, real_eps, Path(folder) / "real-play")
                env = DreamEnv(agent, seed=seed + 104_729 * (r + 1), dataset=play, max_steps=BRANCH_STEPS)
                try:
                    learner.learn(env, dream_steps)
                finally:
                    env.close()
            continue
        for _ in range(rl_steps):
            batch = mixed_batch(data_replay, real, t.batch_size, t.batch_length, real_frac)
            agent.state.record_update(agent.learner.update(batch, "rl", rng))
    kept = best[1] if restorable else len(reports) - 1
    if best[2] is not None:  # an earlier round played better than the last: hand that policy back
        if learner is None:
            agent.learner.load_state_dict(best[2]["model"])
            agent.learner.opt.load_state_dict(best[2]["optim"])
        else:
            learner.load_state_dict(best[2])  # type: ignore[attr-defined]
        log.info("kept round %d's policy (real return %.1f; the last round's %.1f)", kept, best[0], row["real_return"])
    for report in reports:
        report["kept"] = report["round"] == kept
    return reports


def real_play_dataset(agent: Dreamer, episodes: list[dict[str, np.ndarray]], folder: str | os.PathLike[str]) -> Dataset:
    """The real episodes :func:`watch` returned as a dataset of the agent's env in the new ``folder`` (e.g. to start
    dreams from their moments: ``DreamEnv(agent, dataset=...)``)."""
    learner = agent.learner
    with DatasetWriter(
        folder,
        agent.config.env.id,
        learner.obs_space,
        learner.act_space,
        creation={"source": "reverie.correction real play"},
    ) as writer:
        for ep in episodes:
            writer.add_episode({k: v for k, v in ep.items() if not k.startswith("promised_")})
    return Dataset(folder)


def run_replay(run: str | os.PathLike[str], config: Config, seed: int = 0) -> Replay:
    """The replay an online run stored beside its checkpoint (``<run>/replay``), to sample from; a ReplayError
    when there is none (the run kept no replay, or the checkpoint was moved without it)."""
    folder = Path(run) / "replay"
    if not folder.is_dir() or not any(folder.glob("*.npz")):
        raise ReplayError(
            f"No replay at {folder}: correction without a dataset trains on the run's own replay; pass the "
            "recordings the model learned from (--data) or a run folder that holds its replay."
        )
    t = config.train
    return Replay(folder, t.replay_size, t.replay_chunk, 0.0, seed)
