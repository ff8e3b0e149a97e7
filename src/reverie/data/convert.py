"""Copy a dataset with fewer labels, or between the Reverie and Minari formats."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from reverie.data.dataset import Dataset
from reverie.data.format import check_frac, label_plan
from reverie.data.writer import DatasetWriter

__all__ = ["convert", "label_flags", "rewrite"]


def label_flags(dataset: Dataset, action_frac: float, reward_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode ``(has_actions, has_rewards)`` after dropping labels from ``dataset``.

    Exactly ``round(frac * len(dataset))`` episodes are drawn to keep each label (seeded); an episode
    that already lacks a label keeps lacking it, so labels are only ever removed.
    """
    n = len(dataset)
    infos = [dataset.episode_info(i) for i in range(n)]
    had_actions = np.array([e["has_actions"] for e in infos], bool)
    had_rewards = np.array([e["has_rewards"] for e in infos], bool)
    actions = label_plan(n, check_frac("action_frac", action_frac), [seed, 0]) & had_actions
    rewards = label_plan(n, check_frac("reward_frac", reward_frac), [seed, 1]) & had_rewards
    return actions, rewards


def rewrite(
    src: str | os.PathLike[str] | Dataset,
    dst: str | os.PathLike[str],
    action_frac: float = 1.0,
    reward_frac: float = 1.0,
    seed: int = 0,
    chunk: int | None = None,
) -> Dataset:
    """Copy a Reverie dataset episode by episode, dropping actions and rewards as :func:`label_flags` says.

    Example:
        >>> rewrite("data/crafter", "data/crafter-30pct-actions", action_frac=0.3)  # doctest: +SKIP
    """
    source = src if isinstance(src, Dataset) else Dataset(src)
    actions, rewards = label_flags(source, action_frac, reward_frac, seed)
    creation = {
        "source": "rewrite",
        "from": str(source.folder),
        "action_frac": action_frac,
        "reward_frac": reward_frac,
        "seed": seed,
        "original": source.info["creation"],
    }
    writer = DatasetWriter(dst, source.env_id, source.obs_space, source.act_space, chunk or source.chunk, creation)
    for index, episode in enumerate(source.episodes(masks=False)):
        writer.add_episode(episode, bool(actions[index]), bool(rewards[index]))
    writer.close()
    return Dataset(dst)


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    to: Literal["reverie", "minari"] = "reverie",
    action_frac: float = 1.0,
    reward_frac: float = 1.0,
    seed: int = 0,
) -> str:
    """Convert between formats, dropping labels on the way; returns the folder or the Minari dataset id written.

    * ``to="reverie"``: ``src`` is a Reverie dataset folder (a copy with fewer labels, :func:`rewrite`) or,
      when no such path exists, a Minari dataset id (:func:`reverie.data.minari_io.import_minari`).
    * ``to="minari"``: ``src`` is a Reverie dataset folder and ``dst`` the Minari dataset id
      (``name`` alone becomes ``reverie/name-v0``; :func:`reverie.data.minari_io.export_minari`).

    Example:
        >>> convert("data/crafter", "crafter-random", to="minari")  # doctest: +SKIP
        'reverie/crafter-random-v0'
    """
    from reverie.data import minari_io

    if to == "minari":
        dataset_id = minari_io.export_minari(src, minari_io.minari_id(str(dst)), action_frac, reward_frac, seed)
        return dataset_id
    if to != "reverie":
        raise ValueError(f"convert(to={to!r}): use 'reverie' or 'minari'.")
    if Path(src).exists():
        return str(rewrite(src, dst, action_frac, reward_frac, seed).folder)
    return str(minari_io.import_minari(str(src), dst, action_frac, reward_frac, seed).folder)
