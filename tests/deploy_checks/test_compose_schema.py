"""The compose file is valid Compose, and deploys as it is: every service checked for health,
started in order, its secrets from .env and its mounted configuration present in the repo.

The Compose Specification's JSON schema is the one check-jsonschema vendors (its
`check-compose-spec` hook; the schema's license is in its vendor/licenses), read offline.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from conftest import ROOT

COMPOSE_DIR = ROOT / "deploy/compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
# Where each kind of our process serves /health by default.
STATUS_PORTS = {"gateways.http": 8080, "streams": 6066, "connectors": 9101, "gateways.ws": 8765}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?P<op>:?[-?])?(?P<rest>[^}]*)\}")


def compose_spec() -> dict[str, Any]:
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.origin is not None, "pip install check-jsonschema"
    path = Path(spec.origin).parent / "builtin_schemas/vendor/compose-spec.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def env_example() -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {name: value for name, value in pairs}


def ours(services: dict[str, Any]) -> dict[str, Any]:
    return {n: s for n, s in services.items() if s.get("image") == "marketstream:latest"}


def test_compose_file_validates_against_the_compose_specification_schema() -> None:
    schema = compose_spec()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=jsonschema.FormatChecker())

    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose())
    ]

    assert not errors, "\n".join(errors)


def test_compose_schema_check_rejects_a_misspelt_healthcheck_and_a_bad_condition() -> None:
    schema = compose_spec()
    validator = jsonschema.validators.validator_for(schema)(schema)
    broken = compose()
    broken["services"]["api"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["init"]["depends_on"]["kafka"]["condition"] = "service_up"

    messages = [e.message for e in validator.iter_errors(broken)]

    assert any("intervall" in m for m in messages)
    assert len(messages) >= 2


def test_compose_runs_every_required_service_on_its_documented_port() -> None:
    services = compose()["services"]
    published = {
        name: {int(p.rsplit(":", 2)[-1]) for p in s.get("ports", [])}
        for name, s in services.items()
    }

    assert set(services) >= {
        "kafka", "schema-registry", "timescaledb", "init", "api", "worker", "sink", "markets",
        "ws-gateway", "simulator", "prometheus", "grafana", "blackbox",
    }  # fmt: skip
    expected = {"api": 8080, "ws-gateway": 8765, "schema-registry": 8081, "prometheus": 9090}
    expected |= {"grafana": 3000, "blackbox": 9115}
    for name, port in expected.items():
        assert port in published[name], name
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["kafka"]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert "kafka-data:/var/lib/kafka/data" in services["kafka"]["volumes"]
    major = int(services["timescaledb"]["image"].rsplit("-pg", 1)[1])
    assert major >= 15


def test_compose_checks_every_service_and_ours_on_its_own_status_port() -> None:
    services = compose()["services"]

    for name, service in services.items():
        check = service.get("healthcheck", {})
        if service.get("restart") == "no":  # one-shot: its exit status is what counts
            assert check == {"disable": True}, name
            continue
        assert check.get("test"), name
        assert not check.get("disable", False), name
    for name, service in ours(services).items():
        if service.get("restart") == "no":
            continue
        command = service["command"]
        port = STATUS_PORTS[command[2]]  # python -m <this>
        assert service["healthcheck"]["test"][:3] == ["CMD", "python", "-c"], name
        assert f"http://127.0.0.1:{port}/health'" in service["healthcheck"]["test"][3], name


def test_compose_starts_services_after_what_they_need_is_healthy_or_done() -> None:
    services = compose()["services"]

    for name, service in services.items():
        for needed, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            assert condition in {"service_healthy", "service_completed_successfully"}, name
            if condition == "service_healthy":
                assert "test" in services[needed]["healthcheck"], (name, needed)
            else:
                assert services[needed]["restart"] == "no", (name, needed)
    for name, service in ours(services).items():
        needs = service["depends_on"]
        if name == "init":
            assert set(needs) >= {"kafka", "timescaledb", "schema-registry"}
        else:
            assert needs["init"] == {"condition": "service_completed_successfully"}, name
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_compose_takes_secrets_from_env_and_env_example_names_every_variable() -> None:
    text = COMPOSE.read_text()
    used = {m["name"]: m["op"] for m in INTERPOLATION.finditer(text)}
    example = env_example()
    services = compose()["services"]

    required = {name for name, op in used.items() if op in {"?", ":?"}}
    assert required <= set(example), required - set(example)
    assert set(used) == set(example), set(used) ^ set(example)
    for name, service in services.items():
        for variable, value in (service.get("environment") or {}).items():
            secret = any(w in variable for w in ("KEY", "SECRET", "PASSWORD", "TOKEN"))
            if secret and not variable.endswith("_FILE"):
                assert INTERPOLATION.fullmatch(str(value)), (name, variable)
    url = services["api"]["environment"]["MS_DATABASE_URL"]
    assert "${POSTGRES_PASSWORD:?" in url
    for variable, value in example.items():
        if any(w in variable for w in ("KEY", "SECRET", "PASSWORD")):
            assert value == "" or value.startswith("change-me"), variable


def test_compose_mounts_only_configuration_that_is_in_the_repo() -> None:
    services = compose()["services"]
    mounts = {
        volume.split(":")[0]: volume.split(":")[1]
        for service in services.values()
        for volume in service.get("volumes", [])
        if volume.startswith("./")
    }

    assert mounts == {
        "./prometheus/prometheus.yml": "/etc/prometheus/prometheus.yml",
        "./prometheus/rules.yml": "/etc/prometheus/rules.yml",
        "./prometheus/blackbox.yml": "/etc/blackbox_exporter/config.yml",
        "./grafana/provisioning": "/etc/grafana/provisioning",
        "./grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    missing = [source for source in mounts if not (COMPOSE_DIR / source).exists()]
    assert not missing, missing
