"""The alert rules: promtool accepts them and passes their unit tests, which fire and quiet every
alert; each alert says how bad it is and where its runbook is; the Kubernetes PrometheusRule has
the same groups; every series a rule reads is one our processes export or a scrape makes; and
the scrape configs of Compose and Kubernetes reach every process the rules are about."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Final

import promql_parser
import yaml
from conftest import ROOT
from exported_metrics import SCRAPE_SERIES, exported_series
from pydantic_settings import BaseSettings

from connectors.__main__ import ConnectorProcessSettings
from connectors.backfill import BackfillSettings
from gateways.http import ApiSettings
from gateways.ws.server import WsSettings
from streams.app import WorkerSettings

PROMTOOL: Final = Path("/usr/bin/promtool")  # Debian's `prometheus`; the Makefile installs it
BLACKBOX: Final = Path("/usr/bin/prometheus-blackbox-exporter")  # `prometheus-blackbox-exporter`
PROMETHEUS_DIR: Final = ROOT / "deploy/compose/prometheus"
RULES: Final = PROMETHEUS_DIR / "rules.yml"
K8S: Final = ROOT / "deploy/k8s"
RUNBOOKS: Final = "https://github.com/marketstream/marketstream/blob/main/README.md#runbook-"
# `python -m <these>` in a Compose command, and the setting that is its /metrics port
PORT_SETTINGS: Final[dict[tuple[str, ...], tuple[type[BaseSettings], str]]] = {
    ("gateways.http",): (ApiSettings, "http_port"),
    ("streams", "worker"): (WorkerSettings, "http_port"),
    ("gateways.ws",): (WsSettings, "port"),
    ("connectors", "run"): (ConnectorProcessSettings, "http_port"),
    ("connectors", "backfill"): (BackfillSettings, "http_port"),
}

Document = dict[str, Any]


def rules_groups() -> list[Document]:
    groups: list[Document] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def all_rules() -> list[Document]:
    return [rule for group in rules_groups() for rule in group["rules"]]


def alerts() -> list[Document]:
    return [rule for rule in all_rules() if "alert" in rule]


def selector_names(expr: str) -> set[str]:
    """The metric names `expr` selects, from the PromQL parser's syntax tree."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            equal = [m.value for m in node.matchers.matchers if m.name == "__name__"]
            assert node.name or equal, f"a selector without a metric name in {expr!r}"
            names.update([node.name] if node.name else equal)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def rule_metric_names() -> set[str]:
    """Every metric name the rules' expressions read."""
    return {name for rule in all_rules() for name in selector_names(rule["expr"])}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.exists(), f"{PROMTOOL} is missing: the Makefile installs Debian's prometheus"
    return subprocess.run(
        [str(PROMTOOL), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )


def documents(path: Path) -> list[Document]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_rules_file_passes_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))

    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_unit_tests_pass_promtool_test() -> None:
    result = promtool("test", "rules", "rules_test.yml")

    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_unit_tests_fire_and_quiet_every_alert() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "rules_test.yml").read_text())["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    names = {rule["alert"] for rule in alerts()}

    fired = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert fired == names, f"never fired: {names - fired}; unknown: {fired - names}"
    assert quiet == names, f"never kept quiet: {names - quiet}; unknown: {quiet - names}"
    for check in checks:
        for expected in check["exp_alerts"]:
            assert expected["exp_labels"]["severity"] and expected["exp_annotations"], check


def test_alerts_have_severity_summary_description_and_their_runbook_anchor() -> None:
    found = alerts()

    assert len({rule["alert"] for rule in found}) == len(found), "an alert name twice"
    for rule in found:
        name = rule["alert"]
        assert re.fullmatch(r"[A-Za-z0-9]+", name), f"{name}: its runbook anchor would not be an id"
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert rule["annotations"]["runbook_url"] == RUNBOOKS + name.lower(), name


def test_every_alert_has_its_runbook_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()

    for rule in alerts():
        name = rule["alert"]
        anchor = f'<a id="runbook-{name.lower()}"></a>\n#### Runbook: {name}\n'
        assert anchor in readme, f"README.md has no runbook section for {name}"


def test_rules_read_only_series_our_processes_export_or_scrapes_make() -> None:
    recorded = {rule["record"] for rule in all_rules() if "record" in rule}
    known = exported_series() | SCRAPE_SERIES | recorded
    sample = 'sum(rate(a_total{x="1"}[5m])) / on() group_left b or {__name__="c"} offset 5m'

    assert selector_names(sample) == {"a_total", "b", "c"}  # what the parser finds is all there is
    assert rule_metric_names() - known == set()


def test_prometheusrule_has_the_rules_files_groups() -> None:
    (rule,) = documents(K8S / "prometheusrule.yaml")

    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == rules_groups()


def test_compose_prometheus_config_passes_promtool_check(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]  # where Compose mounts rules.yml
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config | {"rule_files": [str(RULES)]}))

    result = promtool("check", "config", str(local))

    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_blackbox_modules_pass_the_exporters_check() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    modules = set(yaml.safe_load((PROMETHEUS_DIR / "blackbox.yml").read_text())["modules"])
    used = {m for job in config["scrape_configs"] for m in job.get("params", {}).get("module", [])}
    assert BLACKBOX.exists(), f"{BLACKBOX} is missing: the Makefile installs it with apt"

    result = subprocess.run(
        [str(BLACKBOX), "--config.check", f"--config.file={PROMETHEUS_DIR / 'blackbox.yml'}"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert used == modules == {"http_2xx", "tcp_connect"}


def test_compose_prometheus_scrapes_every_marketstream_service_on_its_port() -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose/docker-compose.yml").read_text())
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = [
        job for job in config["scrape_configs"] if job.get("metrics_path", "/metrics") == "/metrics"
    ]
    scraped = {
        t for job in jobs for static in job.get("static_configs", []) for t in static["targets"]
    }
    # by DNS: services of a profile, which may not run
    found = {
        f"{name}:{sd['port']}"
        for job in jobs
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    expected: dict[str, bool] = {}  # target: whether its service runs only in a profile
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if command[:2] != ["python", "-m"]:
            continue  # not ours, or a one-off shell command like init
        settings, field = next(
            setting
            for args, setting in PORT_SETTINGS.items()
            if tuple(command[2:][: len(args)]) == args
        )
        variable = (str(settings.model_config.get("env_prefix", "")) + field).upper()
        port = service.get("environment", {}).get(variable, settings.model_fields[field].default)
        expected[f"{name}:{port}"] = bool(service.get("profiles"))

    assert expected, "no marketstream service in docker-compose.yml"
    assert {target for target, optional in expected.items() if not optional} <= scraped
    assert {target for target, optional in expected.items() if optional} <= found
    assert scraped.isdisjoint(found)


def matches(selector: Document, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions with In) selects."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_k8s_monitors_scrape_every_deployment_once_on_metrics() -> None:
    docs = [doc for path in sorted(K8S.glob("*.yaml")) for doc in documents(path)]
    kinds = {kind: [d for d in docs if d["kind"] == kind] for kind in {d["kind"] for d in docs}}
    deployments = kinds.get("Deployment", [])
    assert deployments

    for deployment in deployments:
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        (container,) = pod["spec"]["containers"]
        ports = {port["name"] for port in container.get("ports", []) if "name" in port}
        ports |= {port["containerPort"] for port in container.get("ports", [])}
        scrapes = []
        for service in kinds.get("Service", []):
            if not matches({"matchLabels": service["spec"]["selector"]}, labels):
                continue
            targets = {p["name"]: p.get("targetPort", p["port"]) for p in service["spec"]["ports"]}
            for monitor in kinds.get("ServiceMonitor", []):
                if matches(monitor["spec"]["selector"], service["metadata"]["labels"]):
                    # the operator scrapes a Service's endpoints on the ports the monitor names
                    for endpoint in monitor["spec"]["endpoints"]:
                        if endpoint["port"] in targets:
                            assert targets[endpoint["port"]] in ports, (service, endpoint)
                            scrapes.append(endpoint)
        for monitor in kinds.get("PodMonitor", []):
            if matches(monitor["spec"]["selector"], labels):
                for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                    assert endpoint["port"] in ports, (deployment["metadata"]["name"], endpoint)
                    scrapes.append(endpoint)

        assert [e["path"] for e in scrapes] == ["/metrics"], deployment["metadata"]["name"]
    monitors = kinds.get("ServiceMonitor", []) + kinds.get("PodMonitor", [])
    # the job label is the component, as the Compose jobs are named
    assert {m["spec"]["jobLabel"] for m in monitors} == {"app.kubernetes.io/component"}
