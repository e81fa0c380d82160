"""The deployment files under docs/deploy/: schema checks, and their command lines run for real against Redis."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from operator import add
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import redis
import yaml  # type: ignore[import-untyped]

from dask_redisparam import RedisParam
from dask_redisparam.backend import Backend, keys
from dask_redisparam.config.address import RedisAddress
from dask_redisparam.config.names import validate_name
from dask_redisparam.dashboard import metrics as dashboard_metrics
from dask_redisparam.errors import AuthenticationFailed
from dask_redisparam.worker.server import EmbeddedRedis

from .conftest import wait_for_workers

DEPLOY = Path(__file__).resolve().parent.parent / "docs" / "deploy"
DEPLOYMENT = DEPLOY / "worker-deployment.yaml"
KEDA = DEPLOY / "keda-scaledobject.yaml"
SLURM = DEPLOY / "slurm-workers.sh"
UNIT = DEPLOY / "dask-redisparam-worker@.service"
ACL = DEPLOY / "redis-users.acl"

# Kubernetes versions the Deployment must be valid for: the oldest and the newest that kubernetes-validate knows.
K8S_VERSIONS = sorted({kubernetes_validate.utils.all_versions()[0], kubernetes_validate.latest_version()})


def _load_all(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Redis settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDISPARAM_", "REDIS_", "DASK_REDISPARAM"))}
    env.update(extra)
    return env


def _live(address: RedisAddress, jobname: str) -> list[str]:
    backend = Backend.connect(address)
    try:
        return backend.live_workers(jobname)
    finally:
        backend.close()


@contextmanager
def _daemon(argv: list[str], env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with its stderr in ``log``; at the end, make sure it is gone."""
    with log.open("wb") as fh, subprocess.Popen(argv, env=env, stderr=fh) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


def _stop(process: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """SIGTERM to the process only (systemd's KillMode=mixed, Kubernetes, scancel), then wait; kill if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


# ------------------------------------------------------------------------------------------------ Kubernetes
def _deployment() -> dict[str, Any]:
    (doc,) = _load_all(DEPLOYMENT)
    return doc


def _container_env(deployment: Mapping[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item for item in container["env"]}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_worker_deployment_matches_the_kubernetes_schema(version: str) -> None:
    deployment = _deployment()
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    kubernetes_validate.validate(deployment, version, strict=True)  # strict: no unknown fields anywhere


def test_worker_deployment_schema_check_catches_a_typo() -> None:
    deployment = _deployment()
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 300  # not a field of a PodSpec
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_worker_deployment_takes_its_settings_from_the_environment() -> None:
    deployment = _deployment()
    pod = deployment["spec"]["template"]["spec"]
    env = _container_env(deployment)
    assert pod["enableServiceLinks"] is False  # no REDIS_PORT=tcp://... from a service named redis
    assert env["REDISPARAM_PORT"]["value"].isdigit()
    assert "secretKeyRef" in env["REDISPARAM_PASSWORD"]["valueFrom"]  # never a literal password
    assert env["REDISPARAM_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    validate_name(env["REDISPARAM_JOBNAME"]["value"], "jobname")
    (container,) = pod["containers"]
    command = " ".join(container.get("command", []) + container.get("args", []))
    assert "dask-redisparam-worker" in command and "password" not in command.lower()
    assert pod["terminationGracePeriodSeconds"] >= 30  # room for a warm stop


# A minimal schema of the two KEDA objects, written from KEDA's documentation (ScaledObject specification,
# TriggerAuthentication, Redis Lists scaler); additionalProperties=False catches misspelled fields.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STRING_MAP},
    "additionalProperties": False,
}
KEDA_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {
                "apiVersion": {"const": "keda.sh/v1alpha1"},
                "kind": {"const": "TriggerAuthentication"},
                "metadata": _METADATA,
                "spec": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "secretTargetRef": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["parameter", "name", "key"],
                                "additionalProperties": False,
                                "properties": {
                                    "parameter": {"enum": ["password", "username", "address", "host", "port"]},
                                    "name": {"type": "string"},
                                    "key": {"type": "string"},
                                },
                            },
                        }
                    },
                },
            },
        },
        {
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {
                "apiVersion": {"const": "keda.sh/v1alpha1"},
                "kind": {"const": "ScaledObject"},
                "metadata": _METADATA,
                "spec": {
                    "type": "object",
                    "required": ["scaleTargetRef", "triggers"],
                    "additionalProperties": False,
                    "properties": {
                        "scaleTargetRef": {
                            "type": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "name": {"type": "string"},
                                "envSourceContainerName": {"type": "string"},
                            },
                        },
                        "pollingInterval": {"type": "integer", "minimum": 1},
                        "cooldownPeriod": {"type": "integer", "minimum": 0},
                        "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                        "idleReplicaCount": {"type": "integer", "minimum": 0},
                        "minReplicaCount": {"type": "integer", "minimum": 0},
                        "maxReplicaCount": {"type": "integer", "minimum": 1},
                        "triggers": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["type", "metadata"],
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"const": "redis"},
                                    "name": {"type": "string"},
                                    "metricType": {"enum": ["AverageValue", "Value"]},
                                    "authenticationRef": {
                                        "type": "object",
                                        "required": ["name"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "name": {"type": "string"},
                                            "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                                        },
                                    },
                                    "metadata": {  # every value of a trigger's metadata is a string
                                        "type": "object",
                                        "required": ["listName", "listLength"],
                                        "additionalProperties": False,
                                        "properties": {
                                            name: {"type": "string"}
                                            for name in (
                                                "address",
                                                "addressFromEnv",
                                                "host",
                                                "hostFromEnv",
                                                "port",
                                                "portFromEnv",
                                                "usernameFromEnv",
                                                "passwordFromEnv",
                                                "listName",
                                                "listLength",
                                                "activationListLength",
                                                "enableTLS",
                                                "unsafeSsl",
                                                "databaseIndex",
                                            )
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    ]
}


def test_keda_objects_match_the_schema() -> None:
    docs = _load_all(KEDA)
    assert sorted(doc["kind"] for doc in docs) == ["ScaledObject", "TriggerAuthentication"]
    for doc in docs:
        jsonschema.validate(doc, KEDA_SCHEMA)
    broken = [dict(doc) for doc in docs]
    broken[-1]["spec"] = dict(broken[-1]["spec"], minReplicas=1)  # the schema does catch a misspelled field
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken[-1], KEDA_SCHEMA)


def test_keda_scales_the_deployment_on_its_jobs_queue() -> None:
    docs = {doc["kind"]: doc for doc in _load_all(KEDA)}
    scaled, auth = docs["ScaledObject"], docs["TriggerAuthentication"]
    deployment = _deployment()
    env = _container_env(deployment)
    (trigger,) = scaled["spec"]["triggers"]
    jobname = env["REDISPARAM_JOBNAME"]["value"]
    assert trigger["metadata"]["listName"] == keys.queue(jobname)
    assert int(trigger["metadata"]["listLength"]) >= 1
    assert trigger["metadata"]["address"] == f"{env['REDISPARAM_HOST']['value']}:{env['REDISPARAM_PORT']['value']}"
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (secret,) = auth["spec"]["secretTargetRef"]
    secret_ref = env["REDISPARAM_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (secret["parameter"], secret["name"], secret["key"]) == ("password", secret_ref["name"], secret_ref["key"])
    # with no live worker the manager queues nothing, so the queue could never wake a pool scaled to zero
    assert scaled["spec"]["minReplicaCount"] >= 1


KEDA_PROMETHEUS = DEPLOY / "keda-prometheus.yaml"
# KEDA's Prometheus scaler (its documentation): the trigger's type and metadata
PROMETHEUS_TRIGGER: dict[str, Any] = {
    "type": "object",
    "required": ["type", "metadata"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "prometheus"},
        "name": {"type": "string"},
        "metricType": {"enum": ["AverageValue", "Value"]},
        "metadata": {
            "type": "object",
            "required": ["serverAddress", "query", "threshold"],
            "additionalProperties": False,
            "properties": {
                name: {"type": "string"}
                for name in ("serverAddress", "query", "threshold", "activationThreshold", "namespace", "unsafeSsl")
            },
        },
    },
}


def test_keda_prometheus_scaler_queries_the_dashboards_metrics() -> None:
    (scaled,) = _load_all(KEDA_PROMETHEUS)
    schema = json.loads(json.dumps(KEDA_SCHEMA["oneOf"][1]))
    schema["properties"]["spec"]["properties"]["triggers"]["items"] = PROMETHEUS_TRIGGER
    jsonschema.validate(scaled, schema)
    (trigger,) = scaled["spec"]["triggers"]
    jobname = _container_env(_deployment())["REDISPARAM_JOBNAME"]["value"]
    families = {"redisparam_queue_length", "redisparam_workers"}
    for family in families:  # the metrics the query names are the ones /metrics serves
        assert f'{family}{{job="{jobname}"}}' in trigger["metadata"]["query"]
    assert all(f"``{family}``" in (dashboard_metrics.__doc__ or "") for family in families)
    assert scaled["spec"]["scaleTargetRef"]["name"] == _deployment()["metadata"]["name"]
    assert int(trigger["metadata"]["threshold"]) >= 1


# ------------------------------------------------------------------------------------------------ Slurm
def test_slurm_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SLURM)], check=True, timeout=30)


def test_slurm_script_has_a_job_array_and_a_warm_stop() -> None:
    directives = {
        match.group(1): match.group(2)
        for line in SLURM.read_text(encoding="utf-8").splitlines()
        if (match := re.match(r"#SBATCH --([\w-]+)=(\S+)", line))
    }
    assert re.fullmatch(r"\d+-\d+(%\d+)?", directives["array"])
    assert directives["signal"].startswith("B:TERM@")  # SIGTERM to the batch shell, which exec'd the daemon


@pytest.fixture
def password_server() -> Iterator[EmbeddedRedis]:
    """A private redis-server that requires a password (as a shared one would)."""
    with EmbeddedRedis(password="s3cret-" + uuid.uuid4().hex[:8]) as server:
        yield server


def test_slurm_script_runs_a_worker_daemon(password_server: EmbeddedRedis, jobname: str, tmp_path: Path) -> None:
    address = password_server.address
    password_file = tmp_path / "password"
    password_file.write_text(address.password or "", encoding="utf-8")
    password_file.chmod(0o600)
    env = _clean_env(
        REDISPARAM_JOBNAME=jobname,
        REDISPARAM_URL=f"unix://{address.path}",  # no password in the URL: it comes from the file
        REDISPARAM_PASSWORD_FILE=str(password_file),
        SLURM_ARRAY_JOB_ID="4242",
        SLURM_ARRAY_TASK_ID="7",
        SLURM_CPUS_PER_TASK="2",
    )
    with _daemon(["bash", str(SLURM), "-v"], env, tmp_path / "log") as process:
        ids = wait_for_workers(address, jobname, 2)
        assert sorted(ids) == ["slurm-4242-7-0", "slurm-4242-7-1"]
        code = _stop(process)
    log = (tmp_path / "log").read_text(encoding="utf-8")
    assert code == 0, log
    assert _live(address, jobname) == []
    assert address.password is not None and address.password not in log


def test_slurm_script_needs_a_server(jobname: str) -> None:
    result = subprocess.run(
        ["bash", str(SLURM)], env=_clean_env(REDISPARAM_JOBNAME=jobname), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "REDISPARAM_HOST" in result.stderr


# ------------------------------------------------------------------------------------------------ systemd
def _unit() -> dict[str, list[str]]:
    """The unit's directives: name -> values, in order (systemd allows repeating most of them)."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        name, _, value = line.partition("=")
        out.setdefault(name.strip(), []).append(value.strip())
    return out


def _specifiers(text: str, instance: str) -> str:
    """systemd's %-specifiers that the unit uses: %i (the instance) and %% (a percent sign)."""
    return re.sub(r"%([i%])", lambda m: instance if m.group(1) == "i" else "%", text)


def _environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd reads an EnvironmentFile= (comments and blank lines ignored)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip().strip("\"'")
    return out


def _exec_start(unit: Mapping[str, list[str]], instance: str, env: Mapping[str, str]) -> list[str]:
    """ExecStart= as systemd runs it: specifiers, then ${VAR} from the unit's environment, then split into words."""
    (line,) = unit["ExecStart"]
    argv = shlex.split(_specifiers(line, instance))
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], arg) for arg in argv]


def test_systemd_unit_settings() -> None:
    unit = _unit()
    assert unit["KillMode"] == ["mixed"]  # SIGTERM to the daemon only: a warm stop of its workers
    assert unit["KillSignal"] == ["SIGTERM"]
    assert int(unit["TimeoutStopSec"][0]) >= 30
    assert unit["EnvironmentFile"] == ["/etc/dask-redisparam/%i.env"]
    assert "password" not in " ".join(unit["ExecStart"] + unit.get("Environment", [])).lower()
    assert "--jobname %i" in unit["ExecStart"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    worker = shutil.which("dask-redisparam-worker")
    assert worker is not None
    (line,) = _unit()["ExecStart"]
    installed = shlex.split(line)[0]
    text = UNIT.read_text(encoding="utf-8").replace(installed, os.path.realpath(worker))
    (tmp_path / UNIT.name).write_text(text, encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "dask-redisparam-worker@demo.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_unit_command_line_runs(redis_address: RedisAddress, jobname: str, tmp_path: Path) -> None:
    unit = _unit()
    env_file = tmp_path / f"{jobname}.env"  # what the administrator writes into /etc/dask-redisparam/<job>.env
    env_file.write_text(
        f"# job {jobname}\nREDISPARAM_URL={redis_address.to_url(show_password=True)}\nNWORKERS=2\n", encoding="utf-8"
    )
    env = _clean_env()
    for assignment in unit.get("Environment", []):  # Environment= first, then EnvironmentFile= overrides it
        env.update(word.split("=", 1) for word in shlex.split(assignment))  # type: ignore[misc]
    env.update(_environment_file(env_file))
    argv = _exec_start(unit, jobname, env)
    assert Path(argv[0]).name == "dask-redisparam-worker"
    executable = shutil.which(Path(argv[0]).name)  # installed here, not under /opt
    assert executable is not None
    with _daemon([executable, *argv[1:]], env, tmp_path / "log") as process:
        assert len(wait_for_workers(redis_address, jobname, 2)) == 2
        code = _stop(process, timeout=float(unit["TimeoutStopSec"][0]))
    log = (tmp_path / "log").read_text(encoding="utf-8")
    assert code == 0, log
    assert _live(redis_address, jobname) == []
    assert "stopped after" in log  # a warm stop, not a kill


# ------------------------------------------------------------------------------------------------ Redis ACL
def _acl_rules(jobname: str) -> tuple[str, list[str]]:
    (line,) = [line for line in ACL.read_text(encoding="utf-8").splitlines() if line.strip()]
    words = line.split()
    assert words[0] == "user"
    rules = [word.replace("{demo}", "{" + jobname + "}") for word in words[2:] if not word.startswith(">")]
    return words[1], rules


def test_acl_rule_confines_a_user_to_its_job(
    redis_server: EmbeddedRedis, rclient: redis.Redis, jobname: str, tmp_path: Path
) -> None:
    name, rules = _acl_rules(jobname)
    assert name == "drp-demo" and "~drp:{" + jobname + "}:*" in rules and "-@all" in rules
    user, password = f"{name}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    rclient.execute_command("ACL", "SETUSER", user, "reset", f">{password}", *rules)  # type: ignore[no-untyped-call]
    try:
        assert redis_server.socket_path is not None
        url = f"unix://{user}:{password}@{redis_server.socket_path}"
        env = _clean_env(REDISPARAM_URL=url)
        argv = ["dask-redisparam-worker", "--jobname", jobname, "--nworkers", "2"]
        with _daemon(argv, env, tmp_path / "log") as worker:
            with RedisParam(jobname=jobname, is_worker=False, url=url) as param:
                deadline = time.monotonic() + 30
                while len(param.worker_ids()) < 2:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                graph: dict[str, Any] = {f"x{i}": (add, i, 1) for i in range(40)}
                graph["total"] = (sum, [f"x{i}" for i in range(40)])
                assert param(graph, "total") == sum(range(1, 41))
            for command in (["status", "--rate-window", "0"], ["clean"], ["stop-all"]):
                result = subprocess.run(
                    ["dask-redisparam", *command, "--jobname", jobname],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert result.returncode == 0, result.stderr
                if command[0] == "status":
                    assert f"job {jobname} " in result.stdout and "workers: 2 " in result.stdout
            assert worker.wait(30) == 0  # stop-all stopped its workers: the daemon ends by itself
        other = RedisParam(jobname="other-" + jobname, is_worker=False, url=url)
        with pytest.raises(AuthenticationFailed, match=r"NOPERM.*~drp:\{other-"), other:
            other({"a": 1, "b": (add, "a", 1)}, "b")
    finally:
        rclient.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]
