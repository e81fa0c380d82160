"""How long persisted values stay in Redis: while their process holds them, and while that process lives.

A persist keeps its values under one key (:func:`~dask_redisparam.backend.keys.held`) and gets a :class:`Holder`
for it from the param's :class:`HoldKeeper`. Every reference to those values in the persisted collections' graphs
carries the holder; when the last one is garbage collected (as dask.distributed's futures), a
:func:`weakref.finalize` hands the key to the keeper, whose thread deletes it at once. The same thread, with its
own connection (as a run's lease, :mod:`.lease`), renews every held key's TTL to :data:`HOLD_TTL` seconds every
:data:`HOLD_RENEW` seconds, so the values of a process that dies (killed, crashed) expire within :data:`HOLD_TTL`
seconds. :meth:`HoldKeeper.close` (the param's ``stop()``, or the interpreter's exit) deletes what is still held.

Nothing is done in the garbage collector's callback but handing over the key: no I/O there.

Examples
--------
>>> import gc
>>> from dask_redisparam.backend import Backend
>>> from dask_redisparam.worker.server import EmbeddedRedis
>>> with EmbeddedRedis() as server:
...     backend = Backend.connect(server.address)
...     backend.store_held("drp:{doc}:held:t1", {"0": b"v"}, ttl=HOLD_TTL)
...     keeper = HoldKeeper(server.address)
...     holder = keeper.hold("drp:{doc}:held:t1")
...     del holder; _ = gc.collect()
...     keeper.flush()
...     backend.held_exists("drp:{doc}:held:t1")
...     keeper.close(); backend.close()
True
False
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref

from ..backend import Backend
from ..config.address import RedisAddress

__all__ = ["HOLD_RENEW", "HOLD_TTL", "HoldKeeper", "Holder"]

logger = logging.getLogger(__name__)

HOLD_TTL = 15.0
"""Seconds persisted values outlive the last renewal of their process's lease (a crashed process's values expire
within this time)."""
HOLD_RENEW = 2.0
"""Seconds between two renewals of the held keys' TTLs."""


class Holder:
    """Keeps one held key in Redis while it is referenced (its finalizer releases the key).

    Attributes
    ----------
    key : str
        The key of the held values.
    """

    __slots__ = ("__weakref__", "key")

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Holder({self.key!r})"


class HoldKeeper:
    """The keys a process holds: renewed by a thread with its own connection, deleted once released.

    Parameters
    ----------
    address : RedisAddress
        The server of the held keys.
    """

    def __init__(self, address: RedisAddress) -> None:
        self.address = address
        self._held: set[str] = set()
        self._released: list[str] = []
        self._lock = threading.RLock()  # a finalizer may run in a thread that holds it (the garbage collector)
        self._done = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._released_count = self._deleted_count = 0
        self._closed = False
        self._backend = Backend(address, retries=1)
        self._thread = threading.Thread(target=self._run, name="hold-keeper", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def hold(self, key: str) -> Holder:
        """A holder for ``key`` (already in Redis, with a TTL of at least one renewal): the key stays while the
        holder is referenced and this keeper lives."""
        holder = Holder(key)
        with self._lock:
            self._held.add(key)
        weakref.finalize(holder, self._release, key).atexit = False
        return holder

    def held(self) -> list[str]:
        """The keys held now."""
        with self._lock:
            return sorted(self._held)

    def _release(self, key: str) -> None:  # called by the garbage collector: no I/O here
        with self._lock:
            self._held.discard(key)
            self._released.append(key)
            self._released_count += 1
        self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the keys released so far are deleted (the thread does it at once); False on timeout."""
        with self._done:
            target = self._released_count
            return self._done.wait_for(lambda: self._deleted_count >= target, timeout)

    def _run(self) -> None:
        failing = False
        while not self._closed:
            self._wake.wait(HOLD_RENEW)
            self._wake.clear()
            if self._closed:
                return
            with self._lock:
                released, self._released = self._released, []
                held = sorted(self._held)
            try:
                if released:
                    self._backend.delete_held(released)
                lost = [
                    key for key, there in zip(held, self._backend.renew_held(held, HOLD_TTL), strict=True) if not there
                ]
            except Exception as e:  # a passing fault: the next turn may succeed within the TTL
                if not failing:
                    logger.warning("manager: cannot renew the persisted values at %s: %s", self.address.describe(), e)
                failing = True
                with self._lock:
                    self._released += released
                continue
            failing = False
            with self._done:
                gone = [key for key in lost if key in self._held]
                self._held.difference_update(gone)
                self._deleted_count += len(released)
                self._done.notify_all()
            for key in gone:
                logger.warning("manager: the persisted values %s are gone from Redis", key)

    def close(self) -> None:
        """Stop renewing and delete every key still held or released (never raises)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5.0)
        atexit.unregister(self.close)
        with self._lock:
            keys = sorted(self._held) + self._released
            self._held.clear()
            self._released = []
        try:
            self._backend.delete_held(keys)
        except Exception as e:
            logger.warning("manager: could not delete the persisted values at %s: %s", self.address.describe(), e)
        finally:
            self._backend.close()
