"""exportglobals: the manager's dask config and the variables in export_env apply on the workers during tasks."""

from __future__ import annotations

from collections.abc import Callable

import dask
import pytest

from dask_redisparam import ConfigurationError, RedisParam
from tests import tasks


def test_config_and_env_travel_and_are_restored(
    url_param: Callable[..., RedisParam], monkeypatch: pytest.MonkeyPatch
) -> None:
    with url_param(1, export_env=["DRP_TEST_VAR"]) as param:
        monkeypatch.setenv("DRP_TEST_VAR", "from-manager")  # set after the worker started: it can only be exported
        with dask.config.set({"drp-test.answer": 42}):
            assert param({"x": (tasks.read_config_and_env, "drp-test.answer", "DRP_TEST_VAR")}, "x") == (
                42,
                "from-manager",
            )
        # afterwards the worker's own config and environment are back
        monkeypatch.delenv("DRP_TEST_VAR")
        assert param({"y": (tasks.read_config_and_env, "drp-test.answer", "DRP_TEST_VAR")}, "y") == (None, None)
    with url_param(1, exportglobals=False) as param, dask.config.set({"drp-test.answer": 1}):
        assert param({"z": (tasks.read_config_and_env, "drp-test.answer", "X")}, "z") == (None, None)


def test_export_env_must_be_names() -> None:
    with pytest.raises(ConfigurationError, match="export_env"):
        RedisParam(export_env="PATH")
