"""Keep memory that large values free for the next ones (worker processes).

On the virtual machines where pools usually run, memory a process touches for the first time costs a page fault
per page, and a fault can cost as much as the copy it serves: here 0.5-2 GB/s for fresh memory against 15 GB/s
for memory the process had already used. By default glibc returns every large block (``mmap``) to the system on
``free``, so a worker that receives, computes and sends 1 GB arrays would pay those faults for every one of them.
:func:`reuse_freed_memory` (called by workers at start, unless started with ``--release-memory``):

- keeps the buffers that large values are read into for the next ones
  (:class:`~dask_redisparam.wire.bulk.BufferPool`, two of them);
- once a value of :data:`HEAP_FROM` (512 MiB) or more passes, tells glibc to serve large blocks from its heap, and
  to give back only what is free above 64 MiB at its top (:func:`keep_heap`; measured: a worker passing 1 GB arrays
  on holds 2 GB, its peak, and moves them twice as fast).

The worker's resident size then stays near its peak until it exits; its peak does not grow.

Examples
--------
>>> TRIM_BYTES // 2**20  # MiB
64
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import resource
import sys

from ..wire import bulk

__all__ = ["HEAP_FROM", "keep_heap", "resident_bytes", "reuse_freed_memory"]

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
"""``mallopt`` parameters (``malloc.h``)."""
HEAP_FROM = 512 << 20
"""Values at least this large make a worker keep its heap (:func:`keep_heap`). Below, the kernel gives fresh memory
fast enough (measured: 256 MB arrays move as fast either way) and a kept heap only costs memory (3x the array at its
peak instead of 2x: small allocations split freed blocks); above, a kept heap moves 1 GB arrays twice as fast."""
TRIM_BYTES = 64 << 20
"""Free memory at the top of the heap beyond this goes back to the system (never trimming at all lets small
allocations split the freed blocks: measured, 3x the array size held instead of 2x)."""


def reuse_freed_memory(buffers: int = 2, heap_from: int = HEAP_FROM) -> None:
    """Keep up to ``buffers`` receive buffers of large values (:class:`~dask_redisparam.wire.bulk.BufferPool`); once a
    value of ``heap_from`` bytes or more passes through this process, also :func:`keep_heap`."""
    bulk.POOL.keep = buffers
    bulk.POOL.on_large = (heap_from, keep_heap)


def keep_heap() -> bool:
    """Make glibc serve large blocks from its heap and keep what they free (trimming only above
    :data:`TRIM_BYTES` at its top); False without glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        done = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES) == 1
    except (OSError, AttributeError) as e:  # pragma: no cover - no usable libc
        logger.debug("cannot tune malloc: %s", e)
        return False
    logger.debug("glibc malloc: large blocks from the heap, kept when freed")
    return bool(done)


def resident_bytes() -> int:
    """This process's resident set size in bytes (``/proc/self/statm``; where there is none, the peak from
    ``getrusage``). Workers send it with each heartbeat (the ``rss`` field of their record).

    Examples
    --------
    >>> resident_bytes() > 1 << 20
    True
    """
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere
