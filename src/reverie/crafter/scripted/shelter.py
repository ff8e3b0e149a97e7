"""Sleeping safely: pick a two-cell pocket, wall it in with stone, and sleep inside.

A sleeping player takes 7 damage from a zombie, so the player sleeps walled in. It cannot face a free
cell without stepping into it (a move turns the player and walks if the cell is free), so a one-cell
hole can never be closed from inside. The pocket is a line ``a -> b -> c -> f`` along a direction
``d``: the cells beside ``b`` and ``c`` must be solid -- rock, trees, water -- or are walled with stone
first, from outside; then the player walks (or digs) from ``a`` into ``b`` and ``c``, places a stone
on ``f`` if it is open, steps back into ``b`` -- now facing ``a`` -- and places a stone on ``a``.
Zombies walk on grass, sand and path only, so the pocket ``{b, c}`` is then sealed; digging out in
the morning gives the stones back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reverie.crafter.scripted.navigation import UNREACHED
from reverie.crafter.scripted.rules import ACTIONS, DIRECTIONS, DO, MOVES, NOOP, SLEEP
from reverie.crafter.scripted.stance import stance_action
from reverie.crafter.scripted.world import Cell, Snapshot

__all__ = ["Shelter", "find_shelter", "sealed", "shelter_action"]

PLACE_STONE = ACTIONS.index("place_stone")
MONSTERS = ("zombie", "skeleton")
_PAD = 4
_SIDE_COST = 4.0  # walking around to wall a side from outside


@dataclass(frozen=True)
class Shelter:
    """A pocket to sleep in: entrance ``a``, pocket ``b`` and ``c``, far end ``f``, direction ``d``, and
    the four cells beside ``b`` and ``c``."""

    a: Cell
    b: Cell
    c: Cell
    f: Cell
    d: Cell
    sides: tuple[Cell, ...]


def _at(padded: np.ndarray, offset: Cell, shape: tuple[int, int]) -> np.ndarray:
    """``out[x, y] = map[x + ox, y + oy]`` for a map padded by ``_PAD`` cells on each side."""
    ox, oy = _PAD + offset[0], _PAD + offset[1]
    return padded[ox : ox + shape[0], oy : oy + shape[1]]


def find_shelter(snap: Snapshot, rng: np.random.Generator, noise: float) -> Shelter | None:
    """The pocket with the cheapest plan (walk, dig, wall, place), perturbed by ``noise``; None if none.

    Needs the stones it will place (``a``, ``f`` if open, open sides), counting the stones that
    digging ``b`` and ``c`` yields. Unseen cells are never taken for walls; the world's edge is.
    """
    shape = snap.mat.shape
    free = snap.world._obj_map == 0
    dig = snap.mask(*snap.dig_materials())
    enter = np.pad((snap.mask(*snap.rules.walkable) & free) | dig, _PAD)
    solid = snap.known & ~np.isin(snap.mat, [snap.ids[m] for m in snap.rules.walkable])
    wall = np.pad(solid, _PAD, constant_values=True)
    opened = np.pad(snap.mask(*snap.rules.place["stone"]["where"]) & free & ~solid, _PAD).astype(np.int64)
    stone = np.pad(snap.mask("stone") & dig, _PAD).astype(np.int64)
    dig_p = np.pad(dig, _PAD).astype(np.int64)
    reach = snap.field.map
    best: tuple[float, Shelter] | None = None
    for d in DIRECTIONS:
        p = (d[1], d[0])
        b, c, f = d, (2 * d[0], 2 * d[1]), (3 * d[0], 3 * d[1])
        sides = [(k * d[0] + s * p[0], k * d[1] + s * p[1]) for k in (1, 2) for s in (1, -1)]
        ok = (reach < UNREACHED) & _at(enter, b, shape) & _at(enter, c, shape)
        open_sides = np.zeros(shape, np.int64)
        for side in [*sides, f]:
            ok &= _at(wall, side, shape) | _at(opened, side, shape).astype(bool)
            open_sides += _at(opened, side, shape)
        f_open = _at(opened, f, shape)
        ok &= snap.inv["stone"] >= open_sides - f_open  # the sides are walled before digging in
        ok &= snap.inv["stone"] + _at(stone, b, shape) + _at(stone, c, shape) >= 1 + open_sides
        xs, ys = np.nonzero(ok)
        if len(xs) == 0:
            continue
        score = reach + _at(dig_p, b, shape) + _at(dig_p, c, shape) + _SIDE_COST * (open_sides - f_open) + f_open
        score = score[xs, ys].astype(np.float64)
        if noise > 0:
            score += rng.exponential(noise, len(xs))
        k = int(np.argmin(score))
        if best is None or score[k] < best[0]:
            x, y = int(xs[k]), int(ys[k])
            b_, c_, f_ = ((x + o[0], y + o[1]) for o in (b, c, f))
            shelter = Shelter((x, y), b_, c_, f_, d, tuple((x + s[0], y + s[1]) for s in sides))
            best = (float(score[k]), shelter)
    return None if best is None else best[1]


def sealed(snap: Snapshot) -> bool:
    """Whether the open cells around the player (grass, sand, path) form a closed pocket of at most 3 cells
    with no monster inside."""
    seen, todo = {snap.pos}, [snap.pos]
    while todo:
        cell = todo.pop()
        if snap.kind(cell) in MONSTERS:
            return False
        for _, n in snap.neighbours(cell):
            if n not in seen and snap.material(n) in snap.rules.walkable:
                seen.add(n)
                todo.append(n)
                if len(seen) > 3:
                    return False
    return True


def shelter_action(snap: Snapshot, shelter: Shelter) -> int | None:
    """The next action of walling in and falling asleep; None when the plan no longer fits the world."""
    if sealed(snap):
        return SLEEP
    open_sides = {w for w in shelter.sides if snap.material(w) in snap.rules.walkable}
    if open_sides:
        free = {w for w in open_sides if snap.placeable(w, "stone") or w == snap.pos}
        if snap.inv["stone"] < len(open_sides):
            return None
        return stance_action(snap, "stone", None, depth=10, targets=free) if free else NOOP
    return _enter(snap, shelter)


def _enter(snap: Snapshot, shelter: Shelter) -> int | None:
    """Walk or dig from ``a`` into ``c``, close ``f``, step back into ``b`` and close ``a``."""
    d, back = shelter.d, (-shelter.d[0], -shelter.d[1])
    pos, inv = snap.pos, snap.inv
    if pos == shelter.a:
        if snap.walkable(shelter.b):
            return MOVES[d]
        if snap.diggable(shelter.b):
            return DO if snap.facing == d else MOVES[d]
        return None
    if pos == shelter.b:
        if snap.facing == back:
            if snap.placeable(shelter.a, "stone") and inv["stone"] >= 1:
                return PLACE_STONE
            return DO if snap.kind(shelter.a) in ("zombie", "cow", "skeleton") else NOOP
        if snap.diggable(shelter.c) and snap.facing == d:
            return DO
        return MOVES[d] if snap.walkable(shelter.c) or snap.diggable(shelter.c) else None
    if pos == shelter.c:
        if snap.material(shelter.f) in snap.rules.place["stone"]["where"]:
            if snap.obj(shelter.f) is not None:
                return DO if snap.facing == d and snap.kind(shelter.f) in ("zombie", "cow", "skeleton") else NOOP
            return PLACE_STONE if snap.facing == d and inv["stone"] >= 2 else None
        return MOVES[back] if snap.walkable(shelter.b) else None
    return None
