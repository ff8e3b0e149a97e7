"""The networks of one agent and their update: world model, actor-critic and a behaviour-cloning head.

``Learner`` knows nothing about envs or loops: it takes batches of numpy arrays shaped (B, T, ...)
and observation dicts shaped (N, ...), which keeps it usable online, offline, in the correction loop and
in the studio.

**One update path.** :meth:`Learner.update` is the only place that back-propagates and steps the optimiser.
The caller names the phase, and the phase decides which losses enter and which networks move:

============  =====================================================================  ==============================
phase         losses                                                                 what moves
============  =====================================================================  ==============================
``online``    world model, actor and critic in imagination, replay value (DreamerV3)  everything
``model``     world model, BC head, critic on the recorded returns (offline phase 1)  model, BC head, critic
``bc``        BC head on the frozen model's features (offline, ``offline.bc_frac``)   BC head
``rl``        actor and critic in imagination from replayed states, model frozen      actor, critic
============  =====================================================================  ==============================

Once RL from a behaviour-cloning prior began (:meth:`Learner.start_rl`), the actor pays ``ac.prior_kl`` times
its KL to that frozen prior in the ``rl`` phase, and in ``online`` updates when asked (``prior=True``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

import reverie.distributed as distributed
from reverie.actor_critic import Actor, ActorCritic, action_dim, bc_loss
from reverie.config import Config, ConfigError
from reverie.envs.base import Space
from reverie.functional import rwr_weights, twohot_decode
from reverie.nets import soft_update
from reverie.optim import make_optimizer
from reverie.rssm import State
from reverie.runtime import guard_compile_cache, keep_freed_memory
from reverie.transformer import TransformerWorldModel
from reverie.world_model import Encoder, WorldModel

PolicyState = dict[str, Tensor]
Head = Literal["actor", "bc"]
Phase = Literal["online", "model", "bc", "rl"]
PHASES: tuple[Phase, ...] = ("online", "model", "bc", "rl")

BC_WEIGHT_MAX = 20.0
"""Return-weighted behaviour cloning: the largest weight of one step."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; otherwise ``torch.device(name)``.

    Raises:
        ConfigError: an unknown device name, or a GPU that torch cannot see here.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r} is no torch device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={name} but torch sees no GPU here (a CPU build, or no driver); set train.device=auto "
            "or cpu (Dreamer.load(path, config) takes a config for a checkpoint saved with it)."
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ConfigError(f"train.device={name} but torch sees {count} GPU(s) here; set train.device=auto or cuda:0.")
    return device


def resolve_precision(precision: str, device: torch.device, acting: bool = False) -> Literal["fp32", "bf16"]:
    """``train.precision`` on ``device``, for updates or for ``acting`` (policy steps, dream steps: a few states at
    a time). ``auto`` is what measured faster (``docs/speed.md``): updates in bf16 on a CPU with AMX tiles (1.4-1.7x
    faster than fp32), acting in fp32 there (a size12m dream step ran 2x faster: one state gains nothing from bf16
    products and pays the casts), and fp32 elsewhere (on an H200 a size12m update ran 2x faster in fp32)."""
    if precision != "auto":
        return "bf16" if precision == "bf16" else "fp32"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return "bf16" if device.type == "cpu" and not acting and amx() else "fp32"


class Learner(nn.Module):
    """World model, actor-critic and behaviour-cloning head of one agent.

    Args:
        cfg: the full config (each part reads its own section).
        obs_space: the model's observation spaces (no reserved or ``log/`` keys).
        act_space: the action space.
    """

    def __init__(self, cfg: Config, obs_space: dict[str, Space], act_space: Space):
        super().__init__()
        self.cfg = cfg
        self.obs_space, self.act_space = obs_space, act_space
        self.action_dim = action_dim(act_space)
        kind = TransformerWorldModel if cfg.model.kind == "transformer" else WorldModel
        self.wm = kind(obs_space, self.action_dim, cfg.model)
        feat = self.wm.feat_dim
        self.ac = ActorCritic(feat, act_space, cfg.ac, cfg.model.bins, self._policy_encoder())
        self.bc = Actor(feat, act_space, cfg.ac, self._policy_encoder())
        """Behaviour-cloning policy head (trained offline on labelled steps)."""
        self.bc_prior = copy.deepcopy(self.bc).requires_grad_(False)
        """Frozen copy of the BC head taken when imagination RL starts: the prior the actor is kept near."""
        self.bc_avg: Actor | None = None
        """Moving average of ``bc``'s weights (``offline.bc_ema``): the head that plays and that RL starts from."""
        if cfg.offline.bc_ema > 0:
            self.bc_avg = copy.deepcopy(self.bc).requires_grad_(False)
        self.device = resolve_device(cfg.train.device)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        """``fp32`` or ``bf16``: the autocast precision of updates (``train.precision`` on this device)."""
        self.act_precision = resolve_precision(cfg.train.precision, self.device, acting=True)
        """The same for acting and dreaming (a few states at a time)."""
        if self.device.type == "cpu":
            keep_freed_memory()
        self.to(self.device)
        o = cfg.optim
        self.model_params = [*self.wm.parameters(), *self.bc.parameters()]
        self.ac_params = [*self.ac.actor.parameters(), *self.ac.critic.parameters()]
        groups = [
            {"params": self.model_params, "lr": o.model_lr or o.lr},
            {"params": self.ac_params, "lr": o.actor_lr or o.lr},
        ]
        self.opt = make_optimizer(groups, o)
        self.updates = 0
        self.skipped = 0
        """Updates skipped because their loss or gradients were not finite."""
        self._compiled: dict[str, Any] = {}

    def describe(self) -> str:
        """One line for the start of a run: device (and GPU), trainable parameters, precision, compilation."""
        device = str(self.device)
        if self.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(self.device)})"
        params = sum(p.numel() for p in self.parameters() if p.requires_grad)
        train = self.cfg.train
        return f"device {device}, {params / 1e6:.2f}M trainable parameters, {self.precision}" + (
            ", compiled update (the first one compiles)" if train.compile else ""
        )

    def _policy_encoder(self) -> Encoder | None:
        """A policy head's own observation encoder (``ac.input`` with obs), built like the model's but with the plain
        vector codec, so that a head on the observation alone reads what raw-observation behaviour cloning reads;
        its convolutions are ``ac.cnn_depth`` wide when set."""
        if self.cfg.ac.input == "feat":
            return None
        depth = self.cfg.ac.cnn_depth or self.cfg.model.cnn_depth
        return Encoder(self.obs_space, dataclasses.replace(self.cfg.model, cnn_depth=depth), codec="mlp")

    # ----------------------------------------------------------------- data conversion
    def to_tensors(self, data: Mapping[str, Any]) -> dict[str, Tensor]:
        """Numpy arrays -> tensors on the device; discrete actions stored as ints become one-hot."""
        out = {}
        for key, value in data.items():
            tensor = torch.as_tensor(np.asarray(value), device=self.device)
            if key == "action":
                tensor = self.encode_action(tensor)
            out[key] = tensor
        return out

    def sequences(self, batch_np: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        """A replayed batch (B, T, ...) as tensors; every window starts from the initial state (``is_first``)."""
        batch = self.to_tensors(batch_np)
        batch["is_first"] = batch["is_first"].clone()
        batch["is_first"][:, 0] = True
        return batch

    def encode_action(self, action: Tensor) -> Tensor:
        """Env actions -> model action vectors (one-hot for discrete ints; float otherwise)."""
        if self.act_space.discrete:
            if action.is_floating_point() and action.shape[-1:] == (self.action_dim,):
                return action.float()  # already one-hot
            return nn.functional.one_hot(action.long(), self.action_dim).float()
        return action.float().reshape(*action.shape[: action.dim() - len(self.act_space.shape)], -1)

    def decode_action(self, action: Tensor) -> np.ndarray:
        """Model action vectors -> env actions (ints for discrete, clipped floats otherwise)."""
        if self.act_space.discrete:
            return action.argmax(-1).cpu().numpy().astype(np.int64)
        out = action.clamp(-1, 1).float().cpu().numpy().astype(np.float32)
        return out.reshape(*out.shape[:-1], *self.act_space.shape)

    def autocast(self, acting: bool = False) -> contextlib.AbstractContextManager:
        """The autocast context of updates, or of ``acting`` and dreaming (:func:`resolve_precision`)."""
        if (self.act_precision if acting else self.precision) == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ----------------------------------------------------------------- acting
    def initial_policy_state(self, n: int) -> PolicyState:
        state = self.wm.initial(n, self.device)
        state["action"] = torch.zeros(n, self.action_dim, device=self.device)
        return state

    def actor(self, head: Head = "actor") -> Actor:
        """The RL actor, or the behaviour-cloning head (its moving average with ``offline.bc_ema``)."""
        if head not in ("actor", "bc"):
            raise ValueError(f"Unknown policy head '{head}': use 'actor' (RL) or 'bc' (behaviour cloning).")
        if head == "actor":
            return self.ac.actor
        return self.bc if self.bc_avg is None else self.bc_avg

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """As ``nn.Module``'s; a checkpoint saved without ``offline.bc_ema`` starts the average at its BC head."""
        if self.bc_avg is not None and not any(k.startswith("bc_avg.") for k in state_dict):
            state_dict = {**state_dict, **{f"bc_avg.{k[3:]}": v for k, v in state_dict.items() if k.startswith("bc.")}}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @torch.no_grad()
    def filter(self, obs: Mapping[str, Any], state: PolicyState | None) -> State:
        """One filtering step for N envs: the posterior latent after ``obs`` (arrays (N, ...) with ``is_first``),
        given ``state`` whose ``action`` entry is the action taken since the previous observation."""
        n = len(obs["is_first"])
        state = state if state is not None else self.initial_policy_state(n)
        data = self.to_tensors({k: obs[k] for k in self.wm.obs_keys})
        is_first = torch.as_tensor(np.asarray(obs["is_first"]), device=self.device)
        with self.autocast(acting=True):
            latent = self.wm.filter_step(state, state["action"], data, is_first)
        return {k: v.float() for k, v in latent.items()}

    @torch.no_grad()
    def policy(
        self, obs: Mapping[str, Any], state: PolicyState | None, deterministic: bool = False, head: Head = "actor"
    ) -> tuple[np.ndarray, PolicyState, Tensor]:
        """One acting step for N envs: obs arrays are (N, ...) and include ``is_first``.

        Returns the env actions, the next policy state and the model action vectors.
        """
        actor = self.actor(head)
        n = len(obs["is_first"])
        state = state if state is not None else self.initial_policy_state(n)
        data = self.to_tensors({k: obs[k] for k in self.wm.obs_keys})
        is_first = torch.as_tensor(np.asarray(obs["is_first"]), device=self.device)
        seen = self.to_tensors({k: obs[k] for k in actor.obs_keys}) or None
        with self.autocast(acting=True):
            latent, action = self._compiled_or("act", self._act)(state, data, is_first, seen, deterministic, head)
        new_state = {**latent, "action": action}
        return self.decode_action(action), new_state, action

    def _act(
        self, state: PolicyState, data: dict[str, Tensor], is_first: Tensor, seen: Any, deterministic: bool, head: Head
    ) -> tuple[State, Tensor]:
        """Filter one observation of N envs, then draw (or take the mode of) the policy's action."""
        latent = self.wm.filter_step(state, state["action"], data, is_first)
        latent = {k: v.float() for k, v in latent.items()}
        policy = self.actor(head)(self.wm.feat(latent), seen)
        action = policy.mode() if deterministic else policy.sample()
        return latent, action.float()

    def dream_step(
        self, state: State, action: Tensor, prev: dict[str, Tensor] | None, picture: list[str] | None = None
    ) -> Any:
        """:meth:`WorldModel.step` with the uncertainty, for dreams played one step at a time (the studio,
        ``DreamEnv``, the correction loop): compiled with ``train.compile``."""
        return self._compiled_or("dream", self.wm.step)(state, action, prev, picture, True)

    def _compiled_or(self, name: str, fn: Any, mode: str | None = None) -> Any:
        """``fn``, or with ``train.compile`` its compiled version (made at the first call, in ``mode``)."""
        if not self.cfg.train.compile:
            return fn
        if name not in self._compiled:
            compiled = torch.compile(fn, dynamic=False, mode=mode)  # type: ignore[call-overload]
            self._compiled[name] = guard_compile_cache(compiled)
        return self._compiled[name]

    # ----------------------------------------------------------------- imagination
    def pictured_keys(self, head: Head = "actor") -> list[str]:
        """The observation keys an imagined rollout carries: those the policy reads, then the one the reward head
        reads (a codec with a change head); the real ones start a rollout from replayed states."""
        keys = list(self.actor(head).obs_keys)
        if self.wm.change_key is not None and self.wm.change_key not in keys:
            keys.append(self.wm.change_key)
        return keys

    def imagine(
        self,
        start: State,
        horizon: int,
        head: Head = "actor",
        first_obs: Mapping[str, Tensor] | None = None,
        prev_obs: Mapping[str, Tensor] | None = None,
        uncertainty: bool = False,
    ) -> dict[str, Tensor]:
        """Roll the policy ``head`` in the model for ``horizon`` steps from N start states.

        Returns (N, H+1, ...) ``feat`` and ``action`` (action t taken at state t), ``reward`` and ``cont`` predicted
        on reaching each state (index 0: 0 and 1; the caller knows the real ones), ``obs/<key>`` for the observations
        the rollout carries (:meth:`pictured_keys`: the real ones at the start when ``first_obs`` (N, ...) gives
        them, else pictured from ``prev_obs``, the one before; each later one pictured from the one before), and
        with ``uncertainty`` (and an ensemble) ``uncertainty``, ``reward_uncertainty`` and ``unknown`` (N, H) of
        each step (:class:`reverie.world_model.Transition`).
        """
        wm, actor = self.wm, self.actor(head)
        grad = self.cfg.ac.actor_grad == "dynamics"
        keys = self.pictured_keys(head)
        state = {k: v.detach() for k, v in start.items()}
        feat = wm.feat(state)
        obs = {k: first_obs[k].float() for k in keys if k in first_obs} if first_obs is not None else {}
        missing = [k for k in keys if k not in obs]
        if missing:
            obs |= wm.picture(feat, dict(prev_obs) if prev_obs is not None else None, missing)
        zeros = torch.zeros(len(feat), device=feat.device)
        out: dict[str, list[Tensor]] = {"feat": [], "action": [], "reward": [zeros], "cont": [zeros + 1.0]}
        out |= {f"obs/{k}": [] for k in keys}
        with torch.set_grad_enabled(grad):
            for t in range(horizon + 1):
                read = {k: obs[k] for k in actor.obs_keys} or None
                action = actor(feat if grad else feat.detach(), read).sample()
                out["feat"].append(feat)
                out["action"].append(action)
                for k in keys:
                    out[f"obs/{k}"].append(obs[k])
                if t == horizon:
                    break
                step = wm.step(state, action, obs or None, actor.obs_keys, uncertainty)
                state, feat, obs = step.state, step.feat, {**obs, **step.obs}
                out["reward"].append(step.reward)
                out["cont"].append(step.cont)
                for name in ("uncertainty", "reward_uncertainty", "unknown"):
                    value = getattr(step, name)
                    if value is not None:
                        out.setdefault(name, []).append(value)
        return {k: torch.stack(v, 1) for k, v in out.items()}

    # ----------------------------------------------------------------- learning
    def update(
        self,
        batch_np: Mapping[str, np.ndarray],
        phase: Phase,
        rng: np.random.Generator | None = None,
        prior: bool = False,
    ) -> dict[str, float]:
        """One gradient update of the networks ``phase`` trains, on a replayed batch (B, T, ...); returns metrics.

        Args:
            batch_np: the batch, as :meth:`reverie.replay.Replay.sample` gives it.
            phase: ``online``, ``model``, ``bc`` or ``rl`` (see the module docstring).
            rng: draws the rollout starts of the ``rl`` phase (default: a fresh generator).
            prior: ``online`` only: the actor also pays ``ac.prior_kl`` times its KL to the frozen BC prior (an agent
                that learned offline, continuing online).
        """
        if phase not in PHASES:
            raise ValueError(f"Unknown update phase '{phase}': use one of {', '.join(PHASES)}.")
        batch = self.sequences(batch_np)
        self.train()
        buffers = [(b, b.clone()) for b in self.buffers()]  # running statistics the losses move, restored on a skip
        losses = self._losses(phase)
        with self.autocast():
            if phase == "online":
                terms, metrics = losses(batch, prior)
            elif phase == "rl":
                count = batch["is_first"].numel()
                share = max(1, self.cfg.offline.imag_starts // distributed.world().size)  # this rank's starts
                starts = (rng or np.random.default_rng()).choice(count, min(share, count), False)
                terms, metrics = losses(batch, torch.as_tensor(starts, device=self.device))
            else:
                terms, metrics = losses(batch)
        stepped = self._optimize(terms, metrics)
        if not stepped:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
        elif phase in ("model", "bc") and self.bc_avg is not None:
            soft_update(self.bc_avg, self.bc, 1.0 - self.cfg.offline.bc_ema)
        return {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in metrics.items()}

    def _losses(self, phase: Phase) -> Any:
        """The loss function of ``phase``; with ``train.compile``, compiled at its first call (the ``bc`` phase, a
        small head on frozen features, stays eager).

        The whole forward pass of the phase (the model's filtering over the sequence, the imagined rollouts, every
        loss) becomes one compiled program and its backward pass another, so elementwise work runs fused instead of
        op by op. On a GPU the program is also captured as a CUDA graph (``mode="reduce-overhead"``). Random draws
        inside it come from the compiler's generator, seeded from torch's: a seeded run repeats on one device.
        """
        losses = {
            "online": self._online_losses,
            "model": self._model_losses,
            "bc": self._bc_losses,
            "rl": self._rl_losses,
        }[phase]
        if not self.cfg.train.compile or phase == "bc":
            return losses
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        return self._compiled_or(phase, losses, "reduce-overhead" if self.device.type == "cuda" else None)

    def _optimize(self, terms: list[tuple[Tensor, list[nn.Parameter] | None]], metrics: dict[str, Any]) -> bool:
        """The one optimiser step: back-propagate each ``(loss, parameters)`` term into those parameters (None: all
        that it reaches), clip, step, then move the slow critic. A loss or gradient that is not finite skips the
        step (``opt/skipped`` 1 in ``metrics``): one bad batch never reaches the weights. Returns whether it stepped.
        """
        self.opt.zero_grad(set_to_none=True)
        finite = bool(torch.stack([loss.detach().float() for loss, _ in terms]).isfinite().all())
        finite = distributed.all_ranks(finite)  # one rank's bad batch skips the step on every rank
        if finite:
            for i, (loss, params) in enumerate(terms):
                loss.backward(inputs=params, retain_graph=i + 1 < len(terms))
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            distributed.average_gradients(grads)  # on several ranks: the mean over the whole batch
            finite = bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()) if grads else True
        metrics["opt/skipped"] = 0.0 if finite else 1.0
        if not finite:
            self.opt.zero_grad(set_to_none=True)
            self.skipped += 1
            return False
        if self.cfg.optim.clip_norm > 0:
            metrics["opt/grad_norm"] = nn.utils.clip_grad_norm_(self.parameters(), self.cfg.optim.clip_norm)
        self.opt.step()
        self.ac.update_slow()
        self.updates += 1
        return True

    def _online_losses(self, batch: dict[str, Tensor], prior: bool) -> tuple[list[Any], dict[str, Tensor]]:
        """DreamerV3: the world model, then actor and critic on rollouts from every replayed state, and the critic
        on the replayed returns (its gradient reaches the model)."""
        cfg = self.cfg
        wm_loss, states, metrics = self.wm.loss(batch)
        feat = self.wm.feat(states)  # (B, T, F)
        start = {k: v.reshape(-1, *v.shape[2:]) for k, v in states.items()}  # (B*T, ...)
        seen = {k: batch[k].reshape(-1, *batch[k].shape[2:]) for k in self.pictured_keys()}
        traj = self.imagine(start, cfg.ac.horizon, first_obs=seen)
        traj["cont"] = torch.cat([1.0 - batch["is_terminal"].float().reshape(-1, 1), traj["cont"][:, 1:]], 1)
        actor_loss, critic_loss, ret, ac_metrics = self.ac.imagine_loss(traj, self.bc_prior if prior else None)
        repval = self.ac.repval_loss(feat, batch, ret[:, 0].reshape(feat.shape[:2]))
        loss = wm_loss + critic_loss + cfg.ac.repval * repval
        metrics |= ac_metrics | {"loss/actor": actor_loss, "loss/critic": critic_loss, "loss/repval": repval}
        if cfg.ac.actor_grad == "dynamics":  # the actor's gradient runs through the model but must only move the actor
            return [(loss, None), (actor_loss, list(self.ac.actor.parameters()))], metrics
        return [(loss + actor_loss, None)], metrics

    def _model_losses(self, batch: dict[str, Tensor]) -> tuple[list[Any], dict[str, Tensor]]:
        """Offline phase 1: the world model on every episode, the BC head on the labelled steps, the critic on the
        recorded returns."""
        wm_loss, states, metrics = self.wm.loss(batch)
        feat = self.wm.feat(states)
        weight, weight_metrics = self.bc_weights(batch)
        bc, bc_metrics = bc_loss(self.bc, feat, batch, weight)
        critic = self._recorded_critic_loss(feat.detach(), batch)
        metrics |= weight_metrics | bc_metrics | {"loss/critic_data": critic.detach()}
        return [(wm_loss + bc + critic, [*self.model_params, *self.ac.critic.parameters()])], metrics

    def _bc_losses(self, batch: dict[str, Tensor]) -> tuple[list[Any], dict[str, Tensor]]:
        """Offline phase 1b: the BC head alone on the frozen model's features."""
        with torch.no_grad():
            if self.bc.reads_feat:
                feat = self.wm.feat(self.wm.observe(batch)[0])
            else:  # a policy on observations alone needs no pass of the model
                feat = batch["is_first"].new_zeros((*batch["is_first"].shape, 0), dtype=torch.float32)
        weight, metrics = self.bc_weights(batch)
        loss, bc_metrics = bc_loss(self.bc, feat, batch, weight)
        return [(loss, list(self.bc.parameters()))], metrics | bc_metrics

    def _rl_losses(self, batch: dict[str, Tensor], idx: Tensor) -> tuple[list[Any], dict[str, Tensor]]:
        """Offline phase 2: actor and critic on rollouts from the replayed states ``idx`` (of the B*T flattened ones,
        ``offline.imag_starts`` of them), held near the BC prior; with ``offline.pessimism=cut`` a rollout ends after
        a step the ensemble does not know."""
        cfg, wm = self.cfg, self.wm
        with torch.no_grad():
            states, _, _ = wm.observe(batch)
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in states.items()}  # (B*T, ...)
        start = {k: v[idx] for k, v in flat.items()}
        seen = {k: batch[k].reshape(-1, *batch[k].shape[2:])[idx] for k in self.pictured_keys()}
        traj = self.imagine(start, cfg.ac.horizon, first_obs=seen, uncertainty=wm.ensemble is not None)
        terminal = batch["is_terminal"].reshape(-1)[idx].float()
        cont = torch.cat([1.0 - terminal[:, None], traj["cont"][:, 1:]], 1)
        metrics: dict[str, Tensor] = {}
        if "unknown" in traj:
            unknown = traj["unknown"].float()
            metrics["imag/disagreement"] = traj["uncertainty"].mean()
            metrics["imag/unknown_frac"] = unknown.mean()
            metrics["imag/reward_uncertainty"] = traj["reward_uncertainty"].mean()
            if cfg.offline.pessimism == "cut":
                cont = torch.cat([cont[:, :1], cont[:, 1:] * (1.0 - unknown)], 1)
        traj["cont"] = cont
        actor_loss, critic_loss, _, ac_metrics = self.ac.imagine_loss(traj, self.bc_prior)
        metrics |= ac_metrics
        if cfg.offline.data_prior_kl > 0:  # stay near the prior where the actor will act: real states, real obs
            real = wm.feat(states).detach()
            obs = {k: batch[k] for k in self.ac.actor.obs_keys} or None
            with torch.no_grad():
                prior = self.bc_prior(real, obs)
            kl = self.ac.actor(real, obs).kl(prior).mean()
            actor_loss = actor_loss + cfg.offline.data_prior_kl * kl
            metrics["ac/data_prior_kl"] = kl.detach()
        metrics |= {"loss/actor": actor_loss.detach(), "loss/critic": critic_loss.detach()}
        return [(actor_loss + critic_loss, self.ac_params)], metrics

    def bc_weights(self, batch: dict[str, Tensor]) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Return-weighted behaviour cloning (``offline.bc_return_temp``, as in reward-weighted regression): a weight
        (B, T - 1) for the recorded action of each step ``t``, ``exp((G_t - mean G) / temp)`` capped at 20, with
        ``G_t`` the discounted return the recording got after step ``t`` (``return_to_go``, stored with the replayed
        steps by :func:`reverie.offline.dataset_replay`) and the mean over the batch's steps that carry rewards;
        steps without recorded rewards weigh 1. None when the option is off or the batch has no ``return_to_go``."""
        off = self.cfg.offline
        if off.bc_return_temp <= 0 or "return_to_go" not in batch:
            return None, {}
        reward = batch["reward"][:, :-1]
        known = batch["reward_mask"][:, :-1].float() if "reward_mask" in batch else torch.ones_like(reward)
        weight = rwr_weights(batch["return_to_go"][:, :-1].float(), known, off.bc_return_temp, BC_WEIGHT_MAX)
        return weight, {"bc/weight_max": weight.max(), "bc/weight_mean": weight.mean()}

    def _recorded_critic_loss(self, feat: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The critic's loss on the recorded returns of the replayed sequences ``feat`` (B, T, F), bootstrapped from
        the slow critic; episodes without recorded rewards use the reward head's guess."""
        reward = batch["reward"].float()
        if "reward_mask" in batch:
            known = batch["reward_mask"].float()
            guess = twohot_decode(self.wm.recorded_reward_logits(feat, batch), self.wm.bins)
            reward = known * reward + (1.0 - known) * guess.float()
        boot = self.ac.value(feat, slow=True)
        return self.ac.repval_loss(feat, {**batch, "reward": reward}, boot)

    def start_rl(self) -> None:
        """Imagination RL begins: the actor starts as the behaviour-cloning head (its moving average with
        ``offline.bc_ema``), whose frozen copy becomes the prior."""
        state = self.actor("bc").state_dict()
        self.ac.actor.load_state_dict(state)
        self.bc_prior.load_state_dict(state)
