"""World model: encoder, RSSM, decoder, reward and continue heads, and their loss.

A batch is a dict of tensors shaped (B, T, ...): the observation keys, ``action`` (the action that
led to each step, zero at episode starts), ``reward``, ``is_first``, ``is_terminal``, and optional
``action_mask`` / ``reward_mask`` (1 where the label exists; recordings may lack either).

The interface everything else uses (nothing outside reaches into ``wm.rssm``):

* :meth:`WorldModel.observe` filters a (B, T) batch into posterior states, :meth:`WorldModel.filter_step`
  filters one observation of N envs (acting, seeding a dream);
* :meth:`WorldModel.step` is **what the model predicts for one transition**: the next latent state, its features,
  the reward and continuation, the observation it pictures and, with an ensemble, its uncertainty about the step.
  Imagination, evaluation, correction, offline pessimism and the dream all call it;
* :meth:`WorldModel.loss` is the model's training loss.

``model.kind=transformer`` gives :class:`reverie.transformer.TransformerWorldModel`, the same interface over a
transformer's dynamics.

Observations the model pictures are in env units (images 0-255 as floats, vectors as the codec draws them,
:mod:`reverie.codecs`): exactly what a policy that reads observations gets from the real env.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

import reverie.distributed as distributed
from reverie.codecs import VectorCodec, previous_frames
from reverie.config import ModelConfig
from reverie.envs.base import Space
from reverie.functional import kl_balance, masked_mean, twohot_bins, twohot_decode, twohot_loss
from reverie.nets import MLP, ConvDecoder, ConvEncoder
from reverie.plugins import codec as find_codec
from reverie.rssm import RSSM, State

UNCERTAINTY_QUANTILE = 0.99
"""The "I don't know" threshold: this quantile of the ensemble's disagreement on real transitions."""


def split_keys(obs_space: dict[str, Space]) -> tuple[list[str], list[str]]:
    """(image keys, vector keys) among the model's observation keys."""
    images = [k for k, s in obs_space.items() if s.is_image]
    vectors = [k for k, s in obs_space.items() if not s.is_image]
    return images, vectors


def _codec(name: str, vectors: list[str]) -> type[VectorCodec]:
    """The codec class ``name``; a codec other than ``mlp`` reads exactly one vector key."""
    codec = find_codec(name)
    if name != "mlp" and len(vectors) != 1:
        raise ValueError(
            f"model.vector_codec={name} reads one vector observation, but the observation has vector keys {vectors}; "
            "use model.vector_codec=mlp."
        )
    return codec  # type: ignore[no-any-return]


class Encoder(nn.Module):
    """Observations -> one embedding: conv encoder for images, the codec's encoder for the vectors (joined).

    Args:
        obs_space: the observation keys it reads.
        cfg: the model section (``cnn_depth``, ``cnn_stride``, ``units``, ``layers``).
        codec: the vector codec's name (default ``cfg.vector_codec``).
    """

    def __init__(self, obs_space: dict[str, Space], cfg: ModelConfig, codec: str | None = None):
        super().__init__()
        self.images, self.vectors = split_keys(obs_space)
        self.ndims = {k: len(s.shape) for k, s in obs_space.items()}
        self.out_dim = 0
        if self.images:
            channels = sum(obs_space[k].shape[-1] for k in self.images)
            size = obs_space[self.images[0]].shape[0]
            self.cnn = ConvEncoder(channels, cfg.cnn_depth, size, stride=cfg.cnn_stride, layout=cfg.cnn_layout)
            self.out_dim += self.cnn.out_dim
        if self.vectors:
            width = sum(int(torch.tensor(obs_space[k].shape).prod()) for k in self.vectors)
            self.vector = _codec(codec or cfg.vector_codec, self.vectors).encoder(width, cfg)
            self.out_dim += self.vector.out_dim

    @property
    def keys(self) -> list[str]:
        return [*self.images, *self.vectors]

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        outs = []
        if self.images:
            outs.append(self.cnn(torch.cat([obs[k] for k in self.images], -1)))
        if self.vectors:
            first = obs[self.vectors[0]]
            lead = first.shape[: first.dim() - self.ndims[self.vectors[0]]]
            flat = torch.cat([obs[k].reshape(*lead, -1).float() for k in self.vectors], -1)
            outs.append(self.vector(flat))
        return torch.cat(outs, -1)


class Decoder(nn.Module):
    """Features -> reconstructions: images in [0, 1] (MSE), vectors through the codec's decoder."""

    def __init__(self, obs_space: dict[str, Space], feat_dim: int, cfg: ModelConfig):
        super().__init__()
        self.images, self.vectors = split_keys(obs_space)
        self.shapes = {k: tuple(s.shape) for k, s in obs_space.items()}
        if self.images:
            self.channels = [obs_space[k].shape[-1] for k in self.images]
            size = obs_space[self.images[0]].shape[0]
            self.cnn = ConvDecoder(
                feat_dim,
                sum(self.channels),
                cfg.cnn_depth,
                size,
                stride=cfg.cnn_stride,
                deter=cfg.deter,
                units=cfg.units,
                layout=cfg.cnn_layout,
            )
        self.reads_prev = False
        if self.vectors:
            self.sizes = [int(torch.tensor(self.shapes[k]).prod()) for k in self.vectors]
            self.vector = _codec(cfg.vector_codec, self.vectors).decoder(feat_dim, sum(self.sizes), cfg)
            self.reads_prev = self.vector.reads_prev

    def images_of(self, feat: Tensor) -> dict[str, Tensor]:
        """The image predictions alone (..., H, W, C) in [0, 1]; empty without image keys."""
        if not self.images:
            return {}
        return dict(zip(self.images, self.cnn(feat).split(self.channels, -1), strict=True))

    def _flat(self, obs: dict[str, Tensor] | None, lead: tuple[int, ...]) -> Tensor | None:
        """The vector keys of ``obs`` joined as (..., N); None when absent."""
        if obs is None or any(k not in obs for k in self.vectors):
            return None
        return torch.cat([obs[k].reshape(*lead, -1).float() for k in self.vectors], -1)

    def picture(
        self, feat: Tensor, prev: dict[str, Tensor] | None = None, keys: list[str] | None = None
    ) -> dict[str, Tensor]:
        """The observation the model pictures behind ``feat`` (..., F), in env units: images 0-255 (float), vectors
        as the codec draws them. ``prev``: the observation before (read by a codec decoder that ``reads_prev``);
        ``keys``: only these keys (default all)."""
        keys = list(self.shapes) if keys is None else keys
        lead = feat.shape[:-1]
        out: dict[str, Tensor] = {}
        if any(k in self.images for k in keys):
            out |= {k: v.float().clamp(0, 1) * 255.0 for k, v in self.images_of(feat).items() if k in keys}
        if any(k in self.vectors for k in keys):
            before = self._flat(prev, lead) if self.reads_prev else None
            vec = self.vector.picture(feat, before)
            for k, v in zip(self.vectors, vec.split(self.sizes, -1), strict=True):
                if k in keys:
                    out[k] = v.reshape(*lead, *self.shapes[k])
        return out

    def loss(self, feat: Tensor, obs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-key loss (B, T): the images' squared error summed over pixels, the codec's loss of the vectors
        (reported under the first vector key)."""
        losses = {}
        for key, pred in self.images_of(feat).items():
            err = (pred.float() - obs[key].float() / 255.0) ** 2
            losses[key] = err.reshape(*err.shape[:2], -1).sum(-1)
        if self.vectors:
            target = self._flat(obs, feat.shape[:-1])
            assert target is not None
            prev = previous_frames(target, obs.get("is_first")) if self.reads_prev else None
            losses[self.vectors[0]] = self.vector.loss(feat, target, prev)
        return losses


class LatentEnsemble(nn.Module):
    """K one-step predictors of the next latent from (features, action) (Plan2Explore-style): the RSSM's
    categorical latent (class probabilities, cross-entropy) or, with ``continuous`` > 0, that many continuous
    numbers (a transformer's latent tokens, squared error).

    They train on real transitions with their inputs detached, so they never change the world model.
    Their disagreement (variance of the predictions across members, summed over the latent) is the model's
    uncertainty about a transition; ``threshold`` tracks the 99% quantile of it on real data, above which the
    model "does not know".
    """

    threshold: Tensor

    def __init__(self, feat_dim: int, action_dim: int, cfg: ModelConfig, continuous: int = 0):
        super().__init__()
        self.stoch, self.classes, self.continuous = cfg.stoch, cfg.classes, continuous
        out = continuous or cfg.stoch * cfg.classes
        self.heads = nn.ModuleList(MLP(feat_dim + action_dim, cfg.units, 1, out=out) for _ in range(cfg.ensemble))
        self.register_buffer("threshold", torch.zeros(()))

    def forward(self, feat: Tensor, action: Tensor) -> Tensor:
        """Each member's prediction: log-probabilities (K, ..., S, C) of the next categorical latent, or the next
        continuous latent (K, ..., D)."""
        x = torch.cat([feat, action.to(feat.dtype)], -1)
        outs = torch.stack([head(x).float() for head in self.heads])
        if self.continuous:
            return outs
        return outs.reshape(*outs.shape[:-1], self.stoch, self.classes).log_softmax(-1)

    def spread(self, pred: Tensor) -> Tensor:
        """(...) variance across members of the predictions (K, ...) (class probabilities for a categorical
        latent), summed over the latent: the disagreement."""
        if self.continuous:
            return pred.var(0, unbiased=False).sum(-1)
        return pred.exp().var(0, unbiased=False).sum((-2, -1))

    def members(self, pred: Tensor) -> Tensor:
        """(K, ..., latent) the latent each member predicts, as the features hold it: the likeliest class of
        each categorical (one-hot, flattened) or the continuous numbers."""
        if self.continuous:
            return pred
        return nn.functional.one_hot(pred.argmax(-1), pred.shape[-1]).flatten(-2).float()

    def loss(self, feat: Tensor, action: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Each member's error against the next latent ``target`` (..., S, C probabilities, or ..., D numbers),
        averaged over members and the entries with mask 1: cross-entropy, or squared error summed over the latent.

        Also folds the batch's disagreement quantile into ``threshold`` (EMA, rate 0.01; first batch sets it).
        Returns ``(loss, disagreement (...))``.
        """
        pred = self(feat.detach(), action.detach())  # (K, ..., latent)
        if self.continuous:
            err = (pred - target.detach().float()).pow(2).sum(-1).mean(0)  # (...)
        else:
            err = -(target.detach() * pred).sum((-2, -1)).mean(0)
        with torch.no_grad():
            disagree = self.spread(pred)
            # The quantile over the whole batch: real transitions of every rank (the others marked NaN).
            marked = torch.where(mask > 0, disagree.float(), torch.nan)
            # Tensor ops only (no host sync), so a compiled update stays one graph; NaN: no real transition.
            q = torch.nanquantile(distributed.gather_rows(marked.flatten()), UNCERTAINTY_QUANTILE)
            rate = torch.where(self.threshold == 0, 1.0, 0.01)
            new = self.threshold * (1 - rate) + rate * q
            self.threshold.copy_(torch.where(q.isnan(), self.threshold, new))
        return masked_mean(err, mask), disagree


@dataclasses.dataclass
class Transition:
    """What the world model predicts for one step of N states (:meth:`WorldModel.step`)."""

    state: State
    """The next latent state (the RSSM's ``{"deter": (N, D), "stoch": (N, S, K)}``; a transformer's has its cache)."""
    feat: Tensor
    """(N, F) its features."""
    reward: Tensor
    """(N,) the reward predicted on reaching it (mean of the two-hot distribution)."""
    cont: Tensor
    """(N,) the predicted probability that the episode goes on."""
    obs: dict[str, Tensor]
    """The observation pictured there (env units): the keys asked for, and the one the reward head reads."""
    uncertainty: Tensor | None = None
    """(N,) the ensemble's disagreement about the next latent; None without an ensemble or when not asked."""
    reward_uncertainty: Tensor | None = None
    """(N,) the spread (std) across members of the reward their next latents give."""
    unknown: Tensor | None = None
    """(N,) bool: the disagreement passes the calibrated threshold, the model "does not know"."""


class WorldModel(nn.Module):
    """Encoder + RSSM + decoder + reward (two-hot) + continue (Bernoulli) heads. A subclass swaps the dynamics
    (:class:`reverie.transformer.TransformerWorldModel`) by overriding ``_build_dynamics`` and the state methods.

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
        feat, decoded = self._build_dynamics(action_dim)
        self._feat_dim = feat
        self.decoder = Decoder(obs_space, decoded, self._decoder_cfg())
        vectors = self.decoder.vectors
        self.codec = _codec(cfg.vector_codec, vectors) if vectors else None
        # the vector key whose change the reward head reads (a codec with change_dim > 0)
        self.change_key = vectors[0] if self.codec is not None and self.codec.change_dim else None
        width = feat + (self.codec.change_dim if self.codec is not None and self.change_key else 0)
        self.reward_head = MLP(width, cfg.units, 1, out=cfg.bins, out_scale=0.0)
        self.cont_head = MLP(feat, cfg.units, 1, out=1)
        self.register_buffer("bins", twohot_bins(cfg.bins), persistent=False)
        self.ensemble = self._build_ensemble(feat, action_dim) if cfg.ensemble > 1 else None

    def _build_dynamics(self, action_dim: int) -> tuple[int, int]:
        """Build the latent dynamics (here the RSSM); returns the widths of the features and of the decoder's input."""
        self.rssm = RSSM(self.cfg, self.encoder.out_dim, action_dim)
        return self.rssm.feat_dim, self.rssm.feat_dim

    def _build_ensemble(self, feat_dim: int, action_dim: int) -> LatentEnsemble:
        """The latent ensemble (``model.ensemble`` members) over the dynamics' next latent."""
        return LatentEnsemble(feat_dim, action_dim, self.cfg)

    def _decoder_cfg(self) -> ModelConfig:
        return self.cfg

    def decoder_input(self, feat: Tensor) -> Tensor:
        """What the decoder reads of the features (here all of them)."""
        return feat

    # ----------------------------------------------------------------- states
    @property
    def feat_dim(self) -> int:
        """Width of the features every head reads."""
        return self._feat_dim

    def initial(self, n: int, device: torch.device | str | None = None) -> State:
        """The all-zero state every episode starts from, for ``n`` envs."""
        return self.rssm.initial(n, device)

    def feat(self, state: State) -> Tensor:
        """(..., F) the features of a state."""
        return self.rssm.feat(state)

    def observe(
        self, batch: dict[str, Tensor], state: State | None = None, embed: Tensor | None = None
    ) -> tuple[State, Tensor, Tensor]:
        """States (B, T, ...) for a (B, T) batch and what the loss reads besides (the RSSM: posterior and prior
        logits); ``embed``: precomputed encoder output."""
        if embed is None:
            embed = self.encoder({k: batch[k] for k in self.obs_keys})  # (B, T, E)
        return self.rssm.observe(embed, batch["action"], batch["is_first"], state, batch.get("action_mask"))

    def filter_step(
        self, state: State, action: Tensor, obs: dict[str, Tensor], is_first: Tensor, action_mask: Tensor | None = None
    ) -> State:
        """The posterior state of N envs after one observation ``obs`` (N, ...), from ``state`` and the ``action``
        (N, A) taken since; ``is_first`` (N,) resets state and action first."""
        embed = self.encoder({k: obs[k] for k in self.obs_keys})
        return self.rssm.obs_step(state, action, embed, is_first, action_mask)[0]

    def dream_state(self, state: State, action: Tensor) -> State:
        """The next latent state the model dreams after ``action`` (N, A) in ``state``."""
        return self.rssm.imagine_step(state, action)

    # ----------------------------------------------------------------- predictions
    def cont(self, feat: Tensor) -> Tensor:
        """Predicted probability that the episode continues."""
        return torch.sigmoid(self.cont_head(feat).float().squeeze(-1))

    def change(self, obs: dict[str, Tensor] | None, prev: dict[str, Tensor] | None) -> Tensor | None:
        """What the reward head reads about the step from ``prev`` to ``obs`` (env units, either may lack the key:
        none there); None when the head reads the features alone."""
        key = self.change_key
        if key is None:
            return None
        assert self.codec is not None and obs is not None and key in obs, "the reward head reads the observation"
        now = obs[key]
        lead = now.shape[: now.dim() - len(self.decoder.shapes[key])]
        before = None if prev is None or key not in prev else prev[key].reshape(*lead, -1)
        return self.codec.change(now.reshape(*lead, -1), before)

    def reward_logits(self, feat: Tensor, change: Tensor | None) -> Tensor:
        """The reward head's two-hot logits (..., bins); a codec's gate sets those of exactly zero where it is False,
        so the head neither predicts nor learns a reward there."""
        if self.change_key is None:
            return self.reward_head(feat)
        assert self.codec is not None and change is not None, "a reward head that reads the change needs it"
        logits = self.reward_head(torch.cat([feat, change.to(feat.dtype)], -1))
        gate = self.codec.gate(change)
        if gate is None:
            return logits
        zero = torch.full_like(logits, -30.0)
        zero[..., int(self.bins.abs().argmin())] = 30.0  # the bin nearest 0
        return torch.where(gate.unsqueeze(-1), logits, zero)

    def reward(self, feat: Tensor, change: Tensor | None = None) -> Tensor:
        """Predicted reward on reaching ``feat`` (mean of the two-hot distribution); ``change``: see :meth:`change`."""
        return twohot_decode(self.reward_logits(feat, change), self.bins)

    def picture(
        self, feat: Tensor, prev: dict[str, Tensor] | None = None, keys: list[str] | None = None
    ) -> dict[str, Tensor]:
        """The observation the model pictures behind ``feat`` (env units; see :meth:`Decoder.picture`)."""
        with torch.no_grad():
            return self.decoder.picture(self.decoder_input(feat.detach()), prev, keys)

    def step(
        self,
        state: State,
        action: Tensor,
        prev: dict[str, Tensor] | None = None,
        picture: list[str] | None = None,
        uncertainty: bool = False,
    ) -> Transition:
        """What the model predicts for one transition of N states with ``action`` (N, A): see :class:`Transition`.

        Args:
            state: the latent states the action is taken in.
            action: the model's action vectors.
            prev: the observation at ``state`` (env units; the real one or the last picture), from which a codec
                that reads the previous observation pictures the next one and the reward head reads the change.
            picture: the keys of the next observation to picture (None: none beyond what the reward head needs).
            uncertainty: with an ensemble, also the disagreement about the step, whether the model knows it, and
                the members' reward spread (each member's next latent, for a categorical one its likeliest classes,
                with the next deterministic state, through the reward head, reading the same change).
        """
        nxt = self.dream_state(state, action)
        deter, feat = nxt["deter"], self.feat(nxt)  # (N, D), (N, F)
        keys = list(picture or [])
        if self.change_key is not None and self.change_key not in keys:
            keys.append(self.change_key)
        obs = self.picture(feat, prev, keys) if keys else {}
        change = self.change(obs, prev)
        out = Transition(nxt, feat, self.reward(feat, change), self.cont(feat), obs)
        if uncertainty and self.ensemble is not None:
            with torch.no_grad():
                pred = self.ensemble(self.feat(state), action)  # (K, N, ...)
                latents = self.ensemble.members(pred).to(deter.dtype)  # (K, N, latent)
                members = torch.cat([deter.expand(len(latents), *deter.shape), latents], -1)
                wide = None if change is None else change.expand(len(latents), *change.shape)
                out.uncertainty = self.ensemble.spread(pred).float()
                out.reward_uncertainty = self.reward(members, wide).float().std(0, unbiased=False)
                threshold = self.ensemble.threshold
                out.unknown = (threshold > 0) & (out.uncertainty > threshold)
        return out

    def ensemble_terms(self, feat: Tensor, batch: dict[str, Tensor], nxt: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The latent ensemble's loss on a batch's transitions t -> t+1 with a known action inside one episode, from
        the features ``feat`` (B, T, F) at t to the next latent ``nxt`` (B, T - 1, ...), and its metrics."""
        assert self.ensemble is not None
        mask = 1.0 - batch["is_first"][:, 1:].float()
        if "action_mask" in batch:
            mask = mask * batch["action_mask"][:, 1:].float()
        loss, disagree = self.ensemble.loss(feat[:, :-1], batch["action"][:, 1:], nxt, mask)
        return loss, {"wm/disagreement": disagree.mean(), "wm/uncertainty_threshold": self.ensemble.threshold.clone()}

    def recorded_reward_logits(self, feat: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The reward head's logits (B, T, bins) at the posterior features ``feat`` of a recorded (B, T) batch,
        reading the change between each recorded observation and the one before it (none at episode starts)."""
        change = None
        if self.change_key is not None:
            obs = batch[self.change_key]
            obs = obs.reshape(*obs.shape[:2], -1)
            prev = previous_frames(obs, batch.get("is_first"))
            change = self.change({self.change_key: obs}, {self.change_key: prev})
        return self.reward_logits(feat, change)

    # ----------------------------------------------------------------- learning
    def loss(
        self, batch: dict[str, Tensor], state: State | None = None, embed: Tensor | None = None
    ) -> tuple[Tensor, State, dict[str, Tensor]]:
        """Total world-model loss, posterior states (B, T, ...) and metrics."""
        cfg = self.cfg
        states, post, prior = self.observe(batch, state, embed)
        feat = self.feat(states)  # (B, T, F)
        dyn, rep = kl_balance(post, prior, cfg.free_nats)  # (B, T)
        rec = self.decoder.loss(feat, batch)
        losses = {
            "rec": torch.stack(list(rec.values())).sum(0).mean(),
            **self.head_losses(feat, batch),
            "dyn": dyn.mean(),
            "rep": rep.mean(),
        }
        scales = {"rec": 1.0, "rew": 1.0, "con": 1.0, "dyn": cfg.loss_dyn, "rep": cfg.loss_rep}
        ens_metrics: dict[str, Tensor] = {}
        if self.ensemble is not None:
            losses["ens"], ens_metrics = self.ensemble_terms(feat, batch, post[:, 1:].exp())
            scales["ens"] = 1.0
        total = sum(scales[k] * v for k, v in losses.items())
        metrics = {f"loss/{k}": v.detach() for k, v in losses.items()} | ens_metrics
        metrics.update({f"loss/rec/{k}": v.mean().detach() for k, v in rec.items()})
        post_ent = -(post.exp() * post).sum(-1).sum(-1).mean()
        metrics["wm/post_entropy"] = post_ent.detach()
        metrics["wm/kl"] = (dyn.detach()).mean()
        assert isinstance(total, Tensor)
        return total, states, metrics

    def head_losses(self, feat: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The reward (two-hot, where the reward is recorded) and continuation (Bernoulli) losses at the features
        (B, T, F) of a recorded batch."""
        rew = twohot_loss(self.recorded_reward_logits(feat, batch), batch["reward"].float(), self.bins)
        cont_target = 1.0 - batch["is_terminal"].float()
        con = nn.functional.binary_cross_entropy_with_logits(
            self.cont_head(feat).float().squeeze(-1), cont_target, reduction="none"
        )
        return {"rew": masked_mean(rew, batch.get("reward_mask")), "con": con.mean()}

    @torch.no_grad()
    def openloop(self, batch: dict[str, Tensor], context: int) -> dict[str, tuple[Tensor, Tensor]]:
        """Open-loop prediction: filter ``context`` steps, then dream the rest with the recorded actions.

        Returns, per image key, ``(truth, model)`` frames (B, T - context, H, W, C) in [0, 1].
        """
        feats, _, _ = self.dream_recorded(batch, context)
        preds = self.decoder.images_of(self.decoder_input(feats))
        return {k: (batch[k][:, context:].float() / 255.0, preds[k].float()) for k in self.decoder.images}

    def dream_recorded(
        self, batch: dict[str, Tensor], context: int, picture: list[str] | None = None
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Filter the first ``context`` steps of a (B, T) batch, then dream the rest with its recorded actions.

        Each dreamed step is pictured from the one pictured before it (the last context step's real observation
        first), as the dream does, for the keys in ``picture`` and the key the reward head reads.

        Returns the dreamed features (B, T - context, F), predicted rewards (B, T - context) and, per key in
        ``picture``, the pictured observations (B, T - context, ...) in env units.
        """
        states, _, _ = self.observe({k: v[:, :context] for k, v in batch.items()})
        state = {k: v[:, -1] for k, v in states.items()}
        keys = list(picture or [])
        carried = [k for k in dict.fromkeys([*keys, self.change_key]) if k is not None and k in batch]
        prev = {k: batch[k][:, context - 1].float() for k in carried} or None
        feats, rewards = [], []
        pictures: dict[str, list[Tensor]] = {k: [] for k in keys}
        for t in range(context, batch["action"].shape[1]):
            step = self.step(state, batch["action"][:, t], prev, keys)
            state = step.state
            prev = {k: step.obs[k].float() for k in carried} or None
            feats.append(step.feat)
            rewards.append(step.reward)
            for k in keys:
                pictures[k].append(step.obs[k])
        pictured = {k: torch.stack(v, 1) for k, v in pictures.items()}
        return torch.stack(feats, 1), torch.stack(rewards, 1), pictured
