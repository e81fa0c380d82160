"""Large values: pickled with out-of-band buffers, stored as parts beside a sealed reference, read straight into one
buffer; fenced completion, release, redo and literals with parts; values over Redis' 512 MB string limit."""

from __future__ import annotations

import ctypes
import functools
import math
import os
import pathlib
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import pytest
import redis
from dask.callbacks import Callback

from dask_redisparam import RedisParam
from dask_redisparam.backend import Backend, keys
from dask_redisparam.backend.large import READ_WINDOW
from dask_redisparam.backend.runs import MARKER
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.errors import ServerError
from dask_redisparam.sentinels import MISSING
from dask_redisparam.wire import bulk
from dask_redisparam.wire.buffers import new_map
from dask_redisparam.wire.bulk import (
    PART_BYTES,
    BufferPool,
    Frames,
    Part,
    Ref,
    Report,
    Targets,
    decode_ref,
    layout,
    load,
    open_value,
    pack,
)
from dask_redisparam.wire.protocol import unseal_value
from dask_redisparam.wire.serialize import dumps_result
from dask_redisparam.wire.signing import PayloadRejected, Signer
from tests import tasks
from tests.conftest import CliWorkers, wait_for_workers, wait_until

MB = 2**20
SECRET = "a-shared-secret-of-sufficient-length"
JOB = "bulk-unit"


# ---------------------------------------------------------------------- helpers
def stored(parts: Sequence[Part]) -> dict[str, bytes]:
    """What Redis would hold for ``parts``: field -> bytes (copies, as after a round trip)."""
    return {name: bytes(view) for name, view in parts}


def reader(store: dict[str, bytes]) -> Callable[[Sequence[Part]], bool]:
    """A ``read_parts`` over ``store``: False when a field is missing, as ``Backend.read_parts``."""

    def read_parts(targets: Sequence[Part]) -> bool:
        found = True
        for name, view in targets:
            if name not in store:
                found = False
                continue
            view[:] = store[name]  # a ValueError if the reference's sizes do not match what was written
        return found

    return read_parts


def run_keys(rclient: redis.Redis, jobname: str) -> list[bytes]:
    return list(rclient.scan_iter(match=f"drp:{{{jobname}}}:run:*"))


def data_fields(rclient: redis.Redis, jobname: str) -> list[bytes]:
    """The fields of every data hash of the job's runs (but a registered run's marker field)."""
    out: list[bytes] = []
    for key in rclient.scan_iter(match=f"drp:{{{jobname}}}:run:*:data"):
        out += [f for f in cast(list[bytes], rclient.hkeys(key)) if f != MARKER.encode()]
    return out


def part_fields(fields: Sequence[bytes]) -> list[bytes]:
    return [f for f in fields if f.startswith(b"~")]


def nparts(nbytes: int) -> int:
    return math.ceil(nbytes / PART_BYTES)


class Background:
    """A compute in a thread, its result or exception kept for the test."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        self.result: list[Any] = []
        self.error: list[BaseException] = []

        def target() -> None:
            try:
                self.result.append(compute())
            except BaseException as e:  # noqa: B036 - handed to the test
                self.error.append(e)

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 30.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the compute did not finish"
        if self.error:
            raise self.error[0]
        return self.result[0]


@pytest.fixture
def backend(redis_address: RedisAddress, rclient: redis.Redis, jobname: str) -> Iterator[Backend]:
    b = Backend.connect(redis_address)
    try:
        yield b
    finally:
        b.close()
        for key in rclient.scan_iter(match=keys.job_pattern(jobname)):  # keys made here by hand have no TTL
            rclient.delete(key)


# ---------------------------------------------------------------------- unit: bulk and serialize (no Redis)
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_large_array_round_trips_into_one_buffer(signed: bool) -> None:
    signer = Signer.from_secret(SECRET) if signed else None
    arr = np.arange(9 * MB // 8, dtype="f8")
    blob = dumps_result(arr)
    assert isinstance(blob, Frames) and len(blob.buffers) == 1 and len(blob.header) < 1024
    sealed, parts = pack(blob, signer, JOB)
    assert len(sealed) < 2048  # the reference, not the data
    assert len(parts) == nparts(arr.nbytes) == 3
    assert all(len(view) <= PART_BYTES for _, view in parts)
    store = stored(parts)
    assert b"".join(store[name] for name, _ in parts) == arr.tobytes()
    out = open_value(sealed, signer, JOB, reader(store))
    assert isinstance(out, np.ndarray) and out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable
    assert out.base is not None and not out.flags.owndata  # a view of the buffer the parts were read into
    out[0] = -1.0
    assert arr[0] == 0.0


def test_frames_sit_at_aligned_offsets_of_one_buffer() -> None:
    values = (
        np.arange(MB // 8 + 1, dtype="f8"),  # 1 MiB + 8 bytes
        np.arange(MB + 3, dtype="u1"),  # an odd size
        np.asfortranarray(np.arange(2**18, dtype="f4").reshape(512, 512)),
    )
    blob = dumps_result(values)
    assert isinstance(blob, Frames) and [len(b) for b in blob.buffers] == [v.nbytes for v in values]
    sealed, parts = pack(blob, None, JOB)
    ref = decode_ref(unseal_value(sealed, None, JOB))
    assert ref.header is not None  # a small header travels inside the reference
    assert ref.sizes == tuple(v.nbytes for v in values)
    where = layout(ref)
    assert [name for name, _, _ in where] == [name for name, _ in parts]
    assert [size for _, _, size in where] == [len(view) for _, view in parts]
    assert all(offset % 64 == 0 for _, offset, _ in where)
    starts = [0, math.ceil(values[0].nbytes / 64) * 64]
    starts.append(starts[1] + math.ceil(values[1].nbytes / 64) * 64)
    assert [offset for _, offset, _ in where] == starts  # each frame is one part here, at an aligned offset
    out = open_value(sealed, None, JOB, reader(stored(parts)))
    for got, want in zip(out, values, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.flags.writeable
    assert out[2].flags.f_contiguous
    # all three arrays are views of one buffer, at the layout's offsets
    assert [got.ctypes.data - out[0].ctypes.data for got in out] == starts


def test_a_tampered_part_is_rejected() -> None:
    signer = Signer.from_secret(SECRET)
    sealed, parts = pack(dumps_result(np.ones(2 * MB // 8)), signer, JOB)
    store = stored(parts)
    assert open_value(sealed, signer, JOB, reader(store)).sum() == 2 * MB // 8
    name = parts[-1][0]
    flipped = bytearray(store[name])
    flipped[1234] ^= 0x01
    store[name] = bytes(flipped)
    with pytest.raises(PayloadRejected, match="bad signature on a large value's parts"):
        open_value(sealed, signer, JOB, reader(store))


def test_a_missing_part_gives_missing_parts() -> None:
    for signer in (None, Signer.from_secret(SECRET)):
        sealed, parts = pack(dumps_result(np.ones(6 * MB // 8)), signer, JOB)
        store = stored(parts)
        del store[parts[1][0]]
        assert open_value(sealed, signer, JOB, reader(store)) is MISSING


def test_signed_large_values_need_the_right_secret() -> None:
    signer = Signer.from_secret(SECRET)
    sealed, parts = pack(dumps_result(np.ones(2 * MB // 8)), signer, JOB)
    store = stored(parts)
    ref = decode_ref(signer.unseal(sealed, b"value", JOB.encode()))
    assert ref.tag is not None and ref.kid == "0"
    # the sealed reference itself
    with pytest.raises(PayloadRejected, match="this process has no secret"):
        open_value(sealed, None, JOB, reader(store))
    with pytest.raises(PayloadRejected, match="bad signature"):
        open_value(sealed, Signer.from_secret("another-secret-of-enough-length"), JOB, reader(store))
    # the parts' tag, checked by load: no secret, another key under the same id, an unknown key id, another job
    with pytest.raises(PayloadRejected, match="this process has no secret"):
        load(ref, None, JOB.encode(), reader(store))
    with pytest.raises(PayloadRejected, match="bad signature on a large value's parts"):
        load(ref, Signer.from_secret("another-secret-of-enough-length"), JOB.encode(), reader(store))
    with pytest.raises(PayloadRejected, match="unknown key id '0'"):
        load(ref, Signer.from_secret({"k2": "another-secret-of-enough-length"}), JOB.encode(), reader(store))
    with pytest.raises(PayloadRejected, match="bad signature on a large value's parts"):
        load(ref, signer, b"other-job", reader(store))
    # an unsigned reference is refused by a reader with a secret (it cannot be forged past the seal anyway)
    unsigned_sealed, unsigned_parts = pack(dumps_result(np.ones(2 * MB // 8)), None, JOB)
    unsigned_ref = decode_ref(unseal_value(unsigned_sealed, None, JOB))
    with pytest.raises(PayloadRejected, match="large value is not signed"):
        load(unsigned_ref, signer, JOB.encode(), reader(stored(unsigned_parts)))
    # rotation: a reader that knows the old key among others still reads it
    rotated = Signer.from_secret({"new": "a-newer-secret-of-enough-length", "0": SECRET})
    assert open_value(sealed, rotated, JOB, reader(store)).sum() == 2 * MB // 8


def test_dumps_result_frames_only_large_values() -> None:
    assert isinstance(dumps_result(1), bytes)
    assert isinstance(dumps_result(np.ones(1000)), bytes)
    assert isinstance(dumps_result(b"x" * 1000), bytes)
    assert pickle.loads(cast(bytes, dumps_result({"a": [1, 2]}))) == {"a": [1, 2]}
    arr = np.ones(2 * MB // 8)
    frames = dumps_result(arr)
    assert isinstance(frames, Frames) and len(frames.buffers) == 1 and frames.buffers[0].nbytes == arr.nbytes
    assert np.shares_memory(np.asarray(frames.buffers[0]), arr)  # the array's memory, not a copy
    big_bytes = b"y" * (2 * MB)
    frames = dumps_result(big_bytes)
    assert isinstance(frames, Frames) and frames.buffers == [] and len(frames.header) > 2 * MB  # in-band
    sealed, parts = pack(frames, None, JOB)
    ref = decode_ref(unseal_value(sealed, None, JOB))
    assert ref.header is None and len(parts) == 1  # a large header travels as a part
    assert open_value(sealed, None, JOB, reader(stored(parts))) == big_bytes


# ---------------------------------------------------------------------- Backend.read_parts (real Redis)
def test_read_parts_fills_the_views(backend: Backend, rclient: redis.Redis, jobname: str) -> None:
    data = keys.data(jobname, "r1")
    payload = {"~t.0": os.urandom(PART_BYTES), "~t.1": os.urandom(12345), "~t.2": b""}
    rclient.hset(data, mapping=cast(Any, payload))
    targets = [(name, memoryview(bytearray(len(value)))) for name, value in payload.items()]
    assert backend.read_parts(jobname, "r1", targets) is True
    assert stored(targets) == payload
    copies = [(name, memoryview(bytearray(len(value)))) for name, value in payload.items()]
    assert backend._read_parts_copying(data, copies) is True
    assert stored(copies) == payload
    # a missing field: False, and the other views still filled (the replies were all read)
    gap = [("~t.1", memoryview(bytearray(12345))), ("~t.9", memoryview(bytearray(7))), ("~t.2", memoryview(b""))]
    assert backend.read_parts(jobname, "r1", gap) is False
    assert bytes(gap[0][1]) == payload["~t.1"]
    gap_copy = [("~t.9", memoryview(bytearray(7))), ("~t.1", memoryview(bytearray(12345)))]
    assert backend._read_parts_copying(data, gap_copy) is False
    assert bytes(gap_copy[1][1]) == payload["~t.1"]
    assert backend.fetch_values(jobname, "r1", ["~t.1"]) == [payload["~t.1"]]  # the connection is in step


def test_read_parts_asks_a_few_parts_at_a_time_and_reports_each_in_place(
    backend: Backend, rclient: redis.Redis, jobname: str
) -> None:
    data = keys.data(jobname, "r1")
    payload = {f"~t.{i}": os.urandom(MB) for i in range(12)}
    rclient.hset(data, mapping=cast(Any, payload))
    names = [*payload][:3] + ["~t.gone"] + [*payload][3:]
    reported: list[int] = []
    buffered: list[int] = []

    def on_part(i: int) -> None:
        name, view = targets[i]
        assert bytes(view) == payload[name]  # in place when reported
        reported.append(i)
        # what Redis holds for us meanwhile: at most the window, never a copy of the whole value
        buffered.append(max(int(c["omem"]) for c in rclient.client_list()))

    targets = Targets([(n, memoryview(bytearray(len(payload.get(n, b"1234567"))))) for n in names], on_part)
    assert backend.read_parts(jobname, "r1", targets) is False  # one is missing; the others are all read
    assert reported == [0, 1, 2, *range(4, 13)]
    assert READ_WINDOW <= 4 and max(buffered) <= READ_WINDOW * MB + 64 * 1024  # all 12 at once: 11.5 MB
    assert backend.fetch_values(jobname, "r1", ["~t.11"]) == [payload["~t.11"]]  # the connection is in step


def test_read_parts_size_mismatch_drops_the_connection(backend: Backend, rclient: redis.Redis, jobname: str) -> None:
    data = keys.data(jobname, "r1")
    big = os.urandom(MB)
    rclient.hset(data, mapping={"~t.0": big, "~t.1": b"abc"})
    before = backend._r.client_id()
    targets = [("~t.0", memoryview(bytearray(100))), ("~t.1", memoryview(bytearray(3)))]
    with pytest.raises(PayloadRejected, match=f"has {MB} bytes where its reference says 100"):
        backend.read_parts(jobname, "r1", targets)
    assert backend._r.client_id() != before  # the connection with unread replies was dropped and replaced
    # the unread megabyte never reaches a later command
    for _ in range(3):
        assert backend.fetch_values(jobname, "r1", ["~t.1", "~t.0"]) == [b"abc", big]
        good = [("~t.0", memoryview(bytearray(MB))), ("~t.1", memoryview(bytearray(3)))]
        assert backend.read_parts(jobname, "r1", good) is True
        assert stored(good) == {"~t.0": big, "~t.1": b"abc"}
    assert backend.ping()


def test_read_parts_error_reply_drops_the_connection(backend: Backend, rclient: redis.Redis, jobname: str) -> None:
    rclient.set(keys.data(jobname, "r1"), b"not a hash")
    before = backend._r.client_id()
    with pytest.raises(ServerError, match="WRONGTYPE"):
        backend.read_parts(jobname, "r1", [("~t.0", memoryview(bytearray(3))), ("~t.1", memoryview(bytearray(3)))])
    assert backend._r.client_id() != before
    assert backend.load_inputs(jobname, "r1", []) == (False, [])  # the new connection answers
    assert backend.ping()


# ---------------------------------------------------------------------- Backend.complete with parts (real Redis)
WORKER = "w1"


def claim(backend: Backend, jobname: str, run_id: str, message: bytes, values: dict[str, bytes]) -> None:
    """Open a run (with ``values``), queue ``message`` and claim it as worker :data:`WORKER`."""
    backend.open_run(jobname, run_id, 30.0, values)
    backend.exchange(jobname, run_id, [message], [], 30.0)
    assert backend.claim(jobname, WORKER, 1.0) == message


def large(fill: float, nbytes: int, signer: Signer | None, jobname: str) -> tuple[Any, bytes, list[Part]]:
    arr = np.full(nbytes // 8, fill)
    sealed, parts = pack(dumps_result(arr), signer, jobname)
    assert len(parts) == nparts(nbytes)
    return arr, sealed, parts


def test_complete_after_a_lost_claim_deletes_the_parts(backend: Backend, rclient: redis.Redis, jobname: str) -> None:
    literal = pack(pickle.dumps("small"), None, jobname)[0]
    claim(backend, jobname, "r1", b"msg-0", {"lit": literal})
    assert backend.deregister_worker(jobname, WORKER) == 1  # reaped: the message is back on the queue
    _, ref1, parts1 = large(1.0, 9 * MB, None, jobname)
    _, ref2, parts2 = large(2.0, 5 * MB, None, jobname)
    values = [("5", pack(pickle.dumps(5), None, jobname)[0])]
    refs = [("7", ref2), ("6", ref1)]
    got = backend.complete(Report(jobname, WORKER, "r1", b"msg-0", b"record", values, 3, refs, [*parts2, *parts1]))
    assert got == -1
    assert rclient.hkeys(keys.data(jobname, "r1")) == [b"lit"]  # no part, no value: only what was there
    assert rclient.llen(keys.done(jobname, "r1")) == 0
    assert rclient.lrange(keys.queue(jobname), 0, -1) == [b"msg-0"]


def test_complete_for_a_gone_run_leaves_no_key(backend: Backend, rclient: redis.Redis, jobname: str) -> None:
    claim(backend, jobname, "r1", b"msg-0", {})
    assert not rclient.exists(keys.data(jobname, "r1"))
    rclient.delete(keys.alive(jobname, "r1"))  # the run ended (its manager deleted its keys)
    _, ref, parts = large(1.0, 9 * MB, None, jobname)
    assert backend.complete(Report(jobname, WORKER, "r1", b"msg-0", b"record", [], 1, [("3", ref)], parts)) == 0
    assert rclient.exists(keys.data(jobname, "r1")) == 0  # the parts written first did not re-create the hash
    assert rclient.exists(keys.done(jobname, "r1")) == 0
    assert rclient.llen(keys.processing(jobname, WORKER)) == 0  # the message is released all the same
    assert run_keys(rclient, jobname) == []


def test_complete_stores_parts_and_a_repeat_keeps_them(backend: Backend, rclient: redis.Redis, jobname: str) -> None:
    signer = Signer.from_secret(SECRET)
    claim(backend, jobname, "r1", b"msg-0", {})
    arr, ref, parts = large(3.0, 9 * MB, signer, jobname)
    args = Report(jobname, WORKER, "r1", b"msg-0", b"record", [], 1, [("3", ref)], parts)
    assert backend.complete(args) == 1
    data = keys.data(jobname, "r1")
    expected = sorted([b"3", *(name.encode() for name, _ in parts)])
    assert sorted(cast(list[bytes], rclient.hkeys(data))) == expected
    assert rclient.hget(data, "3") == ref
    assert 0 < rclient.pttl(data) <= 30_000  # the hash the parts created has the run's TTL
    assert rclient.lrange(keys.done(jobname, "r1"), 0, -1) == [b"record"]
    read_parts = functools.partial(backend.read_parts, jobname, "r1")
    np.testing.assert_array_equal(open_value(cast(bytes, rclient.hget(data, "3")), signer, jobname, read_parts), arr)
    # the same call again (its reply was lost): refused, and the stored value's parts are not deleted
    assert backend.complete(args) == -1
    assert sorted(cast(list[bytes], rclient.hkeys(data))) == expected
    assert rclient.llen(keys.done(jobname, "r1")) == 1
    value = open_value(cast(bytes, rclient.hget(data, "3")), signer, jobname, read_parts)
    np.testing.assert_array_equal(value, arr)


def test_a_second_completion_of_a_message_keeps_the_first_value(
    backend: Backend, rclient: redis.Redis, jobname: str
) -> None:
    """A message queued twice runs twice: the first value stays with its parts; the second's parts are deleted."""
    claim(backend, jobname, "r1", b"msg-0", {})
    first, ref1, parts1 = large(1.0, 5 * MB, None, jobname)
    assert backend.complete(Report(jobname, WORKER, "r1", b"msg-0", b"record-1", [], 1, [("3", ref1)], parts1)) == 1
    backend.exchange(jobname, "r1", [b"msg-0"], [], 30.0)  # the duplicate
    assert backend.claim(jobname, WORKER, 1.0) == b"msg-0"
    _, ref2, parts2 = large(2.0, 5 * MB, None, jobname)
    small = pack(pickle.dumps("s"), None, jobname)[0]
    assert (
        backend.complete(Report(jobname, WORKER, "r1", b"msg-0", b"record-2", [("4", small)], 1, [("3", ref2)], parts2))
        == 1
    )
    data = keys.data(jobname, "r1")
    expected = sorted([b"3", b"4", *(name.encode() for name, _ in parts1)])
    assert sorted(cast(list[bytes], rclient.hkeys(data))) == expected
    assert rclient.hget(data, "3") == ref1
    read_parts = functools.partial(backend.read_parts, jobname, "r1")
    np.testing.assert_array_equal(open_value(ref1, None, jobname, read_parts), first)
    assert rclient.lrange(keys.done(jobname, "r1"), 0, -1) == [b"record-1", b"record-2"]


def test_an_exchange_whose_script_the_server_forgot_pushes_once(
    backend: Backend, rclient: redis.Redis, jobname: str
) -> None:
    """After SCRIPT FLUSH the acknowledging script fails inside the pipeline: only it runs again, the messages are
    pushed once, and the records returned leave out those it then dropped."""
    backend.open_run(jobname, "r1", 30.0, {})
    rclient.rpush(keys.done(jobname, "r1"), b"rec-1", b"rec-2")
    records, alive = backend.exchange(jobname, "r1", [], [], 30.0)
    assert (records, alive) == ([b"rec-1", b"rec-2"], True)
    rclient.rpush(keys.done(jobname, "r1"), b"rec-3")
    rclient.script_flush()
    records, _ = backend.exchange(jobname, "r1", [b"msg-1", b"msg-2"], [], 30.0, acknowledge=records)
    assert records == [b"rec-3"]
    assert rclient.lrange(keys.queue(jobname), 0, -1) == [b"msg-2", b"msg-1"]
    assert rclient.lrange(keys.done(jobname, "r1"), 0, -1) == [b"rec-3"]


# ---------------------------------------------------------------------- end to end, with worker processes
class PartsWhenDone(Callback):
    """Records, when each task finishes (before the manager releases its inputs), how many part fields the data
    hashes of the job's runs hold."""

    def __init__(self, rclient: redis.Redis, jobname: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.rclient, self.jobname = rclient, jobname
        self.counts: dict[Hashable, int] = {}

    def _posttask(self, key: Hashable, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        self.counts[key] = len(part_fields(data_fields(self.rclient, self.jobname)))


class FieldsWhenSent(Callback):
    """Records the fields of the job's data hashes when each task is sent."""

    def __init__(self, rclient: redis.Redis, jobname: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.rclient, self.jobname = rclient, jobname
        self.fields: dict[Hashable, list[bytes]] = {}

    def _pretask(self, key: Hashable, dsk: Any, state: Any) -> None:
        self.fields[key] = data_fields(self.rclient, self.jobname)


def test_a_large_chain_through_redis(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], rclient: redis.Redis, jobname: str
) -> None:
    cli_workers(1)
    warm = {"w1": (tasks.inc, 1), "w2": (tasks.inc, "w1")}  # a second turn acknowledges w1's record with a script
    assert manager(warm, "w2", fuse_chains=False) == 3  # so that the server knows the scripts: see the next test
    nbytes = 20 * MB
    dsk = {"a": (tasks.make_array, nbytes, 1.0), "b": (tasks.add_one_array, "a"), "c": (tasks.array_sum, "b")}
    with PartsWhenDone(rclient, jobname) as events:
        assert manager(dsk, "c", fuse_chains=False) == 2.0 * (nbytes // 8)
    # a stored as parts; then b too; a's parts deleted once b (its only dependent) finished
    assert events.counts == {"a": nparts(nbytes), "b": 2 * nparts(nbytes), "c": nparts(nbytes)}
    assert run_keys(rclient, jobname) == []
    assert list(rclient.scan_iter(match=f"drp:{{{jobname}}}:redo:*")) == []


def test_a_message_run_twice_leaves_one_copy_of_its_parts(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], rclient: redis.Redis, jobname: str
) -> None:
    """Delivery is at least once: a message may run twice. Here the server forgot the scripts (as after a restart):
    the manager's pipeline that acknowledges a's record with a script and pushes b's message is sent again, so b's
    message is queued twice. The value stored for b and the parts the manager knows (and deletes) must agree."""
    cli_workers(1)
    rclient.script_flush()
    nbytes = 5 * MB
    dsk = {"a": (tasks.make_array, nbytes, 1.0), "b": (tasks.add_one_array, "a"), "c": (tasks.array_sum, "b")}
    with PartsWhenDone(rclient, jobname) as events:
        assert manager(dsk, "c", fuse_chains=False) == 2.0 * (nbytes // 8)
    assert events.counts == {"a": nparts(nbytes), "b": 2 * nparts(nbytes), "c": nparts(nbytes)}  # no orphaned parts
    assert run_keys(rclient, jobname) == []


def test_redo_after_a_message_ran_twice(
    manager: RedisParam,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
    jobname: str,
    tmp_path: pathlib.Path,
) -> None:
    """As above (b's message runs twice), then c fails: the redo must find b's parts."""
    cli_workers(1)
    flag = tmp_path / "flag"
    flag.write_text("fail")
    rclient.script_flush()
    nbytes = 5 * MB
    dsk = {
        "a": (tasks.make_array, nbytes, 1.0),
        "b": (tasks.add_one_array, "a"),
        "c": (tasks.array_sum_unless_flagged, str(flag), "b"),
    }
    try:
        with pytest.raises(RuntimeError, match="flagged") as info:
            manager(dsk, "c", fuse_chains=False)
        flag.unlink()
        assert manager(dsk, "c", redo=info.value, fuse_chains=False) == 2.0 * (nbytes // 8)
    finally:
        for key in rclient.scan_iter(match=f"drp:{{{jobname}}}:redo:*"):
            rclient.delete(key)


def test_large_values_requested_directly(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], rclient: redis.Redis, jobname: str
) -> None:
    cli_workers(1)
    arr = manager({"a": (tasks.make_array, 20 * MB, 1.5)}, "a")
    assert isinstance(arr, np.ndarray) and arr.shape == (20 * MB // 8,) and arr.dtype == np.float64
    np.testing.assert_array_equal(arr, np.full(20 * MB // 8, 1.5))
    assert arr.flags.writeable and not arr.flags.owndata
    arr += 1.0  # writable in place
    assert arr[-1] == 2.5
    blob = manager({"x": (tasks.huge_bytes, 3 * MB)}, "x")  # in-band: the pickle itself goes in parts
    assert blob == b"x" * (3 * MB)
    assert run_keys(rclient, jobname) == []


def test_parts_of_a_released_intermediate_are_deleted_while_the_run_goes_on(
    manager: RedisParam,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
    jobname: str,
    tmp_path: pathlib.Path,
) -> None:
    cli_workers(1)
    started = tmp_path / "c-started"
    nbytes = 10 * MB
    dsk = {
        "a": (tasks.make_array, nbytes, 1.0),
        "b": (tasks.slow_array_sum, "a", 0.3),
        "c": (tasks.touch_then_slow_inc, str(started), "b", 1.5),
    }
    compute = Background(lambda: manager(dsk, "c", fuse_chains=False))
    seen: set[bytes] = set()
    deadline = time.monotonic() + 20
    while not started.exists():
        assert time.monotonic() < deadline, "c never started"
        seen.update(part_fields(data_fields(rclient, jobname)))
        time.sleep(0.01)
    assert len(seen) == nparts(nbytes)  # a was stored as parts (seen while b ran)
    # c runs for 1.5 s: by now b finished, a was released and its parts deleted; b's value is still there
    assert wait_until(lambda: not part_fields(data_fields(rclient, jobname)), 1.0)
    assert compute.thread.is_alive()
    assert len(data_fields(rclient, jobname)) == 1
    assert compute.join() == nbytes // 8 + 1
    assert run_keys(rclient, jobname) == []


@pytest.mark.slow
def test_a_value_over_512_mb_goes_through(
    manager: RedisParam, cli_workers: Callable[..., CliWorkers], rclient: redis.Redis, jobname: str
) -> None:
    """One Redis string holds at most 512 MB: a 560 MB result is stored in parts and read back by its dependent."""
    cli_workers(1)
    n = 70_000_000
    rclient.config_resetstat()
    started = time.monotonic()
    dsk = {"big": (tasks.make_array, 8 * n, 1.0), "total": (tasks.array_sum, "big")}
    assert manager(dsk, "total", fuse_chains=False) == float(n)
    assert time.monotonic() - started < 30
    stats = rclient.info("stats")
    assert int(stats["total_net_input_bytes"]) > 8 * n  # written to Redis...
    assert int(stats["total_net_output_bytes"]) > 8 * n  # ...and read back by the task that sums it
    assert run_keys(rclient, jobname) == []


def test_redo_keeps_a_large_intermediate(
    manager: RedisParam,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
    jobname: str,
    tmp_path: pathlib.Path,
) -> None:
    cli_workers(1)
    flag, calls = tmp_path / "flag", tmp_path / "calls"
    flag.write_text("fail")
    nbytes = 6 * MB
    dsk = {
        "a": (tasks.counted_make_array, str(calls), nbytes, 2.0),
        "b": (tasks.array_sum_unless_flagged, str(flag), "a"),
    }
    with pytest.raises(RuntimeError, match="flagged") as info:
        manager(dsk, "b", fuse_chains=False)
    assert calls.read_text().split() == ["made"]
    (kept,) = list(rclient.scan_iter(match=f"drp:{{{jobname}}}:redo:*"))
    try:
        assert len(part_fields(cast(list[bytes], rclient.hkeys(kept)))) == nparts(nbytes)  # a's parts are kept
        flag.unlink()
        assert manager(dsk, "b", redo=info.value, fuse_chains=False) == 2.0 * (nbytes // 8)
        assert calls.read_text().split() == ["made"]  # a was not computed again
        assert run_keys(rclient, jobname) == []
    finally:
        rclient.delete(kept)


def test_a_large_literal_is_uploaded_as_parts(
    redis_address: RedisAddress,
    cli_workers: Callable[..., CliWorkers],
    rclient: redis.Redis,
    jobname: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDISPARAM_SECRET", SECRET)  # signed: the workers check the parts' tag
    cli_workers(1)
    big = np.arange(5 * MB // 8, dtype="f8")
    dsk: dict[Hashable, Any] = {"big": big, "s": (tasks.array_sum, "big")}
    url = redis_address.to_url(show_password=True)
    with RedisParam(jobname=jobname, is_worker=False, url=url, secret=SECRET) as param:
        with FieldsWhenSent(rclient, jobname) as sent:
            assert param(dsk, "s") == float(big.sum())
    fields = sent.fields["s"]  # when s was sent: the literal's reference and its parts
    assert len(part_fields(fields)) == nparts(big.nbytes) == 2
    assert len(fields) == 3
    assert run_keys(rclient, jobname) == []


# ---------------------------------------------------------------------- worker memory
RSS_SCRIPT = """
import os, sys
from dask_redisparam.worker.memory import keep_heap
if sys.argv[1] == "reuse":
    assert keep_heap() is True
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = rss()
block = b"x" * (200 << 20)
above = [bytearray(1 << 20) for _ in range(4)]  # allocated after it: the freed block is not the heap's top
del block
print(rss() - before)
"""


def test_a_large_enough_value_makes_a_worker_keep_its_heap() -> None:
    pool, calls = BufferPool(keep=1), []
    pool.on_large = (100 * MB, lambda: calls.append(1))
    pool.take(10 * MB)
    assert calls == []
    pool.note(100 * MB)
    pool.take(200 * MB)
    assert calls == [1]  # once
    saved = bulk.POOL.on_large
    try:
        bulk.POOL.on_large = (2 * MB, lambda: calls.append(2))
        pack(dumps_result(np.zeros(3 * MB // 8)), None, "job")  # a value written counts too
        assert calls == [1, 2]
    finally:
        bulk.POOL.on_large = saved


def test_keep_heap_keeps_freed_blocks() -> None:
    def grown(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, mode], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    assert grown("reuse") > 150 * MB  # freed, but kept by glibc for the next large value
    assert grown("default") < 50 * MB  # glibc's default: a large block goes back to the system when freed


def test_the_buffer_pool_reuses_a_buffer_once_its_value_is_gone() -> None:
    pool, arr = BufferPool(keep=2), np.arange(3 * MB // 8, dtype="f8")
    sealed, parts = pack(dumps_result(arr), None, "job")
    stored = {name: bytes(view) for name, view in parts}

    def read_parts(targets: Sequence[Part]) -> bool:
        for name, view in targets:
            view[:] = stored[name]
        return True

    ref = decode_ref(unseal_value(sealed, None, "job"))
    first = load_with(pool, ref, read_parts)
    second = load_with(pool, ref, read_parts)  # the first value is alive: another buffer
    assert not np.shares_memory(first, second)
    address = first.__array_interface__["data"][0]
    del first
    third = load_with(pool, ref, read_parts)  # the first one's buffer, free again
    assert third.__array_interface__["data"][0] == address
    np.testing.assert_array_equal(third, arr)
    assert third.flags.writeable
    del second, third
    pool.take(10 * MB)  # too large for the kept ones: a new buffer, and only ``keep`` buffers stay
    assert len(pool._buffers) == 2


def test_receive_buffers_are_private_memory() -> None:
    """Private anonymous maps take transparent huge pages; shared ones (shmem) do not, and fault 4 KiB at a time."""
    buffer = new_map(4 * MB)
    start = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    with open("/proc/self/maps") as maps:
        perms = {int(line.split("-")[0], 16): line.split()[1] for line in maps}
    assert perms[start] == "rw-p"


def load_with(pool: BufferPool, ref: Ref, read_parts: Callable[[Sequence[Part]], bool]) -> Any:
    saved = bulk.POOL
    bulk.POOL = pool
    try:
        return load(ref, None, b"job", read_parts)
    finally:
        bulk.POOL = saved


def child_cmdlines(pid: int) -> list[list[str]]:
    """The command lines of the child processes of ``pid`` (from /proc)."""
    out = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append((stat.parent / "cmdline").read_bytes().decode().split("\0")[:-1])
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
    return out


def test_release_memory_flag(redis_address: RedisAddress, jobname: str, cli_workers: Callable[..., CliWorkers]) -> None:
    done = subprocess.run(["dask-redisparam-worker", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--release-memory" in done.stdout
    for extra, passed in (((), False), (("--release-memory",), True)):
        workers = cli_workers(1, *extra, wait=False)
        wait_for_workers(redis_address, jobname, 1)
        (child,) = child_cmdlines(workers.process.pid)  # the supervisor's one worker process
        assert ("--release-memory" in child) is passed
        assert workers.stop() == 0
