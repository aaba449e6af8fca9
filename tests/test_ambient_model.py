"""Ambient pods in the model: `proxy`, `certs`, `rootdiff` read the pod's node's ztunnel (live through the
istioctl double's `ztunnel-config all`, and through a snapshot written by `snapshot`), and the corpus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_one_line_error, corpus_path, run_cli
from harness.cluster import FakeCluster
from harness.pki import make_root
from harness.ztunnel import ISTIO_NS, Mesh, Pod

NS = "shop"


def shop_mesh(as_lists: bool = False) -> Mesh:
    mesh = Mesh(root=make_root(), as_lists=as_lists)
    mesh.namespaces[NS] = {"istio.io/dataplane-mode": "ambient"}
    mesh.pods += [
        Pod(NS, "client-1", "client", "node-a", "10.244.0.5", app="client"),
        Pod(NS, "server-1", "server", "node-b", "10.244.1.6", app="server"),
        Pod(NS, "legacy-1", "legacy", "node-b", "10.244.1.7", app="legacy", captured=False),
    ]
    return mesh


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeCluster, Mesh]]:
    mesh = shop_mesh()
    with FakeCluster(tmp_path / "cluster") as fake:
        mesh.serve(fake)
        yield fake, mesh


def test_proxy_live_shows_the_ztunnel_view_of_an_ambient_pod(cluster: tuple[FakeCluster, Mesh]) -> None:
    fake, mesh = cluster
    proc = run_cli("proxy", f"{NS}/server-1", "-o", "json", env=fake.env())
    assert proc.returncode == 0, proc.stderr
    model = json.loads(proc.stdout)
    assert model["sidecar"] == "ambient"
    assert model["identity"] == "spiffe://cluster.local/ns/shop/sa/server"
    ambient = model["ambient"]
    assert ambient["node"] == "node-b"
    assert ambient["ztunnel"] == f"{ISTIO_NS}/ztunnel-node-b"
    assert ambient["protocol"] == "HBONE"
    assert ambient["enrolled_by"] == "namespace label"
    assert ambient["certificate"]["state"] == "Available"
    assert ambient["certificate"]["chain_verified"] is True
    assert model["certificates"][0]["sans"]["uri"] == [model["identity"]]
    assert model["roots"][0]["fingerprint_sha256"].replace(":", "").lower() == mesh.root.sha256
    # only the pod's own node's ztunnel is asked, with argv only
    calls = fake.istioctl_calls()
    assert ["ztunnel-config", "all", f"ztunnel-node-b.{ISTIO_NS}", "-o", "json"] in calls
    assert not any("ztunnel-node-a" in " ".join(c) for c in calls)


def test_proxy_table_says_when_a_pod_is_not_captured(cluster: tuple[FakeCluster, Mesh]) -> None:
    fake, _ = cluster
    proc = run_cli("proxy", f"{NS}/legacy-1", env=fake.env())
    assert proc.returncode == 0, proc.stderr
    assert "TCP (NOT captured: plaintext, no mTLS)" in proc.stdout
    assert "ztunnel-node-b" in proc.stdout


def test_snapshot_saves_ztunnel_dumps_and_networkpolicies_and_replays(
    cluster: tuple[FakeCluster, Mesh], tmp_path: Path
) -> None:
    fake, _ = cluster
    snap = tmp_path / "snap"
    proc = run_cli("snapshot", "-n", NS, "-d", str(snap), "-o", "json", env=fake.env())
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert {z["pod"] for z in summary["ztunnels"]} == {"ztunnel-node-a", "ztunnel-node-b"}
    # istioctl's exact bytes
    served = (fake.workdir / "ztunnel-node-b.json").read_bytes() + b"\n"
    assert (snap / "ztunnel" / "ztunnel-node-b.json").read_bytes() == served
    assert json.loads((snap / "kubernetes" / "networkpolicies.json").read_text()) == {"items": []}
    live = json.loads(run_cli("proxy", f"{NS}/server-1", "-o", "json", env=fake.env()).stdout)
    replay = run_cli("proxy", f"{NS}/server-1", "-o", "json", "--snapshot", str(snap))
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout) == live


def test_list_shaped_dump_reads_the_same(tmp_path: Path) -> None:
    mesh = shop_mesh(as_lists=True)
    with FakeCluster(tmp_path / "cluster") as fake:
        mesh.serve(fake)
        proc = run_cli("proxy", f"{NS}/client-1", "-o", "json", env=fake.env())
    assert proc.returncode == 0, proc.stderr
    ambient = json.loads(proc.stdout)["ambient"]
    assert ambient["protocol"] == "HBONE" and ambient["certificate"]["state"] == "Available"


def test_certs_and_rootdiff_accept_ambient_pods(cluster: tuple[FakeCluster, Mesh]) -> None:
    fake, _ = cluster
    certs = run_cli("certs", "-n", NS, "-o", "json", env=fake.env())
    assert certs.returncode == 0, certs.stderr
    items = json.loads(certs.stdout)["items"]
    assert {(i["pod"], i["role"]) for i in items} >= {("client-1", "workload"), ("server-1", "workload")}
    diff = run_cli("rootdiff", f"{NS}/client-1", f"{NS}/server-1", "-o", "json", env=fake.env())
    assert diff.returncode == 0, diff.stdout + diff.stderr
    data = json.loads(diff.stdout)
    assert data["match"] is True
    assert data["source_trusted_by_destination"] and data["destination_trusted_by_source"]


def test_ztunnel_config_failure_is_one_line_exit_3(tmp_path: Path) -> None:
    mesh = shop_mesh()
    with FakeCluster(tmp_path / "cluster") as fake:
        mesh.serve(fake)
        fake.set_proxy(ISTIO_NS, "ztunnel-node-b", {"fail": "Error: failed to execute command on ztunnel: boom"})
        proc = run_cli("proxy", f"{NS}/server-1", env=fake.env())
    assert proc.returncode == 3
    assert_one_line_error(proc)
    assert "boom" in proc.stderr


def test_corpus_not_enrolled_pod_reads_tcp_and_opt_out_is_not_ambient() -> None:
    snap = corpus_path("istiod-generated/c04-ambient-pod-not-enrolled")
    env = {"KUBECTL_MTLS_NOW": "2026-12-06T07:00:00Z"}
    legacy = run_cli("proxy", "default/legacy", "-o", "json", "--snapshot", str(snap), env=env)
    assert legacy.returncode == 0, legacy.stderr
    assert json.loads(legacy.stdout)["ambient"]["protocol"] == "TCP"
    optout = run_cli("proxy", "default/optout", "-o", "json", "--snapshot", str(snap), env=env)
    assert json.loads(optout.stdout)["sidecar"] == "absent"
    server = json.loads(run_cli("proxy", "default/server", "-o", "json", "--snapshot", str(snap), env=env).stdout)
    assert server["ambient"]["protocol"] == "HBONE"
    assert server["ambient"]["certificate"]["chain_verified"] is True


def test_real_ztunnel_dump_states_and_pem_dates() -> None:
    """Istio's own dump: the PEM decides the dates, not the hand-edited `expirationTime`."""
    from datetime import UTC, datetime

    from kubectl_mtls.normalize.ztunnel import parse_dump

    path = corpus_path("istio/istioctl/pkg/writer/ztunnel/configdump/testdata/dump.json")
    view = parse_dump(path.read_bytes(), str(path), ISTIO_NS, "ztunnel-x", None, datetime(2023, 3, 22, tzinfo=UTC))
    states = {c.identity: c.state for c in view.certificates.values()}
    assert states["spiffe://cluster.local/ns/istio-system/sa/ztunnel"] == "Initializing"
    assert states["spiffe://cluster.local/ns/istio-system/sa/another-sa"].startswith("Unavailable: ")
    protocols = {w["protocol"] for w in view.workloads}
    assert protocols == {"HBONE", "TCP"} and len(view.workloads) == 27
    assert set(view.policies) == {"default/allow-nothing", "default/allow-waypoint"}
