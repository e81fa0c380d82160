"""Progress bars on the manager, as BiocParallel's ``progressbar=TRUE``.

:func:`make_progress` returns a :class:`Progress`: a ``tqdm.auto`` bar when tqdm is installed (a widget in
notebooks), else :class:`TextProgress`, a text bar on ``sys.stderr`` in the style of dask's ``ProgressBar``.
With ``total=None`` (unknown length, as ``bpiterate``) the text bar counts: ``iteration: N``.

:class:`ProgressCallback` is a dask callback that drives a :class:`Progress` through one compute.

Examples
--------
>>> import io
>>> out = io.StringIO()
>>> with make_progress(4, use_tqdm=False, file=out) as bar:
...     bar.update(4)
>>> out.getvalue().splitlines()[-1].rsplit(" | ", 1)[0]
'[########################################] | 100% Completed'
"""

from __future__ import annotations

import abc
import importlib
import sys
import threading
from collections.abc import Hashable, Mapping
from timeit import default_timer
from types import TracebackType
from typing import Any, TextIO, TypeVar

from dask.callbacks import Callback

__all__ = ["Progress", "ProgressCallback", "TextProgress", "format_elapsed", "make_progress", "tqdm_available"]

_P = TypeVar("_P", bound="Progress")


class Progress(abc.ABC):
    """A progress display: count done items towards a total (None: unknown); a context manager that closes."""

    @abc.abstractmethod
    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done."""

    @abc.abstractmethod
    def set_total(self, total: int) -> None:
        """Set (or change) the number of items."""

    @abc.abstractmethod
    def close(self) -> None:
        """Show the final state and release the display; later calls do nothing."""

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def format_elapsed(seconds: float) -> str:
    """Seconds as ``1.2s``, ``2m 03.0s`` or ``1h 02m 03.0s``.

    Examples
    --------
    >>> format_elapsed(1.23), format_elapsed(123), format_elapsed(3723)
    ('1.2s', '2m 03.0s', '1h 02m 03.0s')
    """
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:04.1f}s"
    if minutes:
        return f"{minutes}m {secs:04.1f}s"
    return f"{secs:.1f}s"


class TextProgress(Progress):
    """A text progress bar (``[####      ] | 40% Completed | 1.2s``) or counter (``iteration: 3 | 0.5s``).

    On a terminal it redraws one line (``\\r``); elsewhere (files, CI logs) it writes a line at most every
    ``min_interval`` seconds, plus one for the final state. Thread-safe.

    Parameters
    ----------
    total : int or None
        The number of items; None shows a counter. A known total is drawn at once.
    desc : str
        Shown before the bar.
    initial : int
        Items already done.
    file : TextIO, optional
        Where to write; default the ``sys.stderr`` of the moment.
    width : int
        Characters of the bar.
    min_interval : float, optional
        Seconds between redraws; default 0.1 on a terminal, 2 elsewhere.
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        *,
        initial: int = 0,
        file: TextIO | None = None,
        width: int = 40,
        min_interval: float | None = None,
    ) -> None:
        self.total, self.desc, self.n, self.width = total, desc, initial, width
        self._file, self._interval = file, min_interval
        self._start = default_timer()
        self._last_draw = float("-inf")
        self._drawn: tuple[int, int | None] | None = None
        self._closed = False
        self._lock = threading.Lock()
        if total is not None:
            self._draw(force=True)

    def _stream(self) -> TextIO | None:
        return self._file if self._file is not None else sys.stderr

    def render(self) -> str:
        """The current line, without ``\\r`` or newline."""
        elapsed = format_elapsed(default_timer() - self._start)
        head = f"{self.desc}: " if self.desc else ""
        if self.total is None:
            return f"{head}iteration: {self.n} | {elapsed}"
        fraction = min(1.0, self.n / self.total) if self.total > 0 else 1.0
        bar = "#" * int(self.width * fraction)
        return f"{head}[{bar:<{self.width}}] | {int(100 * fraction)}% Completed | {elapsed}"

    def _draw(self, force: bool, final: bool = False) -> None:
        stream = self._stream()
        if stream is None:
            return
        tty = bool(getattr(stream, "isatty", lambda: False)())
        interval = self._interval if self._interval is not None else (0.1 if tty else 2.0)
        now = default_timer()
        state = (self.n, self.total)
        if not force and now - self._last_draw < interval:
            return
        if final and not tty and state == self._drawn:
            return  # the last line written already shows the final state
        self._last_draw, self._drawn = now, state
        if tty:
            stream.write("\r" + self.render() + ("\n" if final else ""))
        else:
            stream.write(self.render() + "\n")
        stream.flush()

    def update(self, n: int = 1) -> None:
        with self._lock:
            if self._closed:
                return
            self.n += n
            done = self.total is not None and self.n >= self.total
            self._draw(force=done and self._drawn != (self.n, self.total))

    def set_total(self, total: int) -> None:
        with self._lock:
            if not self._closed:
                self.total = total
                self._draw(force=True)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._draw(force=True, final=True)


class _TqdmProgress(Progress):
    """:class:`Progress` over a ``tqdm.auto.tqdm`` bar."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _tqdm_class() -> Any | None:
    try:
        return importlib.import_module("tqdm.auto").tqdm
    except ImportError:
        return None


def tqdm_available() -> bool:
    """Whether ``tqdm`` can be imported (then :func:`make_progress` uses it by default)."""
    return _tqdm_class() is not None


def make_progress(
    total: int | None, desc: str = "", *, initial: int = 0, use_tqdm: bool = True, file: TextIO | None = None
) -> Progress:
    """A progress display for ``total`` items (None: unknown, shown as a counter).

    Parameters
    ----------
    total : int or None
        The number of items, if known.
    desc : str
        A label.
    initial : int
        Items already done.
    use_tqdm : bool
        Use ``tqdm.auto`` when it can be imported; False: always the text bar.
    file : TextIO, optional
        Where to write; default ``sys.stderr`` (tqdm in a notebook shows a widget instead).

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> with make_progress(None, use_tqdm=False, file=out) as counter:
    ...     for _ in range(3):
    ...         counter.update()
    >>> out.getvalue().splitlines()[-1].startswith("iteration: 3 |")
    True
    """
    tqdm = _tqdm_class() if use_tqdm else None
    if tqdm is None:
        return TextProgress(total, desc, initial=initial, file=file)
    return _TqdmProgress(tqdm(total=total, desc=desc or None, initial=initial, file=file))


class ProgressCallback(Callback):
    """A dask callback that shows a :class:`Progress` for each compute (each run of the scheduler).

    The total is the number of keys in the scheduler state at ``_start_state`` (already finished ones, e.g.
    literals, count as done); each ``_posttask`` counts one; ``_finish`` closes the display.

    Parameters
    ----------
    desc, use_tqdm, file
        As :func:`make_progress`.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> cb = ProgressCallback(use_tqdm=False, file=out)
    >>> state = {"ready": ["b"], "waiting": {}, "running": set(), "finished": {"a"}}
    >>> cb._start({})
    >>> cb._start_state({}, state)  # 1 of 2 done
    >>> cb._posttask("b", None, {}, state, 0)
    >>> cb._finish({}, state, False)
    >>> [line.split(" | ")[1] for line in out.getvalue().splitlines()]
    ['50% Completed', '100% Completed']
    """

    def __init__(self, desc: str = "", *, use_tqdm: bool = True, file: TextIO | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.desc, self.use_tqdm, self.file = desc, use_tqdm, file
        self.progress: Progress | None = None

    def _ensure(self) -> Progress:
        if self.progress is None:  # no _start_state: the total stays unknown
            self.progress = make_progress(None, self.desc, use_tqdm=self.use_tqdm, file=self.file)
        return self.progress

    def _start(self, dsk: Mapping[Hashable, Any]) -> None:
        if self.progress is not None:  # a previous compute that never finished
            self.progress.close()
        self.progress = None

    def _start_state(self, dsk: Mapping[Hashable, Any], state: Mapping[str, Any]) -> None:
        total = sum(len(state.get(part, ())) for part in ("ready", "waiting", "running", "finished"))
        done = len(state.get("finished", ()))
        if self.progress is None:
            self.progress = make_progress(total, self.desc, initial=done, use_tqdm=self.use_tqdm, file=self.file)
        else:
            self.progress.set_total(total)

    def _posttask(
        self, key: Hashable, result: Any, dsk: Mapping[Hashable, Any], state: Mapping[str, Any], worker_id: Any
    ) -> None:
        self._ensure().update(1)

    def _finish(self, dsk: Mapping[Hashable, Any], state: Mapping[str, Any], errored: bool) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
