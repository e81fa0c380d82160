"""Task logs (BiocParallel's ``log=TRUE``): captured on the worker during a task, shown on the manager.

* Worker: :func:`capture_task_output` records the process's :mod:`logging` records at or above the threshold
  and everything written to ``sys.stdout``/``sys.stderr`` into a picklable :class:`TaskLog`.
* Manager: :func:`emit_task_log` re-emits the records on the logger ``dask_redisparam.remote`` (with the record
  attributes ``worker``, ``task_key`` and ``remote_name``, the worker-side logger name), writes the output to
  ``sys.stdout``/``sys.stderr`` with a ``[worker w1] [task 'x'] `` prefix on every line, and with a ``logdir``
  appends a block per task to ``<logdir>/<jobname>.<safe task name>.log``. (The library never configures
  logging: to see remote records below WARNING, configure the manager's logging.)

Examples
--------
>>> with capture_task_output("INFO") as log:
...     print("hello")
>>> emit_task_log(log, key="x", worker="w1", jobname="demo", logdir=None)
[worker w1] [task 'x'] hello
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import pickle
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from .errors import ConfigurationError

__all__ = ["LEVELS", "REMOTE_LOGGER", "TaskLog", "capture_task_output", "emit_task_log", "level_number"]
__all__ += ["safe_task_name", "task_log_path"]

logger = logging.getLogger(__name__)

#: BiocParallel's threshold names and their Python levels (the names are not registered with ``logging``).
LEVELS: Mapping[str, int] = MappingProxyType(dict(TRACE=5, DEBUG=10, INFO=20, WARN=30, ERROR=40, FATAL=50))
_NAMES = {number: name for name, number in LEVELS.items()}

#: The manager-side logger on which remote records are re-emitted.
REMOTE_LOGGER = "dask_redisparam.remote"

_PLAIN = (str, int, float, bool, type(None))
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FILE_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


@dataclasses.dataclass
class TaskLog:
    """What one task logged and printed; plain data, picklable.

    Attributes
    ----------
    records : list of dict
        ``LogRecord.__dict__`` flattened: ``msg`` is the final message, ``args`` and ``exc_info`` are None,
        ``exc_text`` holds a formatted traceback, values that cannot be pickled are reprs.
    stdout, stderr : str
        Everything the task wrote to ``sys.stdout`` and ``sys.stderr``.
    """

    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    stdout: str = ""
    stderr: str = ""

    @property
    def empty(self) -> bool:
        """True when nothing was logged or printed (the worker may then send nothing)."""
        return not (self.records or self.stdout or self.stderr)


def level_number(threshold: int | str) -> int:
    """The Python level of a threshold given as a number or a name of :data:`LEVELS` (any case).

    Examples
    --------
    >>> level_number("trace"), level_number(30)
    (5, 30)
    """
    if isinstance(threshold, str) and threshold.upper() in LEVELS:
        return LEVELS[threshold.upper()]
    if isinstance(threshold, int) and not isinstance(threshold, bool) and threshold >= 0:
        return threshold
    raise ConfigurationError(f"threshold={threshold!r} must be one of {', '.join(LEVELS)} or a level number >= 0")


def _flatten(record: logging.LogRecord) -> dict[str, Any]:
    """``record.__dict__`` made plain and picklable, as ``QueueHandler.prepare`` does; ``record`` is unchanged."""
    flat = dict(record.__dict__)
    exc_text = record.exc_text
    if record.exc_info and not exc_text:
        exc_text = _FILE_FORMAT.formatException(record.exc_info)
    flat.update(msg=record.getMessage(), args=None, exc_info=None, exc_text=exc_text)
    flat.pop("message", None)
    for name, value in flat.items():
        if not isinstance(value, _PLAIN):
            try:
                pickle.dumps(value)
            except Exception:
                flat[name] = repr(value)
    return flat


class _CaptureHandler(logging.Handler):
    """Appends flattened records to a list, except those of excluded loggers."""

    def __init__(self, records: list[dict[str, Any]], level: int, exclude: tuple[str, ...]) -> None:
        super().__init__(level)
        self.records, self.exclude = records, exclude

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        try:
            if not any(name == prefix or name.startswith(prefix + ".") for prefix in self.exclude):
                self.records.append(_flatten(record))
        except Exception:
            self.handleError(record)


def _was_enabled(root_level: int) -> Callable[[logging.LogRecord], bool]:
    """A handler filter: pass the records that the logger levels passed before the root level was lowered."""

    def check(record: logging.LogRecord) -> bool:
        node = logging.Logger.manager.loggerDict.get(record.name)
        while isinstance(node, logging.Logger) and node.parent is not None:
            if node.level:
                return record.levelno >= node.level
            node = node.parent
        return record.levelno >= root_level

    return check


class _Output(io.TextIOWrapper):
    """A text stream in memory (with a ``buffer`` for bytes and an ``encoding``) that stands in for stdout."""

    def __init__(self) -> None:
        self._bytes = io.BytesIO()
        super().__init__(self._bytes, encoding="utf-8", errors="backslashreplace", newline="\n", write_through=True)

    def getvalue(self) -> str:
        self.flush()
        return self._bytes.getvalue().decode("utf-8", "replace")


@contextlib.contextmanager
def capture_task_output(
    threshold: int | str = logging.INFO, *, exclude: tuple[str, ...] = ("dask_redisparam",)
) -> Iterator[TaskLog]:
    """Capture the log records (at or above ``threshold``) and the stdout/stderr of the process meanwhile.

    Parameters
    ----------
    threshold : int or str
        The lowest level captured: a number or a name of :data:`LEVELS` (e.g. ``"TRACE"``).
    exclude : tuple of str
        Logger names whose records (and their children's) are not captured: by default the worker's own.

    Yields
    ------
    TaskLog
        Filled while the block runs (records) and when it ends (``stdout``, ``stderr``).

    Notes
    -----
    The root logger gets a handler and, if needed, a lower level; existing handlers get a filter meanwhile, so
    that they see only what they saw before. All is restored at exit, also on an exception. The capture is
    process-wide (other threads too), of Python-level writes only (not of C code or subprocesses writing to
    file descriptors 1 and 2), and of records that reach the root logger (not with ``propagate=False``).

    Examples
    --------
    >>> import sys, logging
    >>> with capture_task_output("WARN") as log:
    ...     logging.getLogger("demo").info("not captured")
    ...     logging.getLogger("demo").warning("captured")
    ...     print("oops", file=sys.stderr)
    >>> [(r["levelname"], r["msg"]) for r in log.records], log.stderr
    ([('WARNING', 'captured')], 'oops\\n')
    """
    level, log, root = level_number(threshold), TaskLog(), logging.getLogger()
    handler = _CaptureHandler(log.records, level, exclude)
    old_level, guard, lower = root.level, _was_enabled(root.level), level < root.getEffectiveLevel()
    guarded: list[logging.Handler] = []
    if lower:
        loggers = [root, *list(logging.Logger.manager.loggerDict.values())]  # list(): one atomic copy
        guarded = [h for x in loggers if isinstance(x, logging.Logger) for h in x.handlers]
        for existing in guarded:
            existing.addFilter(guard)
        root.setLevel(level)
    root.addHandler(handler)
    saved, (out, err) = (sys.stdout, sys.stderr), (_Output(), _Output())
    sys.stdout, sys.stderr = out, err
    try:
        yield log
    finally:
        sys.stdout, sys.stderr = saved
        root.removeHandler(handler)
        if lower:
            root.setLevel(old_level)
        for existing in guarded:
            existing.removeFilter(guard)
        log.stdout, log.stderr = out.getvalue(), err.getvalue()


def safe_task_name(key: object, limit: int = 60) -> str:
    """A file-name-safe name for a task key: its ``str`` cleaned and truncated, plus a hash of its ``repr``.

    Examples
    --------
    >>> safe_task_name(("x", 0))
    'x_0-a5e792c9'
    """
    cleaned = _UNSAFE.sub("_", str(key))[:limit].strip("_.") or "task"
    digest = hashlib.sha1(repr(key).encode("utf-8", "backslashreplace")).hexdigest()[:8]
    return f"{cleaned}-{digest}"


def task_log_path(logdir: str, jobname: str, key: object) -> str:
    """The file that :func:`emit_task_log` appends a task's log to.

    Examples
    --------
    >>> task_log_path("/logs", "demo", "x")
    '/logs/demo.x-023d1d9a.log'
    """
    job = _UNSAFE.sub("_", jobname).strip(".") or "job"
    return os.path.join(logdir, f"{job}.{safe_task_name(key)}.log")


def _rebuild(
    flat: Mapping[str, Any], prefix: str, key: object, worker: str, keep_name: bool = False
) -> logging.LogRecord:
    name = flat.get("name", "root")
    fields = {**flat, "name": name if keep_name else REMOTE_LOGGER, "remote_name": name, "args": None}
    fields.update(msg=prefix + str(flat.get("msg", "")), exc_info=None, worker=worker, task_key=key)
    levelno = fields.get("levelno", logging.INFO)
    if str(fields.get("levelname", "")).startswith("Level ") and levelno in _NAMES:
        fields["levelname"] = _NAMES[levelno]  # TRACE, FATAL without logging.addLevelName on the worker
    return logging.makeLogRecord(fields)


def _prefixed(text: str, prefix: str) -> str:
    lines = text.split("\n")
    return "".join(f"{prefix}{line}\n" for line in (lines[:-1] if lines[-1] == "" else lines))


def emit_task_log(log: TaskLog, *, key: object, worker: str, jobname: str, logdir: str | None) -> None:
    """Show a task's captured log on the manager and, with ``logdir``, append it to the task's log file.

    Parameters
    ----------
    log : TaskLog
        What :func:`capture_task_output` captured on the worker.
    key, worker, jobname
        The task's dask key, the id of the worker that ran it, the job (it names the log file).
    logdir : str or None
        A directory for the file :func:`task_log_path`; a failed write is a warning on this module's logger.

    Examples
    --------
    >>> import tempfile
    >>> log = TaskLog(stdout="a\\nb", stderr="")
    >>> with tempfile.TemporaryDirectory() as d:
    ...     emit_task_log(log, key=("t", 1), worker="w2", jobname="demo", logdir=d)
    ...     os.listdir(d)
    [worker w2] [task ('t', 1)] a
    [worker w2] [task ('t', 1)] b
    ['demo.t_1-a7758185.log']
    """
    prefix, remote = f"[worker {worker}] [task {key!r}] ", logging.getLogger(REMOTE_LOGGER)
    for flat in log.records:
        record = _rebuild(flat, prefix, key, worker)
        if remote.isEnabledFor(record.levelno):
            remote.handle(record)
    for stream, text in ((sys.stdout, log.stdout), (sys.stderr, log.stderr)):
        if stream is not None and text:
            stream.write(_prefixed(text, prefix))
            stream.flush()
    if logdir is None or log.empty:
        return
    parts = [f"=== {prefix}{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n"]
    parts += [_FILE_FORMAT.format(_rebuild(flat, "", key, worker, keep_name=True)) + "\n" for flat in log.records]
    parts += [
        f"--- {title} ---\n{_prefixed(text, '')}"
        for title, text in (("stdout", log.stdout), ("stderr", log.stderr))
        if text
    ]
    path = task_log_path(logdir, jobname, key)
    try:
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as file:
            file.write("".join(parts))
    except OSError as exc:
        logger.warning("cannot append the log of task %r to %s: %s", key, path, exc)
