"""A worker's memory of the results it made, so that its later tasks need not download them again."""

from __future__ import annotations

import collections
from typing import Any

__all__ = ["CACHE_BYTES", "ValueCache"]

CACHE_BYTES = 256 * 2**20
"""Bytes of task results a worker keeps in memory, so that its later tasks need not download them again."""


class ValueCache:
    """Results this worker produced, by ``(run, field)``, least recently used first out, up to ``limit`` bytes.

    A result larger than ``max_item`` (default: an eighth of ``limit``) is not kept: it is read back from Redis at
    gigabytes per second, and keeping it would hold that much memory in an idle worker. Tasks must not change their
    inputs in place (as with dask's threaded scheduler): a cached value is shared.

    Examples
    --------
    >>> cache = ValueCache(limit=10, max_item=10)
    >>> cache.put("r", 1, "a", 6); cache.put("r", 2, "b", 6)  # the second pushes the first out
    >>> cache.take("r", {1, 2})
    {2: 'b'}
    """

    def __init__(self, limit: int, max_item: int | None = None) -> None:
        self.limit, self.size = limit, 0
        self.max_item = limit // 8 if max_item is None else max_item
        self._items: collections.OrderedDict[tuple[str, int], tuple[Any, int]] = collections.OrderedDict()

    def put(self, run_id: str, field: int, value: Any, nbytes: int) -> None:
        if nbytes > self.max_item:
            return
        key = (run_id, field)
        if key in self._items:
            self.size -= self._items.pop(key)[1]
        self._items[key] = (value, nbytes)
        self.size += nbytes
        while self.size > self.limit:
            self.size -= self._items.popitem(last=False)[1][1]

    def take(self, run_id: str, fields: set[int]) -> dict[int, Any]:
        """The cached values among ``fields`` of run ``run_id`` (they stay cached)."""
        out = {}
        for field in fields:
            item = self._items.get((run_id, field))
            if item is not None:
                self._items.move_to_end((run_id, field))
                out[field] = item[0]
        return out
