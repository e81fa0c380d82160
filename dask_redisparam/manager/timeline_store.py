"""A run's timeline, kept column by column: a few bytes a task instead of one record object a task.

The manager learns when each task ran from the completion records (one per message). :class:`Timeline` keeps each
record's part as it comes (the worker, the keys, the start and end times in ``array("d")``, the outcomes in
``bytes``), about 25 bytes a task, and makes the :class:`TimelineRecord` objects only
when they are read (``RedisParam.timeline()``): at 10 million tasks, records made as the tasks finish would hold
more than a gigabyte.

Examples
--------
>>> timeline = Timeline()
>>> timeline.add("w1", ["a", "b"], [0.0, 1.0], [1.0, 2.5], [True, False])
>>> len(timeline), timeline[1]
(2, TimelineRecord(key='b', worker='w1', start=1.0, end=2.5, ok=False))
>>> copy = Timeline()
>>> copy.take(timeline)
>>> [record.key for record in copy]
['a', 'b']
"""

from __future__ import annotations

import array
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, overload

__all__ = ["Timeline", "TimelineRecord"]


class TimelineRecord(NamedTuple):
    """When a task ran, where, and whether it succeeded (``start``/``end``: the worker's clock, in seconds)."""

    key: Any
    worker: str
    start: float
    end: float
    ok: bool


_Chunk = tuple[str, list[Hashable], "array.array[float]", "array.array[float]", bytes]


class Timeline(Sequence[TimelineRecord]):
    """The timeline of a run: a sequence of :class:`TimelineRecord`, made on
    access from the columns kept per completion record."""

    def __init__(self) -> None:
        self._chunks: list[_Chunk] = []
        self._size = 0

    def add(
        self,
        worker: str,
        keys: list[Hashable],
        starts: Iterable[float],
        ends: Iterable[float],
        oks: Iterable[bool],
    ) -> None:
        """Append the tasks of one completion record (all of one worker), in order."""
        if not keys:
            return
        chunk = (worker, keys, array.array("d", starts), array.array("d", ends), bytes(oks))
        self._chunks.append(chunk)
        self._size += len(keys)

    def append(self, record: TimelineRecord) -> None:
        """Append one record."""
        self.add(record.worker, [record.key], [record.start], [record.end], [record.ok])

    def take(self, other: Timeline) -> None:
        """Become ``other`` (its columns are shared, nothing is copied); what this one held is dropped."""
        self._chunks, self._size = list(other._chunks), other._size

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[TimelineRecord]:
        for worker, keys, starts, ends, oks in self._chunks:
            for key, start, end, ok in zip(keys, starts, ends, oks, strict=True):
                yield TimelineRecord(key, worker, start, end, bool(ok))

    @overload
    def __getitem__(self, index: int) -> TimelineRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[TimelineRecord]: ...

    def __getitem__(self, index: int | slice) -> TimelineRecord | Sequence[TimelineRecord]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError("timeline index out of range")
        for worker, keys, starts, ends, oks in self._chunks:
            if index < len(keys):
                return TimelineRecord(keys[index], worker, starts[index], ends[index], bool(oks[index]))
            index -= len(keys)
        raise IndexError("timeline index out of range")  # pragma: no cover - the size says otherwise
