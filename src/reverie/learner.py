"""The networks of one agent and their update: world model + actor-critic, one optimiser step.

``Learner`` knows nothing about envs or loops: it takes batches of numpy arrays shaped (B, T, ...)
and observation dicts shaped (N, ...), which keeps it usable online, offline and in the studio.
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

from reverie.actor_critic import Actor, ActorCritic, Policy, action_dim, within_support
from reverie.config import Config, ConfigError
from reverie.envs.base import Space
from reverie.functional import symexp
from reverie.nets import MLP, soft_update
from reverie.optim import make_optimizer
from reverie.rssm import State
from reverie.symbolic import change_features
from reverie.world_model import Encoder, WorldModel

PolicyState = dict[str, Tensor]
Head = Literal["actor", "bc"]


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


class Learner(nn.Module):
    """World model and actor-critic of one agent.

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
        self.wm = WorldModel(obs_space, self.action_dim, cfg.model)
        feat = self.wm.rssm.feat_dim
        self.ac = ActorCritic(feat, act_space, cfg.ac, cfg.model.bins, self._policy_encoder())
        self.bc = Actor(feat, act_space, cfg.ac, self._policy_encoder())
        """Behaviour-cloning policy head on model features, and the observation with ``ac.obs_input`` (trained
        offline on labelled steps)."""
        self.bc_prior = copy.deepcopy(self.bc).requires_grad_(False)
        """Frozen copy of ``bc`` taken when imagination RL starts: the prior the actor is kept near."""
        self.bc_avg: Actor | None = None
        """Moving average of ``bc``'s weights (``offline.bc_ema``): the head that plays and that RL starts from."""
        if cfg.offline.bc_ema > 0:
            self.bc_avg = copy.deepcopy(self.bc).requires_grad_(False)
        self.idm: MLP | None = None
        """Inverse dynamics (embeddings of steps t, t+1 -> action), with ``offline.label_mode=inverse_dynamics``."""
        if cfg.offline.label_mode == "inverse_dynamics":
            out = self.action_dim * (1 if act_space.discrete else 2)
            self.idm = MLP(2 * self.wm.encoder.out_dim, cfg.model.units, 2, out=out)
        self.device = resolve_device(cfg.train.device)
        self.to(self.device)
        if cfg.train.compile:
            self.wm.rssm.compile_steps()
        o = cfg.optim
        model_params = list(self.wm.parameters()) + list(self.bc.parameters())
        model_params += list(self.idm.parameters()) if self.idm is not None else []
        groups = [
            {"params": model_params, "lr": o.model_lr or o.lr},
            {
                "params": list(self.ac.actor.parameters()) + list(self.ac.critic.parameters()),
                "lr": o.actor_lr or o.lr,
            },
        ]
        self.opt = make_optimizer(groups, o)
        self.updates = 0

    def describe(self) -> str:
        """One line for the start of a run: device (and GPU), trainable parameters, precision, compilation."""
        device = str(self.device)
        if self.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(self.device)})"
        params = sum(p.numel() for p in self.parameters() if p.requires_grad)
        train = self.cfg.train
        return f"device {device}, {params / 1e6:.2f}M trainable parameters, {train.precision}" + (
            ", compiled steps" if train.compile else ""
        )

    def _policy_encoder(self) -> Encoder | None:
        """A policy head's own observation encoder (``ac.obs_input``), built like the model's but always with
        the plain vector codec, so that a head on the observation alone reads what raw-observation behaviour
        cloning reads (with the grid codec's convolutions a head played worse in the one comparison made,
        5.9 after 4,350 updates vs 12.7 after 3,000, see docs/offline_results.md); its convolutions are
        ``ac.cnn_depth`` wide when set."""
        if not self.cfg.ac.obs_input:
            return None
        depth = self.cfg.ac.cnn_depth or self.cfg.model.cnn_depth
        return Encoder(self.obs_space, dataclasses.replace(self.cfg.model, vector_codec="mlp", cnn_depth=depth))

    # ----------------------------------------------------------------- data conversion
    def to_tensors(self, data: dict[str, Any]) -> dict[str, Tensor]:
        """Numpy arrays -> tensors on the device; discrete actions stored as ints become one-hot."""
        out = {}
        for key, value in data.items():
            tensor = torch.as_tensor(np.asarray(value), device=self.device)
            if key == "action":
                tensor = self.encode_action(tensor)
            out[key] = tensor
        return out

    def sequences(self, batch_np: dict[str, np.ndarray]) -> dict[str, Tensor]:
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

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ----------------------------------------------------------------- acting
    def initial_policy_state(self, n: int) -> PolicyState:
        state = self.wm.rssm.initial(n, self.device)
        state["action"] = torch.zeros(n, self.action_dim, device=self.device)
        return state

    def actor(self, head: Head = "actor") -> Actor:
        """The RL actor, or the behaviour-cloning head."""
        if head not in ("actor", "bc"):
            raise ValueError(f"Unknown policy head '{head}': use 'actor' (RL) or 'bc' (behaviour cloning).")
        if head == "actor":
            return self.ac.actor
        return self.bc if self.bc_avg is None else self.bc_avg

    def update_bc_avg(self) -> None:
        """After an update of the BC head: move its moving average (``offline.bc_ema``) towards it."""
        if self.bc_avg is not None:
            soft_update(self.bc_avg, self.bc, 1.0 - self.cfg.offline.bc_ema)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """As ``nn.Module``'s; a checkpoint saved without ``offline.bc_ema`` starts the average at its BC head."""
        if self.bc_avg is not None and not any(k.startswith("bc_avg.") for k in state_dict):
            state_dict = {**state_dict, **{f"bc_avg.{k[3:]}": v for k, v in state_dict.items() if k.startswith("bc.")}}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @torch.no_grad()
    def filter(self, obs: dict[str, Any], state: PolicyState | None) -> State:
        """One filtering step for N envs: the posterior latent after ``obs`` (arrays (N, ...) with ``is_first``),
        given ``state`` whose ``action`` entry is the action taken since the previous observation."""
        n = len(obs["is_first"])
        state = state if state is not None else self.initial_policy_state(n)
        data = self.to_tensors({k: obs[k] for k in self.wm.obs_keys})
        is_first = torch.as_tensor(np.asarray(obs["is_first"]), device=self.device)
        with self.autocast():
            embed = self.wm.encoder(data)
            latent, _, _ = self.wm.rssm.obs_step(state, state["action"], embed, is_first)
        return {k: v.float() for k, v in latent.items()}

    @torch.no_grad()
    def policy(
        self, obs: dict[str, Any], state: PolicyState | None, deterministic: bool = False, head: Head = "actor"
    ) -> tuple[np.ndarray, PolicyState, Tensor]:
        """One acting step for N envs: obs arrays are (N, ...) and include ``is_first``.

        Returns the env actions, the next policy state and the model action vectors.
        """
        actor = self.actor(head)
        latent = self.filter(obs, state)
        seen = self.to_tensors({k: obs[k] for k in actor.obs_keys}) if actor.obs_keys else None
        with self.autocast():
            policy = self.head_policy(actor, self.wm.rssm.feat(latent), seen)
            action = policy.mode() if deterministic else policy.sample()
        action = action.float().detach()
        new_state = {"deter": latent["deter"].float(), "stoch": latent["stoch"].float(), "action": action}
        return self.decode_action(action), new_state, action

    @torch.no_grad()
    def decoded_obs(self, feat: Tensor, keys: list[str], prev: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The model's picture of the observation behind ``feat`` (..., F), in env units: images 0-255
        (float), vectors back out of symlog space, and with the grid codec the sharp likeliest symbolic
        vector (:meth:`reverie.symbolic.GridDecoder.observation`). What a policy with ``ac.obs_input`` sees
        in imagination. ``prev``: the observations one step before (env units), which a decoder with
        ``model.decoder_prev`` reads."""
        decoder = self.wm.decoder
        pred = decoder.images_of(feat) if decoder.grid is not None else decoder(feat)
        out = {}
        for k in keys:
            if k in decoder.images:
                out[k] = pred[k].float().clamp(0, 1) * 255.0
            elif decoder.grid is not None:
                vec = decoder.grid.observation(feat, decoder.prev_vector(prev))
                out[k] = vec.reshape(*feat.shape[:-1], *decoder.shapes[k])
            else:
                out[k] = symexp(pred[k].float())
        return out

    def head_policy(self, actor: Actor, feat: Tensor, obs: dict[str, Tensor] | None = None) -> Policy:
        """``actor``'s policy at ``feat``; a policy that reads observations gets the decoded ones unless
        ``obs`` is given. The RL actor's policy stays within the BC prior's support (``ac.prior_support``)."""
        if actor.obs_keys and obs is None:
            obs = self.decoded_obs(feat.detach(), actor.obs_keys)
        return self.supported(actor, actor(feat, obs), feat, obs)

    def supported(self, actor: Actor, policy: Policy, feat: Tensor, obs: dict[str, Tensor] | None) -> Policy:
        """With ``ac.prior_support`` and ``actor`` the RL actor: ``policy`` restricted to the actions the frozen
        BC prior, at the same ``feat`` and ``obs``, gives at least that share of its top probability."""
        tau = self.cfg.ac.prior_support
        if tau <= 0 or actor is not self.ac.actor or not policy.discrete:
            return policy
        with torch.no_grad():
            prior = self.bc_prior(feat.detach(), obs)
        return within_support(policy, prior, tau)

    # ----------------------------------------------------------------- learning
    def imagine(
        self,
        start: State,
        horizon: int,
        head: Head = "actor",
        first_obs: dict[str, Tensor] | None = None,
        prev_obs: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Roll the policy in the model from N start states: features and actions (N, H+1, ...), and
        ``obs/<key>`` for the observations pictured along the way (:meth:`pictured_keys`: those the policy
        reads with ``ac.obs_input`` and the one the reward head reads with ``model.reward_change``): the real
        ones at the start when ``first_obs`` gives them (N, ...), the decoded ones after. Each decoded one is
        pictured from the one before (read by ``model.decoder_prev``); ``prev_obs`` is the one before the
        start, when the start's own is decoded."""
        rssm, actor = self.wm.rssm, self.actor(head)
        grad = self.cfg.ac.actor_grad == "dynamics"
        state = {k: v.detach() for k, v in start.items()}
        feats, actions = [], []
        keys = self.pictured_keys(head)
        seen: dict[str, list[Tensor]] = {k: [] for k in keys}
        with torch.set_grad_enabled(grad):
            for t in range(horizon + 1):
                feat = rssm.feat(state)
                obs: dict[str, Tensor] = {}
                if t == 0 and first_obs is not None:
                    obs = {k: first_obs[k].float() for k in keys if k in first_obs}
                missing = [k for k in keys if k not in obs]
                if missing:  # the picture after the step, from the picture before it
                    before = {k: v[-1] for k, v in seen.items()} if t > 0 else prev_obs
                    obs |= self.decoded_obs(feat.detach(), missing, before)
                read = {k: obs[k] for k in actor.obs_keys} or None
                policy = actor(feat if grad else feat.detach(), read)
                action = self.supported(actor, policy, feat, read).sample()
                feats.append(feat)
                actions.append(action)
                for k, v in obs.items():
                    seen[k].append(v)
                if t < horizon:
                    state = rssm.imagine_step(state, action)
        traj = {"feat": torch.stack(feats, 1), "action": torch.stack(actions, 1)}
        return traj | {f"obs/{k}": torch.stack(v, 1) for k, v in seen.items()}

    def pictured_keys(self, head: Head = "actor") -> list[str]:
        """The observation keys :meth:`imagine` pictures: the policy's (``ac.obs_input``), then the one the
        reward head reads (``model.reward_change``)."""
        keys = list(self.actor(head).obs_keys)
        if self.wm.change_key is not None and self.wm.change_key not in keys:
            keys.append(self.wm.change_key)
        return keys

    def imagined_reward(
        self, traj: dict[str, Tensor], prev_obs: dict[str, Tensor] | None = None, change: Tensor | None = None
    ) -> Tensor:
        """(N, H+1) the reward the model predicts on reaching each state of an :meth:`imagine` rollout; with
        ``model.reward_change`` it reads :meth:`imagined_change` (``change`` when the caller has it)."""
        if change is None:
            change = self.imagined_change(traj, prev_obs)
        return self.wm.reward_from(traj["feat"], change)

    def imagined_change(self, traj: dict[str, Tensor], prev_obs: dict[str, Tensor] | None = None) -> Tensor | None:
        """(N, H+1, 64) the change features between consecutive pictured observations of an :meth:`imagine`
        rollout (``prev_obs``: the one before the start, else none; index 0 is unused by the returns); None
        without ``model.reward_change``."""
        key = self.wm.change_key
        if key is None:
            return None
        now = traj[f"obs/{key}"].flatten(2)
        first = torch.zeros_like(now[:, :1])
        if prev_obs is not None and key in prev_obs:
            first = prev_obs[key].float().reshape(first.shape)
        return change_features(now, torch.cat([first, now[:, :-1]], 1))

    def train_step(self, batch_np: dict[str, np.ndarray], prior: bool = False) -> dict[str, float]:
        """One update of all networks on a replayed batch (B, T, ...); returns metrics.

        With ``prior`` the actor also pays ``ac.prior_kl`` times its KL to the frozen behaviour-cloning
        prior (an agent that came from :meth:`Dreamer.fit` continuing online).
        """
        cfg = self.cfg
        batch = self.sequences(batch_np)
        self.train()
        with self.autocast():
            wm_loss, states, metrics = self.wm.loss(batch)
            feat = self.wm.rssm.feat(states)  # (B, T, F)
            start = {k: v.reshape(-1, *v.shape[2:]) for k, v in states.items()}  # (B*T, ...)
            seen = {k: batch[k].reshape(-1, *batch[k].shape[2:]) for k in self.pictured_keys()}
            traj = self.imagine(start, cfg.ac.horizon, first_obs=seen)
            through_model = self.cfg.ac.actor_grad == "dynamics"
            with torch.set_grad_enabled(through_model):
                reward = self.imagined_reward(traj)  # (N, H+1)
                cont = self.wm.cont(traj["feat"])
            cont = torch.cat([1.0 - batch["is_terminal"].float().reshape(-1, 1), cont[:, 1:]], 1)
            bc_prior = self.bc_prior if prior else None
            actor_loss, critic_loss, ret, ac_metrics = self.ac.imagine_loss(traj, reward, cont, prior=bc_prior)
            boot = ret[:, 0].reshape(feat.shape[:2])  # (B, T)
            repval = self.ac.repval_loss(feat, batch, boot)
        loss = wm_loss + critic_loss + cfg.ac.repval * repval
        self.opt.zero_grad(set_to_none=True)
        if through_model:  # the actor's gradient runs through the model but must only move the actor
            loss.backward(retain_graph=True)
            actor_loss.backward(inputs=list(self.ac.actor.parameters()))
        else:
            (loss + actor_loss).backward()
        if cfg.optim.clip_norm > 0:
            metrics["opt/grad_norm"] = nn.utils.clip_grad_norm_(self.parameters(), cfg.optim.clip_norm)
        self.opt.step()
        self.ac.update_slow()
        self.updates += 1
        metrics.update(ac_metrics)
        metrics.update({"loss/actor": actor_loss, "loss/critic": critic_loss, "loss/repval": repval})
        return {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in metrics.items()}
