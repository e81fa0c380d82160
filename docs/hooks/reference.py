"""MkDocs hook: fill in the pages' generated parts from the code, at build time.

A page asks for a generated part with a marker on a line of its own:

``<!-- reference:config -->``
    the configuration reference table (:mod:`dask_redisparam._docs.reference`);
``<!-- reference:dask-yaml -->``
    the packaged ``redisparam.yaml`` (the dask config defaults);
``<!-- reference:dask-registration -->``
    how those defaults reach dask (at import, or by calling the registration function);
``<!-- reference:cli-help -->``
    the ``--help`` text of every command;
``<!-- reference:error-classes -->``
    the exception classes of :mod:`dask_redisparam.errors`;
``<!-- reference:error-messages -->``
    every message that the package's code raises or logs as a warning or error, found by reading its source
    (:func:`error_messages`, :func:`log_messages`), grouped by exception class.

A figure drawn from a real run at build time, ``<!-- figure:timeline -->``, becomes the timeline of a run computed
on an embedded server with two workers (:mod:`dask_redisparam._docs.figures`), with a caption that says what it
shows; the PNG joins the site as ``img/timeline-run.png`` (:func:`on_files` starts the run in a thread, beside the
rendering of the first pages).

A status cell anywhere, ``<!-- status:NAME -->``, becomes "now" if ``NAME`` (a dotted name such as
``dask_redisparam.try_compute``) exists, else "planned"; ``<!-- status:NAME:KEYWORD -->`` also needs ``KEYWORD``
among the object's parameters or as ````KEYWORD=```` in its docstring; ``<!-- status:setting:FIELD -->`` is "now"
for a setting that the package applies and "accepted" for one it only validates and stores.

The docstrings use Sphinx roles (``:class:`~x.Y```), which mkdocstrings shows as they are; the pages' HTML gets
them as plain code (``Y``) instead.

Nothing here is a page: ``mkdocs.yml`` excludes ``docs/hooks/`` from the site.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import dask.config
from mkdocs.structure.files import File, Files

import dask_redisparam
from dask_redisparam import errors
from dask_redisparam._docs import figures
from dask_redisparam._docs import reference as config_reference
from dask_redisparam.config import defaults

PACKAGE = Path(dask_redisparam.__file__).parent
_CLICK_ERRORS = {"UsageError", "ClickException", "BadParameter", "Abort"}
_LOG_METHODS = {"warning": "WARNING", "error": "ERROR", "exception": "ERROR", "critical": "CRITICAL"}


# ------------------------------------------------------------------------------------------ error classes
def error_classes() -> list[type[BaseException]]:
    """The exception classes defined in ``dask_redisparam.errors``, in source order."""
    found = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    ]
    return sorted(found, key=lambda cls: inspect.getsourcelines(cls)[1])


def _first_paragraph(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    text = doc.split("\n\n", 1)[0]
    return config_reference.rst_to_markdown(text)


def render_error_classes() -> str:
    lines = ["| Exception | Derives from | Meaning |", "|---|---|---|"]
    for cls in error_classes():
        bases = ", ".join(f"`{base.__name__}`" for base in cls.__bases__)
        lines.append(f"| [`{cls.__name__}`](#{cls.__name__.lower()}) | {bases} | {_first_paragraph(cls)} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ messages in the source
def _template(node: ast.expr) -> str | None:
    """A message expression as a template: literal text, with ``{expression}`` for each interpolated part."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                conversion = {-1: "", 115: "!s", 114: "!r", 97: "!a"}[value.conversion]
                spec = ""
                if isinstance(value.format_spec, ast.JoinedStr):
                    spec = ":" + "".join(str(v.value) for v in value.format_spec.values if isinstance(v, ast.Constant))
                parts.append("{" + ast.unparse(value.value) + conversion + spec + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _template(node.left), _template(node.right)
        if left is not None or right is not None:
            return (left or "{" + ast.unparse(node.left) + "}") + (right or "{" + ast.unparse(node.right) + "}")
    return None


def _callee(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


class _Finder(ast.NodeVisitor):
    """Collect ``(exception, template, where)`` and ``(level, template, where)`` from one module."""

    def __init__(self, module: str, exceptions: set[str]) -> None:
        self.module, self.exceptions = module, exceptions
        self.scope: list[str] = []
        self.raised: list[tuple[str, str, str]] = []
        self.logged: list[tuple[str, str, str]] = []

    def _where(self) -> str:
        return ".".join([self.module, *self.scope])

    def _scoped(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _scoped

    def visit_Call(self, node: ast.Call) -> None:
        name = _callee(node)
        template = _template(node.args[0]) if node.args else None
        if template is not None:
            if name in self.exceptions:
                self.raised.append((name, template, self._where()))
            elif name == "__init__" and self.scope and self.scope[0] in self.exceptions:
                self.raised.append((self.scope[0], template, self._where()))  # super().__init__(message)
            elif name in _LOG_METHODS and isinstance(node.func, ast.Attribute):
                self.logged.append((_LOG_METHODS[name], template, self._where()))
        self.generic_visit(node)


def _exception_names() -> set[str]:
    names = {cls.__name__ for cls in error_classes() if cls is not errors.StopRequested}
    names |= {n for n, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, Exception)}
    return names | _CLICK_ERRORS


def _scan() -> Iterator[_Finder]:
    exceptions = _exception_names()
    for path in sorted(PACKAGE.rglob("*.py")):  # subpackages too: backend/client.py is "backend.client"
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        finder = _Finder(module.removesuffix(".__init__"), exceptions)
        finder.visit(ast.parse(path.read_text(encoding="utf-8")))
        yield finder


def error_messages() -> list[tuple[str, str, str]]:
    """Every ``(exception class, message template, module.function)`` that the package's source raises."""
    return [item for finder in _scan() for item in finder.raised]


def log_messages() -> list[tuple[str, str, str]]:
    """Every ``(level, message template, module.function)`` that the package logs at WARNING or above."""
    return [item for finder in _scan() for item in finder.logged]


def _code(text: str) -> str:
    text = " ".join(text.split())
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render_error_messages() -> str:
    order = [cls.__name__ for cls in error_classes()]
    by_class: dict[str, list[tuple[str, str]]] = {}
    for name, template, where in error_messages():
        by_class.setdefault(name, []).append((template, where))
    names = sorted(by_class, key=lambda n: (n not in order, order.index(n) if n in order else 0, n))
    lines = []
    for name in names:
        lines.append(f"**`{name}`**\n")
        for template, where in by_class[name]:
            lines.append(f"- {_code(template)} <small>({where})</small>")
        lines.append("")
    lines.append("**Logged warnings and errors** (on the manager's or the worker's stderr)\n")
    for level, template, where in log_messages():
        lines.append(f"- {level}: {_code(template)} <small>({where})</small>")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ CLI help, yaml
def render_cli_help() -> str:
    from dask_redisparam.cli import main, worker_command

    parts = []
    commands: list[tuple[str, click.Command, click.Context | None]] = [("dask-redisparam", main, None)]
    group_ctx = click.Context(main, info_name="dask-redisparam")
    commands += [(f"dask-redisparam {name}", cmd, group_ctx) for name, cmd in main.commands.items()]
    for name, cmd in main.commands.items():  # the commands of a group (``server status``...), hidden ones left out
        if isinstance(cmd, click.Group):
            sub_ctx = click.Context(cmd, info_name=name, parent=group_ctx)
            commands += [
                (f"dask-redisparam {name} {sub}", subcommand, sub_ctx)
                for sub, subcommand in cmd.commands.items()
                if not subcommand.hidden
            ]
    commands.append(("dask-redisparam-worker", worker_command, None))
    for title, command, parent in commands:
        info = title.rsplit(" ", 1)[-1]
        with click.Context(command, info_name=info, parent=parent, terminal_width=100) as ctx:
            text = command.get_help(ctx)
        parts.append(f"### `{title}`\n\n```text\n{text}\n```\n")
    return "\n".join(parts)


def render_dask_yaml() -> str:
    text = defaults.CONFIG_FILE.read_text(encoding="utf-8")
    return f'```yaml title="dask_redisparam/config/redisparam.yaml"\n{text.rstrip()}\n```\n'


def render_dask_registration() -> str:
    registered = any("redisparam" in entry for entry in dask.config.defaults)  # importing the package did it
    when = (
        "Importing `dask_redisparam` registers them"
        if registered
        else "`dask_redisparam.config.defaults.register_dask_defaults()` registers them"
    )
    return (
        f'{when} with `dask.config.update_defaults`, so `dask.config.get("redisparam.queue_multiplier")` '
        "gives `2.0`. Values set before, in a dask config file or a `DASK_REDISPARAM__*` variable, win.\n"
    )


_PARTS = {
    "<!-- reference:config -->": lambda: config_reference.render_markdown(config_reference.reference_rows()).replace(
        "see the module documentation", "see [where the Redis server comes from](#where-the-redis-server-comes-from)"
    ),
    "<!-- reference:dask-yaml -->": render_dask_yaml,
    "<!-- reference:dask-registration -->": render_dask_registration,
    "<!-- reference:cli-help -->": render_cli_help,
    "<!-- reference:error-classes -->": render_error_classes,
    "<!-- reference:error-messages -->": render_error_messages,
}


def _resolve(dotted: str) -> Any:
    """The object a dotted name names, or None."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute, None)
        return obj
    return None


def status(spec: str) -> str:
    """The status a ``<!-- status:... -->`` marker stands for: "now", "accepted" or "planned"."""
    if spec.startswith("setting:"):
        field = spec.split(":", 1)[1]
        rows = {row.setting: row for row in config_reference.reference_rows() if row.setting}
        return "planned" if field not in rows else "now" if rows[field].applied else "accepted"
    name, _, keyword = spec.partition(":")
    obj = _resolve(name)
    if obj is None:
        return "planned"
    if keyword:
        try:
            parameters = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            parameters = {}  # type: ignore[assignment]
        if keyword not in parameters and f"``{keyword}=" not in (inspect.getdoc(obj) or ""):
            return "planned"
    return "now"


_STATUS = re.compile(r"<!-- status:([\w.:]+) -->")


TIMELINE_PNG = "img/timeline-run.png"
_FIGURE = "<!-- figure:timeline -->"


class _Drawing(threading.Thread):
    """The demo run and its timeline, drawn beside the rendering of the first pages (the API page takes longest);
    :meth:`caption` waits for it."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="docs-timeline", daemon=True)
        self.path, self.error = path, None
        self._caption = ""

    def run(self) -> None:
        try:
            png, self._caption = figures.timeline_figure(figures.demo_run())
            self.path.write_bytes(png)
        except BaseException as e:  # noqa: B036 - re-raised in the build's thread by caption()
            self.error = e

    def caption(self) -> str:
        self.join()
        if self.error is not None:
            raise RuntimeError(f"the docs' timeline figure could not be drawn: {self.error}") from self.error
        return self._caption


_drawing: _Drawing | None = None


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    """MkDocs event: start the demo run whose timeline joins the site as :data:`TIMELINE_PNG`."""
    global _drawing
    path = Path(tempfile.mkdtemp(prefix="drp-docs-")) / "timeline-run.png"
    _drawing = _Drawing(path)
    _drawing.start()
    files.append(File.generated(config, TIMELINE_PNG, abs_src_path=str(path)))
    return files


def on_env(env: Any, config: Any, files: Files, **kwargs: Any) -> Any:
    """MkDocs event, before the files are copied: the figure is drawn (even if no page shows it)."""
    if _drawing is not None:
        _drawing.caption()
    return env


def render_timeline_figure(page_uri: str) -> str:
    assert _drawing is not None, "on_files starts the drawing"
    caption = _drawing.caption()
    src = "../" * page_uri.count("/") + TIMELINE_PNG
    return (
        f'<figure markdown="span">\n  ![The timeline of a real run: {caption}]({src})\n'
        f"  <figcaption>Drawn by <code>plot_timeline(p.timeline())</code> when these pages were built: {caption}. "
        "One lane per worker; colours are task prefixes.</figcaption>\n</figure>\n"
    )


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs event: replace each marker with its generated Markdown."""
    for marker, render in _PARTS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    if _FIGURE in markdown:
        markdown = markdown.replace(_FIGURE, render_timeline_figure(kwargs["page"].file.src_uri))
    return _STATUS.sub(lambda m: status(m.group(1)), markdown)


_ROLE_HTML = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>(~?)([^<]*)</code>")


def on_page_content(html: str, **kwargs: Any) -> str:
    """MkDocs event: Sphinx roles left in rendered docstrings become plain code (``~`` keeps the last name)."""
    return _ROLE_HTML.sub(lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html)
