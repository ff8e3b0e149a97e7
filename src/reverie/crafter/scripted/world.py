"""What the scripted player knows at one step: the map it has seen, its vitals, nearby creatures, paths.

The player reads crafter's internal state (``game._world``, ``game._player``), but plans only over
cells it has seen: :class:`Memory` marks the cells of every local view (9 x 7 around the player, as the
pixels show them), so that it explores like a human who remembers the map. (Cows on ground it has
seen count as known even out of view: a human remembers roughly where the herd grazes.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reverie.crafter.scripted.navigation import UNREACHED, Grid, adjacent_min, shortest_paths
from reverie.crafter.scripted.rules import DIRECTIONS, Rules

__all__ = ["Field", "Memory", "Snapshot"]

Cell = tuple[int, int]

PATH_LIMIT = 160
"""Longest path (in steps, digging counted twice) the player plans; farther cells count as unreachable."""
EXPOSED_COST = 4
"""Extra path cost of a cell in a skeleton's line of fire (arrows do 2 damage)."""


class Memory:
    """What the player remembers this episode: the cells it has seen (``known``, a ``(width, height)`` bool
    map), the saplings it planted (``plants``) and targets it gave up on for a while (``avoid``).

    Args:
        area: the world's ``(width, height)``.
        view: the local view's ``(columns, rows)`` (crafter's 9 x 7 for its default ``view=(9, 9)``).
    """

    def __init__(self, area: tuple[int, int], view: tuple[int, int] = (9, 7)) -> None:
        self.known = np.zeros(area, bool)
        self.half = (view[0] // 2, view[1] // 2)
        self.plants: list[Cell] = []
        self.avoid: dict[Cell, int] = {}  # cell -> step until which targets there are skipped

    def see(self, pos: Cell) -> None:
        """Mark the local view around ``pos`` as seen."""
        (x, y), (hx, hy) = pos, self.half
        self.known[max(x - hx, 0) : x + hx + 1, max(y - hy, 0) : y + hy + 1] = True


class Field:
    """Shortest paths from the player this step: ``dist`` and ``parent`` lists and ``dist`` as a map."""

    def __init__(self, grid: Grid, cost: list[int], start: int) -> None:
        self.grid = grid
        self.dist, self.parent = shortest_paths(grid, cost, start, PATH_LIMIT)
        self.map = np.array(self.dist, np.int64).reshape(grid.width, grid.height)  # (W, H)
        self._adjacent: np.ndarray | None = None

    @property
    def adjacent(self) -> np.ndarray:
        """Per cell, the distance to the nearest cell beside it: the cost of reaching it to act on it."""
        if self._adjacent is None:
            self._adjacent = adjacent_min(self.map)
        return self._adjacent

    def path(self, cell: Cell) -> list[Cell]:
        """Cells of the shortest path to ``cell`` (start excluded, ``cell`` included)."""
        return [self.grid.cell(i) for i in self.grid.path(self.parent, self.grid.index(*cell))]


class Snapshot:
    """The game state one decision reads: position, facing, inventory, map ids, masks and the path field.

    Args:
        game: the ``crafter.Env``.
        rules: crafter's rules.
        grid: the world's geometry.
        memory: the player's memory of the map this episode.
        step: steps taken in this episode.
    """

    def __init__(self, game: Any, rules: Rules, grid: Grid, memory: Memory, step: int) -> None:
        self.game, self.rules, self.grid, self.memory, self.step = game, rules, grid, memory, step
        self.world, self.player = game._world, game._player
        self.inv: dict[str, int] = self.player.inventory
        self.pos: Cell = (int(self.player.pos[0]), int(self.player.pos[1]))
        self.facing: Cell = (int(self.player.facing[0]), int(self.player.facing[1]))
        self.mat: np.ndarray = self.world._mat_map  # (W, H) material ids
        self.ids: dict[str, int] = self.world._mat_ids
        self.known = memory.known
        self._field: Field | None = None
        self._objects: dict[Cell, list[tuple[str, Cell, Any]]] = {}

    # ------------------------------------------------------------------ cells
    @property
    def front(self) -> Cell:
        return (self.pos[0] + self.facing[0], self.pos[1] + self.facing[1])

    def material(self, cell: Cell) -> str | None:
        """Material at ``cell`` (None outside the world)."""
        return self.world[cell][0]

    def obj(self, cell: Cell) -> Any:
        """The creature or plant at ``cell`` (None if there is none)."""
        return self.world[cell][1]

    def kind(self, cell: Cell) -> str | None:
        """Lower-case class name of the object at ``cell`` (``"cow"``, ``"zombie"``, ``"plant"``...)."""
        obj = self.obj(cell)
        return None if obj is None else type(obj).__name__.lower()

    def walkable(self, cell: Cell) -> bool:
        """A cell the player can step into safely: walkable material, no object (never lava)."""
        material, obj = self.world[cell]
        return obj is None and material in self.rules.walkable

    def placeable(self, cell: Cell, item: str) -> bool:
        """Whether ``item`` may be placed on ``cell`` (material and no object; items not checked)."""
        material, obj = self.world[cell]
        return obj is None and material in self.rules.place[item]["where"]

    def diggable(self, cell: Cell) -> bool:
        """A solid cell that ``do`` removes with the current tools (trees, and minerals with a pickaxe)."""
        material = self.material(cell)
        return material is not None and material in self.dig_materials()

    def dig_materials(self) -> tuple[str, ...]:
        """Materials that ``do`` turns walkable with the current tools (trees leave grass, minerals path)."""
        solid = [m for m, info in self.rules.collect.items() if info["leaves"] != m]
        return tuple(m for m in solid if m not in self.rules.walkable and self.rules.can_collect(m, self.inv))

    def neighbours(self, cell: Cell) -> list[tuple[Cell, Cell]]:
        """``(direction, neighbour)`` pairs of ``cell`` inside the world."""
        w, h = self.grid.width, self.grid.height
        out = []
        for d in DIRECTIONS:
            n = (cell[0] + d[0], cell[1] + d[1])
            if 0 <= n[0] < w and 0 <= n[1] < h:
                out.append((d, n))
        return out

    # ------------------------------------------------------------------ maps
    def mask(self, *names: str, known: bool = True) -> np.ndarray:
        """Cells of the given materials, (W, H) bool; only seen cells when ``known``."""
        ids = [self.ids[n] for n in names if n in self.ids]
        out = np.isin(self.mat, ids)
        return out & self.known if known else out

    def objects(self, radius: Cell = (6, 5)) -> list[tuple[str, Cell, Any]]:
        """``(kind, cell, obj)`` of the creatures and plants within ``radius`` of the player (itself excluded)."""
        if radius not in self._objects:
            (x, y), (rx, ry) = self.pos, radius
            x0, y0 = max(x - rx, 0), max(y - ry, 0)
            window = self.world._obj_map[x0 : x + rx + 1, y0 : y + ry + 1]
            found = []
            for i, j in zip(*np.nonzero(window), strict=True):
                obj = self.world._objects[window[i, j]]
                if obj is not None and obj is not self.player:
                    found.append((type(obj).__name__.lower(), (x0 + int(i), y0 + int(j)), obj))
            self._objects[radius] = found
        return self._objects[radius]

    def cost(self) -> list[int]:
        """Per flat cell: 1 to walk in, 2 to dig or chop then walk in, 0 never (unseen, water, lava, creatures);
        plus :data:`EXPOSED_COST` in the line of fire of a skeleton nearby."""
        walk = self.mask(*self.rules.walkable) & (self.world._obj_map == 0)
        dig = self.mask(*self.dig_materials())
        cost = walk.astype(np.int64) + 2 * dig.astype(np.int64)
        cost[self.exposed() & (cost > 0)] += EXPOSED_COST
        return cost.ravel().tolist()

    def exposed(self) -> np.ndarray:
        """Cells a skeleton within 8 steps could shoot: up to 5 cells straight from it over open ground."""
        out = np.zeros(self.mat.shape, bool)
        flies = (*self.rules.walkable, "water", "lava")
        for kind, (x, y), _ in self.objects((8, 8)):
            if kind != "skeleton":
                continue
            for dx, dy in DIRECTIONS:
                for k in range(1, 6):
                    cell = (x + k * dx, y + k * dy)
                    if self.material(cell) not in flies:
                        break
                    out[cell] = True
        return out

    @property
    def field(self) -> Field:
        """Shortest paths from the player (computed once per snapshot, on first use)."""
        if self._field is None:
            self._field = Field(self.grid, self.cost(), self.grid.index(*self.pos))
        return self._field

    def nearest(self, mask: np.ndarray, rng: np.random.Generator, noise: float, adjacent: bool) -> Cell | None:
        """The reachable cell of ``mask`` with the shortest path, perturbed by ``noise`` (exponential, in steps).

        Args:
            mask: candidate cells, (W, H) bool.
            rng: draws the noise.
            noise: scale of the exponential noise added to each candidate's distance (0: the nearest).
            adjacent: the cell is acted on from beside it (solid targets) rather than walked to.
        """
        dist = self.field.adjacent if adjacent else self.field.map
        xs, ys = np.nonzero(mask & (dist < UNREACHED))
        if len(xs) == 0:
            return None
        if self.memory.avoid:
            avoid = self.memory.avoid
            keep = [avoid.get((int(x), int(y)), -1) < self.step for x, y in zip(xs, ys, strict=True)]
            xs, ys = xs[keep], ys[keep]
            if len(xs) == 0:
                return None
        score = dist[xs, ys].astype(np.float64)
        if noise > 0:
            score += rng.exponential(noise, len(xs))
        k = int(np.argmin(score))
        return int(xs[k]), int(ys[k])

    def approach(self, target: Cell) -> Cell | None:
        """The reachable neighbour of ``target`` with the shortest path (the player's cell counts)."""
        best, best_dist = None, UNREACHED
        for _, n in self.neighbours(target):
            d = self.field.dist[self.grid.index(*n)]
            if d < best_dist:
                best, best_dist = n, d
        return best
