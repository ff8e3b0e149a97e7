"""What the scripted player sets out to do next: targets for needs, the tech tree and side quests.

A :class:`Target` is a path plus what to do at its end (``do`` on a cell, craft, place, sleep). The
:class:`Planner` picks one in order of urgency: drinking, eating, walling in to sleep (when tired, hurt
or at night), quick detours (a cow close by, a stone reserve), then the next step of the tech tree
(wood, table, wood pickaxe, stone, stone pickaxe, coal, iron, furnace, iron pickaxe, with swords as
the style wants); when the tech tree has nothing at hand it gardens (saplings walled in with stone,
eaten when ripe) or hunts monsters; at the end it looks for diamonds and rests. Where the next thing
is not on its map yet, it explores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reverie.crafter.scripted.navigation import UNREACHED, dilate
from reverie.crafter.scripted.rules import ACTIONS, DO, NOOP, SLEEP
from reverie.crafter.scripted.shelter import Shelter, find_shelter, sealed
from reverie.crafter.scripted.style import Style
from reverie.crafter.scripted.world import Cell, Snapshot

__all__ = ["Planner", "Target"]

Check = Callable[[Snapshot], bool]
MINERALS = ("stone", "path", "coal", "iron", "diamond", "lava")
CREATURES = ("cow", "zombie", "skeleton")
DAY = 300
"""Crafter's day length in steps (``Env._update_time``): darkest at step 210 of each day."""
NIGHT = (150, 270)
"""Steps of the day when daylight is below about 0.5 and zombies swarm the grass."""
EVENING = (70, 140)
"""Steps of the day when night sleepers top up water and food."""


@dataclass
class Target:
    """One thing to do: walk (digging where needed) along ``path``, then act.

    At the end of the path the player faces ``face`` and takes ``action`` (repeatedly, until ``until``
    holds or ``valid`` fails); or places ``place`` from a cell of ``stand``; or walls itself into
    ``shelter``; or, with neither, takes ``action`` once (a craft), keeps taking it until ``until``
    (``hold``: sleeping, resting) or simply arrives.
    """

    purpose: str
    path: list[Cell]
    face: Cell | None = None
    action: int = NOOP
    until: Check | None = None
    valid: Check | None = None
    place: str | None = None
    stand: np.ndarray | None = None
    targets: set[Cell] | None = None
    shelter: Shelter | None = None
    born: int = 0
    budget: int = 60
    fired: bool = False
    hold: bool = False


class Planner:
    """Chooses targets for one episode of one player.

    Args:
        style: the player's preferences.
        skill: in [0, 1]; lower skill picks targets less well (noisier distances).
        rng: the player's random generator.
    """

    def __init__(self, style: Style, skill: float, rng: np.random.Generator) -> None:
        self.style, self.skill, self.rng = style, skill, rng
        self.noise = 8.0 * (1.0 - skill)

    # ------------------------------------------------------------------ entry points
    def urgent(self, snap: Snapshot) -> str | None:
        """The pressing need, if any: ``"drink"``, ``"food"`` or ``"sleep"``.

        In the evening it tops up water and food before the night; at night or when tired it waits
        longer before going out for them, and longer still when already walled in.
        """
        inv, style = snap.inv, self.style
        sheltered = sealed(snap)
        tired = self.tired(snap, resting=sheltered)
        drink_low, food_low = style.drink_low, style.food_low
        if tired:
            drink_low, food_low = (0, 0) if sheltered else (min(drink_low, 3), min(food_low, 3))
        elif style.sleep_at_night and EVENING[0] <= snap.game._step % DAY < EVENING[1]:
            drink_low, food_low = max(drink_low, 7), max(food_low, 6)
        if inv["drink"] <= drink_low:
            return "drink"
        if inv["food"] <= food_low:
            return "food"
        return "sleep" if tired else None

    def tired(self, snap: Snapshot, resting: bool = False) -> bool:
        """Time to hole up: energy low, hurt, or (for night sleepers) night.

        ``resting``: already walled in, so it stays a little longer (until healed, rested and morning).
        """
        inv, style = snap.inv, self.style
        night = (NIGHT[0], NIGHT[1] + 15) if resting else (NIGHT[0] - 10, NIGHT[1] - 10)  # in early, out late
        dark = style.sleep_at_night and night[0] <= snap.game._step % DAY < night[1]
        hurt = inv["health"] < (7 if resting else 5)
        energy = inv["energy"] < snap.rules.max_items["energy"] if resting else inv["energy"] <= style.energy_low
        return dark or hurt or energy

    def choose(self, snap: Snapshot, skip: set[str]) -> Target | None:
        """The next target; needs in ``skip`` (recently found impossible) are not tried."""
        choosers = (("drink", self.drink), ("food", self.food), ("sleep", self.sleep))
        need = self.urgent(snap)
        for name, chooser in choosers:
            if name == need and name not in skip:
                target = chooser(snap)
                if target is not None:
                    return self._stamp(snap, target)
                skip.add(name)
        target = self.side(snap)
        if target is None:
            target = self.tech(snap)
            if target is None or target.purpose.startswith("explore"):  # nothing at hand: time for leisure
                target = self.garden(snap) or self.hunt(snap) or target
        if target is None:
            target = self.late(snap)
        return None if target is None else self._stamp(snap, target)

    def _stamp(self, snap: Snapshot, target: Target) -> Target:
        target.born = snap.step
        target.budget = 10**9 if target.hold else 2 * len(target.path) + 40
        return target

    # ------------------------------------------------------------------ needs
    def drink(self, snap: Snapshot) -> Target | None:
        full: Check = lambda s: s.inv["drink"] >= s.rules.max_items["drink"]  # noqa: E731
        target = self.collect(snap, "water", full, "drink")
        if target is None:
            target = self.explore(snap, "drink", snap.mask("sand", "grass"), _sighted(snap, "water"))
        return target

    def food(self, snap: Snapshot) -> Target | None:
        """Hunt the nearest cow (or eat a ripe plant); cows wander slowly, so it remembers roughly where
        it saw them: any cow on a part of the map it has seen counts as known."""
        full = snap.rules.max_items["food"] - 2
        plants = [c for c in snap.memory.plants if _ripe(snap, c)]
        cows = [c for c in _creatures(snap, "cow") if snap.known[c]]
        cell = snap.nearest(_cells(snap, plants + cows), self.rng, self.noise, adjacent=True)
        if cell is not None:
            expect = "plant" if cell in plants else "cow"
            return self.act_on(snap, "food", cell, DO, lambda s: s.inv["food"] >= full, _holds(cell, expect))
        return self.explore(snap, "food", snap.mask("grass"), _new_sight(snap, "cow"))

    def sleep(self, snap: Snapshot) -> Target | None:
        """Wall in and sleep (or rest awake at night and while hurt); drink and eat first if low."""
        inv = snap.inv
        if sealed(snap):
            return self.rest(snap)
        for low, chooser in ((inv["drink"] <= 5, self.drink), (inv["food"] <= 4, self.food)):
            if low and inv["energy"] > 1:
                target = chooser(snap)  # top up first if it is close by
                if target is not None and target.face is not None and len(target.path) <= 12:
                    return target
        shelter = find_shelter(snap, self.rng, self.noise)
        if shelter is not None and snap.field.map[shelter.a] <= 60:
            return Target("sleep", snap.field.path(shelter.a), shelter=shelter, until=sealed)
        if inv["energy"] == 0 and not any(k == "zombie" for k, _, _ in snap.objects()):
            return self.rest(snap)  # exhausted: sleep in the open
        if inv["wood_pickaxe"] and inv["stone"] < 3:
            return self.gather(snap, "stone", 4)
        return None

    def rest(self, snap: Snapshot) -> Target:
        """Stay put, asleep while not rested, until no longer tired or a need calls."""
        until: Check = lambda s: not self.tired(s, resting=True) or self.urgent(s) in ("drink", "food")  # noqa: E731
        return Target("sleep", [], action=SLEEP, until=until, hold=True)

    # ------------------------------------------------------------------ tech tree
    def recipes(self) -> list[str]:
        """The items to make, in the order this style makes them."""
        out = []
        for tier, metal in enumerate(("wood", "stone", "iron")):
            pair = [f"{metal}_pickaxe"] + ([f"{metal}_sword"] if self.style.swords > tier else [])
            out += pair[::-1] if self.style.sword_first else pair
        return out

    def tech(self, snap: Snapshot) -> Target | None:
        for item in self.recipes():
            if snap.inv[item] == 0 and not (item == "iron_sword" and snap.inv["iron_pickaxe"] == 0):
                return self.make(snap, item)
        return None

    def make(self, snap: Snapshot, item: str) -> Target | None:
        rules, inv = snap.rules, snap.inv
        if item == "iron_sword" and inv["diamond"] == 0:
            diamond = self.collect_known(snap, "diamond", 1)
            if diamond is not None:
                return diamond
        uses, stations = rules.cost("make", item), rules.make[item]["nearby"]
        for resource in ("wood", "stone", "coal", "iron"):
            if inv[resource] < uses.get(resource, 0):
                return self.gather(snap, resource, self.stock(snap, resource, uses))
        site = self.site(snap, stations)
        cell = snap.nearest(site, self.rng, self.noise, adjacent=False)
        if cell is not None and snap.field.map[cell] <= self.style.far:
            made = inv[item]
            return Target(item, snap.field.path(cell), action=ACTIONS.index(f"make_{item}"), until=_more(item, made))
        return self.build(snap, stations, uses)

    def build(self, snap: Snapshot, stations: list[str], uses: dict[str, int]) -> Target | None:
        """Place the missing station: a table here, or a furnace beside the nearest table."""
        inv, rules = snap.inv, snap.rules
        tables = self.site(snap, ["table"])
        cell = snap.nearest(tables, self.rng, 0.0, adjacent=False)
        if "table" in stations and (cell is None or snap.field.map[cell] > self.style.far):
            need = rules.cost("place", "table")["wood"] + uses.get("wood", 0)
            if inv["wood"] >= need:
                return self.place(snap, "table", snap.mask(*rules.walkable) | _at(snap, snap.pos))
            return self.gather(snap, "wood", min(need + self.style.wood_stock, rules.max_items["wood"]))
        if "furnace" in stations and cell is not None:
            need = rules.cost("place", "furnace")["stone"] + uses.get("stone", 0)
            if inv["stone"] >= need:
                return self.place(snap, "furnace", tables, snap.field.path(cell))
            return self.gather(snap, "stone", min(need + self.style.stone_stock, rules.max_items["stone"]))
        return None

    def stock(self, snap: Snapshot, resource: str, uses: dict[str, int]) -> int:
        """How much of ``resource`` to gather in one go: the recipe's need plus the style's reserve."""
        extra = {"wood": self.style.wood_stock, "stone": self.style.stone_stock}.get(resource, 0)
        if resource == "wood" and self.site(snap, ["table"]).sum() == 0:
            extra += snap.rules.cost("place", "table")["wood"]
        return min(uses.get(resource, 0) + extra, snap.rules.max_items[resource])

    def site(self, snap: Snapshot, stations: list[str]) -> np.ndarray:
        """Cells to stand on with every station within crafter's ``nearby`` square (never on the border
        row or column 0, where crafter's slice would come out empty)."""
        mask = (snap.mask(*snap.rules.walkable) & (snap.world._obj_map == 0)) | _at(snap, snap.pos)
        for station in stations:
            mask &= dilate(snap.mask(station))
        mask[0, :] = mask[:, 0] = False
        return mask

    # ------------------------------------------------------------------ side quests and late game
    def side(self, snap: Snapshot) -> Target | None:
        """Quick things worth a detour: a cow close by, a stone reserve, a first stone and sapling placed."""
        inv = snap.inv
        if inv["food"] <= 6:
            cows = [cell for kind, cell, _ in snap.objects(snap.memory.half) if kind == "cow"]
            cell = snap.nearest(_cells(snap, cows), self.rng, 0.0, adjacent=True) if cows else None
            if cell is not None and snap.field.adjacent[cell] <= 8:
                return self.act_on(snap, "food", cell, DO, lambda s: s.inv["food"] >= 8, _holds(cell, "cow"))
        reserve = min(3, self.style.stone_stock)
        if inv["wood_pickaxe"] and inv["stone"] < reserve:  # stones to wall in for the night
            target = self.collect(snap, "stone", lambda s: s.inv["stone"] > reserve + 1, "stone")
            if target is not None and len(target.path) <= 20:
                return target
        anywhere = snap.mask(*snap.rules.walkable) | _at(snap, snap.pos)
        if inv["stone"] and not snap.player.achievements["place_stone"]:
            return self.place(snap, "stone", anywhere)
        if inv["sapling"] and not snap.player.achievements["place_plant"]:
            return self.place(snap, "plant", anywhere)
        return None

    def garden(self, snap: Snapshot) -> Target | None:
        """Plant saplings, wall the plants in with stone against cows and zombies, eat them when ripe."""
        memory, inv = snap.memory, snap.inv
        memory.plants = [c for c in memory.plants if snap.kind(c) == "plant"]  # forget eaten-up saplings
        ripe = [c for c in memory.plants if _ripe(snap, c)]
        if ripe and inv["food"] < snap.rules.max_items["food"]:
            cell = snap.nearest(_cells(snap, ripe), self.rng, 0.0, adjacent=True)
            if cell is not None and snap.field.adjacent[cell] <= 30:
                return self.act_on(snap, "eat_plant", cell, DO, lambda s: not _ripe(s, cell), _holds(cell, "plant"))
        if self.style.planter <= 0.2:
            return None
        if inv["sapling"] and len(memory.plants) < 4:
            return self.place(snap, "plant", snap.mask(*snap.rules.walkable) | _at(snap, snap.pos))
        near = [c for c in memory.plants if abs(c[0] - snap.pos[0]) + abs(c[1] - snap.pos[1]) <= 10]
        gaps = {n for c in near for _, n in snap.neighbours(c) if snap.material(n) in snap.rules.walkable}
        if gaps and inv["stone"] > 2:
            target = self.place(snap, "stone", None)
            target.purpose, target.targets = "protect_plant", gaps
            return target
        return None

    def hunt(self, snap: Snapshot) -> Target | None:
        """Fight a visible zombie or skeleton for the achievement, when healthy and so inclined."""
        inv, done = snap.inv, snap.player.achievements
        armed = any(inv[f"{m}_sword"] for m in ("wood", "stone", "iron"))
        if inv["health"] < 7 or self.style.aggression < 0.3 or not armed:
            return None
        for kind in ("skeleton", "zombie"):
            if not done[f"defeat_{kind}"]:
                target = self.attack(snap, [cell for k, cell, _ in snap.objects() if k == kind], kind, limit=12)
                if target is not None:
                    return target
        return None

    def attack(self, snap: Snapshot, cells: list[Cell], kind: str, limit: int) -> Target | None:
        """Go and hit the nearest of the creatures at ``cells`` if it is within ``limit`` steps."""
        cell = snap.nearest(_cells(snap, cells), self.rng, 0.0, adjacent=True) if cells else None
        if cell is None or snap.field.adjacent[cell] > limit:
            return None
        return self._stamp(snap, self.act_on(snap, kind, cell, DO, None, _holds(cell, kind)))

    def late(self, snap: Snapshot) -> Target | None:
        """Once the tech tree is done: look for diamonds, then rest walled in (sleeping when not rested)."""
        if snap.inv["diamond"] == 0 and snap.inv["iron_pickaxe"]:
            target = self.collect_known(snap, "diamond", 1)
            target = target or self.explore(snap, "diamond", snap.mask(*MINERALS), None, wander=False)
            if target is not None:
                return target
        if sealed(snap):
            return Target("rest", [], action=SLEEP, until=lambda s: self.urgent(s) is not None, hold=True)
        shelter = find_shelter(snap, self.rng, self.noise)
        if shelter is not None:
            return Target("rest", snap.field.path(shelter.a), shelter=shelter, until=sealed)
        return self.explore(snap, "rest", None, None)

    # ------------------------------------------------------------------ building blocks
    def gather(self, snap: Snapshot, resource: str, amount: int) -> Target | None:
        """Collect ``resource`` until the inventory holds ``amount``; explore where none is known."""
        material = next(m for m, info in snap.rules.collect.items() if resource in info["receive"])
        enough: Check = lambda s: s.inv[resource] >= amount  # noqa: E731
        target = self.collect(snap, material, enough, resource)
        if target is not None:
            return target
        prefer = dilate(dilate(snap.mask(*MINERALS))) if material in MINERALS else snap.mask("grass", "tree")
        sighted = _sighted(snap, material)
        return self.explore(snap, resource, prefer, lambda s: sighted(s) or enough(s))

    def collect_known(self, snap: Snapshot, resource: str, amount: int) -> Target | None:
        material = next(m for m, info in snap.rules.collect.items() if resource in info["receive"])
        return self.collect(snap, material, lambda s: s.inv[resource] >= amount, resource)

    def collect(self, snap: Snapshot, material: str, until: Check, purpose: str) -> Target | None:
        """``do`` on the nearest known cell of ``material`` (None if none is known and reachable)."""
        if not snap.rules.can_collect(material, snap.inv):
            return None
        cell = snap.nearest(snap.mask(material), self.rng, self.noise, adjacent=True)
        if cell is None:
            return None
        return self.act_on(snap, purpose, cell, DO, until, lambda s: s.material(cell) == material)

    def act_on(
        self, snap: Snapshot, purpose: str, cell: Cell, action: int, until: Check | None, valid: Check
    ) -> Target:
        stand = snap.approach(cell)
        path = snap.field.path(stand) if stand is not None else []
        return Target(purpose, path, face=cell, action=action, until=until, valid=valid)

    def place(self, snap: Snapshot, item: str, stand: np.ndarray | None, path: list[Cell] | None = None) -> Target:
        """Place ``item`` from a cell of ``stand`` (reached by ``path``, default: stay here)."""
        count = snap.player.achievements[f"place_{item}"]
        placed: Check = lambda s: s.player.achievements[f"place_{item}"] > count  # noqa: E731
        return Target(f"place_{item}", path or [], place=item, stand=stand, until=placed)

    def explore(
        self, snap: Snapshot, purpose: str, prefer: np.ndarray | None, until: Check | None, wander: bool = True
    ) -> Target | None:
        """Walk to an edge of the known map (a reachable seen cell beside unseen ones).

        Edges are scored by path length, minus a bonus near ``prefer`` cells (grass when looking for
        cows, rock when looking for ore) and a bonus for the unseen area around them, plus noise. With
        no edge left it wanders to a random cell (``wander``) or gives up (None).
        """
        reach = snap.field.map < UNREACHED
        unknown = ~snap.known
        frontier = reach & dilate(unknown, square=False)
        frontier[snap.pos] = False
        if not frontier.any():
            frontier = reach & (snap.field.map >= 8) & wander  # all seen: wander
            if not frontier.any():
                return None
        score = snap.field.map - 0.25 * box_sum(unknown, 6)
        if prefer is not None:
            score = score - np.where(dilate(prefer), 15.0, 0.0)
        noise = 3.0 + 25.0 * self.style.explore + self.noise
        score = np.where(frontier, score + self.rng.exponential(noise, score.shape), np.inf)
        x, y = np.unravel_index(int(np.argmin(score)), score.shape)
        return Target(f"explore:{purpose}", snap.field.path((int(x), int(y))), until=until)


def box_sum(mask: np.ndarray, radius: int) -> np.ndarray:
    """Per cell, how many cells of ``mask`` lie in the square of side ``2 * radius + 1`` around it.

    Example:
        >>> int(box_sum(np.ones((5, 5), bool), 1)[2, 2]), int(box_sum(np.ones((5, 5), bool), 1)[0, 0])
        (9, 4)
    """
    total = np.pad(mask.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    w, h = mask.shape
    x0, x1 = np.clip(np.arange(w) - radius, 0, w), np.clip(np.arange(w) + radius + 1, 0, w)
    y0, y1 = np.clip(np.arange(h) - radius, 0, h), np.clip(np.arange(h) + radius + 1, 0, h)
    return total[x1][:, y1] - total[x0][:, y1] - total[x1][:, y0] + total[x0][:, y0]


def _at(snap: Snapshot, cell: Cell) -> np.ndarray:
    mask = np.zeros(snap.mat.shape, bool)
    mask[cell] = True
    return mask


def _ripe(snap: Snapshot, cell: Cell) -> bool:
    obj = snap.obj(cell)
    return obj is not None and type(obj).__name__ == "Plant" and bool(obj.ripe)


def _creatures(snap: Snapshot, kind: str) -> list[Cell]:
    """Cells of every creature of ``kind`` in the world."""
    return [(int(o.pos[0]), int(o.pos[1])) for o in snap.world.objects if type(o).__name__.lower() == kind]


def _new_sight(snap: Snapshot, kind: str) -> Check:
    """True once a creature of ``kind`` is in view that was not in view now."""
    before = {id(obj) for k, _, obj in snap.objects(snap.memory.half) if k == kind}
    return lambda s: any(k == kind and id(obj) not in before for k, _, obj in s.objects(s.memory.half))


def _cells(snap: Snapshot, cells: list[Cell]) -> np.ndarray:
    mask = np.zeros(snap.mat.shape, bool)
    for x, y in cells:
        mask[x, y] = True
    return mask


def _sighted(snap: Snapshot, material: str) -> Check:
    """True once more cells of ``material`` are known than now (a reachable one may be among them)."""
    count = int(snap.mask(material).sum())
    return lambda s: int(s.mask(material).sum()) > count


def _holds(cell: Cell, kind: str) -> Check:
    return lambda s: s.kind(cell) == kind


def _more(item: str, count: int) -> Check:
    return lambda s: s.inv[item] > count
