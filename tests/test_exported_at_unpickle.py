"""The manager's exported dask config and environment variables are in effect on the worker while it unpickles a
task, not only while the task runs: some objects read settings as they are unpickled (dask's disk shuffle
``maybe_buffered_partd`` reads ``dataframe.shuffle.compression`` in its constructor, called by its
``__reduce__``)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

import dask
import pytest
from dask.dataframe.shuffle import maybe_buffered_partd

from dask_redisparam import RedisParam


class ReadsSettingsWhenUnpickled:
    """Records a dask config value and an environment variable as it is unpickled."""

    def __init__(self, seen: tuple[Any, str | None] | None = None) -> None:
        self.seen = seen

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, ())


def _rebuild() -> ReadsSettingsWhenUnpickled:
    return ReadsSettingsWhenUnpickled((dask.config.get("drp-test.codec", None), os.environ.get("DRP_TEST_CODEC")))


def seen_when_unpickled(obj: ReadsSettingsWhenUnpickled, _: Any = None) -> Any:
    return obj.seen


def partd_compression(obj: maybe_buffered_partd, _: Any = None) -> Any:
    return obj.compression


def test_the_object_unpickled_locally_sees_the_setting() -> None:
    with dask.config.set({"drp-test.codec": "here"}):
        assert pickle.loads(pickle.dumps(ReadsSettingsWhenUnpickled())).seen == ("here", None)


def test_exported_config_is_in_effect_while_a_worker_unpickles_the_task(
    url_param: Callable[..., RedisParam], monkeypatch: pytest.MonkeyPatch
) -> None:
    dsk = {
        "mine": (seen_when_unpickled, ReadsSettingsWhenUnpickled()),
        "partd": (partd_compression, maybe_buffered_partd()),
    }
    with url_param(1, export_env=["DRP_TEST_CODEC"]) as param:
        monkeypatch.setenv("DRP_TEST_CODEC", "from-the-manager")  # the worker started without it
        with dask.config.set({"drp-test.codec": "zstd-7", "dataframe.shuffle.compression": "ZLib"}):
            assert param(dsk, ["mine", "partd"]) == (("zstd-7", "from-the-manager"), "ZLib")
        # the worker's own settings are back for the next run
        monkeypatch.delenv("DRP_TEST_CODEC")
        assert param(dsk, ["mine", "partd"]) == ((None, None), None)
