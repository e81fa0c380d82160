"""Worker resources on the manager: which tasks need what, and how many messages of each class may be out.

A task's resources come from ``dask.annotate(resources={"GPU": 1})`` (the graph's ``resources`` annotation), from
the ``resources=`` keyword of a compute (every task of it that has no annotation of its own), of ``map``,
``iterate`` and the executor's ``submit``. Tasks of one *class* (the same amounts,
:func:`dask_redisparam.wire.resources.class_name`) leave in messages of their own, to the queue of the class, which
only workers whose daemon covers the class claim from (:mod:`dask_redisparam.backend.resources`). The run's window
holds, per class, ``ceil(slots × queue_multiplier)`` messages, where *slots* is how many messages of the class the
live daemons can run at once (each daemon: its processes, at most what its resources allow), apart from the window
of the tasks without resources. A class that no live worker can run waits; after :data:`RESOURCE_WARNING` seconds
the manager warns, naming a waiting task and the resources, every :data:`RESOURCE_WARNING` seconds.

Examples
--------
>>> task_classes({"resources": {"a": {"GPU": 1}, "b": {}}}, {"a": None, "b": None})
{'a': 'GPU=1.0'}
>>> workers = [("d1", (("GPU", 1.0),)), ("d1", (("GPU", 1.0),)), ("d2", ())]
>>> class_windows(workers, ["GPU=1.0", "GPU=2.0"], 2.0)
{'GPU=1.0': 2, 'GPU=2.0': 0}
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from ..config.checks import resources as check_resources
from ..errors import ConfigurationError
from ..wire.resources import Resources, class_name, of_record, parse_class, slots

__all__ = ["RESOURCE_WARNING", "class_of", "class_windows", "daemons_of", "task_classes", "with_default"]

RESOURCE_WARNING = 10.0
"""Seconds a task waits for a live worker with its resources before the manager warns (and again as often)."""


def class_of(key: Hashable, value: Any) -> str | None:
    """The resource class of task ``key`` asking for ``value`` (a mapping, ``"GPU=1"``, pairs; None or empty:
    none); a malformed value raises :class:`~dask_redisparam.errors.ConfigurationError` naming the task.

    Examples
    --------
    >>> class_of("t", "GPU=1"), class_of("t", None)
    ('GPU=1.0', None)
    >>> class_of("t", {"GPU": -1})
    Traceback (most recent call last):
    ...
    dask_redisparam.errors.ConfigurationError: task 't': resources: GPU=-1 must be a finite number > 0
    """
    try:
        demand: Resources = check_resources("resources", value, {})
    except ConfigurationError as e:
        raise ConfigurationError(f"task {key!r}: {e}") from None
    return class_name(demand) if demand else None


def task_classes(
    annotations: Mapping[str, Mapping[Hashable, Any]], nodes: Mapping[Hashable, Any]
) -> dict[Hashable, str]:
    """Task key -> resource class, for the tasks of ``nodes`` whose ``resources`` annotation asks for some."""
    out: dict[Hashable, str] = {}
    for key, value in (annotations.get("resources") or {}).items():
        if key in nodes:
            cls = class_of(key, value)
            if cls is not None:
                out[key] = cls
    return out


def with_default(
    annotations: Mapping[str, Mapping[Hashable, Any]], nodes: Mapping[Hashable, Any], value: Any
) -> dict[str, dict[Hashable, Any]]:
    """``annotations`` where every task of ``nodes`` (not the literals) without a ``resources`` annotation asks
    for ``value`` (a compute's ``resources=``).

    Examples
    --------
    >>> with_default({"resources": {"a": {"GPU": 2}}}, {"a": None, "b": None}, {"GPU": 1})["resources"]
    {'a': {'GPU': 2}, 'b': {'GPU': 1}}
    """
    from dask._task_spec import DataNode

    out = {name: dict(values) for name, values in annotations.items()}
    annotated = out.setdefault("resources", {})
    for key, node in nodes.items():
        if key not in annotated and not isinstance(node, DataNode):
            annotated[key] = value
    return out


def daemons_of(records: Mapping[str, Mapping[str, str]]) -> list[tuple[str, Resources]]:
    """``(daemon id, resources)`` of each live worker process, from their registration fields (``daemon``,
    ``resources``: :meth:`dask_redisparam.worker.loop.Worker.info`); a worker of an older version has none."""
    return [(fields.get("daemon") or wid, of_record(fields.get("resources"))) for wid, fields in records.items()]


def class_windows(
    workers: Iterable[tuple[str, Resources]], classes: Iterable[str], multiplier: float
) -> dict[str, int]:
    """The window (messages out at once) of each class: ``ceil(slots × multiplier)``; see the module docstring."""
    daemons: dict[str, list[Any]] = {}
    for daemon, have in workers:
        entry = daemons.setdefault(daemon, [0, have])
        entry[0] += 1
    out = {}
    for cls in classes:
        demand = parse_class(cls)
        n = sum(min(processes, slots(have, demand)) for processes, have in daemons.values())
        out[cls] = math.ceil(n * multiplier)
    return out
