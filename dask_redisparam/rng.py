"""Reproducible random numbers in tasks, as BiocParallel's RNG streams.

With ``rng_seed`` set, each task's random state depends only on ``(rng_seed, task identity)``, the task's stable
identity (:mod:`dask_redisparam.manager.identity`: what it computes, the same in every process, also where dask's
key names are random, as for impure ``delayed`` calls), or ``(rng_seed, task key)`` for a task without a stable
identity. Before the task runs,
Python's :mod:`random` and NumPy's global ``RandomState`` are seeded from a :class:`numpy.random.SeedSequence` of
that pair, and :func:`task_rng` returns a ``numpy.random.Generator`` from the same sequence. The numbers therefore
do not depend on the number of workers, on how tasks are batched, or on which worker runs which task; a task run
again (retry, redo) draws the same numbers. :meth:`RedisParam.map` seeds per element, so chunking does not matter
either.

Without ``rng_seed``, :func:`task_rng` gives each task fresh entropy, and the global generators of each worker
process are seeded from the operating system (per message): workers never share a copied state.

Examples
--------
>>> seed_task(7, ("x", 0))
>>> a = task_rng().random()
>>> seed_task(7, ("x", 0))
>>> a == task_rng().random()
True
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from typing import Any

__all__ = ["reseed_from_entropy", "seed_task", "task_rng"]

_sequence: Any = None  # the running task's numpy SeedSequence, or None for fresh entropy
_generator: Any = None  # task_rng()'s Generator for the running task, made on first use


def _key_words(key: Any) -> list[int]:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def seed_task(rng_seed: int | None, key: Any, identity: bytes | None = None) -> None:
    """Seed ``random``, NumPy's global state and :func:`task_rng` for the task ``key``.

    With an ``identity`` (16 bytes), the streams come from it instead of the key. With ``rng_seed`` None only
    :func:`task_rng` is reset (to fresh entropy), which costs nothing.

    Examples
    --------
    >>> seed_task(7, "a-random-key", bytes(16))
    >>> a = task_rng().random()
    >>> seed_task(7, "another-key", bytes(16))
    >>> a == task_rng().random()
    True
    """
    global _sequence, _generator
    if rng_seed is None:
        _sequence, _generator = None, None
        return
    import numpy as np

    if identity is not None:  # a sixth word keeps identity streams apart from key streams
        words = [int.from_bytes(identity[i : i + 4], "little") for i in range(0, 16, 4)] + [0x1D]
    else:
        words = _key_words(key)
    _sequence = np.random.SeedSequence([rng_seed, *words])
    _generator = None
    state = _sequence.generate_state(16)  # distinct words for the two generators, so they do not mirror each other
    random.seed(int.from_bytes(state[:8].tobytes(), "little"))
    np.random.seed(state[8:])


def reseed_from_entropy() -> None:
    """Give the next tasks fresh entropy (no ``rng_seed``): reseed the globals from the operating system."""
    global _sequence, _generator
    _sequence, _generator = None, None
    random.seed(os.urandom(16))
    if "numpy" in sys.modules:
        import numpy as np

        np.random.seed(np.frombuffer(os.urandom(32), dtype=np.uint32))


def task_rng() -> Any:
    """The running task's ``numpy.random.Generator``: reproducible with ``rng_seed``, else fresh entropy.

    Call it inside a task; repeated calls in the same task return the same generator.
    """
    global _generator
    if _generator is None:
        import numpy as np

        _generator = np.random.Generator(np.random.PCG64(_sequence if _sequence is not None else None))
    return _generator
