"""The buffers that large values are read into (:mod:`dask_redisparam.wire.bulk`): aligned, and in a worker kept for
the next values.

Memory a process touches for the first time costs a page fault per page. With 4 KiB pages that is 1.2-2.4 GB/s
here, where transparent huge pages (2 MiB) fault at 13 GB/s; on a virtual machine that reports freed memory to its
host (free page reporting) even huge pages cost 0.3-0.4 GB/s when the host must back them again. So every buffer
is private anonymous memory with ``MADV_HUGEPAGE`` (a shared anonymous map would be shmem, which takes no huge
pages unless the system enables them for shmem), and a worker keeps and reuses a few.

Examples
--------
>>> view = _allocate(1000)
>>> len(view), view.readonly
(1000, False)
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["ALIGN", "BufferPool", "new_map"]

ALIGN = 64
"""Frames start at multiples of this in the reader's buffer (aligned numpy arrays)."""


def new_map(nbytes: int) -> mmap.mmap:
    """A private anonymous memory map of ``nbytes`` (at least 1) that asks for transparent huge pages.

    Examples
    --------
    >>> m = new_map(3 << 20)
    >>> len(m)
    3145728
    """
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    buffer = mmap.mmap(-1, max(nbytes, 1), flags=flags) if flags else mmap.mmap(-1, max(nbytes, 1))
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return buffer


class BufferPool:
    """Where readers get the buffers that large values are read into.

    With ``keep=0`` (the default, e.g. in a manager) every buffer is a new one from numpy's allocator (huge pages)
    and lives as long as the value made from it. A worker keeps up to ``keep`` buffers (anonymous memory maps) once
    their values are gone, and reads the next large values into them: memory a process touches for the first time
    costs a page fault per page, on virtual machines as much as the copy itself (see
    :mod:`dask_redisparam.worker.memory`). A kept buffer serves a value of at least half its size.

    Examples
    --------
    >>> pool = BufferPool(keep=1)
    >>> view = pool.take(1000)
    >>> pool.take(1000).obj is view.obj  # still in use: a new buffer
    False
    >>> address = id(view.obj)
    >>> del view
    >>> id(pool.take(1000).obj) == address  # free again: reused
    True
    """

    def __init__(self, keep: int = 0) -> None:
        self.keep = keep
        self._buffers: list[mmap.mmap] = []
        self.on_large: tuple[int, Callable[[], object]] | None = None
        """``(size, callback)``: called once, when a value of at least ``size`` bytes is read or written."""

    def note(self, nbytes: int) -> None:
        """A large value of ``nbytes`` passes through this process (see :attr:`on_large`)."""
        if self.on_large is not None and nbytes >= self.on_large[0]:
            callback, self.on_large = self.on_large[1], None
            callback()

    def take(self, nbytes: int) -> memoryview:
        """A writable buffer of ``nbytes`` that starts at a multiple of :data:`ALIGN`."""
        self.note(nbytes)
        if self.keep <= 0:
            return _allocate(nbytes)
        best: mmap.mmap | None = None
        for buffer in self._buffers:  # free: referenced only by the list, the loop and getrefcount's argument
            if nbytes <= len(buffer) <= 2 * nbytes + mmap.PAGESIZE and sys.getrefcount(buffer) <= 3:
                if best is None or len(buffer) < len(best):
                    best = buffer
        if best is None:
            best = new_map(nbytes)
            self._buffers.append(best)
            self._drop_extra()
        return memoryview(best)[:nbytes]

    def _drop_extra(self) -> None:
        """Forget free buffers beyond ``keep``, smallest first (buffers in use go when their values do)."""
        free = sorted((b for b in self._buffers if sys.getrefcount(b) <= 3), key=len)
        for buffer in free[: max(0, len(self._buffers) - self.keep)]:
            self._buffers.remove(buffer)


def _allocate(nbytes: int) -> memoryview:
    """A writable buffer of ``nbytes`` that starts at a multiple of :data:`ALIGN` (with numpy)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is there whenever large buffers are
        return memoryview(bytearray(nbytes))
    buffer: Any = np.empty(nbytes + ALIGN, dtype=np.uint8)  # numpy's allocator: huge pages
    start = -buffer.ctypes.data % ALIGN
    return memoryview(buffer)[start : start + nbytes]
