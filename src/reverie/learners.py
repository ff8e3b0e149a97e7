"""Learners from outside Reverie that train inside the dream (:class:`reverie.correction.DreamLearner`).

``sb3``: a Stable-Baselines3 model with its default hyperparameters, PPO for discrete actions and SAC for
continuous ones, chosen at its first :meth:`~SB3Learner.learn` from the env's action space (``pip install
reverie[sb3]``). Any other learner is a ``"module:factory"`` string naming a callable ``factory(seed)`` that
returns an object with ``learn(env, steps)`` and ``act(obs)``.

Example:
    >>> learner = make_learner("sb3", seed=0)                      # doctest: +SKIP
    >>> learner.learn(DreamEnv("runs/cartpole", seed=0), 30_000)   # doctest: +SKIP
    >>> learner.act(obs)                                            # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium

from reverie.plugins import resolve

if TYPE_CHECKING:
    from reverie.correction import DreamLearner

__all__ = ["SB3Learner", "make_learner"]

BUILT_IN = ("sb3",)


class SB3Learner:
    """A Stable-Baselines3 model as a :class:`~reverie.correction.DreamLearner`: it keeps training across calls of
    :meth:`learn` (a new env, e.g. the corrected dream, must have the same spaces) and acts deterministically."""

    def __init__(self, seed: int = 0):
        try:
            import stable_baselines3  # noqa: F401
        except ImportError:
            raise ImportError(
                "The sb3 learner needs Stable-Baselines3: pip install 'reverie[sb3]' (or stable-baselines3)."
            ) from None
        self.seed = seed
        self.model: Any = None

    def learn(self, env: gymnasium.Env, steps: int) -> None:
        from stable_baselines3 import PPO, SAC

        if self.model is None:
            algo = SAC if isinstance(env.action_space, gymnasium.spaces.Box) else PPO
            self.model = algo("MlpPolicy", env, seed=self.seed, verbose=0)
        else:
            self.model.set_env(env)
        self.model.learn(steps, reset_num_timesteps=False)

    def act(self, obs: Any) -> Any:
        if self.model is None:
            raise RuntimeError("SB3Learner.act before learn: train it in an env first.")
        return self.model.predict(obs, deterministic=True)[0]

    def state_dict(self) -> dict[str, Any]:
        """The policy's weights, as torch gives them (live tensors: :func:`reverie.correction.correct` copies what it
        keeps of its best round)."""
        if self.model is None:
            raise RuntimeError("SB3Learner.state_dict before learn: train it in an env first.")
        return self.model.policy.state_dict()  # type: ignore[no-any-return]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back weights :meth:`state_dict` gave."""
        if self.model is None:
            raise RuntimeError("SB3Learner.load_state_dict before learn: train it in an env first.")
        self.model.policy.load_state_dict(state)

    def save(self, path: str | Path) -> Path:
        """Save the policy's weights, a state dict of tensors (``torch.load(..., weights_only=True)`` reads it), as
        ``<path>.pt``."""
        import torch

        out = Path(path).with_suffix(".pt")
        torch.save(self.state_dict(), out)
        return out


def make_learner(name: str, seed: int = 0) -> DreamLearner:
    """The learner ``name``: ``sb3``, or ``"module:factory"`` (``factory(seed)`` returns the learner).

    Raises:
        ValueError: the name is neither, or the factory cannot be imported (the message says which).
    """
    if name == "sb3":
        return SB3Learner(seed)
    if ":" not in name:
        raise ValueError(f"Unknown learner '{name}': use sb3 or a 'module:factory' that returns a learner.")
    try:
        factory = resolve(name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"Learner '{name}' cannot be imported: {err}.") from None
    learner = factory(seed)
    missing = [m for m in ("learn", "act") if not callable(getattr(learner, m, None))]
    if missing:
        raise ValueError(
            f"Learner '{name}' has no {' or '.join(missing)} method: it needs learn(env, steps) and act(obs)."
        )
    return learner
