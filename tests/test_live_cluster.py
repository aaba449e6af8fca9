"""The live source end to end: the official Kubernetes client against the API double over HTTP,
and istioctl (the double) as a subprocess: what it asks, and how every failure reaches the user."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, assert_one_line_error, run_cli
from harness.cluster import FakeCluster

EXAMPLE = REPO / "examples" / "rotation"
NS = "shop"
FRONTEND, ORDERS, PAYMENTS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn", "payments-5d8c7b9f6-h3m9t"
SIDECARS = (FRONTEND, ORDERS, PAYMENTS)


def example_objects() -> list[dict]:
    objects = []
    for path in sorted((EXAMPLE / "kubernetes").glob("*.json")):
        objects.extend(json.loads(path.read_text())["items"])
    return objects


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with FakeCluster(tmp_path, example_objects()) as fake:
        for pod in SIDECARS:
            fake.set_proxy(NS, pod, {"dump": str(EXAMPLE / "proxies" / NS / f"{pod}.json")})
        yield fake


def run(cluster: FakeCluster, *args: str, **env: str):
    return run_cli(*args, env=cluster.env(**env))


def test_certs_all_namespaces_lists_pods_once_and_only_reads(cluster: FakeCluster) -> None:
    proc = run(cluster, "certs", "-A", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {i["pod"] for i in data["items"]} == set(SIDECARS)
    assert data["incomplete"] == []
    expiry = [i["expires_in_seconds"] for i in data["items"]]
    assert expiry == sorted(expiry)  # soonest first
    requests = cluster.api.requests
    assert {r.method for r in requests} <= {"GET"}
    pod_calls = [r.path for r in requests if "/pods" in r.path]
    assert pod_calls == ["/api/v1/pods"]  # one list, no GET per pod
    calls = cluster.istioctl_calls()
    assert sorted(c[:3] for c in calls) == sorted(["proxy-config", "all", f"{p}.{NS}"] for p in SIDECARS)
    # KUBECONFIG from the environment reaches istioctl by inheritance: no flag is invented.
    assert all(c[3:] == ["-o", "json"] for c in calls)


def test_rootdiff_live_reads_two_pods(cluster: FakeCluster) -> None:
    proc = run(
        cluster,
        "rootdiff",
        FRONTEND,
        ORDERS,
        "-n",
        NS,
        "--context",
        "fake",
        "-o",
        "json",
        "--kubeconfig",
        str(cluster.kubeconfig),
    )
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["match"] is False and result["fix"] == f"kubectl rollout restart deployment/orders -n {NS}"
    gets = [r.path for r in cluster.api.requests]
    assert gets.count(f"/api/v1/namespaces/{NS}/pods/{FRONTEND}") == 1
    for call in cluster.istioctl_calls():  # the same cluster as ours: flags passed on as argv items
        assert call[call.index("--context") + 1] == "fake"
        assert call[call.index("--kubeconfig") + 1] == str(cluster.kubeconfig)


def test_namespace_defaults_to_the_contexts(cluster: FakeCluster, tmp_path: Path) -> None:
    config = tmp_path / "ns-kubeconfig"
    cluster.api.write_kubeconfig(config, context="fake", namespace=NS)
    proc = run_cli("certs", "-o", "json", env=cluster.env(KUBECONFIG=str(config)))
    assert proc.returncode == 0, proc.stderr
    assert {i["namespace"] for i in json.loads(proc.stdout)["items"]} == {NS}
    assert [r.path for r in cluster.api.requests if "/pods" in r.path] == [f"/api/v1/namespaces/{NS}/pods"]


@pytest.mark.parametrize(
    ("status", "code", "text"),
    [
        (403, 3, 'Forbidden: pods is forbidden: User "system:serviceaccount:default:tester" cannot list'),
        (500, 3, "Kubernetes API error 500"),
        (401, 3, "Unauthorized"),
    ],
)
def test_api_errors_become_one_line(cluster: FakeCluster, status: int, code: int, text: str) -> None:
    cluster.api.fail(status, path=r"/pods$")
    proc = run(cluster, "certs", "-n", NS)
    assert proc.returncode == code
    assert_one_line_error(proc)
    assert text in proc.stderr


def test_unknown_pod_is_exit_2(cluster: FakeCluster) -> None:
    proc = run(cluster, "proxy", "nope", "-n", NS)
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert 'pod "nope" not found' in proc.stderr


def test_unreachable_api_server(cluster: FakeCluster) -> None:
    cluster.api.stop()
    started = time.monotonic()
    proc = run(cluster, "certs", "-A", "--request-timeout", "2s")
    assert proc.returncode == 3
    assert_one_line_error(proc)
    assert "cannot reach the Kubernetes API" in proc.stderr
    assert time.monotonic() - started < 30


def test_request_timeout_is_honoured(cluster: FakeCluster) -> None:
    cluster.api.delay(10, path=r"/pods$")
    started = time.monotonic()
    proc = run(cluster, "certs", "-A", "--request-timeout", "1")
    assert proc.returncode == 3
    assert_one_line_error(proc)
    assert time.monotonic() - started < 9


def test_missing_context(cluster: FakeCluster) -> None:
    proc = run(cluster, "certs", "--context", "nowhere")
    assert proc.returncode == 3
    assert_one_line_error(proc)
    assert "nowhere" in proc.stderr


def test_istioctl_missing(cluster: FakeCluster) -> None:
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "istioctl").exists())
    proc = run_cli("proxy", FRONTEND, "-n", NS, env={**cluster.env(), "PATH": path})
    assert proc.returncode == 3
    assert_one_line_error(proc)
    assert "istioctl not found on PATH" in proc.stderr


def test_istioctl_failure_for_one_pod_is_incomplete_not_fatal(cluster: FakeCluster) -> None:
    cluster.set_proxy(NS, ORDERS, {"fail": 'Error: failed to get config dump: pods "orders" not found', "exit": 1})
    proc = run(cluster, "certs", "-n", NS, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {i["pod"] for i in data["items"]} == {FRONTEND, PAYMENTS}
    (entry,) = data["incomplete"]
    assert entry["pod"] == ORDERS and 'failed to get config dump: pods "orders" not found' in entry["error"]
    table = run(cluster, "certs", "-n", NS)
    assert f"incomplete: {NS}/{ORDERS}" in table.stdout


def test_istioctl_failure_for_a_named_pod_is_exit_3(cluster: FakeCluster) -> None:
    cluster.set_proxy(NS, ORDERS, {"fail": "Error: failed to execute command on sidecar: connection refused"})
    proc = run(cluster, "rootdiff", FRONTEND, ORDERS, "-n", NS)
    assert proc.returncode == 3
    assert_one_line_error(proc)
    assert "connection refused" in proc.stderr


def test_hanging_istioctl_is_killed(cluster: FakeCluster) -> None:
    cluster.set_proxy(NS, ORDERS, {"hang": True})
    started = time.monotonic()
    proc = run(cluster, "proxy", ORDERS, "-n", NS, "--istioctl-timeout", "1s")
    assert proc.returncode == 3
    assert_one_line_error(proc)
    assert "timed out after 1s" in proc.stderr
    assert time.monotonic() - started < 20


def test_garbage_from_istioctl_is_unreadable_input(cluster: FakeCluster) -> None:
    cluster.set_proxy(NS, ORDERS, {"garbage": 'Error: no running Istio pods in "istio-system"\n'})
    proc = run(cluster, "proxy", ORDERS, "-n", NS)
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert "not valid JSON" in proc.stderr


def test_snapshot_replays_exactly_and_holds_no_secrets(cluster: FakeCluster, tmp_path: Path) -> None:
    # A pod spec with a credential in a plain env value must not leak into the snapshot.
    pod = json.loads((EXAMPLE / "kubernetes" / "pods.json").read_text())["items"][0]
    pod["spec"]["containers"][0]["env"] = [
        {"name": "DB_PASSWORD", "value": "hunter2"},
        {"name": "ISTIO_KUBE_APP_PROBERS", "value": "{}"},
    ]
    pod["spec"]["containers"][0]["args"] = ["--password=hunter2"]
    pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(
        {"spec": {"containers": [{"env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}]}}
    )
    cluster.api.add(pod)
    # A plug-in CA Secret whose ca-cert.pem also carries its key, next to the key file itself.
    root_pem = json.loads((EXAMPLE / "kubernetes" / "configmaps.json").read_text())["items"][0]["data"][
        "root-cert.pem"
    ].encode()
    key_pem = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    cluster.api.add(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cacerts", "namespace": "istio-system"},
            "type": "Opaque",
            "data": {
                "ca-cert.pem": b64(root_pem + key_pem),
                "ca-key.pem": b64(key_pem),
                "root-cert.pem": b64(root_pem),
            },
        }
    )
    out = tmp_path / "snap"
    proc = run(cluster, "snapshot", "-n", NS, "-d", str(out))
    assert proc.returncode == 0, proc.stderr
    assert {r.method for r in cluster.api.requests} <= {"GET"}
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert b"hunter2" not in blob and b"PRIVATE KEY" not in blob
    secrets = json.loads((out / "kubernetes" / "secrets.json").read_text())["items"]
    (cacerts,) = secrets
    assert set(cacerts["data"]) == {"ca-cert.pem", "root-cert.pem"}  # no ca-key.pem
    decoded = b"".join(base64.b64decode(v) for v in cacerts["data"].values())
    assert b"PRIVATE KEY" not in decoded and decoded.count(b"BEGIN CERTIFICATE") == 2
    assert b'"ISTIO_KUBE_APP_PROBERS"' in blob
    live = run(cluster, "certs", "-n", NS, "-o", "json")
    replay = run_cli("certs", "-n", NS, "-o", "json", "--snapshot", str(out))
    strip = lambda d: [{k: v for k, v in i.items() if k != "expires_in_seconds"} for i in d["items"]]  # noqa: E731
    assert strip(json.loads(replay.stdout)) == strip(json.loads(live.stdout))
    again = run(cluster, "snapshot", "-n", NS, "-d", str(out))
    assert again.returncode == 2 and "--force" in again.stderr


def test_snapshot_records_what_it_could_not_read(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.api.fail(403, path="authorizationpolicies")
    cluster.set_proxy(NS, PAYMENTS, {"fail": "Error: port-forward failed"})
    out = tmp_path / "snap"
    proc = run(cluster, "snapshot", "-n", NS, "-d", str(out), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "snapshot.json").read_text())
    kinds = {e.get("kind") for e in manifest["incomplete"]}
    assert "authorizationpolicies" in kinds
    assert any(e.get("pod") == PAYMENTS for e in manifest["incomplete"])
    replay = run_cli("proxy", PAYMENTS, "-n", NS, "--snapshot", str(out))
    assert replay.returncode == 2 and "port-forward failed" in replay.stderr


def test_failed_snapshot_leaves_nothing_half_written(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.api.fail(403, path=r"/pods$")
    out = tmp_path / "snap"
    proc = run(cluster, "snapshot", "-n", NS, "-d", str(out))
    assert proc.returncode == 3
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".snap")] == []
