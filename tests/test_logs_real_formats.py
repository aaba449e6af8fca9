"""The log lines real proxies write, beyond Envoy 1.40's: older spellings, the 503 body a caller sees,
Istio <= 1.5's access-log format, alerts received from the peer, SDS not ready, istio-agent CSR
failures. Strings follow Envoy's and Istio's sources (../shared/reference/ERROR-SIGNATURES.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from kubectl_mtls.normalize.logs import classify_istiod_log, classify_proxy_log

VERIFY_FAILED = "268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED"

# Envoy before 1.14 (Istio 1.5-1.7) wrote `TLS error:` with a space; the pool line that follows the
# handshake failure is what shows the connection was an upstream (client-side) one.
OLD_DEBUG = "\n".join(
    [
        "2021-03-02T10:00:00.000001Z\tdebug\tenvoy connection\t[source/extensions/transport_sockets/tls/"
        "ssl_socket.cc:198] [C77] handshake error: 1",
        "2021-03-02T10:00:00.000002Z\tdebug\tenvoy connection\t[source/extensions/transport_sockets/tls/"
        f"ssl_socket.cc:226] [C77] TLS error: {VERIFY_FAILED}",
        "2021-03-02T10:00:00.000003Z\tdebug\tenvoy connection\t[source/common/network/connection_impl.cc:200] "
        "[C77] closing socket: 0",
        "2021-03-02T10:00:00.000004Z\tdebug\tenvoy pool\t[source/common/http/conn_pool_base.cc:265] [C77] "
        f"client disconnected, failure reason: TLS error: {VERIFY_FAILED}",
    ]
)


def only(text: str):
    found = classify_proxy_log(text)
    assert len(found) == 1, found
    return found[0]


def test_old_tls_error_spelling_with_the_pool_line_is_a_client_side_verify_failure() -> None:
    found = only(OLD_DEBUG)
    assert (found.kind, found.side, found.count) == ("verify-failed", "client", 1)
    assert found.summary == "the client could not verify the server's certificate: certificate verification failed"


@pytest.mark.parametrize(
    "body",
    [
        # what curl prints from the caller's sidecar, old and new spellings
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure, "
        f"transport failure reason: TLS error: {VERIFY_FAILED}",
        "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: "
        "remote connection failure, transport failure reason: TLS_error:|268435581:SSL routines:"
        "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify cert failed: X509_verify_cert: certificate "
        "verification error at depth 0: unable to get local issuer certificate:TLS_error_end",
    ],
)
def test_the_503_body_says_the_client_rejected_the_server(body: str) -> None:
    found = only(body)
    assert found.side == "client"
    assert found.kind in ("verify-failed", "unknown-ca")


def test_json_access_log_upstream_transport_failure_reason() -> None:
    entry = {
        "response_code": 503,
        "response_flags": "UF,URX",
        "response_code_details": "upstream_reset_before_response_started{connection_failure}",
        "upstream_transport_failure_reason": "TLS_error:|268436501:SSL_routines:OPENSSL_internal:"
        "SSLV3_ALERT_CERTIFICATE_EXPIRED:TLS_error_end",
    }
    found = only(json.dumps(entry))
    # this proxy was the client and received the alert: the server rejected the client's certificate
    assert (found.kind, found.side) == ("expired", "server")


@pytest.mark.parametrize(
    "line",
    [
        # Istio 1.1-1.5 text format: flags, then the Mixer status, then the upstream failure reason
        '[2022-04-19T13:35:23.864Z] "POST /leases HTTP/1.1" 503 UF,URX "-" "TLS error: Secret is not supplied by '
        'SDS" 52 91 18 - "-" "curl/7.79.1" "5b0c" "dhcp-api:8000" "10.37.0.73:8000" '
        "outbound|8000||dhcp-api.svc.svc.cluster.local - 10.27.72.242:8000 10.37.0.73:58716 -",
        # today's format
        '[2026-01-01T00:00:00.000Z] "GET / HTTP/1.1" 503 UF,URX upstream_reset_before_response_started'
        '{remote_connection_failure|TLS_error:_Secret_is_not_supplied_by_SDS} - "TLS_error:_Secret_is_not_'
        'supplied_by_SDS" 0 91 0 - "-" "curl/8" "1" "web:80" "10.0.0.9:80" outbound|80||web.default.svc.cluster.local',
    ],
)
def test_secret_not_supplied_by_sds_means_this_proxy_has_no_certificate(line: str) -> None:
    found = only(line)
    assert (found.kind, found.side) == ("no-secret", "client")
    assert "has no certificate or roots yet" in found.summary


@pytest.mark.parametrize(
    ("alert", "kind", "summary"),
    [
        (
            "268436504:SSL routines:OPENSSL_internal:TLSV1_ALERT_UNKNOWN_CA",
            "unknown-ca",
            "the peer rejected this proxy's certificate as unknown CA: the peer lacks this proxy's root (roots differ)",
        ),
        (
            "268436501:SSL routines:OPENSSL_internal:SSLV3_ALERT_CERTIFICATE_EXPIRED",
            "expired",
            "this proxy's certificate has expired; the peer rejected it (alert received)",
        ),
        (
            "268436502:SSL routines:OPENSSL_internal:SSLV3_ALERT_CERTIFICATE_UNKNOWN",
            "san-mismatch",
            "the peer rejected this proxy's certificate (certificate unknown: usually the identity or trust "
            "domain, i.e. a SAN mismatch)",
        ),
    ],
)
def test_an_alert_received_says_the_peer_refused_even_when_the_side_is_unknown(
    alert: str, kind: str, summary: str
) -> None:
    # no connection id and no direction in the line: which end this proxy was is unknown
    found = only(f"2026-01-01T00:00:00Z\twarning\tenvoy connection\tTLS_error:|{alert}:TLS_error_end")
    assert (found.kind, found.side, found.summary) == (kind, "unknown", summary)


def test_own_verifier_with_unknown_side_is_a_sentence() -> None:
    found = only(
        "2026-01-01T00:00:00Z\tdebug\tenvoy connection\tTLS_error:|268435581:SSL routines:OPENSSL_internal:"
        "CERTIFICATE_VERIFY_FAILED:verify cert failed: X509_verify_cert: certificate verification error at "
        "depth 0: unable to get local issuer certificate:TLS_error_end"
    )
    assert found.side == "unknown"
    assert found.summary == (
        "this proxy cannot verify its peer's certificate (unable to get local issuer certificate): "
        "this proxy's ROOTCA lacks its peer's root (roots differ)"
    )


@pytest.mark.parametrize(
    "line",
    [
        '[2026-01-01T00:00:00.000Z] "GET / HTTP/1.1" 503 UF,URX upstream_reset_before_response_started'
        '{connection_failure} - "-" 0 91 3 - "-" "curl/8" "1" "web:80" "10.0.0.9:80" outbound|80||web',
        '[2020-01-01T00:00:00.000Z] "GET / HTTP/1.1" 503 UF,URX "-" "-" 0 91 3 - "-" "curl/7" "1" "web:80"',
        '{"response_flags":"UF,URX","response_code_details":"upstream_reset_before_response_started'
        '{connection_failure}","upstream_transport_failure_reason":null}',
    ],
)
def test_plain_uf_urx_without_tls_evidence_is_not_classified(line: str) -> None:
    assert classify_proxy_log(line) == []


@pytest.mark.parametrize(
    ("line", "kind", "words"),
    [
        (
            "2026-01-01T00:00:00.0Z\twarning\tenvoy config\tStreamSecrets gRPC config stream closed: 2, failed to "
            "generate secret for default: failed to generate workload certificate: create certificate: rpc "
            "error: code = Unimplemented desc = unknown service istio.v1.auth.IstioCertificateService",
            "csr-failure",
            "CA_ADDR",
        ),
        (
            "2026-01-01T00:00:00.0Z\twarn\tcache\tresource:default failed to sign: create certificate: rpc error: "
            "code = Unauthenticated desc = request impersonation authentication failure",
            "authn-failure",
            "impersonation",
        ),
        (
            "2026-01-01T00:00:00.0Z\terror\tcache\tresource:default failed to generate secret for proxy from "
            "remote: failed to sign CSR: create certificate: rpc error: code = Unauthenticated desc = request "
            "authenticate failure",
            "authn-failure",
            "Unauthenticated",
        ),
    ],
)
def test_istio_agent_csr_failures(line: str, kind: str, words: str) -> None:
    found = only(line)
    assert (found.kind, found.side) == (kind, "istiod")
    assert words in found.summary


def test_istiod_side_impersonation_refusal() -> None:
    found = classify_istiod_log(
        "2026-01-01T00:00:00.0Z\twarn\tserverca\timpersonation failed for identity spiffe://cluster.local/ns/a/sa/b, "
        "error: node not authorized\tclient=10.0.0.5:51234"
    )
    assert [(f.kind, f.side) for f in found] == [("authn-failure", "istiod")]


def test_check_pod_reports_the_old_debug_lines_as_a_user_sees_them(tmp_path: Path) -> None:
    (tmp_path / "kubernetes").mkdir()
    pod = {"metadata": {"name": "app-0", "namespace": "default"}, "spec": {"containers": [{"name": "istio-proxy"}]}}
    (tmp_path / "kubernetes" / "pods.json").write_text(json.dumps({"items": [pod]}))
    log = tmp_path / "logs" / "default" / "app-0" / "istio-proxy.log"
    log.parent.mkdir(parents=True)
    log.write_text(OLD_DEBUG + "\n")
    proc = run_cli("check", "pod", "app-0", "-n", "default", "--snapshot", str(tmp_path), "-o", "json")
    data = json.loads(proc.stdout)
    found = [f for f in data["findings"] if f["check"] == "proxy-tls-errors"]
    assert len(found) == 1 and found[0]["evidence"]["log_class"] == "verify-failed", data["findings"]
    assert found[0]["message"].startswith("istio-proxy logged 1x verify-failed on the client side: the client")
    # no istiod log and no dump in this snapshot: said, not judged
    status = {s["check"]: s["status"] for s in data["checks"]}
    assert status["istiod-cert-errors"] == "skipped" and status["cert-missing"] == "skipped"
    assert proc.returncode == 0  # the log finding is a warning
