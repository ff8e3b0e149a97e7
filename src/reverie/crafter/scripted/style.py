"""Play styles of the scripted Crafter player: the preferences that differ from one human to the next."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Style"]


@dataclass(frozen=True)
class Style:
    """How one scripted player likes to play; :meth:`sample` draws one from a seed.

    Example:
        >>> Style.sample(np.random.default_rng(0)).swords in (0, 1, 2, 3)
        True
    """

    swords: int = 2
    """Swords it makes: 0 none, 1 the wood sword, 2 also the stone sword, 3 also the iron sword."""
    sword_first: bool = False
    """Makes a tier's sword before its pickaxe."""
    wood_stock: int = 2
    """Wood collected beyond what the next recipe needs."""
    stone_stock: int = 4
    """Stone collected beyond what the next recipe needs (shelters and placing use it)."""
    far: int = 20
    """Path length beyond which it builds a new table (and furnace) rather than walking back to the old one."""
    drink_low: int = 4
    """Drink level at which it goes to drink (it drinks until full)."""
    food_low: int = 4
    """Food level at which it goes hunting cows or eating ripe plants."""
    energy_low: int = 3
    """Energy level at which it goes to sleep, whatever the time of day."""
    sleep_at_night: bool = True
    """Sleeps in the dark when a little tired, not only when exhausted."""
    explore: float = 0.5
    """0 explores the nearest unknown edge of its map; 1 picks wider, more random edges."""
    planter: float = 0.5
    """Keenness on saplings: collecting them from grass, planting them and coming back to eat the plants."""
    aggression: float = 0.5
    """Keenness to fight zombies and hunt skeletons rather than avoid them."""

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Style:
        """A random style: each preference drawn independently from a plausible human range."""
        return cls(
            swords=int(rng.choice([0, 1, 2, 2, 3, 3])),
            sword_first=bool(rng.random() < 0.3),
            wood_stock=int(rng.integers(0, 5)),
            stone_stock=int(rng.integers(2, 7)),
            far=int(rng.integers(10, 35)),
            drink_low=int(rng.integers(3, 6)),
            food_low=int(rng.integers(4, 7)),
            energy_low=int(rng.integers(2, 4)),
            sleep_at_night=bool(rng.random() < 0.9),
            explore=float(rng.random()),
            planter=float(rng.random()),
            aggression=float(rng.random()),
        )
