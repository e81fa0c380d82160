"""Write the source that the settings table (:data:`dask_redisparam.config.schema.SETTINGS`) drives: ``python -m
dask_redisparam._docs.codegen`` rewrites it, ``python -m dask_redisparam._docs.codegen --check`` lists what is stale.

IDEs, ``help()`` and mkdocstrings read source, not runtime objects, so these parts are checked in, between
``# BEGIN GENERATED: <block>`` and ``# END GENERATED: <block>`` comments (or, for a docstring, its ``Parameters``
section); the test suite fails while any of them differs from what the table gives:

* ``param.py``: the signature of ``RedisParam.__init__`` and the ``Parameters`` section of ``RedisParam``;
* ``settings.py``: the attributes of ``Settings`` (their stored types, for type checkers);
* ``redisparam.yaml``: the defaults of the ``redisparam.*`` dask config keys.

Not imported by the package: a tool for its developers (and for the test that checks the generated parts).

Examples
--------
>>> print(signature("").splitlines()[2])
    workers: int | None = None,
>>> stale()
[]
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config.schema import SETTINGS, Setting

__all__ = ["POSITIONAL", "docstring_parameters", "main", "signature", "stale", "yaml_defaults"]

POSITIONAL = ("workers",)
"""The settings that may be given by position (R's ``RedisParam(workers, ...)``); the others are keyword-only."""

_WIDTH = 120
_PACKAGE = Path(__file__).parents[1]  # the generated files, by path: they need not import
_EXTRA = ("environ", "Mapping[str, str] | None", None)  # an argument that is not a setting (as for Settings)
_EXTRA_DOC = "The environment to read (default ``os.environ``); not stored."


def _literal(value: Any) -> str:
    """``value`` as ruff formats it in source (strings in double quotes)."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


def signature(indent: str) -> str:
    """The ``def __init__(...)`` lines of ``RedisParam``, whose constructor takes every setting, at ``indent``."""
    lines = [f"{indent}def __init__(", f"{indent}    self,"]
    for setting in SETTINGS:
        lines.append(f"{indent}    {setting.name}: {setting.accepts} = {_literal(setting.default)},")
        if setting.name == POSITIONAL[-1]:
            lines.append(f"{indent}    *,")
    name, accepts, default = _EXTRA
    lines += [f"{indent}    {name}: {accepts} = {_literal(default)},", f"{indent}) -> None:"]
    return "\n".join(lines) + "\n"


def _fields(indent: str) -> str:
    return "".join(f"{indent}{setting.name}: {setting.stores}\n" for setting in SETTINGS)


def _split_union(annotation: str) -> list[str]:
    """``"int | Mapping[str, int | str] | None"`` as its members (not split inside brackets)."""
    parts, depth, current = [], 0, ""
    for char in annotation:
        depth += char == "["
        depth -= char == "]"
        current += char
        if depth == 0 and current.endswith(" | "):
            parts.append(current[:-3])
            current = ""
    return [*parts, current]


def _numpydoc_type(setting: Setting) -> str:
    members = _split_union(setting.accepts)
    kind = " or ".join(m for m in members if m != "None")
    if setting.default is None:
        return f"{kind}, optional"
    return f"{kind}, default {_literal(setting.default)}"


def docstring_parameters(indent: str) -> str:
    """The ``Parameters`` entries of a docstring at ``indent``: every setting, then ``environ``."""
    entries = [(s.name, _numpydoc_type(s), s.doc) for s in SETTINGS] + [
        (_EXTRA[0], "Mapping[str, str], optional", _EXTRA_DOC)
    ]
    lines = []
    for name, kind, doc in entries:
        lines.append(f"{indent}{name} : {kind}")
        lines += textwrap.wrap(doc, _WIDTH, initial_indent=indent + "    ", subsequent_indent=indent + "    ")
    return "\n".join(lines) + "\n"


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _summary(doc: str) -> str:
    """The first sentence of a description, without its markup."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], doc).replace("``", "")
    return re.split(r"(?<=\.) |; see ", text, maxsplit=1)[0].rstrip(".") + "."


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


_YAML_HEADER = """\
# Defaults of dask-redisparam's dask config keys, registered with dask.config.update_defaults.
# Generated from dask_redisparam/config/schema.py by `python -m dask_redisparam._docs.codegen`: do not edit.
#
# Override them in a dask config file (~/.config/dask/*.yaml), with dask.config.set({"redisparam.url": ...}), or
# with environment variables DASK_REDISPARAM__<KEY> (for example DASK_REDISPARAM__URL=redis://db:6379). The
# values here equal the defaults of the RedisParam arguments of the same names; null means "not set" (for workers
# and jobname: computed, see the configuration reference). Which keys RedisParam reads is shown in the
# "dask config" column of the configuration reference (it never reads `secret` from here).
redisparam:
"""


def yaml_defaults() -> str:
    """The text of ``redisparam.yaml``: every setting with its default, under its one-sentence description."""
    lines = [_YAML_HEADER.rstrip("\n")]
    for setting in SETTINGS:
        lines += textwrap.wrap(_summary(setting.doc), _WIDTH, initial_indent="  # ", subsequent_indent="  # ")
        lines.append(f"  {setting.name}: {_yaml(setting.default)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- the files
def _block(source: str, name: str, make: Callable[[str], str]) -> str:
    """``source`` with the lines between its ``BEGIN``/``END GENERATED: name`` comments made by ``make(indent)``."""
    pattern = re.compile(rf"^( *)# BEGIN GENERATED: {name}\n.*?^ *# END GENERATED: {name}\n", re.M | re.S)
    match = pattern.search(source)
    if match is None:
        raise LookupError(f"no generated block {name!r}")
    indent = match.group(1)
    end = re.search(rf"^ *# END GENERATED: {name}\n", source[match.start() :], re.M)
    assert end is not None
    end_line = end.group(0)
    new = f"{indent}# BEGIN GENERATED: {name}\n{make(indent)}{end_line}"
    return source[: match.start()] + new + source[match.end() :]


def _parameters_section(source: str, owner: str) -> str:
    """``source`` with the ``Parameters`` section of class ``owner``'s docstring made from the table."""
    pattern = re.compile(rf"(^class {owner}\b.*?\n( +)Parameters\n +-+\n)(.*?)(?=\n +[A-Z][a-z]+\n +-+\n)", re.S | re.M)
    match = pattern.search(source)
    if match is None:
        raise LookupError(f"no Parameters section in the docstring of {owner}")
    return source[: match.start(3)] + docstring_parameters(match.group(2)) + source[match.end(3) :]


def _outputs() -> list[tuple[Path, Callable[[str], str]]]:
    def param_source(text: str) -> str:
        return _parameters_section(_block(text, "redisparam-signature", signature), "RedisParam")

    def settings_source(text: str) -> str:
        return _block(text, "settings-fields", _fields)

    return [
        (_PACKAGE / "param.py", param_source),
        (_PACKAGE / "config" / "settings.py", settings_source),
        (_PACKAGE / "config" / "redisparam.yaml", lambda text: yaml_defaults()),
    ]


def stale() -> list[str]:
    """The generated files that differ from what the table gives (empty when all is current)."""
    out = []
    for path, make in _outputs():
        text = path.read_text(encoding="utf-8")
        if make(text) != text:
            out.append(str(path))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the generated parts (``--check``: only list the stale files; exit 1 if any)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--check"]:
        files = stale()
        for name in files:
            print(f"stale: {name} (run python -m dask_redisparam._docs.codegen)")
        return 1 if files else 0
    for path, make in _outputs():
        text = path.read_text(encoding="utf-8")
        if make(text) != text:
            path.write_text(make(text), encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
