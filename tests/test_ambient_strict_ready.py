"""`strict-ready` in ambient: who still sends plaintext to ambient workloads, from the metrics of the
ztunnel on their node (read through the API server's pod proxy, port 15020), live and from a snapshot."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli
from harness.cluster import FakeCluster
from harness.pki import make_root
from harness.ztunnel import ISTIO_NS, Mesh, Pod

NS = "shop"


def series(dest: str, source: str, source_ns: str, policy: str, value: float, principal: str = "unknown") -> str:
    labels = {
        "reporter": "destination",
        "source_workload": source,
        "source_workload_namespace": source_ns,
        "source_principal": principal,
        "destination_workload": dest,
        "destination_workload_namespace": NS,
        "connection_security_policy": policy,
        "request_protocol": "tcp",
    }
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"istio_tcp_connections_opened_total{{{text}}} {value}\n"


HEADER = "# TYPE istio_tcp_connections_opened_total counter\n"
CLIENT_ID = "spiffe://cluster.local/ns/shop/sa/client"


def stats_path(pod: str) -> str:
    return rf"/api/v1/namespaces/{ISTIO_NS}/pods/{pod}:15020/proxy/stats/prometheus"


def test_plaintext_caller_of_an_ambient_workload_is_found_on_its_ztunnel(tmp_path: Path) -> None:
    mesh = Mesh(root=make_root())
    mesh.namespaces[NS] = {"istio.io/dataplane-mode": "ambient"}
    mesh.namespaces["legacy"] = {}
    mesh.pods += [
        Pod(NS, "client-1", "client", "node-a", "10.244.0.5", app="client"),
        Pod(NS, "server-1", "server", "node-b", "10.244.1.6", app="server"),
        Pod("legacy", "curl-1", "curl", "node-a", "10.244.0.8", app="curl", captured=False),
    ]
    node_a = HEADER + series("client-1", "server-1", NS, "mutual_tls", 2, "spiffe://cluster.local/ns/shop/sa/server")
    node_b = (
        HEADER
        + series("server-1", "client-1", NS, "mutual_tls", 9, CLIENT_ID)
        + series("server-1", "curl-1", "legacy", "unknown", 3)
    )
    snap = tmp_path / "snap"
    with FakeCluster(tmp_path / "cluster") as fake:
        mesh.serve(fake)
        fake.api.respond(node_a, path=stats_path("ztunnel-node-a"))
        fake.api.respond(node_b, path=stats_path("ztunnel-node-b"))
        live = run_cli("strict-ready", "-n", NS, "-o", "json", env=fake.env())
        saved = run_cli("snapshot", "-A", "-d", str(snap), "--stats", env=fake.env())
        assert saved.returncode == 0, saved.stderr
    assert live.returncode == 1, live.stdout + live.stderr
    data = json.loads(live.stdout)
    rows = {w["workload"]: w for w in data["workloads"]}
    assert rows["server-1"]["verdict"] == "not ready"
    assert [(c["source_namespace"], c["source_workload"]) for c in rows["server-1"]["callers"]] == [
        ("legacy", "curl-1")
    ]
    assert rows["client-1"]["verdict"] == "ready"
    assert data["verdict"] == "not ready"
    replay = run_cli("strict-ready", "-n", NS, "-o", "json", "--snapshot", str(snap))
    assert replay.returncode == 1, replay.stdout + replay.stderr
    assert json.loads(replay.stdout)["workloads"] == data["workloads"]


def test_ztunnel_stats_unreadable_is_unknown_not_ready(tmp_path: Path) -> None:
    mesh = Mesh(root=make_root())
    mesh.namespaces[NS] = {"istio.io/dataplane-mode": "ambient"}
    mesh.pods.append(Pod(NS, "server-1", "server", "node-b", "10.244.1.6", app="server"))
    with FakeCluster(tmp_path / "cluster") as fake:
        mesh.serve(fake)
        fake.api.respond(
            {"kind": "Status", "code": 403, "message": "pods/proxy forbidden"},
            status=403,
            path=stats_path("ztunnel-node-b"),
        )
        proc = run_cli("strict-ready", "-n", NS, "-o", "json", env=fake.env())
    data = json.loads(proc.stdout)
    assert proc.returncode == 3 and data["verdict"] == "unknown", data
    assert any("ztunnel-node-b" in i["what"] for i in data["incomplete"]), data["incomplete"]
