"""Deploy files keep the promises operators rely on: probes, limits, secrets, shared variable names,
least privilege, autoscaling within the partitions, and an image whose healthcheck works."""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from shared.status import serve, status_app
from shared.topics import all_topics
from streams.app import AGENTS
from streams.embedded.ports import free_port

K8S = ROOT / "deploy/k8s"
COMPOSE = ROOT / "deploy/compose/docker-compose.yml"
PACKAGES = ("shared", "streams", "connectors", "gateways")
COMPONENTS = {"api", "worker", "sink", "markets", "feed", "ws-gateway"}
NAME = {"app.kubernetes.io/name": "marketstream"}

Manifest = dict[str, Any]


def documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests(kind: str) -> list[Manifest]:
    return [d for f in sorted(K8S.glob("*.yaml")) for d in documents(f) if d.get("kind") == kind]


def deployments() -> list[Manifest]:
    return manifests("Deployment")


def pod_specs() -> Iterator[tuple[str, Manifest]]:
    """(component, pod spec) of every Deployment and Job."""
    for workload in deployments() + manifests("Job"):
        template = workload["spec"]["template"]
        yield template["metadata"]["labels"]["app.kubernetes.io/component"], template["spec"]


def component(manifest: Manifest) -> str:
    return str(manifest["metadata"]["labels"]["app.kubernetes.io/component"])


def configmap() -> dict[str, str]:
    (config,) = documents(K8S / "configmap.yaml")
    data: dict[str, str] = config["data"]
    return data


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and In/NotIn/Exists expressions) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, operator, values = expr["key"], expr["operator"], expr.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
    return True


def setting_names() -> set[str]:
    """Every environment variable that a Settings class of ours reads (prefix + field, or aliases)."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "env_prefix=" in path.read_text():
                importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    names: set[str] = set()
    pending: list[type[BaseSettings]] = [BaseSettings]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field_name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
            elif isinstance(alias, str):
                names.add(alias.upper())
            else:
                names.add(f"{prefix}{field_name}".upper())
    return names


def test_k8s_deployments_use_apps_v1_with_health_probes_and_limits() -> None:
    found = deployments()

    assert {d["metadata"]["name"] for d in found} >= {
        "marketstream-api",
        "marketstream-worker",
        "marketstream-sink",
        "marketstream-feed",
        "marketstream-ws-gateway",
    }
    for deployment in found:
        assert deployment["apiVersion"] == "apps/v1"
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/health"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["resources"]["limits"]["memory"]
        assert container["resources"]["limits"]["cpu"]
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["requests"]["memory"]


def test_k8s_database_url_comes_from_a_secret_never_a_configmap() -> None:
    assert "MS_DATABASE_URL" not in configmap()
    for deployment in deployments():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if deployment["metadata"]["name"] != "marketstream-feed":
            assert {"secretRef": {"name": "marketstream"}} in container["envFrom"]


def test_k8s_runs_real_data_only_and_takes_provider_keys_from_a_secret() -> None:
    config = configmap()
    (feed,) = [d for d in deployments() if d["metadata"]["name"] == "marketstream-feed"]
    (container,) = feed["spec"]["template"]["spec"]["containers"]

    assert config["MS_REAL_DATA_ONLY"] == "true"
    assert not any("KEY" in name for name in config)
    assert {"secretRef": {"name": "marketstream-providers"}} in container["envFrom"]
    commands = [
        c["command"] for d in deployments() for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert not any(
        "simulator" in command or "connectors.fakes" in " ".join(command) for command in commands
    )


def test_k8s_secrets_are_referenced_never_written_into_a_manifest() -> None:
    secret_like = ("KEY", "SECRET", "PASSWORD", "TOKEN", "DATABASE_URL")
    for _, pod in pod_specs():
        for container in pod["containers"]:
            for env in container.get("env", []):
                name = env["name"]
                if any(word in name for word in secret_like) and not name.endswith("_FILE"):
                    assert "secretKeyRef" in env.get("valueFrom", {}), name
    secrets = {f.name for f in K8S.glob("*.yaml") for d in documents(f) if d["kind"] == "Secret"}
    assert secrets == {"secret.example.yaml"}


def test_compose_sets_the_same_variable_names_as_the_code() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    names = set(compose["x-marketstream"]["environment"])
    names |= set(configmap())

    assert names >= {"MS_KAFKA_BOOTSTRAP", "MS_KAFKA_TRADES_PARTITIONS", "MS_DATABASE_URL"}
    assert all(name.startswith("MS_") for name in names)


def test_compose_k8s_and_env_example_name_only_variables_the_code_reads() -> None:
    known = setting_names()
    compose = yaml.safe_load(COMPOSE.read_text())
    ours = {
        name
        for service in compose["services"].values()
        if service.get("image") == "marketstream:latest"
        for name in service.get("environment", {})
    }
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / "deploy/compose/.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    k8s = set(configmap()) | {
        env["name"] for _, pod in pod_specs() for c in pod["containers"] for env in c.get("env", [])
    }
    k8s |= {
        name
        for secret in documents(K8S / "secret.example.yaml")
        if secret["metadata"]["name"] in {"marketstream", "marketstream-providers"}
        for name in secret["stringData"]
    }
    # Read by compose itself or by third-party images, not by our processes.
    example -= {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "KAFKA_CLUSTER_ID"}

    assert not ours - known, ours - known
    assert not example - known, example - known
    assert not k8s - known, k8s - known


def test_k8s_and_compose_workers_run_every_agent_exactly_once() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    compose_workers = [
        s["environment"]["MS_WORKER_AGENTS"]
        for s in compose["services"].values()
        if s.get("command") == ["python", "-m", "streams", "worker"]
    ]
    k8s_workers = [
        env["value"]
        for d in deployments()
        for env in d["spec"]["template"]["spec"]["containers"][0].get("env", [])
        if env["name"] == "MS_WORKER_AGENTS"
    ]
    for agent_sets in (compose_workers, k8s_workers):
        agents = [agent for agent_set in agent_sets for agent in agent_set.split(",")]
        assert sorted(agents) == sorted(AGENTS)


def test_k8s_pods_run_as_10001_with_a_read_only_root_and_no_privileges() -> None:
    found = list(pod_specs())

    assert {name for name, _ in found} == COMPONENTS | {"init"}
    for name, pod in found:
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            effective = {**pod["securityContext"], **container["securityContext"]}
            assert effective["runAsNonRoot"] is True, name
            assert effective["runAsUser"] == 10001, name
            assert effective["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert effective["readOnlyRootFilesystem"] is True, name
            assert effective["allowPrivilegeEscalation"] is False, name
            assert effective["capabilities"] == {"drop": ["ALL"]}, name


def test_k8s_pods_write_only_to_an_empty_dir_at_tmp_where_the_image_puts_its_data() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert "MS_WORKER_DATA_DIR=/tmp/worker-data" in dockerfile
    assert "NUMBA_CACHE_DIR=/tmp/numba-cache" in dockerfile
    for name, pod in pod_specs():
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get("/tmp") in empty_dirs, name
        for env in container.get("env", []):
            if env["name"] == "MS_WORKER_DATA_DIR":
                assert env["value"].startswith("/tmp/"), name


def test_k8s_components_are_labelled_and_each_has_a_service_with_named_ports_and_a_pdb() -> None:
    services = manifests("Service")
    budgets = manifests("PodDisruptionBudget")

    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"):
        for manifest in manifests(kind):
            assert selects({"matchLabels": NAME}, manifest["metadata"]["labels"]), kind
            assert component(manifest) in COMPONENTS | {"init"}, manifest["metadata"]["name"]
    for deployment in deployments():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"], labels)
        assert labels["app.kubernetes.io/component"] == component(deployment)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        port_names = {p["name"] for p in container["ports"]}
        mine = [s for s in services if selects({"matchLabels": s["spec"]["selector"]}, labels)]
        assert mine, f"no Service selects {deployment['metadata']['name']}"
        service_ports = [p for s in mine for p in s["spec"]["ports"]]
        assert all(p["name"] in {"http", "ws"} for p in service_ports)
        assert all(p["targetPort"] in port_names for p in service_ports)
        # The ServiceMonitors scrape port `http` on every component.
        assert "http" in {p["name"] for p in service_ports}, deployment["metadata"]["name"]
        assert [b for b in budgets if selects(b["spec"]["selector"], labels)]


def test_k8s_autoscalers_scale_api_and_gateway_on_cpu_and_workers_within_their_partitions() -> None:
    partitions = int(configmap()["MS_KAFKA_TRADES_PARTITIONS"])
    by_target = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in manifests("HorizontalPodAutoscaler")
    }
    replicas = {d["metadata"]["name"]: d["spec"].get("replicas") for d in deployments()}

    assert set(by_target) == {
        "marketstream-api",
        "marketstream-ws-gateway",
        "marketstream-worker",
        "marketstream-sink",
    }
    for name, hpa in by_target.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert replicas[name] is None, f"{name}: the HPA owns replicas"
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
    # A consumer group uses at most one member per partition of its input topics.
    assert max(spec.partitions for spec in all_topics(partitions)) == partitions
    for name in ("marketstream-worker", "marketstream-sink"):
        assert by_target[name]["spec"]["maxReplicas"] <= partitions
    # One matcher and one feed, never two at once.
    for name in ("marketstream-markets", "marketstream-feed"):
        (deployment,) = [d for d in deployments() if d["metadata"]["name"] == name]
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def policy_allows(
    direction: str,
    pod: dict[str, str],
    pod_ports: dict[str, int],
    peer: dict[str, Any],
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether the NetworkPolicies let `pod` (its labels, its named container ports) talk to or
    hear from `peer` ({"namespace": …, "labels": …} or {"ip": …}) on `port`."""
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    policies = [
        p["spec"]
        for p in manifests("NetworkPolicy")
        if selects(p["spec"]["podSelector"], pod) and direction in p["spec"]["policyTypes"]
    ]
    assert policies, f"{pod} is not isolated for {direction}"

    def peer_matches(rule_peer: Manifest) -> bool:
        if "ipBlock" in rule_peer:
            if "ip" not in peer:
                return False
            ip = ipaddress.ip_address(peer["ip"])
            block = rule_peer["ipBlock"]
            return ip in ipaddress.ip_network(block["cidr"]) and not any(
                ip in ipaddress.ip_network(e) for e in block.get("except", [])
            )
        if "ip" in peer:
            return False
        namespace = {"kubernetes.io/metadata.name": peer["namespace"]}
        if "namespaceSelector" in rule_peer:
            if not selects(rule_peer["namespaceSelector"], namespace):
                return False
        elif peer["namespace"] != "marketstream":
            return False
        return selects(rule_peer.get("podSelector", {}), peer["labels"])

    def port_matches(entry: Manifest) -> bool:
        wanted = entry["port"]
        number = pod_ports.get(wanted) if isinstance(wanted, str) else wanted
        return entry.get("protocol", "TCP") == protocol and number == port

    return any(
        (not rule.get(peers_key) or any(peer_matches(p) for p in rule[peers_key]))
        and (not rule.get("ports") or any(port_matches(e) for e in rule["ports"]))
        for policy in policies
        for rule in policy.get(key, [])
    )


def test_k8s_network_policies_allow_each_component_only_what_it_needs() -> None:
    dns = {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}
    kafka = {"namespace": "kafka", "labels": {"strimzi.io/kind": "Kafka"}}
    postgres = {"namespace": "db", "labels": {"app": "timescaledb"}}
    prometheus = {"namespace": "monitoring", "labels": {"app.kubernetes.io/name": "prometheus"}}
    stranger = {"namespace": "other", "labels": {"app": "curious"}}
    internet, metadata_service = {"ip": "198.51.100.7"}, {"ip": "169.254.169.254"}
    for workload in deployments() + manifests("Job"):
        name = component(workload)
        pod = workload["spec"]["template"]["metadata"]["labels"]
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}

        def egress(peer: dict[str, Any], port: int, protocol: str = "TCP") -> bool:
            return policy_allows("Egress", pod, ports, peer, port, protocol)  # noqa: B023

        def ingress(peer: dict[str, Any], port: int) -> bool:
            return policy_allows("Ingress", pod, ports, peer, port)  # noqa: B023

        assert egress(dns, 53, "UDP") and egress(dns, 53), name
        assert egress(kafka, 9092), name
        assert egress(postgres, 5432) == (name != "feed"), name
        assert egress(internet, 443) == (name == "feed"), name
        assert not egress(metadata_service, 443), name
        assert not egress(stranger, 8080), name
        for status_port in ports.values():
            assert ingress(prometheus, status_port), name
            assert ingress(stranger, status_port) == (name in {"api", "ws-gateway"}), name
        assert not ingress(stranger, 5432), name


def test_image_copies_every_package_the_distribution_ships() -> None:
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = {
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
    }

    assert packages and packages <= copied, packages - copied


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), stage by stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_image_builds_in_one_stage_and_runs_slim_as_10001_without_build_tools() -> None:
    *builders, runtime = dockerfile_stages()

    assert builders, "a builder stage"
    assert all(stage[0].startswith("FROM python:3.11-slim") for stage in [*builders, runtime])
    assert any("pip wheel" in line for line in builders[0])
    assert not any("apt-get" in line or "pip wheel" in line for line in runtime)
    assert [line for line in runtime if line.startswith("USER ")][-1] == "USER 10001:10001"
    assert any(line.startswith("COPY --from=") for line in runtime)
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".run", "tests", "**/.env", ".pytest_cache", ".mypy_cache"} <= ignored


def healthcheck_command() -> list[str]:
    (line,) = [line for line in dockerfile_stages()[-1] if line.startswith("HEALTHCHECK ")]
    command: list[str] = json.loads(line.split(" CMD ", 1)[1])
    return command


@pytest.mark.parametrize(
    "variable", ["MS_API_HTTP_PORT", "MS_WORKER_HTTP_PORT", "MS_CONNECTOR_HTTP_PORT", "MS_WS_PORT"]
)
async def test_image_healthcheck_passes_while_the_process_answers_on_its_port_and_fails_after(
    variable: str,
) -> None:
    command = healthcheck_command()
    runner = await serve(status_app("any", {}), "127.0.0.1", 0, port_variable=variable)
    port = runner.addresses[0][1]
    env = {
        **os.environ,
        **{v: str(free_port()) for v in ("MS_API_HTTP_PORT", "MS_WORKER_HTTP_PORT")},
        **{v: str(free_port()) for v in ("MS_CONNECTOR_HTTP_PORT", "MS_WS_PORT")},
        variable: str(port),
    }

    async def check() -> int:
        process = await asyncio.create_subprocess_exec(sys.executable, *command[1:], env=env)
        return await asyncio.wait_for(process.wait(), timeout=30)

    assert command[0] == "python"
    try:
        alive = await check()
    finally:
        await runner.cleanup()
    assert alive == 0
    assert await check() == 1
