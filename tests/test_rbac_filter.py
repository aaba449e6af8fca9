"""The sidecar's own authorization filters, evaluated as Envoy does (istio.rbac_filter): the evidence
`check pair` sets against the policies. Synthetic filters in the shapes istiod writes (both field
casings), and the upstream istioctl authz dump (filter_state principals, JWT claims, CUSTOM ext_authz)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import corpus_path

from kubectl_mtls.istio.authz import Caller, Request
from kubectl_mtls.istio.rbac_filter import enforce, pick_chain
from kubectl_mtls.normalize.listeners import normalize_inbound
from kubectl_mtls.normalize.rbac import chain_authz

ALICE = Caller("cluster.local/ns/ea/sa/alice", "ea", "10.0.0.5")
PLAIN = Caller(None, None, "10.0.0.9")


def rbac(action: str | None, policies: dict[str, Any], *, shadow: bool = False, camel: bool = False) -> dict[str, Any]:
    rules: dict[str, Any] = {"policies": policies}
    if action:
        rules["action"] = action
    key = ("shadowRules" if camel else "shadow_rules") if shadow else "rules"
    return {"name": "envoy.filters.http.rbac", "kind": "rbac", "config": {key: rules}}


def pol(permissions: list[Any], principals: list[Any], camel: bool = False) -> dict[str, Any]:
    if camel:
        return {"permissions": [{"andRules": {"rules": permissions}}], "principals": [{"andIds": {"ids": principals}}]}
    return {"permissions": [{"and_rules": {"rules": permissions}}], "principals": [{"and_ids": {"ids": principals}}]}


def chain(*filters: dict[str, Any]) -> dict[str, Any]:
    return {"chain": "0.0.0.0_8080", "protocol": "http", "filters": list(filters)}


ANY = {"any": True}
ALICE_ID = {"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/ea/sa/alice"}}}
GET = {"header": {"name": ":method", "string_match": {"exact": "GET"}}}
API = {"url_path": {"path": {"prefix": "/api/"}}}


def http(method: str | None = "GET", path: str | None = "/api/x", headers: tuple[tuple[str, str], ...] | None = (),
         jwt: dict[str, Any] | None = None, jwt_known: bool = False) -> Request:
    return Request(8080, "http", method, path, "web", headers, jwt, jwt_known)


@pytest.mark.parametrize(
    ("filters", "request_", "caller", "outcome", "policy"),
    [
        # ALLOW filter: a matching policy lets it through, none denies; no policies at all denies everything
        ((rbac(None, {"p": pol([GET, API], [ALICE_ID])}),), http(), ALICE, "allow", "p"),
        ((rbac(None, {"p": pol([GET, API], [ALICE_ID])}),), http("POST"), ALICE, "deny", None),
        ((rbac(None, {"p": pol([GET, API], [ALICE_ID])}),), http(), PLAIN, "deny", None),
        ((rbac(None, {}),), http(), ALICE, "deny", None),
        # DENY runs first and names the policy; LOG and shadow-only filters never decide
        ((rbac("DENY", {"d": pol([API], [ANY])}), rbac(None, {"p": pol([ANY], [ANY])})), http(), ALICE, "deny", "d"),
        ((rbac("LOG", {"l": pol([ANY], [ANY])}),), http(), ALICE, "allow", None),
        ((rbac("DENY", {"d": pol([ANY], [ANY])}, shadow=True),), http(), ALICE, "allow", None),
        # camelCase, as `istioctl proxy-config listener` prints it
        ((rbac(None, {"p": pol([{"urlPath": {"path": {"prefix": "/api/"}}}], [{"authenticated": {"principalName": {
            "exact": "spiffe://cluster.local/ns/ea/sa/alice"}}}], camel=True)}),), http(), ALICE, "allow", "p"),
        # what the request does not say makes it depend
        ((rbac(None, {"p": pol([GET], [ANY])}),), http(method=None), ALICE, "depends", None),
        ((rbac("DENY", {"d": pol([{"header": {"name": "x-user", "present_match": True}}], [ANY])}),),
         http(headers=None), ALICE, "depends", None),
        ((rbac("DENY", {"d": pol([{"header": {"name": "x-user", "present_match": True}}], [ANY])}),),
         http(headers=(("X-User", "bob"),)), ALICE, "deny", "d"),
        # JWT claims through the istio_authn metadata
        ((rbac(None, {"p": pol([ANY], [{"metadata": {"filter": "istio_authn", "path": [
            {"key": "request.auth.claims"}, {"key": "groups"}], "value": {"list_match": {"one_of": {"string_match": {
                "exact": "admins"}}}}}}])}),),
         http(jwt={"groups": ["dev", "admins"]}, jwt_known=True), ALICE, "allow", "p"),
        ((rbac(None, {"p": pol([ANY], [{"metadata": {"filter": "istio_authn", "path": [
            {"key": "request.auth.principal"}], "value": {"string_match": {"exact": "iss/sub"}}}}])}),),
         http(), ALICE, "depends", None),
        # CUSTOM: the shadow rules name what goes to the ext_authz filter, whose provider decides
        ((rbac("DENY", {"istio-ext-authz-ns[ea]-policy[ext]-rule[0]": pol([API], [ANY])}, shadow=True),
          {"name": "envoy.filters.http.ext_authz", "kind": "ext_authz", "config": {}}), http(), ALICE, "depends", None),
        ((rbac("DENY", {"istio-ext-authz-ns[ea]-policy[ext]-rule[0]": pol([API], [ANY])}, shadow=True),
          {"name": "envoy.filters.http.ext_authz", "kind": "ext_authz", "config": {}}), http(path="/public"), ALICE,
         "allow", None),
    ],
)
def test_envoy_rbac_semantics(filters: tuple[dict[str, Any], ...], request_: Request, caller: Caller, outcome: str,
                              policy: str | None) -> None:
    result = enforce(chain(*filters), caller, request_)
    assert (result.outcome, result.policy) == (outcome, policy), result.reason


def test_a_regex_that_could_hang_is_not_run() -> None:
    """Envoy's RE2 is linear; Python's engine is not. A nested quantifier from a hostile dump is left unknown."""
    evil = {"authenticated": {"principal_name": {"safe_regex": {"regex": "(a+)+$"}}}}
    caller = Caller("a" * 64 + "!", None, "10.0.0.1")
    result = enforce(chain(rbac("DENY", {"d": pol([ANY], [evil])})), caller, http())
    assert result.outcome == "depends"


def test_chain_reading_keeps_filter_order_and_protocol() -> None:
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {"http_filters": [
        {"name": "envoy.filters.http.rbac", "typed_config": {"rules": {}}},
        {"name": "envoy.filters.http.ext_authz", "typed_config": {}},
        {"name": "envoy.filters.http.router", "typed_config": {}},
    ]}}
    read = chain_authz({"name": "c", "filters": [hcm]})
    assert read["protocol"] == "http" and [f["kind"] for f in read["filters"]] == ["rbac", "ext_authz"]
    tcp = chain_authz({"name": "t", "filters": [{"name": "envoy.filters.network.rbac", "typedConfig": {"rules": {}}},
                                               {"name": "envoy.filters.network.tcp_proxy", "typed_config": {}}]})
    assert tcp["protocol"] == "tcp" and [f["name"] for f in tcp["filters"]] == ["envoy.filters.network.rbac"]
    assert pick_chain([read, tcp], "tcp") is tcp and pick_chain([], "http") is None


def test_upstream_authz_dump_with_filter_state_principals_jwt_and_ext_authz() -> None:
    dump = json.loads(corpus_path("istio/istioctl/pkg/authz/testdata/configdump.yaml").read_text())
    listeners = [
        entry["active_state"]["listener"]
        for config in dump["configs"]
        for entry in config.get("dynamic_listeners", [])
        if "active_state" in entry
    ]
    entry = next(e for e in normalize_inbound(listeners) if e["port"] == 80)
    http_chain = pick_chain(entry["authz_chains"], "http")
    assert http_chain is not None
    sleep = Caller("cluster.local/ns/default/sa/sleep", "default", "10.0.0.1")
    other = Caller("cluster.local/ns/other/sa/x", "other", "10.0.0.2")
    google = {"iss": "https://accounts.google.com", "sub": "u"}
    # sleep with the right JWT issuer on GET /info: ALLOW matches, and the CUSTOM rule sends it to ext-authz.
    with_jwt = enforce(http_chain, sleep, Request(80, "http", "GET", "/info", "h", (), google, True))
    assert with_jwt.outcome == "depends" and "ext-authz" in with_jwt.reason
    # Without knowing the JWT it depends on it; another namespace, or another path, is denied outright.
    assert enforce(http_chain, sleep, Request(80, "http", "GET", "/info", "h", ())).outcome == "depends"
    assert enforce(http_chain, other, Request(80, "http", "GET", "/info", "h", (), google, True)).outcome == "deny"
    assert enforce(http_chain, sleep, Request(80, "http", "GET", "/x", "h", (), google, True)).outcome == "deny"
