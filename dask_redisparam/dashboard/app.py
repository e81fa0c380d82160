"""The dashboard's web server: the page, its JSON, and ``/metrics``, from the standard library's HTTP server.

:class:`Dashboard` serves, from a thread of its own (``ThreadingHTTPServer``: one thread per request):

- ``/``: the page (:file:`page.html`, plain HTML and JavaScript, no build step), which polls ``/api/jobs`` every
  second and draws workers, queue, dead letters, counters, runs with a progress bar per task key prefix and a task
  stream of the last minutes, coloured by prefix;
- ``/api/jobs``: the jobs of the server (or the one it was given) as JSON (:func:`~.view.job_view`);
- ``/metrics``: Prometheus's text format (:mod:`~.metrics`);
- ``/health``: ``ok``.

It only reads Redis (:class:`~dask_redisparam.backend.monitor.MonitorOps`): each request is a few round trips, and
the run is not asked for anything. It listens on loopback by default, and shows the server's address without its
password.

Examples
--------
>>> import urllib.request
>>> from dask_redisparam.worker.server import EmbeddedRedis
>>> with EmbeddedRedis() as server, Dashboard(server.address, address="127.0.0.1:0") as dash:
...     page = urllib.request.urlopen(dash.link).read()
...     b"<title>dask-redisparam</title>" in page
True
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..backend import Backend
from ..backend.monitor import JobLook
from ..config.address import RedisAddress
from ..manager.resume import RunInfo, list_runs
from .metrics import exposition
from .view import job_view

__all__ = ["DEFAULT_ADDRESS", "Dashboard", "parse_address"]

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:8788"
"""Where ``dask-redisparam dashboard`` listens by default (distributed's dashboard is on 8787)."""
STREAM_SECONDS = 300.0
"""The task stream's window: the last five minutes."""


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (port 0: a free one) as a pair.

    Examples
    --------
    >>> parse_address("127.0.0.1:8788"), parse_address(":0")
    (('127.0.0.1', 8788), ('127.0.0.1', 0))
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"dashboard address {text!r}: give host:port, e.g. {DEFAULT_ADDRESS}")
    return host.strip("[]") or "127.0.0.1", int(port)


class Dashboard:
    """The dashboard of the jobs on one Redis server (or of one job), served from a background thread.

    Parameters
    ----------
    redis : RedisAddress
        The server to read.
    jobname : str, optional
        Show only this job; default every job with keys on the server.
    address : str
        ``host:port`` to listen on (port 0: a free one); loopback by default.
    """

    def __init__(self, redis: RedisAddress, jobname: str | None = None, address: str = DEFAULT_ADDRESS) -> None:
        self.redis = redis
        self.jobname = jobname
        self._backend = Backend(redis, retries=1)
        self._server = ThreadingHTTPServer(parse_address(address), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="dashboard", daemon=True)

    @property
    def link(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8788/`` (distributed's ``client.dashboard_link``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> Dashboard:
        """Start serving in the background."""
        self._thread.start()
        logger.info("dashboard of %s on %s", self.redis.describe(), self.link)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the connection."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        self._backend.close()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def looks(self) -> list[JobLook]:
        """A look at each job shown."""
        names = [self.jobname] if self.jobname else self._backend.job_names()
        looks = [self._backend.look(name, STREAM_SECONDS) for name in names]
        for look in looks:  # the runs whose manager died (live ones show among the runs): what a rerun may resume
            look.unfinished_runs = [
                _unfinished(info) for info in list_runs(self._backend, look.jobname) if not info.alive
            ]
        return looks

    def state(self) -> dict[str, Any]:
        """What ``/api/jobs`` returns."""
        return {"server": self.redis.describe(), "jobs": [job_view(look) for look in self.looks()]}


def _unfinished(info: RunInfo) -> dict[str, Any]:
    return {
        "run": info.run_id,
        "manager": info.manager,
        "tasks": f"{info.done}/{info.total}",
        "stored": info.nbytes,
        "died (s ago)": round(info.died_ago),
        "resumable": "yes" if info.resumable else "no",
    }


def _page() -> bytes:
    return importlib.resources.files(__package__).joinpath("page.html").read_bytes()


def _handler(dashboard: Dashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dask-redisparam-dashboard"

        def do_GET(self) -> None:  # the name http.server calls
            path = urllib.parse.urlsplit(self.path).path
            try:
                if path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", _page())
                elif path == "/api/jobs":
                    self._send(200, "application/json", json.dumps(dashboard.state()).encode())
                elif path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8", exposition(dashboard.looks))
                elif path == "/health":
                    self._send(200, "text/plain", b"ok")
                else:
                    self._send(404, "text/plain", b"not found")
            except Exception as e:  # the server may be down: say so, keep serving
                logger.warning("dashboard: %s: %s", path, e)
                self._send(503, "text/plain; charset=utf-8", f"Redis at {dashboard.redis.describe()}: {e}".encode())

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("dashboard: " + format, *args)

    return Handler
