"""``DreamEnv``: a Gymnasium env whose steps are a trained world model's predictions.

``reset()`` plays ``context`` frames of the real env (``make_env(config.env)``) with random actions and
filters them into the model's latent state (:meth:`RSSM.obs_step`). Each ``step(action)`` then rolls
the prior one step (:meth:`RSSM.imagine_step`) and decodes what the model expects to see: images as
uint8 ``(H, W, C)``, vectors as ``symexp`` of the decoder's symlog prediction. The reward is the
reward head's mean, and the episode terminates when the continue head says ``cont < 0.5``.

Latent samples are drawn from a torch RNG seeded from the env's ``np_random``, so that
``reset(seed=s)`` followed by the same actions reproduces the same dream without touching the
global torch RNG.

Example:
    >>> env = DreamEnv("runs/crafter", context=5, seed=0)          # doctest: +SKIP
    >>> obs, info = env.reset()                                     # doctest: +SKIP
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())  # doctest: +SKIP
    >>> info["reward_pred"], info["cont_pred"], info["uncertainty"]  # doctest: +SKIP
    (0.02, 0.99, None)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from reverie.envs import Env, EnvError, Space, make_env
from reverie.functional import symexp
from reverie.logger import to_uint8
from reverie.rssm import State

if TYPE_CHECKING:
    from reverie.agent import Dreamer

__all__ = ["DreamEnv", "gym_space"]

MAX_CONTEXT_RESTARTS = 10
"""Real episodes that may end inside the context before :meth:`DreamEnv.reset` gives up."""


def gym_space(space: Space) -> spaces.Space:
    """A Reverie :class:`~reverie.envs.Space` as a Gymnasium space (Discrete or Box).

    Example:
        >>> gym_space(Space(np.int64, (), 0, 3, discrete=True))
        Discrete(3)
    """
    if space.discrete:
        return spaces.Discrete(space.n)
    dtype = np.dtype(space.dtype)
    low = np.broadcast_to(np.asarray(space.low, dtype), space.shape)
    high = np.broadcast_to(np.asarray(space.high, dtype), space.shape)
    return spaces.Box(low.copy(), high.copy(), tuple(space.shape), dtype)


class DreamEnv(gymnasium.Env):
    """Play inside a checkpoint's world model through the Gymnasium API.

    Args:
        checkpoint: a checkpoint or run folder (see :meth:`Dreamer.load`), or a loaded :class:`Dreamer`
            (several envs may share one; each keeps its own latent state).
        context: real frames filtered into the latent state at each reset (at least 1).
        seed: seed of the first reset (and of the real env); ``reset(seed=...)`` overrides it.
        real_env: build the real env from the checkpoint's ``config.env`` to seed each dream. Without
            it each dream starts from the model's prior at an episode start.
        max_steps: dreamed steps before ``truncated`` is set.
        render_mode: ``"rgb_array"`` (image models only) returns the first image key from :meth:`render`.

    Observations mirror the checkpoint's model inputs: a ``Box`` for one key, a ``Dict`` for several.
    ``info`` holds ``reward_pred`` and ``cont_pred`` (the heads' outputs), ``uncertainty`` (the world
    model's ``uncertainty(feat)`` when it has one, else None) and ``step``.

    Example:
        >>> from gymnasium.utils.env_checker import check_env    # doctest: +SKIP
        >>> check_env(DreamEnv("runs/cartpole-pixels", seed=0))  # doctest: +SKIP
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 16}

    def __init__(
        self,
        checkpoint: str | Dreamer,
        context: int = 5,
        seed: int | None = None,
        real_env: bool = True,
        max_steps: int = 1000,
        render_mode: str | None = None,
    ) -> None:
        from reverie.agent import Dreamer

        if context < 1:
            raise ValueError(f"context must be at least 1 real frame, got {context}.")
        self.agent = checkpoint if isinstance(checkpoint, Dreamer) else Dreamer.load(checkpoint)
        self.learner = self.agent.learner
        self.wm = self.learner.wm
        self.context, self.max_steps, self._seed = context, max_steps, seed
        self.model_space = dict(self.learner.obs_space)
        self.keys = list(self.model_space)
        self.images = set(self.wm.decoder.images)
        self._boxes = {k: gym_space(s) for k, s in self.model_space.items()}
        self.observation_space = self._boxes[self.keys[0]] if len(self.keys) == 1 else spaces.Dict(self._boxes)
        self.action_space = gym_space(self.learner.act_space)
        if render_mode is not None and (render_mode not in self.metadata["render_modes"] or not self.images):
            raise ValueError(f"render_mode {render_mode!r} needs an image model; use None or 'rgb_array'.")
        self.render_mode = render_mode
        self.real_env: Env | None = make_env(self.agent.config.env, self._env_seed(seed)) if real_env else None
        self.real_obs: dict[str, Any] | None = None
        """The real env's latest observation dict (Reverie contract), or None without a real env."""
        self.real_done = True
        self.state: State | None = None
        """The current latent state ``{"deter": (1, D), "stoch": (1, S, K)}``; None before reset."""
        self.steps = 0
        self._last_obs: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- the Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Seed the latent state from ``context`` real frames (or the prior) and return the model's view."""
        first = self._np_random is None
        super().reset(seed=seed if seed is not None or not first else self._seed)
        if seed is not None and self.real_env is not None:  # a seeded reset replays the real env too
            self.real_env.close()
            self.real_env = make_env(self.agent.config.env, self._env_seed(seed))
        self.steps = 0
        with torch.no_grad(), self._torch_rng(), self.learner.autocast():
            self.state = self._filter_context() if self.real_env is not None else self._prior_start()
            obs, info = self._readout()
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Dream one step: prior transition with ``action``, then decode observation, reward and continue."""
        if self.state is None:
            raise gymnasium.error.ResetNeeded("Call reset() before step() on a DreamEnv.")
        vec = self.action_vector(action)  # (1, A)
        with torch.no_grad(), self._torch_rng(), self.learner.autocast():
            self.state = self.wm.rssm.imagine_step(self.state, vec)
            self.steps += 1
            obs, info = self._readout()
        terminated = bool(info["cont_pred"] < 0.5)
        truncated = self.steps >= self.max_steps and not terminated
        return obs, info["reward_pred"], terminated, truncated, info

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """The latest dreamed frame of the first image key (``render_mode="rgb_array"``), else None."""
        if self.render_mode != "rgb_array" or not self._last_obs:
            return None
        key = next(k for k in self.keys if k in self.images)
        return self._last_obs[key].copy()

    def close(self) -> None:
        if self.real_env is not None:
            self.real_env.close()

    # ----------------------------------------------------------------- studio helpers
    def agent_action(self, deterministic: bool = False) -> Any:
        """The checkpoint's policy acting on the current dream state; an action for :meth:`step`."""
        if self.state is None:
            raise gymnasium.error.ResetNeeded("Call reset() before agent_action() on a DreamEnv.")
        with torch.no_grad(), self._torch_rng(), self.learner.autocast():
            policy = self.learner.ac.actor(self.wm.rssm.feat(self.state))
            vec = policy.mode() if deterministic else policy.sample()
        action = self.learner.decode_action(vec.float())[0]
        return int(action) if self.learner.act_space.discrete else action

    def step_real(self, action: Any) -> dict[str, Any] | None:
        """Step the real env with ``action`` (to show it beside the dream); None once its episode is over.

        After a reset the real env stands on the last context frame, the same moment the dream starts from.
        """
        if self.real_env is None or self.real_done:
            return None
        self.real_obs = self.real_env.step({"action": action, "reset": False})
        self.real_done = bool(self.real_obs["is_last"])
        return self.real_obs

    def action_vector(self, action: Any) -> torch.Tensor:
        """An action of ``action_space`` as the model's (1, A) action vector; ValueError outside the space."""
        space = self.action_space
        if isinstance(space, spaces.Box):
            action = np.asarray(action, space.dtype)
        if not space.contains(action):
            raise ValueError(f"Action {action!r} is not in the action space {space}.")
        return self.learner.encode_action(torch.as_tensor(np.asarray(action), device=self.learner.device)[None])

    def encode_obs(self, obs: Any) -> dict[str, np.ndarray]:
        """An observation as returned by this env -> ``{key: array}`` (also for single-key spaces)."""
        return dict(obs) if isinstance(obs, dict) else {self.keys[0]: obs}

    # ----------------------------------------------------------------- internals
    def _env_seed(self, seed: int | None) -> int:
        return int(seed) if seed is not None else int(np.random.default_rng().integers(2**31 - 1))

    @contextlib.contextmanager
    def _torch_rng(self) -> Iterator[None]:
        """Run model sampling on a torch RNG seeded from ``np_random``; the global RNG is left as it was."""
        device = self.learner.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(self.np_random.integers(2**63 - 1)))
            yield

    def _noop(self) -> np.ndarray:
        space = self.learner.act_space
        return np.zeros(space.shape, space.dtype)

    def _filter_context(self) -> State:
        """Filter ``context`` real frames of one episode (random actions) into the posterior state."""
        assert self.real_env is not None
        rssm, space = self.wm.rssm, self.learner.act_space
        restarts, state = 0, rssm.initial(1, self.learner.device)
        action = torch.zeros(1, self.learner.action_dim, device=self.learner.device)
        obs, seen = self.real_env.step({"action": self._noop(), "reset": True}), 0
        while True:
            data = self.learner.to_tensors({k: np.array(obs[k])[None] for k in self.keys})  # (1, ...), copied
            is_first = torch.tensor([bool(obs["is_first"])], device=self.learner.device)
            state, _, _ = rssm.obs_step(state, action, self.wm.encoder(data), is_first)
            seen += 1
            self.real_obs, self.real_done = obs, bool(obs["is_last"])
            if seen >= self.context:
                return state
            if self.real_done:  # the real episode ended inside the context: start another one
                restarts += 1
                if restarts > MAX_CONTEXT_RESTARTS:
                    raise EnvError(
                        f"The real env ended {restarts} episodes within {self.context} random steps; "
                        "use a smaller context."
                    )
                obs, seen = self.real_env.step({"action": self._noop(), "reset": True}), 0
                continue
            act = space.sample(self.np_random)
            action = self.learner.encode_action(torch.as_tensor(act, device=self.learner.device)[None])
            obs = self.real_env.step({"action": act, "reset": False})

    def _prior_start(self) -> State:
        """Without a real env: the prior's first state of an episode (initial state, no action)."""
        rssm = self.wm.rssm
        start = rssm.initial(1, self.learner.device)
        return rssm.imagine_step(start, torch.zeros(1, self.learner.action_dim, device=self.learner.device))

    def _readout(self) -> tuple[Any, dict[str, Any]]:
        """Decode the current state into an observation and the heads' predictions."""
        assert self.state is not None
        feat = self.wm.rssm.feat(self.state)  # (1, F)
        preds = self.wm.decoder(feat)
        obs: dict[str, np.ndarray] = {}
        for key in self.keys:
            pred = preds[key][0].float()
            if key in self.images:
                obs[key] = to_uint8(pred.cpu().numpy())  # (H, W, C)
            else:  # vectors are predicted in symlog space; clip into the declared bounds
                box = self._boxes[key]
                assert isinstance(box, spaces.Box)
                obs[key] = np.clip(symexp(pred).cpu().numpy().astype(box.dtype), box.low, box.high)
        self._last_obs = obs
        uncertainty = getattr(self.wm, "uncertainty", None)
        info = {
            "reward_pred": float(self.wm.reward(feat)[0]),
            "cont_pred": float(self.wm.cont(feat)[0]),
            "uncertainty": float(uncertainty(feat)[0]) if callable(uncertainty) else None,
            "step": self.steps,
        }
        out = {k: v.copy() for k, v in obs.items()}  # the caller may keep or change what it gets
        return (out if len(self.keys) > 1 else out[self.keys[0]]), info
