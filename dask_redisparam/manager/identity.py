"""Stable task identities: what a task computes, as 16 bytes, the same in every process.

A task's identity is a BLAKE2b digest (:data:`IDENTITY_BYTES`) of a Merkle hash: its task spec encoded by
:class:`~dask_redisparam.manager.encode.Encoder` (function, literal arguments), with each dependency replaced
by the dependency's identity, plus the deterministic parts of its key name:

- the name's prefix (the name without a trailing dask token, as ``dask.utils.key_split`` strips it) and the
  key's tuple indices, always;
- the token itself only for a root task (one without dependencies), and not when it is a ``uuid4`` (an impure
  ``delayed`` call) nor when the name is the task function's name (``delayed``'s naming: its token is dask's
  ``tokenize`` of the function and arguments, which the hash covers, and changes with the notebook kernel,
  since it pickles the function's code with its file name). A root's token can carry what is in no argument; a
  dependent's token is derived from its inputs, which the hash covers already, and is often random
  (``finalize-hlgfinalizecompute-<hex>`` changes per process).

So the same code on the same inputs gives the same identities in another process, another day, with another
number of workers, also where dask's key names are random; a different literal, function (body), input or root
token gives a different identity. Tasks that come out equal (two impure calls ``f()``) are told apart by an
occurrence counter in a deterministic walk: from the requested keys in their order, each task's inputs in the
order they appear in its spec.

A literal without a stable encoding (:class:`~dask_redisparam.manager.encode.Unstable`) makes its task, and
every task after it, *unstable*: absent from :attr:`Identities.of`, the reason in :attr:`Identities.unstable`.

Examples
--------
>>> from operator import add
>>> from dask._task_spec import convert_legacy_graph
>>> nodes = convert_legacy_graph({"x": 1, "y": (add, "x", 10), "z": (add, "x", {"a", "b"})})
>>> ids = task_identities(nodes, ["y", "z"])
>>> len(ids.of["y"]), sorted(ids.of), ids.unstable["z"]
(16, ['x', 'y'], 'a set of str (its order changes with hash randomisation)')
>>> task_identities(nodes, ["y"]).of["y"] == ids.of["y"]
True
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Hashable, Iterable, Mapping
from hashlib import blake2b
from typing import Any

from dask._task_spec import Alias, DataNode, GraphNode, NestedContainer, Set, Task, TaskRef, _execute_subgraph
from dask.utils import funcname

from .encode import Encoder, _pack_double
from .encode_code import Unstable, _str

__all__ = ["IDENTITY_BYTES", "Identities", "split_name", "task_identities"]

IDENTITY_BYTES = 16
"""The size of an identity in bytes (a BLAKE2b digest)."""

_UUID = re.compile(r"^(.*)-([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})$")
_TOKEN = re.compile(r"^(.*?)((?:-[0-9a-f]{8,})+)$")


@dataclasses.dataclass
class Identities:
    """The identities of a graph's tasks.

    Attributes
    ----------
    of : dict
        Key -> 16-byte identity, for every key whose identity is stable.
    unstable : dict
        Key -> why it has none: a root cause, or ``"depends on <key>"``.
    """

    of: dict[Hashable, bytes] = dataclasses.field(default_factory=dict)
    unstable: dict[Hashable, str] = dataclasses.field(default_factory=dict)

    def first_unstable(self) -> tuple[Hashable, str] | None:
        """A key whose identity is unstable for a root cause (not merely through an input), or None."""
        for key, reason in self.unstable.items():
            if not reason.startswith("depends on "):
                return key, reason
        return next(iter(self.unstable.items()), None)


def split_name(name: str) -> tuple[str, str, bool]:
    """``(prefix, token, random)`` of a key name: ``random`` when the token is a ``uuid4``.

    Examples
    --------
    >>> split_name("sum-aggregate-54a9b7ec998572220bbfb00ae9eb5d28")
    ('sum-aggregate', '-54a9b7ec998572220bbfb00ae9eb5d28', False)
    >>> split_name("f-3ecdf857-ae35-489b-87ff-4cf6e213cb18")
    ('f', '-3ecdf857-ae35-489b-87ff-4cf6e213cb18', True)
    >>> split_name("x")
    ('x', '', False)
    """
    match = _UUID.match(name)
    if match:
        return match.group(1), "-" + match.group(2), True
    match = _TOKEN.match(name)
    if match and match.group(1):
        return match.group(1), match.group(2), False
    return name, "", False


def _ordered_deps(node: GraphNode) -> list[Hashable]:
    """The keys ``node`` depends on, in the order they appear in its spec (first occurrence), no recursion."""
    if isinstance(node, Alias):
        return [node.target]
    found: dict[Hashable, None] = {}
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, TaskRef):
            found.setdefault(item.key)
        elif isinstance(item, Task):
            if item.dependencies:
                stack.extend(reversed(list(item.kwargs.values())))
                stack.extend(reversed(item.args))
        elif isinstance(item, Alias):
            found.setdefault(item.target)
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
    deps = node.dependencies  # a fused subgraph's inner references are not dependencies
    return [key for key in found if key in deps]


class _Hasher:
    """Encodes task specs with their inputs replaced by identities."""

    def __init__(self) -> None:
        self.enc = Encoder()
        self.of: dict[Hashable, bytes] = {}
        self.names: dict[str, tuple[bytes, bytes]] = {}
        self.funcs: dict[int, tuple[bytes, bytes]] = {}  # id(func) -> (encoding, name), while the graph holds it
        self.fnames: dict[int, bytes] = {}  # id(func) -> its name, encoded as a key prefix
        self.fdigests: dict[int, bytes] = {}  # id(func) -> the digest of its encoding
        self.seen: set[bytes] = set()  # the digests seen in this walk
        self.seen_digest: dict[bytes, int] = {}  # digest seen more than once -> how many tasks had it

    def function(self, func: Any) -> bytes:
        """The digest of ``func``'s encoding (cached): a task hashes 16 bytes for its function, not its code."""
        cached = self.fdigests.get(id(func))
        if cached is None:
            cached = blake2b(self.enc.function(func), digest_size=IDENTITY_BYTES).digest()
            self.fdigests[id(func)] = cached
        return cached

    def fname(self, func: Any) -> bytes:
        """``func``'s name as a key prefix is encoded (``dask.utils.funcname``, as ``delayed`` names its keys)."""
        cached = self.fnames.get(id(func))
        if cached is None:
            cached = self.fnames[id(func)] = b"n" + _str(funcname(func))
        return cached

    def key(self, key: Hashable, root: bool, out: list[bytes], func: Any = None) -> None:
        if isinstance(key, tuple) and key and isinstance(key[0], str):
            name: Any = key[0]
            indices: Any = key[1:]
        else:
            name, indices = key, None
        if isinstance(name, str):
            parts = self.names.get(name)
            if parts is None:
                prefix, token, random = split_name(name)
                parts = (b"n" + _str(prefix), b"" if random else _str(token))
                self.names[name] = parts
            out.append(parts[0])
            if root and (func is None or parts[0] != self.fname(func)):
                out.append(parts[1])
        else:
            self.enc.literal(name, out)
        if indices is not None:
            self.enc.literal(indices, out)

    def node(self, node: Any, out: list[bytes]) -> None:
        stack: list[Any] = [node]
        while stack:
            item = stack.pop()
            if isinstance(item, GraphNode):
                if isinstance(item, NestedContainer):
                    self._container(item, out)
                elif isinstance(item, Task) and item.func is _execute_subgraph:
                    out.append(b"X" + self._subgraph(item))
                elif isinstance(item, Task):
                    out.append(b"t" + self.function(item.func) + b"%d,%d" % (len(item.args), len(item.kwargs)))
                    pending: list[Any] = list(item.args)
                    for name, value in item.kwargs.items():
                        pending.append(name)
                        pending.append(value)
                    stack.extend(reversed(pending))
                elif isinstance(item, DataNode):
                    out.append(b"D")
                    self.enc.literal(item.value, out)
                elif isinstance(item, Alias):
                    out.append(b"L" + self.of[item.target])
                else:
                    raise Unstable(f"an unknown task spec node {type(item).__name__}")
            elif isinstance(item, TaskRef):
                out.append(b"R" + self.of[item.key])
            elif isinstance(item, (tuple, list)) and _has_refs(item):
                out.append((b"(" if isinstance(item, tuple) else b"[") + b"%d" % len(item))
                stack.extend(reversed(item))
            elif isinstance(item, dict) and _has_refs(list(item.values())):
                out.append(b"{%d" % len(item))
                for name, value in reversed(list(item.items())):
                    stack.append(value)
                    stack.append(name)
            else:
                self.enc.literal(item, out)

    def _subgraph(self, task: Task) -> bytes:
        """The identity of a fused subgraph's output: its inner tasks walked with the outer inputs' identities."""
        inner, outkey, inkeys = task.args[:3]
        outer, seen, counts = self.of, self.seen, self.seen_digest
        of: dict[Hashable, bytes] = {}
        for key, value in zip(inkeys, task.args[3:], strict=False):  # as _execute_subgraph binds them
            piece: list[bytes] = []
            self.node(value, piece)
            of[key] = blake2b(b"".join(piece), digest_size=IDENTITY_BYTES).digest()
        unstable: dict[Hashable, str] = {}
        try:
            self.walk(inner, [outkey], of, unstable)
        finally:
            self.of, self.seen, self.seen_digest = outer, seen, counts
        if outkey in unstable:
            raise Unstable(unstable[outkey])
        return of[outkey]

    def walk(
        self,
        nodes: Mapping[Hashable, GraphNode],
        keys: Iterable[Hashable],
        of: dict[Hashable, bytes],
        unstable: dict[Hashable, str],
    ) -> None:
        """Fill ``of`` and ``unstable`` for ``keys`` and everything they need in ``nodes``."""
        self.of = of
        self.seen, self.seen_digest = set(), {}
        expanded: set[Hashable] = set()
        stack = list(keys)
        plain, finish = self.plain, self.finish
        for key in stack:  # first the requested tasks without inputs, in their order: most of a wide graph, fast
            node = nodes.get(key)
            if node is not None and not node.dependencies and key not in of:
                try:
                    encoded = plain(key, node, True)
                except (Unstable, RecursionError):  # the walk below records why
                    continue
                if encoded is not None:
                    of[key] = finish(encoded)
        stack = [key for key in reversed(stack) if key not in of]
        while stack:
            key = stack[-1]
            if key in of or key in unstable:
                stack.pop()
                continue
            node = nodes.get(key)
            if node is None:
                stack.pop()
                unstable[key] = "not in the graph"
                continue
            deps = node.dependencies
            if deps and key not in expanded:
                expanded.add(key)
                ordered = _ordered_deps(node)
                stack.extend(dep for dep in reversed(ordered) if dep not in of and dep not in unstable)
                continue
            stack.pop()
            if deps:
                bad = next((dep for dep in deps if dep not in of), None)
                if bad is not None:
                    unstable[key] = f"depends on {bad!r}" if bad in unstable else f"a cycle through {bad!r}"
                    continue
            try:
                encoded = self.plain(key, node, not deps)
                if encoded is None:
                    out: list[bytes] = []
                    func = node.func if isinstance(node, Task) else None
                    self.key(key, not deps and not isinstance(node, DataNode), out, func)
                    self.node(node, out)
                    encoded = b"".join(out)
            except Unstable as exc:
                unstable[key] = str(exc)
                continue
            except RecursionError:
                unstable[key] = "a value nested too deeply to encode"
                continue
            of[key] = finish(encoded)

    def finish(self, encoded: bytes) -> bytes:
        """The identity of a task encoded as ``encoded``: its digest, or for the n-th equal one (n > 0) the
        digest of the digest and n."""
        digest = blake2b(encoded, digest_size=IDENTITY_BYTES).digest()
        if digest not in self.seen:
            self.seen.add(digest)
            return digest
        count = self.seen_digest.get(digest, 1)
        self.seen_digest[digest] = count + 1
        return blake2b(digest + b"#%d" % count, digest_size=IDENTITY_BYTES).digest()

    def plain(self, key: Any, node: Any, root: bool) -> bytes | None:
        """The encoding of the commonest task, fast: a ``Task`` of plain arguments (numbers, strings, inputs)
        under a key ``(name, int, ...)`` or ``name``; None for any other (then :meth:`key` and :meth:`node`),
        with the same result."""
        if type(node) is not Task or node.kwargs:
            return None
        func = node.func
        cached = self.funcs.get(id(func))
        if cached is None:
            if func is _execute_subgraph:
                return None
            cached = self.funcs[id(func)] = (b"t" + self.function(func), self.fname(func))
        args = node.args
        out = [b"", cached[0] + b"%d,0" % len(args)]
        of = self.of
        for arg in args:
            kind = type(arg)
            if kind is int:
                out.append(b"i%d;" % arg)
            elif kind is TaskRef:
                out.append(b"R" + of[arg.key])
            elif kind is str:
                out.append(_str(arg))
            elif kind is float:
                out.append(b"f" + _pack_double(arg))
            elif arg is None:
                out.append(b"N")
            else:
                return None
        kind = type(key)
        if kind is tuple:
            name = key[0]
            if type(name) is not str:
                return None
            if len(key) == 2 and type(key[1]) is int:
                indices = b"(1i%d;" % key[1]
            else:
                for index in key[1:]:
                    if type(index) is not int:
                        return None
                indices = b"(%d" % (len(key) - 1) + b"".join(b"i%d;" % index for index in key[1:])
        elif kind is str:
            name, indices = key, b""
        else:
            return None
        parts = self.names.get(name)
        if parts is None:
            prefix, token, random = split_name(name)
            parts = (b"n" + _str(prefix), b"" if random else _str(token))
            self.names[name] = parts
        if root and parts[0] != cached[1]:
            out[0] = parts[0] + parts[1] + indices
        else:
            out[0] = parts[0] + indices
        return b"".join(out)

    def _container(self, item: NestedContainer, out: list[bytes]) -> None:
        tag = type(item).__name__.encode()
        if isinstance(item, Set):
            pieces = []
            for element in item.args:
                piece: list[bytes] = []
                self.node(element, piece)
                pieces.append(b"".join(piece))
            pieces.sort()
            out.append(b"c" + tag + b"%d" % len(pieces))
            out.extend(pieces)
            return
        out.append(b"c" + tag + b"%d" % len(item.args))
        for element in item.args:
            self.node(element, out)


def _has_refs(items: Any) -> bool:
    return any(isinstance(item, (TaskRef, GraphNode, list, tuple, dict)) for item in items)


def task_identities(nodes: Mapping[Hashable, GraphNode], keys: Iterable[Hashable]) -> Identities:
    """The identities of ``keys`` and of every task they need (a walk without recursion).

    Parameters
    ----------
    nodes : Mapping
        Key -> ``GraphNode`` (dask's task spec, as ``convert_legacy_graph`` gives it).
    keys : iterable
        The requested keys, in their order (the order tells structurally identical tasks apart).

    Returns
    -------
    Identities
        ``of`` for the stable keys, ``unstable`` (with reasons) for the others; a key missing from ``nodes``
        is unstable too.
    """
    ids = Identities()
    _Hasher().walk(nodes, keys, ids.of, ids.unstable)
    return ids
