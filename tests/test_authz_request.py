"""Request-level AuthorizationPolicy evaluation (issue 9): `authz.evaluate` with a described request.

Each row is a rule of Istio's translation (pilot/pkg/security/authz/{model,matcher}: what Envoy RBAC
matcher istiod writes for a field) and what Envoy's RBAC filter then decides for one request. Without
a detail the decision needs, the outcome is `depends` with the conditions, never a guess."""

from __future__ import annotations

from typing import Any

import pytest

from kubectl_mtls.istio.authz import Caller, Decision, Request, evaluate

NS = "prod"
POD = {"app": "server"}
CLIENT = Caller("cluster.local/ns/prod/sa/client", "prod", "10.0.0.5")
OPS = Caller("cluster.local/ns/ops/sa/tool", "ops", "10.1.0.7")


def ap(name: str, rules: list[Any] | None, action: str = "ALLOW", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"action": action, **spec}
    if rules is not None:
        body["rules"] = rules
    return {"kind": "AuthorizationPolicy", "metadata": {"name": name, "namespace": NS}, "spec": body}


def http(method: str = "GET", path: str = "/", host: str | None = "server.prod:8080",
         headers: dict[str, str] | list[tuple[str, str]] | None = None, jwt: Any = "unknown",
         port: int = 8080) -> Request:
    items = tuple(headers.items() if isinstance(headers, dict) else headers or ())
    return Request(port, "http", method, path, host, items, None if jwt in ("unknown", None) else jwt,
                   jwt_known=jwt != "unknown")


def run(policies: list[dict[str, Any]], request: Request, caller: Caller = CLIENT, **kw: Any) -> Decision:
    return evaluate(policies, NS, POD, caller, request, **kw)


def allow_outcome(rule: dict[str, Any], request: Request, caller: Caller = CLIENT) -> str:
    return run([ap("p", [rule])], request, caller).outcome


def op(**fields: Any) -> dict[str, Any]:
    return {"to": [{"operation": fields}]}


def when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {"key": key}
    if values:
        cond["values"] = values
    if not_values:
        cond["notValues"] = not_values
    return {"when": [cond]}


@pytest.mark.parametrize(
    ("rule", "request_", "outcome"),
    [
        # paths: exact, prefix*, *suffix, * (presence), {*} one segment, {**} any segments; query ignored
        (op(paths=["/api"]), http(path="/api?x=1"), "allow"),
        (op(paths=["/api"]), http(path="/api/"), "deny"),
        (op(paths=["/api/*"]), http(path="/api/x/y"), "allow"),
        (op(paths=["/api/*"]), http(path="/apix"), "deny"),
        (op(paths=["*.js"]), http(path="/static/app.js"), "allow"),
        (op(paths=["*"]), http(path="/"), "allow"),
        (op(paths=["/users/{*}/profile"]), http(path="/users/7/profile"), "allow"),
        (op(paths=["/users/{*}/profile"]), http(path="/users/7/8/profile"), "deny"),
        (op(paths=["/files/{**}"]), http(path="/files/a/b/c.txt"), "allow"),
        (op(paths=["/{**}/edit"]), http(path="/a/b/edit"), "allow"),
        (op(notPaths=["/admin/*"]), http(path="/admin/x"), "deny"),
        (op(notPaths=["/admin/*"]), http(path="/public"), "allow"),
        # methods: case-sensitive exact (the :method header)
        (op(methods=["GET", "HEAD"]), http("HEAD"), "allow"),
        (op(methods=["GET"]), http("get"), "deny"),
        (op(notMethods=["DELETE"]), http("DELETE"), "deny"),
        # hosts: case-insensitive on the whole :authority, port included when the client sent one
        (op(hosts=["Server.Prod:8080"]), http(host="server.prod:8080"), "allow"),
        (op(hosts=["server.prod"]), http(host="server.prod:8080"), "deny"),
        (op(hosts=["server.prod*"]), http(host="server.prod:8080"), "allow"),
        (op(hosts=["*.example.com"]), http(host="API.example.COM"), "allow"),
        (op(notHosts=["evil.com"]), http(host="EVIL.com"), "deny"),
        # headers: any element of the comma-joined values; absent header matches nothing
        (when("request.headers[x-user]", ["alice"]), http(headers={"X-User": "alice"}), "allow"),
        (when("request.headers[x-user]", ["alice"]), http(headers=[("x-user", "bob"), ("x-user", "alice")]), "allow"),
        (when("request.headers[x-user]", ["alice"]), http(headers={"x-user": "bob,alice,carol"}), "allow"),
        (when("request.headers[x-user]", ["alice"]), http(headers={"x-user": "alice2"}), "deny"),
        (when("request.headers[x-user]", ["ali*"]), http(headers={"x-user": "bob,alicia"}), "allow"),
        (when("request.headers[x-user]", ["*"]), http(headers={}), "deny"),
        (when("request.headers[x-user]", not_values=["alice"]), http(headers={}), "allow"),
        # JWT: requestPrincipals iss/sub at the last "/", audiences, presenter, nested claims
        ({"from": [{"source": {"requestPrincipals": ["https://idp.example/alice"]}}]},
         http(jwt={"iss": "https://idp.example", "sub": "alice"}), "allow"),
        ({"from": [{"source": {"requestPrincipals": ["https://idp.example/*"]}}]},
         http(jwt={"iss": "https://idp.example", "sub": "bob"}), "allow"),
        ({"from": [{"source": {"requestPrincipals": ["*"]}}]}, http(jwt=None), "deny"),
        ({"from": [{"source": {"notRequestPrincipals": ["*"]}}]}, http(jwt=None), "allow"),
        (when("request.auth.audiences", ["api"]), http(jwt={"aud": ["web", "api"]}), "allow"),
        (when("request.auth.presenter", ["cli"]), http(jwt={"azp": "web"}), "deny"),
        (when("request.auth.claims[groups]", ["admins"]), http(jwt={"groups": ["dev", "admins"]}), "allow"),
        (when("request.auth.claims[realm][role]", ["oper*"]), http(jwt={"realm": {"role": "operator"}}), "allow"),
        # connection and source conditions
        (when("source.ip", ["10.0.0.0/24"]), http(), "allow"),
        (when("remote.ip", ["192.0.2.1"]), http(headers={"x-forwarded-for": "10.9.9.9, 192.0.2.1"}), "allow"),
        (when("remote.ip", ["10.0.0.5"]), http(headers={}), "allow"),
        (when("destination.port", ["8080"]), http(), "allow"),
        (when("source.namespace", ["prod"]), http(), "allow"),
        (when("source.principal", ["cluster.local/ns/prod/sa/*"]), http(), "allow"),
        (when("connection.sni", ["outbound_.80_._.server.prod.svc.cluster.local"]),
         Request(8080, "http", "GET", "/", None, (), sni="outbound_.80_._.server.prod.svc.cluster.local"), "allow"),
    ],
)
def test_request_fields(rule: dict[str, Any], request_: Request, outcome: str) -> None:
    assert allow_outcome(rule, request_) == outcome


@pytest.mark.parametrize(
    ("rule", "request_", "needs"),
    [
        (op(methods=["GET"], paths=["/api/*"]), Request(8080, "http"), ["method", "path"]),
        (op(hosts=["a.example"]), http(host=None), ["host"]),
        (when("request.headers[x-user]", ["alice"]), Request(8080, "http", "GET", "/"), ["header x-user"]),
        ({"from": [{"source": {"requestPrincipals": ["iss/sub"]}}]}, http(), ["the request's JWT"]),
        (when("request.auth.claims[groups]", ["admins"]), http(), ["the request's JWT"]),
        (when("remote.ip", ["10.0.0.0/8"]), Request(8080, "http", "GET", "/"), ["X-Forwarded-For"]),
        (when("connection.sni", ["x"]), http(), ["the SNI the caller sends"]),
    ],
)
def test_without_the_detail_the_answer_depends_on_it(rule: dict[str, Any], request_: Request, needs: list[str]) -> None:
    for policies in ([ap("allow-it", [rule])], [ap("deny-it", [rule], "DENY")]):
        decision = run(policies, request_)
        assert (decision.outcome, decision.allowed, decision.policy) == ("depends", False, None)
        assert decision.depends_on == needs
        assert decision.allowed_when and decision.reason.startswith("depends on ")


def test_depends_names_the_rule_and_the_conditions_both_ways() -> None:
    allow = ap("allow-api", [{"from": [{"source": {"principals": ["cluster.local/ns/prod/sa/client"]}}],
                              **op(methods=["GET"], paths=["/api/*"])}])
    deny = ap("no-post", [op(methods=["POST"])], "DENY")
    decision = run([allow, deny], Request(8080, "http"))
    assert decision.outcome == "depends" and decision.action == "DEPENDS"
    assert decision.allowed_when == [
        "ns[prod]-policy[allow-api]-rule[0] (prod/allow-api rule[0], ALLOW) matches when method is GET and path is "
        "/api/*",
        "every other request is denied by default once an ALLOW policy applies (prod/allow-api)",
    ]
    assert decision.denied_when == ["ns[prod]-policy[no-post]-rule[0] (prod/no-post rule[0], DENY) matches when method "
                                    "is POST"]
    # The same policies for a caller the ALLOW rule cannot match: a certain default deny, no "depends".
    other = run([allow, deny], Request(8080, "http"), OPS)
    assert (other.outcome, other.action) == ("deny", "DEFAULT-DENY")
    assert "ns[prod]-policy[allow-api]-rule[0] requires caller principal is cluster.local/ns/prod/sa/client" in (
        other.reason)
    # With the request given, the exact answer and the deciding rule in Envoy's naming.
    get = run([allow, deny], http("GET", "/api/items"))
    assert (get.outcome, get.envoy_name) == ("allow", "ns[prod]-policy[allow-api]-rule[0]")
    post = run([allow, deny], http("POST", "/api/items"))
    assert (post.outcome, post.action, post.envoy_name) == ("deny", "DENY", "ns[prod]-policy[no-post]-rule[0]")
    assert post.condition == "method is POST"  # what matched
    assert get.condition == "caller principal is cluster.local/ns/prod/sa/client and method is GET and path is /api/*"


def test_tcp_port_drops_allow_rules_and_widens_deny_rules() -> None:
    """a06: an ALLOW rule with HTTP fields is dropped on a TCP chain (Istio's empty ALLOW filter then denies
    all); a DENY rule loses the HTTP fields and denies every connection its other fields match."""
    allow = ap("api", [{"from": [{"source": {"principals": ["cluster.local/ns/prod/sa/client"]}}],
                        **op(methods=["GET"], paths=["/api/*"])}])
    tcp = Request(9000)
    decision = run([allow], tcp)
    assert (decision.outcome, decision.action) == ("deny", "DEFAULT-DENY")
    assert "skipped by istiod" in decision.reason
    deny = ap("no-delete", [op(methods=["DELETE"])], "DENY")
    widened = run([deny], tcp)
    assert (widened.outcome, widened.envoy_name) == ("deny", "ns[prod]-policy[no-delete]-rule[0]")
    # On HTTP the same DENY only denies DELETE.
    assert run([deny], http("GET")).outcome == "allow"


def test_custom_provider_missing_denies_what_its_rules_match() -> None:
    custom = ap("ext", [op(paths=["/admin/*"])], "CUSTOM", provider={"name": "opa"})
    missing = run([custom], http(path="/admin/x"), extension_providers=())
    assert (missing.outcome, missing.action) == ("deny", "DENY")
    assert missing.envoy_name == "istio-ext-authz-opa-ns[prod]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action"
    assert "not in meshConfig.extensionProviders" in missing.reason
    assert run([custom], http(path="/public"), extension_providers=()).outcome == "allow"
    # Present: the provider decides.
    present = run([custom], http(path="/admin/x"), extension_providers=("opa",))
    assert (present.outcome, present.action, present.depends_on) == ("depends", "CUSTOM", ["ext-authz provider 'opa'"])
    # Mesh config not read: whether it exists is not known, so the provider may decide.
    unread = run([custom], http(path="/admin/x"))
    assert unread.outcome == "depends" and any("meshConfig was not read" in line for line in unread.unknown)
    # Missing provider on TCP: the rule is built like DENY, the HTTP field dropped: every connection denied.
    assert run([custom], Request(9000), extension_providers=()).outcome == "deny"


def test_audit_and_dry_run_never_decide() -> None:
    audit = ap("log", [{}], "AUDIT")
    dry = ap("shadow", [{}], "DENY")
    dry["metadata"]["annotations"] = {"istio.io/dry-run": "true"}
    assert run([audit, dry], http()).action == "DEFAULT-ALLOW"


def test_hostile_wildcards_evaluate_in_linear_time() -> None:
    """A namespace pattern with many `*` (istiod turns it into `.*` regexes, RE2 runs them linearly)."""
    import time

    pattern = "*" + "a*" * 60 + "b"
    started = time.monotonic()
    caller = Caller("cluster.local/ns/" + "a" * 59 + "/sa/x", "x", None)
    decision = run([ap("p", [{"from": [{"source": {"namespaces": [pattern]}}]}])], Request(8080), caller)
    assert decision.outcome == "deny" and time.monotonic() - started < 2
