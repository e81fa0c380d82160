"""An ACL user that may touch the job's keys but lacks a command the job sends fails at start, at once, with an error
naming the commands, the user and the server: the manager (also one with local workers) and the worker daemon.

The rule is the documented one (``docs/security.md``, as ``tests/test_auth.py`` reads it) minus one command; the list
of commands checked is what the backend sends.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from dask_redisparam import PermissionDenied, RedisParam
from dask_redisparam.backend import Backend
from dask_redisparam.backend.commands import CLUSTER_COMMANDS, JOB_COMMANDS, WAIT_COMMAND
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.worker.restarts import EXIT_CONFIG
from dask_redisparam.worker.server import EmbeddedRedis
from tests import tasks
from tests.conftest import CliWorkers, left_keys, wait_for_workers
from tests.test_auth import _acl_refusals, _backend_commands, _rules_for


@pytest.fixture
def users(redis_server: EmbeddedRedis, rclient: redis.Redis) -> Iterator[list[str]]:
    """Names of the ACL users a test made; deleted at its end."""
    made: list[str] = []
    yield made
    for name in made:
        rclient.execute_command("ACL", "DELUSER", name)  # type: ignore[no-untyped-call]


def _user(
    redis_server: EmbeddedRedis, rclient: redis.Redis, users: list[str], jobname: str, without: set[str]
) -> RedisAddress:
    """A user with the documented rule for ``jobname`` but the commands ``without``; its address."""
    name, password = f"drp-{uuid.uuid4().hex[:8]}", secrets.token_hex(12)
    rules = [rule for rule in _rules_for(jobname, password) if not (rule.startswith("+") and rule[1:] in without)]
    assert len(rules) == len(_rules_for(jobname, password)) - len(without)
    rclient.execute_command("ACL", "SETUSER", name, *rules)  # type: ignore[no-untyped-call]
    users.append(name)
    assert redis_server.socket_path is not None
    return RedisAddress(path=redis_server.socket_path, username=name, password=password)


def _check(address: RedisAddress, jobname: str) -> None:
    backend = Backend.connect(address)
    try:
        backend.check_job_access(jobname)
    finally:
        backend.close()


def test_the_checked_commands_are_what_the_backend_sends() -> None:
    # WAIT: checked with replicas > 0; the cluster's: for a cluster address
    assert set(JOB_COMMANDS) | set(CLUSTER_COMMANDS) | set(WAIT_COMMAND) == _backend_commands()
    assert not set(JOB_COMMANDS) & set(CLUSTER_COMMANDS)


def test_the_documented_rule_passes_and_leaves_nothing(
    redis_server: EmbeddedRedis, rclient: redis.Redis, users: list[str], jobname: str
) -> None:
    address = _user(redis_server, rclient, users, jobname, set())
    rclient.execute_command("ACL", "LOG", "RESET")  # type: ignore[no-untyped-call]
    started = time.monotonic()
    _check(address, jobname)
    assert time.monotonic() - started < 1.0
    assert _acl_refusals(rclient, users[0]) == []
    assert left_keys(rclient, jobname) == []  # the scratch key is gone


def test_each_missing_command_is_named(
    redis_server: EmbeddedRedis, rclient: redis.Redis, users: list[str], jobname: str
) -> None:
    for command in JOB_COMMANDS:
        address = _user(redis_server, rclient, users, jobname, {command})
        with pytest.raises(PermissionDenied) as info:
            _check(address, jobname)
        message = str(info.value)
        assert f"Redis at {address.describe()} denies user {address.username!r} the command" in message, message
        named = re.search(r"the command\(s\) (.+?) that job", message) or re.search(r"the command (\S+) ", message)
        assert named is not None and named.group(1) == command.upper(), (command, message)
        assert address.password is not None and address.password not in message
        if command != "ping":  # PING fails at connect, before the check of the job
            assert f"that job {jobname!r} uses: add +{command} to the user's ACL" in message


def test_a_manager_with_local_workers_fails_at_once(
    redis_server: EmbeddedRedis, rclient: redis.Redis, users: list[str], jobname: str
) -> None:
    address = _user(redis_server, rclient, users, jobname, {"evalsha", "blmove"})
    param = RedisParam(2, jobname=jobname, url=address.to_url(show_password=True))
    started = time.monotonic()
    with pytest.raises(PermissionDenied) as info:
        param.start()
    assert time.monotonic() - started < 5.0  # not "no local worker ... started in 60 s"
    message = str(info.value)
    assert f"Redis at {address.describe()} denies user {address.username!r} the command(s) " in message
    assert "BLMOVE" in message and "EVALSHA" in message and "+blmove" in message and "+evalsha" in message
    assert not param.is_up
    assert rclient.smembers(f"drp:{{{jobname}}}:workers") == set()  # no worker was started


def test_a_worker_daemon_exits_naming_the_command(
    redis_server: EmbeddedRedis, rclient: redis.Redis, users: list[str], jobname: str
) -> None:
    address = _user(redis_server, rclient, users, jobname, {"blmove"})
    workers = CliWorkers(address, jobname, 2)
    started = time.monotonic()
    try:
        code = workers.process.wait(30)
    finally:
        workers.stop()
    log = workers.stderr()
    workers.log.close()
    assert code == EXIT_CONFIG, log  # not restarted: a configuration that cannot work
    assert time.monotonic() - started < 15.0
    assert f"denies user {address.username!r} the command(s) BLMOVE that job {jobname!r} uses" in log, log
    assert "Traceback" not in log, log


def test_a_worker_that_loses_a_command_while_serving_exits(
    redis_server: EmbeddedRedis, rclient: redis.Redis, users: list[str], jobname: str
) -> None:
    address = _user(redis_server, rclient, users, jobname, set())
    workers = CliWorkers(address, jobname, 1)
    try:
        wait_for_workers(redis_server.address, jobname, 1)
        with RedisParam(jobname=jobname, is_worker=False, url=redis_server.url) as param:
            assert param.map(tasks.inc, range(3)) == [1, 2, 3]
        rclient.execute_command("ACL", "SETUSER", users[0], "-blmove")  # type: ignore[no-untyped-call]
        code = workers.process.wait(30)  # its next claim is refused
    finally:
        workers.stop()
    log = workers.stderr()
    workers.log.close()
    assert code == EXIT_CONFIG, log
    assert f"Redis at {address.describe()} denies user {address.username!r} the command BLMOVE (NOPERM" in log, log
    assert "Traceback" not in log, log


def test_wait_is_checked_only_for_replicas(
    redis_server: EmbeddedRedis, rclient: redis.Redis, users: list[str], jobname: str
) -> None:
    """A rule without ``+wait`` serves jobs without ``replicas``; a worker with ``replicas`` > 0 is told to add it."""
    address = _user(redis_server, rclient, users, jobname, {"wait"})
    _check(address, jobname)
    backend = Backend.connect(address)
    try:
        with pytest.raises(PermissionDenied, match=r"the command\(s\) WAIT .*\+wait"):
            backend.check_job_access(jobname, wait=True)
    finally:
        backend.close()
