"""Signals in a worker process: SIGTERM and SIGINT stop it, warm then cold; and the fault tests' self-kill hook.

The first SIGTERM or SIGINT asks for a *warm* stop: an idle worker stops at once, a busy one finishes its current
message first. A second signal stops it *cold*: the current message goes back to the queue. Stopping at once is
raising :class:`~dask_redisparam.errors.StopRequested` from the handler, in the worker's main thread.

Examples
--------
>>> import threading
>>> restore = install_stop_handlers("doc", threading.Event(), busy=lambda: True)
>>> restore()
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

from ..errors import StopRequested

__all__ = ["TEST_HOOK_ENV", "fault_test_hook", "install_stop_handlers"]

logger = logging.getLogger(__name__)


def install_stop_handlers(worker_id: str, stop: threading.Event, busy: Callable[[], bool]) -> Callable[[], None]:
    """Handle SIGTERM and SIGINT as stop requests; return the function that puts the previous handlers back.

    Every signal sets ``stop``. It raises :class:`~dask_redisparam.errors.StopRequested` (stop now) if the worker is
    not ``busy``, or at the second signal (cold stop); else the worker finishes its message first (warm stop).
    Outside the main thread (where Python delivers no signals) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    received = 0

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        stop.set()
        if not busy():
            raise StopRequested("idle")
        if received >= 2:
            logger.warning("worker %s: cold stop; the current task goes back to the queue", worker_id)
            raise StopRequested("cold")
        logger.info("worker %s: warm stop after the current task (signal again to stop now)", worker_id)

    for sig in previous:
        signal.signal(sig, handle)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


TEST_HOOK_ENV = "REDISPARAM_TEST_KILL_AT"
"""For fault tests only: ``<point>:<marker file>`` makes the worker SIGKILL itself once at ``point`` (claimed,
prefetched: starting a message with the next one claimed, executed, completed) if the marker file does not exist
yet (it is created first)."""


def fault_test_hook(point: str) -> None:
    """SIGKILL this process at ``point`` if :data:`TEST_HOOK_ENV` asks for it there, once (see its description)."""
    spec = os.environ.get(TEST_HOOK_ENV)
    if not spec or not spec.startswith(point + ":"):
        return
    marker = spec.split(":", 1)[1]
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
