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

from .bulk import LARGE_BYTES, Frames

__all__ = ["dumps_exception", "dumps_result", "dumps_task", "dumps_value", "loads", "loads_exception"]

pickling_support.install()

PROTOCOL = pickle.HIGHEST_PROTOCOL


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
    """Pickle a task's result: one pickle when small, else :class:`~dask_redisparam.bulk.Frames` (protocol 5 with
    out-of-band buffers: a large numpy array is referenced, not copied), stored as parts.

    Examples
    --------
    >>> dumps_result(1) == dumps_value(1)
    True
    >>> type(dumps_result(bytearray(LARGE_BYTES))).__name__
    'Frames'
    """
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

    When the exception itself cannot be pickled, a ``RuntimeError`` carrying its type name and message takes
    its place, so the manager always learns what happened.
    """
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    try:
        return bytes(cloudpickle.dumps((exc, tb, text), protocol=PROTOCOL))
    except Exception:
        pass
    try:
        return bytes(cloudpickle.dumps((exc, None, text), protocol=PROTOCOL))
    except Exception:
        stand_in = RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} (not picklable)")
        return bytes(cloudpickle.dumps((stand_in, None, text), protocol=PROTOCOL))


def loads_exception(data: bytes) -> tuple[BaseException, TracebackType | None, str]:
    """Inverse of :func:`dumps_exception`: ``(exception, traceback or None, traceback text)``."""
    exc, tb, text = pickle.loads(data)
    return exc, tb, text


def _raise_and_catch(exc: BaseException) -> tuple[BaseException, TracebackType | None]:
    try:
        raise exc
    except BaseException as caught:  # noqa: B036 - the point is to catch anything
        return caught, caught.__traceback__
