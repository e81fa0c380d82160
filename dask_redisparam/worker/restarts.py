"""When the supervisor restarts a worker process, when it gives up, and what the process said last.

The worker daemon (:class:`~dask_redisparam.worker.supervisor.Supervisor`) restarts a worker process that died, with a
crash-loop backoff as systemd's ``StartLimitBurst`` and Kubernetes' CrashLoopBackOff do, for any exit code:

- a process that lived :data:`HEALTHY_UPTIME` seconds or more is replaced at once, and so is the first one of a
  slot that died younger;
- after a second young death in a row, the next process starts after :data:`RESTART_DELAY` seconds, doubling
  with each further young death of the slot in a row, up to :data:`MAX_RESTART_DELAY`;
- after :data:`START_FAILURES` young deaths in a row of one slot that never held a task message (it could not
  start: a bad setting, permissions, a conflicting id), the daemon gives up: it stops the other processes and
  exits 1, logging the last error line of the failing process;
- a process that exits with :data:`EXIT_CONFIG` (its configuration cannot work: refused credentials, a job its
  user may not use, a secret file that cannot be read) is not restarted: the daemon gives up at once and exits
  with :data:`EXIT_CONFIG` itself, so that a service manager can tell (systemd: ``RestartPreventExitStatus=78``).

A process that died while holding a message (a task crashed it: a segfault, ``os._exit``) proves that starting
works, and one killed by SIGKILL (an operator, the out-of-memory killer) did not fail by itself: neither counts
towards giving up (the manager bounds crashes per task: ``allowed_failures``); both are still restarted with the
backoff when they died young.

Examples
--------
>>> policy = RestartPolicy()
>>> [policy.after_death(0, uptime=0.5, start_failure=True) for _ in range(START_FAILURES)]
[0.0, 0.25, 0.5, 1.0, None]
>>> policy.after_death(1, uptime=60.0, start_failure=True)
0.0
>>> exit_code_for(ConfigurationError("bad"))
78
"""

from __future__ import annotations

import os
import re
import select
import time
from collections import deque

from ..errors import AuthenticationFailed, ConfigurationError, RedisParamError

__all__ = [
    "CONFIGURATION_ERRORS",
    "EXIT_CONFIG",
    "EXIT_WORKER_ERROR",
    "HEALTHY_UPTIME",
    "MAX_RESTART_DELAY",
    "RESTART_DELAY",
    "START_FAILURES",
    "ChildOutput",
    "OutputPipes",
    "RestartPolicy",
    "exit_code_for",
]

EXIT_WORKER_ERROR = 3
"""Exit code of a worker process stopped by an error of the package (a :class:`RedisParamError`) that restarting
may cure (the server went away for longer than the worker waits, an id still held by a dead worker's lease)."""
EXIT_CONFIG = 78
"""Exit code (sysexits' ``EX_CONFIG``) of a worker process, and of the daemon, whose configuration cannot work:
one of :data:`CONFIGURATION_ERRORS`. The daemon does not restart such a process; it exits with this code."""
CONFIGURATION_ERRORS: tuple[type[RedisParamError], ...] = (AuthenticationFailed, ConfigurationError)
"""Errors that restarting cannot cure: refused credentials or job keys, a setting that cannot be used."""

HEALTHY_UPTIME = 10.0
"""Seconds a worker process must live for its death to count as a crash, not a crash loop (replaced at once)."""
RESTART_DELAY = 0.25
"""Seconds before replacing a worker process that died young for the second time in a row; doubles with each
further young death of its slot in a row."""
MAX_RESTART_DELAY = 30.0
"""Longest delay before replacing a worker process."""
START_FAILURES = 5
"""Young deaths in a row of one slot that were failed starts (no message held, not SIGKILLed), after which the
daemon gives up."""

TAIL_LINES = 50
"""Lines of a worker process's stderr that the supervisor keeps, to find its last error line."""
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b")


def exit_code_for(error: RedisParamError) -> int:
    """The exit code of a worker process that ``error`` stopped: :data:`EXIT_CONFIG` or :data:`EXIT_WORKER_ERROR`."""
    return EXIT_CONFIG if isinstance(error, CONFIGURATION_ERRORS) else EXIT_WORKER_ERROR


class RestartPolicy:
    """The crash-loop state of each slot of a supervisor (see the module's docstring)."""

    def __init__(self) -> None:
        self.young: dict[int, int] = {}  # slot -> young deaths in a row
        self.failed_starts: dict[int, int] = {}  # slot -> young deaths in a row that were failed starts

    def after_death(self, slot: int, uptime: float, *, start_failure: bool) -> float | None:
        """A worker process of ``slot`` died after ``uptime`` seconds; ``start_failure``: it held no message and
        was not killed from outside (SIGKILL).

        Returns the seconds to wait before replacing it, or None to give up.
        """
        if uptime >= HEALTHY_UPTIME:
            self.young[slot] = self.failed_starts[slot] = 0
            return 0.0
        young = self.young[slot] = self.young.get(slot, 0) + 1
        failed = self.failed_starts[slot] = self.failed_starts.get(slot, 0) + 1 if start_failure else 0
        if failed >= START_FAILURES:
            return None
        return 0.0 if young == 1 else float(min(RESTART_DELAY * 2 ** (young - 2), MAX_RESTART_DELAY))

    def failures(self, slot: int) -> int:
        """Young deaths in a row of ``slot`` that were failed starts."""
        return self.failed_starts.get(slot, 0)


class ChildOutput:
    """What a worker process writes to its stderr: passed on line by line, its last lines kept.

    Examples
    --------
    >>> out = ChildOutput()
    >>> out.feed(b"Traceback (most recent call last):\\n  File ...\\nValueError: bad\\ntrailing")
    b'Traceback (most recent call last):\\n  File ...\\nValueError: bad\\n'
    >>> out.feed(b"\\n")
    b'trailing\\n'
    >>> out.last_error()
    'ValueError: bad'
    """

    def __init__(self) -> None:
        self.partial = b""
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)

    def feed(self, chunk: bytes) -> bytes:
        """Take bytes read from the pipe; return the complete lines among them (to pass on)."""
        data = self.partial + chunk
        end = data.rfind(b"\n") + 1
        self.partial = data[end:]
        complete = data[:end]
        for line in complete.splitlines():
            self._keep(line)
        return complete

    def flush(self) -> bytes:
        """At the end of the output: the incomplete last line, if any (to pass on)."""
        rest, self.partial = self.partial, b""
        if rest.strip():
            self._keep(rest)
        return rest

    def _keep(self, line: bytes) -> None:
        text = line.decode(errors="replace").rstrip()
        if text:
            self.lines.append(text[:1000])

    def last_error(self) -> str:
        """The last line that reports an error (a log record at ERROR or CRITICAL, an exception, a fatal error),
        else the last line; empty if the process wrote nothing."""
        lines = list(self.lines)
        if self.partial.strip():
            lines.append(self.partial.decode(errors="replace").rstrip()[:1000])
        for line in reversed(lines):
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Fatal Python error"):
                return line
            if _EXCEPTION_LINE.match(line):
                return line
        return lines[-1] if lines else ""


class OutputPipes:
    """The stderr pipes of the worker processes: read, passed on to this process's stderr, closed at their end.

    A pipe outlives its process when a task's own child process still holds it; it is read until its end.
    """

    def __init__(self) -> None:
        self.outputs: dict[int, ChildOutput] = {}  # read end -> what was written to it

    def open(self) -> tuple[int, int, ChildOutput]:
        """A new pipe: ``(read end, write end, what will be read)``; give the write end to the process as its
        stderr, then close it here."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        output = self.outputs[read_end] = ChildOutput()
        return read_end, write_end, output

    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for output, and pass on what came."""
        if not self.outputs:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(self.outputs), [], [], timeout)
        for fd in readable:
            self.read(fd)

    def read(self, fd: int) -> None:
        """Read what the pipe ``fd`` holds (if still open) and pass on its complete lines; at its end, close it."""
        output = self.outputs.get(fd)
        if output is None:
            return
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                self.close(fd)
                return
            _write_stderr(output.feed(chunk))

    def close(self, fd: int) -> None:
        """Pass on an incomplete last line and close the pipe."""
        output = self.outputs.pop(fd, None)
        if output is not None:
            _write_stderr(output.flush())
            os.close(fd)

    def close_all(self) -> None:
        """Pass on what is left and close every pipe."""
        for fd in list(self.outputs):
            self.read(fd)
            self.close(fd)


def _write_stderr(data: bytes) -> None:
    """Write ``data`` to this process's stderr; it is dropped if nobody reads that any more."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(2, view) :]
    except OSError:
        pass
