"""Fixtures shared by the whole test suite: one real redis-server per session, on a private Unix socket."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from dask_redisparam.address import RedisAddress
from dask_redisparam.server import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A started redis-server for the session; a missing binary is an error (ServerError), never a skip."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_address(redis_server: EmbeddedRedis) -> RedisAddress:
    return redis_server.address


@pytest.fixture
def jobname() -> str:
    """A job name unique to the test, so that tests sharing the server never see each other's keys."""
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def rclient(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis(unix_socket_path=redis_server.socket_path, password=redis_server.address.password)
    try:
        yield client
    finally:
        client.close()
