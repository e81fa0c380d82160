"""Make the dashboard screenshot of the docs (``docs/img/dashboard.png``) from a real run.

``python -m dask_redisparam._docs.screenshot [PATH]`` starts an embedded Redis and a
:class:`~dask_redisparam.RedisParam` with two local workers and ``dashboard=True``, publishes a dataset, runs a small
graph of three task prefixes whose last task waits, and has Debian's headless ``chromium`` take the page while the
run is live. The docs build does not run it (it needs chromium and takes about ten seconds): run it again when the
page changes, and commit the picture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from dask_redisparam import RedisParam
from dask_redisparam.worker.server import EmbeddedRedis

__all__ = ["main", "screenshot"]

DEFAULT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"


def _load(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


def _gate(path: str, *values: int) -> int:
    while not os.path.exists(path):
        time.sleep(0.02)
    return sum(values)


def screenshot(path: Path, chromium: str = "chromium") -> Path:
    """Take the dashboard of a live run into ``path`` (PNG, 1280 px wide)."""
    binary = shutil.which(chromium)
    if binary is None:
        raise FileNotFoundError(f"{chromium} not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis() as server:
        gate = os.path.join(tmp, "gate")
        dsk: dict[object, object] = {("load", i): (_load, i, 0.02 + 0.01 * (i % 5)) for i in range(60)}
        dsk.update({("clean", i): (_load, ("load", i), 0.03) for i in range(60)})
        dsk.update({("combine", j): (sum, [("clean", i) for i in range(j, 60, 6)]) for j in range(6)})
        dsk["report"] = (_gate, gate, *[("combine", j) for j in range(6)])
        url = server.address.to_url(show_password=True)
        with RedisParam(2, jobname="demo", url=url, dashboard=True) as p:
            p.publish("lookup-table", {f"k{i}": i for i in range(1000)}, ttl=3600)
            run = threading.Thread(target=p, args=(dsk, "report"))
            run.start()
            try:
                time.sleep(5.0)
                argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
                argv += ["--virtual-time-budget=3000", "--window-size=1280,900", f"--screenshot={path}"]
                subprocess.run([*argv, str(p.dashboard_link)], check=True, capture_output=True, timeout=60)
            finally:
                Path(gate).touch()
                run.join()
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(screenshot(Path(args[0]) if args else DEFAULT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
