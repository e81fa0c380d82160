"""``repr`` shows ``secret='*****'`` whenever messages are signed, wherever the secret came from, and never the secret.

``secret=None`` only when nothing is signed. Started params are checked against what they really do: the signer
they picked at ``start()`` (a real redis-server; workers where the param starts local ones).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from dask_redisparam import RedisParam
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.config.settings import Settings
from dask_redisparam.wire.signing import SECRET_ENV, SECRET_FILE_ENV

SECRET = "s3cret-" + "q" * 24
MASKED = "secret='*****'"


@pytest.fixture(autouse=True)
def no_ambient_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    yield


def check(text: str, signed: bool) -> None:
    assert SECRET not in text
    assert (MASKED if signed else "secret=None") in text, text
    assert (MASKED if not signed else "secret=None") not in text, text


def test_settings_repr_masks_a_secret_from_the_environment(tmp_path: pathlib.Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    check(repr(Settings(environ={})), signed=False)
    check(repr(Settings(secret=SECRET, environ={})), signed=True)
    check(repr(Settings(environ={SECRET_ENV: SECRET})), signed=True)
    check(repr(Settings(environ={SECRET_FILE_ENV: str(secret_file)})), signed=True)
    check(repr(Settings(environ={SECRET_ENV: SECRET}).replace(retries=2)), signed=True)
    check(repr(Settings(environ={SECRET_ENV: ""})), signed=False)  # empty means unset


@pytest.mark.parametrize("source", ["setting", "env", "file"])
def test_param_repr_is_masked_for_every_source(
    source: str, redis_address: RedisAddress, jobname: str, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    kwargs: dict[str, object] = {}
    if source == "setting":
        kwargs["secret"] = SECRET
    elif source == "env":
        monkeypatch.setenv(SECRET_ENV, SECRET)
    else:
        (tmp_path / "secret").write_text(SECRET)
        monkeypatch.setenv(SECRET_FILE_ENV, str(tmp_path / "secret"))
    param = RedisParam(jobname=jobname, is_worker=False, url=redis_address.to_url(show_password=True), **kwargs)
    check(repr(param), signed=True)
    with param:
        assert param._signer is not None  # the messages are signed
        check(repr(param), signed=True)


def test_param_repr_without_any_secret(redis_address: RedisAddress, jobname: str) -> None:
    param = RedisParam(jobname=jobname, is_worker=False, url=redis_address.to_url(show_password=True))
    check(repr(param), signed=False)
    with param:
        assert param._signer is None
        check(repr(param), signed=False)


def test_param_repr_with_the_embedded_servers_generated_secret() -> None:
    with RedisParam(workers=1) as param:
        assert param.secret is None and param._signer is not None  # generated at start
        check(repr(param), signed=True)
        assert "state='up'" in repr(param)
