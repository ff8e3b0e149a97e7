"""The pieces of the on-disk dataset format shared by the writer and the reader (see :mod:`reverie.data`)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from reverie.checkpoint import space_from_json, space_to_json
from reverie.envs.base import Space
from reverie.errors import ReverieError
from reverie.fileio import write_npz

__all__ = [
    "EPISODES_DIR",
    "FORMAT",
    "INFO_FILE",
    "VERSION",
    "DatasetError",
    "check_frac",
    "label_plan",
    "part_name",
    "read_npz",
    "spaces_from_json",
    "spaces_to_json",
    "write_npz",
]

FORMAT = "reverie-dataset"
"""The ``format`` field of ``dataset.json``."""
VERSION = 1
"""The ``version`` field of ``dataset.json``; readers refuse other versions."""
INFO_FILE = "dataset.json"
"""The metadata file, written last: a folder without it is an unfinished dataset."""
EPISODES_DIR = "episodes"
"""Subfolder of the episode files ``{episode:06d}-{part:04d}.npz``."""
PART_NAME = re.compile(r"^(\d+)-(\d+)\.npz$")
MASKS = {"action": "action_mask", "reward": "reward_mask"}
"""Label key -> the mask key that :class:`reverie.data.Dataset` adds to the steps it yields."""


class DatasetError(ReverieError):
    """A dataset folder or file cannot be used; the message names the folder or file, the problem and the fix."""


def part_name(episode: int, part: int) -> str:
    """File name of part ``part`` (``chunk`` steps each) of episode ``episode``.

    Example:
        >>> part_name(3, 0)
        '000003-0000.npz'
    """
    return f"{episode:06d}-{part:04d}.npz"


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` without unpickling; a corrupt or truncated file is a :class:`DatasetError`."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise DatasetError(
            f"Dataset file {path} is missing although dataset.json lists it. Restore the file or re-record the dataset."
        ) from None
    except Exception as err:
        raise DatasetError(
            f"Dataset file {path} is corrupt or truncated ({type(err).__name__}: {err}). "
            f"Restore it from a copy or re-record the dataset."
        ) from err


def check_frac(name: str, value: float) -> float:
    """``value`` as a float in ``[0, 1]``, else a :class:`DatasetError` naming ``name``."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise DatasetError(f"{name} must lie in [0, 1] (the share of episodes that keep the label), got {value}.")
    return value


def label_plan(episodes: int, frac: float, seed: int | list[int]) -> np.ndarray:
    """Which of ``episodes`` episodes keep a label: exactly ``round(frac * episodes)`` of them, drawn by ``seed``.

    Rounding is half up (``0.25 * 10`` keeps 3). The same ``(episodes, frac, seed)`` always picks the same
    episodes.

    Example:
        >>> label_plan(10, 0.3, seed=0).sum()
        np.int64(3)
    """
    check_frac("frac", frac)
    keep = math.floor(frac * episodes + 0.5)
    mask = np.zeros(episodes, bool)
    mask[np.random.default_rng(seed).permutation(episodes)[:keep]] = True
    return mask


def spaces_to_json(spaces: dict[str, Space]) -> dict[str, Any]:
    """``{key: Space}`` as JSON data (see :func:`reverie.checkpoint.space_to_json`)."""
    return {key: space_to_json(space) for key, space in spaces.items()}


def spaces_from_json(data: dict[str, Any]) -> dict[str, Space]:
    """Inverse of :func:`spaces_to_json`."""
    return {key: space_from_json(value) for key, value in data.items()}
