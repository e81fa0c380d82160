"""Studies that need a fresh process (a clean peak RSS, a whole process tree to watch): both ends of the pipe.

Child side: :func:`emit` prints one ``@@BENCH {json}`` line per event on stdout. Parent side: :func:`run_child`
runs ``python -m benchmarks.<module> ...`` in a new session (its own process group, which its redis-server and
workers join), collects the events, and on a timeout, or if anything of the group is left after the child
exits, kills that process group (and says so: leftovers are a finding).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ChildResult", "emit", "run_child"]

MARKER = "@@BENCH "
REPO_ROOT = Path(__file__).resolve().parent.parent
ERROR_WORDS = ("Error", "error", "Exception", "Traceback", "died", "FAILED")


def child_main(run: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    """Run a child script's body; an exception becomes an ``error`` event for the parent (exit code 1)."""
    try:
        run(args)
    except Exception as exc:
        traceback.print_exc()
        emit("error", message=f"{type(exc).__name__}: {exc}"[:300])
        return 1
    return 0


def emit(event: str, **data: Any) -> None:
    """Child side: report one event to the parent."""
    print(MARKER + json.dumps({"event": event, **data}), flush=True)


@dataclass
class ChildResult:
    """What a child reported, how it ended, and the interesting end of its stderr."""

    events: list[dict[str, Any]] = field(default_factory=list)
    returncode: int | None = None
    seconds: float = 0.0
    timed_out: bool = False
    leftovers: int = 0
    """Processes of the child's group still alive after it exited (killed by us)."""
    stderr_lines: list[str] = field(default_factory=list)
    """The last few distinct error-looking lines of stderr."""

    def last(self, event: str) -> dict[str, Any] | None:
        found = [e for e in self.events if e.get("event") == event]
        return found[-1] if found else None

    def all(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    @property
    def error(self) -> str | None:
        """Why the child did not finish cleanly, or ``None``."""
        failed = self.last("error")
        if failed is not None:
            return str(failed.get("message"))
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s" + self._hint()
        if self.returncode != 0:
            return f"exit code {self.returncode}" + self._hint()
        if self.last("done") is None:
            return "no result reported" + self._hint()
        return None

    def _hint(self) -> str:
        return f"; stderr: {self.stderr_lines[-1]}" if self.stderr_lines else ""


def _interesting(text: str, keep: int = 5) -> list[str]:
    lines: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if any(w in line for w in ERROR_WORDS) and line not in lines:
            lines.append(line[:300])
    return lines[-keep:]


def _kill_group(pgid: int, grace: float = 0.0) -> int:
    """SIGKILL what is left of the process group ``pgid`` (a group we made) after ``grace`` seconds to exit on
    its own; return how many processes were left."""
    import psutil  # type: ignore[import-untyped, unused-ignore]

    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    if members and grace > 0:
        _, members = psutil.wait_procs(members, timeout=grace)
    if members:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        psutil.wait_procs(members, timeout=5)
    return len(members)


def run_child(module: str, args: list[str], timeout: float) -> ChildResult:
    """Run ``python -m benchmarks.<module> *args`` from the repository root, in its own session."""
    out = ChildResult()
    argv = [sys.executable, "-m", f"benchmarks.{module}", *args]
    # files, not pipes: a process left behind by the child would keep a pipe open, and reading it would hang
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=so, stderr=err, text=True, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            out.timed_out = True
            _kill_group(proc.pid)
            proc.wait()
        out.seconds = time.perf_counter() - t0
        out.returncode = proc.returncode
        out.leftovers = _kill_group(proc.pid, grace=3.0)
        so.seek(0)
        stdout = so.read()
        err.seek(0)
        out.stderr_lines = _interesting(err.read())
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            out.events.append(json.loads(line[len(MARKER) :]))
    return out
