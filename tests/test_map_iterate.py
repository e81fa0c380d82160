"""``RedisParam.map`` (bplapply/bpmapply) and ``RedisParam.iterate`` (bpiterate), with BiocParallel's error, redo,
RNG and ordering semantics."""

from __future__ import annotations

import operator
import pathlib
from collections.abc import Callable, Iterator

import pytest

from dask_redisparam import RedisParam, RemoteError, TaskErrors, Unevaluated, is_ok
from tests import tasks

X = [1, "2", 3]


@pytest.fixture
def pool(url_param: Callable[..., RedisParam]) -> Iterator[RedisParam]:
    with url_param(2) as param:
        yield param


def test_map_returns_results_in_input_order(pool: RedisParam) -> None:
    assert pool.map(tasks.inc, range(50)) == list(range(1, 51))
    assert pool.map(tasks.add, range(5), [10] * 5) == [10, 11, 12, 13, 14]
    assert pool.map(tasks.add, range(7), range(7), tasks=3) == [2 * i for i in range(7)]
    assert pool.map(tasks.inc, range(9), tasks=0) == list(range(1, 10))
    assert pool.map(tasks.inc, []) == []


def test_map_passes_keyword_arguments(pool: RedisParam) -> None:
    assert pool.map(tasks.slow_inc, [1, 2], seconds=0.0) == [2, 3]


def test_map_rejects_bad_tasks(pool: RedisParam) -> None:
    with pytest.raises(ValueError, match="tasks=-1 must be None, 0 or a positive integer"):
        pool.map(tasks.inc, [1], tasks=-1)


@pytest.mark.parametrize(("stop_on_error", "expected"), [(True, [True, False, False]), (False, [True, False, True])])
def test_map_error_cases_of_biocparallel(
    url_param: Callable[..., RedisParam], stop_on_error: bool, expected: list[bool]
) -> None:
    with url_param(1, stop_on_error=stop_on_error) as param:  # as SerialParam: one chunk, in order
        result = param.map(tasks.sqrt, X, tasks=0, return_exceptions=True)
    assert is_ok(result) == expected
    assert isinstance(result[1], TypeError) and isinstance(result[1], RemoteError) and result[1].key == 1
    if stop_on_error:
        assert isinstance(result[2], Unevaluated)


def test_map_raises_with_partial_results_and_redo(url_param: Callable[..., RedisParam]) -> None:
    with url_param(2, stop_on_error=False) as param:
        with pytest.raises(TaskErrors) as info:
            param.map(tasks.sqrt, X)
        err = info.value
        assert err.results == {0: 1.0, 2: pytest.approx(3**0.5)}
        assert list(err.errors) == [1] and err.unevaluated == []
        assert "1 remote error(s), keys: 1;" in str(err)
        fixed = [1, 4, 3]
        assert param.map(tasks.sqrt, fixed, redo=err) == [1.0, 2.0, pytest.approx(3**0.5)]
        with pytest.raises(ValueError, match="must be equal"):
            param.map(tasks.sqrt, [1, 4], redo=err)


def test_map_redo_runs_only_the_failed_elements(url_param: Callable[..., RedisParam], tmp_path: pathlib.Path) -> None:
    calls = tmp_path / "calls"
    with url_param(2, stop_on_error=False) as param:
        with pytest.raises(TaskErrors) as info:
            param.map(tasks.counted_inc, [str(calls)] * 4, [0, 1, "x", 3])
        assert len(calls.read_text().split()) == 4
        assert param.map(tasks.counted_inc, [str(calls)] * 4, [0, 1, 2, 3], redo=info.value) == [1, 2, 3, 4]
        assert calls.read_text().split()[4:] == ["2"]  # only the failed element ran again


def test_map_rng_does_not_depend_on_chunking_or_workers(url_param: Callable[..., RedisParam]) -> None:
    results = []
    for workers, chunks in [(1, None), (2, 3), (4, 0)]:
        with url_param(workers, rng_seed=11) as param:
            results.append(param.map(tasks.element_random, range(8), tasks=chunks))
    assert results[0] == results[1] == results[2]
    assert len(set(results[0])) == 8


def test_map_redo_reproduces_the_original_streams(url_param: Callable[..., RedisParam]) -> None:
    with url_param(2, rng_seed=5, stop_on_error=False) as param:
        full = param.map(tasks.element_random, range(4))
        with pytest.raises(TaskErrors) as info:
            param.map(tasks.element_random_or_fail, [0, 1, "x", 3])
        redone = param.map(tasks.element_random_or_fail, [0, 1, 2, 3], redo=info.value)
    assert redone == full


@pytest.mark.parametrize("in_order", [False, True])
def test_iterate_reduces_a_generator_of_1000(pool: RedisParam, in_order: bool) -> None:
    produced: list[int] = []

    def generator() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    assert pool.iterate(generator(), tasks.inc, reduce=operator.add, in_order=in_order) == sum(range(1, 1001))
    assert produced == list(range(1000))


def test_iterate_materializes_at_most_the_window(pool: RedisParam) -> None:
    produced = [0]
    peak = [0]

    def generator() -> Iterator[int]:
        for i in range(300):
            produced[0] += 1
            yield i

    # the window: at most ceil(live workers x queue_multiplier) items read and not yet reduced
    window = 2 * len(pool.worker_ids())
    done = [0]

    def reducer(acc: int, value: int) -> int:
        done[0] += 1
        return acc + value

    def watch() -> Iterator[int]:
        for item in generator():
            peak[0] = max(peak[0], produced[0] - done[0])
            yield item

    assert pool.iterate(watch(), tasks.inc, reduce=reducer, init=0) == sum(range(1, 301))
    assert peak[0] <= window + 1, (peak[0], window)


def test_iterate_without_reduce_keeps_submission_order(pool: RedisParam) -> None:
    assert pool.iterate(iter(range(30)), tasks.inc) == list(range(1, 31))


def test_iterate_in_order_with_init(url_param: Callable[..., RedisParam]) -> None:
    with url_param(2) as param:
        assert param.iterate(iter("abc"), tasks.noop, reduce=tasks.concat, init="0", in_order=True) == "0abc"
        unordered = param.iterate(iter("abc"), tasks.noop, reduce=tasks.concat, init="0")
        assert sorted(unordered) == sorted("0abc") and unordered.startswith("0")


@pytest.mark.parametrize(("stop_on_error", "expected"), [(True, [True, False, False]), (False, [True, False, True])])
def test_iterate_error_cases_of_biocparallel(
    url_param: Callable[..., RedisParam], stop_on_error: bool, expected: list[bool]
) -> None:
    with url_param(1, stop_on_error=stop_on_error, queue_multiplier=1) as param:
        result = param.iterate(X, tasks.sqrt, return_exceptions=True)  # a list: its length is known
    assert is_ok(result) == expected


def test_iterate_redo(url_param: Callable[..., RedisParam], tmp_path: pathlib.Path) -> None:
    calls = tmp_path / "calls"
    with url_param(2, stop_on_error=False) as param:
        with pytest.raises(TaskErrors) as info:
            param.iterate(iter([0, 1, "x", 3]), tasks.counted_inc_item, path=str(calls))
        assert info.value.results == {0: 1, 1: 2, 3: 4}
        again = param.iterate(iter([0, 1, 2, 3]), tasks.counted_inc_item, path=str(calls), redo=info.value)
        assert again == [1, 2, 3, 4]
        assert calls.read_text().split()[4:] == ["2"]  # only the failed item ran again
