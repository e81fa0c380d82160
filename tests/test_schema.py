"""The settings table (:mod:`dask_redisparam.config.schema`) is the one declaration of every setting: the
signatures, the attributes, the dask config keys, the flags and the generated files follow it."""

from __future__ import annotations

import dataclasses
import inspect
import tempfile
from collections.abc import Iterator
from typing import Any

import click
import dask.config
import pytest

from dask_redisparam import RedisParam
from dask_redisparam._docs import codegen
from dask_redisparam.cli import main, worker_command
from dask_redisparam.config.defaults import config_defaults
from dask_redisparam.config.schema import SETTINGS, Setting
from dask_redisparam.config.settings import Settings


@pytest.fixture(autouse=True)
def _no_dask_config() -> Iterator[None]:
    with dask.config.set({"redisparam": {}}):
        yield


def test_generated_source_is_current() -> None:
    assert codegen.stale() == [], "run: python -m dask_redisparam._docs.codegen"


def test_signature_is_the_table() -> None:
    """Names, order, kinds, defaults and annotations: every setting, ``workers`` also by position, no ``**``."""
    parameters = list(inspect.signature(RedisParam).parameters.values())
    assert [p.name for p in parameters] == [s.name for s in SETTINGS] + ["environ"]
    for parameter, declared in zip(parameters, SETTINGS, strict=False):
        assert (parameter.default, parameter.annotation) == (declared.default, declared.accepts), declared.name
    kinds = [p.kind for p in parameters]
    assert kinds[0] is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert set(kinds[1:]) == {inspect.Parameter.KEYWORD_ONLY}
    assert parameters[-1].default is None and parameters[-1].annotation == "Mapping[str, str] | None"


def test_settings_attributes_are_the_table() -> None:
    fields = [f for f in dataclasses.fields(Settings) if f.init]
    assert [(f.name, f.type) for f in fields] == [(s.name, s.stores) for s in SETTINGS]


def test_settings_takes_the_settings_by_name() -> None:
    assert Settings(environ={}).queue_multiplier == 2.0
    with pytest.raises(TypeError, match="multiple values for argument 'workers'"):
        Settings(2, workers=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        Settings(bogus=1)


def test_positional_use_as_in_r() -> None:
    assert RedisParam(3, environ={}).workers == 3
    with pytest.raises(TypeError):
        RedisParam(3, "job")  # type: ignore[misc]
    with pytest.raises(TypeError):
        RedisParam(bogus=1)  # type: ignore[call-arg]


def _probe(declared: Setting) -> Any:
    """A valid value other than the default."""
    special: dict[str, Any] = {
        "jobname": "probe-job",
        "is_worker": False,
        "threshold": "DEBUG",
        "logdir": tempfile.gettempdir(),
        "resultdir": tempfile.gettempdir(),
        "state_dir": tempfile.gettempdir(),
        "export_env": ("PROBE_VARIABLE",),
        "resources": (("GPU", 2.0),),
    }
    if declared.name in special:
        return special[declared.name]
    if isinstance(declared.default, bool):
        return not declared.default
    if "float" in declared.accepts:
        return (declared.default or 1.0) + 0.5
    return (declared.default or 0) + 7


@pytest.mark.parametrize("declared", [s for s in SETTINGS if not s.server], ids=lambda s: s.name)
def test_dask_config_key_is_read_as_declared(declared: Setting) -> None:
    value = _probe(declared)
    extra: dict[str, Any] = {"redisparam.log": True} if declared.name == "logdir" else {}
    if declared.name == "cluster":  # a cluster needs a node
        extra = {"redisparam.url": "redis://127.0.0.1:1"}
    with dask.config.set({f"redisparam.{declared.name}": value, **extra}):
        read = getattr(RedisParam(environ={}).settings, declared.name) == value
    assert read is declared.config


def test_yaml_defaults_are_the_table() -> None:
    defaults = config_defaults()["redisparam"]
    assert list(defaults) == [s.name for s in SETTINGS]
    for declared in SETTINGS:
        expected = list(declared.default) if isinstance(declared.default, tuple) else declared.default
        assert defaults[declared.name] == expected, declared.name


def test_flags_are_the_table() -> None:
    options = {
        (name, param.name): param
        for name, command in [*main.commands.items(), ("worker", worker_command)]
        for param in command.params
        if isinstance(param, click.Option)
    }
    declared = {s.name: s for s in SETTINGS if s.cli is not None}
    seen = {option for _, option in options}
    assert set(declared) <= seen
    for (_, name), option in options.items():
        if name in declared:
            cli = declared[name].cli
            assert cli is not None
            assert option.opts == [declared[name].flag] and option.required is cli.required
            assert option.default == (None if cli.required else declared[name].default)
