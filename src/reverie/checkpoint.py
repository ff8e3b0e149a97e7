"""Checkpoints are data, never code.

A checkpoint is a folder::

    checkpoint/
      config.json   the full config tree
      meta.json     format version, package version, training state (counters and the offline phase),
                    observation and action spaces
      state.pt      tensors only: weights of the unwrapped modules and the optimiser state,
                    loaded with ``torch.load(..., weights_only=True)``

It is written to ``checkpoint.tmp`` and swapped in with renames, so a crash never leaves a
half-written checkpoint in place of a whole one.

Checkpoints of format 1 (Reverie 0.1.0 before the config clean-up) load: their config is upgraded
(:func:`reverie.config.upgrade_config_dict`; one warning names each dropped key), their weights renamed to
today's modules, and the weights of removed parts (the inverse-dynamics labeller) dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from reverie.config import Config, ConfigError, upgrade_config_dict, validate
from reverie.envs.base import Space
from reverie.errors import ReverieError
from reverie.fileio import replace_folder, write_text, write_torch
from reverie.version import __version__

FORMAT_VERSION = 3
"""Version 3: the official DreamerV3 layers (biases before every norm, the decoder's block-linear projection); 2: the
training state's ``offline_phase``, today's config keys and module names, file digests."""
READS = (1, 2, 3)
"""Format versions this Reverie loads (1 is upgraded on load)."""

log = logging.getLogger("reverie")

OfflinePhase = Literal["none", "model", "bc", "rl"]

_RENAMED_WEIGHTS = (  # format 1 -> 2: (old infix, new infix) of state-dict keys
    (".encoder.mlp.", ".encoder.vector."),
    ("wm.decoder.mlp.", "wm.decoder.vector.net."),
    ("wm.decoder.grid.", "wm.decoder.vector."),
)
_REMOVED_WEIGHTS = ("idm.",)  # the inverse-dynamics labeller of offline.label_mode=inverse_dynamics


@dataclasses.dataclass
class TrainState:
    """Where an agent's training stands: saved with every checkpoint, continued on resume."""

    env_steps: int = 0
    """Env steps taken online (agent steps times action repeat)."""
    agent_steps: int = 0
    """Agent steps taken online."""
    updates: int = 0
    """Gradient updates of any phase."""
    runs: int = 0
    """Calls of ``learn`` or ``fit`` (seeds each call's envs apart)."""
    offline_updates: int = 0
    """Updates of ``fit``."""
    offline_phase: OfflinePhase = "none"
    """The offline phase reached: ``model``, ``bc``, ``rl`` (a frozen BC prior exists), or ``none``."""
    nonfinite_steps: int = 0
    """Env steps that held NaN or inf, set to 0 before they reached the model."""
    skipped_updates: int = 0
    """Updates skipped because their loss or gradients were not finite."""
    ranks: int = 1
    """Processes (``torch.distributed`` ranks) the run trains online on, each with its own replay shard."""

    def record_update(self, metrics: dict[str, float]) -> None:
        """Count one update of any phase (and whether :meth:`reverie.learner.Learner.update` skipped it)."""
        self.updates += 1
        self.skipped_updates += int(metrics.get("opt/skipped", 0.0) > 0)

    @property
    def has_prior(self) -> bool:
        """Whether imagination RL began from a frozen behaviour-cloning prior."""
        return self.offline_phase == "rl"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """Inverse of :meth:`to_dict`; format 1's ``counters`` (with ``rl_started``) too."""
        data = dict(data)
        if "rl_started" in data:
            started = data.pop("rl_started")
            data["offline_phase"] = "rl" if started else ("model" if data.get("offline_updates") else "none")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class CheckpointError(ReverieError):
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
    train_state: TrainState,
    obs_space: dict[str, Space],
    act_space: Space,
) -> Path:
    """Write a checkpoint folder atomically; returns its path.

    Args:
        directory: the checkpoint folder to create or replace.
        config: the run's config.
        state: nested dict of tensors (state dicts); must load with ``weights_only=True``.
        train_state: the counters and the offline phase.
        obs_space: the model's observation spaces.
        act_space: the action space.

    Raises:
        CheckpointError: a weight or optimiser tensor is not finite; nothing is written, the checkpoint in place
            (the last good one) stays.
    """
    bad = _non_finite(state)
    if bad:
        raise CheckpointError(
            f"Not saving a checkpoint to '{directory}': {bad} holds NaN or inf values; the last good checkpoint is "
            "kept. Lower optim.lr, or look for NaN in the data (the logs count them)."
        )
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config_text = config.to_json()
    write_text(tmp / "config.json", config_text)
    digest = write_torch(tmp / "state.pt", state)
    digests = {"config.json": _sha256(config_text.encode()), "state.pt": digest}
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "reverie": __version__,
        "train_state": train_state.to_dict(),
        "obs_space": {k: space_to_json(s) for k, s in obs_space.items()},
        "act_space": space_to_json(act_space),
        "sha256": digests,
    }
    digests["meta.json"] = _sha256(_canonical(meta).encode())
    write_text(tmp / "meta.json", json.dumps(meta, indent=2))
    return replace_folder(tmp, final)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(meta: dict[str, Any]) -> str:
    """The text a meta.json's own digest covers: its content without that digest, sorted and compact."""
    digests = {k: v for k, v in meta.get("sha256", {}).items() if k != "meta.json"}
    return json.dumps({**meta, "sha256": digests}, sort_keys=True, separators=(",", ":"))


def _non_finite(state: Any, prefix: str = "") -> str:
    """The name of the first floating tensor in a nested state dict that holds NaN or inf ("" when none does)."""
    if isinstance(state, torch.Tensor):
        return prefix if state.is_floating_point() and not bool(torch.isfinite(state).all()) else ""
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list | tuple) else ()
    for key, value in items:
        found = _non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return ""


def verify(path: Path, meta: dict[str, Any]) -> None:
    """Check the files of checkpoint ``path`` against the SHA-256 digests its ``meta.json`` recorded at save time
    (format 2); raises :class:`CheckpointError` naming the first file that differs (a flipped bit, a truncation)."""
    digests = meta.get("sha256")
    if not isinstance(digests, dict):
        raise CheckpointError(f"Checkpoint '{path / 'meta.json'}' has no file digests; it is damaged or not Reverie's.")
    for name in ("meta.json", "config.json", "state.pt"):
        data = _canonical(meta).encode() if name == "meta.json" else (path / name).read_bytes()
        if digests.get(name) != _sha256(data):
            raise CheckpointError(
                f"Checkpoint file '{path / name}' is corrupt: its SHA-256 differs from the one recorded when it was "
                "saved. Restore it from a copy, or start a new run without --resume."
            )


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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as err:  # missing, unreadable, not UTF-8, not JSON
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CheckpointError(
            f"Checkpoint file '{path}' is missing or corrupt ({reason}). Restore it from a copy, or start a new run."
        ) from None


def _read_head(directory: str | os.PathLike) -> tuple[Path, dict[str, Any], Config, list[str], list[str]]:
    """(path, meta, config, dropped keys, keys with other behaviour) of a checkpoint, its config upgraded."""
    path = find_checkpoint(directory)
    meta = _read_json(path / "meta.json")
    version = meta.get("format") if isinstance(meta, dict) else None
    if version not in READS:
        raise CheckpointError(f"Checkpoint '{path}' has format {version!r}; this Reverie reads formats {READS}.")
    config_data = _read_json(path / "config.json")
    dropped: list[str] = []
    changed: list[str] = []
    try:
        if version == 1:
            config_data, dropped, changed = upgrade_config_dict(config_data)
        if version < 3:  # the conv layout of those versions; their layers had no bias before a norm
            config_data.setdefault("model", {}).setdefault("cnn_layout", "reverie0.1")
        config = Config.from_dict(config_data)
        validate(config)
    except ConfigError as err:
        raise CheckpointError(f"Checkpoint '{path}' has a config this version cannot read: {err}") from None
    except (AttributeError, TypeError, ValueError) as err:
        raise CheckpointError(f"Checkpoint file '{path / 'config.json'}' is corrupt ({err!r}).") from None
    return path, meta, config, dropped, changed


def read_config(directory: str | os.PathLike) -> Config:
    """The config of a checkpoint or run folder (upgraded from an earlier format), without reading the weights."""
    return _read_head(directory)[2]


def load_checkpoint(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint: ``{"config", "state", "train_state", "obs_space", "act_space", "path"}``.

    Every file is checked against the digest recorded when it was saved (format 2). A format-1 checkpoint is
    upgraded on the way (see the module docstring), with one warning.

    Raises:
        CheckpointError: missing or corrupt files, or a format this version cannot read (one line).
    """
    path, meta, config, dropped, changed = _read_head(directory)
    version = meta["format"]
    if version > 1:
        verify(path, meta)
    try:
        train_state = TrainState.from_dict(meta["train_state" if version > 1 else "counters"])
        spaces = {k: space_from_json(v) for k, v in meta["obs_space"].items()}, space_from_json(meta["act_space"])
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"Checkpoint file '{path / 'meta.json'}' is corrupt ({err!r}).") from None
    try:
        state = torch.load(path / "state.pt", map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CheckpointError(
            f"Checkpoint '{path / 'state.pt'}' is corrupt or truncated ({reason}). "
            "Restore it from a copy or start a new run without --resume."
        ) from None
    if version == 1:
        state["model"], removed = _upgrade_weights(state["model"])
        message = (
            f"Checkpoint '{path}' comes from an earlier Reverie (format 1): dropped config keys {', '.join(dropped)}"
        )
        if changed:
            message += f"; of these, set to other behaviour than today's: {', '.join(changed)}"
        if removed:
            message += f"; dropped weights of {', '.join(removed)}"
        log.warning(message + ".")
    return {
        "format": version,
        "config": config,
        "state": state,
        "train_state": train_state,
        "obs_space": spaces[0],
        "act_space": spaces[1],
        "path": path,
    }


def _upgrade_weights(weights: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Format-1 weights under today's module names, without those of removed modules (whose names it returns)."""
    out, removed = {}, set()
    for key, value in weights.items():
        part = next((p for p in _REMOVED_WEIGHTS if key.startswith(p)), None)
        if part is not None:
            removed.add(part.rstrip("."))
            continue
        for old, new in _RENAMED_WEIGHTS:
            key = key.replace(old, new)
        out[key] = value
    return out, sorted(removed)


def holds_run(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a run: a checkpoint (or the ``.old`` copy a crash mid-save leaves) or replay data.

    Example:
        >>> holds_run("/nonexistent")
        False
    """
    path = Path(folder)
    if any((path / name / "meta.json").exists() for name in ("checkpoint", "checkpoint.old")):
        return True
    return any((path / "replay").glob("*.npz"))


RUN_FILES = ("checkpoint", "checkpoint.old", "checkpoint.tmp", "replay", "metrics.jsonl", "config.json", "videos")
"""What a run writes in its folder (with TensorBoard's ``events.out.tfevents.*``)."""


def delete_run(folder: str | os.PathLike[str]) -> None:
    """Delete what a run wrote in ``folder`` (:data:`RUN_FILES` and TensorBoard events), nothing else."""
    path = Path(folder)
    for name in RUN_FILES:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for events in path.glob("events.out.tfevents.*"):
        events.unlink()
