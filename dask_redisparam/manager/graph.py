"""From what dask hands a scheduler to a culled, ordered task graph.

dask passes a ``get`` an ``Expr`` (from ``dask.compute``), a ``HighLevelGraph`` or a plain dict with legacy
tuples. :func:`prepare_graph` accepts all three, converts them to dask's task spec (``Task``, ``Alias``,
``DataNode``...), checks the requested keys (``KeyError`` for an unknown one), keeps only what the requested
keys need, and orders it with :func:`dask.order.order`. Nothing here recurses, so a 10,000-long chain is fine.
Every run also gets the stable identity of each task (:mod:`~dask_redisparam.manager.identity`), in
``Graph.identities``; ``find`` may name the keys whose values exist already, by their identities.

Examples
--------
>>> from operator import add
>>> g = prepare_graph({"x": 1, "y": (add, "x", 10), "unused": (add, 1, 2)}, "y")
>>> sorted(g.nodes), g.dependencies["y"], g.requested
(['x', 'y'], {'x'}, ['y'])
>>> g = prepare_graph({"x": 1, "y": (add, "x", 10)}, "y", find=lambda ids: ["x"])
>>> sorted(g.known), len(g.identities.of["y"])
(['x'], 16)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Any, cast

from dask._task_spec import Alias, DataNode, GraphNode, Task, convert_legacy_graph, convert_legacy_task
from dask.core import flatten
from dask.order import order

from .collector import collect_new_garbage, freeze_long_lived
from .identity import Identities, task_identities

__all__ = ["EMPTY", "Graph", "convert_graph", "flatten_keys", "materialize", "prepare_graph"]

logger = logging.getLogger(__name__)

EMPTY: set[Hashable] = cast(set[Hashable], frozenset())
"""The one empty set of dependencies or dependents shared by all tasks without any (saves ~200 bytes a task).
It is immutable on purpose: code that tried to add to it would fail at once."""


@dataclasses.dataclass
class Graph:
    """A culled task graph ready to run.

    Attributes
    ----------
    nodes : dict
        Key -> ``GraphNode`` for every key the requested keys need.
    dependencies, dependents : dict
        Key -> set of keys, both directions.
    priority : dict
        Key -> int from ``dask.order.order``; lower runs first.
    requested : list
        The requested keys, flat and without duplicates, in first-seen order.
    annotations : dict
        ``{annotation: {key: value}}`` as dask collections attach them.
    known : set
        Keys whose values exist already (kept from a failed run, or saved in a result directory): they are
        not computed, and neither is anything only they need.
    identities : Identities
        The stable identity of every key the requested keys need (before culling at ``known``), and the
        reasons of those without one.
    """

    nodes: dict[Hashable, GraphNode]
    dependencies: dict[Hashable, set[Hashable]]
    dependents: dict[Hashable, set[Hashable]]
    priority: dict[Hashable, int]
    requested: list[Hashable]
    annotations: dict[str, dict[Hashable, Any]]
    known: set[Hashable] = dataclasses.field(default_factory=set)
    identities: Identities = dataclasses.field(default_factory=Identities)
    fields_in_order: bool = False
    """Whether ``priority`` numbers the keys of ``nodes`` in order (0, 1, 2...): then it is also the run's field
    numbering (one dict less, ~70 bytes a task)."""


def materialize(dsk: Any) -> tuple[dict[Hashable, Any], dict[str, dict[Hashable, Any]]]:
    """Return ``(graph dict, annotations)`` for an ``Expr``, a ``HighLevelGraph`` or a mapping."""
    annotations: dict[str, dict[Hashable, Any]] = {}
    if hasattr(dsk, "__dask_annotations__") and not isinstance(dsk, Mapping):
        try:
            annotations = dict(dsk.__dask_annotations__() or {})
        except Exception:  # annotations are advisory; a collection that cannot report them has none
            annotations = {}
    if not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    return dict(dsk), annotations


_TASK_SLOTS = ("key", "_dependencies", "func", "args", "kwargs", "_data_producer", "_token", "_is_coro", "_repr")
_FAST = tuple(getattr(GraphNode, "__slots__", ())) + tuple(getattr(Task, "__slots__", ())) == _TASK_SLOTS
"""Whether :func:`convert_graph` may build ``Task`` objects itself (the dask version's slots are the known ones)."""
_NO_KWARGS: dict[str, Any] = {}
"""The keyword arguments of every ``Task`` that :func:`convert_graph` builds: none, one shared empty dict (64 bytes a
task less; nothing changes a task's keywords)."""
_NO_DEPS: frozenset[Hashable] = frozenset()
_MAYBE_KEY = frozenset({int, float, str, bool})
"""Literal types that dask's conversion looks up among the graph's keys (a match is an input)."""
_LITERAL = frozenset({bytes, type(None)})


def convert_graph(raw: dict[Hashable, Any]) -> dict[Hashable, GraphNode]:
    """``dask._task_spec.convert_legacy_graph(raw)``, the same nodes, built faster for the commonest task.

    A tuple ``(func, *args)`` whose arguments are all numbers, strings, bytes or None, none of them a key of the
    graph, becomes its ``Task`` here directly (no inputs, so no ``TaskRef``; the empty keyword dict is shared);
    anything else goes through dask's own ``convert_legacy_task``.

    Examples
    --------
    >>> from operator import add
    >>> nodes = convert_graph({"x": (add, 1, 2), "y": (add, "x", 1), "z": 5})
    >>> nodes == convert_legacy_graph({"x": (add, 1, 2), "y": (add, "x", 1), "z": 5})
    True
    >>> nodes["x"](), sorted(nodes["y"].dependencies)
    (3, ['x'])
    """
    if not _FAST:
        return cast(dict[Hashable, GraphNode], convert_legacy_graph(raw))
    out: dict[Hashable, GraphNode] = {}
    new, maybe_key, literal = Task.__new__, _MAYBE_KEY, _LITERAL
    for key, value in raw.items():
        if type(value) is tuple and value and callable(value[0]):
            args = value[1:]
            for arg in args:
                kind = type(arg)
                if kind in maybe_key:
                    if arg in raw:
                        break
                elif kind not in literal:
                    break
            else:
                task = new(Task)
                task.key, task.func, task.args, task.kwargs = key, value[0], args, _NO_KWARGS  # type: ignore[assignment]
                task._dependencies, task._data_producer = _NO_DEPS, False
                task._token = task._is_coro = task._repr = None
                out[key] = task
                continue
        node = convert_legacy_task(key, value, raw)  # type: ignore[arg-type]
        if isinstance(node, Alias) and node.target == key:
            continue
        out[key] = node if isinstance(node, GraphNode) else DataNode(key, node)
    return out


def flatten_keys(keys: Any) -> list[Hashable]:
    """The requested keys, flattened from nested lists, without duplicates, in first-seen order.

    Examples
    --------
    >>> flatten_keys([["x"], "y", "x"])
    ['x', 'y']
    """
    if not isinstance(keys, list):
        return [keys]
    flat = list(flatten(keys))  # type: ignore[no-untyped-call]
    return list(dict.fromkeys(flat))


def prepare_graph(
    dsk: Any,
    keys: Any,
    known: Collection[Hashable] = (),
    find: Callable[[Identities], Collection[Hashable]] | None = None,
) -> Graph:
    """Materialize, convert, check, cull and order ``dsk`` for the requested ``keys``.

    Keys in ``known`` have values already: the walk from the requested keys stops at them. ``find``, if given,
    is called once with the identities of every key the requested keys need (before culling); the keys it
    returns join ``known``.

    Raises
    ------
    KeyError
        A requested key is not in the graph.
    ValueError
        A task depends on a key that is neither in the graph nor a literal.
    """
    raw, annotations = materialize(dsk)
    requested = flatten_keys(keys)
    for key in requested:
        if key not in raw:
            raise KeyError(key)
    converted = convert_graph(raw)
    identities = task_identities(converted, requested)
    if identities.unstable:
        log_unstable(identities)
    if find is not None:
        found = find(identities)
        if found:
            known = set(known) | set(found)
    nodes: dict[Hashable, GraphNode] = {}
    dependencies: dict[Hashable, set[Hashable]] = {}
    dependents: dict[Hashable, set[Hashable]] = {}
    stack = list(requested)
    while stack:  # a task without dependencies (or dependents) gets the shared EMPTY, never a set of its own
        key = stack.pop()
        if key in nodes:
            continue
        node = converted[key]
        nodes[key] = node
        found = node.dependencies
        deps = set(found) if found and key not in known else EMPTY
        if key in deps:
            raise ValueError(f"task {key!r} depends on itself (an argument equal to a key refers to that key)")
        dependencies[key] = deps
        if key not in dependents:
            dependents[key] = EMPTY
        for dep in deps:
            if dep not in converted:
                raise ValueError(f"Missing dependency {dep!r} of task {key!r}")
            linked = dependents.get(dep)
            if linked is None or linked is EMPTY:
                dependents[dep] = {key}
            else:
                linked.add(key)
            if dep not in nodes:
                stack.append(dep)
    if any(dependencies.values()):
        freeze_long_lived()  # during a compute: what exists now is no garbage of dask.order's (collected below)
        priority: dict[Hashable, int] = dict(order(nodes, dependencies=dependencies))  # type: ignore[arg-type]
        collect_new_garbage()
        in_order = False
    else:  # no edges: the graph's own order (as given), since dask.order costs ~20 us a node and adds nothing;
        # the nodes follow it too, so a task's priority is its field number: one dict serves as both
        nodes = (
            nodes if len(nodes) == len(raw) and list(nodes) == list(raw) else {k: nodes[k] for k in raw if k in nodes}
        )
        priority = {key: n for n, key in enumerate(nodes)}
        in_order = True
    out = Graph(nodes, dependencies, dependents, priority, requested, annotations, set(known) & set(nodes), identities)
    out.fields_in_order = in_order
    return out


def log_unstable(identities: Identities) -> None:
    """Say once (``logging.INFO``) which tasks have no stable identity and why: they are never resumed or reused."""
    first = identities.first_unstable()
    if first is None:
        return
    key, reason = first
    count = len(identities.unstable)
    logger.info(
        "%d task%s without a stable identity (not resumed, not reused from a resultdir across processes): first %r: %s",
        count,
        "" if count == 1 else "s",
        key,
        reason,
    )
