"""AuthorizationPolicy evaluation (ISTIO-RULES §5, §2 trust domains): `authz.evaluate`.

Each table row is one Istio rule; the expectations follow istiod's RBAC builder (which rules it skips or
widens per filter chain) and Envoy's RBAC filters (which policy name a match reports). The corpus tests
run every AuthorizationPolicy from istio's analyzer testdata and kiali's fixtures through the evaluator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CORPUS, corpus_path

from kubectl_mtls.istio.authz import Caller, Decision, Request, envoy_policy_name, evaluate

ROOT = "istio-system"
NS = "prod"
POD = {"app": "server", "version": "v1"}

CLIENT = Caller("cluster.local/ns/prod/sa/client", "prod", "10.0.0.5")
OTHER = Caller("cluster.local/ns/other/sa/client", "other", "10.1.0.7")
PLAIN = Caller(None, None, "10.0.0.9")
TCP = Request(8080)
HTTP = Request(8080, "http", "GET", "/api/items?x=1", "Server.prod.svc:8080")


def ap(name: str = "p", ns: str = NS, *, action: str | None = None, rules: list[Any] | None = None,
       dry: bool = False, provider: str | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if dry:
        meta["annotations"] = {"istio.io/dry-run": "true"}
    body: dict[str, Any] = dict(spec)
    if action is not None:
        body["action"] = action
    if rules is not None:
        body["rules"] = rules
    if provider is not None:
        body["provider"] = {"name": provider}
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": meta, "spec": body}


def src(**fields: Any) -> dict[str, Any]:
    return {"from": [{"source": fields}]}


def op(**fields: Any) -> dict[str, Any]:
    return {"to": [{"operation": fields}]}


def when(key: str, values: list[str] | None = None, not_values: list[str] | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {"key": key}
    if values is not None:
        cond["values"] = values
    if not_values is not None:
        cond["notValues"] = not_values
    return {"when": [cond]}


def run(policies: list[dict[str, Any]], caller: Caller = CLIENT, request: Request = TCP, **kw: Any) -> Decision:
    return evaluate(policies, NS, POD, caller, request, **kw)


def allow(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [ap("allow", rules=[rule])]


def deny(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [ap("deny", action="DENY", rules=[rule])]


# --- the two cases `kubectl mtls check pair` must name ------------------------------------------------

def test_deny_by_not_namespaces_denies_a_caller_from_another_namespace() -> None:
    policies = [ap("only-prod", action="DENY", rules=[src(notNamespaces=["prod"])])]
    decision = run(policies, OTHER)
    assert not decision.allowed
    assert decision.action == "DENY"
    assert decision.policy == "prod/only-prod"
    assert decision.rule == 0
    assert decision.envoy_name == "ns[prod]-policy[only-prod]-rule[0]"
    assert "prod/only-prod" in decision.reason and "cluster.local/ns/other/sa/client" in decision.reason
    assert decision.considered == ["prod/only-prod (DENY)"]
    assert decision.unknown == []
    assert run(policies, CLIENT).action == "DEFAULT-ALLOW"
    assert not run(policies, PLAIN).allowed  # no identity: always matches the `not` form


def test_allow_that_omits_the_caller_is_default_deny_naming_the_allow_policies() -> None:
    policies = [
        ap("frontend-only", rules=[src(principals=["cluster.local/ns/prod/sa/frontend"])]),
        ap("mesh-monitoring", ROOT, rules=[src(namespaces=["monitoring"])]),
        ap("audit", action="AUDIT", rules=[{}]),
    ]
    decision = run(policies)
    assert not decision.allowed
    assert decision.action == "DEFAULT-DENY"
    assert (decision.policy, decision.rule, decision.envoy_name) == (None, None, None)
    assert "prod/frontend-only" in decision.reason and "istio-system/mesh-monitoring" in decision.reason
    assert decision.considered == ["prod/frontend-only (ALLOW)", "istio-system/mesh-monitoring (ALLOW)",
                                   "prod/audit (AUDIT)"]
    assert decision.unknown == []


# --- order of evaluation ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("policies", "allowed", "action", "policy"),
    [
        ([], True, "DEFAULT-ALLOW", None),
        ([ap("d", action="DENY", rules=[{}])], False, "DENY", "prod/d"),
        ([ap("a", rules=[{}])], True, "ALLOW", "prod/a"),
        ([ap("a", rules=[{}]), ap("d", action="DENY", rules=[{}])], False, "DENY", "prod/d"),  # DENY first
        ([ap("a", rules=[src(namespaces=["x"])])], False, "DEFAULT-DENY", None),
        ([ap("a", rules=[src(namespaces=["x"])]), ap("b", rules=[src(namespaces=["prod"])])], True, "ALLOW",
         "prod/b"),
        ([ap("d", action="DENY", rules=[src(namespaces=["x"])])], True, "DEFAULT-ALLOW", None),
        ([ap("a")], False, "DEFAULT-DENY", None),                                  # ALLOW without rules
        ([ap("a", rules=[])], False, "DEFAULT-DENY", None),
        ([ap("a", rules=[None])], False, "DEFAULT-DENY", None),                    # nil rule skipped
        ([ap("d", action="DENY")], True, "DEFAULT-ALLOW", None),                   # DENY without rules
        ([ap("d", action="DENY", rules=[])], True, "DEFAULT-ALLOW", None),
        ([ap("a", rules=[{"from": [], "to": [], "when": []}])], True, "ALLOW", "prod/a"),
        ([ap("au", action="AUDIT", rules=[{}])], True, "DEFAULT-ALLOW", None),     # AUDIT never decides
        ([ap("x", action="LOG", rules=[{}])], True, "DEFAULT-ALLOW", None),        # unsupported action
    ],
    ids=["none", "deny-all", "allow-all", "deny-before-allow", "allow-no-match", "second-allow-matches",
         "deny-no-match", "allow-no-rules", "allow-empty-rules", "allow-nil-rule", "deny-no-rules",
         "deny-empty-rules", "empty-from-to-when", "audit", "unsupported-action"],
)
def test_order(policies: list[dict[str, Any]], allowed: bool, action: str, policy: str | None) -> None:
    decision = run(policies)
    assert (decision.allowed, decision.action, decision.policy) == (allowed, action, policy)


def test_scope_follows_applies_to() -> None:
    policies = [
        ap("elsewhere", "other", action="DENY", rules=[{}]),
        ap("not-me", action="DENY", rules=[{}], selector={"matchLabels": {"app": "db"}}),
        ap("gateway", action="DENY", rules=[{}], targetRefs=[{"kind": "Gateway", "name": "gw"}]),
        ap("mesh-v1", ROOT, rules=[{}], selector={"matchLabels": {"version": "v1"}}),
    ]
    decision = run(policies)
    assert (decision.action, decision.policy) == ("ALLOW", "istio-system/mesh-v1")
    assert decision.considered == ["istio-system/mesh-v1 (ALLOW)"]
    assert run(policies, root_namespace="istio-config").action == "DEFAULT-ALLOW"
    other_kind = {"kind": "PeerAuthentication", "metadata": {"name": "x", "namespace": NS}, "spec": {}}
    assert run([other_kind]).considered == []


# --- matching: from / to / when combination ----------------------------------------------------------

@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        ({"from": [{"source": {"namespaces": ["x"]}}, {"source": {"namespaces": ["prod"]}}]}, True),   # from OR
        ({"from": [{"source": {"namespaces": ["prod"], "principals": ["*/sa/other"]}}]}, False),       # AND
        ({"from": [{"source": {"namespaces": ["prod"], "principals": ["*/sa/client"]}}]}, True),
        ({"from": [{"source": {}}]}, True),
        ({"from": [{}]}, True),
        ({"to": [{"operation": {"ports": ["9090"]}}, {"operation": {"ports": ["8080"]}}]}, True),      # to OR
        ({"to": [{"operation": {"ports": ["8080"], "notPorts": ["8080"]}}]}, False),                   # AND
        ({**src(namespaces=["prod"]), **op(ports=["9090"])}, False),                                  # from AND to
        ({**src(namespaces=["prod"]), **when("source.ip", ["10.0.0.0/24"])}, True),
        ({**src(namespaces=["prod"]), **when("source.ip", ["10.9.0.0/24"])}, False),                  # when ANDs
        ({"when": [{"key": "destination.port", "values": ["8080"]},
                   {"key": "source.namespace", "values": ["other"]}]}, False),                         # all when
        ({"when": [{"key": "source.namespace"}]}, True),                                               # no values
    ],
    ids=["from-or", "source-and-miss", "source-and-hit", "empty-source", "from-without-source", "to-or",
         "operation-and", "from-and-to", "when-hit", "when-miss", "every-when", "condition-without-values"],
)
def test_rule_structure(rule: dict[str, Any], matches: bool) -> None:
    assert run(allow(rule)).allowed is matches
    assert run(deny(rule)).allowed is not matches


# --- matching: values ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("rule", "caller", "matches"),
    [
        (src(principals=["cluster.local/ns/prod/sa/client"]), CLIENT, True),                  # exact
        (src(principals=["cluster.local/ns/prod/sa/cli"]), CLIENT, False),
        (src(principals=["cluster.local/ns/prod/*"]), CLIENT, True),                          # prefix
        (src(principals=["*/sa/client"]), CLIENT, True),                                      # suffix
        (src(principals=["*"]), CLIENT, True),                                                # presence
        (src(principals=["cluster.local/ns/*/sa/client"]), CLIENT, False),                    # inner * is literal
        (src(principals=["spiffe://cluster.local/ns/prod/sa/client"]), CLIENT, False),        # Istio adds spiffe://
        (src(principals=["cluster.local/ns/prod/sa/client"]),
         Caller("spiffe://cluster.local/ns/prod/sa/client", "prod"), True),                  # caller form tolerated
        (src(notPrincipals=["cluster.local/ns/prod/sa/client"]), CLIENT, False),
        (src(notPrincipals=["cluster.local/ns/prod/sa/other"]), CLIENT, True),
        (src(namespaces=["prod"]), CLIENT, True),
        (src(namespaces=["pro*"]), CLIENT, True),
        (src(namespaces=["*od"]), CLIENT, True),
        (src(namespaces=["*"]), CLIENT, True),
        (src(namespaces=["pro"]), CLIENT, False),
        (src(notNamespaces=["prod"]), CLIENT, False),
        (src(namespaces=["prod"]), Caller("example.org/ns/prod/sa/x", "prod"), True),         # any trust domain
        (src(serviceAccounts=["prod/client"]), CLIENT, True),
        (src(serviceAccounts=["client"]), CLIENT, True),                                      # policy namespace
        (src(serviceAccounts=["client"]), OTHER, False),
        (src(serviceAccounts=["prod/cli"]), CLIENT, False),
        (src(notServiceAccounts=["prod/client"]), CLIENT, False),
        (src(ipBlocks=["10.0.0.5"]), CLIENT, True),
        (src(ipBlocks=["10.0.0.0/16"]), CLIENT, True),
        (src(ipBlocks=["10.1.0.0/16"]), CLIENT, False),
        (src(notIpBlocks=["10.0.0.0/8"]), CLIENT, False),
        (src(ipBlocks=["fd00::/8"]), Caller("cluster.local/ns/prod/sa/client", "prod", "fd00::1"), True),
        (src(ipBlocks=["10.0.0.0/8"]), Caller("cluster.local/ns/prod/sa/client", "prod", "fd00::1"), False),
        # remote IP is HTTP-only: istiod leaves it out of TCP filters, so this ALLOW rule is dropped on TCP
        (src(remoteIpBlocks=["10.0.0.0/24"]), CLIENT, False),
        (op(ports=["8080"]), CLIENT, True),
        (op(ports=["9090", "8080"]), CLIENT, True),
        (op(ports=["9090"]), CLIENT, False),
        (op(notPorts=["8080"]), CLIENT, False),
        (when("destination.port", ["8080"]), CLIENT, True),
        (when("destination.port", not_values=["8080"]), CLIENT, False),
        (when("source.principal", ["cluster.local/ns/prod/sa/*"]), CLIENT, True),
        (when("source.principal", not_values=["*"]), CLIENT, False),
        (when("source.namespace", ["prod"]), CLIENT, True),
        (when("source.namespace", not_values=["prod"]), CLIENT, False),
        (when("source.serviceAccount", ["prod/client"]), CLIENT, True),
        (when("source.ip", ["10.0.0.5/32"]), CLIENT, True),
        (when("source.ip", not_values=["10.0.0.5"]), CLIENT, False),
        (when("remote.ip", ["10.0.0.5"]), CLIENT, False),
    ],
)
def test_values(rule: dict[str, Any], caller: Caller, matches: bool) -> None:
    decision = run(allow(rule), caller)
    assert decision.allowed is matches, decision.reason
    assert decision.unknown == []


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        (op(methods=["GET"]), True),
        (op(methods=["get"]), False),                        # methods are case-sensitive
        (op(methods=["G*"]), True),
        (op(methods=["*"]), True),
        (op(notMethods=["GET", "HEAD"]), False),
        (op(paths=["/api/items"]), True),                    # the query string is not part of the path
        (op(paths=["/api/*"]), True),
        (op(paths=["*/items"]), True),
        (op(paths=["*"]), True),
        (op(paths=["/api"]), False),
        (op(paths=["/api/{*}"]), True),                      # path templates
        (op(paths=["/{*}"]), False),
        (op(paths=["/{**}"]), True),
        (op(paths=["/api/{**}"]), True),
        (op(notPaths=["/api/*"]), False),
        (op(hosts=["server.prod.svc:8080"]), True),          # hosts are case-insensitive
        (op(hosts=["server.prod.svc"]), False),              # the :authority carries the port
        (op(hosts=["SERVER.*"]), True),
        (op(hosts=["*:8080"]), True),
        (op(notHosts=["*.svc:8080"]), False),
        ({**op(methods=["GET"], paths=["/api/*"], ports=["8080"])}, True),
        ({**op(methods=["POST"], paths=["/api/*"])}, False),
    ],
)
def test_http_values(rule: dict[str, Any], matches: bool) -> None:
    decision = run(allow(rule), request=HTTP)
    assert decision.allowed is matches, decision.reason
    assert decision.unknown == []


def test_presence_needs_no_request_details() -> None:
    bare = Request(8080, "http")
    for rule in (op(methods=["*"]), op(paths=["*"]), op(hosts=["*"])):
        decision = run(allow(rule), request=bare)
        assert (decision.action, decision.unknown) == ("ALLOW", [])


# --- plaintext callers --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        (src(principals=["*"]), False),
        (src(principals=["cluster.local/ns/prod/sa/client"]), False),
        (src(notPrincipals=["*"]), True),
        (src(notPrincipals=["cluster.local/ns/prod/sa/client"]), True),
        (src(namespaces=["*"]), False),
        (src(notNamespaces=["prod"]), True),
        (src(serviceAccounts=["prod/client"]), False),
        (src(notServiceAccounts=["prod/client"]), True),
        (when("source.principal", ["*"]), False),
        (when("source.principal", not_values=["*"]), True),
        (when("source.namespace", ["prod"]), False),
        (when("source.namespace", not_values=["prod"]), True),
        (when("connection.sni", ["*"]), False),               # no TLS, no SNI
        (when("connection.sni", not_values=["*"]), True),
        (src(ipBlocks=["10.0.0.0/24"]), True),               # the IP is still known
    ],
)
def test_plaintext_caller(rule: dict[str, Any], matches: bool) -> None:
    assert run(allow(rule), PLAIN).allowed is matches
    assert run(deny(rule), PLAIN).allowed is not matches
    assert run(deny(rule), PLAIN).unknown == []


def test_plaintext_caller_against_principals_and_not_principals() -> None:
    allow_client = [ap("allow-client", rules=[src(principals=["cluster.local/ns/prod/sa/client"])])]
    deny_plaintext = [ap("require-mtls", action="DENY", rules=[src(notPrincipals=["*"])])]
    assert run(allow_client, CLIENT).action == "ALLOW"
    assert run(allow_client, PLAIN).action == "DEFAULT-DENY"
    assert run(deny_plaintext, CLIENT).action == "DEFAULT-ALLOW"
    decision = run(deny_plaintext, PLAIN)
    assert (decision.action, decision.envoy_name) == ("DENY", "ns[prod]-policy[require-mtls]-rule[0]")
    assert "plaintext" in decision.reason


# --- trust domains (§2, §5) -------------------------------------------------------------------------

NEW = Caller("new.td/ns/prod/sa/client", "prod")
OLD = Caller("old.td/ns/prod/sa/client", "prod")
LOCAL = Caller("cluster.local/ns/prod/sa/client", "prod")
FOREIGN = Caller("foreign.td/ns/prod/sa/client", "prod")


@pytest.mark.parametrize(
    ("principal", "caller", "aliases", "matches"),
    [
        ("new.td/ns/prod/sa/client", NEW, ("old.td",), True),
        ("new.td/ns/prod/sa/client", OLD, ("old.td",), True),          # expanded to the alias
        ("old.td/ns/prod/sa/client", NEW, ("old.td",), True),          # an alias expands to the mesh domain
        ("cluster.local/ns/prod/sa/client", NEW, (), True),            # cluster.local = the local domain
        ("cluster.local/ns/prod/sa/client", OLD, ("old.td",), True),
        ("cluster.local/ns/prod/sa/client", LOCAL, (), False),         # rewritten to new.td only
        ("cluster.local/ns/prod/sa/client", LOCAL, ("cluster.local",), True),
        ("new.td/ns/prod/sa/client", OLD, (), False),                  # no alias, no expansion
        ("foreign.td/ns/prod/sa/client", FOREIGN, ("old.td",), True),  # other domains kept as written
        ("foreign.td/ns/prod/sa/client", NEW, ("old.td",), False),
        ("*/ns/prod/sa/client", FOREIGN, (), True),                    # "*" trust domain: not enforced
        ("new.td/ns/prod/sa/*", OLD, ("old.td",), True),               # wildcards keep their expansion
    ],
)
def test_trust_domain_aliases(principal: str, caller: Caller, aliases: tuple[str, ...], matches: bool) -> None:
    kw = {"trust_domain": "new.td", "trust_domain_aliases": aliases}
    assert run(allow(src(principals=[principal])), caller, **kw).allowed is matches
    assert run(allow(when("source.principal", [principal])), caller, **kw).allowed is matches
    # notPrincipals expand the same way.
    assert run(deny(src(notPrincipals=[principal])), caller, **kw).allowed is matches


def test_trust_domain_default_is_cluster_local() -> None:
    assert run(allow(src(principals=["cluster.local/ns/prod/sa/client"]))).allowed
    assert not run(allow(src(principals=["example.org/ns/prod/sa/client"]))).allowed


# --- HTTP-only fields on a TCP port ------------------------------------------------------------------

HTTP_ONLY = [
    op(methods=["GET"]),
    op(notMethods=["DELETE"]),
    op(paths=["/api/*"]),
    op(hosts=["server.prod.svc"]),
    src(requestPrincipals=["issuer/subject"]),
    src(notRequestPrincipals=["*"]),
    when("request.headers[x-user]", ["alice"]),
    when("request.auth.claims[groups]", ["admin"]),
    when("request.auth.principal", ["issuer/subject"]),
    when("request.auth.audiences", ["aud"]),
    when("request.auth.presenter", ["azp"]),
]


@pytest.mark.parametrize("rule", HTTP_ONLY)
def test_http_only_field_drops_the_allow_rule_on_tcp(rule: dict[str, Any]) -> None:
    # Even with a condition that matches: istiod skips the whole rule for the TCP filter chain.
    matching = {**rule, "when": [*rule.get("when", []), {"key": "destination.port", "values": ["8080"]}]}
    decision = run([ap("allow", rules=[matching])])
    assert decision.action == "DEFAULT-DENY"
    assert "prod/allow rule[0] skipped by istiod" in decision.reason
    assert "HTTP-only" in decision.reason
    assert decision.unknown == []


@pytest.mark.parametrize("rule", HTTP_ONLY)
def test_http_only_field_is_ignored_by_deny_on_tcp(rule: dict[str, Any]) -> None:
    # The field vanishes from the DENY rule, which then matches every TCP request.
    decision = run(deny(rule))
    assert (decision.action, decision.envoy_name) == ("DENY", "ns[prod]-policy[deny]-rule[0]")
    assert decision.unknown == []


def test_http_only_fields_on_tcp_in_allow_versus_deny() -> None:
    scoped = {"to": [{"operation": {"methods": ["POST"], "ports": ["8080"]}}]}
    assert run(deny(scoped)).action == "DENY"                          # every TCP request on 8080
    assert run(deny(scoped), request=Request(9090)).action == "DEFAULT-ALLOW"
    assert run(deny(scoped), request=Request(8080, "http", "GET")).action == "DEFAULT-ALLOW"
    assert run(deny(scoped), request=Request(8080, "http", "POST")).action == "DENY"
    # Mixed with a TCP field in the same `from`: the TCP field still counts for DENY.
    mixed = src(requestPrincipals=["*"], namespaces=["other"])
    assert run(deny(mixed)).action == "DEFAULT-ALLOW"
    assert run(deny(mixed), OTHER).action == "DENY"
    # ALLOW: one HTTP-only entry anywhere in the rule drops the rule, the other `from` entry included.
    two = {"from": [{"source": {"namespaces": ["prod"]}}, {"source": {"requestPrincipals": ["*"]}}]}
    assert run(allow(two)).action == "DEFAULT-DENY"
    assert run(allow(two), request=Request(8080, "http")).action == "ALLOW"
    # Another ALLOW rule without HTTP fields still allows on TCP.
    rules = [{**op(methods=["GET"])}, {**op(ports=["8080"])}]
    decision = run([ap("allow", rules=rules)])
    assert (decision.action, decision.rule) == ("ALLOW", 1)


def test_http_only_fields_in_custom_are_ignored_on_tcp() -> None:
    decision = run([ap("ext", action="CUSTOM", provider="opa", rules=[op(paths=["/admin/*"])])])
    assert (decision.action, decision.outcome, decision.allowed) == ("CUSTOM", "depends", False)
    assert any("gRPC" in line for line in decision.unknown)


def test_invalid_values_drop_allow_rules_and_are_ignored_by_deny() -> None:
    assert run(allow(src(ipBlocks=["not-an-ip"]))).action == "DEFAULT-DENY"
    assert run(allow(op(ports=["http"]))).action == "DEFAULT-DENY"
    assert run(deny(src(ipBlocks=["not-an-ip"]))).action == "DENY"
    assert run(deny(src(ipBlocks=["not-an-ip", "10.9.0.0/16"]))).action == "DEFAULT-ALLOW"
    assert run(deny(op(ports=["99999", "9090"]))).action == "DEFAULT-ALLOW"


# --- what cannot be known ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("rule", "request_", "label"),
    [
        (when("request.headers[x-user]", ["alice"]), HTTP, "request.headers[x-user]"),
        (when("request.auth.claims[iss]", ["https://issuer"]), HTTP, "request.auth.claims[iss]"),
        (src(requestPrincipals=["issuer/subject"]), HTTP, "requestPrincipals"),
        (when("destination.ip", ["10.0.0.0/8"]), TCP, "destination.ip"),
        (when("connection.sni", ["outbound_.8080_._.server.prod.svc.cluster.local"]), TCP, "connection.sni"),
        (when("experimental.envoy.filters.network.mysql_proxy[db.table]", ["[update]"]), TCP,
         "experimental.envoy.filters.network.mysql_proxy[db.table]"),
        (when("some.future.attribute", ["x"]), TCP, "some.future.attribute"),
        (op(methods=["GET"]), Request(8080, "http"), "methods"),
        (op(paths=["/x"]), Request(8080, "http", "GET"), "paths"),
        (src(remoteIpBlocks=["10.0.0.0/8"]), HTTP, "remoteIpBlocks"),
        (src(ipBlocks=["10.0.0.0/8"]), TCP, "ipBlocks"),
    ],
)
def test_unknown_is_depends_for_deny_and_for_allow(rule: dict[str, Any], request_: Request, label: str) -> None:
    """What the request does not say is never guessed: a DENY or ALLOW that hinges on it is `depends`."""
    caller = Caller(CLIENT.principal, CLIENT.namespace) if label == "ipBlocks" else CLIENT
    denied = run(deny(rule), caller, request_)
    assert (denied.outcome, denied.allowed, denied.action, denied.policy) == ("depends", False, "DEPENDS", None)
    assert len(denied.denied_when) == 1 and "ns[prod]-policy[deny]-rule[0]" in denied.denied_when[0]
    assert denied.allowed_when and denied.depends_on
    assert denied.reason.startswith("depends on ")
    allowed = run(allow(rule), caller, request_)
    assert (allowed.outcome, allowed.action) == ("depends", "DEPENDS")
    assert "ns[prod]-policy[allow]-rule[0]" in allowed.allowed_when[0]
    assert "denied by default" in allowed.allowed_when[-1]
    assert allowed.denied_when == []


def test_a_certain_answer_needs_no_unknowns() -> None:
    # A certain DENY match beats one that only may match, and a failing known field makes the rule certain.
    policies = [ap("a-maybe", action="DENY", rules=[when("request.headers[x]", ["y"])]),
                ap("b-sure", action="DENY", rules=[src(namespaces=["prod"])])]
    decision = run(policies, request=HTTP)
    assert (decision.outcome, decision.policy, decision.unknown) == ("deny", "prod/b-sure", [])
    rule = {**src(namespaces=["other"]), **when("request.headers[x]", ["y"])}
    assert run(deny(rule), request=HTTP).action == "DEFAULT-ALLOW"
    assert run(deny(rule), request=HTTP).unknown == []
    both = [ap("a", rules=[when("request.headers[x]", ["y"])]), ap("b", rules=[{}])]
    assert (run(both, request=HTTP).policy, run(both, request=HTTP).unknown) == ("prod/b", [])


# --- dry-run, CUSTOM, Envoy names ------------------------------------------------------------------------

def test_dry_run_never_decides() -> None:
    dry_deny = ap("shadow-deny", action="DENY", rules=[{}], dry=True)
    dry_allow = ap("shadow-allow", rules=[src(namespaces=["nobody"])], dry=True)
    decision = run([dry_deny, dry_allow])
    assert decision.action == "DEFAULT-ALLOW"   # a dry-run ALLOW does not make ALLOW policies "exist"
    assert decision.considered == ["prod/shadow-deny (DENY) (dry-run)", "prod/shadow-allow (ALLOW) (dry-run)"]
    enforced = ap("allow", rules=[src(namespaces=["prod"])])
    assert run([dry_deny, enforced]).action == "ALLOW"
    dry_custom = ap("ext", action="CUSTOM", provider="opa", rules=[{}], dry=True)
    assert run([dry_custom]).action == "DEFAULT-ALLOW"


def test_custom_hands_over_to_the_ext_authz_provider() -> None:
    custom = ap("ext", action="CUSTOM", provider="opa", rules=[op(ports=["8080"])])
    decision = run([custom])
    assert (decision.outcome, decision.action, decision.policy, decision.rule) == ("depends", "CUSTOM", "prod/ext", 0)
    assert decision.envoy_name == "istio-ext-authz-opa-ns[prod]-policy[ext]-rule[0]"
    assert any("'opa' decides" in line for line in decision.unknown)
    assert decision.depends_on == ["ext-authz provider 'opa'"]
    assert "DEFAULT-ALLOW" in decision.reason
    assert decision.considered == ["prod/ext (CUSTOM)"]
    # Not matching: ext-authz is not consulted.
    assert run([custom], request=Request(9090)).action == "DEFAULT-ALLOW"
    # The provider cannot override DENY/ALLOW: a matching DENY or a DEFAULT-DENY still denies.
    assert run([custom, ap("d", action="DENY", rules=[{}])]).action == "DENY"
    assert run([custom, ap("a", rules=[src(namespaces=["x"])])]).action == "DEFAULT-DENY"
    both = run([custom, ap("a", rules=[{}])])
    assert (both.action, both.outcome) == ("CUSTOM", "depends") and "(ALLOW)" in both.reason
    # A CUSTOM rule that only may match still counts (ext-authz may be consulted).
    maybe = run([ap("ext", action="CUSTOM", provider="opa", rules=[when("request.headers[x]", ["1"])])],
                request=HTTP)
    assert maybe.outcome == "depends" and any("header x is 1" in line for line in maybe.denied_when)
    two = run([custom, ap("ext2", action="CUSTOM", provider="oauth2", rules=[{}])])
    assert any("PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS" in line for line in two.unknown)


def test_envoy_names() -> None:
    assert envoy_policy_name(ap("x", "ns1"), 3) == "ns[ns1]-policy[x]-rule[3]"
    custom = ap("x", action="CUSTOM", provider="p")
    assert envoy_policy_name(custom, 0) == "istio-ext-authz-p-ns[prod]-policy[x]-rule[0]"
    assert envoy_policy_name(ap("x", action="CUSTOM"), 0) == "istio-ext-authz-ns[prod]-policy[x]-rule[0]"
    # Envoy walks its policies in byte order (std::map) and reports the first match.
    rules = [src(namespaces=["x"])] * 2 + [{}] * 9
    decision = run([ap("zz", action="DENY", rules=[{}]), ap("many", action="DENY", rules=rules)])
    assert decision.envoy_name == "ns[prod]-policy[many]-rule[10]"
    assert decision.rule == 10


def test_protocol_is_checked() -> None:
    assert run([], request=Request(80, "HTTP")).action == "DEFAULT-ALLOW"
    with pytest.raises(ValueError, match="protocol"):
        run([], request=Request(80, "grpc"))


# --- corpus ------------------------------------------------------------------------------------------------

ANALYZERS = "istio/pkg/config/analysis/analyzers/testdata/"


def policies_of(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)
            and d.get("kind") == "AuthorizationPolicy"]


def corpus_files() -> list[Path]:
    files = [corpus_path(ANALYZERS + "authorizationpolicies.yaml")]
    kiali = CORPUS / "kiali"
    if not kiali.is_dir():
        pytest.skip(f"external corpus not found at {kiali} (optional; see shared/corpus/README.md)")
    return files + sorted(kiali.rglob("*.yaml"))


SAMPLE_CALLERS = [CLIENT, OTHER, PLAIN, Caller("foo.td/ns/istio-system/sa/istio-ingressgateway", "istio-system")]
SAMPLE_REQUESTS = [TCP, HTTP, Request(80, "http", "POST", "/admin", "httpbin.default:80"), Request(9080)]


def test_every_corpus_policy_evaluates() -> None:
    count = 0
    for path in corpus_files():
        for policy in policies_of(path):
            count += 1
            ns = policy["metadata"].get("namespace") or "default"
            selector = (policy.get("spec") or {}).get("selector") or {}
            labels = {str(k): str(v) for k, v in (selector.get("matchLabels") or {}).items()}
            for caller in SAMPLE_CALLERS:
                for request in SAMPLE_REQUESTS:
                    decision = evaluate([policy], ns, labels, caller, request, ROOT, "cluster.local", ("foo.td",))
                    assert decision.action in ("DENY", "ALLOW", "CUSTOM", "DEFAULT-ALLOW", "DEFAULT-DENY", "DEPENDS")
                    assert decision.reason and "\n" not in decision.reason
                    assert (decision.policy is None) is (decision.envoy_name is None)
                    assert decision.allowed is (decision.outcome == "allow")
                    if decision.outcome == "depends":
                        assert decision.allowed_when or decision.denied_when
    assert count >= 40


def test_analyzer_fixture_policies_decide_as_expected() -> None:
    path = corpus_path(ANALYZERS + "authorizationpolicies.yaml")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    policies = [d for d in docs if d.get("kind") == "AuthorizationPolicy"]
    pods = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d.get("kind") == "Pod"}
    assert pods
    for (ns, _name), pod in pods.items():
        decision = evaluate(policies, ns, pod["metadata"].get("labels") or {}, CLIENT, HTTP, ROOT)
        # `meshwide-httpbin` (spec: {}) in the root namespace is an ALLOW without rules: it applies to every
        # pod, so no pod can fall back to DEFAULT-ALLOW.
        assert "istio-system/meshwide-httpbin (ALLOW)" in decision.considered
        assert decision.action != "DEFAULT-ALLOW"


def test_kiali_requires_mtls_fixture_plaintext_versus_mtls() -> None:
    fixture = corpus_path("kiali/tests/data/validations/authorization/authz_policy_requires_mtls.yaml")
    policies = {p["metadata"]["name"]: p for p in policies_of(fixture)}
    assert policies
    for name, policy in policies.items():
        ns = policy["metadata"].get("namespace") or "default"
        selector = (policy.get("spec") or {}).get("selector") or {}
        labels = {str(k): str(v) for k, v in (selector.get("matchLabels") or {}).items()}
        plain = evaluate([policy], ns, labels, PLAIN, HTTP, ROOT)
        assert plain.considered, name
        # No policy of the fixture can be allowed *by a rule* for a plaintext caller through an identity field.
        if plain.action == "ALLOW":
            rule = policy["spec"]["rules"][plain.rule or 0]
            for entry in rule.get("from") or []:
                source = entry.get("source") or {}
                assert not any(source.get(f) for f in ("principals", "namespaces", "serviceAccounts")), name
