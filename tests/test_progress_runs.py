"""progressbar=True shows a bar on the manager for compute and map, and a counter for iterate."""

from __future__ import annotations

import operator
from collections.abc import Callable

import pytest

from dask_redisparam import RedisParam
from tests import tasks


def test_progress_for_compute_map_and_iterate(
    url_param: Callable[..., RedisParam], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dask_redisparam.progress as progress

    monkeypatch.setattr(progress, "tqdm_available", lambda: False)  # the text bar (tqdm may be installed or not)
    monkeypatch.setattr(progress, "_tqdm_class", lambda: None)
    with url_param(1, progressbar=True) as param:
        param({("t", i): (tasks.inc, i) for i in range(5)}, [("t", i) for i in range(5)])
        compute_err = capsys.readouterr().err
        param.map(tasks.inc, range(4))
        map_err = capsys.readouterr().err
        param.iterate(iter(range(7)), tasks.inc, reduce=operator.add)
        iterate_err = capsys.readouterr().err
    assert "100% Completed" in compute_err
    assert "100% Completed" in map_err
    assert "iteration: 7" in iterate_err
