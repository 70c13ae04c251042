"""Every Kubernetes manifest validates against the Kubernetes API's schemas, offline.

kubernetes-validate ships the API's OpenAPI definitions as JSON schemas per release; its strict
schemas also refuse fields the API does not have (a misspelt `readOnlyRootFilesytem` would
otherwise be dropped without a word). We check the oldest release we support and the newest it
ships. The Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule) are not in those
schemas, so they get structural checks instead, and kustomization.yaml is a kustomize file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from conftest import ROOT

K8S = ROOT / "deploy/k8s"
KUBERNETES_VERSIONS = ("1.30", "1.37")
CRDS = {"monitoring.coreos.com/v1": {"ServiceMonitor", "PrometheusRule", "Probe"}}
KUSTOMIZATION = K8S / "kustomization.yaml"
EXAMPLES = {"secret.example.yaml"}

Manifest = dict[str, Any]


def documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    return [path for path in sorted(K8S.glob("*.yaml")) if path != KUSTOMIZATION]


def is_crd(document: Manifest) -> bool:
    return document["kind"] in CRDS.get(document["apiVersion"], set())


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, In/NotIn/Exists expressions) selects `labels`."""
    expressions = selector.get("matchExpressions", [])
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
        {
            "In": labels.get(e["key"]) in e.get("values", []),
            "NotIn": labels.get(e["key"]) not in e.get("values", []),
            "Exists": e["key"] in labels,
            "DoesNotExist": e["key"] not in labels,
        }[e["operator"]]
        for e in expressions
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_k8s_manifests_validate_strictly_against_the_kubernetes_schemas(version: str) -> None:
    failures = []
    checked = 0
    for path in manifest_files():
        for document in documents(path):
            if is_crd(document):
                continue
            what = f"{path.name} {document['kind']}/{document['metadata']['name']}"
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(part) for part in exc.path)
                failures.append(f"{what}: {where}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                failures.append(f"{what}: {exc.message}")
            checked += 1

    assert not failures, "\n".join(failures)
    assert checked >= 30


def test_k8s_strict_validation_rejects_a_misspelt_field_and_a_wrong_type() -> None:
    (deployment, *_) = documents(K8S / "api.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesytem"] = True
    container["resources"]["limits"]["memory"] = ["512Mi"]

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_k8s_operator_resources_have_the_shape_the_prometheus_operator_reads() -> None:
    documents_by_kind: dict[str, list[Manifest]] = {}
    for path in manifest_files():
        for document in documents(path):
            documents_by_kind.setdefault(document["kind"], []).append(document)
    services = documents_by_kind.get("Service", [])

    for monitor in documents_by_kind.get("ServiceMonitor", []):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selector = monitor["spec"]["selector"]
        selected = [s for s in services if selects(selector, s["metadata"]["labels"])]
        assert selected, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        ports = {p["name"] for s in selected for p in s["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports, endpoint
            assert endpoint.get("path", "/metrics") == "/metrics"
    blackbox = yaml.safe_load((ROOT / "deploy/compose/prometheus/blackbox.yml").read_text())
    modules = set(blackbox["modules"])
    for probe in documents_by_kind.get("Probe", []):
        assert probe["spec"]["module"] in modules, probe["metadata"]["name"]
        assert probe["spec"]["jobName"] in {"blackbox-http", "blackbox-tcp"}  # as in compose
        assert probe["spec"]["targets"]["staticConfig"]["static"]
    for rule in documents_by_kind.get("PrometheusRule", []):
        assert rule["apiVersion"] == "monitoring.coreos.com/v1"
        for group in rule["spec"]["groups"]:
            assert group["name"] and group["rules"]
            for entry in group["rules"]:
                assert ("alert" in entry) != ("record" in entry), entry
                assert isinstance(entry["expr"], str) and entry["expr"].strip()


def test_k8s_kustomization_applies_every_manifest_but_the_examples_and_the_crds() -> None:
    (kustomization,) = documents(KUSTOMIZATION)
    operator_files = {
        path.name for path in manifest_files() if any(is_crd(d) for d in documents(path))
    }
    expected = {path.name for path in manifest_files()} - EXAMPLES - operator_files

    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(expected)
    assert kustomization["namespace"] == "marketstream"
    assert [image["name"] for image in kustomization["images"]] == ["marketstream"]
