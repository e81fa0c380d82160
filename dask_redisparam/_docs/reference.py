"""The configuration reference, built from the code: every setting, environment variable, dask config key and flag.

Nothing here is written by hand, so the reference cannot drift from the code:

* the settings are the fields of :class:`~dask_redisparam.settings.Settings`; their types and defaults come from
  its constructor's signature, their descriptions from the "Parameters" section of its (numpydoc) docstring;
* an environment variable or a dask config key is listed for a setting only if ``Settings`` reads it: each
  candidate (``REDISPARAM_<NAME>``, ``REDIS_<NAME>``, ``redisparam.<name>``) is *probed* by building a
  ``Settings`` with and without it and comparing what was resolved;
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
| Setting | Type | Default | Environment | dask config key | CLI flag | Description |
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.config

from ..config.settings import Settings
from ..errors import ConfigurationError

if TYPE_CHECKING:  # click is imported only when the reference is built
    import click

__all__ = [
    "ReferenceRow",
    "applied_settings",
    "cli_options",
    "reference_rows",
    "render_markdown",
    "settings_parameters",
]

_SERVER_FIELDS = ("host", "port", "password", "username", "url", "tls_ca_file", "tls_cert_file", "tls_key_file")
_SECTION = re.compile(r"^(?P<title>[A-Z][A-Za-z ]*)\n-{3,}$", re.MULTILINE)
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


# --------------------------------------------------------------------------------------------- docstrings
def _markdown(text: str) -> str:
    """reST inline markup of a docstring as Markdown, on one line."""
    text = _ROLE.sub(r"`\1`", text).replace("``", "`")
    return " ".join(text.split())


def settings_parameters() -> dict[str, tuple[str, str]]:
    """The "Parameters" section of the ``Settings`` docstring: name -> (type, description).

    A line naming several parameters (``host, port : optional``) gives each of them the same entry.

    Examples
    --------
    >>> settings_parameters()["stop_on_error"]
    ('bool', 'Stop the run at the first failed task.')
    """
    doc = inspect.getdoc(Settings) or ""
    sections = list(_SECTION.finditer(doc))
    body = ""
    for i, match in enumerate(sections):
        if match.group("title") == "Parameters":
            end = sections[i + 1].start() if i + 1 < len(sections) else len(doc)
            body = doc[match.end() : end]
    out: dict[str, tuple[str, str]] = {}
    names: list[str] = []
    kind, lines = "", list[str]()
    for line in [*body.splitlines(), "<end>"]:
        if line and not line[0].isspace():  # a new "name : type" line
            for name in names:
                out[name] = (kind, _markdown(" ".join(lines)))
            head, _, kind = line.partition(" : ")
            names, kind, lines = [n.strip() for n in head.split(",")], kind.strip(), []
        elif line.strip():
            lines.append(line.strip())
    return out


# --------------------------------------------------------------------------------------------- probing
@contextmanager
def _config_cleared(extra: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Every ``redisparam.*`` dask config key unset (plus ``extra``), so probes see only what they set."""
    values: dict[str, Any] = {f"redisparam.{f.name}": None for f in dataclasses.fields(Settings) if f.init}
    values.update(extra or {})
    with dask.config.set(values):
        yield


def _probe_base(field: str) -> dict[str, Any]:
    """Arguments a probe needs besides the probed value (a credential needs a server; logdir needs log)."""
    if field in ("password", "username"):
        return {"host": "probe-base.invalid"}
    if field == "logdir":
        return {"log": True}
    return {}


def _probe_value(field: str, default: Any, annotation: str) -> Any:
    """A valid value, other than the default, to set a setting to while probing."""
    special: dict[str, Any] = {
        "url": "redis://probe.invalid:7002/0",
        "host": "probe.invalid",
        "port": 7001,
        "is_worker": True,
        "threshold": "DEBUG",
        "logdir": tempfile.gettempdir(),
        "resultdir": tempfile.gettempdir(),
    }
    if field in special:
        return special[field]
    if isinstance(default, bool):
        return not default
    if "float" in annotation:
        return (default or 1.0) + 1.5
    if "int" in annotation:
        return (default or 0) + 7
    return "probe-value"


def _reads(field: str, value: Any, environ: Mapping[str, str], config: Mapping[str, Any]) -> bool:
    """Whether ``Settings`` takes ``value`` for ``field`` from ``environ`` or ``config``.

    A server field counts when the resolved address changes; any other field when it takes the probed value
    (compared with the value itself, since some defaults, such as a fresh jobname, differ on every call).
    """
    base = _probe_base(field)
    try:
        with _config_cleared(config):
            after = Settings(**base, environ=environ)
        if field not in _SERVER_FIELDS:
            return bool(getattr(after, field) == value)
        with _config_cleared():
            before = Settings(**base, environ={})
    except ConfigurationError:  # the probe value was read and rejected: it is read
        return True
    return before.address != after.address


def _signature() -> Mapping[str, inspect.Parameter]:
    return inspect.signature(Settings.__init__).parameters


def _env_vars(field: str, default: Any, annotation: str) -> tuple[str, ...]:
    value = _probe_value(field, default, annotation)
    names = (f"REDISPARAM_{field.upper()}", f"REDIS_{field.upper()}")
    return tuple(name for name in names if _reads(field, value, {name: str(value)}, {}))


def _config_key(field: str, default: Any, annotation: str) -> str:
    key, value = f"redisparam.{field}", _probe_value(field, default, annotation)
    return key if _reads(field, value, {}, {key: value}) else ""


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
    for path in sorted(root.rglob("*.py")):  # the subpackages too; not settings.py itself nor the docs tools
        if path.name == "settings.py" or path.parent.name == "_docs":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if name == "settings":
                used.add(node.attr)
    if "address" in used or "to_env" in used:
        used.update(_SERVER_FIELDS)
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
    signature = _signature()
    applied = applied_settings()
    fields = [f.name for f in dataclasses.fields(Settings) if f.init]
    options: dict[str, list[tuple[str, click.Option]]] = {}
    for command, option in cli_options():
        options.setdefault(option.name or option.opts[0], []).append((command, option))
    rows = []
    for field in fields:
        parameter = signature.get(field)
        default = None if parameter is None else parameter.default
        annotation = "" if parameter is None else str(parameter.annotation)
        kind, description = documented.get(field, ("", ""))
        cli = options.pop(field, [])
        env = _env_vars(field, default, annotation)
        command_env = tuple(dict.fromkeys(v for _, o in cli for v in _envvars(o) if v not in env))
        rows.append(
            ReferenceRow(
                setting=field,
                type=annotation.replace(" | ", " or ") or kind,
                default=repr(default) if parameter is not None else "",
                env=env,
                command_env=command_env,
                config_key=_config_key(field, default, annotation),
                cli=_flags(cli[0][1]) if cli else (),
                commands=tuple(dict.fromkeys(c for c, _ in cli)),
                description=description,
                applied=field in applied,
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
                description=_markdown(first.help or ""),
                applied=None,
            )
        )
    return rows


def _code(items: Sequence[str]) -> str:
    return ", ".join(f"`{item}`" for item in items) or "—"


def render_markdown(rows: Sequence[ReferenceRow]) -> str:
    """The rows as one Markdown table (with a trailing newline).

    Examples
    --------
    >>> row = ReferenceRow("x", "int", "1", ("X",), ("Y",), "", (), (), "An x.", False)
    >>> print(render_markdown([row]).splitlines()[-1])
    | `x` | int | `1` | `X`, `Y` (commands) | — | — | **Accepted, not applied yet.** An x. |
    """
    lines = [
        "| Setting | Type | Default | Environment | dask config key | CLI flag | Description |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        setting = f"`{row.setting}`" if row.setting else "*(CLI only)*"
        config = "—"
        if row.config_key:
            variable = "DASK_" + row.config_key.upper().replace(".", "__")
            config = f"`{row.config_key}`<br>`{variable}`"
        env = ", ".join(f"`{name}`" for name in row.env)
        if row.command_env:
            env += (", " if env else "") + ", ".join(f"`{name}`" for name in row.command_env) + " (commands)"
        cli = _code(row.cli)
        if row.commands:
            cli += f" ({', '.join(row.commands)})"
        status = "**Accepted, not applied yet.** " if row.applied is False else ""
        cells = [
            setting,
            row.type or "—",
            f"`{row.default}`" if row.default else "—",
            env or "—",
            config,
            cli,
            status + row.description,
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
