"""Checkpoints are data, never code.

A checkpoint is a folder::

    checkpoint/
      config.json   the full config tree
      meta.json     format version, package version, counters, observation and action spaces
      state.pt      tensors only: weights of the unwrapped modules and the optimiser state,
                    loaded with ``torch.load(..., weights_only=True)``

It is written to ``checkpoint.tmp`` and swapped in with renames, so a crash never leaves a
half-written checkpoint in place of a whole one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reverie import __version__
from reverie.config import Config, ConfigError
from reverie.envs.base import Space
from reverie.fileio import replace_folder, write_text, write_torch

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or corrupt; the message names the fix."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def space_to_json(space: Space) -> dict[str, Any]:
    """A :class:`Space` as plain JSON data."""
    return {
        "dtype": np.dtype(space.dtype).name,
        "shape": list(space.shape),
        "low": _jsonable(np.asarray(space.low)) if np.ndim(space.low) else float(space.low),
        "high": _jsonable(np.asarray(space.high)) if np.ndim(space.high) else float(space.high),
        "discrete": space.discrete,
    }


def space_from_json(data: dict[str, Any]) -> Space:
    """Inverse of :func:`space_to_json`."""
    low, high = data["low"], data["high"]
    return Space(
        np.dtype(data["dtype"]).type,
        tuple(data["shape"]),
        np.asarray(low, np.float64) if isinstance(low, list) else low,
        np.asarray(high, np.float64) if isinstance(high, list) else high,
        bool(data["discrete"]),
    )


def save_checkpoint(
    directory: str | os.PathLike,
    config: Config,
    state: dict[str, Any],
    counters: dict[str, int],
    obs_space: dict[str, Space],
    act_space: Space,
) -> Path:
    """Write a checkpoint folder atomically; returns its path.

    Args:
        directory: the checkpoint folder to create or replace.
        config: the run's config.
        state: nested dict of tensors (state dicts); must load with ``weights_only=True``.
        counters: integers such as env steps and updates.
        obs_space: the model's observation spaces.
        act_space: the action space.
    """
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {
        "format": FORMAT_VERSION,
        "reverie": __version__,
        "counters": counters,
        "obs_space": {k: space_to_json(s) for k, s in obs_space.items()},
        "act_space": space_to_json(act_space),
    }
    write_text(tmp / "config.json", config.to_json())
    write_text(tmp / "meta.json", json.dumps(meta, indent=2))
    write_torch(tmp / "state.pt", state)
    return replace_folder(tmp, final)


def find_checkpoint(directory: str | os.PathLike) -> Path:
    """The checkpoint folder to load: ``directory`` itself, or ``directory/checkpoint`` for a run folder.

    Falls back to the ``.old`` copy when a crash happened between the two renames of a save.
    """
    path = Path(directory)
    for candidate in (path, path / "checkpoint"):
        if (candidate / "meta.json").exists():
            return candidate
        old = candidate.with_name(candidate.name + ".old")
        if (old / "meta.json").exists() and not candidate.exists():
            return old
    raise CheckpointError(
        f"No checkpoint at '{path}': expected meta.json, config.json and state.pt there or in "
        f"'{path / 'checkpoint'}'. Point --ckpt at a run folder or its checkpoint folder."
    )


def load_checkpoint(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint: ``{"config", "state", "counters", "obs_space", "act_space", "path"}``.

    Raises:
        CheckpointError: missing or corrupt files, or a format this version cannot read.
    """
    path = find_checkpoint(directory)
    try:
        meta = json.loads((path / "meta.json").read_text())
        config = Config.from_dict(json.loads((path / "config.json").read_text()))
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"Checkpoint '{path}' has a corrupt meta.json or config.json ({err}).") from None
    except ConfigError as err:
        raise CheckpointError(f"Checkpoint '{path}' has a config this version cannot read: {err}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint '{path}' has format {meta.get('format')!r}; this Reverie reads format {FORMAT_VERSION}."
        )
    try:
        state = torch.load(path / "state.pt", map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CheckpointError(
            f"Checkpoint '{path / 'state.pt'}' is corrupt or truncated ({reason}). "
            "Restore it from a copy or start a new run without --resume."
        ) from None
    return {
        "config": config,
        "state": state,
        "counters": meta["counters"],
        "obs_space": {k: space_from_json(v) for k, v in meta["obs_space"].items()},
        "act_space": space_from_json(meta["act_space"]),
        "path": path,
    }
