"""The environment contract every Reverie env follows.

An env speaks in dicts of numpy arrays. ``step`` takes ``{"action": a, "reset": bool}`` and returns
one observation dict, so that an env, a worker process and a batch of envs all share one verb:

* ``reset=True`` starts a new episode; the returned dict has ``is_first=True``, ``reward=0`` and the
  action is ignored.
* Every observation dict holds the keys of ``obs_space``: the model inputs, plus ``reward``
  (float32), ``is_first``, ``is_last`` (episode over, for any reason) and ``is_terminal`` (the task
  ended; only this one stops bootstrapping: a time-limit truncation is ``is_last`` without
  ``is_terminal``). Keys that begin with ``log/`` are for logging and never reach the model.
* After ``is_last`` the caller must send ``reset=True``.

Example:
    >>> env = GymEnv("CartPole-v1")                   # doctest: +SKIP
    >>> obs = env.step({"action": 0, "reset": True})  # doctest: +SKIP
    >>> obs["is_first"]                               # doctest: +SKIP
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

RESERVED_KEYS = ("reward", "is_first", "is_last", "is_terminal")


@dataclass(frozen=True)
class Space:
    """Shape, dtype and bounds of one observation or action entry.

    Args:
        dtype: numpy dtype of the entry.
        shape: shape of one entry (no batch dims).
        low: lower bound (scalar or array broadcastable to ``shape``).
        high: upper bound. For discrete spaces ``high`` is the number of choices and the entry is an
            integer in ``[0, high)``.
        discrete: whether the entry is one integer choice among ``high``.

    Example:
        >>> Space(np.int64, (), 0, 2, discrete=True).n
        2
    """

    dtype: Any
    shape: tuple[int, ...] = ()
    low: Any = -np.inf
    high: Any = np.inf
    discrete: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def n(self) -> int:
        """Number of choices of a discrete space."""
        if not self.discrete:
            raise TypeError(f"Space {self} is not discrete; it has no number of choices.")
        return int(self.high)

    @property
    def is_image(self) -> bool:
        """True for uint8 (H, W, C) entries: the model encodes them with the conv encoder."""
        return np.dtype(self.dtype) == np.uint8 and len(self.shape) == 3

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A uniform sample, for random policies and tests."""
        if self.discrete:
            return np.asarray(rng.integers(0, self.n, self.shape), self.dtype)
        low = np.broadcast_to(np.asarray(self.low, np.float64), self.shape)
        high = np.broadcast_to(np.asarray(self.high, np.float64), self.shape)
        low = np.where(np.isfinite(low), low, -1.0)
        high = np.where(np.isfinite(high), high, 1.0)
        return rng.uniform(low, high).astype(self.dtype)


class Env:
    """Base class of Reverie envs. Subclasses define the two spaces, ``step`` and ``close``.

    ``obs_space`` maps each key of the observation dict to a :class:`Space`, reserved keys included.
    ``act_space`` maps ``"action"`` (and only that) to a :class:`Space`.
    """

    @property
    def obs_space(self) -> dict[str, Space]:
        raise NotImplementedError("Env.obs_space must return {key: Space} for every observation key.")

    @property
    def act_space(self) -> dict[str, Space]:
        raise NotImplementedError("Env.act_space must return {'action': Space}.")

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        """Apply ``action['action']`` (or reset when ``action['reset']``) and return observations."""
        raise NotImplementedError("Env.step(action) must return an observation dict.")

    def close(self) -> None:
        """Release resources. Safe to call twice."""


def model_keys(obs_space: dict[str, Space]) -> list[str]:
    """Observation keys the world model reads: everything but reserved and ``log/`` keys."""
    return [k for k in obs_space if k not in RESERVED_KEYS and not k.startswith("log/")]


def reserved_spaces() -> dict[str, Space]:
    """The spaces of the four keys every observation dict carries."""
    return {
        "reward": Space(np.float32),
        "is_first": Space(bool),
        "is_last": Space(bool),
        "is_terminal": Space(bool),
    }


def sanitize(obs: dict[str, np.ndarray]) -> list[int]:
    """Replace NaN and infinite values of batched observations ``(N, ...)`` by 0, in place, in the model's keys and
    the reward (``log/`` keys are left as they are); returns the indices of the envs whose step held any.

    A non-finite input poisons every weight it reaches through the gradients; it is stopped where it enters.

    Example:
        >>> obs = {"vector": np.array([[1.0, np.nan], [2.0, 3.0]]), "reward": np.array([np.inf, 0.0])}
        >>> sanitize(obs), obs["vector"][0].tolist(), obs["reward"].tolist()
        ([0], [1.0, 0.0], [0.0, 0.0])
    """
    bad = None
    for key, value in obs.items():
        if key.startswith("log/") or not np.issubdtype(np.asarray(value).dtype, np.floating):
            continue
        finite = np.isfinite(value)
        if finite.all():
            continue
        rows = ~finite.reshape(len(value), -1).all(-1)
        bad = rows if bad is None else bad | rows
        value[~finite] = 0.0
    return [] if bad is None else np.flatnonzero(bad).tolist()
