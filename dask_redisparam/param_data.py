"""Data that lives in Redis: ``persist`` without bringing values home, and named datasets shared between processes.

:class:`ParamData` adds to :class:`~dask_redisparam.param_scheduling.ParamScheduler`:

- :meth:`~ParamData.persist`, which ``dask.persist(..., scheduler=p)`` calls (dask hands the work to a scheduler
  that has a ``persist`` method). The graph runs as a compute does, but the requested values stay in Redis: the
  run's data hash is trimmed to them and renamed, O(1) (:mod:`dask_redisparam.manager.hold`), and the collections
  come back rebuilt (``__dask_postpersist__``) with, for each key, a small task ``load_held(ref)``
  (:mod:`dask_redisparam.worker.held`) that a worker runs to read the value, through its cache. The values live
  while the collections (or anything built on them) are referenced in this process and while the process lives
  (:mod:`dask_redisparam.manager.keeper`).
- :meth:`~ParamData.publish`, :meth:`~ParamData.dataset`, :meth:`~ParamData.datasets`,
  :meth:`~ParamData.unpublish`: named datasets under the job's keys, which live until unpublished (or their
  ``ttl``) and which any process of the job reads.

Values keep the seal their worker gave them (bound to the job, not to a key), so they verify wherever they move in
the job; a dataset's description (the pickled collection) is sealed the same way before anyone unpickles it.
"""

from __future__ import annotations

import pickle
import re
import time
import uuid
from collections.abc import Hashable, Sequence
from typing import Any

import cloudpickle
from dask._task_spec import Task
from dask.base import collections_to_expr, is_dask_collection
from dask.core import flatten

from . import pool
from .backend import keys
from .errors import ConfigurationError, DatasetExists, DatasetNotFound
from .manager import keeper as holding
from .manager.graph import prepare_graph
from .manager.hold import Kept, keep_values
from .manager.keeper import Holder, HoldKeeper
from .manager.loop import download_results, fewer_collections, run_graph
from .manager.shuffle import disk_shuffle_key
from .param_scheduling import ParamScheduler
from .pool import DatasetInfo
from .wire.bulk import pack
from .wire.protocol import seal_value, unseal_value
from .wire.serialize import dumps_result
from .worker.held import HeldRef, load_held, read_held, register_source

__all__ = ["ParamData"]

DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""What a dataset's name may be (it is part of Redis key names, which ``SCAN`` patterns match)."""


class ParamData(ParamScheduler):
    """A param's running of graphs plus values kept in Redis: the base of :class:`~dask_redisparam.RedisParam`.

    Parameters
    ----------
    settings : Settings
        The validated settings.
    """

    _keeper: HoldKeeper | None = None

    def persist(self, collections: Sequence[Any], optimize_graph: bool = True, **kwargs: Any) -> list[Any]:
        """Compute ``collections`` and keep their values in Redis: what ``dask.persist(..., scheduler=p)`` calls.

        Returns the collections rebuilt on references to the values (their graphs hold a small task per key); a
        later compute with this param reads them in the workers, never through this process. The values stay while
        the returned collections, or collections built on them, are referenced in this process, and while it lives
        (a lease renewed every few seconds; a process that dies loses them within
        :data:`~dask_redisparam.manager.keeper.HOLD_TTL` seconds), and at most until :meth:`stop`. Computed with
        another scheduler, the values are downloaded, with a warning.

        Parameters
        ----------
        collections : sequence of dask collections
            What to persist (a list in, a list out, as dask's protocol).
        optimize_graph : bool
            Optimize the graphs first, as ``dask.persist``.
        **kwargs
            As for :meth:`get` (``retries=``, ``fuse_chains=``...).

        Examples
        --------
        >>> import dask, dask.array as da
        >>> from dask_redisparam import RedisParam
        >>> with RedisParam(workers=1) as p:
        ...     (y,) = dask.persist(da.arange(10, chunks=5) * 2, scheduler=p)
        ...     int(y.sum().compute(scheduler=p))
        90
        """
        keeper = self._the_keeper()
        target = keys.held(self.settings.jobname, uuid.uuid4().hex[:16])
        rebuilt, _ = self._keep(list(collections), optimize_graph, target, holding.HOLD_TTL, kwargs, keeper.hold)
        return rebuilt

    def publish(self, name: str, value: Any, *, ttl: float | None = None) -> None:
        """Publish ``value`` under ``name`` for every process of the job (``dask.distributed``'s
        ``publish_dataset``): a dask collection is computed into Redis (nothing downloaded), any other value is
        stored as it is.

        It lives until :meth:`unpublish`, or ``ttl`` seconds; it survives this process.

        Raises
        ------
        DatasetExists
            A dataset of that name is published already.

        Examples
        --------
        >>> import dask.array as da
        >>> from dask_redisparam import RedisParam
        >>> with RedisParam(workers=1) as p:
        ...     p.publish("numbers", da.arange(6, chunks=3))
        ...     list(p.datasets()), int(p.dataset("numbers").sum().compute(scheduler=p))
        ...     p.unpublish("numbers")
        (['numbers'], 15)
        """
        _check_name(name)
        if ttl is not None and ttl <= 0:
            raise ConfigurationError(f"ttl of dataset {name!r} must be > 0 seconds (None: until unpublished)")
        backend, job = self.backend, self.settings.jobname
        if backend.dataset_meta(job, name):
            raise DatasetExists(f"a dataset {name!r} is published on job {job!r} already: unpublish it first")
        target = keys.dataset_values(job, name)
        if is_dask_collection(value):
            [published], nbytes = self._keep([value], True, target, holding.HOLD_TTL, {}, None)
            kind = "collection"
        else:
            sealed, parts = pack(dumps_result(value), self._signer, job)
            nbytes = len(sealed) + sum(len(view) for _, view in parts)
            backend.store_held(
                target, {"0": sealed}, parts, ttl=holding.HOLD_TTL
            )  # a lease until the description is in
            published, kind = HeldRef(job, target, 0, nbytes), "value"
        description = seal_value(cloudpickle.dumps(published), self._signer, job)
        meta = {
            "collection": description,
            "kind": kind.encode(),
            "nbytes": str(nbytes).encode(),
            "created": f"{time.time():.3f}".encode(),
            "type": _type_name(value).encode(),
        }
        backend.publish_meta(job, name, meta, ttl)

    def dataset(self, name: str) -> Any:
        """The dataset published under ``name`` (by any process of the job): a collection of the published type
        whose graph refers to the values in Redis, or the published value itself if it was no collection.

        Raises
        ------
        DatasetNotFound
            No dataset of that name is published on the job.
        """
        _check_name(name)
        backend, job = self.backend, self.settings.jobname
        meta = backend.dataset_meta(job, name)
        if "collection" not in meta:
            raise DatasetNotFound(f"no dataset {name!r} is published on job {job!r} at {backend.address.describe()}")
        register_source(job, backend.address, self._signer)
        published = pickle.loads(unseal_value(meta["collection"], self._signer, job))
        if meta.get("kind") == b"value":
            return read_held(backend, self._signer, published)
        return published

    def datasets(self) -> dict[str, DatasetInfo]:
        """The datasets published on the job, by name: size in Redis, age, type, seconds left (None: no TTL)."""
        return pool.datasets(self.backend, self.settings.jobname)

    def unpublish(self, name: str) -> None:
        """Delete the dataset ``name`` (its values leave Redis at once; collections that refer to it fail).

        Raises
        ------
        DatasetNotFound
            No dataset of that name is published on the job.
        """
        _check_name(name)
        if not self.backend.unpublish(self.settings.jobname, name):
            raise DatasetNotFound(f"no dataset {name!r} is published on job {self.settings.jobname!r}")

    def stop(self) -> None:
        """Release the values this param persisted, then stop (see :meth:`ParamLifecycle.stop
        <dask_redisparam.param_lifecycle.ParamLifecycle.stop>`)."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close()
        super().stop()

    def _the_keeper(self) -> HoldKeeper:
        if not self.is_up:
            raise ConfigurationError(
                "persist keeps values in Redis while the RedisParam is up: start it first (p.start(), or in a "
                "with block)"
            )
        with self._lock:
            if self._keeper is None:
                self._keeper = HoldKeeper(self.backend.address)
            return self._keeper

    def _keep(
        self,
        collections: list[Any],
        optimize_graph: bool,
        target: str,
        ttl: float | None,
        kwargs: dict[str, Any],
        hold: Any,
    ) -> tuple[list[Any], int]:
        """Compute ``collections`` into the hash ``target``; the collections rebuilt on references to it, and the
        bytes kept. ``hold(target)`` gives the holder the references carry (None: nothing releases them)."""
        from dask._expr import CompositeExpr, _ExprSequence
        from dask.base import _rebuild_composite_collection

        job = self.settings.jobname
        expr = collections_to_expr(collections, optimize_graph)  # as dask.base.persist does
        exprs = list(expr.operands) if isinstance(expr, _ExprSequence) else [expr]
        composite = any(isinstance(e, CompositeExpr) for e in exprs)
        expr = expr.optimize()
        if composite:
            exprs = list(expr.operands) if isinstance(expr, _ExprSequence) else [expr]
        if not composite or len(exprs) != len(collections):
            exprs = [None] * len(collections)
        all_keys: list[Hashable] = []
        postpersists: list[tuple[Any, Any, list[Hashable]]] = []
        for coll, coll_expr, coll_keys in zip(collections, exprs, expr.__dask_keys__(), strict=True):  # type: ignore[no-untyped-call]
            flat = list(flatten(coll_keys))  # type: ignore[no-untyped-call]
            all_keys += flat
            postpersists.append((coll, coll_expr if isinstance(coll_expr, CompositeExpr) else None, flat))
        with fewer_collections():
            graph = prepare_graph(expr, all_keys)
            self._warn_ignored(kwargs, graph)
            shuffle_key = disk_shuffle_key(graph)
            if shuffle_key is not None:
                self._check_shuffle(shuffle_key)
            options = self._options(kwargs, None)
            values = run_graph(
                self.backend,
                graph,
                options,
                callbacks=kwargs.get("callbacks"),
                live_workers=self._live_workers,
                finish=keep_values(target, ttl, download_results),
            )
        register_source(job, self.backend.address, self._signer)
        kept = [v for v in values.values() if isinstance(v, Kept)]
        holder: Holder | None = hold(target) if hold is not None and kept else None
        tasks = {key: _task(key, value, job, target, holder) for key, value in values.items()}
        out = []
        for coll, coll_expr, flat in postpersists:
            if coll_expr is not None:
                out.append(_rebuild_composite_collection(coll, coll_expr, tasks, cull_to_child_keys=True))
            else:
                rebuild, state = coll.__dask_postpersist__()
                out.append(rebuild({key: tasks[key] for key in flat}, *state))
        return out, sum(v.nbytes for v in kept)


def _task(key: Hashable, value: Any, job: str, target: str, holder: Holder | None) -> Any:
    """What the rebuilt graph holds for ``key``: a task reading the kept value, or a small value itself."""
    if isinstance(value, Kept):
        return Task(key, load_held, HeldRef(job, target, value.field, value.nbytes, holder, value.run_id))
    return value


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        raise ConfigurationError(
            f"dataset name {name!r} must be 1 to 200 letters, digits, '.', '_' or '-' (starting with a letter or digit)"
        )


def _type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"
