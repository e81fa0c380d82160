"""The configuration reference, built from the code: every setting, environment variable, dask config key and flag.

Nothing here is written by hand, so the reference cannot drift from the code:

* the settings, their types, defaults, descriptions, environment variables and dask config keys come from the
  settings table, :data:`dask_redisparam.config.schema.SETTINGS`, which ``Settings``, ``RedisParam`` and the
  commands are made from (so they read exactly the variables and keys it declares);
* a setting counts as *applied* when a module other than ``settings.py`` reads it from a ``settings`` object
  (the server fields through ``settings.address``); the others are accepted, validated and stored only;
* the command-line flags are the options of the click commands of :mod:`dask_redisparam.cli` (hidden ones
  excluded); a flag named like a setting lands in that setting's row, the others get rows of their own.

:func:`reference_rows` returns the rows and :func:`render_markdown` renders them as one Markdown table; the
documentation site inserts that table at build time. The package's dask config defaults live in the packaged
``redisparam.yaml`` (:mod:`dask_redisparam.config.defaults`).

This module is a documentation tool: the docs build and the tests import it, the package never does.

Examples
--------
>>> rows = {row.setting: row for row in reference_rows() if row.setting}
>>> rows["url"].env, rows["url"].config_key, rows["url"].cli
(('REDISPARAM_URL',), 'redisparam.url', ('--url',))
>>> rows["queue_multiplier"].default
'2.0'
>>> print(render_markdown([rows["host"]]).splitlines()[0])
| Setting | Set with | Description |
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.schema import SERVER_FIELDS, SETTINGS

if TYPE_CHECKING:  # click is imported only when the reference is built
    import click

__all__ = [
    "ReferenceRow",
    "applied_settings",
    "cli_options",
    "reference_rows",
    "render_markdown",
    "rst_to_markdown",
    "settings_parameters",
]

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


@dataclasses.dataclass(frozen=True)
class ReferenceRow:
    """One row of the configuration reference.

    Attributes
    ----------
    setting : str
        The ``RedisParam``/``Settings`` argument, or ``""`` for an option of the command line only.
    type : str
        The accepted type(s).
    default : str
        The default, as Python (settings) or as the command line shows it; ``""`` when there is none.
    env : tuple of str
        Environment variables that ``Settings`` (so ``RedisParam`` and the commands) reads for it, highest
        precedence first.
    command_env : tuple of str
        Environment variables that only the commands read for it (click's ``envvar`` of the option).
    config_key : str
        The dask config key read for it, or ``""``.
    cli : tuple of str
        The command-line flags that set it.
    commands : tuple of str
        The commands that take those flags (``worker`` is also ``dask-redisparam-worker``).
    description : str
        What it does (Markdown).
    applied : bool or None
        Whether the package uses the setting yet (None for a command-line option).
    """

    setting: str
    type: str
    default: str
    env: tuple[str, ...]
    command_env: tuple[str, ...]
    config_key: str
    cli: tuple[str, ...]
    commands: tuple[str, ...]
    description: str
    applied: bool | None


# --------------------------------------------------------------------------------------------- descriptions
def rst_to_markdown(text: str) -> str:
    """reST inline markup of a docstring as Markdown, on one line.

    Examples
    --------
    >>> rst_to_markdown("See :class:`~dask_redisparam.RedisParam` and ``x``.")
    'See `dask_redisparam.RedisParam` and `x`.'
    """
    text = _ROLE.sub(r"`\1`", text).replace("``", "`")
    return " ".join(text.split())


def settings_parameters() -> dict[str, tuple[str, str]]:
    """Every setting's type and description (Markdown): name -> (type, description), from the settings table.

    Examples
    --------
    >>> settings_parameters()["stop_on_error"]
    ('bool', 'Stop the run at the first failed task.')
    """
    return {s.name: (s.accepts.replace(" | ", " or "), rst_to_markdown(s.doc)) for s in SETTINGS}


def applied_settings(package: str | os.PathLike[str] | None = None) -> set[str]:
    """Names of the settings that package modules read from a ``settings`` object (not just store).

    Parameters
    ----------
    package : path, optional
        The package's directory; default this package's.

    Examples
    --------
    >>> {"workers", "jobname", "url"} <= applied_settings()
    True
    """
    root = Path(package) if package is not None else Path(__file__).parents[1]
    used: set[str] = set()
    for path in sorted(root.rglob("*.py")):  # the subpackages too, but not the docs tools
        if path.name in ("settings.py", "schema.py") or path.parent.name == "_docs":  # declare, not use
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if name == "settings":
                used.add(node.attr)
    if "address" in used or "to_env" in used:
        used.update(SERVER_FIELDS)
    if "to_env" in used:
        used.add("jobname")
    if "threshold_level" in used:
        used.add("threshold")
    return used


# --------------------------------------------------------------------------------------------- command line
def _commands() -> list[tuple[str, click.Command]]:
    from ..cli import main, worker_command

    commands: list[tuple[str, click.Command]] = list(main.commands.items())
    if all(command is not worker_command for _, command in commands):
        commands.insert(0, ("worker", worker_command))
    return commands


def cli_options() -> list[tuple[str, click.Option]]:
    """Every visible option of every command: ``(command name, option)``, in the order ``--help`` shows them.

    The commands are those of the ``dask-redisparam`` group (also ``dask redisparam``) and
    ``dask-redisparam-worker`` (the group's ``worker``).

    Examples
    --------
    >>> ("status", "--interval") in [(c, o.opts[0]) for c, o in cli_options()]
    True
    """
    import click

    out = []
    for name, command in _commands():
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                out.append((name, param))
    return out


def _flags(option: click.Option) -> tuple[str, ...]:
    return tuple(sorted([*option.opts, *option.secondary_opts], key=lambda flag: (not flag.startswith("--"), flag)))


def _option_type(option: click.Option) -> str:
    if option.is_flag:
        return "flag"
    if option.count:
        return "count"
    return option.type.name


def _option_default(option: click.Option) -> str:
    if option.required:
        return "required"
    default = option.default
    if isinstance(default, (bool, int, float, str)) and not (option.is_flag and default is False):
        return repr(default)
    return ""


def _envvars(option: click.Option) -> tuple[str, ...]:
    if option.envvar is None:
        return ()
    return (option.envvar,) if isinstance(option.envvar, str) else tuple(option.envvar)


# --------------------------------------------------------------------------------------------- the rows
def reference_rows() -> list[ReferenceRow]:
    """Every setting, then every command-line-only option, as rows of the reference.

    Returns
    -------
    list of ReferenceRow
        The settings in field order, then the options that set no setting, in ``--help`` order.

    Examples
    --------
    >>> rows = reference_rows()
    >>> [r.setting for r in rows][:3]
    ['workers', 'jobname', 'is_worker']
    >>> next(r for r in rows if r.cli == ("--nworkers",)).default
    '1'
    """
    documented = settings_parameters()
    applied = applied_settings()
    options: dict[str, list[tuple[str, click.Option]]] = {}
    for command, option in cli_options():
        options.setdefault(option.name or option.opts[0], []).append((command, option))
    rows = []
    for setting in SETTINGS:
        kind, description = documented[setting.name]
        cli = options.pop(setting.name, [])
        command_env = tuple(dict.fromkeys(v for _, o in cli for v in _envvars(o) if v not in setting.env))
        rows.append(
            ReferenceRow(
                setting=setting.name,
                type=kind,
                default=repr(setting.default),
                env=setting.env,
                command_env=command_env,
                config_key=f"redisparam.{setting.name}" if setting.config else "",
                cli=_flags(cli[0][1]) if cli else (),
                commands=tuple(dict.fromkeys(c for c, _ in cli)),
                description=description,
                applied=setting.name in applied,
            )
        )
    for uses in options.values():
        first = uses[0][1]
        rows.append(
            ReferenceRow(
                setting="",
                type=_option_type(first),
                default=_option_default(first),
                env=(),
                command_env=tuple(dict.fromkeys(v for _, o in uses for v in _envvars(o))),
                config_key="",
                cli=_flags(first),
                commands=tuple(dict.fromkeys(c for c, _ in uses)),
                description=rst_to_markdown(first.help or ""),
                applied=None,
            )
        )
    return rows


def _code(items: Sequence[str]) -> str:
    return ", ".join(f"`{item}`" for item in items) or "—"


def render_markdown(rows: Sequence[ReferenceRow]) -> str:
    """The rows as one Markdown table of three columns, narrow enough for a 1280 px screen (with a trailing
    newline): the setting (its name, type and default), where it is set (environment, dask config key, CLI flag:
    one per line) and what it does.

    Examples
    --------
    >>> row = ReferenceRow("x", "int", "1", ("X",), ("Y",), "", (), (), "An x.", False)
    >>> print(render_markdown([row]).splitlines()[-1])
    | `x`<br>int<br>default `1` | env: `X`, `Y` (commands) | **Accepted, not applied yet.** An x. |
    """
    lines = ["| Setting | Set with | Description |", "|---|---|---|"]
    for row in rows:
        setting = [f"`{row.setting}`" if row.setting else "*(CLI only)*", row.type or "—"]
        if row.default:
            setting.append(f"default `{row.default}`")
        where = []
        env = ", ".join(f"`{name}`" for name in row.env)
        if row.command_env:
            env += (", " if env else "") + ", ".join(f"`{name}`" for name in row.command_env) + " (commands)"
        if env:
            where.append(f"env: {env}")
        if row.config_key:
            variable = "DASK_" + row.config_key.upper().replace(".", "__")
            where.append(f"dask: `{row.config_key}`, `{variable}`")
        if row.cli:
            where.append(f"CLI: {_code(row.cli)}" + (f" ({', '.join(row.commands)})" if row.commands else ""))
        status = "**Accepted, not applied yet.** " if row.applied is False else ""
        cells = ["<br>".join(setting), "<br>".join(where) or "—", status + row.description]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
