"""Turning a :class:`~reverie.crafter.scripted.goals.Target` into the next action: walk, dig, face, act, place.

Crafter's movement decides much of this: a move action turns the player and walks only into a free
walkable cell, so the player can face a solid cell (a tree, water, a cow) without moving, but can face
an open cell only by having just walked toward it (see :mod:`reverie.crafter.scripted.stance` for placing).
"""

from __future__ import annotations

from reverie.crafter.scripted.goals import CREATURES, Target
from reverie.crafter.scripted.rules import ACTIONS, DO, MOVES, NOOP, SLEEP
from reverie.crafter.scripted.shelter import shelter_action
from reverie.crafter.scripted.stance import stance_action
from reverie.crafter.scripted.world import Cell, Snapshot

__all__ = ["follow"]

MAKES = {ACTIONS.index(a) for a in ACTIONS if a.startswith("make_")}


def follow(snap: Snapshot, target: Target) -> int | None:
    """The next action toward ``target``; None when it is reached, met, stale or impossible."""
    if target.until is not None and target.until(snap):
        return None
    if snap.step - target.born > target.budget:
        if target.face is not None:
            snap.memory.avoid[target.face] = snap.step + 200
        return None
    while target.path and target.path[0] == snap.pos:
        target.path.pop(0)
    if target.path:
        return _walk(snap, target.path[0])
    if target.shelter is not None:
        return shelter_action(snap, target.shelter)
    if target.place is not None:
        if target.targets is None:
            return stance_action(snap, target.place, target.stand)
        free = {cell for cell in target.targets if snap.placeable(cell, target.place) or cell == snap.pos}
        return stance_action(snap, target.place, target.stand, depth=8, targets=free) if free else None
    if target.face is None:
        if target.action in MAKES:
            if target.fired:
                return None
            target.fired = True
        if target.action == SLEEP and snap.inv["energy"] >= snap.rules.max_items["energy"]:
            return NOOP if target.hold else None  # crafter ignores sleep when rested
        return target.action if target.hold or target.action in MAKES else None
    if target.valid is not None and not target.valid(snap):
        return None
    return _act_on(snap, target.face, target.action)


def _direction(a: Cell, b: Cell) -> Cell | None:
    d = (b[0] - a[0], b[1] - a[1])
    return d if abs(d[0]) + abs(d[1]) == 1 else None


def _walk(snap: Snapshot, cell: Cell) -> int | None:
    """Step into the next cell of a path: walk, or chop/mine it first, or clear a creature out of the way."""
    d = _direction(snap.pos, cell)
    if d is None:
        return None
    if snap.walkable(cell):
        return MOVES[d]
    kind = snap.kind(cell)
    if kind in CREATURES:
        return DO if snap.facing == d else MOVES[d]
    if kind == "arrow":
        return NOOP
    if kind is None and snap.diggable(cell):
        return DO if snap.facing == d else MOVES[d]
    return None


def _act_on(snap: Snapshot, cell: Cell, action: int) -> int | None:
    """Face the solid or occupied ``cell`` beside the player, then take ``action``."""
    d = _direction(snap.pos, cell)
    if d is None:
        return None
    if snap.facing == d:
        return action
    if snap.walkable(cell) or snap.material(cell) == "lava":
        return None  # pressing toward it would walk in
    return MOVES[d]
