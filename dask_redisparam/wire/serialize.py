"""Turning tasks, values and exceptions into bytes and back.

Functions and graph nodes go through cloudpickle (so lambdas and functions defined in ``__main__`` or a
notebook travel by value). Task results go through the standard pickle first, which is faster for plain data,
and fall back to cloudpickle. Tracebacks travel as real traceback objects (tblib) and as text.

Examples
--------
>>> loads(dumps_value([1, 2, 3]))
[1, 2, 3]
>>> exc_bytes = dumps_exception(*_raise_and_catch(ZeroDivisionError("boom")))
>>> exc, tb, text = loads_exception(exc_bytes)
>>> type(exc).__name__, "ZeroDivisionError" in text
('ZeroDivisionError', True)
"""

from __future__ import annotations

import pickle
import traceback
from types import TracebackType
from typing import Any

import cloudpickle
from dask.sizeof import sizeof
from tblib import pickling_support

from ..errors import RemoteError, StandInError
from .bulk import LARGE_BYTES, Frames

__all__ = [
    "dumps_exception",
    "dumps_result",
    "dumps_task",
    "dumps_value",
    "loads",
    "loads_exception",
    "make_remote",
    "qualified_name",
    "safe_str",
]

pickling_support.install()

PROTOCOL = pickle.HIGHEST_PROTOCOL

_SCALARS = frozenset({int, float, bool, complex, type(None)})
_SIZED = frozenset({str, bytes})


def dumps_task(obj: Any) -> bytes:
    """Pickle a task payload: the standard pickle when every function is importable (it is faster), else
    cloudpickle, which sends lambdas, closures and functions of ``__main__`` (scripts, notebooks) by value."""
    try:
        data = pickle.dumps(obj, protocol=PROTOCOL)
    except Exception:
        data = b"__main__"  # not picklable by reference: cloudpickle below
    if b"__main__" in data:  # a reference to the manager's __main__ would not resolve on a worker
        data = bytes(cloudpickle.dumps(obj, protocol=PROTOCOL))
    return data


def dumps_value(obj: Any) -> bytes:
    """Pickle a result value: the standard pickle, else cloudpickle (e.g. a lambda inside the value)."""
    try:
        return pickle.dumps(obj, protocol=PROTOCOL)
    except Exception:
        return bytes(cloudpickle.dumps(obj, protocol=PROTOCOL))


def dumps_result(obj: Any) -> bytes | Frames:
    """Pickle a task's result: one pickle when small, else :class:`~dask_redisparam.wire.bulk.Frames` (protocol 5 with
    out-of-band buffers: a large numpy array is referenced, not copied), stored as parts.

    Examples
    --------
    >>> dumps_result(1) == dumps_value(1)
    True
    >>> type(dumps_result(bytearray(LARGE_BYTES))).__name__
    'Frames'
    """
    kind = type(obj)
    if kind in _SCALARS or (kind in _SIZED and len(obj) < LARGE_BYTES):  # no sizeof dispatch for the commonest
        blob = pickle.dumps(obj, protocol=PROTOCOL)
        return blob if len(blob) < LARGE_BYTES else Frames(blob, [])
    if sizeof(obj) < LARGE_BYTES:
        blob = dumps_value(obj)
        return blob if len(blob) < LARGE_BYTES else Frames(blob, [])
    buffers: list[pickle.PickleBuffer] = []
    try:
        header = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    except Exception:
        buffers.clear()
        header = bytes(cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append))
    frames = Frames(header, [b.raw() for b in buffers])
    if frames.nbytes < LARGE_BYTES:  # smaller than it looked: one ordinary pickle
        return dumps_value(obj)
    return frames


def loads(data: bytes | memoryview) -> Any:
    """Unpickle what :func:`dumps_task` or :func:`dumps_value` made."""
    return pickle.loads(data)


def dumps_exception(exc: BaseException, tb: TracebackType | None) -> bytes:
    """Pickle an exception with its traceback object and the formatted traceback text.

    The record is a plain pickle of ``(type name, message, traceback text, pickled exception or None, reason)``, so
    that the manager learns the type name, message and traceback text even when it cannot rebuild the exception.
    The exception must round-trip here (pickle, then unpickle) to be sent as itself, with its traceback or else
    without; otherwise it is left out and ``reason`` says why: :func:`loads_exception` then returns a
    :class:`~dask_redisparam.errors.StandInError`.

    Examples
    --------
    >>> class Picky(Exception):
    ...     def __init__(self, a, b):
    ...         super().__init__(f"{a}/{b}")
    >>> exc, tb, text = loads_exception(dumps_exception(*_raise_and_catch(Picky(1, 2))))
    >>> type(exc).__name__, exc.type_name.endswith("Picky"), exc.message
    ('StandInError', True, '1/2')
    """
    name, message = qualified_name(type(exc)), safe_str(exc)
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception as e:  # a broken __str__ or __notes__; keep what can be had
        text = f"{name}: {message} (the traceback could not be formatted: {type(e).__name__})"
    pickled: bytes | None = None
    reason = ""
    for carried in (tb, None):
        try:
            pickled = bytes(cloudpickle.dumps((exc, carried), protocol=PROTOCOL))
            back = pickle.loads(pickled)  # what cannot be rebuilt here cannot be rebuilt on the manager either
            if not isinstance(back[0], BaseException):
                raise TypeError(f"it unpickles as a {type(back[0]).__name__}, not an exception")
            reason = ""
            break
        except Exception as e:
            pickled, reason = None, f"it does not round-trip through pickle on the worker: {_describe(e)}"
    return pickle.dumps((name, message, text, pickled, reason), protocol=PROTOCOL)


def loads_exception(data: bytes) -> tuple[BaseException, TracebackType | None, str]:
    """Inverse of :func:`dumps_exception`: ``(exception, traceback or None, traceback text)``; never raises.

    An exception that cannot be rebuilt here (it was left out on the worker, or it does not unpickle here: e.g. its
    class is importable on the workers only) comes back as a :class:`~dask_redisparam.errors.StandInError`
    carrying its type name and message.
    """
    try:
        name, message, text, pickled, reason = pickle.loads(data)
    except Exception as e:  # not a record of dumps_exception: a bug or a forged record of an unsigned job
        return StandInError("<unknown>", "", f"its record is unreadable: {_describe(e)}"), None, ""
    if pickled is not None:
        try:
            exc, tb = pickle.loads(pickled)
            if isinstance(exc, BaseException):
                return exc, tb, text
            reason = f"it unpickles here as a {type(exc).__name__}, not an exception"
        except Exception as e:
            reason = f"it cannot be unpickled on the manager: {_describe(e)}"
    return StandInError(name, message, reason), None, text


def _describe(error: BaseException) -> str:
    return f"{qualified_name(type(error))}: {safe_str(error)}"


def _raise_and_catch(exc: BaseException) -> tuple[BaseException, TracebackType | None]:
    try:
        raise exc
    except BaseException as caught:  # noqa: B036 - the point is to catch anything
        return caught, caught.__traceback__


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class (the module left out for builtins).

    Examples
    --------
    >>> qualified_name(ZeroDivisionError), qualified_name(StandInError)
    ('ZeroDivisionError', 'dask_redisparam.errors.StandInError')
    """
    module = getattr(cls, "__module__", None)
    name = str(getattr(cls, "__qualname__", None) or getattr(cls, "__name__", "?"))
    return name if module in (None, "builtins") else f"{module}.{name}"


def safe_str(obj: object) -> str:
    """``str(obj)``, or a placeholder when it raises (an exception's ``__str__`` may)."""
    try:
        return str(obj)
    except Exception as e:
        return f"<str() failed: {type(e).__name__}>"


_REMOTE_TYPES: dict[type[BaseException], type[BaseException]] = {}


def _remote_type(cls: type[BaseException]) -> type[BaseException]:
    """Return (and cache) a subclass of both ``cls`` and :class:`RemoteError`."""
    if issubclass(cls, RemoteError):
        return cls
    try:
        return _REMOTE_TYPES[cls]
    except KeyError:
        pass
    try:
        new = type(cls.__name__, (cls, RemoteError), {"__module__": cls.__module__})
    except TypeError:  # a class that cannot be subclassed (e.g. final C types)
        new = type(cls.__name__, (RemoteError,), {"__module__": cls.__module__})
    _REMOTE_TYPES[cls] = new
    return new


def make_remote(exc: BaseException, key: Any, worker: str, remote_traceback: str) -> BaseException:
    """Turn an exception raised by a task into one that also is a :class:`RemoteError`.

    The result keeps the original type (as a subclass), ``args`` and attributes, and carries the task key,
    the worker id and the remote traceback, also as a note shown under the traceback. An exception that cannot
    be rebuilt so (its class refuses to be subclassed or built from its ``args``) becomes a
    :class:`StandInError` with its type name and message: this never raises.

    Examples
    --------
    >>> err = make_remote(ZeroDivisionError("division by zero"), "x", "w1", "Traceback ...")
    >>> isinstance(err, ZeroDivisionError), isinstance(err, RemoteError), err.key
    (True, True, 'x')
    """
    try:
        new = _rebuild(exc)
    except Exception as e:  # an exception type whose __new__, __init_subclass__ or attributes refuse
        reason = f"it cannot be re-raised as a RemoteError: {type(e).__name__}: {safe_str(e)}"
        new = StandInError(qualified_name(type(exc)), safe_str(exc), reason)
        new.__traceback__ = exc.__traceback__
    assert isinstance(new, RemoteError)
    new.key = key
    new.worker = worker
    new.remote_traceback = remote_traceback
    notes = list(getattr(exc, "__notes__", None) or [])
    notes.append(f"raised by task {key!r} on worker {worker or '?'}; remote traceback:\n{remote_traceback}")
    new.__notes__ = notes
    return new


def _rebuild(exc: BaseException) -> BaseException:
    cls = _remote_type(type(exc))
    new = cls.__new__(cls, *exc.args)
    new.args = exc.args
    new.__dict__.update(getattr(exc, "__dict__", {}))
    new.__traceback__ = exc.__traceback__
    new.__cause__ = exc.__cause__
    assert isinstance(new, RemoteError)
    new.key, new.worker, new.remote_traceback = None, "", ""  # the attributes can be set
    return new
