"""World model: encoder, RSSM, decoder, reward and continue heads, and their loss.

A batch is a dict of tensors shaped (B, T, ...): the observation keys, ``action`` (the action that
led to each step, zero at episode starts), ``reward``, ``is_first``, ``is_terminal``, and optional
``action_mask`` / ``reward_mask`` (1 where the label exists; recordings may lack either) and
``loss_weight`` (B, T) (the losses become means weighted per step).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reverie.config import ModelConfig
from reverie.envs.base import Space
from reverie.functional import kl_balance, masked_mean, symlog, twohot_bins, twohot_decode, twohot_loss
from reverie.nets import MLP, ConvDecoder, ConvEncoder
from reverie.rssm import RSSM, State
from reverie.symbolic import CHANGE_FEATURES, GridDecoder, GridEncoder, change_features, changed


def split_keys(obs_space: dict[str, Space]) -> tuple[list[str], list[str]]:
    """(image keys, vector keys) among the model's observation keys."""
    images = [k for k, s in obs_space.items() if s.is_image]
    vectors = [k for k, s in obs_space.items() if not s.is_image]
    return images, vectors


def previous_frames(obs: Tensor, is_first: Tensor | None) -> Tensor:
    """(B, T, N) observations -> the one before each step inside its episode, all zeros for "none" (at the
    first step of the batch and where ``is_first`` (B, T) starts an episode)."""
    prev = torch.cat([torch.zeros_like(obs[:, :1]), obs[:, :-1]], 1).float()
    if is_first is not None:
        prev = prev * (1.0 - is_first.float()).unsqueeze(-1)
    return prev


def _grid_key(vectors: list[str], cfg: ModelConfig) -> bool:
    """Whether the vector goes through the Crafter grid codec (``model.vector_codec``); checks there is one."""
    if cfg.vector_codec != "crafter_grid":
        return False
    if len(vectors) != 1:
        raise ValueError(
            f"model.vector_codec=crafter_grid reads one crafter-symbolic vector, but the observation has vector keys "
            f"{vectors}; use model.vector_codec=mlp."
        )
    return True


class Encoder(nn.Module):
    """Observations -> one embedding: conv encoder for images, symlog + MLP for vectors (or, with
    ``model.vector_codec=crafter_grid``, :class:`reverie.symbolic.GridEncoder`)."""

    def __init__(self, obs_space: dict[str, Space], cfg: ModelConfig):
        super().__init__()
        self.images, self.vectors = split_keys(obs_space)
        self.ndims = {k: len(s.shape) for k, s in obs_space.items()}
        self.grid = bool(self.vectors) and _grid_key(self.vectors, cfg)
        self.out_dim = 0
        if self.images:
            channels = sum(obs_space[k].shape[-1] for k in self.images)
            size = obs_space[self.images[0]].shape[0]
            self.cnn = ConvEncoder(channels, cfg.cnn_depth, size, stride=cfg.cnn_stride)
            self.out_dim += self.cnn.out_dim
        if self.vectors:
            width = sum(int(torch.tensor(obs_space[k].shape).prod()) for k in self.vectors)
            self.mlp: nn.Module = GridEncoder(width, cfg) if self.grid else MLP(width, cfg.units, cfg.layers)
            self.out_dim += self.mlp.out_dim

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        outs = []
        if self.images:
            outs.append(self.cnn(torch.cat([obs[k] for k in self.images], -1)))
        if self.vectors:
            first = obs[self.vectors[0]]
            lead = first.shape[: first.dim() - self.ndims[self.vectors[0]]]
            flat = torch.cat([obs[k].reshape(*lead, -1).float() for k in self.vectors], -1)
            outs.append(self.mlp(flat) if self.grid else self.mlp(symlog(flat)))
        return torch.cat(outs, -1)


class Decoder(nn.Module):
    """Features -> reconstructions: images in [0, 1] (MSE), vectors in symlog space (MSE; with
    ``model.vector_codec=crafter_grid``, per-cell cross-entropy by :class:`reverie.symbolic.GridDecoder`, which
    with ``model.decoder_prev`` also reads the previous observation)."""

    def __init__(self, obs_space: dict[str, Space], feat_dim: int, cfg: ModelConfig):
        super().__init__()
        self.images, self.vectors = split_keys(obs_space)
        self.shapes = {k: tuple(s.shape) for k, s in obs_space.items()}
        if self.images:
            self.channels = [obs_space[k].shape[-1] for k in self.images]
            size = obs_space[self.images[0]].shape[0]
            self.cnn = ConvDecoder(feat_dim, sum(self.channels), cfg.cnn_depth, size, stride=cfg.cnn_stride)
        self.grid: GridDecoder | None = None
        if self.vectors:
            self.sizes = [int(torch.tensor(self.shapes[k]).prod()) for k in self.vectors]
            if _grid_key(self.vectors, cfg):
                self.grid = GridDecoder(feat_dim, self.sizes[0], cfg)
            else:
                self.mlp = MLP(feat_dim, cfg.units, cfg.layers, out=sum(self.sizes))

    def forward(self, feat: Tensor, prev: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Predictions per key: images (..., H, W, C) in [0, 1]; vectors in symlog space.

        ``prev``: the previous observations in env units (all zeros where there is none), which the grid
        codec reads with ``model.decoder_prev``; None: none anywhere.
        """
        out = self.images_of(feat)
        if self.vectors:
            lead = feat.shape[:-1]
            if self.grid is not None:
                vec = self.grid(feat, self.prev_vector(prev))
            else:
                vec = self.mlp(feat).float()
            vecs = vec.split(self.sizes, -1)
            out.update({k: v.reshape(*lead, *self.shapes[k]) for k, v in zip(self.vectors, vecs, strict=True)})
        return out

    @property
    def reads_prev(self) -> bool:
        """Whether predictions read the previous observation (the grid codec with ``model.decoder_prev``)."""
        return self.grid is not None and self.grid.reads_prev

    def prev_vector(self, prev: dict[str, Tensor] | None) -> Tensor | None:
        """The grid codec's vector among ``prev`` (None when absent or not read)."""
        if not self.reads_prev or prev is None or self.vectors[0] not in prev:
            return None
        return prev[self.vectors[0]]

    def images_of(self, feat: Tensor) -> dict[str, Tensor]:
        """The image predictions alone (..., H, W, C) in [0, 1]; empty without image keys."""
        if not self.images:
            return {}
        return dict(zip(self.images, self.cnn(feat).split(self.channels, -1), strict=True))

    def loss(self, feat: Tensor, obs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-key loss summed over each observation's dims, (B, T) per key: squared error, or the grid
        codec's cross-entropy (:meth:`reverie.symbolic.GridDecoder.loss`)."""
        losses = {}
        if self.grid is not None:
            key = self.vectors[0]
            target = obs[key].reshape(*obs[key].shape[:2], -1)
            prev = previous_frames(target, obs.get("is_first")) if self.grid.reads_prev else None
            losses[key] = self.grid.loss(feat, target, prev)
        preds = self(feat) if self.grid is None else self.images_of(feat)
        for key, pred in preds.items():
            if key in self.images:
                target = obs[key].float() / 255.0
            else:
                target = symlog(obs[key].float())
            err = (pred.float() - target) ** 2
            losses[key] = err.reshape(*err.shape[:2], -1).sum(-1)
        return losses


class LatentEnsemble(nn.Module):
    """K one-step predictors of the next posterior latent from (features, action) (Plan2Explore-style).

    They train on real transitions with their inputs detached, so they never change the world model.
    Their disagreement (variance of the predicted class probabilities across members, summed over the
    latents) is the model's uncertainty about a transition; ``threshold`` tracks a high quantile of it on
    real data, above which the model "does not know".
    """

    threshold: Tensor

    def __init__(self, feat_dim: int, action_dim: int, cfg: ModelConfig):
        super().__init__()
        self.stoch, self.classes, self.quantile = cfg.stoch, cfg.classes, cfg.uncertainty_quantile
        self.heads = nn.ModuleList(
            MLP(feat_dim + action_dim, cfg.units, 1, out=cfg.stoch * cfg.classes) for _ in range(cfg.ensemble)
        )
        self.register_buffer("threshold", torch.zeros(()))

    def forward(self, feat: Tensor, action: Tensor) -> Tensor:
        """(K, ..., S, C) log-probabilities of the next latent from each member."""
        x = torch.cat([feat, action.to(feat.dtype)], -1)
        outs = [head(x).float().reshape(*x.shape[:-1], self.stoch, self.classes) for head in self.heads]
        return torch.stack(outs).log_softmax(-1)

    def disagreement(self, feat: Tensor, action: Tensor) -> Tensor:
        """(...) variance across members of the predicted probabilities, summed over latents and classes."""
        return self.spread(self(feat, action))

    @staticmethod
    def spread(logp: Tensor) -> Tensor:
        """:meth:`disagreement` from the members' log-probabilities (K, ..., S, C)."""
        return logp.exp().var(0, unbiased=False).sum((-2, -1))

    def loss(self, feat: Tensor, action: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy to the next posterior ``target`` (..., S, C) probabilities, over entries with mask 1.

        Also folds the batch's disagreement quantile into ``threshold`` (EMA, rate 0.01; first batch sets it).
        Returns ``(loss, disagreement (...))``.
        """
        logp = self(feat.detach(), action.detach())  # (K, ..., S, C)
        ce = -(target.detach() * logp).sum((-2, -1)).mean(0)  # (...)
        with torch.no_grad():
            disagree = self.spread(logp)
            real = disagree[mask > 0]
            if real.numel():
                q = torch.quantile(real.float(), self.quantile)
                rate = 1.0 if float(self.threshold) == 0 else 0.01
                self.threshold.mul_(1 - rate).add_(rate * q)
        return masked_mean(ce, mask), disagree


class WorldModel(nn.Module):
    """Encoder + RSSM + decoder + reward (two-hot) + continue (Bernoulli) heads.

    Args:
        obs_space: the model's observation spaces (no reserved or ``log/`` keys).
        action_dim: width of the action vector.
        cfg: model section of the config.
    """

    bins: Tensor

    def __init__(self, obs_space: dict[str, Space], action_dim: int, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.obs_keys = list(obs_space)
        self.encoder = Encoder(obs_space, cfg)
        self.rssm = RSSM(cfg, self.encoder.out_dim, action_dim)
        feat = self.rssm.feat_dim
        self.decoder = Decoder(obs_space, feat, cfg)
        for name in ("decoder_prev", "count_classes", "count_copy", "reward_change"):
            if getattr(cfg, name) and self.decoder.grid is None:
                raise ValueError(
                    f"model.{name}=true needs the grid codec (model.vector_codec=crafter_grid on crafter-symbolic); "
                    f"set model.{name}=false for other observations."
                )
        if cfg.reward_gate and not cfg.reward_change:
            raise ValueError("model.reward_gate=true needs model.reward_change=true (it reads the same change)")
        # the vector whose change the reward head reads (model.reward_change)
        self.change_key = self.decoder.vectors[0] if cfg.reward_change else None
        width = feat + (CHANGE_FEATURES if self.change_key else 0)
        self.reward_head = MLP(width, cfg.units, cfg.head_layers, out=cfg.bins, out_scale=0.0)
        self.cont_head = MLP(feat, cfg.units, cfg.head_layers, out=1)
        self.register_buffer("bins", twohot_bins(cfg.bins), persistent=False)
        self.ensemble = LatentEnsemble(feat, action_dim, cfg) if cfg.ensemble > 1 else None

    def reward(
        self, feat: Tensor, obs: dict[str, Tensor] | None = None, prev: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Predicted reward on reaching ``feat`` (...,) (mean of the two-hot distribution).

        With ``model.reward_change`` the head also reads :func:`reverie.symbolic.change_features` of the
        observation ``obs`` at ``feat`` and ``prev``, the one before (dicts of env-unit observations, all
        zeros where there is none). Without ``obs`` the decoder pictures it from ``feat`` (and ``prev``).
        """
        return self.reward_from(feat, self.change(feat, obs, prev))

    def reward_from(self, feat: Tensor, change: Tensor | None) -> Tensor:
        """:meth:`reward` from features and the change features already computed (None: the head reads none)."""
        return twohot_decode(self.reward_logits(feat, change), self.bins)

    def reward_logits(self, feat: Tensor, change: Tensor | None) -> Tensor:
        """The reward head's two-hot logits (..., bins); with ``model.reward_gate`` those of exactly zero where
        ``change`` shows nothing changed (:func:`reverie.symbolic.changed`), so the head neither predicts nor
        learns a reward there."""
        logits = self.reward_head(self.reward_input(feat, change))
        if not self.cfg.reward_gate:
            return logits
        assert change is not None
        zero = torch.full_like(logits, -30.0)
        zero[..., int(self.bins.abs().argmin())] = 30.0  # the bin nearest 0
        return torch.where(changed(change).unsqueeze(-1), logits, zero)

    def reward_input(self, feat: Tensor, change: Tensor | None) -> Tensor:
        """What the reward head reads: ``feat``, and with ``model.reward_change`` the ``change`` features."""
        if self.change_key is None:
            return feat
        assert change is not None, "a reward head that reads the change needs it"
        return torch.cat([feat, change.to(feat.dtype)], -1)

    def change(
        self, feat: Tensor, obs: dict[str, Tensor] | None = None, prev: dict[str, Tensor] | None = None
    ) -> Tensor | None:
        """The change features (..., 64) the reward head reads at ``feat`` (see :meth:`reward`); None when it
        reads none (``model.reward_change`` off)."""
        key = self.change_key
        if key is None:
            return None
        lead = feat.shape[:-1]
        before = None if prev is None or key not in prev else prev[key].reshape(*lead, -1)
        if obs is not None and key in obs:
            now = obs[key].reshape(*lead, -1)
        else:
            assert self.decoder.grid is not None
            with torch.no_grad():
                now = self.decoder.grid.observation(feat, before if self.decoder.reads_prev else None)
        return change_features(now, before)

    def cont(self, feat: Tensor) -> Tensor:
        """Predicted probability that the episode continues."""
        return torch.sigmoid(self.cont_head(feat).float().squeeze(-1))

    def reward_disagreement(self, state: State, action: Tensor, prev: dict[str, Tensor] | None = None) -> Tensor:
        """(N,) spread (std) across ensemble members of the reward the next step would give.

        Each member's most likely next latent, with the next recurrent state the dynamics give, goes
        through the reward head: where the members agree on the latent parts the reward depends on
        (e.g. whether a crafted item appears) the spread is small, however much they disagree elsewhere.
        With ``model.reward_change`` each member pictures its next observation from ``prev``, the present one.
        Zeros without an ensemble (``model.ensemble`` < 2).
        """
        doubt = self.doubt(state, action, prev=prev)
        return torch.zeros(state["deter"].shape[:-1], device=state["deter"].device) if doubt is None else doubt[1]

    def doubt(
        self,
        state: State,
        action: Tensor,
        next_deter: Tensor | None = None,
        prev: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor] | None:
        """The ensemble's (latent disagreement, :meth:`reward_disagreement`) (N,) about the transition from
        ``state`` with ``action``, from one pass of the members; None without an ensemble.

        ``next_deter``: the recurrent state after the transition, when the caller has already stepped.
        ``prev``: the observation at ``state`` (read with ``model.reward_change``).
        """
        if self.ensemble is None:
            return None
        deter = self.rssm.core(state, action) if next_deter is None else next_deter  # (N, D)
        return self.doubt_feat(self.rssm.feat(state), action, deter, prev=prev)

    def doubt_feat(
        self,
        feat: Tensor,
        action: Tensor,
        next_deter: Tensor,
        prev: dict[str, Tensor] | None = None,
        change: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """:meth:`doubt` from features (..., F) of the states, e.g. of an imagined rollout (needs the ensemble).

        With ``model.reward_change`` the members' rewards read ``change`` (..., 64), the change features of
        the step (the same for every member) when given, else each member's picture of its next observation
        from ``prev``, the observation at ``feat`` (none: pictured without one).
        """
        assert self.ensemble is not None, "doubt_feat needs model.ensemble > 1"
        logp = self.ensemble(feat, action)  # (K, ..., S, C)
        mode = nn.functional.one_hot(logp.argmax(-1), logp.shape[-1]).flatten(-2)  # (K, ..., S * C)
        members = torch.cat([next_deter.expand(len(mode), *next_deter.shape), mode.to(next_deter.dtype)], -1)
        if self.change_key is not None:
            if change is None:
                wide = {k: v.expand(len(mode), *v.shape) for k, v in (prev or {}).items()}
                change = self.change(members, None, wide or None)
            else:
                change = change.expand(len(mode), *change.shape)
        reward = self.reward_from(members, change)
        return LatentEnsemble.spread(logp).float(), reward.float().std(0, unbiased=False)

    def recorded_reward_logits(self, feat: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The reward head's two-hot logits (B, T, bins) at the posterior features ``feat`` of a recorded (B, T)
        batch; with ``model.reward_change`` it reads the change between each recorded observation and the one
        before it (none at episode starts)."""
        change = None
        if self.change_key is not None:
            obs = batch[self.change_key]
            obs = obs.reshape(*obs.shape[:2], -1)
            change = change_features(obs, previous_frames(obs, batch.get("is_first")))
        return self.reward_logits(feat, change)

    def observe(
        self, batch: dict[str, Tensor], state: State | None = None, embed: Tensor | None = None
    ) -> tuple[State, Tensor, Tensor]:
        """Posterior states, post and prior logits for a (B, T) batch (``embed``: precomputed encoder output)."""
        if embed is None:
            embed = self.encoder({k: batch[k] for k in self.obs_keys})  # (B, T, E)
        return self.rssm.observe(embed, batch["action"], batch["is_first"], state, batch.get("action_mask"))

    def loss(
        self, batch: dict[str, Tensor], state: State | None = None, embed: Tensor | None = None
    ) -> tuple[Tensor, State, dict[str, Tensor]]:
        """Total world-model loss, posterior states (B, T, ...) and metrics."""
        cfg = self.cfg
        states, post, prior = self.observe(batch, state, embed)
        feat = self.rssm.feat(states)  # (B, T, F)
        dyn, rep = kl_balance(post, prior, cfg.free_nats)  # (B, T)
        rec = self.decoder.loss(feat, batch)
        rew = twohot_loss(self.recorded_reward_logits(feat, batch), batch["reward"].float(), self.bins)
        cont_target = 1.0 - batch["is_terminal"].float()
        con = nn.functional.binary_cross_entropy_with_logits(
            self.cont_head(feat).float().squeeze(-1), cont_target, reduction="none"
        )
        weight = batch.get("loss_weight")  # per-step weights (e.g. the correction loop's misses); None: equal
        reward_mask = batch.get("reward_mask")
        if weight is not None:
            weight = weight.float()
            reward_mask = weight if reward_mask is None else weight * reward_mask.float()
        losses = {
            "rec": masked_mean(torch.stack(list(rec.values())).sum(0), weight),
            "rew": masked_mean(rew, reward_mask),
            "con": masked_mean(con, weight),
            "dyn": masked_mean(dyn, weight),
            "rep": masked_mean(rep, weight),
        }
        scales = {
            "rec": cfg.loss_rec,
            "rew": cfg.loss_rew,
            "con": cfg.loss_con,
            "dyn": cfg.loss_dyn,
            "rep": cfg.loss_rep,
        }
        if self.ensemble is not None:  # transitions t -> t+1 with a known action, inside one episode
            mask = 1.0 - batch["is_first"][:, 1:].float()
            if "action_mask" in batch:
                mask = mask * batch["action_mask"][:, 1:].float()
            losses["ens"], disagree = self.ensemble.loss(feat[:, :-1], batch["action"][:, 1:], post[:, 1:].exp(), mask)
            scales["ens"] = 1.0
        total = sum(scales[k] * v for k, v in losses.items())
        metrics = {f"loss/{k}": v.detach() for k, v in losses.items()}
        if self.ensemble is not None:
            metrics["wm/disagreement"] = disagree.mean()
            metrics["wm/uncertainty_threshold"] = self.ensemble.threshold.clone()
        metrics.update({f"loss/rec/{k}": v.mean().detach() for k, v in rec.items()})
        post_ent = -(post.exp() * post).sum(-1).sum(-1).mean()
        metrics["wm/post_entropy"] = post_ent.detach()
        metrics["wm/kl"] = (dyn.detach()).mean()
        assert isinstance(total, Tensor)
        return total, states, metrics

    @torch.no_grad()
    def openloop(self, batch: dict[str, Tensor], context: int) -> dict[str, tuple[Tensor, Tensor]]:
        """Open-loop prediction: filter ``context`` steps, then dream the rest with the recorded actions.

        Returns, per image key, ``(truth, model)`` frames (B, T - context, H, W, C) in [0, 1].
        """
        head = {k: v[:, :context] for k, v in batch.items()}
        states, _, _ = self.observe(head)
        state = {k: v[:, -1] for k, v in states.items()}
        feats = []
        for t in range(context, batch["action"].shape[1]):
            state = self.rssm.imagine_step(state, batch["action"][:, t])
            feats.append(self.rssm.feat(state))
        preds = self.decoder(torch.stack(feats, 1))
        return {k: (batch[k][:, context:].float() / 255.0, preds[k].float()) for k in self.decoder.images}
