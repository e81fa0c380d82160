"""Tests of :mod:`dask_redisparam.config.settings`: validation, server resolution, repr masking, replace, to_env."""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import dask.config
import pytest

from dask_redisparam.config import settings as settings_module
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.config.settings import THRESHOLDS, Settings, default_worker_count
from dask_redisparam.errors import ConfigurationError

SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def _no_dask_config() -> Iterator[None]:
    """Hide any ``redisparam.*`` keys of the user's dask config."""
    with dask.config.set({"redisparam": {}}):
        yield


def make(*args: Any, environ: Any = None, **kwargs: Any) -> Settings:
    return Settings(*args, environ={} if environ is None else environ, **kwargs)


def url_of(s: Settings) -> str | None:
    return None if s.address is None else s.address.to_url(show_password=True)


# -- defaults ------------------------------------------------------------------------------------------------


def test_defaults() -> None:
    s = make()
    assert s.workers == default_worker_count()
    assert re.fullmatch(r"[0-9a-f]{16}", s.jobname)
    assert s.is_worker is None
    assert (s.host, s.port, s.password, s.username, s.url, s.address) == (None,) * 6
    assert s.queue_multiplier == 2.0 and isinstance(s.queue_multiplier, float)
    assert s.stop_on_error is True and s.log is False and s.progressbar is False
    assert (s.timeout, s.logdir, s.resultdir, s.rng_seed, s.tasks) == (None,) * 5
    assert (s.threshold, s.threshold_level) == ("INFO", 20)
    assert (s.allowed_failures, s.retries) == (3, 0)
    assert (s.heartbeat_interval, s.heartbeat_ttl) == (1.0, 10.0)


def test_field_order() -> None:
    names = [f.name for f in dataclasses.fields(Settings)]
    assert names[:23] == [
        "workers", "jobname", "is_worker", "host", "port", "password", "username", "url",
        "queue_multiplier", "stop_on_error", "timeout", "log", "threshold", "logdir", "resultdir", "resultdir_all",
        "progressbar", "rng_seed", "tasks", "allowed_failures", "retries", "heartbeat_interval",
        "heartbeat_ttl",
    ]  # fmt: skip
    assert "address" in names


@pytest.mark.parametrize(("is_worker", "expected"), [(None, "cpus"), (False, 1000), (True, 1)])
def test_default_workers_follow_is_worker(is_worker: bool | None, expected: Any) -> None:
    s = make(is_worker=is_worker)
    assert s.workers == (default_worker_count() if expected == "cpus" else expected)


@pytest.mark.parametrize("is_worker", [None, False, True])
def test_explicit_workers_kept(is_worker: bool | None) -> None:
    assert make(7, is_worker=is_worker).workers == 7


def test_default_worker_count_uses_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_worker_count() == 3
    assert make().workers == 3


def test_default_worker_count_without_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert default_worker_count() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert default_worker_count() == 1


def test_jobname_default_is_fresh_and_env_is_not_read() -> None:
    a, b = make(), make(environ={"REDISPARAM_JOBNAME": "from-env"})
    assert a.jobname != b.jobname
    assert b.jobname != "from-env"
    assert make(jobname="job-1").jobname == "job-1"


@pytest.mark.parametrize("value", ["Debug", "debug", "DEBUG"])
def test_threshold_is_case_insensitive(value: str) -> None:
    s = make(threshold=value)
    assert (s.threshold, s.threshold_level) == ("DEBUG", 10)


@pytest.mark.parametrize(("name", "level"), list(THRESHOLDS.items()))
def test_threshold_levels(name: str, level: int) -> None:
    assert make(threshold=name.lower()).threshold_level == level
    assert level == {"TRACE": 5, "DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "FATAL": 50}[name]


def test_valid_values_are_normalised() -> None:
    s = make(queue_multiplier=3, timeout=5, heartbeat_interval=2, heartbeat_ttl=3, tasks=0, rng_seed=0)
    assert (s.queue_multiplier, s.timeout, s.heartbeat_interval, s.heartbeat_ttl) == (3.0, 5.0, 2.0, 3.0)
    assert all(isinstance(v, float) for v in (s.queue_multiplier, s.timeout, s.heartbeat_ttl))
    assert (s.tasks, s.rng_seed) == (0, 0)
    assert make(tasks=4, allowed_failures=0, retries=2, is_worker=False).tasks == 4


def test_frozen_and_unknown_keyword() -> None:
    s = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.workers = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        Settings(bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Settings(1, "job")  # type: ignore[call-arg]


# -- invalid values ------------------------------------------------------------------------------------------

INVALID = [
    ("workers", 0), ("workers", -1), ("workers", True), ("workers", 1.5), ("workers", "2"),
    ("jobname", "a:b"), ("jobname", ""), ("jobname", "a b"), ("jobname", 5),
    ("is_worker", 1), ("is_worker", "yes"), ("is_worker", 0),
    ("queue_multiplier", -1), ("queue_multiplier", 0), ("queue_multiplier", math.inf),
    ("queue_multiplier", math.nan), ("queue_multiplier", "2"), ("queue_multiplier", True),
    ("stop_on_error", 1), ("stop_on_error", None), ("log", "yes"), ("progressbar", 0),
    ("timeout", 0), ("timeout", -1), ("timeout", "10"), ("timeout", math.inf),
    ("threshold", "VERBOSE"), ("threshold", 20), ("threshold", "WARNING"),
    ("rng_seed", -1), ("rng_seed", 1.5), ("rng_seed", True),
    ("tasks", -1), ("tasks", 2.5), ("tasks", False),
    ("allowed_failures", -1), ("allowed_failures", None), ("retries", -2), ("retries", 1.0),
    ("heartbeat_interval", 0), ("heartbeat_interval", -1.0), ("heartbeat_ttl", 0.5), ("heartbeat_ttl", 1.0),
    ("host", ""), ("host", 5), ("port", "x"), ("port", 0), ("port", 70000), ("username", 7),
    ("url", "http://example"), ("url", 6379),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_invalid_value_names_setting_and_value(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        make(**{name: value})
    message = str(info.value)
    assert name in message
    assert repr(value) in message or str(value) in message


def test_queue_multiplier_message() -> None:
    with pytest.raises(ConfigurationError, match=r"^queue_multiplier=-1 must be a number > 0$"):
        make(queue_multiplier=-1)


def test_heartbeat_ttl_must_exceed_interval() -> None:
    with pytest.raises(ConfigurationError, match=r"heartbeat_ttl=4 must be a number > heartbeat_interval=5"):
        make(heartbeat_interval=5, heartbeat_ttl=4)
    assert make(heartbeat_interval=5, heartbeat_ttl=5.5).heartbeat_ttl == 5.5


@pytest.mark.parametrize("password", [5, ["x"]])
def test_bad_password_type_is_not_shown(password: Any) -> None:
    with pytest.raises(ConfigurationError, match="password") as info:
        make(host="h", password=password)
    assert repr(password) not in str(info.value)


# -- directories ---------------------------------------------------------------------------------------------


def test_logdir_requires_log(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigurationError, match=r"logdir=.* requires log=True"):
        make(logdir=tmp_path)
    s = make(logdir=tmp_path, log=True)
    assert s.logdir == str(tmp_path) and isinstance(s.logdir, str)


@pytest.mark.parametrize("name", ["logdir", "resultdir"])
def test_directory_must_exist(name: str, tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "missing"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for bad in (missing, a_file, str(missing)):
        with pytest.raises(ConfigurationError, match=rf"^{name}=.*is not an existing directory"):
            make(log=True, **{name: bad})
    with pytest.raises(ConfigurationError, match=name):
        make(log=True, **{name: 5})
    assert getattr(make(log=True, **{name: str(tmp_path)}), name) == str(tmp_path)


@pytest.mark.parametrize("name", ["logdir", "resultdir"])
def test_unwritable_directory_rejected(name: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if p == str(tmp_path) else real_access(p, mode))
    with pytest.raises(ConfigurationError, match=rf"^{name}=.*is not a writable directory"):
        make(log=True, **{name: tmp_path})


# -- server resolution ---------------------------------------------------------------------------------------

ENV_ALL = {
    "REDISPARAM_URL": "redis://envurl:2",
    "REDISPARAM_HOST": "rphost",
    "REDISPARAM_PORT": "3",
    "REDIS_HOST": "rhost",
    "REDIS_PORT": "4",
}
CONFIG_ALL = {"redisparam.url": "redis://cfgurl:5", "redisparam.host": "cfghost", "redisparam.port": 6}


@pytest.mark.parametrize(
    ("args", "env_drop", "config_drop", "expected"),
    [
        ({"host": "arg", "port": 1, "url": "redis://argurl:9"}, [], [], "redis://arg:1/0"),
        ({"url": "redis://argurl:9"}, [], [], "redis://argurl:9/0"),
        ({}, [], [], "redis://envurl:2/0"),
        ({}, ["REDISPARAM_URL"], [], "redis://rphost:3/0"),
        ({}, ["REDISPARAM_URL", "REDISPARAM_HOST", "REDISPARAM_PORT"], [], "redis://rhost:4/0"),
        ({}, list(ENV_ALL), [], "redis://cfgurl:5/0"),
        ({}, list(ENV_ALL), ["redisparam.url"], "redis://cfghost:6/0"),
        ({}, list(ENV_ALL), list(CONFIG_ALL), None),
    ],
)
def test_precedence_chain(
    args: dict[str, Any], env_drop: list[str], config_drop: list[str], expected: str | None
) -> None:
    environ = {k: v for k, v in ENV_ALL.items() if k not in env_drop}
    config = {k: (None if k in config_drop else v) for k, v in CONFIG_ALL.items()}
    with dask.config.set(config):
        assert url_of(make(environ=environ, **args)) == expected


def test_explicit_fields_override_url_argument() -> None:
    s = make(url="redis://u:pw@h:1/2", password="x", port=7)
    assert url_of(s) == "redis://u:x@h:7/2"
    assert url_of(make(url="redis://h:1", host="k")) == "redis://k:1/0"
    assert url_of(make(url="rediss://h:1", username="bob")) == "rediss://bob@h:1/0"


def test_explicit_password_overrides_lower_sources() -> None:
    s = make(password="x", environ={"REDISPARAM_URL": "redis://:envpw@h:1", "REDIS_PASSWORD": "y"})
    assert url_of(s) == "redis://:x@h:1/0"


def test_each_env_field_resolved_independently() -> None:
    s = make(environ={"REDISPARAM_HOST": "h", "REDIS_PASSWORD": "p", "REDIS_PORT": "7000"})
    assert url_of(s) == "redis://:p@h:7000/0"
    s = make(environ={"REDISPARAM_PASSWORD": "a", "REDIS_PASSWORD": "b", "REDIS_HOST": "h", "REDIS_USERNAME": "u"})
    assert url_of(s) == "redis://u:a@h:6379/0"


def test_lower_source_credentials_fill_in_missing_ones() -> None:
    """Each credential resolves on its own (as R): a location from one source, a password from a lower one."""
    with dask.config.set({"redisparam.password": "cfg"}):
        assert url_of(make(environ={"REDIS_HOST": "h"})) == "redis://:cfg@h:6379/0"
    assert url_of(make(environ={"REDISPARAM_URL": "redis://h:1", "REDIS_PASSWORD": "p"})) == "redis://:p@h:1/0"
    assert url_of(make(host="h", environ={"REDISPARAM_PASSWORD": "secret"})) == "redis://:secret@h:6379/0"
    # but a credential that the location's own source sets is not replaced by a lower one
    assert url_of(make(environ={"REDISPARAM_URL": "redis://:own@h:1", "REDIS_PASSWORD": "p"})) == "redis://:own@h:1/0"


def test_higher_credentials_override_config_location() -> None:
    with dask.config.set({"redisparam.url": "redis://:cfgpw@cfg:5"}):
        assert url_of(make(environ={"REDIS_PASSWORD": "envpw"})) == "redis://:envpw@cfg:5/0"
        assert url_of(make()) == "redis://:cfgpw@cfg:5/0"


def test_port_wins_over_url_argument_port_and_host_defaults() -> None:
    assert url_of(make(host="h")) == "redis://h:6379/0"
    assert url_of(make(port=7001)) == "redis://127.0.0.1:7001/0"
    assert url_of(make(port="7002")) == "redis://127.0.0.1:7002/0"
    assert url_of(make(environ={"REDIS_HOST": "h"})) == "redis://h:6379/0"
    assert url_of(make(environ={"REDISPARAM_PORT": "7003"})) == "redis://127.0.0.1:7003/0"


def test_empty_env_values_are_unset() -> None:
    env = {"REDISPARAM_URL": "", "REDISPARAM_HOST": "", "REDIS_HOST": "h", "REDISPARAM_PASSWORD": ""}
    assert url_of(make(environ=env)) == "redis://h:6379/0"
    assert make(environ=dict.fromkeys(ENV_ALL, "")).address is None


def test_empty_password_argument_is_unset() -> None:
    s = make(host="h", password="")
    assert s.password is None and s.address is not None and s.address.password is None


@pytest.mark.parametrize(
    ("args", "environ", "config"),
    [
        ({"password": SECRET}, {}, {}),
        ({}, {"REDIS_PASSWORD": SECRET}, {}),
        ({}, {"REDISPARAM_PASSWORD": SECRET}, {}),
        ({}, {}, {"redisparam.password": SECRET}),
    ],
)
def test_password_without_server_is_an_error(
    args: dict[str, Any], environ: dict[str, str], config: dict[str, str]
) -> None:
    with (
        dask.config.set(config),
        pytest.raises(ConfigurationError, match="password given.*no Redis server") as info,
    ):
        make(environ=environ, **args)
    assert SECRET not in str(info.value)


def test_username_without_server_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="username given.*no Redis server"):
        make(username="bob")


def test_kubernetes_redis_port_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match=r"^REDIS_PORT='tcp://10\.0\.0\.1:6379' is not an integer port"):
        make(environ={"REDIS_PORT": "tcp://10.0.0.1:6379"})
    with pytest.raises(ConfigurationError, match=r"^REDIS_PORT="):
        make(environ={"REDIS_HOST": "redis", "REDIS_PORT": "tcp://10.0.0.1:6379"})


def test_redisparam_port_wins_over_redis_port() -> None:
    env = {"REDIS_HOST": "redis", "REDIS_PORT": "tcp://10.0.0.1:6379", "REDISPARAM_PORT": "7000"}
    assert url_of(make(environ=env)) == "redis://redis:7000/0"
    env = {"REDIS_PORT": "tcp://10.0.0.1:6379", "REDISPARAM_URL": "redis://h:1"}
    assert url_of(make(environ=env)) == "redis://h:1/0"
    assert url_of(make(url="redis://a:2", environ={"REDIS_PORT": "tcp://x:1"})) == "redis://a:2/0"


@pytest.mark.parametrize(
    ("args", "environ", "config", "name"),
    [
        ({}, {"REDISPARAM_PORT": "abc"}, {}, "REDISPARAM_PORT"),
        ({"port": "abc"}, {}, {}, "port"),
        ({}, {}, {"redisparam.port": "abc"}, "redisparam.port"),
    ],
)
def test_bad_port_names_its_source(
    args: dict[str, Any], environ: dict[str, str], config: dict[str, Any], name: str
) -> None:
    with dask.config.set(config), pytest.raises(ConfigurationError, match=rf"^{re.escape(name)}='abc'"):
        make(environ=environ, **args)


@pytest.mark.parametrize(("environ", "config", "name"), [
    ({"REDISPARAM_URL": f"http://u:{SECRET}@h"}, {}, "REDISPARAM_URL"),
    ({}, {"redisparam.url": f"http://u:{SECRET}@h"}, "redisparam.url"),
    ({}, {"redisparam.url": 5}, "redisparam.url"),
])  # fmt: skip
def test_bad_url_names_its_source_and_masks_password(
    environ: dict[str, str], config: dict[str, Any], name: str
) -> None:
    with dask.config.set(config), pytest.raises(ConfigurationError, match=rf"^{re.escape(name)}") as info:
        make(environ=environ)
    assert SECRET not in str(info.value)


def test_dask_config_url() -> None:
    with dask.config.set({"redisparam.url": "redis://cfg:6390/1"}):
        s = make()
    assert s.address == RedisAddress(host="cfg", port=6390, db=1)
    assert make().address is None  # read at construction only


def test_unix_socket_url() -> None:
    s = make(url="unix:///tmp/redis.sock?db=2")
    assert s.address is not None and (s.address.path, s.address.db) == ("/tmp/redis.sock", 2)


def test_explicit_host_replaces_unix_socket() -> None:
    s = make(url="unix:///tmp/redis.sock?db=2", host="h")
    assert s.address is not None and s.address.path is None
    assert (s.address.describe(), s.address.db) == ("h:6379", 2)


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDISPARAM_HOST", "REDISPARAM_PORT", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDISPARAM_URL", "redis://fromenv:6400")
    assert url_of(Settings()) == "redis://fromenv:6400/0"


def test_environ_not_in_eq_or_repr() -> None:
    a = Settings(jobname="j", workers=2, environ={"REDISPARAM_URL": "redis://h:1", "OTHER": "zzz-unused"})
    b = Settings(jobname="j", workers=2, environ={"REDISPARAM_URL": "redis://h:1"})
    assert a == b and hash(a) == hash(b)
    assert "zzz-unused" not in repr(a) and "environ" not in repr(a)
    assert a != Settings(jobname="j", workers=2, environ={"REDISPARAM_URL": "redis://h:2"})


# -- repr ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "environ"),
    [
        ({"host": "h", "port": 1, "password": SECRET}, {}),
        ({"url": f"redis://alice:{SECRET}@h:1"}, {}),
        ({}, {"REDISPARAM_URL": f"redis://:{SECRET}@h:1"}),
        ({}, {"REDIS_HOST": "h", "REDIS_PORT": "1", "REDIS_PASSWORD": SECRET}),
    ],
)
def test_repr_and_str_mask_password(args: dict[str, Any], environ: dict[str, str]) -> None:
    s = make(4, jobname="abc", environ=environ, **args)
    assert s.address is not None and s.address.password == SECRET
    for text in (repr(s), str(s), repr(s.replace(retries=1))):
        assert SECRET not in text
        assert text.startswith(f"Settings(workers=4, jobname='abc', is_worker=None, address={s.address.to_url()!r}")
        assert re.search(r"address='redis://[a-z]*:[^@']+@h:1/0'", text)


def test_repr_lists_fields() -> None:
    text = repr(make(3, jobname="abc", timeout=2))
    assert text.startswith("Settings(workers=3, jobname='abc', is_worker=None, address=None, queue_multiplier=2.0")
    assert "timeout=2.0" in text and "heartbeat_ttl=10.0, redo_ttl=3600.0" in text and text.endswith("secret=None)")


# -- replace -------------------------------------------------------------------------------------------------


def test_replace_returns_validated_copy() -> None:
    s = make(2)
    t = s.replace(retries=4, threshold="warn")
    assert (t.retries, t.threshold, t.jobname, t.workers) == (4, "WARN", s.jobname, 2)
    assert (s.retries, s.threshold) == (0, "INFO")
    assert s.replace() == s and s.replace() is not s
    assert s.replace(jobname="other").jobname == "other"
    with pytest.raises(ConfigurationError, match="retries=-1"):
        s.replace(retries=-1)
    with pytest.raises(ConfigurationError, match="logdir"):
        s.replace(logdir=os.getcwd())
    with pytest.raises(TypeError):
        s.replace(bogus=1)
    with pytest.raises(TypeError):
        s.replace(address=None)


def test_replace_keeps_address_without_reading_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = make(environ={"REDISPARAM_URL": f"redis://:{SECRET}@h:1"})
    monkeypatch.setenv("REDISPARAM_URL", "redis://elsewhere:9")
    with dask.config.set({"redisparam.url": "redis://cfg:8"}):
        t = s.replace(retries=1)
        assert t.address == s.address
        assert url_of(s.replace(password="x")) == "redis://:x@h:1/0"
        assert url_of(s.replace(url="redis://new:2")) == "redis://new:2/0"
        assert url_of(s.replace(port=5)) == "redis://127.0.0.1:5/0"
    assert make().replace(retries=1).address is None


def test_replace_resolves_like_the_constructor() -> None:
    environ = {"REDIS_HOST": "h", "REDIS_PASSWORD": "p"}
    s = make(environ=environ)
    assert s.replace(port=7).address == make(port=7, environ=environ).address
    assert s.replace(host="k").address == make(host="k", environ=environ).address
    with pytest.raises(ConfigurationError, match="port"):
        s.replace(port="x")


def test_replace_defaulted_workers_follow_is_worker() -> None:
    assert make().replace(is_worker=False).workers == 1000
    assert make(is_worker=False).replace(is_worker=True).workers == 1
    assert make(5).replace(is_worker=False).workers == 5
    assert make(is_worker=False).replace(retries=1).workers == 1000


# -- to_env --------------------------------------------------------------------------------------------------


def test_to_env_carries_password_and_jobname() -> None:
    s = make(jobname="job-7", url=f"redis://alice:{SECRET}@h:1/3")
    env = s.to_env()
    assert env == {"REDISPARAM_URL": f"redis://alice:{SECRET}@h:1/3", "REDISPARAM_JOBNAME": "job-7"}
    assert make(environ=env).address == s.address  # a worker resolves the same server


def test_to_env_without_server() -> None:
    assert make(jobname="j").to_env() == {"REDISPARAM_JOBNAME": "j"}


def test_module_exports() -> None:
    assert set(settings_module.__all__) == {"THRESHOLDS", "Settings", "config_overrides", "default_worker_count"}


def test_dask_config_keys_apply_unless_an_argument_is_given() -> None:
    from dask_redisparam import RedisParam

    with dask.config.set({"redisparam.rng_seed": 7, "redisparam.queue_multiplier": 3, "redisparam.workers": 5}):
        param = RedisParam(queue_multiplier=4, environ={})
        assert (param.rng_seed, param.queue_multiplier, param.workers) == (7, 4.0, 5)
        assert RedisParam(2, environ={}).workers == 2
    with dask.config.set({"redisparam.secret": "never-read-from-config-file"}):
        assert RedisParam(environ={}).secret is None
