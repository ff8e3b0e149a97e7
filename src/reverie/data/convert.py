"""Copy a dataset with fewer labels, or between the Reverie and Minari formats."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from reverie.data.dataset import Dataset, label_flags
from reverie.data.writer import DatasetWriter

__all__ = ["convert", "rewrite"]


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
    from reverie.data.minari_io import export_minari, import_minari, minari_id  # Minari: an optional extra

    if to == "minari":
        dataset_id = export_minari(src, minari_id(str(dst)), action_frac, reward_frac, seed)
        return dataset_id
    if to != "reverie":
        raise ValueError(f"convert(to={to!r}): use 'reverie' or 'minari'.")
    if Path(src).exists():
        return str(rewrite(src, dst, action_frac, reward_frac, seed).folder)
    return str(import_minari(str(src), dst, action_frac, reward_frac, seed).folder)
