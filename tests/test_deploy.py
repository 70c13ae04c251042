"""Deploy files keep the promises operators rely on: probes, limits, secrets, shared variable names."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import ROOT

from streams.app import AGENTS

K8S = ROOT / "deploy/k8s"


def documents(path: Path) -> list[dict[str, object]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def deployments() -> list[dict]:  # type: ignore[type-arg]
    return [
        d for f in sorted(K8S.glob("*.yaml")) for d in documents(f) if d["kind"] == "Deployment"
    ]


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


def test_k8s_database_url_comes_from_a_secret_never_a_configmap() -> None:
    config = next(d for d in documents(K8S / "configmap.yaml") if d["kind"] == "ConfigMap")

    assert "MS_DATABASE_URL" not in config["data"]
    for deployment in deployments():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if deployment["metadata"]["name"] != "marketstream-feed":
            assert {"secretRef": {"name": "marketstream"}} in container["envFrom"]


def test_k8s_runs_real_data_only_and_takes_provider_keys_from_a_secret() -> None:
    config = next(d for d in documents(K8S / "configmap.yaml") if d["kind"] == "ConfigMap")
    (feed,) = [d for d in deployments() if d["metadata"]["name"] == "marketstream-feed"]
    (container,) = feed["spec"]["template"]["spec"]["containers"]

    assert config["data"]["MS_REAL_DATA_ONLY"] == "true"
    assert not any("KEY" in name for name in config["data"])
    assert {"secretRef": {"name": "marketstream-providers"}} in container["envFrom"]
    commands = [
        c["command"] for d in deployments() for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert not any(
        "simulator" in command or "connectors.fakes" in " ".join(command) for command in commands
    )


def test_compose_sets_the_same_variable_names_as_the_code() -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose/docker-compose.yml").read_text())
    names = set(compose["x-marketstream"]["environment"])
    names |= set(documents(K8S / "configmap.yaml")[0]["data"])

    assert names >= {"MS_KAFKA_BOOTSTRAP", "MS_KAFKA_TRADES_PARTITIONS", "MS_DATABASE_URL"}
    assert all(name.startswith("MS_") for name in names)


def test_k8s_and_compose_workers_run_every_agent_exactly_once() -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose/docker-compose.yml").read_text())
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
