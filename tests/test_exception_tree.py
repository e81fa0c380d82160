"""The exception tree drawn in the docstring of :mod:`dask_redisparam.errors` is complete and true: every exception
class of the package lives in ``errors.py``, is in its ``__all__`` and stands in the drawing under its real parent.
No Redis needed."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import dask_redisparam
from dask_redisparam import errors


def package_exceptions() -> dict[str, type[BaseException]]:
    """Every public exception class defined in a module of the package (each module imported)."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(dask_redisparam.__path__, "dask_redisparam."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__.startswith("dask_redisparam")
                and not name.startswith("_")
            ):
                found[name] = obj
    return found


def drawing() -> dict[str, int]:
    """Class name -> its indentation level in the tree of the errors docstring (0: a root)."""
    doc = errors.__doc__ or ""
    tree = doc.split("::", 1)[1].split("Examples", 1)[0]
    levels: dict[str, int] = {}
    for line in tree.splitlines():
        match = re.match(r"^    ((?:[│ ]   )*)(?:[├└]── )?([A-Z]\w+)", line)
        if match:
            levels[match.group(2)] = len(match.group(1)) // 4 + (1 if "──" in line else 0)
    return levels


def test_every_exception_of_the_package_is_in_errors_and_in_the_drawing() -> None:
    found = package_exceptions()
    assert {"PayloadRejected", "ChunkFailed", "KilledWorker", "StopRequested"} <= set(found)
    assert {name for name, cls in found.items() if cls.__module__ != "dask_redisparam.errors"} == set()
    drawn = drawing()
    assert set(found) - set(drawn) == set()
    assert set(found) <= set(errors.__all__)
    classes = {name for name in errors.__all__ if inspect.isclass(getattr(errors, name))}
    assert classes == set(drawn)  # PartialResults, a mixin, is drawn too


def test_the_drawing_shows_each_class_under_its_parent() -> None:
    doc = errors.__doc__ or ""
    tree = doc.split("::", 1)[1].split("Examples", 1)[0]
    parents: list[str] = []
    for line in tree.splitlines():
        match = re.match(r"^    ((?:[│ ]   )*)(?:[├└]── )?([A-Z]\w+)", line)
        if not match:
            continue
        level = len(match.group(1)) // 4 + (1 if "──" in line else 0)
        name = match.group(2)
        del parents[level:]
        if parents:
            assert issubclass(getattr(errors, name), getattr(errors, parents[-1])), (name, parents[-1])
        parents.append(name)


def test_the_package_exports_the_errors_users_catch() -> None:
    public = set(dask_redisparam.__all__)
    internal = {"ChunkFailed", "StopRequested", "PayloadRejected", "StreamStopped", "Unstable"}
    drawn = set(drawing())
    assert drawn - internal - public == set()
