"""The scripted Crafter player: a competent but imperfect human, for recording datasets of play."""

from __future__ import annotations

from typing import Any

import numpy as np

from reverie.crafter.scripted.execute import follow
from reverie.crafter.scripted.goals import Planner, Target
from reverie.crafter.scripted.navigation import Grid
from reverie.crafter.scripted.rules import (
    ACTIONS,
    DIRECTIONS,
    DO,
    MOVES,
    NOOP,
    Rules,
    action_succeeds,
    crafter_game,
    place_is_contested,
)
from reverie.crafter.scripted.style import Style
from reverie.crafter.scripted.world import Cell, Memory, Snapshot
from reverie.data.record import PolicyError

__all__ = ["ScriptedPlayer"]

NEEDS = ("drink", "food", "sleep")
HOSTILE = ("zombie", "skeleton")
VALUABLE = ("diamond", "iron", "coal")
PLACE_PLANT = ACTIONS.index("place_plant")
CRAFTS = tuple(i for i, name in enumerate(ACTIONS) if name.startswith(("place_", "make_")))


class ScriptedPlayer:
    """Plays Crafter from the game's internal state like a competent human, with mistakes.

    It climbs the tech tree (wood, table, wood pickaxe, stone, stone pickaxe, coal, iron, furnace, iron
    pickaxe, diamond; swords as its style likes), drinks, eats cows, plants saplings walled in with stone
    and eats them when ripe, sleeps walled in when tired, hurt or at night, fights monsters and keeps
    out of skeletons' line of fire. It plans paths (digging through rock once it has a pickaxe) over the
    cells it has seen and explores the rest.

    Its own choices never include a ``place_*`` or ``make_*`` action that the game would ignore: a final
    guard (:func:`~reverie.crafter.scripted.rules.action_succeeds`, crafter's own checks) turns any such action
    into ``noop``. Nor does it ever step into lava. With ``tries`` it also presses a random ``place_*`` or
    ``make_*`` action now and then, past the guard, as a curious player tries what a button does: a
    recording then shows what each of those actions needs, not only the times it worked.

    Args:
        env: a Reverie Crafter env (``CrafterEnv``, wrapped or not) or a ``crafter.Env``; the player
            reads its internal state each step.
        seed: seeds the player's choices and, unless ``style`` is given, its styles.
        skill: in ``[0, 1]``; lower skill makes more mistakes: random moves and noops, wandering off,
            less well chosen targets. At 1 the player is still imperfect by design (it explores).
        style: a fixed :class:`Style` for every episode; None draws a new style at each episode.
        tries: the chance per step (awake) of pressing a random ``place_*`` or ``make_*`` action whatever
            the inventory and surroundings; most such presses change nothing in the game. 0 never does
            (and draws nothing extra from the player's random generator).

    Raises:
        PolicyError: ``env`` is not a Crafter env.
        ValueError: ``skill`` or ``tries`` outside ``[0, 1]``.

    Example:
        >>> from reverie.crafter.env import CrafterEnv
        >>> env = CrafterEnv(seed=0, symbolic=True)              # doctest: +SKIP
        >>> player = ScriptedPlayer(env, seed=0)                 # doctest: +SKIP
        >>> obs = env.step({"action": 0, "reset": True})         # doctest: +SKIP
        >>> while not obs["is_last"]:                            # doctest: +SKIP
        ...     obs = env.step({"action": player(obs)})
    """

    def __init__(
        self, env: Any, seed: int = 0, skill: float = 0.8, style: Style | None = None, tries: float = 0.0
    ) -> None:
        for name, value in (("skill", skill), ("tries", tries)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}.")
        try:
            self.game = crafter_game(env)
        except TypeError as err:
            raise PolicyError(f"Policy 'scripted' plays Crafter only: {err}") from None
        self.rules = Rules()
        self.skill = skill
        self.tries = tries
        self.rng = np.random.default_rng(seed)
        self.fixed_style = style
        self.style = style or Style.sample(self.rng)
        self.grid = Grid(tuple(self.game._world.area))
        view = getattr(getattr(self.game, "_local_view", None), "_grid", (9, 7))
        self.view = (int(view[0]), int(view[1]))
        self.episodes = 0
        self._current: Any = None

    # ------------------------------------------------------------------ episode
    def _begin(self) -> None:
        """Forget the last episode: new map memory, target and (without a fixed style) a new style."""
        if self.episodes and self.fixed_style is None:
            self.style = Style.sample(self.rng)
        self.episodes += 1
        self._current = self.game._player
        self.memory = Memory(tuple(self.game._world.area), self.view)
        self.planner = Planner(self.style, self.skill, self.rng)
        self.target: Target | None = None
        self.step = 0
        self.skip: dict[str, int] = {}
        self.wander = 0

    def __call__(self, obs: Any) -> int:
        """The action for this step (an index into crafter's 17 actions); ``obs`` is not read."""
        if self.game._player is not self._current:
            self._begin()
        snap = Snapshot(self.game, self.rules, self.grid, self.memory, self.step)
        self.memory.see(snap.pos)
        action = self._decide(snap)
        action = self._mistake(snap, action)
        self.step += 1
        action = self._guard(snap, action)
        pressed = bool(self.tries) and not snap.player.sleeping and self.rng.random() < self.tries
        if pressed:
            action = int(self.rng.choice(CRAFTS))  # a curious press, past the guard: it may well fail
        if action == PLACE_PLANT and (not pressed or action_succeeds(self.game, action, self.rules)):
            self.memory.plants.append(snap.front)
        return action

    # ------------------------------------------------------------------ deciding
    def _decide(self, snap: Snapshot) -> int:
        if snap.player.sleeping:
            return NOOP
        for reflex in (self._react, self._opportunity):
            action = reflex(snap)
            if action is not None:
                return action
        need = self.planner.urgent(snap)
        skip = {k for k, until in self.skip.items() if until > self.step}
        target = self.target
        if target is not None and need and need not in skip and target.purpose.removeprefix("explore:") not in NEEDS:
            target = None
        for _ in range(2):
            if target is None:
                target = self.planner.choose(snap, skip)
                for name in skip - {k for k, until in self.skip.items() if until > self.step}:
                    self.skip[name] = self.step + 25
            action = follow(snap, target) if target is not None else None
            if action is not None:
                self.target = target
                return action
            target = None
        self.target = None
        return self._random_move(snap)

    def _react(self, snap: Snapshot) -> int | None:
        """Fight an adjacent monster; go for a skeleton a few steps away before it shoots again."""
        hostiles = [(kind, cell) for kind, cell, _ in snap.objects() if kind in HOSTILE]
        adjacent = [cell for _, cell in hostiles if _distance(cell, snap.pos) == 1]
        if adjacent:
            d = (adjacent[0][0] - snap.pos[0], adjacent[0][1] - snap.pos[1])
            return DO if snap.facing == d else MOVES[d]
        skeletons = [cell for kind, cell in hostiles if kind == "skeleton" and _distance(cell, snap.pos) <= 4]
        armed = any(snap.inv[f"{m}_sword"] for m in ("wood", "stone", "iron"))
        busy = self.target is not None and self.target.purpose in ("skeleton", "sleep", "rest")
        if skeletons and armed and snap.inv["health"] > 2 and not busy:
            target = self.planner.attack(snap, skeletons, "skeleton", limit=6)
            if target is not None:
                self.target = target
        return None

    def _opportunity(self, snap: Snapshot) -> int | None:
        """Cheap things a human does in passing: drink at water, hit a cow when hungry, mine ore beside it."""
        if self.target is not None and self.target.purpose in ("sleep", "rest"):
            return None
        inv = snap.inv
        for d, cell in snap.neighbours(snap.pos):
            material, kind = snap.material(cell), snap.kind(cell)
            wanted = (
                (material == "water" and inv["drink"] <= 7)
                or (kind == "cow" and inv["food"] <= 6)
                or (material in VALUABLE and kind is None and inv[material] < 3 and snap.diggable(cell))
            )
            if wanted:
                return DO if snap.facing == d else MOVES[d]
        grass_ahead = snap.material(snap.front) == "grass" and snap.obj(snap.front) is None
        keen = self.rng.random() < 0.3 + 0.5 * self.style.planter
        gardening = (
            self.style.planter > 0.2 and inv["stone_pickaxe"] and not inv["sapling"] and len(self.memory.plants) < 4
        )
        if grass_ahead and keen and (gardening or not snap.player.achievements["collect_sapling"]):
            return DO
        return None

    # ------------------------------------------------------------------ imperfection and safety
    def _mistake(self, snap: Snapshot, action: int) -> int:
        """Now and then a random move, noop or ``do``, or a few steps of wandering off (less with skill)."""
        slip = 1.0 - self.skill
        resting = self.target is not None and self.target.purpose in ("sleep", "rest")
        if snap.player.sleeping or snap.inv["health"] <= 3 or resting:
            return action
        if self.wander > 0:
            self.wander -= 1
            return self._random_move(snap)
        if self.rng.random() < 0.003 * slip:
            self.wander = int(self.rng.integers(3, 15))
            self.target = None
        if self.rng.random() < 0.12 * slip:
            return int(self.rng.choice([NOOP, DO, *MOVES.values()]))
        return action

    def _random_move(self, snap: Snapshot) -> int:
        options = [MOVES[d] for d, cell in snap.neighbours(snap.pos) if snap.walkable(cell)]
        return int(self.rng.choice(options)) if options else NOOP

    def _guard(self, snap: Snapshot, action: int) -> int:
        """Noop instead of a place or make action that would fail, or of a step into lava."""
        if not action_succeeds(self.game, action, self.rules) or place_is_contested(self.game, action):
            return NOOP
        name = ACTIONS[action]
        if name.startswith("move_"):
            d = DIRECTIONS[action - MOVES[DIRECTIONS[0]]]
            cell = (snap.pos[0] + d[0], snap.pos[1] + d[1])
            if snap.material(cell) == "lava" and snap.obj(cell) is None:
                return NOOP
        return int(action)


def _distance(a: Cell, b: Cell) -> int:
    return abs(a[0] - b[0]) + abs(a[1] - b[1])
