"""Crafter evaluation: per-achievement success rates, the Crafter score and a bar chart.

The score of Hafner (2021), "Benchmarking the Spectrum of Agent Capabilities", section 3:
``S = exp(mean_i ln(1 + s_i)) - 1`` with ``s_i`` the success rate of achievement ``i`` in percent,
i.e. the share of *all* episodes in which the achievement was unlocked at least once. It lies in
``[0, 100]`` and rewards rare achievements more than a plain mean would.

Nothing here needs the ``crafter`` package: the tables come from logged episodes.

Example:
    >>> episodes = [{"collect_wood": 2, "place_table": 1}, {"collect_wood": 1}]
    >>> rates = achievement_table(episodes)
    >>> rates["collect_wood"], rates["place_table"], rates["collect_diamond"]
    (100.0, 50.0, 0.0)
    >>> round(crafter_score(rates), 3)
    0.475
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ACHIEVEMENTS", "LOG_PREFIX", "achievement_table", "crafter_score", "plot_achievements", "summary"]

ACHIEVEMENTS: tuple[str, ...] = (
    "collect_coal",
    "collect_diamond",
    "collect_drink",
    "collect_iron",
    "collect_sapling",
    "collect_stone",
    "collect_wood",
    "defeat_skeleton",
    "defeat_zombie",
    "eat_cow",
    "eat_plant",
    "make_iron_pickaxe",
    "make_iron_sword",
    "make_stone_pickaxe",
    "make_stone_sword",
    "make_wood_pickaxe",
    "make_wood_sword",
    "place_furnace",
    "place_plant",
    "place_stone",
    "place_table",
    "wake_up",
)
"""The 22 achievements in the order of crafter's ``data.yaml``."""

LOG_PREFIX = "log/achievement_"
"""Prefix of the per-episode achievement counters in the observations of :class:`reverie.crafter.env.CrafterEnv`."""


def crafter_score(success_rates_percent: Mapping[str, float] | Iterable[float]) -> float:
    """The Crafter score ``exp(mean_i ln(1 + s_i)) - 1`` of success rates given in percent.

    Args:
        success_rates_percent: one rate in ``[0, 100]`` per achievement (all 22 for a comparable
            score), as a sequence or as the dict returned by :func:`achievement_table`.

    Raises:
        ValueError: no rates, or a rate outside ``[0, 100]``.

    Example:
        >>> crafter_score([0.0] * 22), round(crafter_score([100.0] * 22), 9)
        (0.0, 100.0)
        >>> round(crafter_score([0.0, 99.0]), 6)  # exp((ln 1 + ln 100) / 2) - 1
        9.0
    """
    values = success_rates_percent.values() if isinstance(success_rates_percent, Mapping) else success_rates_percent
    rates = [float(v) for v in values]
    if not rates:
        raise ValueError("crafter_score needs at least one success rate.")
    bad = [r for r in rates if not 0.0 <= r <= 100.0]
    if bad:
        raise ValueError(f"Success rates must be percentages in [0, 100], got {bad}.")
    return math.exp(sum(math.log1p(r) for r in rates) / len(rates)) - 1.0


def _counts(episode: Mapping[str, Any]) -> dict[str, float]:
    """Achievement counts of one episode keyed by bare name, ``achievement_<name>`` (crafter's ``stats.jsonl``) or
    ``log/achievement_<name>``."""
    counts = {}
    for name in ACHIEVEMENTS:
        for key in (name, "achievement_" + name, LOG_PREFIX + name):
            if key in episode:
                counts[name] = float(episode[key])
    return counts


def achievement_table(episodes: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Success rate in percent of each of the 22 achievements over ``episodes``.

    Args:
        episodes: one mapping per finished episode, holding achievement counts keyed by name
            (``{"collect_wood": 3, ...}``, crafter's ``info["achievements"]``), by ``achievement_<name>`` (rows of
            crafter's ``stats.jsonl``) or by the ``log/achievement_<name>`` keys of the episode's last observation.
            A name that is absent counts as not unlocked.

    Returns:
        ``{name: rate}`` in the order of :data:`ACHIEVEMENTS`; feed it to :func:`crafter_score`.

    Raises:
        ValueError: no episodes, or an episode that names no achievement at all (a wrong dict).

    Example:
        >>> achievement_table([{"log/achievement_wake_up": 1}, {"log/achievement_wake_up": 0}])["wake_up"]
        50.0
    """
    unlocked = dict.fromkeys(ACHIEVEMENTS, 0)
    total = 0
    for episode in episodes:
        counts = _counts(episode)
        if not counts:
            raise ValueError(
                f"Episode {total} names no Crafter achievement; pass crafter's info['achievements'] or the "
                f"last observation with '{LOG_PREFIX}<name>' keys (got keys {sorted(episode)[:5]}...)."
            )
        for name, count in counts.items():
            unlocked[name] += count > 0
        total += 1
    if total == 0:
        raise ValueError("achievement_table needs at least one episode.")
    return {name: 100.0 * unlocked[name] / total for name in ACHIEVEMENTS}


def plot_achievements(
    rates: Mapping[str, float] | Sequence[tuple[str, Mapping[str, float]]], path: str | Path, title: str = ""
) -> Path:
    """Bar chart of success rates per achievement (log scale, as in the Crafter paper), saved as PNG.

    Args:
        rates: ``{name: rate}`` from :func:`achievement_table`, or ``[(label, rates), ...]`` to draw
            several agents side by side.
        path: PNG to write; parent folders are created.
        title: figure title; the Crafter score of each agent is added to its legend label.

    Returns:
        The path written.

    Example:
        >>> plot_achievements({"collect_wood": 90.0, "wake_up": 60.0}, "crafter.png")  # doctest: +SKIP
    """
    from reverie.plots import plot_rates

    series = [("agent", rates)] if isinstance(rates, Mapping) else list(rates)
    names = [n for n in ACHIEVEMENTS if any(n in r for _, r in series)] or list(ACHIEVEMENTS)
    labelled = [(f"{label} (score {crafter_score([r.get(n, 0.0) for n in names]):.1f})", r) for label, r in series]
    return plot_rates(labelled, path, title, names)


def summary(finals: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The Crafter plug-in's episode summary: ``score`` and ``success/<name>`` (percent) of finished episodes, from
    the achievement counters of their last observations; ``{}`` when the episodes carry none.

    Example:
        >>> out = summary([{"log/achievement_wake_up": 1}, {"log/achievement_wake_up": 0}])
        >>> out["success/wake_up"], round(out["score"], 3)
        (50.0, 0.196)
    """
    episodes = [episode for episode in finals if _counts(episode)]
    if not episodes:
        return {}
    rates = achievement_table(episodes)
    return {"score": crafter_score(rates), **{f"success/{name}": rate for name, rate in rates.items()}}
