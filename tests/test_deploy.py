"""Deployment files agree with the code: the image's CMD, the Kubernetes args, probes and
config, the lock files and the deploy guide are checked against the real CLI parser, config
loader and admin routes, so renaming a flag or an endpoint breaks a test, not a rollout.

The Kubernetes tests render every kustomization with ``kubectl kustomize`` (``$KUBECTL`` or
``kubectl`` on PATH); ``.ci/deploy-checks`` validates the same output against the schema.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from proxy.admin.routes import build_admin_app
from proxy.cli.main import _parser, settings_from_args
from proxy.config.durations import parse_duration
from proxy.config.loading import ENV_PREFIX, FLAG_NAMES, settings_from_dict
from proxy.config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
KUSTOMIZATIONS = [
    "k8s/base",
    *sorted(
        str(p.parent.relative_to(ROOT)) for p in ROOT.glob("k8s/overlays/*/kustomization.yaml")
    ),
]
# Env vars the config loader reads besides one per flag.
KNOWN_ENV = {ENV_PREFIX + n.upper() for n in FLAG_NAMES} | {ENV_PREFIX + "CONFIG"}


def admin_paths() -> set[str]:
    """Paths the admin listener serves (building its routes needs no engine)."""
    settings = settings_from_dict({"queues": [{"name": "q", "target": "http://backend.example"}]})
    runtime = SimpleNamespace(settings=settings, engine=None, started=False, draining=False)
    app = build_admin_app(runtime)  # type: ignore[arg-type]
    return {route.path for route in app.routes}  # type: ignore[attr-defined]


def parse_cli(argv: list[str]) -> Any:
    """argv parsed by the real ``ingest-proxy`` parser; a bad flag fails the test."""
    try:
        return _parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"ingest-proxy rejects: {shlex.join(argv)}")


def settings_for(
    argv: list[str],
    env: dict[str, str],
    files: dict[str, str] | None = None,
    tmp_path: Path | None = None,
) -> Settings:
    """Settings exactly as ``ingest-proxy <argv>`` builds them in an environment of ``env``.

    ``files`` maps in-container paths to contents; a ``--config`` (or INGEST_PROXY_CONFIG)
    naming one of them reads that content.
    """
    args = parse_cli(argv)
    env = dict(env)
    if files is not None:
        for source in (args, None):
            path = args.config if source else env.get(ENV_PREFIX + "CONFIG")
            if path is None:
                continue
            assert path in files, f"config {path} is not mounted"
            assert tmp_path is not None
            local = tmp_path / "config.toml"
            local.write_text(files[path])
            if source:
                args.config = str(local)
            else:
                env[ENV_PREFIX + "CONFIG"] = str(local)
    with mock.patch.dict(os.environ, env, clear=True):
        return settings_from_args(args)


# ---------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def dockerfile_stages(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit inside a continued instruction, too
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            key, sep, value = word.partition("=")
            assert sep, f"use ENV KEY=VALUE, not {args!r}"
            env[key] = value
    return env


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_cmd_is_exec_form_ingest_proxy_serve(final: Stage) -> None:
    """CMD is JSON exec form (the proxy is PID 1 and gets SIGTERM) and runs `serve`."""
    cmd = json.loads(final.last("CMD"))
    assert cmd[0] == "ingest-proxy"
    assert parse_cli(cmd[1:]).command == "serve"
    assert not final.all("ENTRYPOINT"), "an ENTRYPOINT would change what CMD means"


def test_image_defaults_listen_on_all_interfaces_on_exposed_ports(final: Stage) -> None:
    """With the image's ENV and CMD (and a target), both listeners bind 0.0.0.0 on the
    ports the image exposes."""
    cmd = json.loads(final.last("CMD"))
    env = env_of(final) | {"INGEST_PROXY_TARGET": "http://backend.example"}
    settings = settings_for(cmd[1:], env)
    exposed = {int(p.split("/")[0]) for args in final.all("EXPOSE") for p in args.split()}
    assert settings.server.host == "0.0.0.0"
    assert settings.server.admin_host == "0.0.0.0"
    assert {settings.server.port, settings.server.admin_port} == exposed


def test_image_honours_port_env(final: Stage) -> None:
    """Cloud Run's $PORT decides the ingress port: the CMD must not pin one."""
    cmd = json.loads(final.last("CMD"))
    env = env_of(final) | {"INGEST_PROXY_TARGET": "http://backend.example", "PORT": "7777"}
    settings = settings_for(cmd[1:], env)
    assert settings.server.port == 7777
    assert settings.server.admin_port == 9090


def test_healthcheck_targets_admin_healthz(final: Stage) -> None:
    """The HEALTHCHECK asks the admin listener's /healthz on the default admin port."""
    check = final.last("HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :])
    code = command[-1]
    assert "/healthz" in admin_paths()
    assert "'/healthz'" in code
    assert "'INGEST_PROXY_ADMIN_PORT', '9090'" in code
    assert "INGEST_PROXY_ADMIN_PORT" in KNOWN_ENV


def test_runs_as_numeric_non_root_user(final: Stage) -> None:
    """USER is a numeric non-zero UID:GID, so Kubernetes' runAsNonRoot can verify it."""
    uid, _, gid = final.last("USER").partition(":")
    assert uid.isdigit()
    assert int(uid) >= 10000
    assert gid.isdigit()
    assert int(gid) != 0


def test_base_images_pinned_and_python_supported(stages: list[Stage]) -> None:
    """Every stage starts from the same slim Python, pinned to a patch version that
    pyproject's requires-python accepts."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requires = pyproject["project"]["requires-python"]
    for stage in stages:
        match = re.fullmatch(
            r"python:(\d+\.\d+\.\d+)-slim-[a-z]+(@sha256:[0-9a-f]{64})?", stage.base
        )
        assert match, f"{stage.base} is not pinned to an exact python:X.Y.Z-slim-<debian>"
        assert Version(match.group(1)) in Requirement(f"python{requires}").specifier
    assert len({s.base for s in stages}) == 1


def test_final_stage_has_no_build_tools(final: Stage) -> None:
    """The runtime stage installs nothing: no package manager runs there, no pip."""
    for run in final.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|pip|gcc|make)\b", run), run
    copies = final.all("COPY")
    assert copies == ["--from=build /opt/venv /opt/venv"]


def test_dependencies_come_from_hash_checked_locks(stages: list[Stage]) -> None:
    """Every pip install of requirements uses a lock with --require-hashes, wheels only."""
    build = stages[0]
    assert env_of(build).get("PIP_ONLY_BINARY") == ":all:"
    runs = " ".join(build.all("RUN"))
    for lock in ("requirements.lock", "requirements-build.lock"):
        assert re.search(rf"--require-hashes [^&]*-r {re.escape(lock)}", runs), lock
    assert "--no-build-isolation" in runs  # else pip fetches an unpinned setuptools


def dockerignore_allows(path: str) -> bool:
    allowed = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if pattern == "*" or pattern == path.rstrip("/"):
            allowed = negate
    return allowed


def test_copied_files_pass_dockerignore(stages: list[Stage]) -> None:
    """Every file the build COPYs exists and is let through by .dockerignore."""
    for stage in stages:
        for args in stage.all("COPY"):
            words = args.split()
            if words[0].startswith("--from"):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), source
                assert dockerignore_allows(source), f".dockerignore drops {source}"
    assert not dockerignore_allows(".venv")
    assert not dockerignore_allows("tests")


# ---------------------------------------------------------------- lock files


def lock_pins(path: Path) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) from a pip requirements lock."""
    pins: dict[str, tuple[Version, int]] = {}
    name = None
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", line):
            name = canonicalize_name(match.group(1))
            pins[name] = (Version(match.group(2)), 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
    return pins


def test_runtime_lock_satisfies_pyproject() -> None:
    """requirements.lock pins every dependency of pyproject.toml at an allowed version,
    each with hashes, and says how to regenerate it."""
    text = (ROOT / "requirements.lock").read_text()
    assert "uv pip compile pyproject.toml" in text.splitlines()[1]
    pins = lock_pins(ROOT / "requirements.lock")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, deps):
        name = canonicalize_name(dep.name)
        assert name in pins, f"{dep.name} missing from requirements.lock: regenerate it"
        assert pins[name][0] in dep.specifier, f"lock pins {name}=={pins[name][0]}, needs {dep}"
    for name, (_, hashes) in pins.items():
        assert hashes, f"{name} has no hash"
    # uvicorn[standard]: the extras that make it fast are locked too
    assert {"uvloop", "httptools"} <= set(pins)


def test_build_lock_satisfies_build_system() -> None:
    """requirements-build.lock pins the build backend pyproject.toml asks for."""
    pins = lock_pins(ROOT / "requirements-build.lock")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for dep in map(Requirement, requires):
        name = canonicalize_name(dep.name)
        assert name in pins, dep
        assert pins[name][0] in dep.specifier, dep
        assert pins[name][1] > 0


# ---------------------------------------------------------------- Kubernetes


def kubectl() -> str:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl is not installed (.ci/deploy-checks installs one)")
    return found


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / request.param)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return request.param, [d for d in yaml.safe_load_all(out.stdout) if d]


# Where an external HTTPS load balancer's proxies and health checks reach the pods from.
GOOGLE_FRONT_ENDS = {"35.191.0.0/16", "130.211.0.0/22"}


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from (d for d in docs if d["kind"] in ("Deployment", "StatefulSet"))


def proxy_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = [
        c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "ingest-proxy"
    ]
    return container


def mounted_files(workload: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """In-container path -> content of every ConfigMap file the proxy container mounts."""
    pod = workload["spec"]["template"]["spec"]
    configmaps = {d["metadata"]["name"]: d["data"] for d in kinds(docs, "ConfigMap")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {}
    for mount in proxy_container(workload).get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})  # absent: a volumeClaimTemplate
        if "configMap" in volume:
            for key, content in configmaps[volume["configMap"]["name"]].items():
                files[f"{mount['mountPath'].rstrip('/')}/{key}"] = content
    return files


def workload_settings(
    workload: dict[str, Any], docs: list[dict[str, Any]], tmp_path: Path
) -> Settings:
    container = proxy_container(workload)
    argv = container.get("command", [])[1:] + container.get("args", [])
    assert container["command"][0] == "ingest-proxy"
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return settings_for(argv, env, mounted_files(workload, docs), tmp_path)


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_every_kustomization_has_one_proxy_workload(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """Each kustomization renders exactly one proxy workload, in a non-default namespace."""
    _, docs = rendered
    assert len(list(workloads(docs))) == 1
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") not in (None, "default"), doc["metadata"]


def test_args_ports_and_probes_match_cli_and_admin(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The container's command line and mounted config load cleanly; the listeners bind all
    interfaces on the declared ports; probes and scrape annotations hit real admin routes."""
    _, docs = rendered
    paths = admin_paths()
    for workload in workloads(docs):
        settings = workload_settings(workload, docs, tmp_path)
        container = proxy_container(workload)
        assert settings.server.host == settings.server.admin_host == "0.0.0.0"
        assert port_number(container, "http") == settings.server.port
        assert port_number(container, "admin") == settings.server.admin_port
        ready = container["readinessProbe"]["httpGet"]
        live = container["livenessProbe"]["httpGet"]
        assert ready["path"] == "/readyz"
        assert live["path"] == "/healthz"
        assert {ready["path"], live["path"]} <= paths
        for probe in (ready, live):
            assert port_number(container, probe["port"]) == settings.server.admin_port
        notes = workload["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert int(notes["prometheus.io/port"]) == settings.server.admin_port
        assert notes["prometheus.io/path"] == "/metrics"
        assert notes["prometheus.io/path"] in paths


def test_termination_grace_covers_prestop_and_drain(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """terminationGracePeriodSeconds leaves room for the preStop pause, the ingress drain
    (server.shutdown_grace) and at least 5 s for the engine to close."""
    _, docs = rendered
    for workload in workloads(docs):
        settings = workload_settings(workload, docs, tmp_path)
        pod = workload["spec"]["template"]["spec"]
        pre_stop = proxy_container(workload)["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert 0 < pre_stop <= 10
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + settings.server.shutdown_grace + 5


def test_pod_security(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Non-root as the image's UID, read-only root, no escalation, no capabilities,
    requests and limits, no service account token."""
    _, docs = rendered
    image_uid = int(dockerfile_stages(DOCKERFILE.read_text())[-1].last("USER").split(":")[0])
    for workload in workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        container = proxy_container(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == image_uid
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind])


def test_engine_specific_shape(rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """Cloud Tasks: a Deployment (a StatefulSet with a volume claim for the spool) scaled by
    an HPA (>= 2) with a PDB and a Workload Identity service account. Embedded: one
    StatefulSet replica, SQLite file on its volume claim, nothing that could scale it."""
    _, docs = rendered
    (workload,) = workloads(docs)
    settings = workload_settings(workload, docs, tmp_path)
    pod = workload["spec"]["template"]["spec"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    (account,) = [
        a
        for a in kinds(docs, "ServiceAccount")
        if a["metadata"]["name"] == pod["serviceAccountName"]
    ]
    if settings.engine == "cloudtasks":
        # With a spool, a StatefulSet: each pod's spool file on a volume claim of its own.
        assert workload["kind"] == ("StatefulSet" if settings.cloudtasks.spool else "Deployment")
        if settings.cloudtasks.spool:
            spool_dir = str(Path(settings.cloudtasks.spool).parent)
            claims = {c["metadata"]["name"] for c in workload["spec"]["volumeClaimTemplates"]}
            mounts = proxy_container(workload)["volumeMounts"]
            (mount,) = [m for m in mounts if m["mountPath"] == spool_dir]
            assert mount["name"] in claims, "the spool must live on the pod's volume claim"
        assert "replicas" not in workload["spec"], "the HPA owns the replica count"
        (hpa,) = kinds(docs, "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]
        assert hpa["spec"]["minReplicas"] >= 2
        (pdb,) = kinds(docs, "PodDisruptionBudget")
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        assert pod["topologySpreadConstraints"]
        for queue in settings.queues:
            assert queue.audience
            assert "?" not in queue.audience
            assert "#" not in queue.audience
    else:
        assert workload["kind"] == "StatefulSet"
        assert workload["spec"]["replicas"] == 1
        assert not kinds(docs, "HorizontalPodAutoscaler")
        assert not kinds(docs, "PodDisruptionBudget")
        assert "annotations" not in account["metadata"]
        claims = {c["metadata"]["name"] for c in workload["spec"]["volumeClaimTemplates"]}
        db_dir = str(Path(settings.local.db).parent)
        (mount,) = [
            m for m in proxy_container(workload)["volumeMounts"] if m["mountPath"] == db_dir
        ]
        assert mount["name"] in claims, "the SQLite file must live on the volume claim"


def test_service_and_network_policy(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The Services reach the named container ports; the NetworkPolicy opens the ingress
    port to all, the admin port only to the monitoring namespace and, in relay mode, the
    relay's own port (a Service of its own) only to Google's front ends."""
    _, docs = rendered
    (workload,) = workloads(docs)
    settings = workload_settings(workload, docs, tmp_path)
    container = proxy_container(workload)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in kinds(docs, "Service")}
    names = {p["name"] for p in container["ports"]}
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
    relay_port = settings.cloudtasks.relay_port if settings.engine == "cloudtasks" else None
    assert set(services) == {"ingest-proxy"} | ({"ingest-proxy-relay"} if relay_port else set())
    (policy,) = kinds(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admin_rules, relay_rules = [], []
    for rule in policy["spec"]["ingress"]:
        assert rule.get("ports"), "a rule without ports would open the admin port"
        ports = {p["port"] for p in rule["ports"]}
        if "admin" in ports or port_number(container, "admin") in ports:
            admin_rules.append(rule)
        if "relay" in ports or (relay_port and relay_port in ports):
            relay_rules.append(rule)
    assert admin_rules
    for rule in admin_rules:
        assert rule["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
    if relay_port:
        assert settings.cloudtasks.relay_host == "0.0.0.0"
        assert port_number(container, "relay") == relay_port
        (port,) = services["ingest-proxy-relay"]["spec"]["ports"]
        assert port["targetPort"] == "relay"
        assert relay_rules
        for rule in relay_rules:
            assert {b["ipBlock"]["cidr"] for b in rule["from"]} == GOOGLE_FRONT_ENDS
    else:
        assert not relay_rules
        assert "relay" not in names


def test_service_monitor_scrapes_admin_metrics(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """A ServiceMonitor (no built-in schema) selects the Service and scrapes /metrics on the
    Service port that leads to the admin listener."""
    name, docs = rendered
    monitors = kinds(docs, "ServiceMonitor")
    if name != "k8s/overlays/servicemonitor":
        assert not monitors
        return
    (monitor,) = monitors
    (service,) = kinds(docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert ports[endpoint["port"]]["targetPort"] == "admin"
        assert endpoint["path"] in admin_paths()


def test_images_agree_across_kustomizations() -> None:
    """Every kustomization deploys the same image, tagged (never :latest) or by digest."""
    images = set()
    for path in KUSTOMIZATIONS:
        out = subprocess.run(
            [kubectl(), "kustomize", str(ROOT / path)], capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        for doc in filter(None, yaml.safe_load_all(out.stdout)):
            if doc["kind"] in ("Deployment", "StatefulSet"):
                images.add(proxy_container(doc)["image"])
    assert len(images) == 1
    (image,) = images
    assert re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", image.rsplit("/", 1)[-1]), image
    assert not image.endswith(":latest")


def test_kustomize_config_files_are_valid() -> None:
    """Each config.toml under k8s/ loads as Settings on its own."""
    files = sorted(ROOT.glob("k8s/**/config.toml"))
    assert len(files) >= 2
    for path in files:
        settings_from_dict(tomllib.loads(path.read_text()))


# ---------------------------------------------------------------- the deploy guide


def doc_blocks(lang: str) -> list[str]:
    text = DEPLOY_DOC.read_text()
    return [m.group(1) for m in re.finditer(rf"^ *```{lang}\n(.*?)^ *```", text, re.S | re.M)]


def doc_commands() -> list[list[str]]:
    """Shell commands of the guide's sh blocks, continuation lines joined, split into words
    (``$VAR`` left as is), one list per command of a ``&&``/``;``/``|`` chain."""
    commands = []
    for block in doc_blocks("sh"):
        lines = []
        current = ""
        for raw in block.splitlines():
            line = raw.strip()
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            lines.append(current + line)
            current = ""
        for line in lines:
            if not line or line.startswith("#"):
                continue
            words = shlex.split(line, comments=True)
            command: list[str] = []
            for word in [*words, ";"]:
                if word in ("&&", ";", "|", "||"):
                    if command:
                        commands.append(command)
                    command = []
                else:
                    command.append(word)
    return commands


def doc_variables() -> dict[str, str]:
    """Plain ``NAME=value`` assignments in the guide's sh blocks."""
    found = {}
    for command in doc_commands():
        if len(command) == 1 and (m := re.fullmatch(r"([A-Z_]+)=([\w.-]+)", command[0])):
            found[m.group(1)] = m.group(2)
    return found


def expand(word: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: variables.get(m.group(1), m.group(0)), word)


def subcommands() -> set[str]:
    parser = _parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return set(action.choices)  # type: ignore[arg-type]


def test_guide_ingest_proxy_commands_parse() -> None:
    """Every `ingest-proxy <command> ...` in the guide is accepted by the CLI."""
    known = subcommands()
    seen = 0
    for command in doc_commands():
        for i, word in enumerate(command[:-1]):
            # the command itself, or the command after the image in `docker run ... IMAGE`
            is_command = i == 0 or (command[0] == "docker" and command[i - 1] == "ingest-proxy")
            if word != "ingest-proxy" or not is_command or command[i + 1] == "ingest-proxy":
                continue
            assert command[i + 1] in known, f"no `ingest-proxy {command[i + 1]}` command"
            parse_cli(command[i + 1 :])
            seen += 1
    assert seen, "the guide shows no ingest-proxy command"


def test_guide_env_vars_exist() -> None:
    """Every INGEST_PROXY_* variable named anywhere in the guide is read by the config."""
    names = set(re.findall(r"\bINGEST_PROXY_[A-Z_]+\b", DEPLOY_DOC.read_text()))
    assert names
    assert names <= KNOWN_ENV, names - KNOWN_ENV


def test_guide_cloud_run_deploy_wiring() -> None:
    """`gcloud run deploy ingest-proxy` mounts the secret at the path INGEST_PROXY_CONFIG
    names, on the port the image listens on, with callers authenticated."""
    (deploy,) = [c for c in doc_commands() if c[:4] == ["gcloud", "run", "deploy", "ingest-proxy"]]
    options = dict(w.split("=", 1) for w in deploy if w.startswith("--") and "=" in w)
    env = dict(pair.split("=", 1) for pair in options["--set-env-vars"].split(","))
    assert set(env) <= KNOWN_ENV
    mounts = dict(pair.split("=", 1) for pair in options["--set-secrets"].split(","))
    assert env["INGEST_PROXY_CONFIG"] in mounts
    assert int(options["--port"]) == 8080
    assert "--no-allow-unauthenticated" in deploy
    (backend,) = [c for c in doc_commands() if c[:4] == ["gcloud", "run", "deploy", "backend"]]
    assert "--no-allow-unauthenticated" in backend


def test_guide_toml_loads() -> None:
    """Every TOML snippet in the guide is a valid config."""
    blocks = doc_blocks("toml")
    assert blocks
    for block in blocks:
        settings_from_dict(tomllib.loads(block))


def test_guide_queue_matches_config() -> None:
    """`gcloud tasks queues create` uses the queue name, location, rate, concurrency and
    retry settings of the guide's Cloud Tasks config, and its audience is a bare URL."""
    (block,) = [b for b in doc_blocks("toml") if 'engine = "cloudtasks"' in b]
    settings = settings_from_dict(tomllib.loads(block))
    variables = doc_variables()
    creates = [c for c in doc_commands() if c[:4] == ["gcloud", "tasks", "queues", "create"]]
    assert len(creates) == len(settings.queues)
    for create in creates:
        queue = settings.queue(create[4])
        flags = dict(expand(w, variables).split("=", 1) for w in create[5:] if "=" in w)
        assert flags["--location"] == settings.cloudtasks.location
        assert float(flags["--max-dispatches-per-second"]) == queue.rate
        assert int(flags["--max-concurrent-dispatches"]) == queue.concurrency
        assert int(flags["--max-attempts"]) == queue.retry.max_attempts
        assert parse_duration(flags["--min-backoff"]) == queue.retry.min_backoff
        assert parse_duration(flags["--max-backoff"]) == queue.retry.max_backoff
        assert int(flags["--max-doublings"]) == queue.retry.max_doublings
        assert queue.audience == queue.target_origin
    assert settings.cloudtasks.project == variables["PROJECT_ID"]
    assert settings.cloudtasks.service_account_email == (
        f"tasks-invoker@{variables['PROJECT_ID']}.iam.gserviceaccount.com"
    )


def test_guide_roles_follow_google_guide() -> None:
    """The guide grants the four bindings Cloud Tasks → private Cloud Run needs."""
    grants = {
        (c[1], c[-1].removeprefix("--role="))
        for c in doc_commands()
        if c[0] == "gcloud" and "add-iam-policy-binding" in c
    }
    assert ("run", "roles/run.invoker") in grants
    assert ("tasks", "roles/cloudtasks.enqueuer") in grants
    assert ("iam", "roles/iam.serviceAccountUser") in grants
    assert ("iam", "roles/iam.workloadIdentityUser") in grants


def test_guide_kustomize_paths_exist() -> None:
    """Every k8s/ path given to `kubectl apply -k` or `kubectl kustomize` is a kustomization."""
    seen = 0
    for command in doc_commands():
        if command[0] == "kubectl" and command[1] in ("apply", "kustomize"):
            path = command[-1]
            if path.startswith("k8s/"):
                assert (ROOT / path / "kustomization.yaml").is_file(), path
                seen += 1
    assert seen >= 3
