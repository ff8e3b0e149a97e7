"""How a game plugs into Reverie: its env ids, observation codecs, episode summary, policies and studio keys.

Generic code never names a game. It asks this registry, by env id or codec name, for what a game adds:

* ``make_env(cfg, seed)``: the env adapter for the game's ids (:func:`reverie.envs.make_env` asks first);
* ``codecs``: vector codecs by name (``model.vector_codec``), see :mod:`reverie.codecs`;
* ``summary(finals)``: metrics of a set of finished episodes from their last observations' ``log/`` keys (a score,
  success rates): evaluation, the online logs, run reports and ``reverie data info`` show them;
* ``effect(before, after)``: whether each env's last action did something visible in its ``log/`` keys (the
  correction loop tells "the action did nothing" from "it worked but paid nothing");
* ``policies``: recording policies by name for ``reverie data record --policy NAME``;
* ``action_names`` and ``keys`` (keyboard key -> action name) for the studio and the correction report.

Entries that need heavy imports (torch modules, the game package) are given as ``"module:attribute"`` strings and
imported on first use, so env worker processes that only step the game never import torch. The built-in games
are registered by their modules when first asked for (:data:`BUILTIN`); another game registers itself with
:func:`register_game` before use.

Example:
    >>> game = Game("mygame", env_ids=("mygame-v0",), make_env="my_package.env:make_env")
    >>> register_game(game)
    >>> game_for("mygame-v0").name
    'mygame'
    >>> unregister_game("mygame")
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "BUILTIN",
    "Game",
    "codec",
    "codec_names",
    "game_for",
    "policy",
    "policy_names",
    "register_game",
    "resolve",
    "summarize",
    "unregister_game",
]

BUILTIN: dict[str, str] = {"crafter": "reverie.crafter"}
"""Games that ship with Reverie: name -> the module whose import registers it."""

CORE_CODECS: dict[str, str] = {"mlp": "reverie.codecs:MLPCodec"}
"""Codecs of the core, for any vector observation."""

Entry = Any
"""An object, or a ``"module:attribute"`` string naming it (imported on first use)."""


@dataclasses.dataclass(frozen=True)
class Game:
    """What one game adds to Reverie; every field but the name and ids is optional.

    Args:
        name: the game's name (one registration per name).
        env_ids: the env ids it serves, exactly as users write them (``crafter``, ``crafter-symbolic``).
        make_env: ``make_env(cfg: EnvConfig, seed: int) -> Env``, the adapter before Reverie's wrappers.
        codecs: codec name -> a :class:`reverie.codecs.VectorCodec` class (or its entry string).
        summary: ``summary(finals: list[dict]) -> {metric: value}`` over finished episodes, from the ``log/`` keys of
            each episode's last observation; empty when the keys are absent.
        effect: ``effect(before: dict, after: dict) -> (N,) bool``: batched observations before and after an action.
        effect_keys: the ``log/`` keys ``effect`` reads (the caller keeps them from the observation before).
        policies: policy name -> ``factory(env, seed) -> policy`` (``policy(obs) -> action``) for recordings.
        action_names: the discrete actions' names, in order.
        keys: keyboard key (a character or a ``KeyboardEvent.key`` name) -> action name, for the studio.
    """

    name: str
    env_ids: tuple[str, ...]
    make_env: Entry = None
    codecs: Mapping[str, Entry] = dataclasses.field(default_factory=dict)
    summary: Entry = None
    effect: Entry = None
    effect_keys: tuple[str, ...] = ()
    policies: Mapping[str, Entry] = dataclasses.field(default_factory=dict)
    action_names: tuple[str, ...] = ()
    keys: Mapping[str, str] = dataclasses.field(default_factory=dict)


_GAMES: dict[str, Game] = {}
_LOADED: set[str] = set()


def register_game(game: Game) -> None:
    """Add ``game`` to the registry (replacing an earlier registration of the same name).

    Raises:
        ValueError: one of its env ids or codec names belongs to another registered game (the built-in ones too).
    """
    if game.name not in BUILTIN:
        _load_builtin()  # a game that claims a built-in game's ids is refused now, not when that game loads
    for other in _GAMES.values():
        if other.name == game.name:
            continue
        taken = set(other.env_ids) & set(game.env_ids) or set(other.codecs) & set(game.codecs)
        if taken:
            raise ValueError(f"Game '{game.name}' claims {sorted(taken)}, which game '{other.name}' registered.")
    if set(game.codecs) & set(CORE_CODECS):
        raise ValueError(f"Game '{game.name}' cannot replace the core codecs {sorted(CORE_CODECS)}.")
    _GAMES[game.name] = game


def unregister_game(name: str) -> None:
    """Remove a registered game (tests, or a game re-registered under other ids)."""
    _GAMES.pop(name, None)


def _load_builtin() -> None:
    for name, module in BUILTIN.items():
        if name not in _LOADED:
            _LOADED.add(name)
            importlib.import_module(module)


def games() -> list[Game]:
    """Every registered game, the built-in ones included."""
    _load_builtin()
    return list(_GAMES.values())


def game_for(env_id: str) -> Game | None:
    """The game that serves ``env_id``, or None (a Gymnasium id or a core suite)."""
    return next((g for g in games() if env_id in g.env_ids), None)


def resolve(entry: Entry) -> Any:
    """An entry itself, or the attribute a ``"module:attribute"`` string names (imported now)."""
    if not isinstance(entry, str):
        return entry
    module, _, attribute = entry.partition(":")
    return getattr(importlib.import_module(module), attribute)


def codec_names() -> list[str]:
    """Names ``model.vector_codec`` accepts: the core's, then the games'."""
    return [*CORE_CODECS, *(name for game in games() for name in game.codecs)]


def codec(name: str) -> Any:
    """The codec class registered as ``name``.

    Raises:
        ValueError: no codec of that name; the message lists the names.
    """
    if name in CORE_CODECS:
        return resolve(CORE_CODECS[name])
    for game in games():
        if name in game.codecs:
            return resolve(game.codecs[name])
    raise ValueError(f"Unknown vector codec '{name}'; registered codecs: {', '.join(codec_names())}.")


def summarize(env_id: str, finals: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The game's summary of finished episodes (``{}`` for envs without one or without episodes)."""
    game = game_for(env_id)
    if game is None or game.summary is None or not finals:
        return {}
    summary: Callable[[Sequence[Mapping[str, Any]]], dict[str, float]] = resolve(game.summary)
    return dict(summary(finals))


def policy_names(env_id: str) -> list[str]:
    """Recording policies the game of ``env_id`` registers."""
    game = game_for(env_id)
    return sorted(game.policies) if game is not None else []


def policy(env_id: str, name: str) -> Any | None:
    """The policy factory ``name`` of the game of ``env_id``, or None."""
    game = game_for(env_id)
    if game is None or name not in game.policies:
        return None
    return resolve(game.policies[name])
