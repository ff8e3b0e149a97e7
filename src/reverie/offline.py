"""Offline learning from recorded play (the Dreamer 4 idea): ``Dreamer.fit(dataset, steps)``.

Two phases (three with ``offline.bc_frac``) over the same networks and checkpoint format as online training:

1. **Model + behaviour cloning** (first ``1 - offline.rl_frac - offline.bc_frac`` of the updates): the
   world model learns from every episode (a learned no-action input, or inverse-dynamics labels, where
   actions are missing; the reward head only where rewards exist); the behaviour-cloning head ``bc``
   learns the recorded actions on model features; the critic learns the recorded play's lambda-returns.
   Optionally (``offline.bc_frac``) the head then goes on alone on the frozen model's features: a head
   still learning when the model is done gets more updates at a fraction of a model update's cost.
2. **Imagination RL** (the last ``offline.rl_frac``): the world model is frozen, the actor starts as a
   copy of ``bc`` and a frozen copy becomes the prior; rollouts start from dataset states, and the actor
   is trained with ``ac.objective`` (PMPO or DreamerV3's) plus ``ac.prior_kl * KL(actor || prior)``, or
   (``offline.rl_objective=one_step``) towards ``prior * exp(Q / ac.prior_kl)`` with ``Q`` every action's
   predicted reward one imagined step ahead. With
   a latent ensemble, ``offline.pessimism`` penalises or cuts transitions the ensemble disagrees on.

The environment is never touched while training; it is used only to evaluate at the end.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from reverie.actor_critic import Actor
from reverie.functional import masked_mean, random_shift, return_to_go, rwr_weights, twohot_decode
from reverie.learner import Head, Learner
from reverie.logger import Logger, Progress
from reverie.replay import Replay

if TYPE_CHECKING:
    from reverie.agent import Dreamer
    from reverie.data import Dataset

log = logging.getLogger("reverie.offline")


def bc_loss(
    actor: Actor, feat: Tensor, batch: dict[str, Tensor], weight: Tensor | None = None, shift: int = 0
) -> tuple[Tensor, dict[str, Tensor]]:
    """Negative log-likelihood of the recorded action taken at each step, over labelled transitions.

    ``action[t + 1]`` is the action taken at step ``t`` (it led to step ``t + 1``), so the policy at
    ``feat[:, t]`` is scored on it wherever ``t + 1`` continues the episode and carries a label.
    ``weight`` (B, T - 1), if given, weights each step's term (:func:`return_weights`); the loss is the
    weighted mean over labelled steps. ``shift`` > 0 moves each image the policy reads by up to that many
    pixels (:func:`reverie.functional.random_shift`).
    """
    mask = 1.0 - batch["is_first"][:, 1:].float()
    if "action_mask" in batch:
        mask = mask * batch["action_mask"][:, 1:].float()
    if "bc_mask" in batch:  # rows of the agent's own play are not demonstrations
        mask = mask * batch["bc_mask"][:, 1:].float()
    obs = {k: batch[k][:, :-1] for k in actor.obs_keys} or None  # a policy's own view (``ac.obs_input``)
    if obs is not None and shift > 0 and actor.encoder is not None:
        obs = {k: random_shift(v, shift) if k in actor.encoder.images else v for k, v in obs.items()}
    policy = actor(feat[:, :-1], obs)
    target = batch["action"][:, 1:]
    weighted = mask if weight is None else mask * weight
    loss = -(policy.log_prob(target) * weighted).sum() / weighted.sum().clamp(min=1e-6)
    metrics = {"bc/loss": loss.detach(), "bc/labelled_frac": mask.mean()}
    if policy.discrete:
        hit = (policy.logits.argmax(-1) == target.argmax(-1)).float()
        metrics["bc/accuracy"] = masked_mean(hit, mask).detach()
    return loss, metrics


def label_actions(
    learner: Learner, batch: dict[str, Tensor], embed: Tensor
) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
    """Inverse dynamics: learn ``(embed_t, embed_t+1) -> action_t+1`` on labelled transitions, then fill
    the unlabelled ones with its prediction (and mark them labelled). Embeddings are detached: the
    inverse model never shapes the encoder. Returns the relabelled batch, the loss and metrics."""
    assert learner.idm is not None
    inside = 1.0 - batch["is_first"][:, 1:].float()
    known = batch["action_mask"][:, 1:].float()
    out = learner.idm(torch.cat([embed[:, :-1], embed[:, 1:]], -1).detach()).float()  # (B, T-1, A')
    target = batch["action"][:, 1:]
    if learner.act_space.discrete:
        logp = out.log_softmax(-1)
        per_step = -(target * logp).sum(-1)
        guess = nn.functional.one_hot(out.argmax(-1), learner.action_dim).float()
        hit = (out.argmax(-1) == target.argmax(-1)).float()
    else:
        guess = torch.tanh(out[..., : learner.action_dim])
        per_step = ((guess - target) ** 2).sum(-1)
        hit = (per_step < 0.1).float()
    loss = masked_mean(per_step, known * inside)
    fill = ((1.0 - known) * inside).unsqueeze(-1)
    action = batch["action"].clone()
    action[:, 1:] = fill * guess.detach() + (1.0 - fill) * target
    mask = batch["action_mask"].clone()
    mask[:, 1:] = torch.maximum(mask[:, 1:], fill.squeeze(-1))
    metrics = {"idm/loss": loss.detach(), "idm/accuracy": masked_mean(hit, known * inside).detach()}
    return {**batch, "action": action, "action_mask": mask}, loss, metrics


def model_update(learner: Learner, batch_np: dict[str, np.ndarray], bc_scale: float = 1.0) -> dict[str, float]:
    """Phase 1: one update of world model, behaviour-cloning head, inverse dynamics and critic."""
    batch = learner.sequences(batch_np)
    learner.train()
    wm = learner.wm
    metrics: dict[str, Tensor] = {}
    with learner.autocast():
        embed = wm.encoder({k: batch[k] for k in wm.obs_keys})
        idm_loss = torch.zeros((), device=learner.device)
        if learner.idm is not None and "action_mask" in batch:
            batch, idm_loss, idm_metrics = label_actions(learner, batch, embed)
            metrics.update(idm_metrics)
        wm_loss, states, wm_metrics = wm.loss(batch, embed=embed)
        metrics.update(wm_metrics)
        feat = wm.rssm.feat(states)
        weight, weight_metrics = return_weights(learner, batch)
        metrics.update(weight_metrics)
        bc, bc_metrics = bc_loss(learner.bc, feat, batch, weight, learner.cfg.offline.bc_shift)
        metrics.update(bc_metrics)
        critic = data_critic_loss(learner, feat.detach(), batch)
    loss = wm_loss + idm_loss + bc_scale * bc + critic
    _step(learner, loss)
    learner.update_bc_avg()
    metrics["loss/critic_data"] = critic.detach()
    return _floats(metrics)


def data_critic_loss(learner: Learner, feat: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """The critic's loss on the recorded returns of the replayed sequences ``feat`` (B, T, F), bootstrapped
    from the slow critic; unrewarded episodes use the reward head's guess."""
    reward = batch["reward"].float()
    if "reward_mask" in batch:
        known = batch["reward_mask"].float()
        guess = twohot_decode(learner.wm.recorded_reward_logits(feat, batch), learner.wm.bins)
        reward = known * reward + (1.0 - known) * guess.float()
    boot = learner.ac.value(feat, slow=True)
    return learner.ac.repval_loss(feat, {**batch, "reward": reward}, boot)


def return_weights(learner: Learner, batch: dict[str, Tensor]) -> tuple[Tensor | None, dict[str, Tensor]]:
    """Return-weighted behaviour cloning (``offline.bc_return_temp``, as in reward-weighted regression): a
    weight (B, T - 1) for the recorded action of each step ``t``, ``exp((G_t - mean G) / temp)`` capped at
    ``offline.bc_weight_max``, with ``G_t`` the discounted return the recording got after step ``t``
    (``return_to_go``, stored with the replayed steps by :func:`dataset_replay`) and the mean taken over the
    batch's steps that carry rewards; steps without recorded rewards weigh 1. Imitation then leans on the
    stretches of play that led to rewards. None (no weights) when the option is off or the batch carries no
    ``return_to_go`` (a replay other than the offline dataset's)."""
    off = learner.cfg.offline
    if off.bc_return_temp <= 0 or "return_to_go" not in batch:
        return None, {}
    known = batch["reward_mask"][:, :-1].float() if "reward_mask" in batch else torch.ones_like(batch["reward"][:, :-1])
    ret = batch["return_to_go"][:, :-1].float()
    weight = rwr_weights(ret, known, off.bc_return_temp, off.bc_weight_max)
    return weight, {"bc/weight_max": weight.max(), "bc/weight_mean": weight.mean()}


def bc_update(learner: Learner, batch_np: dict[str, np.ndarray]) -> dict[str, float]:
    """Phase 1b (``offline.bc_frac``): one update of the behaviour-cloning head alone, on the frozen model's
    features (with inverse dynamics, on its labels as in phase 1; the inverse model itself stays put)."""
    batch = learner.sequences(batch_np)
    learner.train()
    wm = learner.wm
    metrics: dict[str, Tensor] = {}
    with learner.autocast():
        with torch.no_grad():
            if learner.idm is not None and "action_mask" in batch:
                embed = wm.encoder({k: batch[k] for k in wm.obs_keys})
                batch, _, idm_metrics = label_actions(learner, batch, embed)
                metrics.update(idm_metrics)
            if learner.bc.reads_feat:
                feat = wm.rssm.feat(wm.observe(batch)[0])
            else:  # a policy on observations alone needs no pass of the model
                feat = batch["is_first"].new_zeros((*batch["is_first"].shape, 0), dtype=torch.float32)
        weight, weight_metrics = return_weights(learner, batch)
        metrics.update(weight_metrics)
        loss, bc_metrics = bc_loss(learner.bc, feat, batch, weight, learner.cfg.offline.bc_shift)
        metrics.update(bc_metrics)
    _step(learner, loss, list(learner.bc.parameters()))
    learner.update_bc_avg()
    return _floats(metrics)


def start_rl(learner: Learner) -> None:
    """Phase 2 begins: the actor starts as the behaviour-cloning head (its moving average with
    ``offline.bc_ema``), whose frozen copy becomes the prior."""
    state = learner.actor("bc").state_dict()
    learner.ac.actor.load_state_dict(state)
    learner.bc_prior.load_state_dict(state)


def dataset_starts(
    learner: Learner, batch: dict[str, Tensor], states: dict[str, Tensor], rng: np.random.Generator
) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """``offline.imag_starts`` states drawn from a replayed batch's posterior ``states`` (B, T, ...) as (N, ...),
    the real observations at them (:meth:`reverie.learner.Learner.pictured_keys`) and their flat indices."""
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in states.items()}  # (B*T, ...)
    count = len(flat["deter"])
    idx = torch.as_tensor(rng.choice(count, min(learner.cfg.offline.imag_starts, count), replace=False))
    start = {k: v[idx] for k, v in flat.items()}
    seen = {k: batch[k].reshape(-1, *batch[k].shape[2:])[idx] for k in learner.pictured_keys()}
    return start, seen, idx


def imagination_update(learner: Learner, batch_np: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, float]:
    """Phase 2: one actor-critic update on rollouts imagined from dataset states (world model frozen)."""
    cfg = learner.cfg
    batch = learner.sequences(batch_np)
    learner.train()
    wm = learner.wm
    with learner.autocast():
        with torch.no_grad():
            states, _, _ = wm.observe(batch)
        start, seen, idx = dataset_starts(learner, batch, states, rng)
        traj = learner.imagine(start, cfg.ac.horizon, first_obs=seen)  # the real observation at each start
        with torch.set_grad_enabled(cfg.ac.actor_grad == "dynamics"):  # the actor's gradient may run through
            change = learner.imagined_change(traj)  # read by the reward head and the ensemble's reward doubt
            reward = learner.imagined_reward(traj, change=change).float()  # (N, H+1)
            cont = wm.cont(traj["feat"])
        terminal = batch["is_terminal"].reshape(-1)[idx].float()
        cont = torch.cat([1.0 - terminal[:, None], cont[:, 1:]], 1)
        reward, cont, pess = pessimism(learner, traj, reward, cont, change)
        actor_loss, critic_loss, _, metrics = learner.ac.imagine_loss(traj, reward, cont, prior=learner.bc_prior)
        real_feat = wm.rssm.feat(states).detach()
        if cfg.offline.data_prior_kl > 0:  # stay near the prior where the actor will act: real states, real obs
            kl = data_prior_kl(learner, real_feat, batch)
            actor_loss = actor_loss + cfg.offline.data_prior_kl * kl
            metrics["ac/data_prior_kl"] = kl.detach()
        if cfg.offline.rl_critic_data > 0:  # the critic keeps learning what the recordings earned
            data_critic = data_critic_loss(learner, real_feat, batch)
            critic_loss = critic_loss + cfg.offline.rl_critic_data * data_critic
            metrics["loss/critic_data"] = data_critic.detach()
    ac = learner.ac
    _step(learner, actor_loss + critic_loss, [*ac.actor.parameters(), *ac.critic.parameters()])
    metrics.update(pess)
    metrics.update({"loss/actor": actor_loss.detach(), "loss/critic": critic_loss.detach()})
    return _floats(metrics)


def one_step_values(learner: Learner, start: dict[str, Tensor], seen: dict[str, Tensor], samples: int) -> Tensor:
    """(N, A) the reward the model predicts one step after each of the A discrete actions from N latent
    states ``start``, averaged over ``samples`` latent draws; ``seen``: the real observations at the starts
    (:meth:`reverie.learner.Learner.pictured_keys`), from which a reward head with ``model.reward_change``
    reads what the step changed. ``offline.pessimism=penalty`` and ``offline.reward_doubt`` apply as in
    rollouts (a ``cut`` only ends rollouts, and a one-step rollout has nothing after its step)."""
    wm, n, actions = learner.wm, len(start["deter"]), learner.action_dim
    reps = actions * samples
    tiled = {k: v.repeat_interleave(reps, 0) for k, v in start.items()}
    onehot = learner.encode_action(torch.arange(actions, device=learner.device).repeat_interleave(samples).repeat(n))
    nxt = wm.rssm.imagine_step(tiled, onehot)
    feat = torch.stack([wm.rssm.feat(tiled), wm.rssm.feat(nxt)], 1)  # (N * reps, 2, F)
    traj = {"feat": feat, "action": torch.stack([onehot, torch.zeros_like(onehot)], 1)}
    key = wm.change_key
    if key is not None:
        now = seen[key].float().repeat_interleave(reps, 0)
        pictured = learner.decoded_obs(feat[:, 1], [key], {key: now})[key]
        traj[f"obs/{key}"] = torch.stack([now, pictured], 1)
    change = learner.imagined_change(traj)
    reward = learner.imagined_reward(traj, change=change).float()
    reward, _, _ = pessimism(learner, traj, reward, wm.cont(feat).float(), change)
    return reward[:, 1].reshape(n, actions, samples).mean(-1)


def check_one_step(learner: Learner) -> None:
    """``offline.rl_objective=one_step`` scores every action of a state: a clear error for continuous actions."""
    if not learner.act_space.discrete:
        raise ValueError(
            "offline.rl_objective=one_step scores every action of a state and needs a discrete action space; "
            "use offline.rl_objective=rollout for continuous actions."
        )


def one_step_update(learner: Learner, batch_np: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, float]:
    """Phase 2 with ``offline.rl_objective=one_step``: from dataset states, with their real observations,
    every action is imagined one step ahead (``Q``: the predicted reward) and the actor maximises
    ``E_pi[Q] - ac.prior_kl * KL(pi || prior)`` summed exactly over the actions, whose maximiser is
    ``prior * exp(Q / ac.prior_kl)``. Over 15 imagined steps the model's action values did not correlate
    with the game's in offline Crafter; one step ahead they did (docs/offline_results.md)."""
    cfg = learner.cfg
    check_one_step(learner)
    batch = learner.sequences(batch_np)
    learner.train()
    wm, actor = learner.wm, learner.ac.actor
    with learner.autocast():
        with torch.no_grad():
            states, _, _ = wm.observe(batch)
            start, seen, _ = dataset_starts(learner, batch, states, rng)
            q = one_step_values(learner, start, seen, cfg.offline.one_step_samples)  # (N, A)
            feat = wm.rssm.feat(start)
            obs = {k: seen[k] for k in actor.obs_keys} or None
            prior = learner.bc_prior(feat, obs)
        policy = learner.supported(actor, actor(feat, obs), feat, obs)
        probs = policy.logits.float().exp()
        expected = (probs * q).sum(-1)
        kl = policy.kl(prior)
        entropy = policy.entropy()
        actor_loss = (-expected + cfg.ac.prior_kl * kl - cfg.ac.entropy * entropy).mean()
        metrics = {
            "ac/one_step_q": q.mean(),
            "ac/one_step_q_spread": (q.max(-1).values - q.min(-1).values).mean(),
            "ac/one_step_expected": expected.mean().detach(),
            "ac/prior_kl": kl.mean().detach(),
            "ac/entropy": entropy.mean().detach(),
        }
        if cfg.offline.data_prior_kl > 0:
            dkl = data_prior_kl(learner, wm.rssm.feat(states).detach(), batch)
            actor_loss = actor_loss + cfg.offline.data_prior_kl * dkl
            metrics["ac/data_prior_kl"] = dkl.detach()
    _step(learner, actor_loss, list(actor.parameters()))
    metrics["loss/actor"] = actor_loss.detach()
    return _floats(metrics)


def data_prior_kl(learner: Learner, feat: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """Mean KL(actor || BC prior) over the replayed real states ``feat`` (B, T, F) with their recorded
    observations. The imagined KL sees decoded observations only; an actor that reads observations
    (``ac.obs_input``) can drift on real ones while staying close on those."""
    actor = learner.ac.actor
    obs = {k: batch[k] for k in actor.obs_keys} or None
    with torch.no_grad():
        prior = learner.bc_prior(feat, obs)
    return learner.supported(actor, actor(feat, obs), feat, obs).kl(prior).mean()


def pessimism(
    learner: Learner, traj: dict[str, Tensor], reward: Tensor, cont: Tensor, change: Tensor | None = None
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Apply ``offline.pessimism`` with the latent ensemble: MOPO-style penalty ``r - scale * u`` or a
    MOReL-style cut (the rollout ends after a transition whose disagreement exceeds the threshold); and
    ``offline.reward_doubt``: ``r - scale * ru`` with ``ru`` the members' disagreement about the reward
    (:meth:`reverie.world_model.WorldModel.doubt`). ``change``: the rollout's
    :meth:`reverie.learner.Learner.imagined_change` when the caller has it (read with ``model.reward_change``)."""
    wm, off = learner.wm, learner.cfg.offline
    if wm.ensemble is None:
        return reward, cont, {}
    feat = traj["feat"]
    with torch.no_grad():  # transition t -> t+1: state t, action t, and the recurrent state the model stepped to
        if change is None:
            change = learner.imagined_change(traj)
        step_change = None if change is None else change[:, 1:]  # each step's pictured change, for every member
        next_deter = feat[:, 1:, : learner.cfg.model.deter]
        u, ru = wm.doubt_feat(feat[:, :-1], traj["action"][:, :-1], next_deter, change=step_change)  # (N, H)
    unknown = (u > wm.ensemble.threshold).float()
    metrics = {"imag/disagreement": u.mean(), "imag/unknown_frac": unknown.mean(), "imag/reward_doubt": ru.mean()}
    if off.pessimism == "penalty":
        reward = torch.cat([reward[:, :1], reward[:, 1:] - off.pessimism_scale * u], 1)
    elif off.pessimism == "cut":
        cont = torch.cat([cont[:, :1], cont[:, 1:] * (1.0 - unknown)], 1)
    if off.reward_doubt > 0:
        reward = torch.cat([reward[:, :1], reward[:, 1:] - off.reward_doubt * ru], 1)
    return reward, cont, metrics


def _step(learner: Learner, loss: Tensor, params: list[nn.Parameter] | None = None) -> None:
    """One optimiser step on ``loss``; with ``params``, only those receive gradients (the rest stay put)."""
    learner.opt.zero_grad(set_to_none=True)
    loss.backward(inputs=params)
    clip = learner.cfg.optim.clip_norm
    if clip > 0:
        nn.utils.clip_grad_norm_(learner.parameters(), clip)
    learner.opt.step()
    learner.ac.update_slow()
    learner.updates += 1


def _floats(metrics: dict[str, Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in metrics.items()}


def dataset_replay(
    dataset: Dataset, chunk: int, seed: int, return_discount: float | None = None, min_reward: float = 0.0
) -> Replay:
    """An in-memory replay holding every step of ``dataset`` (with label masks), sampled uniformly.

    With ``return_discount`` each step also carries ``return_to_go``, the discounted return the recording
    got after it, ``G_t = r_{t+1} + return_discount * G_{t+1}`` (0 at an episode's last step, and at every
    step of an episode without rewards; rewards smaller in magnitude than ``min_reward`` count as 0), which
    return-weighted behaviour cloning reads.
    """
    replay = Replay(None, capacity=dataset.num_steps + 1, chunk=chunk, recent_frac=0.0, seed=seed)
    if return_discount is None:
        dataset.to_replay(replay)
        return replay
    for episode in dataset.episodes():
        ret = return_to_go(episode["reward"] * episode["reward_mask"], return_discount, min_reward)
        for t in range(len(ret)):
            replay.add({**{k: v[t] for k, v in episode.items()}, "return_to_go": ret[t]})
    return replay


class OfflineTrainer:
    """Runs :meth:`Dreamer.fit`: model + BC updates, then imagination RL, with logging, saving and progress."""

    def __init__(self, agent: Dreamer, dataset: Dataset, logger: Logger):
        self.agent, self.cfg, self.logger = agent, agent.config, logger
        t = self.cfg.train
        log.info("loading %d steps of %s into memory", dataset.num_steps, dataset.folder)
        discount = self.cfg.offline.bc_return_discount if self.cfg.offline.bc_return_temp > 0 else None
        self.replay = dataset_replay(
            dataset,
            t.replay_chunk,
            t.seed + agent.counters["offline_updates"],
            discount,
            self.cfg.offline.bc_return_min_reward,
        )
        self.rng = np.random.default_rng(t.seed + 7919 * (agent.counters["offline_updates"] + 1))
        self.name = dataset.env_id

    def rl_start(self, total: int) -> int:
        """The offline update at which imagination RL begins."""
        return int(round(total * (1.0 - self.cfg.offline.rl_frac)))

    def model_end(self, total: int) -> int:
        """The offline update at which the world model freezes (the BC-only phase, if any, begins)."""
        off = self.cfg.offline
        return int(round(total * (1.0 - off.rl_frac - off.bc_frac)))

    def run(self, total: int) -> None:
        """Update until the agent's offline-update counter reaches ``total``."""
        agent, cfg, counters = self.agent, self.cfg, self.agent.counters
        t, off = cfg.train, cfg.offline
        if self.replay.longest_stream() < t.batch_length:
            raise ValueError(
                f"The dataset has no stretch of {t.batch_length} steps to train on; lower train.batch_length."
            )
        if off.rl_objective == "one_step" and off.rl_frac > 0:
            check_one_step(agent.learner)  # before any update, not when RL begins
        rl_start, model_end = self.rl_start(total), self.model_end(total)
        start_time, start_updates = time.time(), counters["offline_updates"]
        progress = Progress(total, cfg.run.progress, f"fit {self.name} (updates)")
        progress.update(counters["offline_updates"], counters["offline_updates"], None)
        try:
            while counters["offline_updates"] < total:
                batch = self.replay.sample(t.batch_size, t.batch_length)
                if (counters["rl_started"] or counters["offline_updates"] >= rl_start) and off.rl_frac > 0:
                    if not counters["rl_started"]:
                        start_rl(agent.learner)
                        counters["rl_started"] = 1
                        log.info("imagination RL starts at offline update %d", counters["offline_updates"])
                    rl_update = one_step_update if off.rl_objective == "one_step" else imagination_update
                    metrics = rl_update(agent.learner, batch, self.rng)
                elif counters["offline_updates"] >= model_end:
                    metrics = bc_update(agent.learner, batch)
                else:
                    metrics = model_update(agent.learner, batch, off.bc_scale)
                counters["offline_updates"] += 1
                counters["updates"] += 1
                self.logger.scalars({f"offline/{k}": v for k, v in metrics.items()})
                step = counters["offline_updates"]
                progress.update(step, step, None)
                self._periodic(step, start_time, start_updates)
                if cfg.run.max_minutes and time.time() - start_time > 60 * cfg.run.max_minutes:
                    log.info("run.max_minutes (%.1f) reached at offline update %d", cfg.run.max_minutes, step)
                    break
        finally:
            progress.close()

    def _periodic(self, step: int, t0: float, updates0: int) -> None:
        off = self.cfg.offline
        if off.log_every and step % off.log_every == 0:
            self.logger.scalar("fps/updates", (step - updates0) / max(time.time() - t0, 1e-9))
            self.logger.write(step)
        if off.eval_every and step % off.eval_every == 0:
            head: Head = "actor" if self.agent.counters["rl_started"] else "bc"
            self.logger.scalars(self.agent.evaluate(episodes=self.cfg.run.eval_episodes, head=head))
            self.logger.write(step)
        if off.save_every and step % off.save_every == 0:
            self.agent.save_run()
