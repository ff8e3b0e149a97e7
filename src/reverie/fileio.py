"""Atomic file writes shared by checkpoints, replay and datasets (nothing half-written ever replaces a file), and
the lock that keeps two processes out of one run folder."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from reverie.errors import ReverieError


class FolderInUse(ReverieError):
    """Another process holds the folder's lock (see :class:`FolderLock`)."""


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically: ``{path}.tmp``, fsync, ``os.replace``, fsync of the folder."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


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


def write_torch(path: Path, obj: Any) -> str:
    """``torch.save`` tensors and plain containers to ``path``, fsynced (load with ``weights_only=True``); returns
    the SHA-256 of the bytes written."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def replace_folder(tmp: Path, final: Path) -> Path:
    """Swap a fully written folder ``tmp`` in for ``final``: the previous one is kept as ``{final}.old``
    until the rename is done, so a crash at any moment leaves one complete folder to load."""
    old = final.with_name(final.name + ".old")
    fsync_dir(tmp)  # the files' names inside it are durable before it takes the final name
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)  # the swap is durable before the previous copy goes
    shutil.rmtree(old, ignore_errors=True)
    return final


class FolderLock:
    """An exclusive lock on a folder (``{folder}/.lock``), held by one process at a time.

    The operating system drops the lock when its holder ends, even by ``kill -9``, so a stale lock file never
    blocks a resume. The file records the holder's process id for the error message.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with FolderLock(folder):
        ...     FolderLock(folder).acquire()
        Traceback (most recent call last):
        ...
        reverie.fileio.FolderInUse: ...
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._file: Any = None

    def acquire(self) -> FolderLock:
        """Take the lock (creating the folder); :class:`FolderInUse` when another process holds it."""
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / ".lock", "a+")  # noqa: SIM115 (held open while the lock is held)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FolderInUse(
                f"Run folder '{self.folder}' is in use by process {holder}; wait for it to end, or pick another folder."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the lock
            self._file = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
