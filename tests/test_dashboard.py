"""The dashboard against a real run, rendered by a real headless Chromium: the live workers, a run's progress per
task prefix and the task stream are in the page's DOM, and a screenshot of it is not blank."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import struct
import subprocess
import threading
import urllib.request
import zlib
from collections.abc import Callable

import pytest
import redis

from dask_redisparam import RedisParam
from dask_redisparam.backend import keys
from dask_redisparam.config.address import RedisAddress
from tests import tasks
from tests.conftest import wait_until


def chromium(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Headless Chromium (Debian's ``chromium``; ci/test.sh installs it); as root it needs ``--no-sandbox``."""
    binary = shutil.which("chromium")
    assert binary is not None, "Debian's chromium is missing: apt-get install -y chromium (ci/test.sh does)"
    argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *args]
    return subprocess.run(argv, capture_output=True, timeout=60, check=True)


def png_colours(path: pathlib.Path) -> int:
    """The number of distinct pixel colours of an 8-bit RGB or RGBA PNG (decoded here: zlib, then un-filtered)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    previous, colours = bytearray(stride), set()
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        colours.update(bytes(line[i : i + channels]) for i in range(0, stride, channels * 7))  # every 7th pixel
        previous = line
    return len(colours)


@pytest.mark.timeout(90)
def test_the_page_shows_workers_progress_and_task_stream_of_a_live_run(
    url_param: Callable[..., RedisParam], jobname: str, rclient: redis.Redis, tmp_path: pathlib.Path
) -> None:
    gate = tmp_path / "gate"
    dsk: dict[object, object] = {("inc", i): (tasks.inc, i) for i in range(6)}
    dsk["all"] = (tasks.sum_all, *[("inc", i) for i in range(6)])
    dsk["gate"] = (tasks.gated, str(gate), "all")  # after the incs, so that they all finish first
    with url_param(2, dashboard=True) as p:
        link = p.dashboard_link
        assert link is not None and link.startswith("http://127.0.0.1:")
        p.publish("lookup", {"a": 1}, ttl=60)
        done: list[object] = []
        run = threading.Thread(target=lambda: done.append(p(dsk, [*dsk])))
        run.start()
        try:

            def progress() -> dict[bytes, bytes]:
                found = list(rclient.scan_iter(match=keys.progress(jobname, "*")))
                return rclient.hgetall(found[0]) if found else {}

            assert wait_until(lambda: progress().get(b"done|inc") == b"6", 20), progress()
            (run_key,) = rclient.scan_iter(match=keys.progress(jobname, "*"))
            run_id = keys.run_id_of(run_key.decode())
            dom = chromium("--virtual-time-budget=3000", "--dump-dom", link).stdout.decode()
            shot = tmp_path / "dashboard.png"
            chromium("--virtual-time-budget=3000", "--window-size=1280,900", f"--screenshot={shot}", link)
        finally:
            gate.touch()
            run.join(30)
        assert done and len(done[0]) == 8  # type: ignore[arg-type]
        p.unpublish("lookup")
        for wid in p.worker_ids():
            assert f'<td class="worker-id">{wid}</td>' in dom, wid
    assert f'data-job="{jobname}"' in dom
    assert f'data-run="{run_id}" data-prefix="inc"' in dom and "6 / 6" in dom  # the run's progress bar of "inc"
    assert dom.count('class="task" data-prefix="inc"') >= 1  # the task stream
    assert "<td>lookup</td>" in dom and re.search(r"<td>in \d+(\.\d)? s</td>", dom)  # a dataset, its time left
    assert shot.stat().st_size > 10_000
    assert png_colours(shot) >= 8  # text, bars and stream in several colours: not blank
    rclient.delete(*keys.statistics(jobname))


@pytest.mark.timeout(30)
def test_the_command_serves_the_page_and_metrics(redis_address: RedisAddress, jobname: str) -> None:
    env = dict(os.environ, REDISPARAM_URL=redis_address.to_url(show_password=True))
    argv = ["dask-redisparam", "dashboard", "--jobname", jobname, "--dashboard-address", "127.0.0.1:0"]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("dashboard of ") and (redis_address.password or "\0") not in line, line
            link = line.split(" on ")[1].split()[0]
            assert urllib.request.urlopen(link + "health", timeout=10).read() == b"ok"
            metrics = urllib.request.urlopen(link + "metrics", timeout=10).read().decode()
            assert f'redisparam_workers{{job="{jobname}"}} 0.0' in metrics
            state = urllib.request.urlopen(link + "api/jobs", timeout=10).read().decode()
            assert jobname in state and (redis_address.password or "\0") not in state
        finally:
            proc.terminate()
            proc.wait(10)
