"""Behaviour-cloning baselines trained offline on a recorded :class:`reverie.data.Dataset`.

* :class:`BCPolicy` clones the actions from the raw observations: a small stride-2 CNN per image key,
  symlog for vector keys, then an MLP with a categorical (discrete) or tanh-mean (Box, MSE) head.
* :class:`FeatureBC` clones them from the features of a trained world model (any :class:`Featurizer`),
  the "world model as features for other learners" use.
* :class:`InverseDynamics` learns which action led from one observation to the next on the labelled
  episodes and fills in the actions of the unlabelled ones (as VPT labels video), writing a new dataset.

Both share one core (:class:`_Cloner`): the training loop on ``(input[t], action[t + 1])`` pairs (in the
dataset format ``action[t]`` is the action that *led to* step ``t``), acting, and evaluation in envs
through :func:`reverie.evaluation.run_episodes`.

Example:
    >>> from reverie.data import record
    >>> ds = record("CartPole-v1", "random", episodes=20, folder="data/cartpole")  # doctest: +SKIP
    >>> policy = BCPolicy(ds.obs_space, ds.act_space["action"])                    # doctest: +SKIP
    >>> policy.fit(ds, steps=500)["bc/accuracy"]                                   # doctest: +SKIP
    0.53
    >>> policy.evaluate("CartPole-v1", episodes=5)["eval/return"]                  # doctest: +SKIP
    21.4
    >>> policy.save("runs/bc"); BCPolicy.load("runs/bc").act(obs, deterministic=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.checkpoint import CheckpointError, space_from_json, space_to_json
from reverie.config import EnvConfig
from reverie.data.dataset import Dataset
from reverie.data.format import DatasetError, spaces_from_json, spaces_to_json
from reverie.envs import Space, make_batch_env, model_keys
from reverie.evaluation import ActFn, run_episodes
from reverie.fileio import replace_folder, write_text, write_torch
from reverie.functional import return_to_go, rwr_weights, symlog
from reverie.nets import MLP
from reverie.version import __version__

__all__ = ["BCPolicy", "FeatureBC", "Featurizer", "InverseDynamics"]

log = logging.getLogger("reverie.baselines")

_FORMAT = 1


class Featurizer(Protocol):
    """World-model features for :class:`FeatureBC`; a trained Dreamer agent provides one."""

    @property
    def feat_dim(self) -> int:
        """Width F of the features."""
        ...

    def encode(self, episode: dict[str, np.ndarray]) -> np.ndarray:
        """Features ``(T, F)`` of one whole episode as :meth:`reverie.data.Dataset.episode` returns it."""
        ...

    def encode_step(self, obs: dict[str, np.ndarray], state: Any, action: np.ndarray | None) -> tuple[np.ndarray, Any]:
        """Filter one step of N envs: ``(features (N, F), state)``; ``obs["is_first"]`` resets an env,
        ``action`` is what each env took since its previous observation (None, like ``state``, at first)."""
        ...


def _signature(space: Space) -> tuple[Any, ...]:
    return np.dtype(space.dtype).name, tuple(space.shape), space.discrete, space.n if space.discrete else None


def _check_spaces(want: dict[str, Space], got: dict[str, Space], what: str) -> None:
    """Raise a ValueError naming the keys where ``got`` lacks or differs from ``want`` (dtype, shape, choices)."""
    bad = sorted(k for k in want if k not in got or _signature(got[k]) != _signature(want[k]))
    if bad:
        detail = "; ".join(
            f"{k}: policy {_signature(want[k])}, {what} {_signature(got[k]) if k in got else None}" for k in bad
        )
        raise DatasetError(f"The {what} does not match the policy's spaces at {bad} ({detail}).")


class _ImageEncoder(nn.Sequential):
    """Images (B, H, W, C) uint8 -> (B, D): 4 stride-2 3x3 convs with ``depth * (1, 2, 4, 8)`` channels, SiLU."""

    def __init__(self, shape: tuple[int, ...], depth: int):
        h, w, c = shape
        layers: list[nn.Module] = []
        for mult in (1, 2, 4, 8):
            layers += [nn.Conv2d(c, depth * mult, 3, stride=2, padding=1), nn.SiLU()]
            c, h, w = depth * mult, (h + 1) // 2, (w + 1) // 2
        super().__init__(*layers, nn.Flatten())
        self.out_dim = c * h * w

    def forward(self, image: Tensor) -> Tensor:
        return super().forward(image.permute(0, 3, 1, 2).float() / 255.0 - 0.5)  # (B, C, H, W)


class _Net(nn.Module):
    """``{key: (B, *shape)}`` -> (B, out): one CNN per image key, symlog of the flattened other keys, an MLP."""

    def __init__(self, spaces: dict[str, Space], out: int, units: int, layers: int, depth: int):
        super().__init__()
        cnns = {k: _ImageEncoder(s.shape, depth) for k, s in spaces.items() if s.is_image}
        self.vectors = [k for k, s in spaces.items() if not s.is_image]
        width = sum(c.out_dim for c in cnns.values()) + sum(math.prod(spaces[k].shape) for k in self.vectors)
        self.cnns = nn.ModuleDict(cnns)
        self.mlp = MLP(width, units, layers, out=out)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        parts = [cnn(inputs[k]) for k, cnn in self.cnns.items()]
        parts += [symlog(inputs[k].float().reshape(len(inputs[k]), -1)) for k in self.vectors]
        return self.mlp(torch.cat(parts, -1))  # (B, out)


class _Cloner:
    """The core both baselines share: a :class:`_Net` on ``spaces``, ``fit``, acting and ``evaluate``.

    Subclasses give :meth:`_inputs` (the net's inputs for one dataset episode) and :meth:`_act_fn`.
    ``obs_space`` holds the observation keys the policy reads itself, checked against datasets and envs.
    """

    def __init__(
        self,
        spaces: dict[str, Space],
        obs_space: dict[str, Space],
        act_space: Space | dict[str, Space],
        args: dict[str, int],
        device: str | torch.device,
    ) -> None:
        space = self.act_space = act_space["action"] if isinstance(act_space, dict) else act_space
        if space.discrete and space.shape != ():
            raise ValueError(f"Behaviour cloning supports one discrete choice or a Box action, not {space}.")
        self.spaces, self.obs_space, self.args, self.device = spaces, obs_space, args, torch.device(device)
        with torch.random.fork_rng(devices=[]):  # seeded weights, the global generator untouched
            torch.manual_seed(args["seed"])
            out = space.n if space.discrete else math.prod(space.shape)
            self.net = _Net(spaces, out, args["units"], args["layers"], args.get("cnn_depth", 0)).to(self.device)
        self._rng = np.random.default_rng(args["seed"])  # training batches
        self._gen = torch.Generator().manual_seed(args["seed"])  # sampled actions
        low, high = (np.broadcast_to(np.asarray(b, np.float32), space.shape).copy() for b in (space.low, space.high))
        self._bounds = None  # continuous actions: tanh scaled into [low, high] when bounded, else unbounded
        if not space.discrete and np.isfinite(low).all() and np.isfinite(high).all():
            self._bounds = (torch.as_tensor(low, device=self.device), torch.as_tensor(high, device=self.device))

    def _inputs(self, episode: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _act_fn(self, deterministic: bool) -> ActFn:
        raise NotImplementedError

    def _tensors(self, inputs: dict[str, np.ndarray]) -> dict[str, Tensor]:
        for key, space in self.spaces.items():
            got = np.shape(inputs[key])
            assert got[1:] == tuple(space.shape), f"'{key}' has shape {got}, expected (N, *{tuple(space.shape)})"
        return {k: torch.as_tensor(np.asarray(inputs[k]), device=self.device) for k in self.spaces}

    def _mean(self, raw: Tensor) -> Tensor:
        mean = raw.reshape(len(raw), *self.act_space.shape)  # (B, *shape)
        if self._bounds is None:
            return mean
        low, high = self._bounds
        return low + (torch.tanh(mean) + 1) / 2 * (high - low)

    def _pairs(
        self,
        dataset: Dataset,
        episodes: list[int] | None = None,
        discount: float | None = None,
        min_reward: float = 0.0,
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """``(inputs[t], action[t + 1])`` for ``t < T - 1`` of every labelled episode (of ``episodes``, if
        given), loaded once, and with a ``discount`` the discounted return the recording got after each ``t``
        (rewards below ``min_reward`` in magnitude count as 0; NaN in episodes without rewards; NaN everywhere
        without a ``discount``)."""
        where = f"dataset {dataset.folder}"
        _check_spaces({**self.obs_space, "action": self.act_space}, {**dataset.obs_space, **dataset.act_space}, where)
        inputs: list[dict[str, np.ndarray]] = []
        targets: list[np.ndarray] = []
        returns: list[np.ndarray] = []
        for i in range(len(dataset)) if episodes is None else episodes:
            info = dataset.episode_info(i)
            if info["has_actions"]:
                episode = dataset.episode(i)
                inputs.append({k: v[:-1] for k, v in self._inputs(episode).items()})
                targets.append(episode["action"][1:])
                if discount is None or not info["has_rewards"]:
                    returns.append(np.full(len(targets[-1]), np.nan, np.float32))
                else:
                    returns.append(return_to_go(episode["reward"], discount, min_reward)[:-1])
        if not inputs:
            raise DatasetError(f"Dataset {dataset.folder} has no episode with actions (has_actions); nothing to clone.")
        stacked = {k: np.concatenate([x[k] for x in inputs]) for k in self.spaces}
        return stacked, np.concatenate(targets), np.concatenate(returns)

    def fit(
        self,
        dataset: Dataset,
        steps: int = 2000,
        batch_size: int = 256,
        lr: float = 3e-4,
        log_every: int = 0,
        episodes: list[int] | None = None,
        return_temp: float = 0.0,
        return_discount: float = 0.9,
        weight_max: float = 20.0,
        return_min_reward: float = 0.0,
    ) -> dict[str, float]:
        """Train with Adam on ``(input[t], action[t + 1])`` of the dataset's labelled episodes.

        Args:
            dataset: a :class:`reverie.data.Dataset`; episodes without actions (``has_actions``) are skipped.
            steps: gradient steps, each on ``batch_size`` pairs drawn uniformly with replacement.
            lr: Adam learning rate.
            log_every: log the metrics on ``reverie.baselines`` every this many steps (0: never).
            episodes: train on these episode indices only (default: all).
            return_temp: return-weighted BC (0: off): pairs are drawn with probability proportional to
                ``exp((G_t - mean G) / return_temp)``, capped at ``weight_max``, where ``G_t`` is the
                discounted return (``return_discount``) the recording got after step ``t``; pairs of
                episodes without rewards weigh 1. The same weighting as the agent's
                ``offline.bc_return_temp``, by sampling instead of by loss weights.
            return_min_reward: rewards smaller in magnitude count as 0 in ``G_t`` (Crafter: 0.5 keeps the
                achievements and drops the health changes); ``offline.bc_return_min_reward``.

        Returns:
            ``bc/loss`` (cross-entropy, or MSE for Box actions) and ``bc/accuracy`` (discrete), averaged over the
            last 100 steps, and ``bc/pairs``.

        Raises:
            ValueError: no labelled episode, dataset spaces that differ from the policy's (the keys are named), or
                ``return_temp < 0``, ``weight_max < 1``, ``return_discount`` outside [0, 1) or
                ``return_min_reward < 0``.
        """
        if return_temp < 0 or weight_max < 1 or not 0 <= return_discount < 1 or return_min_reward < 0:
            raise ValueError(
                "return_temp must be >= 0, weight_max >= 1, return_discount in [0, 1) and return_min_reward >= 0; "
                f"got {return_temp}, {weight_max}, {return_discount} and {return_min_reward}."
            )
        discount = return_discount if return_temp > 0 else None
        inputs, targets, returns = self._pairs(dataset, episodes, discount, return_min_reward)
        probs = None
        if return_temp > 0:
            known = ~np.isnan(returns)
            ret, mask = torch.as_tensor(np.nan_to_num(returns), dtype=torch.float64), torch.as_tensor(known).double()
            weight = rwr_weights(ret, mask, return_temp, weight_max).numpy()
            probs = weight / weight.sum()
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        recent: deque[tuple[float, float]] = deque(maxlen=100)
        for step in range(1, steps + 1):
            if probs is None:
                idx = self._rng.integers(0, len(targets), batch_size)
            else:
                idx = self._rng.choice(len(targets), batch_size, p=probs)
            out = self.net(self._tensors({k: v[idx] for k, v in inputs.items()}))  # (B, out)
            target = torch.as_tensor(targets[idx], device=self.device)
            if self.act_space.discrete:
                loss = F.cross_entropy(out, target.long())
                accuracy = (out.argmax(-1) == target).float().mean().item()
            else:
                loss, accuracy = F.mse_loss(self._mean(out), target.float()), math.nan
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            recent.append((loss.item(), accuracy))
            if log_every and step % log_every == 0:
                log.info("bc step %d/%d: loss %.4f, accuracy %.3f", step, steps, *np.mean(recent, 0))
        loss_mean, acc_mean = np.mean(recent, 0) if recent else (math.nan, math.nan)
        metrics = {"bc/loss": float(loss_mean), "bc/pairs": float(len(targets))}
        return metrics | ({"bc/accuracy": float(acc_mean)} if self.act_space.discrete else {})

    @torch.no_grad()
    def _act(self, inputs: dict[str, np.ndarray], deterministic: bool) -> np.ndarray:
        out = self.net(self._tensors(inputs))  # (N, out)
        if not self.act_space.discrete:  # MSE fits a mean only: continuous actions are always the mean
            return self._mean(out).cpu().numpy().astype(self.act_space.dtype)
        if deterministic:
            return out.argmax(-1).cpu().numpy().astype(np.int64)
        return torch.multinomial(out.softmax(-1).cpu(), 1, generator=self._gen)[:, 0].numpy().astype(np.int64)

    def evaluate(
        self, env_id: str, episodes: int = 10, seed: int = 0, time_limit: int = 0, deterministic: bool = False
    ) -> dict[str, float]:
        """Run one episode in each of ``episodes`` serial envs of ``env_id`` (env ``i`` seeded ``seed + i``).

        Args:
            time_limit: truncate episodes after this many steps (0: the env's own limit).
            deterministic: take the most likely discrete action instead of sampling.

        Returns:
            ``eval/return``, ``eval/return_std``, ``eval/length`` and the game's summary, e.g. Crafter's
            ``eval/score`` and ``eval/success/<achievement>`` (see :meth:`reverie.evaluation.EpisodeResults.metrics`).

        Raises:
            ValueError: the env's spaces differ from the policy's.
        """
        envs = make_batch_env(EnvConfig(id=env_id, num_envs=episodes, parallel=False, time_limit=time_limit), seed)
        try:
            spaces = {**envs.obs_space, **envs.act_space}
            _check_spaces({**self.obs_space, "action": self.act_space}, spaces, f"env {env_id}")
            results = run_episodes(envs, self._act_fn(deterministic), episodes)
        finally:
            envs.close()
        return results.metrics("eval", env_id)


class BCPolicy(_Cloner):
    """Behaviour cloning from raw observations: ``fit(dataset)``, ``act(obs)``, ``evaluate(env_id)``, ``save``.

    Args:
        obs_space: the dataset's observation spaces (``Dataset.obs_space``); only the model keys are read.
        act_space: the action :class:`Space` (or ``{"action": Space}``): one discrete choice or a Box.
        units: width of the MLP.
        layers: hidden layers of the MLP (Linear -> RMSNorm -> SiLU).
        cnn_depth: channels of the first conv layer of each image encoder.
        seed: seeds the weights, the training batches and the sampled actions.
        device: torch device.

    Example:
        >>> policy = BCPolicy(ds.obs_space, ds.act_space["action"], units=64)   # doctest: +SKIP
        >>> policy.fit(ds, steps=1000); policy.act({"vector": vectors})         # doctest: +SKIP
    """

    def __init__(
        self,
        obs_space: dict[str, Space],
        act_space: Space | dict[str, Space],
        units: int = 256,
        layers: int = 2,
        cnn_depth: int = 16,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        spaces = {k: obs_space[k] for k in model_keys(obs_space)}
        args = {"units": units, "layers": layers, "cnn_depth": cnn_depth, "seed": seed}
        super().__init__(spaces, spaces, act_space, args, device)

    def _inputs(self, episode: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: episode[k] for k in self.spaces}

    def _act_fn(self, deterministic: bool) -> ActFn:
        return lambda obs, first: self.act(obs, deterministic)

    def act(self, obs: dict[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        """Env actions ``(N, ...)`` for batched observations ``{key: (N, *shape)}``: int64 choices sampled from
        the softmax (the argmax if ``deterministic``), or the mean of a Box action."""
        return self._act(obs, deterministic)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the folder ``path`` with ``meta.json`` (arguments, spaces) and ``weights.pt``, atomically."""
        final = Path(path)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        meta = {"format": _FORMAT, "kind": "BCPolicy", "reverie": __version__, "args": self.args}
        meta |= {"obs_space": spaces_to_json(self.obs_space), "act_space": space_to_json(self.act_space)}
        write_text(tmp / "meta.json", json.dumps(meta, indent=2))
        write_torch(tmp / "weights.pt", self.net.state_dict())
        return replace_folder(tmp, final)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> BCPolicy:
        """Rebuild a policy written by :meth:`save`.

        Raises:
            CheckpointError: a missing folder, or a missing, corrupt or foreign ``meta.json`` / ``weights.pt``.
        """
        folder = Path(path)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("kind") != "BCPolicy" or meta.get("format") != _FORMAT:
                raise ValueError(f"kind {meta.get('kind')!r}, format {meta.get('format')!r}")
            obs_space, act_space = spaces_from_json(meta["obs_space"]), space_from_json(meta["act_space"])
            policy = cls(obs_space, act_space, **meta["args"], device=device)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(
                f"No BC policy at '{folder}': meta.json is missing or corrupt ({type(err).__name__}: {err}). "
                "Point at a folder written by BCPolicy.save."
            ) from None
        try:
            policy.net.load_state_dict(torch.load(folder / "weights.pt", map_location=device, weights_only=True))
        except Exception as err:  # torch raises several types for truncated or foreign files
            reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
            raise CheckpointError(f"BC weights '{folder / 'weights.pt'}' are missing or corrupt ({reason}).") from None
        return policy


class FeatureBC(_Cloner):
    """Behaviour cloning from world-model features: ``featurizer.encode`` each labelled episode, then an MLP.

    No ``save``: it retrains in seconds from the featurizer and the dataset.

    Args:
        featurizer: a :class:`Featurizer` (a trained Dreamer's, say); it is not trained here.
        act_space: the action :class:`Space` (or ``{"action": Space}``).
        units, layers, seed, device: as for :class:`BCPolicy`.

    Example:
        >>> bc = FeatureBC(featurizer, ds.act_space)                       # doctest: +SKIP
        >>> bc.fit(ds, steps=1000); bc.evaluate("crafter", episodes=10)    # doctest: +SKIP
    """

    def __init__(
        self,
        featurizer: Featurizer,
        act_space: Space | dict[str, Space],
        units: int = 256,
        layers: int = 2,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.featurizer = featurizer
        spaces = {"feat": Space(np.float32, (featurizer.feat_dim,))}
        super().__init__(spaces, {}, act_space, {"units": units, "layers": layers, "seed": seed}, device)

    def _inputs(self, episode: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feat = np.asarray(self.featurizer.encode(episode), np.float32)  # (T, F)
        want = (len(episode["is_first"]), self.featurizer.feat_dim)
        assert feat.shape == want, f"featurizer.encode gave features {feat.shape}, expected {want}"
        return {"feat": feat}

    def _act_fn(self, deterministic: bool) -> ActFn:
        state: Any = None
        action: np.ndarray | None = None

        def act_fn(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
            nonlocal state, action  # the featurizer resets an env's state itself at obs["is_first"]
            feat, state = self.featurizer.encode_step(obs, state, action)
            action = self.act(feat, deterministic)
            return action

        return act_fn

    def act(self, feats: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Env actions ``(N, ...)`` for features ``(N, F)``; as :meth:`BCPolicy.act`."""
        return self._act({"feat": feats}, deterministic)


class InverseDynamics(_Cloner):
    """Which action led from observation ``t`` to ``t + 1``, learned on a dataset's labelled episodes and used
    to label the others (:meth:`label`): the inverse-dynamics labelling of VPT, on raw observations.

    The net is :class:`BCPolicy`'s on both observations of a step: image keys stacked along the channels,
    vector keys as ``[o_t, o_t+1 - o_t]`` (the change is what an action shows), each entry of the change
    divided by the largest change it shows in the training episodes, so that a count stored in small
    steps (Crafter's inventory, in ninths) speaks as loudly as a one-hot cell that flips.

    Args:
        obs_space, act_space, units, layers, cnn_depth, seed, device: as for :class:`BCPolicy`.

    Example:
        >>> idm = InverseDynamics(ds.obs_space, ds.act_space)                         # doctest: +SKIP
        >>> labelled, report = idm.label(ds, "data/crafter-idm", steps=3000)           # doctest: +SKIP
        >>> report["idm/held_out_accuracy"]                                           # doctest: +SKIP
        0.88
    """

    def __init__(
        self,
        obs_space: dict[str, Space],
        act_space: Space | dict[str, Space],
        units: int = 256,
        layers: int = 2,
        cnn_depth: int = 16,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        seen = {k: obs_space[k] for k in model_keys(obs_space)}
        spaces = {}
        for key, space in seen.items():
            if space.is_image:
                spaces[key] = Space(space.dtype, (*space.shape[:-1], 2 * space.shape[-1]), 0, 255)
            else:
                spaces[key] = Space(np.float32, (2 * math.prod(space.shape),))
        args = {"units": units, "layers": layers, "cnn_depth": cnn_depth, "seed": seed}
        super().__init__(spaces, seen, act_space, args, device)
        self.change_scale = {k: np.ones(math.prod(s.shape), np.float32) for k, s in seen.items() if not s.is_image}
        """Per vector key, what each entry of ``o_t+1 - o_t`` is multiplied by (set by :meth:`fit`)."""

    def _pairs(
        self,
        dataset: Dataset,
        episodes: list[int] | None = None,
        discount: float | None = None,
        min_reward: float = 0.0,
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """The training pairs, with :attr:`change_scale` set from the changes they show (and applied to them)."""
        self.change_scale = {k: np.ones_like(v) for k, v in self.change_scale.items()}
        inputs, targets, returns = super()._pairs(dataset, episodes, discount, min_reward)
        for key, scale in self.change_scale.items():
            change = inputs[key][:, len(scale) :]  # a view: scaled in place
            largest = np.abs(change).max(0, initial=0.0)
            scale[:] = np.where(largest > 0, 1.0 / np.maximum(largest, 1e-8), 1.0)
            change *= scale
        return inputs, targets, returns

    def _inputs(self, episode: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Entry ``t`` holds observations ``t`` and ``t + 1`` (the last entry repeats the last observation)."""
        out = {}
        for key in self.spaces:
            now = episode[key]
            nxt = np.concatenate([now[1:], now[-1:]])
            if self.obs_space[key].is_image:
                out[key] = np.concatenate([now, nxt], -1)
            else:
                now, nxt = (x.reshape(len(x), -1).astype(np.float32) for x in (now, nxt))
                out[key] = np.concatenate([now, (nxt - now) * self.change_scale[key]], -1)
        return out

    def evaluate(
        self, env_id: str, episodes: int = 10, seed: int = 0, time_limit: int = 0, deterministic: bool = False
    ) -> dict[str, float]:
        """Not available: an inverse-dynamics model labels recorded steps; it is not a policy."""
        raise TypeError("An inverse-dynamics model labels recorded steps; it is not a policy to evaluate in an env.")

    def predict(self, episode: dict[str, np.ndarray]) -> np.ndarray:
        """The likeliest action behind each step of a recorded episode ``{key: (T, *shape)}``: ``(T, ...)`` in the
        dataset's layout (``action[t]`` led to step ``t``; ``action[0]`` is zero, as recorded)."""
        inputs = {k: v[:-1] for k, v in self._inputs(episode).items()}
        steps, block = len(episode["is_first"]) - 1, 4096  # blocks bound the memory of long episodes
        guesses = [self._act({k: v[i : i + block] for k, v in inputs.items()}, True) for i in range(0, steps, block)]
        first = np.zeros((1, *self.act_space.shape), self.act_space.dtype)
        return np.concatenate([first, *guesses]).astype(self.act_space.dtype)

    def accuracy(self, dataset: Dataset, episodes: list[int]) -> float:
        """Share of the recorded actions of ``episodes`` (labelled ones) that :meth:`predict` gets right
        (discrete actions; a Box action counts as right within 0.1 in every dimension)."""
        hits, total = 0, 0
        for i in episodes:
            episode = dataset.episode(i)
            guess, truth = self.predict(episode)[1:], episode["action"][1:]
            right = (
                guess == truth
                if self.act_space.discrete
                else (np.abs(guess - truth) <= 0.1).reshape(len(truth), -1).all(-1)
            )
            hits, total = hits + int(right.sum()), total + len(truth)
        return hits / max(total, 1)

    def label(
        self,
        dataset: str | os.PathLike[str] | Dataset,
        dst: str | os.PathLike[str],
        steps: int = 5000,
        held_out: float = 0.2,
        seed: int = 0,
    ) -> tuple[Dataset, dict[str, float]]:
        """Fit on the labelled episodes, then write a copy of ``dataset`` to ``dst`` where every episode has actions.

        A share ``held_out`` of the labelled episodes (at least one, when there are two or more) is kept out of
        training to measure the model's accuracy; labelled episodes keep their recorded actions, the others get
        :meth:`predict`'s. ``dst``'s ``creation`` names the inferred episodes and the accuracy.

        Returns:
            the new dataset and ``idm/held_out_accuracy``, ``idm/train_accuracy``, ``idm/inferred_episodes``.

        Raises:
            ValueError: the dataset has no labelled episode.
        """
        from reverie.data.writer import DatasetWriter

        source = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        labelled = [i for i in range(len(source)) if source.episode_info(i)["has_actions"]]
        if not labelled:
            raise DatasetError(
                f"Dataset {source.folder} has no episode with actions; an inverse-dynamics model needs some labelled "
                "episodes to learn from (record or convert with --action-frac > 0)."
            )
        inferred = [i for i in range(len(source)) if not source.episode_info(i)["has_actions"]]
        order = np.random.default_rng(seed).permutation(labelled).tolist()
        n_test = min(max(1, round(held_out * len(order))), len(order) - 1) if held_out > 0 and len(order) > 1 else 0
        test, train = sorted(order[:n_test]), sorted(order[n_test:])
        creation = {"source": "inverse_dynamics", "from": str(source.folder), "inferred_episodes": inferred}
        # Opened first, so that a folder already in use fails before minutes of training.
        with DatasetWriter(dst, source.env_id, source.obs_space, source.act_space, source.chunk, creation) as writer:
            metrics = self.fit(source, steps=steps, episodes=train)
            report = {
                "idm/train_accuracy": metrics.get("bc/accuracy", math.nan),
                "idm/held_out_accuracy": self.accuracy(source, test) if test else math.nan,
            }
            writer.creation |= {k.removeprefix("idm/"): None if math.isnan(v) else v for k, v in report.items()}
            writer.creation |= {"held_out_episodes": test, "original": source.info["creation"]}
            for index, episode in enumerate(source.episodes(masks=False)):
                info = source.episode_info(index)
                if not info["has_actions"]:
                    episode["action"] = self.predict(episode).astype(episode["action"].dtype)
                writer.add_episode(episode, True, bool(info["has_rewards"]))
        report["idm/inferred_episodes"] = float(len(inferred))
        log.info(
            "inverse dynamics: held-out accuracy %.3f, %d episodes labelled",
            report["idm/held_out_accuracy"],
            len(inferred),
        )
        return Dataset(dst), report
