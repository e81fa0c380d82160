"""The documentation site: it builds with ``mkdocs build --strict``, and its generated parts cover the code."""

from __future__ import annotations

import dataclasses
import html
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest

from dask_redisparam import RedisParam, errors
from dask_redisparam._docs import reference as config_reference
from dask_redisparam.cli import main, worker_command
from dask_redisparam.config import defaults
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.config.settings import Settings

from .conftest import CliWorkers

ROOT = Path(__file__).resolve().parent.parent
BUILD_SECONDS = 60.0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module with ``mkdocs build --strict`` (what ci/docs.sh runs)."""
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
        + ["--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_SECONDS * 2,
    )
    took = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr
    assert took < BUILD_SECONDS, f"mkdocs build took {took:.0f} s"
    return out


def _text(page: Path) -> str:
    """A built page's text, tags removed and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def _code_blocks(page: Path) -> str:
    """The text of a built page's code blocks (syntax highlighting removed)."""
    raw = page.read_text(encoding="utf-8")
    return "\n".join(html.unescape(re.sub(r"<[^>]+>", "", block)) for block in re.findall(r"<pre.*?</pre>", raw, re.S))


def _codes(page: Path) -> set[str]:
    """Every ``<code>`` span of a built page."""
    raw = page.read_text(encoding="utf-8")
    return {html.unescape(re.sub(r"<[^>]+>", "", m)) for m in re.findall(r"<code>(.*?)</code>", raw, re.S)}


def _visible_options() -> list[tuple[str, click.Option]]:
    """Every option a user can give: the dask-redisparam group's commands and dask-redisparam-worker."""
    commands = [*main.commands.items(), ("dask-redisparam-worker", worker_command)]
    return [
        (name, param)
        for name, command in commands
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden
    ]


def _settings_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings) if f.init]


# ------------------------------------------------------------------------------------------------ the build
def test_site_builds_strict(site: Path) -> None:
    for page in ("index.html", "configuration/index.html", "troubleshooting/index.html", "api/index.html"):
        assert (site / page).is_file(), page
    for name in os.listdir(ROOT / "docs" / "deploy"):  # the deployment files are downloadable from the site
        assert (site / "deploy" / name).is_file(), name
    assert not (site / "hooks").exists()


def test_every_marker_was_filled_in(site: Path) -> None:
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<!-- reference:" not in text and "<!-- status:" not in text, page


def test_configuration_reference_lists_every_setting_and_option(site: Path) -> None:
    page = site / "configuration" / "index.html"
    codes = _codes(page)
    missing = [field for field in _settings_fields() if field not in codes]
    assert not missing, f"settings missing from the configuration reference: {missing}"
    flags = {flag for _, option in _visible_options() for flag in [*option.opts, *option.secondary_opts]}
    assert not sorted(flags - codes), "CLI options missing from the configuration reference"
    envvars = {option.envvar for _, option in _visible_options() if isinstance(option.envvar, str)}
    assert envvars <= codes
    text = _text(page)
    assert "REDISPARAM_URL" in text and "DASK_REDISPARAM__URL" in text


def test_api_reference_is_rendered(site: Path) -> None:
    text = _text(site / "api" / "index.html")
    for name in ("RedisParam", "redis_get", "rpstopall", "ConfigurationError", "RedisAddress"):
        assert name in text, name


def test_api_page_shows_the_explicit_redisparam_signature(site: Path) -> None:
    """The signature of RedisParam on the API page is the generated one: every setting, in order, no ``**kwargs``."""
    raw = (site / "api" / "index.html").read_text(encoding="utf-8")
    start = raw.index('id="dask_redisparam.RedisParam"')
    block = html.unescape(re.sub(r"<[^>]+>", "", re.search(r"<pre.*?</pre>", raw[start:], re.S).group(0)))  # type: ignore[union-attr]
    names = re.findall(r"^\s+(\w+):", block, re.M)
    assert names == [*inspect.signature(RedisParam).parameters], block
    assert "**" not in block and "environ" in names


def test_configuration_table_fits_a_1280_px_screen(site: Path) -> None:
    """Three columns, and no unbreakable name longer than 40 characters in a cell (seen at 1280 px in chromium:
    no sideways scrolling)."""
    raw = (site / "configuration" / "index.html").read_text(encoding="utf-8")
    table = next(t for t in re.findall(r"<table>.*?</table>", raw, re.S) if "Set with" in t)
    assert [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<th.*?</th>", table, re.S)] == [
        "Setting",
        "Set with",
        "Description",
    ]
    longest = max((html.unescape(c) for c in re.findall(r"<code>(.*?)</code>", table, re.S)), key=len)
    assert len(longest) <= 40, longest


def test_pages_show_the_timeline_of_a_real_run(site: Path) -> None:
    """The docs build computes a pipeline of four task prefixes on two workers and draws its timeline."""
    import matplotlib.image
    import numpy as np

    from dask_redisparam._docs import figures

    raw = (site / "concepts" / "index.html").read_text(encoding="utf-8")
    tag = re.search(r'<img alt="The timeline of a real run: ([^"]*)" src="../img/timeline-run.png"', raw)
    assert tag is not None
    ntasks = 3 * figures.PARTITIONS + 1
    assert tag.group(1).startswith(f"{ntasks} tasks of 4 prefixes (load, clean, fit, summarize) on 2 workers, ")
    pixels = matplotlib.image.imread(site / "img" / "timeline-run.png")[..., :3]
    assert pixels.shape[1] >= 800 and pixels.std() > 0.1  # not blank
    colours = {(int(r), int(g), int(b)) for r, g, b in np.rint(pixels.reshape(-1, 3) * 255)}
    for name in ("tab:blue", "tab:orange", "tab:green", "tab:purple"):  # the four prefixes' bars
        r, g, b = (round(c * 255) for c in matplotlib.colors.to_rgb(name))
        assert (r, g, b) in colours, name


def test_api_page_shows_the_public_names_only() -> None:
    """Every object on the API page is a name of the package's ``__all__`` (the errors module shows its docstring,
    with the tree, and only public members), and every such name is on the page."""
    import dask_redisparam

    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    public = set(dask_redisparam.__all__)
    shown: set[str] = set()
    for target, options in re.findall(r"^::: (\S+)\n((?:    .*\n)*)", page, re.M):
        if target == "dask_redisparam.errors":
            members = set(re.findall(r"^        - (\w+)$", options, re.M))
            assert members and members <= public, members - public
            shown |= members
        else:
            assert target.startswith("dask_redisparam.") and target.split(".", 1)[1] in public, target
            shown.add(target.split(".", 1)[1])
    assert public - shown == set()


def test_pages_include_the_deployment_files(site: Path) -> None:
    """The guides show the files of docs/deploy/ themselves (pymdownx.snippets), not copies."""
    guides = {
        "worker-deployment.yaml": "guides/kubernetes/index.html",
        "keda-scaledobject.yaml": "guides/kubernetes/index.html",
        "slurm-workers.sh": "guides/slurm/index.html",
        "dask-redisparam-worker@.service": "guides/systemd/index.html",
        "redis-users.acl": "security/index.html",
    }
    for name, page in guides.items():
        shown = {line.rstrip() for line in _code_blocks(site / page).splitlines()}
        for line in (ROOT / "docs" / "deploy" / name).read_text(encoding="utf-8").splitlines():
            assert line.rstrip() in shown, (name, line)


# ------------------------------------------------------------------------------------------------ troubleshooting
def _error_classes() -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    ]


def test_troubleshooting_explains_every_exception_class() -> None:
    source = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### (\w+)$", source, re.M))
    missing = [cls.__name__ for cls in _error_classes() if cls.__name__ not in headings]
    assert not missing, f"docs/troubleshooting.md has no section for {missing}"


def _hook() -> Any:
    """The build hook, docs/hooks/reference.py, as a module."""
    spec = importlib.util.spec_from_file_location("docs_hook_reference", ROOT / "docs" / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_status_markers_follow_the_code() -> None:
    status = _hook().status
    assert status("dask_redisparam.rpalive") == status("dask_redisparam.RedisParam.stop_all") == "now"
    assert status("dask_redisparam.no_such_function") == status("dask_redisparam.RedisParam.no_such") == "planned"
    assert status("dask_redisparam.RedisParam.get:fuse_chains") == "now"  # a keyword named in the docstring
    assert status("dask_redisparam.RedisParam.get:no_such_keyword") == "planned"
    rows = {row.setting: row for row in config_reference.reference_rows() if row.setting}
    for field, row in rows.items():
        assert status(f"setting:{field}") == ("now" if row.applied else "accepted")
    assert status("setting:no_such_setting") == "planned"


def test_troubleshooting_lists_every_raised_message(site: Path) -> None:
    messages = _hook().error_messages()  # the build hook reads them from the package's source
    assert len(messages) > 30
    raised = {name for name, _, _ in messages}
    assert {"ConfigurationError", "ServerUnavailable", "WorkerConflict", "KilledWorker", "UsageError"} <= raised
    text = " ".join(_text(site / "troubleshooting" / "index.html").split())
    for name, template, _ in messages:
        assert " ".join(template.split()) in text, (name, template)
    for cls in _error_classes():
        assert cls.__name__ in text


# ------------------------------------------------------------------------------------------------ the reference
def test_reference_rows_cover_settings_and_commands() -> None:
    rows = config_reference.reference_rows()
    assert [row.setting for row in rows if row.setting] == _settings_fields()
    covered = {flag for row in rows for flag in row.cli}
    flags = {flag for _, option in _visible_options() for flag in [*option.opts, *option.secondary_opts]}
    assert covered == flags
    by_name = {row.setting: row for row in rows if row.setting}
    assert by_name["host"].env == ("REDISPARAM_HOST", "REDIS_HOST")
    assert by_name["url"].env == ("REDISPARAM_URL",) and by_name["url"].config_key == "redisparam.url"
    assert by_name["jobname"].command_env == ("REDISPARAM_JOBNAME",)
    assert {"worker", "status", "stop-all", "alive", "clean"} <= set(by_name["port"].commands)
    table = config_reference.render_markdown(rows)
    assert table.count("\n") == len(rows) + 2


def test_reference_probes_what_settings_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The env/config columns come from Settings' behaviour: a variable it ignores is not listed."""
    rows = {row.setting: row for row in config_reference.reference_rows() if row.setting}
    assert rows["queue_multiplier"].env == ()  # Settings reads no QUEUE_MULTIPLIER variable
    for row in rows.values():
        for name in row.env:
            value = "redis://probe.invalid:1/0" if name.endswith("URL") else "7001" if "PORT" in name else "x"
            if "TLS" in name:
                value = __file__  # any readable file
            needs_location = row.setting in ("password", "username") or row.setting.startswith("tls_")
            base: dict[str, Any] = {"host": "h.invalid"} if needs_location else {}
            environ = {name: value}
            if name.endswith(("CERT_FILE", "KEY_FILE")):  # a client certificate goes with its key
                environ[name.replace("CERT_FILE", "KEY_FILE") if "CERT" in name else name.replace("KEY", "CERT")] = (
                    value
                )
            assert Settings(**base, environ=environ).address != Settings(**base, environ={}).address, name


def test_packaged_yaml_has_every_setting_with_its_default() -> None:
    packaged = defaults.config_defaults()["redisparam"]
    assert sorted(packaged) == sorted(_settings_fields())
    signature = inspect.signature(RedisParam).parameters  # the settings with their defaults (generated)
    for name, value in packaged.items():
        default = signature[name].default
        assert value == (list(default) if isinstance(default, tuple) else default), name  # YAML has no tuples


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_REDISPARAM", "REDISPARAM_", "REDIS_"))}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


_REGISTERED = """
import json, dask, dask_redisparam
from dask_redisparam.config import defaults
at_import = any("redisparam" in entry for entry in dask.config.defaults)
if not at_import:  # not registered when the package is imported (yet): register them as the package would
    defaults.register_dask_defaults()
defaults.register_dask_defaults()  # a second call changes nothing
print(json.dumps({"at_import": at_import, "config": dask.config.get("redisparam"),
                  "workers": dask.config.get("redisparam.workers"), "n": len(dask.config.defaults)}))
"""


def test_dask_config_defaults_are_registered() -> None:
    out = json.loads(_python(_REGISTERED))
    assert out["config"] == defaults.config_defaults()["redisparam"]
    assert out["workers"] is None and out["config"]["queue_multiplier"] == 2.0


def test_dask_config_environment_variables_win_over_the_defaults() -> None:
    out = json.loads(_python(_REGISTERED, DASK_REDISPARAM__QUEUE_MULTIPLIER="3.5", DASK_REDISPARAM__URL="redis://d:1"))
    assert out["config"]["queue_multiplier"] == 3.5 and out["config"]["url"] == "redis://d:1"
    assert out["config"]["heartbeat_ttl"] == 10.0
    code = "import dask_redisparam as d; print(d.RedisParam(is_worker=False).settings.address.describe())"
    assert _python(code, DASK_REDISPARAM__URL="redis://db.invalid:6390/0").strip() == "db.invalid:6390"


# ------------------------------------------------------------------------------------------------ dask's CLI
def test_dask_redisparam_status_through_dasks_cli(
    redis_address: RedisAddress, jobname: str, cli_workers: Callable[..., CliWorkers]
) -> None:
    cli_workers(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_"))}
    env["REDISPARAM_URL"] = redis_address.to_url(show_password=True)
    listed = subprocess.run(["dask", "--help"], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert re.search(r"^\s+redisparam\s", listed.stdout, re.M)
    result = subprocess.run(
        ["dask", "redisparam", "status", "--jobname", jobname, "--rate-window", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"job {jobname} on " in result.stdout
    assert "workers: 2 " in result.stdout and "queued messages: 0" in result.stdout
    alive = subprocess.run(["dask", "redisparam", "alive"], env=env, capture_output=True, text=True, timeout=60)
    assert alive.returncode == 0 and "alive" in alive.stdout
