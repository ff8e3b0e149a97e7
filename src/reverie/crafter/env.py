"""Crafter (Hafner 2021) behind the Reverie env contract, as 64x64 pixels or as a symbolic vector.

Observation keys:

* ``"image"``: uint8 ``(size, size, 3)``, the game's own rendering (``symbolic=False``), or
* ``"vector"``: float32, the symbolic state (``symbolic=True``), laid out as
  ``[map, inventory, facing, daylight, sleeping]`` (1219 values with the default ``view=(9, 9)``):

  - ``map``: the local view the pixels show, ``W = view[0]`` columns by ``H = view[1] - 2`` rows
    (9 x 7: the two bottom rows of the picture show the inventory), player at column ``W // 2``, row
    ``H // 2``. Flattened from ``(H, W, 19)`` (row-major, channels last); per cell two one-hot groups:
    13 material channels ``outside, water, grass, stone, path, sand, tree, lava, coal, iron, diamond,
    table, furnace`` (``outside``: beyond the world's edge) then 6 object channels ``cow, zombie,
    skeleton, arrow, sapling, ripe_plant`` (all zero: no object; the player is not drawn, it is always
    at the centre). 7 * 9 * 19 = 1197 values.
  - ``inventory``: 16 counts divided by their maximum (9): ``health, food, drink, energy`` (the
    vitals), ``sapling, wood, stone, coal, iron, diamond, wood_pickaxe, stone_pickaxe, iron_pickaxe,
    wood_sword, stone_sword, iron_sword``.
  - ``facing``: one-hot over ``left, right, up, down`` (the order of the move actions).
  - ``daylight`` in ``[0, 1]`` and ``sleeping`` in ``{0, 1}``.

Log keys (never model inputs): ``log/achievement_<name>`` (int32, per-episode counters of the 22
achievements), ``log/inventory_<name>`` (int32 counts) and ``log/reward`` (float32, the game's reward
even with ``reward=False``).

Episodes end on death (``is_terminal``: crafter's ``info["discount"] == 0``) or at ``length`` steps
(``is_last`` only: a truncation). The 17 actions are crafter's: ``noop, move_left, move_right,
move_up, move_down, do, sleep, place_stone, place_table, place_furnace, place_plant,
make_wood_pickaxe, make_stone_pickaxe, make_iron_pickaxe, make_wood_sword, make_stone_sword,
make_iron_sword``.

Seeded episodes repeat step for step: crafter keeps the creatures of each map chunk in a ``set``, whose
order follows memory addresses, and picks the creature to despawn from it, so two runs of one seed and one
action sequence used to part after a few dozen steps; the wrapper keeps those chunks in insertion order.

Example:
    >>> env = CrafterEnv(seed=0, symbolic=True)            # doctest: +SKIP
    >>> env.step({"action": 0, "reset": True})["vector"].shape  # doctest: +SKIP
    (1219,)
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from reverie.crafter.score import ACHIEVEMENTS, LOG_PREFIX
from reverie.envs.base import Env, Space, reserved_spaces
from reverie.envs.errors import EnvError

__all__ = [
    "ACTIONS",
    "EFFECT_KEYS",
    "INSTALL",
    "ITEMS",
    "MATERIALS",
    "OBJECTS",
    "VITALS",
    "CrafterEnv",
    "inventory_changed",
    "make_env",
    "symbolic_size",
]

INSTALL = 'pip install "crafter>=1.8" numba'
"""The pip command that installs Crafter (numba makes world generation ~15x faster)."""

MATERIALS = ("water", "grass", "stone", "path", "sand", "tree", "lava", "coal", "iron", "diamond", "table", "furnace")
"""Crafter's materials in the order of its ``data.yaml`` (ids 1..12 of its material map)."""
OBJECTS = ("cow", "zombie", "skeleton", "arrow", "sapling", "ripe_plant")
"""Object channels of the symbolic map, after the ``outside`` + 12 material channels."""
ITEMS = (
    "health",
    "food",
    "drink",
    "energy",
    "sapling",
    "wood",
    "stone",
    "coal",
    "iron",
    "diamond",
    "wood_pickaxe",
    "stone_pickaxe",
    "iron_pickaxe",
    "wood_sword",
    "stone_sword",
    "iron_sword",
)
"""Inventory entries (vitals first) in the order of crafter's ``data.yaml``."""
ACTIONS: tuple[str, ...] = (
    "noop",
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "do",
    "sleep",
    "place_stone",
    "place_table",
    "place_furnace",
    "place_plant",
    "make_wood_pickaxe",
    "make_stone_pickaxe",
    "make_iron_pickaxe",
    "make_wood_sword",
    "make_stone_sword",
    "make_iron_sword",
)
"""Crafter's 17 actions in the order of its ``data.yaml`` (the action index is the position here)."""
VITALS = ITEMS[:4]
"""Health, food, drink and energy: inventory entries that change without the player crafting anything."""
EFFECT_KEYS = tuple(f"log/inventory_{name}" for name in ITEMS if name not in VITALS)
"""The ``log/`` keys :func:`inventory_changed` reads."""
_FACING = ((-1, 0), (1, 0), (0, -1), (0, 1))  # left, right, up, down in crafter's (x, y) world coordinates
_CHANNELS = 1 + len(MATERIALS) + len(OBJECTS)


def symbolic_size(view: tuple[int, int] = (9, 9)) -> int:
    """Length of the symbolic ``"vector"`` for a crafter ``view``: map + inventory + facing + 2.

    Example:
        >>> symbolic_size()
        1219
    """
    width, height = _local_grid(view)
    return width * height * _CHANNELS + len(ITEMS) + len(_FACING) + 2


def _local_grid(view: tuple[int, int]) -> tuple[int, int]:
    """(columns, rows) of the local view: crafter keeps ``ceil(16 / view[0])`` rows for the inventory."""
    item_rows = -(-len(ITEMS) // view[0])
    return view[0], view[1] - item_rows


def _import_crafter() -> Any:
    try:
        import crafter
    except ImportError:
        raise EnvError(f"The Crafter suite needs the crafter package: {INSTALL}") from None
    from crafter import constants

    if tuple(constants.materials) != MATERIALS or tuple(constants.items) != ITEMS:
        raise EnvError(f"This crafter version ({crafter.__file__}) changed its materials or items; {INSTALL}")
    if tuple(constants.achievements) != ACHIEVEMENTS:
        raise EnvError(f"This crafter version ({crafter.__file__}) changed its achievements; {INSTALL}")
    return crafter


class _OrderedSet(dict):
    """The part of ``set`` crafter's world uses for its chunks (add, remove, iterate), iterating in insertion order."""

    def add(self, item: Any) -> None:
        self[item] = None

    def remove(self, item: Any) -> None:
        del self[item]


def _ordered_chunks(world: Any) -> None:
    """Make ``world.reset`` (called at every episode start, before the world is filled) keep each chunk's
    objects in an :class:`_OrderedSet` instead of a ``set``, so seeded episodes are reproducible."""
    reset = world.reset

    def ordered_reset(seed: int | None = None) -> None:
        reset(seed)
        world._chunks = collections.defaultdict(_OrderedSet)

    world.reset = ordered_reset


class CrafterEnv(Env):
    """Crafter behind the Reverie contract; see the module docstring for keys and the vector layout.

    Args:
        seed: seeds the worlds of all episodes (episode ``k`` gets a world from ``(seed, k)``); None
            draws one.
        size: side of the square image (pixels only).
        symbolic: observe the symbolic ``"vector"`` instead of pixels (no rendering: faster).
        view: crafter's view grid (columns, rows including the 2 inventory rows).
        length: steps per episode before truncation (None: no limit).
        reward: give crafter's reward (``+1`` per new achievement, ``+-0.1`` per health point);
            False gives 0 (``log/reward`` still holds the game's reward).

    Raises:
        EnvError: crafter is not installed.

    Example:
        >>> env = CrafterEnv(seed=0)                                    # doctest: +SKIP
        >>> obs = env.step({"action": 0, "reset": True})                # doctest: +SKIP
        >>> obs["image"].shape, env.act_space["action"].n               # doctest: +SKIP
        ((64, 64, 3), 17)
    """

    def __init__(
        self,
        seed: int | None = None,
        size: int = 64,
        symbolic: bool = False,
        view: tuple[int, int] = (9, 9),
        length: int | None = 10000,
        reward: bool = True,
    ) -> None:
        crafter = _import_crafter()
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31 - 1))
        view = (int(view[0]), int(view[1]))
        self._env = crafter.Env(area=(64, 64), view=view, size=(size, size), reward=reward, length=length, seed=seed)
        self.symbolic = symbolic
        self.size = size
        self.view = view
        if symbolic:
            self._env._obs = lambda: None  # skip crafter's rendering; the vector is read from the world
        _ordered_chunks(self._env._world)
        width, height = _local_grid(view)
        # Offsets of the local view's cells from the player, as (rows, columns) grids.
        self._dx, self._dy = np.meshgrid(np.arange(width) - width // 2, np.arange(height) - height // 2)
        self._eye = np.eye(_CHANNELS, dtype=np.float32)
        self._done = True

    @property
    def obs_space(self) -> dict[str, Space]:
        spaces: dict[str, Space]
        if self.symbolic:
            spaces = {"vector": Space(np.float32, (symbolic_size(self.view),), 0.0, 1.0)}
        else:
            spaces = {"image": Space(np.uint8, (self.size, self.size, 3), 0, 255)}
        spaces.update({f"{LOG_PREFIX}{name}": Space(np.int32, (), 0) for name in ACHIEVEMENTS})
        spaces.update({f"log/inventory_{name}": Space(np.int32, (), 0, 9) for name in ITEMS})
        spaces["log/reward"] = Space(np.float32)
        return {**spaces, **reserved_spaces()}

    @property
    def act_space(self) -> dict[str, Space]:
        return {"action": Space(np.int64, (), 0, 17, discrete=True)}

    @property
    def crafter_env(self) -> Any:
        """The wrapped ``crafter.Env``."""
        return self._env

    def step(self, action: dict[str, Any]) -> dict[str, Any]:
        if action.get("reset", False) or self._done:
            image = self._env.reset()
            self._done = False
            return self._obs(image, 0.0, 0.0, is_first=True)
        index = int(np.asarray(action["action"]).reshape(()))
        if not 0 <= index < 17:
            raise EnvError(f"Crafter actions are integers in [0, 17), got {index}.")
        image, reward, done, info = self._env.step(index)
        self._done = bool(done)
        dead = float(info["discount"]) == 0.0
        return self._obs(image, reward, info["reward"], is_last=self._done, is_terminal=dead)

    def _obs(
        self,
        image: Any,
        reward: float,
        game_reward: float,
        is_first: bool = False,
        is_last: bool = False,
        is_terminal: bool = False,
    ) -> dict[str, Any]:
        player = self._env._player
        obs: dict[str, Any] = {"vector": self._vector()} if self.symbolic else {"image": np.asarray(image, np.uint8)}
        obs.update({f"{LOG_PREFIX}{k}": np.int32(player.achievements[k]) for k in ACHIEVEMENTS})
        obs.update({f"log/inventory_{k}": np.int32(player.inventory[k]) for k in ITEMS})
        obs["log/reward"] = np.float32(game_reward)
        obs["reward"] = np.float32(reward)
        obs["is_first"], obs["is_last"], obs["is_terminal"] = is_first, is_last, is_terminal
        return obs

    def _vector(self) -> np.ndarray:
        """The symbolic observation (layout in the module docstring), read from crafter's world."""
        world, player = self._env._world, self._env._player
        xs, ys = player.pos[0] + self._dx, player.pos[1] + self._dy  # (H, W) world coordinates
        area = world._mat_map.shape
        inside = (xs >= 0) & (xs < area[0]) & (ys >= 0) & (ys < area[1])
        xs, ys = np.clip(xs, 0, area[0] - 1), np.clip(ys, 0, area[1] - 1)
        material = np.where(inside, world._mat_map[xs, ys], 0)  # 0: outside (crafter's id of "no material")
        cells = self._eye[material]  # (H, W, C)
        index = np.where(inside, world._obj_map[xs, ys], 0)
        for row, col in zip(*np.nonzero(index), strict=True):
            channel = _object_channel(world._objects[index[row, col]])
            if channel is not None:
                cells[row, col, 1 + len(MATERIALS) + channel] = 1.0
        inventory = np.array([player.inventory[k] for k in ITEMS], np.float32) / 9.0
        facing = np.array([tuple(player.facing) == f for f in _FACING], np.float32)
        extra = np.array([world.daylight, float(player.sleeping)], np.float32)
        return np.concatenate([cells.reshape(-1), inventory, facing, extra])

    def close(self) -> None:
        self._done = True


def _object_channel(obj: Any) -> int | None:
    """Index of ``obj`` among :data:`OBJECTS` (None for the player)."""
    name = type(obj).__name__.lower()
    if name == "plant":
        return OBJECTS.index("ripe_plant" if obj.ripe else "sapling")
    return OBJECTS.index(name) if name in OBJECTS else None


def make_env(cfg: Any, seed: int) -> CrafterEnv:
    """The plug-in's env factory: ``crafter`` (pixels) or ``crafter-symbolic`` (the vector) from an ``EnvConfig``."""
    return CrafterEnv(seed, size=cfg.image_size, symbolic=cfg.id == "crafter-symbolic")


def inventory_changed(before: dict[str, Any], after: dict[str, Any]) -> np.ndarray:
    """(N,) bool: whether each env's action changed its inventory (vitals aside), from batched observations before
    and after it: "did this action have an effect" for the correction loop (a craft without materials does not)."""
    old = np.stack([np.asarray(before[k], np.float64) for k in EFFECT_KEYS], -1)
    new = np.stack([np.asarray(after[k], np.float64) for k in EFFECT_KEYS], -1)
    return (old != new).any(-1)
