"""Recurrent state-space model with a block-diagonal GRU core and categorical latents (DreamerV3).

A state is ``{"deter": (B, D), "stoch": (B, S, K)}``; its feature vector is ``[deter, flat(stoch)]``.
``observe`` filters a sequence of embeddings into posterior states; ``imagine_step`` rolls the prior.

Missing actions (recordings without labels, Dreamer 4) use one learned "no action" vector in place
of the action's input projection, selected by ``action_mask`` = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reverie.config import ModelConfig
from reverie.functional import sample_onehot, unimix_logits
from reverie.nets import BlockLinear, Linear, NormAct, RMSNorm, init_fan_in

State = dict[str, Tensor]

BLOCKS = 8
"""Blocks of the block-diagonal GRU (DreamerV3 uses 8 at every size)."""


class RSSM(nn.Module):
    """The latent dynamics.

    Args:
        cfg: model section of the config (deter, hidden, stoch, classes, unimix).
        embed_dim: width of the encoder output.
        action_dim: width of the action vector (one-hot for discrete actions).

    Example:
        >>> from reverie.config import make_config
        >>> rssm = RSSM(make_config(["debug"]).model, embed_dim=8, action_dim=2)
        >>> state = rssm.initial(3)
        >>> state = rssm.imagine_step(state, torch.zeros(3, 2))
        >>> rssm.feat(state).shape
        torch.Size([3, 48])
    """

    def __init__(self, cfg: ModelConfig, embed_dim: int, action_dim: int):
        super().__init__()
        self.cfg = cfg
        d, h, g = cfg.deter, cfg.hidden, BLOCKS
        self.stoch_dim = cfg.stoch * cfg.classes
        self.feat_dim = d + self.stoch_dim
        self.action_dim = action_dim
        self.in_deter = NormAct(d, h)
        self.in_stoch = NormAct(self.stoch_dim, h)
        self.in_action = NormAct(action_dim, h)
        self.no_action = nn.Parameter(torch.zeros(h))
        # Each block sees all three projections and its own slice of deter: one block-linear layer on
        # [x, deter_g] per block, computed as a dense map of the shared x plus a block-diagonal map of deter
        # (the same function without copying x G times).
        fan_in = 3 * h + d // g
        self.core_shared = Linear(3 * h, d, bias=False)
        init_fan_in(self.core_shared.weight, fan_in)
        self.core_block = BlockLinear(d, d, g, fan_in=fan_in)
        self.core_norm = RMSNorm(d, eps=1e-4)
        self.core_gates = BlockLinear(d, 3 * d, g)
        self.prior_net = nn.Sequential(NormAct(d, h), NormAct(h, h), Linear(h, self.stoch_dim))
        self.post_net = nn.Sequential(NormAct(d + embed_dim, h), Linear(h, self.stoch_dim))

    def initial(self, batch: int, device: torch.device | str | None = None) -> State:
        """The all-zero state that every episode starts from (on the module's device unless ``device`` is given)."""
        device = self.core_norm.weight.device if device is None else device
        return {
            "deter": torch.zeros(batch, self.cfg.deter, device=device),
            "stoch": torch.zeros(batch, self.cfg.stoch, self.cfg.classes, device=device),
        }

    def feat(self, state: State) -> Tensor:
        """(B, deter + stoch * classes) features read by all heads."""
        stoch = state["stoch"].reshape(*state["stoch"].shape[:-2], -1)
        return torch.cat([state["deter"], stoch.to(state["deter"].dtype)], -1)

    def _logits(self, x: Tensor) -> Tensor:
        logits = x.reshape(*x.shape[:-1], self.cfg.stoch, self.cfg.classes).float()
        return unimix_logits(logits, self.cfg.unimix)

    def embed_action(self, action: Tensor, action_mask: Tensor | None = None) -> Tensor:
        """The action's input projection (..., H); the learned no-action vector where the mask is 0."""
        action = action / torch.clamp(action.abs(), min=1.0).detach()
        act = self.in_action(action)
        if action_mask is not None:
            mask = action_mask.unsqueeze(-1).to(act.dtype)
            act = mask * act + (1 - mask) * self.no_action.to(act.dtype)
        return act

    def core(self, state: State, action: Tensor, action_mask: Tensor | None = None) -> Tensor:
        """Next deterministic state from the previous state and action: (B, D)."""
        return self._core(state, self.embed_action(action, action_mask))

    def _core(self, state: State, act: Tensor) -> Tensor:
        deter, stoch = state["deter"], state["stoch"].reshape(state["stoch"].shape[0], -1)
        x = torch.cat([self.in_deter(deter), self.in_stoch(stoch), act.to(deter.dtype)], -1)  # (B, 3H)
        x = self.core_shared(x) + self.core_block(deter.to(x.dtype))  # (B, D)
        x = torch.nn.functional.silu(self.core_norm(x))
        g = BLOCKS
        gates = self.core_gates(x).reshape(-1, g, 3, deter.shape[-1] // g)  # (B, G, 3, D/G)
        reset, cand, update = (gates[:, :, i].reshape(deter.shape).float() for i in range(3))
        reset = torch.sigmoid(reset)
        cand = torch.tanh(reset * cand)
        update = torch.sigmoid(update - 1)
        return update * cand + (1 - update) * deter.float()

    def prior_logits(self, deter: Tensor) -> Tensor:
        """(B, S, K) log-probs of the prior given deter."""
        return self._logits(self.prior_net(deter))

    def post_logits(self, deter: Tensor, embed: Tensor) -> Tensor:
        """(B, S, K) log-probs of the posterior given deter and the observation's embedding."""
        return self._post(deter, self.embed_post(embed))

    def embed_post(self, embed: Tensor) -> Tensor:
        """The embedding's share of the posterior's first layer, ``W_embed @ embed`` (..., H): it does not depend
        on the recurrent state, so a sequence computes it for all steps at once."""
        first: Linear = self.post_net[0][0]  # type: ignore[index]
        return nn.functional.linear(embed, first.weight[:, self.cfg.deter :].to(embed.dtype))

    def _post(self, deter: Tensor, embed_in: Tensor) -> Tensor:
        """Posterior log-probs from deter and :meth:`embed_post` of the embedding: the layer on ``[deter, embed]``
        written as the sum of its two parts."""
        layer: NormAct = self.post_net[0]  # type: ignore[assignment]
        first: Linear = layer[0]  # type: ignore[assignment]
        norm, act = layer[1], layer[2]
        weight, bias = first.weight[:, : self.cfg.deter], first.bias
        x = nn.functional.linear(deter, weight.to(deter.dtype), bias.to(deter.dtype))
        return self._logits(self.post_net[1](act(norm(x + embed_in.to(x.dtype)))))

    def obs_step(
        self, state: State, action: Tensor, embed: Tensor, is_first: Tensor, action_mask: Tensor | None = None
    ) -> tuple[State, Tensor, Tensor]:
        """One filtering step; ``is_first`` resets state and action to zero first.

        Returns ``(posterior state, post logits, prior logits)``.
        """
        keep = (1.0 - is_first.float()).reshape(-1, 1)
        act = self.embed_action(action * keep.to(action.dtype), action_mask)
        state, post = self._filter(state, act, self.embed_post(embed), keep)
        return state, post, self.prior_logits(state["deter"])

    def _filter(self, state: State, act: Tensor, embed_in: Tensor, keep: Tensor) -> tuple[State, Tensor]:
        state = {"deter": state["deter"] * keep, "stoch": state["stoch"] * keep.unsqueeze(-1)}
        deter = self._core(state, act)
        post = self._post(deter, embed_in)
        return {"deter": deter, "stoch": sample_onehot(post)}, post

    def imagine_step(self, state: State, action: Tensor) -> State:
        """One step of the prior: the model dreams the next state."""
        deter = self.core(state, action)
        return {"deter": deter, "stoch": sample_onehot(self.prior_logits(deter))}

    def observe(
        self,
        embed: Tensor,
        action: Tensor,
        is_first: Tensor,
        state: State | None = None,
        action_mask: Tensor | None = None,
    ) -> tuple[State, Tensor, Tensor]:
        """Filter a sequence.

        Args:
            embed: (B, T, E) encoder outputs.
            action: (B, T, A) the action that led to each step (zeros at episode starts).
            is_first: (B, T) episode-start flags.
            state: state before the first step (default: initial).
            action_mask: (B, T) 1 where the action is known.

        Returns:
            states stacked over time ``{"deter": (B, T, D), "stoch": (B, T, S, K)}``, post and prior
            logits (B, T, S, K).
        """
        B, T = embed.shape[:2]
        state = state if state is not None else self.initial(B, embed.device)
        keep = 1.0 - is_first.float().unsqueeze(-1)  # (B, T, 1)
        # What does not depend on the recurrent state is computed for all steps at once.
        acts = self.embed_action(action * keep.to(action.dtype), action_mask)  # (B, T, H)
        embed_in = self.embed_post(embed)  # (B, T, H)
        deters, stochs, posts = [], [], []
        for t in range(T):
            state, post = self._filter(state, acts[:, t], embed_in[:, t], keep[:, t])
            deters.append(state["deter"])
            stochs.append(state["stoch"])
            posts.append(post)
        states = {"deter": torch.stack(deters, 1), "stoch": torch.stack(stochs, 1)}
        return states, torch.stack(posts, 1), self.prior_logits(states["deter"])
