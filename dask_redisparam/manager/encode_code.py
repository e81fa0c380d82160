r"""The stable encoding of functions, code objects and classes: the part of
:class:`~dask_redisparam.manager.encode.Encoder` that says what a callable computes.

A Python function is encoded by ``(module, qualname)`` and its code: bytecode, constants (nested code objects
included, frozensets in sorted order), names, argument counts and flags, defaults, closure cell values and, for
a function outside the installed libraries (``__main__``, a notebook cell, code run by ``exec``, a project's own
modules), the values of the globals it refers to, recursively; for an installed one, the version of its package
instead. Never its file name or line numbers, which change from one notebook kernel to the next. Builtins,
installed classes (with their package's version) and other importable callables are encoded by reference; a
class of the user's by reference and the functions it defines; ``functools.partial`` and bound
methods by their parts; anything else through its pickle reduction (:meth:`Encoder._reduce`).

Examples
--------
>>> from dask_redisparam.manager.encode import Encoder
>>> enc = Encoder()
>>> namespace: dict = {}
>>> exec(compile("def f(x):\n    return x + 1\n", "/tmp/kernel-1/cell.py", "exec"), namespace)
>>> first = enc.function(namespace["f"])
>>> exec(compile("\n\ndef f(x):\n    return x + 1\n", "/tmp/kernel-2/cell.py", "exec"), namespace)
>>> Encoder().function(namespace["f"]) == first  # another file, other lines: the same code
True
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
import sysconfig
import types
from typing import Any

from ..errors import Unstable

__all__ = ["CodeEncoder", "Unstable"]

_PACKAGE = __name__.split(".", 1)[0]

_LIBRARY_ROOTS = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths().get(name, "") for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    if p
)
MISSING: Any = object()


def _str(obj: str) -> bytes:
    data = obj.encode("utf-8", "surrogatepass")
    return b"s%d:" % len(data) + data


class CodeEncoder:
    """Functions, code objects and classes into stable bytes, cached per object; the base of ``Encoder``."""

    def __init__(self) -> None:
        self._funcs: dict[int, tuple[Any, bytes]] = {}
        self._modules: dict[str, bool] = {}
        self._versions: dict[str, bytes] = {}

    def literal(self, obj: Any, out: list[bytes]) -> None:
        """Append the encoding of the value ``obj`` to ``out``: ``Encoder`` provides it."""
        raise NotImplementedError

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

    def _reduce(self, obj: Any, out: list[bytes]) -> None:
        raise NotImplementedError

    def _numpy(self, obj: Any, out: list[bytes]) -> None:
        raise NotImplementedError

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
        if self._is_library(module, func.__globals__.get("__file__")):
            out.append(self._version(module))  # what it calls changes with the library's version
        else:
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

    def _is_library(self, module: str, path: Any = MISSING) -> bool:
        """Whether ``module`` (whose file is ``path``, if known) is installed: in the standard library or under
        site-packages, or this package itself (also in an editable install: its functions, such as the wrapper of
        ``map``'s chunks, refer to module state that changes as it runs, e.g. the random streams of
        :mod:`dask_redisparam.rng`). ``__main__``, a notebook cell, code run by ``exec``, a project's own modules are
        not."""
        if module == _PACKAGE or module.startswith(_PACKAGE + "."):
            return True
        if path is MISSING:
            path = getattr(sys.modules.get(module), "__file__", None)
        if module == "__main__" or not isinstance(path, str):
            return module in sys.builtin_module_names
        known = self._modules.get(path)
        if known is None:
            known = os.path.realpath(path).startswith(_LIBRARY_ROOTS)
            self._modules[path] = known
        return known

    def _version(self, module: str) -> bytes:
        """The version of the installed distribution that ``module`` belongs to (its top package's
        ``__version__``; Python's for the standard library), encoded; cached per top package."""
        top = module.partition(".")[0]
        cached = self._versions.get(top)
        if cached is None:
            version = getattr(sys.modules.get(top), "__version__", None)
            if not isinstance(version, str):
                version = f"python-{sys.version_info[0]}.{sys.version_info[1]}"
            cached = self._versions[top] = b"v" + _str(version)
        return cached

    def _importable(self, obj: Any) -> bool:
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
            return False
        return _resolve(module, qualname) is obj

    def _class_body(self, kind: type) -> bytes:
        """For a class outside the installed libraries: the encodings of the functions it defines."""
        if self._is_library(kind.__module__):
            return self._version(kind.__module__)
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
