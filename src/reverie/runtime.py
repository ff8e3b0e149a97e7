"""Process settings that make training fast: freed memory kept (the compile cache is set by ``import reverie``),
and a clear error when that cache holds a damaged file.

One update allocates and frees activation buffers of tens to hundreds of megabytes. glibc's ``malloc`` serves such
buffers with fresh ``mmap`` pages and returns them on ``free``, so every update page-faults through its whole working
set again: on a 2-core machine a third of a size1m encoder's forward+backward went to the kernel. Keeping freed
memory in the heap instead (no ``mmap`` for large blocks, no trimming) removes that work; the process keeps its peak
memory, as PyTorch's GPU caching allocator does on a GPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import platform
from collections.abc import Callable
from typing import Any

from reverie.errors import ReverieError

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (``mallopt``: no ``mmap`` blocks, no trimming). Once per process.

    Returns whether the setting is in force (False off Linux or without glibc, where nothing changes).
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1
    except (OSError, AttributeError):
        return False
    if not ok:
        log.debug("mallopt refused the settings; freed memory goes back to the system")
    _applied = ok
    return ok


DAMAGED = ("file too short", "invalid ELF header", "cannot open shared object", "truncated")
"""What the loader says about a compiled kernel file that a killed compilation left behind half-written."""


class CompileCacheError(ReverieError):
    """The compile cache holds a damaged file: the message names it and the fix."""


def guard_compile_cache(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a compiled function), raising :class:`CompileCacheError` in one line instead of the compiler's
    traceback when a kernel file in the compile cache (``$TORCHINDUCTOR_CACHE_DIR``) cannot be loaded: a
    compilation killed mid-write leaves such a file, and every later run would fail on it."""
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            text = str(err)
            if cache and cache in text and any(sign in text for sign in DAMAGED):
                path = next((w.rstrip(":,") for w in text.split() if w.startswith(cache)), cache)
                raise CompileCacheError(
                    f"The compile cache has a damaged file ({path}), left by a compilation that was interrupted: "
                    f"delete the cache (rm -rf {cache}) and run again, or set train.compile=false."
                ) from None
            raise

    return run
