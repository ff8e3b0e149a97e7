"""Getting into position to place something: facing a free cell without stepping into it.

A move action turns the player and walks only if the cell ahead is free, so the player faces a free
cell only right after walking toward it. :func:`stance_action` searches, breadth first over
``(position, facing)`` states and crafter's movement rule, the fewest moves that leave the player
facing a cell where an item may be placed.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from reverie.crafter.scripted.rules import ACTIONS, DO, MOVES
from reverie.crafter.scripted.world import Cell, Snapshot

__all__ = ["stance_action"]

State = tuple[Cell, Cell]  # (position, facing)


def stance_action(
    snap: Snapshot, item: str, stand: np.ndarray | None, depth: int = 4, targets: set[Cell] | None = None
) -> int | None:
    """The first action of the shortest way to place ``item``; None if none is within ``depth`` moves.

    Args:
        snap: the game state.
        item: ``"stone"``, ``"table"``, ``"furnace"`` or ``"plant"``.
        stand: cells the player may place from, (W, H) bool; None: anywhere.
        depth: most moves searched.
        targets: cells to place on; None: any cell where ``item`` may go, or a tree or mineral whose
            removal (one ``do``) leaves such a cell. The player's own cell counts as free.

    Returns:
        The place action itself when the player already faces a good cell, ``do`` to clear one, or the
        first move toward the closest stance.
    """
    place = ACTIONS.index(f"place_{item}")
    where = snap.rules.place[item]["where"]

    def fits(cell: Cell) -> bool:  # the player's own cell is free once it has stepped off
        return snap.material(cell) in where if cell == snap.pos else snap.placeable(cell, item)

    start = (snap.pos, snap.facing)
    parent: dict[State, tuple[State, int] | None] = {start: None}
    queue = deque([(start, 0)])
    while queue:
        (pos, facing), steps = queue.popleft()
        front = (pos[0] + facing[0], pos[1] + facing[1])
        if stand is None or _inside(stand, pos):
            first = _first(parent, (pos, facing))
            if (targets is None or front in targets) and fits(front):
                return place if first is None else first
            if targets is None:
                leaves = snap.rules.collect.get(snap.material(front) or "", {}).get("leaves")
                if snap.obj(front) is None and snap.diggable(front) and leaves in where:
                    return DO if first is None else first
        if steps == depth:
            continue
        for d, move in MOVES.items():
            nxt = (pos[0] + d[0], pos[1] + d[1])
            if snap.material(nxt) == "lava":
                continue
            walks = nxt == snap.pos or snap.walkable(nxt)  # the player's own cell frees up once it leaves
            state = (nxt if walks else pos, d)
            if state not in parent:
                parent[state] = ((pos, facing), move)
                queue.append((state, steps + 1))
    return None


def _first(parent: dict[State, tuple[State, int] | None], state: State) -> int | None:
    """The first move on the way to ``state`` (None: it is the start)."""
    move = None
    link = parent[state]
    while link is not None:
        state, move = link
        link = parent[state]
    return move


def _inside(mask: np.ndarray, cell: Cell) -> bool:
    return 0 <= cell[0] < mask.shape[0] and 0 <= cell[1] < mask.shape[1] and bool(mask[cell])
