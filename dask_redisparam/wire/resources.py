"""Worker resources as they travel: the canonical name of a *resource class* and what covers it.

A task that needs resources (``dask.annotate(resources={"GPU": 1})``, or ``resources=`` of ``map``, ``iterate``
and the executor's ``submit``) belongs to the class of exactly those amounts. Its class has a canonical text,
``"GPU=1.0,MEM=64000000000.0"`` (names sorted, amounts as Python writes floats), which is part of the name of the
class's queue (:func:`dask_redisparam.backend.keys.rqueue`) and which the workers parse back. A daemon's resources
*cover* a class when it has at least each amount; it runs at most as many messages of the class at once as its
resources allow (:func:`slots`), counted in Redis by the claim script.

Examples
--------
>>> cls = class_name((("GPU", 1.0),))
>>> cls, parse_class(cls)
('GPU=1.0', (('GPU', 1.0),))
>>> covers((("GPU", 2.0), ("MEM", 64e9)), parse_class(cls)), slots((("GPU", 2.0),), parse_class(cls))
(True, 2)
>>> describe(parse_class("GPU=1.0,MEM=64000000000.0"))
'GPU=1, MEM=6.4e+10'
"""

from __future__ import annotations

import math

__all__ = ["Resources", "class_name", "covers", "describe", "of_record", "parse_class", "slots"]

Resources = tuple[tuple[str, float], ...]
"""Resources or a demand: ``((name, amount), ...)``, sorted by name (as the ``resources`` setting stores them)."""

EPSILON = 1e-9
"""Slack in comparisons of amounts (sums of floats in Redis)."""


def class_name(demand: Resources) -> str:
    """The canonical text of a demand (sorted ``(name, amount)`` pairs): ``"GPU=1.0,MEM=2.5"``."""
    return ",".join(f"{name}={float(amount)!r}" for name, amount in demand)


def parse_class(text: str) -> Resources:
    """The demand of a class name made by :func:`class_name` (a malformed part raises ``ValueError``)."""
    out = []
    for part in text.split(","):
        name, _, amount = part.partition("=")
        out.append((name, float(amount)))
    return tuple(sorted(out))


def covers(resources: Resources, demand: Resources) -> bool:
    """Whether ``resources`` have at least each amount of ``demand`` (no demand: anything covers it)."""
    have = dict(resources)
    return all(have.get(name, 0.0) + EPSILON >= amount for name, amount in demand)


def slots(resources: Resources, demand: Resources) -> int:
    """How many messages of ``demand`` fit at once into ``resources`` (0: it is not covered)."""
    if not covers(resources, demand):
        return 0
    have = dict(resources)
    fits = [math.floor(have[name] / amount + EPSILON) for name, amount in demand if amount > 0]
    return min(fits) if fits else 1_000_000


def describe(resources: Resources) -> str:
    """Resources for people: ``"GPU=1, MEM=6.4e+10"`` ("" for none)."""
    return ", ".join(f"{name}={amount:g}" for name, amount in resources)


def of_record(text: str | None) -> Resources:
    """The resources a worker's registration records (its ``resources`` field, :func:`class_name`'s text; missing,
    empty or unreadable: none).

    Examples
    --------
    >>> of_record("GPU=2.0"), of_record(None), of_record("junk")
    ((('GPU', 2.0),), (), ())
    """
    if not text:
        return ()
    try:
        return parse_class(text)
    except ValueError:
        return ()
