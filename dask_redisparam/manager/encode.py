"""A stable byte encoding of task literals and functions, the raw material of :mod:`.identity`.

:class:`Encoder` turns a value into bytes that are the same in every process (another ``PYTHONHASHSEED``,
another day, another notebook kernel) for the same value, and differ whenever the value differs. It appends the
pieces to a list, which the caller joins and hashes. What it encodes:

- ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``tuple``, ``list``, ``dict``,
  ``slice``, ``range``, and sets of values whose hash does not vary (numbers: encoded in sorted order);
- NumPy arrays (dtype, shape and the bytes; object arrays element by element), NumPy scalars and dtypes;
  pandas objects (their pickle, which is deterministic);
- functions: an importable one by ``(module, qualname)``; a Python function also by its code (bytecode,
  constants with nested code objects, names, defaults, closure cell values and, for functions outside the
  installed libraries, the values of the globals it refers to) and never by file name or line numbers, which
  change from one notebook kernel to the next; builtins, ufuncs and classes by reference; ``functools.partial``,
  bound methods and other callables through their pickle reduction, recursively;
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
dask_redisparam.manager.encode.Unstable: a set of str (its order changes with hash randomisation)
"""

from __future__ import annotations

import functools
import os
import pickle
import struct
import sys
import sysconfig
import types
from collections.abc import Callable
from typing import Any

__all__ = ["Encoder", "Unstable"]

_pack_double = struct.Struct("<d").pack
_LIBRARY_ROOTS = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths().get(name, "") for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    if p
)
_MAX_DEPTH = 200


class Unstable(Exception):
    """A value has no stable encoding; the message says why."""


def _str(obj: str) -> bytes:
    data = obj.encode("utf-8", "surrogatepass")
    return b"s%d:" % len(data) + data


class Encoder:
    """Encode literals and functions into stable bytes; caches functions and code objects for its lifetime.

    Make one encoder per graph: the caches hold on to the functions they saw, keyed by ``id``.
    """

    def __init__(self) -> None:
        self._funcs: dict[int, tuple[Any, bytes]] = {}
        self._modules: dict[str, bool] = {}
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
        out.append(b"b%d:" % len(obj) + bytes(obj))

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

    def unordered(self, tag: bytes, items: Any, out: list[bytes]) -> None:
        """Append ``items`` in the sorted order of their encodings (for sets, whose order means nothing)."""
        encoded = []
        for item in items:
            piece: list[bytes] = []
            self.literal(item, piece)
            encoded.append(b"".join(piece))
        encoded.sort()
        out.append(tag + b"%d" % len(encoded))
        out.extend(encoded)

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
                data = np.ascontiguousarray(obj).tobytes()
                out.append(b"a" + _str(str(obj.dtype.descr)) + b"%r" % (obj.shape,) + b"%d:" % len(data) + data)
        elif isinstance(obj, np.dtype):
            out.append(b"d" + _str(str(obj.descr) if obj.fields else obj.str))
        elif isinstance(obj, np.generic) and not isinstance(obj, np.object_):
            out.append(b"g" + _str(obj.dtype.str) + obj.tobytes())
        elif isinstance(obj, np.ufunc):
            out.append(b"U" + _str(obj.__name__))
        else:
            self._reduce(obj, out)

    def _pickle(self, obj: Any, out: list[bytes]) -> None:
        try:
            data = pickle.dumps(obj, protocol=5)
        except Exception as exc:
            raise Unstable(f"a {type(obj).__name__} that cannot be pickled ({exc})") from None
        out.append(b"p%d:" % len(data) + data)

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

    # -- functions -----------------------------------------------------------------------------------------

    def function(self, func: Any) -> bytes:
        """The encoding of a callable (cached per object for the encoder's lifetime)."""
        cached = self._funcs.get(id(func))
        if cached is not None and cached[0] is func:
            return cached[1]
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", "?")
        self._funcs[id(func)] = (func, b"@" + _str(f"{getattr(func, '__module__', '?')}.{name}"))  # recursion
        try:
            encoded = self._function(func)
        except BaseException:
            del self._funcs[id(func)]
            raise
        self._funcs[id(func)] = (func, encoded)
        return encoded

    def _function(self, func: Any) -> bytes:
        if isinstance(func, types.FunctionType):
            return self._python_function(func)
        if isinstance(func, types.BuiltinFunctionType):
            owner = func.__self__
            if owner is None or isinstance(owner, types.ModuleType):
                return b"B" + _str(f"{func.__module__}.{func.__qualname__}")
            out = [b"b" + _str(func.__name__)]
            self.literal(owner, out)
            return b"".join(out)
        if isinstance(func, types.MethodType):
            out = [b"M"]
            self.literal(func.__self__, out)
            out.append(self.function(func.__func__))
            return b"".join(out)
        if isinstance(func, type):
            return b"C" + self._class_ref(func) + self._class_body(func)
        if isinstance(func, functools.partial):
            out = [b"P", self.function(func.func)]
            self.literal(func.args, out)
            self.literal(func.keywords, out)
            return b"".join(out)
        if self._importable(func):
            return b"R" + self._class_ref(func)
        parts: list[bytes] = []
        if type(func).__module__ == "numpy":
            self._numpy(func, parts)
        else:
            self._reduce(func, parts)
        return b"".join(parts)

    def _python_function(self, func: types.FunctionType) -> bytes:
        module = func.__module__ or "?"
        out = [b"F" + _str(module) + _str(func.__qualname__), self._code(func.__code__)]
        self.literal(func.__defaults__, out)
        self.literal(func.__kwdefaults__, out)
        if func.__closure__:
            out.append(b"c%d" % len(func.__closure__))
            for cell in func.__closure__:
                try:
                    value = cell.cell_contents
                except ValueError:  # an empty cell
                    out.append(b"E")
                    continue
                self._value(value, out)
        if not self._is_library(module):
            out.append(b"G")
            names: list[str] = []
            self._names(func.__code__, names)
            namespace = func.__globals__
            for name in names:
                if name in namespace:
                    out.append(_str(name))
                    try:
                        self._value(namespace[name], out)
                    except Unstable as exc:
                        raise Unstable(f"global {name!r} of {module}.{func.__qualname__}: {exc}") from None
        return b"".join(out)

    def _value(self, value: Any, out: list[bytes]) -> None:
        if isinstance(value, types.ModuleType):
            out.append(b"m" + _str(value.__name__))
        elif callable(value) and not isinstance(value, (functools.partial,)) and hasattr(value, "__qualname__"):
            out.append(self.function(value))
        else:
            self.literal(value, out)

    def _names(self, code: types.CodeType, names: list[str]) -> None:
        stack = [code]
        seen: set[str] = set()
        while stack:
            current = stack.pop()
            for name in current.co_names:
                if name not in seen:
                    seen.add(name)
                    names.append(name)
            stack.extend(const for const in current.co_consts if isinstance(const, types.CodeType))

    def _code(self, code: types.CodeType) -> bytes:
        cached = self._funcs.get(id(code))
        if cached is not None and cached[0] is code:
            return cached[1]
        out = [
            b"K",
            code.co_code,
            b"%d,%d,%d,%d" % (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags),
        ]
        self.literal((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars), out)
        out.append(b"k%d" % len(code.co_consts))
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                out.append(self._code(const))
            elif isinstance(const, frozenset):
                self.unordered(b"S", const, out)
            else:
                self.literal(const, out)
        encoded = b"".join(out)
        self._funcs[id(code)] = (code, encoded)
        return encoded

    # -- references ----------------------------------------------------------------------------------------

    def _is_library(self, module: str) -> bool:
        known = self._modules.get(module)
        if known is None:
            mod = sys.modules.get(module)
            path = getattr(mod, "__file__", None)
            if mod is None:
                known = False
            elif path is None:
                known = module in sys.builtin_module_names
            else:
                known = os.path.realpath(path).startswith(_LIBRARY_ROOTS)
            self._modules[module] = known
        return known

    def _importable(self, obj: Any) -> bool:
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
            return False
        return _resolve(module, qualname) is obj

    def _class_body(self, kind: type) -> bytes:
        """For a class outside the installed libraries: the encodings of the functions it defines."""
        if self._is_library(kind.__module__):
            return b""
        out = [b"{"]
        for name, member in vars(kind).items():
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            elif isinstance(member, property):
                member = member.fget
            if isinstance(member, types.FunctionType):
                out.append(_str(name))
                out.append(self.function(member))
        return b"".join(out)

    def _class_ref(self, kind: Any) -> bytes:
        module, qualname = getattr(kind, "__module__", "?"), getattr(kind, "__qualname__", "?")
        return _str(f"{module}.{qualname}")

    def _reference(self, obj: Any, name: str) -> bytes:
        module = getattr(obj, "__module__", None) or pickle.whichmodule(obj, name)  # type: ignore[attr-defined]
        if _resolve(module, name) is not obj:
            raise Unstable(f"a reference {module}.{name} that does not resolve")
        return b"R" + _str(f"{module}.{name}")


def _resolve(module: str, qualname: str) -> Any:
    try:
        obj: Any = sys.modules[module]
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (KeyError, AttributeError):
        return None
    return obj
