"""Process settings that make training fast: freed memory kept (the compile cache is set by ``import reverie``).

One update allocates and frees activation buffers of tens to hundreds of megabytes. glibc's ``malloc`` serves such
buffers with fresh ``mmap`` pages and returns them on ``free``, so every update page-faults through its whole working
set again: on a 2-core machine a third of a size1m encoder's forward+backward went to the kernel. Keeping freed
memory in the heap instead (no ``mmap`` for large blocks, no trimming) removes that work; the process keeps its peak
memory, as PyTorch's GPU caching allocator does on a GPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

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
