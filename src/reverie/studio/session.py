"""One studio connection: the message protocol on top of a :class:`~reverie.dream.DreamEnv`.

Nothing here knows about HTTP or WebSockets: :meth:`Session.handle` takes one text message and returns
the replies, so the protocol is tested without a server. Messages are JSON objects with a ``type``:

client -> server

* ``{"type": "reset", "seed": 3}``: a new dream from the studio's start source, real frames or a dataset
  (``seed`` optional). With a dataset start, ``"episode"`` and ``"start"`` (optional) pick the recorded
  episode and its first context step; left out, they are drawn at random.
* ``{"type": "step", "action": 2}`` (discrete) or ``{"type": "step", "action": [0.1, -0.5]}`` (continuous).
* ``{"type": "step", "agent": true, "deterministic": false}``: the checkpoint's policy picks the action.
* ``{"type": "options", "real": true, "record": false}``: toggle the real env beside the dream and
  recording; turning ``real`` on restarts the dream so that both start together (from the same frames
  with an env start; with a dataset start the real env starts from its own reset).
* ``{"type": "ping"}``: answered by ``{"type": "pong"}``.

server -> client

* ``info`` (once, on connect): env id, observation keys, the action space, action names, key map (``keymap``:
  ``keys`` with the game's ``keys`` {key: action name}, ``atari`` or ``digits``), and ``start``, the start
  source (:meth:`DreamEnv.start_source`: ``{"source": "env", ...}`` or ``{"source": "dataset", "path",
  "episodes", ...}``).
* ``frame`` (after reset and each step): ``step``, ``start`` (where this dream started, e.g.
  ``{"source": "dataset", "episode": 3, "start": 40, "context": 5}``), ``frames`` (dreamed images as
  PNG data URIs), ``vectors`` (dreamed vectors), ``real`` (the real env's frames and vectors, or null), ``reward``,
  ``cont``, ``uncertainty``, ``unknown``, ``return`` (summed predicted reward), ``terminated``, ``truncated``,
  ``action``, ``real_reward``, ``real_done``, ``recording``.
* ``saved`` (a recording take was written as a dataset, see :mod:`reverie.studio.recorder`):
  ``path``, ``episodes``.
* ``error``: ``message``. A bad message (not JSON, unknown type, action out of range) gets one and the
  connection stays open.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from PIL import Image

from reverie.dream import START_OPTIONS, DreamEnv
from reverie.envs import Space, Wrapper
from reverie.plugins import game_for
from reverie.studio.recorder import TakeRecorder

log = logging.getLogger("reverie.studio")

MAX_MESSAGE_CHARS = 16_384
"""Longest client message accepted (a continuous action of a few thousand numbers fits)."""


class ProtocolError(ValueError):
    """A client message the studio cannot act on; its text goes back as an ``error`` message."""


def png_data_uri(image: np.ndarray) -> str:
    """A uint8 (H, W, C) image as a ``data:image/png;base64,...`` URI (C in 1, 3, 4).

    Example:
        >>> png_data_uri(np.zeros((2, 2, 3), np.uint8))[:22]
        'data:image/png;base64,'
    """
    array = np.asarray(image, np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def action_names(dream: DreamEnv) -> list[str]:
    """Names of the discrete actions: the game's (:mod:`reverie.plugins`), Atari's meanings from the real env, else
    numbers."""
    space = dream.learner.act_space
    if not space.discrete:
        return []
    game = game_for(dream.agent.config.env.id)
    names: list[str] = list(game.action_names) if game is not None else []
    if not names and dream.real_env is not None:
        inner = dream.real_env.unwrapped if isinstance(dream.real_env, Wrapper) else dream.real_env
        names = list(getattr(inner, "action_meanings", None) or [])
    return names if len(names) == space.n else [str(i) for i in range(space.n)]


def key_map(env_id: str, names: list[str]) -> tuple[str, dict[str, str]]:
    """Which key map the page uses, and its keys: ``("keys", {key: action name})`` where the game registers
    keys, ``("atari", {})`` (arrows and space) or ``("digits", {})``."""
    game = game_for(env_id)
    if game is not None and game.keys:
        return "keys", dict(game.keys)
    if env_id.startswith("atari:") and "NOOP" in names:
        return "atari", {}
    return "digits", {}


class Session:
    """The state of one connection: a dream, the toggles and the recording.

    Args:
        dream: the env to play in (its checkpoint may be shared with other sessions).
        record_dir: parent folder of the recorded takes (one dataset each).
    """

    def __init__(self, dream: DreamEnv, record_dir: str | Path) -> None:
        self.dream = dream
        self.record_dir = Path(record_dir)
        self.take: TakeRecorder | None = None
        self.real = False
        self.done = True
        self.ret = 0.0
        self.names = action_names(dream)

    # ----------------------------------------------------------------- protocol
    def info(self) -> dict[str, Any]:
        """The ``info`` message sent when a client connects."""
        dream, space = self.dream, self.dream.action_space
        action: dict[str, Any]
        if isinstance(space, spaces.Discrete):
            action = {"discrete": True, "n": int(space.n), "names": self.names}
        else:
            assert isinstance(space, spaces.Box)
            action = {
                "discrete": False,
                "shape": list(space.shape),
                "low": _finite(space.low, -1.0),
                "high": _finite(space.high, 1.0),
            }
        env_id = dream.agent.config.env.id
        keymap, keys = key_map(env_id, self.names)
        return {
            "type": "info",
            "env": env_id,
            "obs": {k: {"shape": list(dream.model_space[k].shape), "image": k in dream.images} for k in dream.keys},
            "action": action,
            "keymap": keymap,
            "keys": keys,
            "context": dream.context,
            "max_steps": dream.max_steps,
            "has_real_env": dream.real_env is not None,
            "record_dir": str(self.record_dir),
            "start": dream.start_source(),
        }

    def handle(self, text: str | bytes) -> list[dict[str, Any]]:
        """Replies to one client message; a bad message gives one ``error`` reply and changes nothing."""
        try:
            return self._dispatch(self._parse(text))
        except ProtocolError as err:
            return [{"type": "error", "message": str(err)}]

    def close(self) -> None:
        """Write an unfinished recording and close the envs."""
        self._stop_recording()
        self.dream.close()

    # ----------------------------------------------------------------- messages
    def _parse(self, text: str | bytes) -> dict[str, Any]:
        if isinstance(text, bytes):
            raise ProtocolError("Send JSON text messages, not binary ones.")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ProtocolError(f"Message of {len(text)} characters; the limit is {MAX_MESSAGE_CHARS}.")
        try:
            message = json.loads(text)
        except json.JSONDecodeError as err:
            raise ProtocolError(f"Message is not valid JSON ({err.msg} at character {err.pos}).") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolError('Messages are JSON objects with a "type", e.g. {"type": "reset"}.')
        return message

    def _dispatch(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        kind = message["type"]
        if kind == "ping":
            return [{"type": "pong"}]
        if kind == "reset":
            seed = message.get("seed")
            if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
                raise ProtocolError(f"reset seed must be a non-negative integer or null, got {seed!r}.")
            options = {key: message[key] for key in START_OPTIONS if message.get(key) is not None}
            for key, value in options.items():  # JSON numbers only: no strings or floats that happen to parse
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ProtocolError(f"reset {key} must be a non-negative integer or null, got {value!r}.")
            if options and self.dream.dataset is None:
                raise ProtocolError(
                    "This studio seeds dreams from the real env; reset episode and start need a dataset start "
                    "(reverie studio --start DATASET)."
                )
            try:
                self.dream.check_options(options)
            except ValueError as err:
                raise ProtocolError(str(err)) from None
            return self._reset(seed, options)
        if kind == "step":
            return self._step(message)
        if kind == "options":
            return self._options(message)
        raise ProtocolError(f"Unknown message type {kind!r}; use reset, step, options or ping.")

    def _reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        if self.take is not None:
            self.take.end_episode()  # the player cut the episode short
        obs, info = self.dream.reset(seed=seed, options=options)
        self.done, self.ret = False, 0.0
        self._record(obs, info, None, terminated=False)
        return [self._frame(obs, info, None, terminated=False, truncated=False)]

    def _step(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        if self.done:
            raise ProtocolError('The dream is over (or not started); send {"type": "reset"}.')
        if message.get("agent"):
            action = self.dream.agent_action(bool(message.get("deterministic", False)))
        elif "action" in message:
            action = self._check_action(message["action"])
        else:
            raise ProtocolError('A step needs "action" (a number or a list of numbers) or "agent": true.')
        obs, reward, terminated, truncated, info = self.dream.step(action)
        self.ret += reward
        self.done = terminated or truncated
        real = self.dream.step_real(action) if self.real else None
        self._record(obs, info, action, terminated)
        if self.done and self.take is not None:
            self.take.end_episode()
        return [self._frame(obs, info, action, terminated, truncated, real)]

    def _options(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        unknown = set(message) - {"type", "real", "record"}
        if unknown:
            raise ProtocolError(f"Unknown options {sorted(unknown)}; use real and record.")
        for key in ("real", "record"):
            if key in message and not isinstance(message[key], bool):
                raise ProtocolError(f"Option {key} takes true or false, got {message[key]!r}.")
        if message.get("real") and self.dream.real_env is None:
            raise ProtocolError("This studio runs without a real env; nothing to show beside the dream.")
        replies: list[dict[str, Any]] = []
        if message.get("record") and self.take is None:
            self.take = self._new_take()
        elif message.get("record") is False:
            replies += self._stop_recording()
        if "real" in message and message["real"] != self.real:
            self.real = message["real"]
            if self.real:  # restart both together (an env start: from the same real frames)
                replies += self._reset()
        return replies

    def _check_action(self, raw: Any) -> Any:
        space = self.dream.action_space
        if isinstance(space, spaces.Discrete):
            if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw < space.n:
                raise ProtocolError(f"Action {raw!r} is out of range: this env takes integers 0..{space.n - 1}.")
            return raw
        assert isinstance(space, spaces.Box)
        try:
            action = np.asarray(raw, np.float64)
        except (TypeError, ValueError):
            raise ProtocolError(f"Action {str(raw)[:80]} is not a list of numbers.") from None
        if action.size != math.prod(space.shape) or not np.isfinite(action).all():
            raise ProtocolError(f"Action needs {math.prod(space.shape)} finite numbers, got {str(raw)[:80]}.")
        action = action.reshape(space.shape).astype(space.dtype)
        if not space.contains(action):
            raise ProtocolError(
                f"Action {action.tolist()} is out of range [{space.low.tolist()}, {space.high.tolist()}]."
            )
        return action

    # ----------------------------------------------------------------- replies
    def _frame(
        self,
        obs: Any,
        info: dict[str, Any],
        action: Any,
        terminated: bool,
        truncated: bool,
        real: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        dream = self.dream
        frames, vectors = _views(dream, dream.encode_obs(obs))
        if self.real and dream.real_obs is not None:
            real_frames, real_vectors = _views(dream, dream.real_obs)
            shown: dict[str, Any] | None = {"frames": real_frames, "vectors": real_vectors}
        else:
            shown = None
        return {
            "type": "frame",
            "step": dream.steps,
            "start": dict(dream.start_info),
            "frames": frames,
            "vectors": vectors,
            "real": shown,
            "reward": info["reward_pred"],
            "cont": info["cont_pred"],
            "uncertainty": info["uncertainty"],
            "unknown": info["unknown"],
            "return": self.ret,
            "terminated": terminated,
            "truncated": truncated,
            "action": np.asarray(action).tolist() if action is not None else None,
            "real_reward": float(real["reward"]) if real is not None else None,
            "real_done": dream.real_done if self.real else None,
            "recording": self.take is not None,
        }

    # ----------------------------------------------------------------- recording
    def _new_take(self) -> TakeRecorder:
        dream = self.dream
        spaces_ = {k: dream.model_space[k] for k in dream.keys}
        spaces_["log/cont"] = Space(np.float32, (), 0.0, 1.0)
        creation = {
            "context": dream.context,
            "agent_steps": dream.agent.state.agent_steps,
            "start": dream.start_source(),
        }
        return TakeRecorder(self.record_dir, dream.agent.config.env.id, spaces_, dream.learner.act_space, creation)

    def _record(self, obs: Any, info: dict[str, Any], action: Any, terminated: bool) -> None:
        """Add one step to the take: ``action`` led to it (None after a reset: zeros, as is the reward)."""
        if self.take is None:
            return
        space = self.dream.learner.act_space
        first = action is None or not self.take.steps  # switched on mid-dream: the segment starts an episode
        step: dict[str, Any] = dict(self.dream.encode_obs(obs))
        step.update(
            {
                "action": np.zeros(space.shape, space.dtype) if first else np.asarray(action, space.dtype),
                "reward": np.float32(0.0 if first else info["reward_pred"]),
                "is_first": first,
                "is_last": False,
                "is_terminal": terminated and not first,
                "log/cont": np.float32(info["cont_pred"]),
            }
        )
        self.take.add(step)

    def _stop_recording(self) -> list[dict[str, Any]]:
        take, self.take = self.take, None
        if take is None:
            return []
        path, episodes = take.close()
        return [{"type": "saved", "path": str(path), "episodes": episodes}] if path is not None else []


def _views(dream: DreamEnv, obs: dict[str, Any]) -> tuple[dict[str, str], dict[str, list[float]]]:
    """The model keys of an observation dict as PNG data URIs (images) and lists (vectors)."""
    frames = {k: png_data_uri(obs[k]) for k in dream.keys if k in dream.images}
    vectors = {k: np.asarray(obs[k], np.float64).ravel().round(4).tolist() for k in dream.keys if k not in dream.images}
    return frames, vectors


def _finite(bound: np.ndarray, default: float) -> list[float]:
    flat = np.asarray(bound, np.float64).ravel()
    return np.where(np.isfinite(flat), flat, default).tolist()
