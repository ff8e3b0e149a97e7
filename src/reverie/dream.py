"""``DreamEnv``: a Gymnasium env whose steps are a trained world model's predictions.

``reset()`` filters ``context`` frames into the model's latent state: either frames of the real env
(``make_env(config.env)``) played with random actions, or ``context`` consecutive recorded steps of a dataset
(:class:`reverie.data.Dataset`) with their recorded actions. Each ``step(action)`` is the world model's
prediction of one transition (:meth:`reverie.world_model.WorldModel.step`): the observation it pictures (images
as uint8 ``(H, W, C)``, vectors as the codec draws them, clipped into the declared bounds: what a policy that
reads observations sees in imagination), the reward head's mean, and termination when the continue head says
``cont < 0.5``.

Latent samples (and the dataset episode and start, when they are not given) are drawn from RNGs seeded
from the env's ``np_random``, so that ``reset(seed=s)`` followed by the same actions reproduces the same
dream without touching the global torch RNG.

Example:
    >>> env = DreamEnv("runs/crafter", context=5, seed=0)          # doctest: +SKIP
    >>> obs, info = env.reset()                                     # doctest: +SKIP
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())  # doctest: +SKIP
    >>> info["reward_pred"], info["cont_pred"], info["uncertainty"]  # doctest: +SKIP
    (0.02, 0.99, None)
    >>> env = DreamEnv("runs/crafter", dataset="data/crafter-random", seed=0)  # doctest: +SKIP
    >>> obs, info = env.reset(options={"episode": 3, "start": 100})             # doctest: +SKIP
    >>> info["start"]                                                           # doctest: +SKIP
    {'source': 'dataset', 'episode': 3, 'start': 100, 'context': 5}
"""

from __future__ import annotations

import contextlib
import operator
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from reverie.config import EnvConfig
from reverie.data.dataset import Dataset
from reverie.envs import Env, EnvError, Space, make_env
from reverie.rssm import State
from reverie.world_model import Transition

if TYPE_CHECKING:
    from reverie.agent import Dreamer

__all__ = ["DreamEnv", "gym_space"]

MAX_CONTEXT_RESTARTS = 10
"""Real episodes that may end inside the context before :meth:`DreamEnv.reset` gives up."""

START_OPTIONS = ("episode", "start")
"""The ``reset(options=...)`` keys of a dataset start: the episode, and its first step filtered into the state."""


def time_limit(env: EnvConfig, default: int = 1000) -> int:
    """The real env's episode limit in agent steps: ``env.time_limit``, else the Gymnasium registry's for ``env.id``
    (divided by ``env.action_repeat``), else ``default``.

    Example:
        >>> time_limit(EnvConfig(id="CartPole-v1")), time_limit(EnvConfig(id="CartPole-v1", time_limit=50))
        (500, 50)
    """
    if env.time_limit > 0:
        return env.time_limit
    spec = gymnasium.registry.get(env.id)
    if spec is None or not spec.max_episode_steps:
        return default
    return max(1, int(spec.max_episode_steps) // max(1, env.action_repeat))  # the registry counts env steps


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
        context: frames (real or recorded) filtered into the latent state at each reset (at least 1).
        seed: seed of the first reset (and of the real env); ``reset(seed=...)`` overrides it.
        real_env: build the real env from the checkpoint's ``config.env``: it seeds each dream (unless a
            ``dataset`` does) and can be stepped beside it (:meth:`step_real`). Without it and without a
            dataset each dream starts from the model's prior at an episode start.
        max_steps: dreamed steps before ``truncated`` is set; default the real env's time limit (``env.time_limit``,
            else the Gymnasium registry's for the env id), else 1000.
        render_mode: ``"rgb_array"`` (image models only) returns the first image key from :meth:`render`.
        dataset: a dataset folder or :class:`~reverie.data.Dataset` of the checkpoint's env to seed each
            dream from instead of the real env: ``reset()`` picks an episode and a start (seeded by
            ``np_random``; ``options={"episode": i, "start": t}`` picks them exactly) and filters the
            recorded steps ``t .. t + context - 1`` with their recorded actions, the first from the initial
            state as in training. Episodes without action labels use the model's learned no-action input.
            With ``real_env`` on as well, the real env still runs beside the dream from its own reset, so
            the two start from different states (a recorded moment cannot be restored into the game).
        end_unknown: end a dream (``terminated``) at a step the model does not know (``info["unknown"]``, see
            below), so a learner trained in the dream cannot live on where the model invents the world. Default:
            on when the checkpoint has a latent ensemble (the only source of ``unknown``), off otherwise.

    Observations mirror the checkpoint's model inputs: a ``Box`` for one key, a ``Dict`` for several.
    ``info`` holds ``reward_pred`` and ``cont_pred`` (the heads' outputs), ``step``, and with a latent
    ensemble (``model.ensemble`` > 1) the model's doubt about the step just dreamt: ``uncertainty`` (the
    members' disagreement about the next latent), ``unknown`` (it exceeds the calibrated threshold: the
    model "does not know") and ``reward_uncertainty`` (spread of the reward the members' next latents
    give); these are None without an ensemble and after a reset. The ``info`` of ``reset`` also holds
    ``start`` (see :attr:`start_info`).

    Raises:
        ValueError: ``dataset`` was recorded on another env id, or its observation keys, shapes or
            action space differ from the model's (the message names both); or it has no episode of at
            least ``context`` steps.

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
        max_steps: int | None = None,
        render_mode: str | None = None,
        dataset: str | os.PathLike[str] | Dataset | None = None,
        end_unknown: bool | None = None,
    ) -> None:
        from reverie.agent import Dreamer

        if context < 1:
            raise ValueError(f"context must be at least 1 frame, got {context}.")
        self.agent = checkpoint if isinstance(checkpoint, Dreamer) else Dreamer.load(checkpoint)
        self.learner = self.agent.learner
        self.wm = self.learner.wm
        self.context, self._seed = context, seed
        self.max_steps = max_steps if max_steps is not None else time_limit(self.agent.config.env)
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 dreamed step, got {self.max_steps}.")
        self.end_unknown = self.wm.ensemble is not None if end_unknown is None else bool(end_unknown)
        """Whether a step the model does not know ends the dream (``terminated``)."""
        self.model_space = dict(self.learner.obs_space)
        self.keys = list(self.model_space)
        self.images = set(self.wm.decoder.images)
        self._boxes = {k: gym_space(s) for k, s in self.model_space.items()}
        self.observation_space = self._boxes[self.keys[0]] if len(self.keys) == 1 else spaces.Dict(self._boxes)
        self.action_space = gym_space(self.learner.act_space)
        if render_mode is not None and (render_mode not in self.metadata["render_modes"] or not self.images):
            raise ValueError(f"render_mode {render_mode!r} needs an image model; use None or 'rgb_array'.")
        self.render_mode = render_mode
        self.dataset: Dataset | None = None
        """The dataset that seeds each dream, or None (real env or prior)."""
        self._lengths: list[int] = []
        if dataset is not None:
            self.dataset = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
            self._lengths = self._check_dataset(self.dataset)
        self.real_env: Env | None = make_env(self.agent.config.env, self._env_seed(seed)) if real_env else None
        self.real_obs: dict[str, Any] | None = None
        """The real env's latest observation dict (Reverie contract), or None without a real env."""
        self.real_done = True
        self.state: State | None = None
        """The current latent state (the RSSM's ``{"deter": (1, D), "stoch": (1, S, K)}``); None before reset."""
        self.steps = 0
        self.start_info: dict[str, Any] = {}
        """Where the current dream started: ``{"source": "dataset", "episode", "start", "context"}``,
        ``{"source": "env", "context"}`` or ``{"source": "prior"}``; empty before reset."""
        self._last_obs: dict[str, np.ndarray] = {}
        self._picture: dict[str, torch.Tensor] | None = None  # the model's picture of the present, (1, ...) tensors

    # ----------------------------------------------------------------- the Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Seed the latent state from ``context`` dataset steps, real frames (or the prior); return the model's view.

        ``options`` (dataset starts only): ``{"episode": i, "start": t}``, either key may be left out (then
        it is drawn from ``np_random``). Invalid options raise ValueError before anything changes.
        """
        chosen = self.check_options(options)
        first = self._np_random is None
        super().reset(seed=seed if seed is not None or not first else self._seed)
        if seed is not None and self.real_env is not None:  # a seeded reset replays the real env too
            self.real_env.close()
            self.real_env = make_env(self.agent.config.env, self._env_seed(seed))
        self.steps = 0
        self._last_obs, self._picture = {}, None  # the first picture has no frame before it
        window = self._dataset_window(*self._choose_start(**chosen)) if self.dataset is not None else None
        with torch.no_grad(), self._torch_rng(), self.learner.autocast(acting=True):
            if window is not None:
                self.state = self._filter_dataset(window)
            elif self.real_env is not None:
                self.state = self._filter_context()
                self.start_info = {"source": "env", "context": self.context}
            else:
                self.state = self._prior_start()
                self.start_info = {"source": "prior"}
            feat = self.wm.feat(self.state)
            picture = self.wm.picture(feat, None)
            reward = self.wm.reward(feat, self.wm.change(picture, None))
            obs, info = self._readout(Transition(self.state, feat, reward, self.wm.cont(feat), picture))
        if window is not None and self.real_env is not None:  # the real env runs beside, from its own reset
            self.real_obs = self.real_env.step({"action": self._noop(), "reset": True})
            self.real_done = bool(self.real_obs["is_last"])
        info["start"] = dict(self.start_info)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Dream one step: prior transition with ``action``, then decode observation, reward and continue."""
        if self.state is None:
            raise gymnasium.error.ResetNeeded("Call reset() before step() on a DreamEnv.")
        vec = self.action_vector(action)  # (1, A)
        with torch.no_grad(), self._torch_rng(), self.learner.autocast(acting=True):
            step = self.learner.dream_step(self.state, vec, self._picture, self.keys)
            self.state = step.state
            self.steps += 1
            obs, info = self._readout(step)
        terminated = bool(info["cont_pred"] < 0.5) or bool(self.end_unknown and info["unknown"])
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
        actor = self.learner.ac.actor
        with torch.no_grad(), self._torch_rng(), self.learner.autocast(acting=True):
            seen = {k: v for k, v in (self._picture or {}).items() if k in actor.obs_keys} or None
            policy = actor(self.wm.feat(self.state), seen)  # an actor that reads observations sees the picture
            vec = policy.mode() if deterministic else policy.sample()
        action = self.learner.decode_action(vec.float())[0]
        return int(action) if self.learner.act_space.discrete else action

    def step_real(self, action: Any) -> dict[str, Any] | None:
        """Step the real env with ``action`` (to show it beside the dream); None once its episode is over.

        After a reset the real env stands on the last context frame, the same moment the dream starts from.
        With a ``dataset`` start it stands on the first frame of its own new episode instead: the dream
        starts from a recorded moment, which cannot be restored into the real game.
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

    def start_source(self) -> dict[str, Any]:
        """What seeds the dreams: ``{"source": "dataset", "path", "env", "episodes", "steps"}``,
        ``{"source": "env", "env"}`` (real frames, random actions) or ``{"source": "prior"}``."""
        if self.dataset is not None:
            ds = self.dataset
            return {
                "source": "dataset",
                "path": str(ds.folder),
                "env": ds.env_id,
                "episodes": len(ds),
                "steps": ds.num_steps,
            }
        if self.real_env is not None:
            return {"source": "env", "env": self.agent.config.env.id}
        return {"source": "prior"}

    def check_options(self, options: dict[str, Any] | None) -> dict[str, int | None]:
        """``reset`` options as ``{"episode": i or None, "start": t or None}``; ValueError when they cannot be used.

        Checks all that does not depend on chance: the keys, the types, the episode's range and length,
        and the start's range within it (or, with only ``start`` given, that some episode is long enough).
        """
        options = dict(options or {})
        unknown = sorted(set(options) - set(START_OPTIONS))
        if unknown:
            raise ValueError(f"Unknown reset options {unknown}; DreamEnv takes {list(START_OPTIONS)} (dataset starts).")
        chosen = {key: _index_option(key, options.get(key)) for key in START_OPTIONS}
        if self.dataset is None:
            if any(v is not None for v in chosen.values()):
                raise ValueError("reset options episode and start need a dataset start: DreamEnv(..., dataset=FOLDER).")
            return chosen
        folder, n, context = self.dataset.folder, len(self._lengths), self.context
        episode, start = chosen["episode"], chosen["start"]
        if episode is not None:
            if episode >= n:
                raise ValueError(f"Episode {episode} is out of range: dataset {folder} has {n} episodes (0..{n - 1}).")
            length = self._lengths[episode]
            if length < context:
                raise ValueError(
                    f"Episode {episode} of dataset {folder} has {length} steps, fewer than the context of {context}."
                )
            if start is not None and start > length - context:
                raise ValueError(
                    f"start {start} is out of range for episode {episode} of dataset {folder}: its {length} steps "
                    f"and a context of {context} allow starts 0..{length - context}."
                )
        elif start is not None and max(self._lengths) < start + context:
            raise ValueError(
                f"start {start} is out of range: no episode of dataset {folder} has {start + context} steps "
                f"(the longest has {max(self._lengths)})."
            )
        return chosen

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

    def _check_dataset(self, dataset: Dataset) -> list[int]:
        """The episode lengths of ``dataset`` after checking that it fits the model; ValueError otherwise."""
        env_id, act = self.agent.config.env.id, self.learner.act_space
        info = dataset.info
        model_keys = [k for k in info.get("model_keys", self.keys) if k in dataset.obs_space]
        theirs = _describe({k: dataset.obs_space[k] for k in model_keys}, dataset.act_space.get("action"))
        ours = _describe(self.model_space, act)
        problems = []
        if dataset.env_id != env_id:
            problems.append("another env id")
        for key, space in self.model_space.items():
            have = dataset.obs_space.get(key)
            if have is None:
                problems.append(f"no observation key '{key}'")
            elif tuple(have.shape) != tuple(space.shape) or np.dtype(have.dtype) != np.dtype(space.dtype):
                problems.append(f"another shape or dtype of '{key}'")
        their_act = dataset.act_space.get("action")
        if their_act is None or _act_text(their_act) != _act_text(act):
            problems.append("another action space")
        if problems:
            raise ValueError(
                f"Dataset {dataset.folder} (env '{dataset.env_id}': {theirs}) does not fit the checkpoint's model "
                f"(env '{env_id}': {ours}): {', '.join(problems)}. Start from a dataset of '{env_id}' that stores "
                "the model's observations."
            )
        lengths = [int(e["length"]) for e in info["episode_info"]]
        if max(lengths, default=0) < self.context:
            raise ValueError(
                f"Dataset {dataset.folder} has no episode of at least {self.context} steps (the longest has "
                f"{max(lengths, default=0)}) to seed a dream; use a smaller context."
            )
        return lengths

    def _choose_start(self, episode: int | None, start: int | None) -> tuple[int, int]:
        """The (episode, first step) of a dataset start (checked by :meth:`check_options`); missing ones drawn."""
        if episode is None:
            need = self.context + (start or 0)
            fits = [i for i, length in enumerate(self._lengths) if length >= need]
            episode = fits[int(self.np_random.integers(len(fits)))]
        if start is None:
            start = int(self.np_random.integers(self._lengths[episode] - self.context + 1))
        return episode, start

    def _dataset_window(self, episode: int, start: int) -> dict[str, np.ndarray]:
        """The recorded steps ``start .. start + context - 1`` of an episode (model keys, action, action_mask)."""
        assert self.dataset is not None
        data = self.dataset.episode(episode)
        stop = start + self.context
        window = {k: np.array(data[k][start:stop]) for k in [*self.keys, "action", "action_mask"]}  # copies
        self.start_info = {"source": "dataset", "episode": episode, "start": start, "context": self.context}
        return window

    def _filter_dataset(self, window: dict[str, np.ndarray]) -> State:
        """Filter recorded steps into the posterior state, with their actions (masked where unlabeled).

        As in training, the window starts from the initial state (``is_first`` at its first step), and
        ``action[t]`` (the action that led to step ``t``) drives the model from step ``t - 1`` to ``t``.
        """
        device = self.learner.device
        data = self.learner.to_tensors({k: window[k][None] for k in [*self.keys, "action"]})  # (1, T, ...)
        data["is_first"] = torch.zeros(1, self.context, dtype=torch.bool, device=device)
        data["is_first"][:, 0] = True
        data["action_mask"] = torch.as_tensor(window["action_mask"][None], dtype=torch.float32, device=device)
        states, _, _ = self.wm.observe(data)
        return {k: v[:, -1] for k, v in states.items()}

    def _filter_context(self) -> State:
        """Filter ``context`` real frames of one episode (random actions) into the posterior state."""
        assert self.real_env is not None
        space = self.learner.act_space
        restarts, state = 0, self.wm.initial(1, self.learner.device)
        action = torch.zeros(1, self.learner.action_dim, device=self.learner.device)
        obs, seen = self.real_env.step({"action": self._noop(), "reset": True}), 0
        while True:
            data = self.learner.to_tensors({k: np.array(obs[k])[None] for k in self.keys})  # (1, ...), copied
            is_first = torch.tensor([bool(obs["is_first"])], device=self.learner.device)
            state = self.wm.filter_step(state, action, data, is_first)
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
        start = self.wm.initial(1, self.learner.device)
        return self.wm.step(start, torch.zeros(1, self.learner.action_dim, device=self.learner.device)).state

    def _readout(self, step: Transition) -> tuple[Any, dict[str, Any]]:
        """The observation the env returns and its ``info`` from the model's prediction ``step`` (after a reset:
        the picture of the filtered state, without uncertainty)."""
        self._picture = step.obs
        obs: dict[str, np.ndarray] = {}
        for key in self.keys:
            value = step.obs[key][0].float().cpu().numpy()
            if key in self.images:
                obs[key] = np.clip(value, 0, 255).round().astype(np.uint8)  # (H, W, C)
            else:  # clip into the declared bounds
                box = self._boxes[key]
                assert isinstance(box, spaces.Box)
                obs[key] = np.clip(value.astype(box.dtype), box.low, box.high)
        self._last_obs = obs
        doubt: dict[str, Any] = {"uncertainty": None, "unknown": None, "reward_uncertainty": None}
        if step.uncertainty is not None:
            doubt = {
                "uncertainty": float(step.uncertainty[0]),
                "unknown": bool(step.unknown[0]) if step.unknown is not None else None,
                "reward_uncertainty": float(step.reward_uncertainty[0])
                if step.reward_uncertainty is not None
                else None,
            }
        info = {"reward_pred": float(step.reward[0]), "cont_pred": float(step.cont[0]), **doubt, "step": self.steps}
        out = {k: v.copy() for k, v in obs.items()}  # the caller may keep or change what it gets
        return (out if len(self.keys) > 1 else out[self.keys[0]]), info


def _index_option(name: str, value: Any) -> int | None:
    """A ``reset`` option as a non-negative int (numpy ints too), None when left out; ValueError otherwise."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        index = operator.index(value)
    except TypeError:
        raise ValueError(f"reset option {name} must be a non-negative integer, got {value!r}.") from None
    if index < 0:
        raise ValueError(f"reset option {name} must be a non-negative integer, got {index}.")
    return index


def _act_text(space: Space) -> str:
    return f"Discrete({space.n})" if space.discrete else f"Box{tuple(space.shape)}"


def _describe(obs: dict[str, Space], act: Space | None) -> str:
    """Observation keys and the action space in a few words: ``vector (4,) float32, action Discrete(2)``."""
    keys = ", ".join(f"{k} {tuple(s.shape)} {np.dtype(s.dtype).name}" for k, s in obs.items()) or "no model keys"
    return f"{keys}, action {_act_text(act) if act is not None else 'none'}"
