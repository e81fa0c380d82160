"""dask's disk-based shuffle, which is right only on workers that share one filesystem.

dask.dataframe's ``set_index``, ``merge``, ``shuffle``, ``groupby(..., split_out=n)`` and dask.bag's ``groupby``
move rows between partitions either with tasks (``"tasks"``) or through files (``"disk"``, with partd). dask
picks the method before a scheduler sees the graph (:func:`dask.utils.get_default_shuffle_method`: the
``dataframe.shuffle.method`` setting, else ``p2p`` under a distributed client, else ``disk``; dask.bag picks when
``groupby`` is called), so the scheduler cannot change it. The disk method writes each partition's pieces under
``temporary_directory`` (default the system's temp directory) of the worker that runs the task, and later tasks
read them back there. A worker on another machine sees only its own files: the rows the others wrote are missing
from the result, with no error.

:func:`disk_shuffle_key` finds such a task by its callable (one look per task, no deep scan: about 0.1 s for
a million tasks). :class:`~dask_redisparam.RedisParam` refuses such a graph with
:class:`~dask_redisparam.errors.UnsafeShuffle`, before any task runs, unless its pool is known to share one
filesystem; :func:`tasks_shuffle` is the configuration that :meth:`RedisParam.as_default
<dask_redisparam.RedisParam.as_default>` applies to pick the task-based shuffle instead.

Examples
--------
>>> import dask.bag as db
>>> from dask_redisparam.manager.graph import prepare_graph
>>> b = db.from_sequence(range(10), npartitions=2)
>>> on_disk, with_tasks = b.groupby(lambda x: x % 3, shuffle="disk"), b.groupby(lambda x: x % 3, shuffle="tasks")
>>> disk_shuffle_key(prepare_graph(on_disk, on_disk.__dask_keys__())) is None
False
>>> disk_shuffle_key(prepare_graph(with_tasks, with_tasks.__dask_keys__())) is None
True
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Hashable
from typing import TYPE_CHECKING, Any

import dask.config

from ..errors import UnsafeShuffle
from .graph import Graph

if TYPE_CHECKING:
    from ..config.settings import Settings

__all__ = ["DISK_SHUFFLE_CALLABLES", "check_disk_shuffle", "disk_shuffle_key", "tasks_shuffle"]

DISK_SHUFFLE_CALLABLES: tuple[tuple[str, str], ...] = (
    ("dask.dataframe.shuffle", "maybe_buffered_partd"),  # a class: the task that creates the partd calls an instance
    ("dask.dataframe.shuffle", "collect"),
    ("dask.dataframe.shuffle", "shuffle_group_3"),  # the legacy (non-expression) dask.dataframe
    ("dask.dataframe.dask_expr._shuffle", "DiskShuffle._shuffle_group"),
    ("dask.bag.core", "partition"),
    ("dask.bag.core", "collect"),
)
"""``(module, name)`` of the callables of dask's disk-shuffle tasks: those that create, fill and read a partd.
Names missing from the installed dask are skipped."""


def _markers() -> tuple[set[int], set[type]]:
    """The ids of the marker callables, and the marker classes, among the modules imported so far.

    A graph can hold such a task only if its module was imported (to build the graph, or to unpickle it), so
    modules not in ``sys.modules`` are not imported here.
    """
    ids: set[int] = set()
    classes: set[type] = set()
    for module_name, name in DISK_SHUFFLE_CALLABLES:
        obj: Any = sys.modules.get(module_name)
        for part in name.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type):
            classes.add(obj)
        elif obj is not None:
            ids.add(id(obj))
    return ids, classes


def disk_shuffle_key(graph: Graph) -> Hashable | None:
    """The key of a task of ``graph`` that belongs to dask's disk-based shuffle, or None if it has none.

    Only the tasks that will run count: keys whose values are known already (``graph.known``) do not.
    """
    ids, classes = _markers()
    if not ids and not classes:  # neither dask.dataframe nor dask.bag was imported
        return None
    known = graph.known
    for key, node in graph.nodes.items():
        func = getattr(node, "func", None)  # only a Task has one
        if func is not None and (id(func) in ids or type(func) in classes) and key not in known:
            return key
    return None


def check_disk_shuffle(
    key: Hashable, settings: Settings, local_ids: Collection[str] | None, live_workers: Callable[[str], list[str]]
) -> None:
    """Refuse a graph with the disk-shuffle task ``key`` unless the pool is known to share one filesystem.

    It is, if the ``shared_filesystem`` setting says so, or if only the param's own local workers (``local_ids``;
    None when it started none) serve the job: ``live_workers(jobname)`` is asked only then.

    Raises
    ------
    UnsafeShuffle
        Otherwise, naming the task, the job and the workers that may be elsewhere.
    """
    if settings.shared_filesystem:
        return
    if local_ids is None:
        where = f"workers this param did not start (is_worker={settings.is_worker})"
    else:
        others = sorted(set(live_workers(settings.jobname)) - set(local_ids))
        if not others:
            return
        where = f"workers this param did not start ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
    raise UnsafeShuffle(
        f"task {key!r} belongs to dask's disk-based shuffle (partd files on the local disk of each worker), but job "
        f"{settings.jobname!r} is served by {where}, which may be on other machines: rows would be lost silently. "
        'Use the task-based shuffle: dask.config.set({"dataframe.shuffle.method": "tasks"}) or `with '
        'param.as_default():` around the compute (for dask.bag: groupby(..., shuffle="tasks")). If every worker\'s '
        "dask temporary_directory is on one shared filesystem, declare it with shared_filesystem=True (or the dask "
        "config key redisparam.shared_filesystem). Nothing of the graph ran"
    )


def tasks_shuffle(scheduler: Any) -> dict[str, Any]:
    """The dask config that makes ``scheduler`` the default and the task-based shuffle dask's choice.

    ``dataframe.shuffle.method`` is set to ``"tasks"`` only if nobody set it: an explicit choice wins (and a
    ``"disk"`` one is then refused on a pool that does not share a filesystem).

    Examples
    --------
    >>> tasks_shuffle("sync")
    {'scheduler': 'sync', 'dataframe.shuffle.method': 'tasks'}
    >>> with dask.config.set({"dataframe.shuffle.method": "disk"}):
    ...     tasks_shuffle("sync")
    {'scheduler': 'sync'}
    """
    config: dict[str, Any] = {"scheduler": scheduler}
    if dask.config.get("dataframe.shuffle.method", None) is None:
        config["dataframe.shuffle.method"] = "tasks"
    return config
