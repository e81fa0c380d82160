"""Keep memory that large values free for the next ones (worker processes, glibc only).

On the virtual machines where pools usually run, memory a process touches for the first time costs a page fault
per page, and a fault can cost as much as the copy it serves: here 0.5-2 GB/s for fresh memory against 15 GB/s
for memory the process had already used. glibc returns every large block (``mmap``) and the top of its heap
(``trim``) to the system on ``free``, so a worker that receives, computes and sends 1 GB arrays pays those faults
again for every one of them. :func:`reuse_freed_memory` tells glibc to serve every allocation from its heap and
never to trim it: freed blocks are reused by the next value, and the worker's resident size stays at its high
water mark (its peak is unchanged) until it exits. Workers call it at start unless started with
``--release-memory``.

Examples
--------
>>> reuse_freed_memory() in (True, False)
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["reuse_freed_memory"]

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
"""``mallopt`` parameters (``malloc.h``)."""


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (no ``mmap`` for large blocks, no trimming); False elsewhere."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        done = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1  # -1: never trim
    except (OSError, AttributeError) as e:  # pragma: no cover - no usable libc
        logger.debug("cannot tune malloc: %s", e)
        return False
    return bool(done)
