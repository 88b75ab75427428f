"""The container and deployment files parse, agree with each other, and name files that exist.

No container engine or cluster here: these are static checks. The command itself is run, outside
a container, by tests/e2e/test_compose_command.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from chime_egress.policy.compiled import load_policy
from chime_egress.proxy.drain import CLOSE_GRACE_SECONDS, SHUTDOWN_GRACE_SECONDS
from chime_egress.proxy.options import DEFAULT_DRAIN_SECONDS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCALE_OUT = ROOT / "deploy" / "compose-scale-out.yml"
KUBERNETES = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
CONTAINER_CONFDIR = "/home/mitmproxy/.mitmproxy"
# The drain the shipped files rely on (no chime_drain_seconds given) and the most the process
# takes after its deadline: a grace period shorter than both cuts meetings short.
DEFAULT_DRAIN = float(DEFAULT_DRAIN_SECONDS)
AFTER_DEADLINE = CLOSE_GRACE_SECONDS + SHUTDOWN_GRACE_SECONDS
HEALTH = ["chime-egress", "health", "--quiet", "--proxy", "127.0.0.1:8080", "--timeout", "5"]


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    current = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not current):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        text = current + stripped
        current = ""
        keyword, _, arguments = text.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


def instruction(name: str) -> list[str]:
    return [arguments for keyword, arguments in dockerfile_instructions() if keyword == name]


# Dockerfile


def test_base_image_pinned() -> None:
    [default] = [a for a in instruction("ARG") if a.startswith("PYTHON_IMAGE=")]
    image = default.split("=", 1)[1]
    # A full version, never latest or a floating minor.
    assert re.fullmatch(r"python:3\.12\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image
    assert instruction("FROM") == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]


def test_runs_as_non_root_with_ca_volume_and_config_folder() -> None:
    assert instruction("USER") == ["mitmproxy"]
    assert any(CONTAINER_CONFDIR in volume for volume in instruction("VOLUME"))
    [cmd] = instruction("CMD")
    command = json.loads(cmd)
    assert command[:2] == ["chime-egress", "run"]  # the launcher: no watched -s script
    assert f"confdir={CONTAINER_CONFDIR}" in command
    assert "chime_allowlist=/config/allowlist.yaml" in command


def test_healthcheck_needs_no_curl() -> None:
    [healthcheck] = instruction("HEALTHCHECK")
    assert "curl" not in healthcheck and "wget" not in healthcheck
    assert json.loads(healthcheck.partition(" CMD ")[2]) == HEALTH


def test_installs_pinned_mitmproxy_12_and_pyyaml() -> None:
    constraints = ROOT / "deploy" / "constraints.txt"
    assert any("--constraint /tmp/src/deploy/constraints.txt" in run for run in instruction("RUN"))
    pins = {}
    for line in constraints.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            [spec] = requirement.specifier
            assert spec.operator == "==", line
            pins[requirement.name.lower()] = spec.version
    assert pins["mitmproxy"].startswith("12.")
    assert "pyyaml" in pins
    # The pins satisfy the project's own dependency ranges.
    project = _pyproject()
    for text in project["project"]["dependencies"]:
        requirement = Requirement(text)
        # The image's Python is 3.12: only what applies there must admit the pinned version.
        if requirement.marker and not requirement.marker.evaluate({"python_version": "3.12"}):
            continue
        assert requirement.specifier.contains(pins[requirement.name.lower()]), text


def _pyproject() -> dict[str, Any]:
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _dockerignore_allows(path: str) -> bool:
    """Whether the build context keeps `path` (a repository-relative file or folder)."""
    allowed = True
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or fnmatch.fnmatch(path, pattern):
            allowed = negate
    return allowed


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    copies = [a for a in instruction("COPY") if not a.startswith("--from=")]
    assert copies
    for arguments in copies:
        *sources, _destination = arguments.split()
        for source in sources:
            path = ROOT / source
            assert path.exists(), source
            assert _dockerignore_allows(source.rstrip("/")), f"{source} is excluded"
            if path.is_dir():
                for file in path.rglob("*.py"):
                    assert _dockerignore_allows(str(file.relative_to(ROOT))), file


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    for path in ("config/allowlist.yaml", ".git/config", "tests/conftest.py", ".ci/run"):
        assert not _dockerignore_allows(path), path


# docker-compose.yml


def _service_paths(compose_file: Path, service: dict[str, Any], named: set[str]) -> None:
    """Bind-mount sources and build contexts exist; named volumes are declared."""
    base = compose_file.parent
    build = service.get("build")
    if build is not None:
        context = base / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (context / dockerfile).is_file(), (compose_file, build)
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0]
        if source.startswith((".", "/")):
            assert (base / source).exists(), (compose_file, volume)
        else:
            assert source in named, (compose_file, volume)


def test_compose_file() -> None:
    document = load(COMPOSE)
    [name] = document["services"]
    service = document["services"][name]
    _service_paths(COMPOSE, service, set(document.get("volumes") or {}))
    assert service["build"] == "."
    assert f"chime-ca:{CONTAINER_CONFDIR}" in service["volumes"]
    assert "./config:/config:ro" in service["volumes"]
    assert (ROOT / "config" / "allowlist.yaml").is_file()
    assert service["ports"] == ["8080:8080", "127.0.0.1:9108:9108"]
    assert "chime_metrics=0.0.0.0:9108" in service["command"]
    assert service["restart"] == "unless-stopped"
    assert service["healthcheck"]["test"] == ["CMD", *HEALTH]
    assert "corporate CA" in COMPOSE.read_text()
    _covers_the_default_drain(service)
    # The files the allowlist names are in the mounted folder.
    policy = load_policy(ROOT / "config" / "allowlist.yaml")
    for source in policy.sources:
        assert source.resolve().parent == (ROOT / "config").resolve()


def _covers_the_default_drain(service: dict[str, Any]) -> None:
    # Compose's default (10 s) would cut the drain short: the default drain (20 s), its 8 s
    # bound, and a margin for a busy machine.
    grace = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
    assert grace is not None and int(grace.group(1)) >= DEFAULT_DRAIN + AFTER_DEADLINE + 5


def test_scale_out_compose_file() -> None:
    document = load(SCALE_OUT)
    services = document["services"]
    named = set(document.get("volumes") or {})
    for service in services.values():
        _service_paths(SCALE_OUT, service, named)
    proxy = services["chime-egress"]
    assert proxy["deploy"]["replicas"] >= 2
    assert "ports" not in proxy  # only the load balancer is published
    assert proxy["command"] == load(COMPOSE)["services"]["chime-egress"]["command"]
    assert proxy["depends_on"]["ca-init"]["condition"] == "service_completed_successfully"
    _covers_the_default_drain(proxy)
    assert f"chime-ca:{CONTAINER_CONFDIR}:ro" in proxy["volumes"]
    assert "../config:/config:ro" in proxy["volumes"]
    balancer = services["load-balancer"]
    assert re.fullmatch(r"haproxy:\d+\.\d+\.\d+-alpine", balancer["image"])
    haproxy = (SCALE_OUT.parent / "haproxy.cfg").read_text(encoding="utf-8")
    assert "mode tcp" in haproxy
    assert re.search(r"server-template \w+ \d+ chime-egress:8080 check port 9108 ", haproxy)
    assert "option httpchk GET /ready" in haproxy  # a draining replica is out at once
    assert balancer["ports"] == ["8080:8080"]


def test_scale_out_ca_init_command_creates_a_ca(tmp_path: Path) -> None:
    """The ca-init one-liner, run here against a temporary folder, writes the whole CA store."""
    [_, flag, code] = load(SCALE_OUT)["services"]["ca-init"]["command"]
    assert flag == "-c"
    folder = tmp_path / "ca"
    exec(code.replace(CONTAINER_CONFDIR, str(folder)), {})
    names = {path.name for path in folder.iterdir()}
    assert {"mitmproxy-ca.pem", "mitmproxy-ca-cert.pem", "mitmproxy-dhparam.pem"} <= names
    before = (folder / "mitmproxy-ca.pem").read_bytes()
    exec(code.replace(CONTAINER_CONFDIR, str(folder)), {})  # a second run keeps the CA
    assert (folder / "mitmproxy-ca.pem").read_bytes() == before


# Kubernetes


def kubernetes_objects() -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in load_all(path):
            objects[document["kind"]] = document
    return objects


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load(KUBERNETES / "kustomization.yaml")
    resources = kustomization["resources"]
    for resource in resources:
        assert (KUBERNETES / resource).is_file(), resource
    manifests = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(resources) == manifests


def test_deployment_service_configmap_agree() -> None:
    objects = kubernetes_objects()
    deployment, service, configmap = (
        objects["Deployment"],
        objects["Service"],
        objects["ConfigMap"],
    )
    spec = deployment["spec"]
    assert "replicas" not in spec  # the HorizontalPodAutoscaler owns the count
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    [container] = spec["template"]["spec"]["containers"]
    assert container["command"] == load(COMPOSE)["services"]["chime-egress"]["command"]
    # Probes on the metrics port, which stays open while a drain has closed the proxy port.
    metrics_port = next(port for port in container["ports"] if port["containerPort"] == 9108)
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/ready",
        "port": metrics_port["name"],
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/live", "port": metrics_port["name"]}
    assert "chime_metrics=0.0.0.0:9108" in container["command"]
    # The grace period covers the preStop pause, the default drain (20 s) and its 8 s bound.
    sleep, seconds = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep"  # in the image (Debian's coreutils); the sleep action needs k8s 1.30
    pre_stop = int(seconds)
    drain = DEFAULT_DRAIN
    assert not any(arg.startswith("chime_drain_seconds=") for arg in container["command"])
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > (
        pre_stop + drain + AFTER_DEADLINE
    )
    port_names = {port["name"] for port in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts["/config"]["readOnly"] is True
    assert "subPath" not in mounts["/config"]  # subPath mounts never see ConfigMap updates
    assert volumes[mounts["/config"]["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert mounts[CONTAINER_CONFDIR]["readOnly"] is True
    secret = volumes[mounts[CONTAINER_CONFDIR]["name"]]["secret"]["secretName"]
    # The Secret is created by the operator (it holds the CA's key); the instructions name it.
    assert f"kubectl create secret generic {secret}" in (KUBERNETES / "deployment.yaml").read_text()
    for needed in ("mitmproxy-ca.pem", "mitmproxy-ca-cert.pem", "mitmproxy-dhparam.pem"):
        assert needed in (KUBERNETES / "deployment.yaml").read_text()


def test_autoscaler_and_disruption_budget_fit_the_deployment() -> None:
    objects = kubernetes_objects()
    deployment, autoscaler, budget = (
        objects["Deployment"],
        objects["HorizontalPodAutoscaler"],
        objects["PodDisruptionBudget"],
    )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 3 <= autoscaler["spec"]["minReplicas"] < autoscaler["spec"]["maxReplicas"]
    [metric] = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # Utilization is measured against the request: without one the autoscaler cannot act.
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    resources = container["resources"]
    assert resources["requests"]["cpu"] == "1"  # one process uses at most one core
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 80
    # Scaling in drains a replica (each of its meetings reconnects once): slowly.
    scale_down = autoscaler["spec"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 300
    assert all(policy["value"] == 1 for policy in scale_down["policies"])

    def mebibytes(quantity: str) -> int:
        number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
        return int(number) * (1024 if unit == "Gi" else 1)

    assert mebibytes(resources["requests"]["memory"]) <= mebibytes(resources["limits"]["memory"])
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_network_policy_opens_the_proxy_port_and_only_prometheus_reaches_metrics() -> None:
    objects = kubernetes_objects()
    policy, deployment = objects["NetworkPolicy"], objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert set(ports) == {"proxy", "metrics"}
    rules = {port["port"]: rule for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert set(rules) == set(ports)  # every port the pod listens on is named by one rule
    assert "from" not in rules["proxy"]  # every client may use the proxy
    [source] = rules["metrics"]["from"]
    assert source["podSelector"]["matchLabels"]  # Prometheus pods only, never "anyone"
    assert source["namespaceSelector"]["matchLabels"]


def test_configmap_is_a_valid_configuration(tmp_path: Path) -> None:
    data = kubernetes_objects()["ConfigMap"]["data"]
    assert data["chime-ip-ranges.json"] == (ROOT / "config" / "chime-ip-ranges.json").read_text()
    for name, text in data.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    policy = load_policy(tmp_path / "allowlist.yaml")
    shipped = load_policy(ROOT / "config" / "allowlist.yaml")
    assert policy.headers == shipped.headers

    def key(prefixes: Any) -> list[tuple[str, str, str]]:
        return [(str(p.network), p.service, p.region) for p in prefixes]

    assert key(policy.table.prefixes) == key(shipped.table.prefixes)


# docs


def test_deploy_doc_covers_its_topics_and_is_linked_from_readme() -> None:
    # Its links (to the Dockerfile, compose files, manifests) are checked with every page's, by
    # tests/unit/test_docs.py.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/deploy.md" in readme
    doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for topic in ("PAC", "transparent", "block_global", "proxyauth", "Upgrading", "Scale-out"):
        assert topic in doc, topic


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
    )
    return result.returncode == 0


@pytest.mark.skipif(not _docker_compose_available(), reason="no `docker compose` here")
def test_compose_config_with_docker() -> None:  # pragma: no cover - only where compose exists
    for path in (COMPOSE, SCALE_OUT):
        result = subprocess.run(
            ["docker", "compose", "-f", str(path), "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_haproxy_accepts_its_configuration() -> None:
    """Debian's haproxy (installed by .ci/run) checks deploy/haproxy.cfg as it would load it."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    result = subprocess.run(
        [haproxy, "-c", "-f", str(SCALE_OUT.parent / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
