"""Atomic file writes shared by checkpoints, replay and datasets: nothing half-written ever replaces a file."""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically: ``{path}.tmp``, fsync, ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a compressed ``.npz`` atomically: ``{path}.tmp``, fsync, ``os.replace``.

    The zip layout is ``np.savez_compressed``'s (one ``{key}.npy`` per key, readable with
    ``np.load(allow_pickle=False)``), without its reserved names, so keys may be ``file`` or contain ``/``.
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key, arr in arrays.items():
                with zf.open(key + ".npy", "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, np.ascontiguousarray(arr), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); best effort where folders cannot be opened or synced."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no O_DIRECTORY (Windows)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_torch(path: Path, obj: Any) -> None:
    """``torch.save`` tensors and plain containers to ``path``, fsynced (load with ``weights_only=True``)."""
    import torch

    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def replace_folder(tmp: Path, final: Path) -> Path:
    """Swap a fully written folder ``tmp`` in for ``final``: the previous one is kept as ``{final}.old``
    until the rename is done, so a crash at any moment leaves one complete folder to load."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final
