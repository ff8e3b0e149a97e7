"""Check a user's env against the contract of :mod:`reverie.envs.base` before training on it.

Contract violations raise :class:`EnvError`; legal but learning-hostile choices (unbounded actions,
odd image sizes, no episode end, ...) are returned as a list of strings and also emitted as
:class:`EnvWarning`, in the spirit of Stable-Baselines3's ``env_checker``.

Example:
    >>> check_gym_env("CartPole-v1")
    []
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from reverie.envs.base import RESERVED_KEYS, Env, Space, model_keys
from reverie.envs.errors import EnvError, EnvWarning

__all__ = ["check_env", "check_gym_env"]

_RESERVED_DTYPES = {"reward": np.float32, "is_first": bool, "is_last": bool, "is_terminal": bool}


def check_env(env: Env, max_steps: int = 10_000, seed: int = 0, max_magnitude: float = 1e3) -> list[str]:
    """Validate ``env`` against the env contract and warn about learning-hostile choices.

    Runs one random-policy episode (at most ``max_steps`` steps) and one more reset. The env is left
    mid-episode; the caller still owns and closes it.

    Args:
        env: the env to check.
        max_steps: steps of the random-policy probe; an episode still running after them is reported
            as "no time limit".
        seed: seed of the random actions.
        max_magnitude: vector observations larger than this in absolute value are reported.

    Returns:
        One string per learning-hostile finding (each also emitted as an :class:`EnvWarning`).

    Raises:
        EnvError: the env breaks the contract; the message names the problem and the fix.

    Example:
        >>> from reverie.envs import GymEnv
        >>> check_env(GymEnv("CartPole-v1", seed=0))
        []
    """
    obs_space, act_space = _check_spaces(env)
    notes = _action_notes(act_space["action"]) + _image_notes(obs_space)
    rng = np.random.default_rng(seed)
    action = act_space["action"]

    first = env.step({"action": action.sample(rng), "reset": True})
    _check_obs(first, obs_space, "the reset observation")
    if not first["is_first"] or first["is_last"] or float(first["reward"]) != 0.0:
        raise EnvError(
            "The observation returned for reset=True must have is_first=True, is_last=False and reward=0 "
            f"(got is_first={first['is_first']}, is_last={first['is_last']}, reward={first['reward']})."
        )
    ended, peak = _probe(env, obs_space, rng, max_steps, _magnitudes(first, obs_space, {}))
    if not ended:
        notes.append(
            f"No episode ended within {max_steps} random-policy steps; episodes that never end leave the "
            "replay without is_last: wrap the env in reverie.envs.TimeLimit(env, steps)."
        )
    again = env.step({"action": action.sample(rng), "reset": True})
    _check_obs(again, obs_space, "the second reset observation")
    if not again["is_first"]:
        raise EnvError("A second reset=True did not return is_first=True; every reset must start an episode.")
    notes += [
        f"Vector observation '{key}' reached |x| = {value:.3g} under a random policy; values this large "
        "usually mean unscaled units: normalise it (the model's symlog only softens the scale)."
        for key, value in peak.items()
        if value > max_magnitude
    ]
    for note in notes:
        warnings.warn(note, EnvWarning, stacklevel=2)
    return notes


def check_gym_env(env_id: str, **kwargs: Any) -> list[str]:
    """Build ``GymEnv(env_id, **kwargs)``, run :func:`check_env` on it and close it.

    Example:
        >>> check_gym_env("gym:CartPole-v1", seed=0)
        []
    """
    from reverie.envs.gym import GymEnv

    env = GymEnv(env_id, **kwargs)
    try:
        return check_env(env)
    finally:
        env.close()


def _probe(
    env: Env, obs_space: dict[str, Space], rng: np.random.Generator, max_steps: int, peak: dict[str, float]
) -> tuple[bool, dict[str, float]]:
    """Random actions until ``is_last`` or ``max_steps``; returns (episode ended, peak magnitudes)."""
    action = env.act_space["action"]
    for t in range(1, max_steps + 1):
        obs = env.step({"action": action.sample(rng), "reset": False})
        _check_obs(obs, obs_space, f"the observation of step {t}")
        if obs["is_first"]:
            raise EnvError(f"Step {t} returned is_first=True without reset=True; only a reset starts an episode.")
        if obs["is_terminal"] and not obs["is_last"]:
            raise EnvError(f"Step {t} returned is_terminal=True with is_last=False; a terminal step is also last.")
        peak = _magnitudes(obs, obs_space, peak)
        if obs["is_last"]:
            return True, peak
    return False, peak


def _check_spaces(env: Env) -> tuple[dict[str, Space], dict[str, Space]]:
    obs_space, act_space = env.obs_space, env.act_space
    if not isinstance(obs_space, dict) or not all(isinstance(s, Space) for s in obs_space.values()):
        raise EnvError("env.obs_space must be a dict {key: reverie.envs.Space}.")
    if not isinstance(act_space, dict) or set(act_space) != {"action"}:
        got = sorted(act_space) if isinstance(act_space, dict) else type(act_space).__name__
        raise EnvError(f"env.act_space must be {{'action': Space}} and nothing else, got {got}.")
    if not isinstance(act_space["action"], Space):
        raise EnvError("env.act_space['action'] must be a reverie.envs.Space.")
    missing = [k for k in RESERVED_KEYS if k not in obs_space]
    if missing:
        raise EnvError(f"env.obs_space lacks the reserved keys {missing}; add reverie.envs.base.reserved_spaces().")
    for key, dtype in _RESERVED_DTYPES.items():
        space = obs_space[key]
        if np.dtype(space.dtype) != np.dtype(dtype) or space.shape != ():
            raise EnvError(f"obs_space['{key}'] must be a scalar of dtype {np.dtype(dtype)}, got {space}.")
    space = act_space["action"]
    kind = np.dtype(space.dtype).kind
    if space.discrete and (kind not in "iu" or int(space.high) < 1):
        raise EnvError(f"A discrete action Space needs an integer dtype and high >= 1 choices, got {space}.")
    if not space.discrete and kind != "f":
        raise EnvError(f"A continuous action Space needs a float dtype, got {space}; set discrete=True?")
    return obs_space, act_space


def _check_obs(obs: Any, spaces: dict[str, Space], where: str) -> None:
    if not isinstance(obs, dict):
        raise EnvError(f"env.step must return a dict, {where} is a {type(obs).__name__}.")
    if set(obs) != set(spaces):
        missing, extra = sorted(set(spaces) - set(obs)), sorted(set(obs) - set(spaces))
        raise EnvError(
            f"Keys of {where} differ from env.obs_space (missing {missing}, undeclared {extra}); "
            "obs_space must list every key that step returns."
        )
    for key, space in spaces.items():
        value = np.asarray(obs[key])
        if value.shape != tuple(space.shape) or value.dtype != np.dtype(space.dtype):
            raise EnvError(
                f"obs['{key}'] in {where} is {value.dtype} {value.shape} but obs_space says "
                f"{np.dtype(space.dtype)} {tuple(space.shape)}; cast it (e.g. np.asarray(x, np.float32))."
            )
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise EnvError(f"obs['{key}'] in {where} is not finite ({value}); NaN or inf breaks training.")


def _magnitudes(obs: dict[str, Any], spaces: dict[str, Space], peak: dict[str, float]) -> dict[str, float]:
    """Running max of |x| over the float model keys."""
    for key in model_keys(spaces):
        value = np.asarray(obs[key])
        if value.dtype.kind == "f" and value.size:
            peak[key] = max(peak.get(key, 0.0), float(np.abs(value).max()))
    return peak


def _action_notes(space: Space) -> list[str]:
    if space.discrete:
        return []
    low = np.broadcast_to(np.asarray(space.low, np.float64), space.shape)
    high = np.broadcast_to(np.asarray(space.high, np.float64), space.shape)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        return [
            "The action space is unbounded; the actor samples actions in [-1, 1], so give the env finite "
            "action bounds and wrap it in reverie.envs.NormalizeActions."
        ]
    if (low == -1).all() and (high == 1).all():
        return []
    reasons = []
    if not np.allclose(low, -high):
        reasons.append("asymmetric")
    largest = float(max(np.abs(low).max(initial=0.0), np.abs(high).max(initial=0.0)))
    if largest > 1:
        reasons.append(f"{'huge' if largest > 100 else 'large'} (max |bound| = {largest:.3g})")
    reasons = reasons or ["narrower than [-1, 1]"]
    return [
        f"The action bounds are {' and '.join(reasons)}; the actor samples actions in [-1, 1]: wrap the env "
        "in reverie.envs.NormalizeActions."
    ]


def _image_notes(spaces: dict[str, Space]) -> list[str]:
    notes = []
    for key in model_keys(spaces):
        space = spaces[key]
        shape = tuple(space.shape)
        if len(shape) == 3 and not space.is_image and shape[-1] in (1, 3, 4):
            notes.append(
                f"Observation '{key}' looks like an image {shape} but has dtype {np.dtype(space.dtype)}; the "
                "conv encoder expects uint8 in [0, 255]: convert it with (x * 255).astype(np.uint8)."
            )
        elif len(shape) == 2 and np.dtype(space.dtype) == np.uint8:
            notes.append(
                f"Observation '{key}' is a uint8 {shape} array without a channel axis; add one "
                "(x[..., None]) so that it is treated as an image."
            )
        elif space.is_image and shape[:2] != (64, 64):
            notes.append(
                f"Image '{key}' is {shape[0]}x{shape[1]}; the conv encoder is built for 64x64: wrap the env "
                "in reverie.envs.ResizeImage(env, 64)."
            )
    return notes
