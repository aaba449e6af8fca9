"""Old Envoy formats are read, or named in `incomplete`, never misread as plaintext.

Istio <= 1.5 dumps (Envoy v2 admin API) keep TLS in the deprecated `tls_context` field of clusters and
filter chains, SANs in `verify_subject_alt_name`, listeners under `dynamic_active_listeners` (Envoy
< 1.13), certificates in files under /etc/certs (Istio < 1.6), and DestinationRule metadata as
`/apis/networking/v1alpha3/...`. These fixtures are written here in those shapes (field names from
Envoy's v2 protos), and run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import run_cli

ISTIO_CERTS = {
    "tls_certificates": [
        {
            "certificate_chain": {"filename": "/etc/certs/cert-chain.pem"},
            "private_key": {"filename": "/etc/certs/key.pem"},
        }
    ],
    "validation_context": {"trusted_ca": {"filename": "/etc/certs/root-cert.pem"}},
}
POLICY_SAN = "spiffe://cluster.local/ns/istio-system/sa/istio-policy-service-account"


def _chain(port: int | None, tls: bool) -> dict[str, Any]:
    match: dict[str, Any] = {"destination_port": port} if port is not None else {}
    chain: dict[str, Any] = {"filter_chain_match": match, "filters": [{"name": "envoy.tcp_proxy"}]}
    if tls:
        match["application_protocols"] = ["istio"]
        chain["tls_context"] = {
            "common_tls_context": {**ISTIO_CERTS, "alpn_protocols": ["h2", "http/1.1"]},
            "require_client_certificate": True,
        }
    return chain


def v2_dump() -> dict[str, Any]:
    """A sidecar of Istio 1.4 as `/config_dump` printed it (admin v2alpha, snake_case)."""
    listener = {
        "name": "virtualInbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "filter_chains": [_chain(9080, True), _chain(9080, False), _chain(15020, False), _chain(None, False)],
        "listener_filters": [{"name": "envoy.listener.tls_inspector"}],
    }
    policy_cluster = {
        "name": "outbound|15004||istio-policy.istio-system.svc.cluster.local",
        "type": "EDS",
        "connect_timeout": "1s",
        "tls_context": {
            "common_tls_context": {
                "tls_certificates": ISTIO_CERTS["tls_certificates"],
                "validation_context": {
                    "trusted_ca": {"filename": "/etc/certs/root-cert.pem"},
                    "verify_subject_alt_name": [POLICY_SAN],
                },
                "alpn_protocols": ["istio", "h2"],
            },
            "sni": "outbound_.15004_._.istio-policy.istio-system.svc.cluster.local",
        },
        "metadata": {
            "filter_metadata": {
                "istio": {"config": "/apis/networking/v1alpha3/namespaces/istio-system/destination-rule/istio-policy"}
            }
        },
    }
    plain_cluster = {"name": "outbound|9080||ratings.default.svc.cluster.local", "type": "EDS", "connect_timeout": "1s"}
    return {
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v2alpha.BootstrapConfigDump",
                "bootstrap": {
                    "node": {
                        "id": "sidecar~10.40.0.15~reviews-v1-0.default~default.svc.cluster.local",
                        "metadata": {"ISTIO_VERSION": "1.4.0"},
                    }
                },
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v2alpha.ClustersConfigDump",
                "dynamic_active_clusters": [
                    {"version_info": "1", "cluster": policy_cluster},
                    {"version_info": "1", "cluster": plain_cluster},
                ],
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v2alpha.ListenersConfigDump",
                "dynamic_active_listeners": [{"version_info": "1", "listener": listener}],
            },
            {"@type": "type.googleapis.com/envoy.admin.v2alpha.SecretsConfigDump"},
        ]
    }


def snapshot(tmp: Path, files: dict[str, Any]) -> Path:
    for relative, content in files.items():
        path = tmp / "proxies" / "default" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=1))
    return tmp


def proxy_json(snap: Path, pod: str) -> dict[str, Any]:
    proc = run_cli("proxy", pod, "-n", "default", "--snapshot", str(snap), "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_v2_dump_reads_tls_context_and_old_listeners(tmp_path: Path) -> None:
    snap = snapshot(tmp_path, {"reviews-v1-0.json": v2_dump()})
    model = proxy_json(snap, "reviews-v1-0")
    assert model["proxy"]["istio_version"] == "1.4.0"
    assert {e["port"]: e["mode"] for e in model["inbound"]} == {9080: "PERMISSIVE", 15020: "DISABLE", None: "DISABLE"}
    clusters = {c["name"]: c for c in model["clusters"]}
    policy = clusters["outbound|15004||istio-policy.istio-system.svc.cluster.local"]
    assert policy["tls_mode"] == "ISTIO_MUTUAL"
    assert policy["expected_sans"] == [POLICY_SAN]
    assert policy["sni"] == "outbound_.15004_._.istio-policy.istio-system.svc.cluster.local"
    assert policy["destination_rule"] == {"namespace": "istio-system", "name": "istio-policy"}
    assert clusters["outbound|9080||ratings.default.svc.cluster.local"]["tls_mode"] == "DISABLE"
    # file-mounted certificates are not in the dump: unknown, and said so
    assert model["certificates"] == []
    assert any("/etc/certs/cert-chain.pem" in note and "unknown" in note for note in model["incomplete"])


def test_file_mounted_certificates_are_not_reported_missing(tmp_path: Path) -> None:
    snap = snapshot(tmp_path, {"reviews-v1-0.json": v2_dump()})
    proc = run_cli("check", "-n", "default", "--snapshot", str(snap), "-o", "json")
    data = json.loads(proc.stdout)
    assert not [f for f in data["findings"] if f["severity"] in ("error", "warning")], data["findings"]
    status = {s["check"]: s["status"] for s in data["checks"]}
    assert status["cert-missing"] == status["cert-expired"] == "skipped"
    assert proc.returncode == 0


def test_camel_case_tls_context_from_istioctl_of_istio_1_3(tmp_path: Path) -> None:
    """`istioctl proxy-config listener -o json` of Istio 1.3: camelCase `tlsContext`, per-port listener."""
    listener = {
        "name": "10.8.0.12_80",
        "address": {"socketAddress": {"address": "10.8.0.12", "portValue": 80}},
        "filterChains": [
            {
                "filterChainMatch": {"applicationProtocols": ["istio"]},
                "tlsContext": {
                    "commonTlsContext": {
                        "tlsCertificates": [{"certificateChain": {"filename": "/etc/certs/cert-chain.pem"}}],
                        "validationContext": {"trustedCa": {"filename": "/etc/certs/root-cert.pem"}},
                    },
                    "requireClientCertificate": True,
                },
                "filters": [{"name": "envoy.http_connection_manager"}],
            }
        ],
        "trafficDirection": "INBOUND",
    }
    cluster = {"name": "outbound|8000||httpbin.foo.svc.cluster.local", "type": "EDS", "connectTimeout": "10s"}
    snap = snapshot(tmp_path, {"httpbin-0/listener.json": [listener], "httpbin-0/cluster.json": [cluster]})
    model = proxy_json(snap, "httpbin-0")
    assert [(e["port"], e["mode"]) for e in model["inbound"]] == [(80, "STRICT")]
    assert model["clusters"][0]["tls_mode"] == "DISABLE"


def test_a_transport_socket_not_understood_is_unknown_never_plaintext(tmp_path: Path) -> None:
    alts = {"name": "envoy.transport_sockets.alts", "typed_config": {"@type": "type.googleapis.com/x.Alts"}}
    cluster = {"name": "outbound|80||web.default.svc.cluster.local", "type": "EDS", "transport_socket": alts}
    listener = {
        "name": "virtualInbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "filter_chains": [
            {"name": "0.0.0.0_80", "filter_chain_match": {"destination_port": 80}, "transport_socket": alts}
        ],
    }
    snap = snapshot(tmp_path, {"web-0/cluster.json": [cluster], "web-0/listener.json": [listener]})
    model = proxy_json(snap, "web-0")
    assert model["clusters"][0]["tls_mode"] == "UNKNOWN"
    assert model["inbound"][0]["mode"] == "UNKNOWN"
    notes = " ".join(model["incomplete"])
    assert "transport socket envoy.transport_sockets.alts not understood: TLS mode unknown" in notes
    assert "inbound mode unknown" in notes
