"""A scripted Crafter player that plays like a competent but imperfect human, for recording datasets.

:class:`ScriptedPlayer` reads the game's internal state through the env and climbs Crafter's tech tree
(wood -> table -> wood pickaxe -> stone -> stone pickaxe -> coal, iron -> furnace -> iron pickaxe ->
diamond), drinks, eats, sleeps walled in, fights, plants saplings; ``skill`` sets how often it slips
and the seed draws its :class:`Style` (what it builds, how it explores, how eagerly it eats).

Its own choices never include a craft or place action that would fail: the guard
:func:`action_succeeds` replicates crafter's checks and turns such an action into ``noop``. Its
``tries`` option adds random craft and place presses past the guard (most fail), so that recordings
also show what those actions need.

The Crafter plug-in (:mod:`reverie.crafter`) registers the player as the recording policy ``"scripted"`` (a
``factory(env, seed)``) and, pressing a random craft or place action on 3% of its steps, as
``"scripted-curious"`` (:func:`curious_player`), so ``reverie data record --env crafter --policy scripted``
works; crafter itself is imported only when a player is built.

Example:
    >>> from reverie.data import record
    >>> ds = record("crafter", "scripted", episodes=2, folder="data/crafter-scripted")  # doctest: +SKIP
    >>> from reverie.crafter.env import CrafterEnv
    >>> env = CrafterEnv(seed=0, symbolic=True)                                       # doctest: +SKIP
    >>> player = ScriptedPlayer(env, seed=1, skill=0.9, style=Style(swords=0))         # doctest: +SKIP
    >>> obs = env.step({"action": 0, "reset": True})                                  # doctest: +SKIP
    >>> obs = env.step({"action": player(obs)})                                       # doctest: +SKIP
"""

from typing import Any

from reverie.crafter.scripted.player import ScriptedPlayer
from reverie.crafter.scripted.rules import ACTIONS, Rules, action_succeeds, crafter_game
from reverie.crafter.scripted.style import Style

__all__ = ["ACTIONS", "Rules", "ScriptedPlayer", "Style", "action_succeeds", "crafter_game", "curious_player"]


def curious_player(env: Any, seed: int) -> ScriptedPlayer:
    """The scripted player that also presses a random craft or place action on 3% of its steps (most fail), so that
    recordings show what those actions need."""
    return ScriptedPlayer(env, seed, tries=0.03)
