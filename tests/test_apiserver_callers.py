"""apiserver-caller-strict: webhooks, aggregated APIs and CRD conversion webhooks behind STRICT, served
by the Kubernetes API double over HTTP (live) and replayed from a snapshot; strict-ready's simulated
switch; what the check says when the kinds cannot be read."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli
from harness.cluster import FakeCluster
from harness.scenarios import pod_object

QUERY = "findings[?check=='apiserver-caller-strict']"
ADMISSION = "admissionregistration.k8s.io/v1"


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def service(ns: str, name: str, app: str, port: int = 443, target: int | str = 9443) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": app}, "ports": [{"port": port, "targetPort": target}]},
    }


def peer_auth(ns: str, name: str, mode: str, selector: dict[str, str] | None = None, **ports: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"mtls": {"mode": mode}}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {p.removeprefix("p"): {"mode": m} for p, m in ports.items()}
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec,
    }


def webhook_configuration(kind: str, name: str, ns: str, svc: str, port: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"namespace": ns, "name": svc, "path": "/validate"}
    if port is not None:
        ref["port"] = port
    return {
        "apiVersion": ADMISSION,
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [{"name": f"{name}.example.com", "clientConfig": {"service": ref}, "sideEffects": "None"}],
    }


def world() -> list[dict[str, Any]]:
    """STRICT and PERMISSIVE targets of every kind the apiserver calls."""
    objects: list[dict[str, Any]] = [namespace(n) for n in ("istio-system", "strict", "lax")]
    objects += [
        peer_auth("strict", "default", "STRICT"),
        peer_auth("lax", "default", "PERMISSIVE"),
        # STRICT webhook: the finding
        pod_object("strict", "policy-webhook-6c9f7d8b4-k2x7p", "policy-webhook", "webhook"),
        service("strict", "policy-webhook", "policy-webhook"),
        webhook_configuration("ValidatingWebhookConfiguration", "policy-checker", "strict", "policy-webhook"),
        # PERMISSIVE target: fine
        pod_object("lax", "mutator-7f5b9c6d8-wq4zn", "mutator", "mutator"),
        service("lax", "mutator", "mutator", port=8443, target=8443),
        webhook_configuration("MutatingWebhookConfiguration", "defaults", "lax", "mutator", port=8443),
        # STRICT namespace, but the port is not intercepted: fine
        pod_object(
            "strict",
            "metrics-api-5d8c7b9f6-h3m9t",
            "metrics-api",
            "metrics",
            annotations={"traffic.sidecar.istio.io/excludeInboundPorts": "6443"},
        ),
        service("strict", "metrics-api", "metrics-api", target=6443),
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "service": {"namespace": "strict", "name": "metrics-api", "port": 443},
            },
        },
        # CRD conversion: the workload policy is STRICT with a PERMISSIVE exception on another port
        pod_object("strict", "converter-5f9699cfdf-zzs7r", "converter", "converter"),
        service("strict", "converter", "converter", target=9443),
        peer_auth("strict", "converter", "STRICT", {"app": "converter"}, p8080="PERMISSIVE"),
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"plural": "widgets", "kind": "Widget"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {}}}],
                "conversion": {
                    "strategy": "Webhook",
                    "webhook": {
                        "conversionReviewVersions": ["v1"],
                        "clientConfig": {"service": {"namespace": "strict", "name": "converter"}},
                    },
                },
            },
        },
    ]
    return objects


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with FakeCluster(tmp_path, world()) as fake:
        yield fake


def findings(proc: Any) -> list[dict[str, Any]]:
    data = json.loads(proc.stdout)
    return [f for f in data["findings"] if f["check"] == "apiserver-caller-strict"]


def test_fires_on_strict_targets_only_live(cluster: FakeCluster) -> None:
    proc = run_cli("check", "-A", "-o", "json", env=cluster.env())
    assert proc.returncode == 1, proc.stderr
    found = {f["name"]: f for f in findings(proc)}
    assert set(found) == {"policy-checker", "widgets.example.com"}  # not the PERMISSIVE nor the excluded port
    webhook = found["policy-checker"]
    assert webhook["kind"] == "ValidatingWebhookConfiguration" and webhook["severity"] == "error"
    assert webhook["message"] == (
        "the kube-apiserver calls policy-checker.example.com at Service strict/policy-webhook:443, whose pods are "
        "STRICT on target port 9443: the apiserver has no mesh certificate, so the call fails (failed calling "
        "webhook ... connection reset by peer)"
    )
    assert webhook["evidence"]["pods"] == ["strict/policy-webhook-6c9f7d8b4-k2x7p"]
    assert webhook["evidence"]["policy"] == "strict/default"
    # no workload policy decides: a new one selecting the Service's pods, PERMISSIVE on the target port
    assert webhook["hint"] == (
        'echo \'{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication","metadata":'
        '{"name":"policy-webhook-apiserver","namespace":"strict"},"spec":{"selector":{"matchLabels":'
        '{"app":"policy-webhook"}},"portLevelMtls":{"9443":{"mode":"PERMISSIVE"}}}}\' | kubectl apply -f -'
    )
    conversion = found["widgets.example.com"]
    assert conversion["kind"] == "CustomResourceDefinition"
    assert conversion["evidence"]["target_port"] == 9443 and conversion["evidence"]["service_port"] == 443
    # the workload policy in force gets the exception
    assert conversion["hint"] == (
        "kubectl patch peerauthentication converter -n strict --type merge -p "
        '\'{"spec":{"portLevelMtls":{"9443":{"mode":"PERMISSIVE"}}}}\''
    )
    # the check reads the four kinds cluster-wide, once each, read-only
    paths = [r.path for r in cluster.api.requests if r.method != "GET"]
    assert paths == []
    listed = {r.path for r in cluster.api.requests}
    assert "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations" in listed
    assert "/apis/apiextensions.k8s.io/v1/customresourcedefinitions" in listed


def test_the_fix_clears_the_finding(tmp_path: Path) -> None:
    objects = [
        *world(),
        peer_auth("strict", "policy-webhook-apiserver", "UNSET", {"app": "policy-webhook"}, p9443="PERMISSIVE"),
    ]
    objects = [o for o in objects if o.get("kind") != "CustomResourceDefinition"]
    with FakeCluster(tmp_path, objects) as fake:
        proc = run_cli("check", "-A", "-o", "json", env=fake.env())
    assert findings(proc) == []
    checks = {c["check"]: c["status"] for c in json.loads(proc.stdout)["checks"]}
    assert checks["apiserver-caller-strict"] == "ok"


def test_snapshot_replays_and_keeps_crds_small(cluster: FakeCluster, tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    proc = run_cli("snapshot", "-A", "-d", str(snap), env=cluster.env())
    assert proc.returncode == 3, proc.stderr  # no sidecar config behind these pods: that alone is missing
    assert proc.stdout.startswith(f"Wrote snapshot {snap}")
    crds = json.loads((snap / "kubernetes" / "customresourcedefinitions.json").read_text())["items"]
    assert crds[0]["spec"] == {
        "group": "example.com",
        "conversion": crds[0]["spec"]["conversion"],
    }  # schemas and versions dropped
    live = run_cli("check", "-A", "-o", "json", env=cluster.env())
    replay = run_cli("check", "-A", "-o", "json", "--snapshot", str(snap))
    assert [(f["name"], f["hint"]) for f in findings(replay)] == [(f["name"], f["hint"]) for f in findings(live)]


def test_unreadable_kinds_skip_the_check_with_the_reason(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, world()) as fake:
        fake.api.fail(403, path="/apis/apiregistration.k8s.io/")
        proc = run_cli("check", "-A", "-o", "json", env=fake.env())
    data = json.loads(proc.stdout)
    assert {c["check"]: c["status"] for c in data["checks"]}["apiserver-caller-strict"] == "skipped"
    assert findings(proc) == []
    reasons = [i["why"] for i in data["incomplete"] if i["what"] == "check apiserver-caller-strict"]
    assert reasons == ["not run: could not read apiservices"]
    # the API's own reason is given once, under the kind
    assert any("Forbidden" in i["why"] for i in data["incomplete"] if i["what"] == "apiservices"), data["incomplete"]


def test_snapshot_taken_before_the_kinds_were_recorded_says_not_read(tmp_path: Path) -> None:
    # a snapshot written by an older kubectl-mtls: the example without the kinds this check reads
    old = tmp_path / "old"
    shutil.copytree(REPO / "examples" / "rotation", old)
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations", "apiservices",
                 "customresourcedefinitions"):
        (old / "kubernetes" / f"{kind}.json").unlink()
    proc = run_cli("check", "-A", "-o", "json", "--snapshot", str(old))
    data = json.loads(proc.stdout)
    assert {c["check"]: c["status"] for c in data["checks"]}["apiserver-caller-strict"] == "skipped"
    assert any(
        "validatingwebhookconfigurations.json" in i["why"]
        for i in data["incomplete"]
        if i["what"] == "validatingwebhookconfigurations"
    )


def test_strict_ready_warns_before_the_switch(tmp_path: Path) -> None:
    objects = [o for o in world() if not (o.get("kind") == "PeerAuthentication" and o["metadata"]["name"] == "default")]
    with FakeCluster(tmp_path, objects) as fake:
        proc = run_cli("strict-ready", "-n", "strict", "-o", "json", env=fake.env())
    data = json.loads(proc.stdout)
    after = [f for f in data["findings"] if f["check"] == "apiserver-caller-strict"]
    # policy-checker breaks with the switch; the conversion webhook is STRICT already (its workload policy)
    assert sorted(f["name"] for f in after) == ["policy-checker", "widgets.example.com"]
    assert after[0]["message"].startswith("after the switch: the kube-apiserver calls policy-checker.example.com")


def test_explain_lists_the_check() -> None:
    proc = run_cli("explain", "apiserver-caller-strict")
    assert proc.returncode == 0
    assert "portLevelMtls" in proc.stdout and "excludeInboundPorts" in proc.stdout
