"""Crafter's rules as the scripted player needs them, read from crafter's own ``data.yaml``.

The one thing here that must be exact is :func:`action_succeeds`: it replicates the checks of
crafter's ``Player._place`` and ``Player._make`` (``crafter/objects.py``) so that the player never
takes a craft or place action that the game would silently ignore (recorded human play never shows
one; see ``RECIPE.md``, Crafter). Within one ``env.step`` the player object updates before any other
object (it is the first object of the world), so the state read before the step is the state the
game checks.

Example:
    >>> rules = Rules()                                       # doctest: +SKIP
    >>> rules.make["iron_pickaxe"]["nearby"]                  # doctest: +SKIP
    ['table', 'furnace']
    >>> action_succeeds(game, ACTIONS.index("place_table"))   # doctest: +SKIP
    False
"""

from __future__ import annotations

from typing import Any

from reverie.crafter.env import ACTIONS

__all__ = [
    "ACTIONS",
    "DIRECTIONS",
    "MOVES",
    "NEARBY_DISTANCE",
    "Rules",
    "action_succeeds",
    "place_is_contested",
    "crafter_game",
]


DIRECTIONS: tuple[tuple[int, int], ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))
"""``(dx, dy)`` of ``move_left, move_right, move_up, move_down`` in crafter's ``(x, y)`` world coordinates."""

MOVES: dict[tuple[int, int], int] = {
    d: ACTIONS.index(f"move_{n}") for d, n in zip(DIRECTIONS, ("left", "right", "up", "down"), strict=True)
}
"""Direction -> index of the move action that faces (and, if the cell is free, walks) that way."""

NEARBY_DISTANCE = 1
"""Crafter's ``Player._make`` finds stations with ``world.nearby(self.pos, 1)``: the 3x3 square around the player."""

NOOP, DO, SLEEP = ACTIONS.index("noop"), ACTIONS.index("do"), ACTIONS.index("sleep")


class Rules:
    """Crafter's tables (``data.yaml``): walkable materials, collect, place and make requirements, item maxima.

    Reads ``crafter.constants`` at construction (importing crafter then, not when this module loads) and
    checks that crafter's action list is :data:`ACTIONS`.

    Raises:
        ValueError: the installed crafter orders its actions differently.
    """

    def __init__(self) -> None:
        from crafter import constants

        if tuple(constants.actions) != ACTIONS:
            raise ValueError(f"crafter's actions {constants.actions} differ from the scripted player's {ACTIONS}.")
        self.walkable: tuple[str, ...] = tuple(constants.walkable)
        self.collect: dict[str, Any] = dict(constants.collect)
        self.place: dict[str, Any] = dict(constants.place)
        self.make: dict[str, Any] = dict(constants.make)
        self.max_items: dict[str, int] = {name: info["max"] for name, info in constants.items.items()}

    def can_collect(self, material: str, inventory: dict[str, int]) -> bool:
        """Whether ``do`` on ``material`` yields its item with this inventory (tools are never used up)."""
        info = self.collect.get(material)
        return info is not None and all(inventory[k] >= v for k, v in info["require"].items())

    def cost(self, kind: str, name: str) -> dict[str, int]:
        """Items used by ``place`` or ``make`` of ``name`` (``kind`` is ``"place"`` or ``"make"``)."""
        table = self.place if kind == "place" else self.make
        return dict(table[name]["uses"])

    def affordable(self, kind: str, name: str, inventory: dict[str, int]) -> bool:
        """Whether the inventory holds the items that placing or making ``name`` uses."""
        return all(inventory[k] >= v for k, v in self.cost(kind, name).items())


def crafter_game(env: Any) -> Any:
    """The ``crafter.Env`` behind ``env``: a Reverie env (wrappers are unwrapped) or a crafter env itself.

    Raises:
        TypeError: ``env`` holds no crafter game.

    Example:
        >>> crafter_game(CrafterEnv(seed=0))  # doctest: +SKIP
        <crafter.env.Env object at ...>
    """
    base = env
    for _ in range(16):  # Reverie wrappers keep the wrapped env in `.env`
        if hasattr(base, "crafter_env"):
            return base.crafter_env
        if hasattr(base, "_world") and hasattr(base, "_player"):
            return base
        if not hasattr(base, "env"):
            break
        base = base.env
    raise TypeError(f"{type(env).__name__} is not a Crafter env (it has no crafter_env attribute).")


def action_succeeds(game: Any, action: int, rules: Rules | None = None) -> bool:
    """Whether a ``place_*`` or ``make_*`` action would take effect in the game's current state.

    Replicates crafter's ``Player.update``: a sleeping player whose energy is below its maximum sleeps
    whatever the action; ``_place`` needs the facing cell free of objects, of a material the item may be
    placed on and the items it uses; ``_make`` needs the stations within ``world.nearby(pos, 1)`` and the
    items. A make whose product is already at its maximum would be clamped away, so it counts as failing.
    Other actions always return True (an idle ``do`` or a blocked move is legal play).

    Args:
        game: the ``crafter.Env`` (see :func:`crafter_game`), before the step.
        action: an index into :data:`ACTIONS`.
        rules: crafter's rules (read once and passed in to save time).
    """
    name = ACTIONS[action]
    if not name.startswith(("place_", "make_")):
        return True
    rules = rules or Rules()
    player, world = game._player, game._world
    inventory = player.inventory
    if player.sleeping and inventory["energy"] < rules.max_items["energy"]:
        return False
    if name.startswith("place_"):
        item = name[len("place_") :]
        target = (int(player.pos[0] + player.facing[0]), int(player.pos[1] + player.facing[1]))
        material, obj = world[target]
        if obj is not None or material not in rules.place[item]["where"]:
            return False
        return rules.affordable("place", item, inventory)
    item = name[len("make_") :]
    nearby, _ = world.nearby(player.pos, NEARBY_DISTANCE)
    if not all(station in nearby for station in rules.make[item]["nearby"]):
        return False
    gives = rules.make[item]["gives"]
    return rules.affordable("make", item, inventory) and inventory[item] + gives <= rules.max_items[item]


def place_is_contested(game: Any, action: int) -> bool:
    """Whether a creature or arrow could step into a ``place_*`` target during this very step.

    Crafter updates its objects in list order, which need not put the player first, so a zombie, cow or
    arrow next to the target cell may take it before the placement happens: :func:`action_succeeds`
    cannot see that. A careful player (and the recordings it makes) waits instead.
    """
    if not ACTIONS[action].startswith("place_"):
        return False
    player = game._player
    tx, ty = int(player.pos[0] + player.facing[0]), int(player.pos[1] + player.facing[1])
    for obj in game._world.objects:
        if obj is player:
            continue
        if abs(int(obj.pos[0]) - tx) + abs(int(obj.pos[1]) - ty) <= 1:
            return True
    return False
