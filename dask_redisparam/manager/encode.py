"""A stable byte encoding of task literals and functions, the raw material of :mod:`.identity`.

:class:`Encoder` turns a value into bytes that are the same in every process (another ``PYTHONHASHSEED``,
another day, another notebook kernel) for the same value, and differ whenever the value differs. It appends the
pieces to a list, which the caller joins and hashes. What it encodes:

- ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``tuple``, ``list``, ``dict``,
  ``slice``, ``range``, and sets of values whose hash does not vary (numbers: encoded in sorted order);
- NumPy arrays (dtype, shape and the bytes; object arrays element by element), NumPy scalars and dtypes;
  pandas objects (their pickle, which is deterministic); fsspec ``OpenFile`` objects of local files (path and
  version: the one look at the disk here);
- functions by :class:`~dask_redisparam.manager.encode_code.CodeEncoder`: by ``(module, qualname)`` and their
  code, never by file name or line numbers;
- any other object through its pickle reduction (``__reduce_ex__``), recursively.

A value that cannot be encoded stably raises :class:`Unstable` with the reason: a set of strings or bytes (its
order changes with hash randomisation), an object that cannot be reduced, a reference that does not resolve.

Examples
--------
>>> enc = Encoder()
>>> out: list[bytes] = []
>>> enc.literal((1, "a", [2.5, None]), out)
>>> b"".join(out)
b'(3i1;s1:a[2f\\x00\\x00\\x00\\x00\\x00\\x00\\x04@N'
>>> enc.literal({"x", "y"}, [])
Traceback (most recent call last):
...
dask_redisparam.errors.Unstable: a set of str (its order changes with hash randomisation)
"""

from __future__ import annotations

import functools
import pickle
import struct
import types
from collections.abc import Callable
from hashlib import blake2b
from typing import Any

from .encode_code import CodeEncoder, Unstable, _str

__all__ = ["Encoder", "Unstable"]

_pack_double = struct.Struct("<d").pack
_MAX_DEPTH = 200
_BLOB_BYTES = 64 * 1024


def _blob(tag: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """``tag`` and ``data``, length-prefixed; a large one (over 64 KiB) as its own digest, so that a big array
    is read once and never copied into the task's encoding."""
    if len(data) > _BLOB_BYTES:
        return tag + b"H" + blake2b(data, digest_size=32).digest()
    return tag + b"%d:" % len(data) + bytes(data)


class Encoder(CodeEncoder):
    """Encode literals and functions into stable bytes; caches functions and code objects for its lifetime.

    Make one encoder per graph: the caches hold on to the functions they saw, keyed by ``id``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._files: dict[str, str] = {}  # local path -> its version (fs.ukey), read once per encoder
        self._depth = 0
        self._dispatch: dict[type, Callable[[Any, list[bytes]], None]] = {
            int: self._int,
            str: self._strl,
            type(None): self._none,
            bool: self._bool,
            float: self._float,
            tuple: self._tuple,
            list: self._list,
            dict: self._dict,
            bytes: self._bytes,
            complex: self._complex,
            slice: self._slice,
            range: self._range,
            set: self._set,
            frozenset: self._set,
            bytearray: self._bytes,
        }

    # -- literals ------------------------------------------------------------------------------------------

    def literal(self, obj: Any, out: list[bytes]) -> None:
        """Append the encoding of ``obj`` to ``out``; raise :class:`Unstable` if it has none."""
        handler = self._dispatch.get(type(obj))
        if handler is not None:
            handler(obj, out)
        else:
            self._other(obj, out)

    @staticmethod
    def _int(obj: int, out: list[bytes]) -> None:
        out.append(b"i%d;" % obj)

    @staticmethod
    def _strl(obj: str, out: list[bytes]) -> None:
        out.append(_str(obj))

    @staticmethod
    def _none(obj: None, out: list[bytes]) -> None:
        out.append(b"N")

    @staticmethod
    def _bool(obj: bool, out: list[bytes]) -> None:
        out.append(b"T" if obj else b"F")

    @staticmethod
    def _float(obj: float, out: list[bytes]) -> None:
        out.append(b"f" + _pack_double(obj))

    @staticmethod
    def _complex(obj: complex, out: list[bytes]) -> None:
        out.append(b"j" + _pack_double(obj.real) + _pack_double(obj.imag))

    @staticmethod
    def _bytes(obj: bytes | bytearray, out: list[bytes]) -> None:
        out.append(_blob(b"b", obj))

    def _seq(self, tag: bytes, obj: Any, out: list[bytes]) -> None:
        out.append(tag + b"%d" % len(obj))
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise Unstable(f"a value nested more than {_MAX_DEPTH} levels deep")
            for item in obj:
                self.literal(item, out)
        finally:
            self._depth -= 1

    def _tuple(self, obj: tuple[Any, ...], out: list[bytes]) -> None:
        self._seq(b"(", obj, out)

    def _list(self, obj: list[Any], out: list[bytes]) -> None:
        self._seq(b"[", obj, out)

    def _dict(self, obj: dict[Any, Any], out: list[bytes]) -> None:
        out.append(b"{%d" % len(obj))
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise Unstable(f"a value nested more than {_MAX_DEPTH} levels deep")
            for key, value in obj.items():
                self.literal(key, out)
                self.literal(value, out)
        finally:
            self._depth -= 1

    def _slice(self, obj: slice, out: list[bytes]) -> None:
        out.append(b":")
        self.literal((obj.start, obj.stop, obj.step), out)

    def _range(self, obj: range, out: list[bytes]) -> None:
        out.append(b"r")
        self.literal((obj.start, obj.stop, obj.step), out)

    def _set(self, obj: set[Any] | frozenset[Any], out: list[bytes]) -> None:
        for item in obj:
            if not isinstance(item, (int, float, complex)):
                raise Unstable(f"a set of {type(item).__name__} (its order changes with hash randomisation)")
        self.unordered(b"S", obj, out)

    def _other(self, obj: Any, out: list[bytes]) -> None:
        if callable(obj) and isinstance(
            obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type, functools.partial)
        ):
            out.append(self.function(obj))
            return
        module = type(obj).__module__
        if module == "numpy":
            self._numpy(obj, out)
        elif module.startswith("pandas") and not isinstance(obj, type):
            self._pickle(obj, out)
        elif isinstance(obj, types.ModuleType):
            out.append(b"m" + _str(obj.__name__))
        elif isinstance(obj, types.CodeType):
            out.append(self._code(obj))
        elif module.startswith("fsspec") and type(obj).__name__ == "OpenFile":
            self._open_file(obj, out)
        elif type(obj).__name__ == "ufunc":
            out.append(b"U" + _str(obj.__name__))
        else:
            self._reduce(obj, out)

    def _numpy(self, obj: Any, out: list[bytes]) -> None:
        import numpy as np

        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                out.append(b"A" + _str(obj.dtype.str))
                self.literal(obj.shape, out)
                self._seq(b"[", obj.ravel().tolist(), out)
            else:
                data = memoryview(np.ascontiguousarray(obj).reshape(-1).view(np.uint8))  # type: ignore[arg-type]
                out.append(b"a" + _str(str(obj.dtype.descr)) + b"%r" % (obj.shape,) + _blob(b"", data))
        elif isinstance(obj, np.dtype):
            out.append(b"d" + _str(str(obj.descr) if obj.fields else obj.str))
        elif isinstance(obj, np.generic) and not isinstance(obj, np.object_):
            out.append(b"g" + _str(obj.dtype.str) + obj.tobytes())
        elif isinstance(obj, np.ufunc):
            out.append(b"U" + _str(obj.__name__))
        else:
            self._reduce(obj, out)

    def _open_file(self, obj: Any, out: list[bytes]) -> None:
        """An fsspec ``OpenFile`` (dask's ``read_csv``, ``read_text``): the file system, the path, how it is
        opened and, for a local file, its version (``fs.ukey``: size, modification time...). dask puts that
        version only into a key token that also changes from one process to the next, so it is read here: the
        one look at the disk this module takes. A file elsewhere has no version without a request: unstable."""
        fs = obj.fs
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if protocol not in ("file", "local"):
            raise Unstable(f"a file on {protocol}:// ({obj.path}): its version is not known without a request")
        try:
            version = self._files.get(obj.path) or fs.ukey(obj.path)
        except OSError as exc:
            raise Unstable(f"a file whose version cannot be read ({exc})") from None
        self._files[obj.path] = version
        out.append(b"o" + self._class_ref(type(fs)) + _str(obj.path) + _str(version))
        self.literal((obj.mode, obj.compression, obj.encoding, obj.errors, obj.newline), out)

    def _pickle(self, obj: Any, out: list[bytes]) -> None:
        try:
            data = pickle.dumps(obj, protocol=5)
        except Exception as exc:
            raise Unstable(f"a {type(obj).__name__} that cannot be pickled ({exc})") from None
        out.append(_blob(b"p", data))

    def _reduce(self, obj: Any, out: list[bytes]) -> None:
        kind = type(obj)
        reduce = getattr(kind, "__reduce_ex__", None)
        if reduce is None or reduce is object.__reduce_ex__ and kind.__module__ == "builtins":
            raise Unstable(f"no stable encoding for a {kind.__module__}.{kind.__qualname__}")
        try:
            rv = obj.__reduce_ex__(4)
        except Exception as exc:
            raise Unstable(f"a {kind.__qualname__} that cannot be pickled ({exc})") from None
        if isinstance(rv, str):  # a global, pickled by reference
            out.append(self._reference(obj, rv))
            return
        if not isinstance(rv, tuple) or len(rv) < 2:
            raise Unstable(f"a {kind.__qualname__} with an unusual pickle reduction")
        out.append(b"O" + self._class_ref(kind))
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise Unstable(f"a value nested more than {_MAX_DEPTH} levels deep")
            out.append(self.function(rv[0]))
            self.literal(rv[1], out)
            rest = list(rv[2:5]) + [None] * (5 - len(rv))
            state, listitems, dictitems = rest[0], rest[1], rest[2]
            self.literal(state, out)
            self.literal(None if listitems is None else list(listitems), out)
            self.literal(None if dictitems is None else dict(dictitems), out)
        finally:
            self._depth -= 1
