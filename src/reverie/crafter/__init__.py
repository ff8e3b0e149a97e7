"""Crafter (Hafner 2021) as a Reverie plug-in: the env, a codec for its symbolic view, its score, a scripted player.

Importing this package registers the game with :mod:`reverie.plugins` (the registry imports it the first time an
env id or codec name asks for it); nothing here imports torch or crafter until a piece is used:

* env ids ``crafter`` (64x64 pixels) and ``crafter-symbolic`` (the local map, inventory and vitals as a vector):
  :class:`reverie.crafter.env.CrafterEnv` (``pip install "crafter>=1.8" numba``);
* codecs ``crafter_grid`` and ``crafter_grid_delta`` for the symbolic vector (:mod:`reverie.crafter.codec`);
* the episode summary: the Crafter score and per-achievement success rates (:mod:`reverie.crafter.score`);
* the correction loop's effect hook: whether an action changed the inventory;
* recording policies ``scripted`` and ``scripted-curious`` (:mod:`reverie.crafter.scripted`);
* the action names and the studio's keys (crafter's own GUI, plus ``n`` for noop).

Example:
    >>> from reverie.plugins import game_for
    >>> game_for("crafter-symbolic").action_names[:3]
    ('noop', 'move_left', 'move_right')
"""

from __future__ import annotations

from reverie.crafter.env import ACTIONS, EFFECT_KEYS, inventory_changed, make_env
from reverie.crafter.score import summary
from reverie.plugins import Game, register_game

KEYS = {
    "a": "move_left",
    "d": "move_right",
    "w": "move_up",
    "s": "move_down",
    " ": "do",
    "Tab": "sleep",
    "r": "place_stone",
    "t": "place_table",
    "f": "place_furnace",
    "p": "place_plant",
    "1": "make_wood_pickaxe",
    "2": "make_stone_pickaxe",
    "3": "make_iron_pickaxe",
    "4": "make_wood_sword",
    "5": "make_stone_sword",
    "6": "make_iron_sword",
    "n": "noop",
}
"""The studio's keys, as in crafter's own GUI (``run_gui.py``), plus ``n`` for noop."""

GAME = Game(
    name="crafter",
    env_ids=("crafter", "crafter-symbolic"),
    make_env=make_env,
    codecs={
        "crafter_grid": "reverie.crafter.codec:GridCodec",
        "crafter_grid_delta": "reverie.crafter.codec:DeltaCodec",
    },
    summary=summary,
    effect=inventory_changed,
    effect_keys=EFFECT_KEYS,
    policies={
        "scripted": "reverie.crafter.scripted:ScriptedPlayer",
        "scripted-curious": "reverie.crafter.scripted:curious_player",
    },
    action_names=ACTIONS,
    keys=KEYS,
)

register_game(GAME)
