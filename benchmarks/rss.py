"""Peak memory of a process tree: a sampler thread for every descendant's RSS, and ``ru_maxrss`` in bytes.

``RssSampler`` samples this process and all its descendants (found again every ``refresh`` seconds, so restarted
workers are seen) every ``interval`` seconds and keeps, per process, its first and highest RSS. A sampler misses
peaks shorter than its interval; :func:`peak_rss_bytes` (exact, this process only) and ``getrusage`` of reaped
children complement it.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

__all__ = ["ProcessPeak", "RssSampler", "maxrss_bytes", "peak_rss_bytes", "role_of"]

MB = 1e6


def maxrss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """``ru_maxrss`` in bytes (Linux reports KiB, macOS bytes). ``RUSAGE_CHILDREN``: the largest reaped child."""
    value = resource.getrusage(who).ru_maxrss
    return int(value if sys.platform == "darwin" else value * 1024)


def peak_rss_bytes() -> int:
    """This process's peak RSS since its ``exec``: ``VmHWM`` of ``/proc/self/status``, else ``ru_maxrss``.

    Linux carries ``ru_maxrss`` across fork and exec: a child spawned by a large parent starts with the parent's
    peak (the benchmark's own process grows to hundreds of MB), so ``ru_maxrss`` of a fresh child is not clean.
    ``VmHWM`` belongs to the address space made by ``exec``.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return maxrss_bytes()


def role_of(proc: psutil.Process, root_pid: int) -> str:
    """What a process of the tree is: manager, redis-server, supervisor, worker, pool-worker, ..."""
    if proc.pid == root_pid:
        return "manager"
    try:
        name = proc.name()
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    if "redis-server" in name or "redis-server" in cmdline:
        return "redis-server"
    if "dask_redisparam.worker" in cmdline or "dask-redisparam-worker" in cmdline:
        return "worker" if "--child" in cmdline else "supervisor"
    if "resource_tracker" in cmdline:
        return "resource-tracker"
    if "multiprocessing" in cmdline:
        return "pool-worker"
    return str(name)


@dataclass
class ProcessPeak:
    pid: int
    role: str
    first_rss: int
    peak_rss: int
    samples: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RssSampler:
    """Sample the RSS of this process and its descendants in a background thread; a context manager."""

    def __init__(self, interval: float = 0.02, refresh: float = 0.2) -> None:
        self.interval = interval
        self.refresh = refresh
        self.root = psutil.Process()
        self.peaks: dict[int, ProcessPeak] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _discover(self) -> None:
        try:
            found = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in found:
            if proc.pid not in self._procs:
                self._procs[proc.pid] = proc
                with self._lock:
                    self.peaks.setdefault(proc.pid, ProcessPeak(proc.pid, role_of(proc, self.root.pid), 0, 0))

    def sample(self) -> None:
        """One sample of every known process (the thread calls this; callable directly too)."""
        for pid, proc in list(self._procs.items()):
            try:
                rss = int(proc.memory_info().rss)
            except psutil.Error:
                del self._procs[pid]
                continue
            with self._lock:
                peak = self.peaks[pid]
                if peak.samples == 0:
                    peak.first_rss = rss
                peak.peak_rss = max(peak.peak_rss, rss)
                peak.samples += 1

    def _loop(self) -> None:
        next_refresh = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_refresh:
                self._discover()
                next_refresh = now + self.refresh
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self._discover()
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def snapshot(self) -> list[ProcessPeak]:
        """Peaks so far, sampled processes only, largest first."""
        with self._lock:
            peaks = [ProcessPeak(**asdict(p)) for p in self.peaks.values() if p.samples]
        return sorted(peaks, key=lambda p: p.peak_rss, reverse=True)

    def count(self, role: str) -> int:
        """How many distinct processes of ``role`` were seen (restarted workers count again)."""
        with self._lock:
            return sum(1 for p in self.peaks.values() if p.role == role)
