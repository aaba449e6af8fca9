"""AuthorizationPolicy rules (ISTIO-RULES §5): scope, action, dry-run, identity fields, deny-all.

The Kiali fixture `authz_policy_requires_mtls.yaml` fixes which rules need a peer identity; the
istioctl analyzer fixture `authorizationpolicies.yaml` fixes which policies select a pod (IST0127).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import corpus_path

from kubectl_mtls.istio.authz import (
    action,
    allows_nothing,
    applies_to,
    denies_everything,
    dry_run,
    identity_fields,
    parse_principal,
    principals,
)

ROOT = "istio-system"
POD = {"app": "httpbin", "version": "v1"}


def ap(ns: str = "prod", *, name: str = "p", spec: dict[str, Any] | None = None,
       annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations is not None:
        meta["annotations"] = annotations
    out: dict[str, Any] = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": meta}
    if spec is not None:
        out["spec"] = spec
    return out


def sel(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


@pytest.mark.parametrize(
    ("policy", "ns", "labels", "applies"),
    [
        (ap(ROOT, spec={}), "prod", POD, True),
        (ap(ROOT, spec={"selector": sel(app="httpbin")}), "prod", POD, True),   # mesh-wide, unlike PA
        (ap(ROOT, spec={"selector": sel(app="httpbin")}), "other", POD, True),
        (ap(ROOT, spec={"selector": sel(app="other")}), "prod", POD, False),
        (ap(ROOT, spec={"selector": sel(app="httpbin")}), ROOT, POD, True),
        (ap("prod", spec={}), "prod", POD, True),
        (ap("prod"), "prod", POD, True),                                         # no spec at all
        (ap("prod", spec={"selector": {}}), "prod", POD, True),
        (ap("prod", spec={"selector": sel()}), "prod", POD, True),
        (ap("prod", spec={"selector": sel(app="httpbin", version="v1")}), "prod", POD, True),
        (ap("prod", spec={"selector": sel(app="httpbin", version="v2")}), "prod", POD, False),
        (ap("prod", spec={"selector": sel(team="")}), "prod", POD, False),      # the key must exist
        (ap("prod", spec={}), "other", POD, False),
        (ap("prod", spec={"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}}),
         "prod", POD, False),
        (ap("prod", spec={"targetRefs": [{"kind": "Service", "group": "", "name": "httpbin"}]}), "prod", POD, False),
        (ap(ROOT, spec={"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}]}),
         "prod", POD, False),
    ],
    ids=["root-no-selector", "root-selector", "root-selector-other-ns", "root-selector-mismatch",
         "root-selector-root-pod", "ns-empty-spec", "ns-no-spec", "ns-empty-selector", "ns-empty-matchlabels",
         "ns-selector", "ns-selector-mismatch", "ns-selector-missing-key", "other-ns", "target-ref",
         "target-refs", "root-target-refs"],
)
def test_applies_to(policy: dict[str, Any], ns: str, labels: dict[str, str], applies: bool) -> None:
    assert applies_to(policy, ns, labels, ROOT) is applies


def test_applies_to_custom_root_namespace() -> None:
    assert applies_to(ap("istio-config", spec={}), "prod", POD, "istio-config")
    assert not applies_to(ap(ROOT, spec={}), "prod", POD, "istio-config")
    assert applies_to(ap(ROOT, spec={}), "prod", POD)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [({}, "ALLOW"), (None, "ALLOW"), ({"action": "ALLOW"}, "ALLOW"), ({"action": "DENY"}, "DENY"),
     ({"action": "AUDIT"}, "AUDIT"), ({"action": "CUSTOM", "provider": {"name": "ext"}}, "CUSTOM"),
     ({"action": ""}, "ALLOW")],
)
def test_action(spec: dict[str, Any] | None, expected: str) -> None:
    assert action(ap(spec=spec)) == expected


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [(None, False), ({}, False), ({"istio.io/dry-run": "true"}, True), ({"istio.io/dry-run": "false"}, False),
     ({"istio.io/dry-run": "True"}, True), ({"istio.io/dry-run": "1"}, True), ({"istio.io/dry-run": "yes"}, False),
     ({"other": "true"}, False)],
)
def test_dry_run(annotations: dict[str, str] | None, expected: bool) -> None:
    assert dry_run(ap(spec={}, annotations=annotations)) is expected


def rule(source: dict[str, Any] | None = None, when: list[dict[str, Any]] | None = None,
         to: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if source is not None:
        out["from"] = [{"source": source}]
    if to is not None:
        out["to"] = to
    if when is not None:
        out["when"] = when
    return out


@pytest.mark.parametrize(
    ("rules", "fields"),
    [
        ([rule({"principals": ["cluster.local/ns/a/sa/b"]})], ["spec.rules[0].from[0].source.principals"]),
        ([rule({"notPrincipals": ["*"]})], ["spec.rules[0].from[0].source.notPrincipals"]),
        ([rule({"namespaces": ["a"]})], ["spec.rules[0].from[0].source.namespaces"]),
        ([rule({"notNamespaces": ["a"]})], ["spec.rules[0].from[0].source.notNamespaces"]),
        ([rule({"serviceAccounts": ["a/b"]})], ["spec.rules[0].from[0].source.serviceAccounts"]),
        ([rule({"notServiceAccounts": ["a/b"]})], ["spec.rules[0].from[0].source.notServiceAccounts"]),
        ([rule({"requestPrincipals": ["iss/sub"], "notRequestPrincipals": ["x"]})], []),
        ([rule({"ipBlocks": ["10.0.0.0/8"], "remoteIpBlocks": ["1.2.3.4"]})], []),
        ([rule({"principals": []})], []),
        ([rule(when=[{"key": "source.principal", "values": ["a"]}])], ["spec.rules[0].when[0] (source.principal)"]),
        ([rule(when=[{"key": "source.namespace", "notValues": ["a"]}])], ["spec.rules[0].when[0] (source.namespace)"]),
        ([rule(when=[{"key": "connection.sni", "values": ["x"]}])], ["spec.rules[0].when[0] (connection.sni)"]),
        ([rule(when=[{"key": "source.ip", "values": ["1.2.3.4"]}, {"key": "destination.port", "values": ["80"]},
                     {"key": "request.auth.principal", "values": ["x"]}])], []),
        ([{}, rule({"ipBlocks": ["1.2.3.4"]}, when=[{"key": "request.headers[x]", "values": ["y"]},
                                                  {"key": "source.namespace", "values": ["a"]}])],
         ["spec.rules[1].when[1] (source.namespace)"]),
        ([{"from": [{"source": {"ipBlocks": ["1.2.3.4"]}}, {"source": {"principals": ["a"], "namespaces": ["b"]}}]}],
         ["spec.rules[0].from[1].source.principals", "spec.rules[0].from[1].source.namespaces"]),
        ([], []),
    ],
)
def test_identity_fields(rules: list[dict[str, Any]], fields: list[str]) -> None:
    assert identity_fields(ap(spec={"rules": rules})) == fields


def test_identity_fields_without_rules_or_spec() -> None:
    assert identity_fields(ap()) == []
    assert identity_fields(ap(spec={"rules": None})) == []


@pytest.mark.parametrize(
    ("spec", "nothing", "everything"),
    [
        ({}, True, False),                                        # ALLOW without rules: allow-nothing
        (None, True, False),
        ({"rules": []}, True, False),
        ({"action": "ALLOW", "rules": [{}]}, False, False),       # allows everything
        ({"action": "DENY"}, False, False),                       # DENY without rules never matches
        ({"action": "DENY", "rules": []}, False, False),
        ({"action": "DENY", "rules": [{}]}, False, True),
        ({"action": "DENY", "rules": [{"from": [], "to": [], "when": []}]}, False, True),
        ({"action": "DENY", "rules": [rule({"principals": ["a"]}), {}]}, False, True),
        ({"action": "DENY", "rules": [rule({"notPrincipals": ["a"]})]}, False, False),
        ({"action": "DENY", "rules": [rule(to=[{"operation": {"methods": ["POST"]}}])]}, False, False),
        ({"action": "DENY", "rules": [rule(when=[{"key": "source.ip", "values": ["1.2.3.4"]}])]}, False, False),
        ({"action": "AUDIT", "rules": [{}]}, False, False),
        ({"action": "CUSTOM", "provider": {"name": "x"}}, False, False),
    ],
)
def test_allows_nothing_and_denies_everything(spec: dict[str, Any] | None, nothing: bool, everything: bool) -> None:
    policy = ap(spec=spec)
    assert allows_nothing(policy) is nothing
    assert denies_everything(policy) is everything


def test_principals_lists_every_entry_with_its_path() -> None:
    policy = ap(spec={"rules": [
        rule({"principals": ["cluster.local/ns/a/sa/b", "cluster.local/ns/a/sa/*"], "namespaces": ["a"]}),
        {"from": [{"source": {"ipBlocks": ["1.1.1.1"]}}, {"source": {"notPrincipals": ["td/ns/c/sa/d"]}}],
         "when": [{"key": "source.principal", "values": ["cluster.local/ns/e/sa/f"]},
                  {"key": "source.namespace", "values": ["g"]}]},
    ]})
    assert principals(policy) == [
        ("spec.rules[0].from[0].source.principals[0]", "cluster.local/ns/a/sa/b"),
        ("spec.rules[0].from[0].source.principals[1]", "cluster.local/ns/a/sa/*"),
        ("spec.rules[1].from[1].source.notPrincipals[0]", "td/ns/c/sa/d"),
        ("spec.rules[1].when[0].values[0]", "cluster.local/ns/e/sa/f"),
    ]
    assert principals(ap()) == []


@pytest.mark.parametrize(
    ("principal", "parsed"),
    [
        ("cluster.local/ns/foo/sa/bar", ("cluster.local", "foo", "bar")),
        ("example.org/ns/prod-1/sa/default", ("example.org", "prod-1", "default")),
        ("*", None),
        ("cluster.local/ns/foo/sa/*", None),
        ("*/ns/foo/sa/bar", None),
        ("cluster.local/ns/*", None),
        ("spiffe://cluster.local/ns/foo/sa/bar", None),
        ("cluster.local/ns/foo", None),
        ("cluster.local/ns//sa/bar", None),
        ("cluster.local/sa/foo/ns/bar", None),
        ("cluster.local/ns/foo/sa/bar/extra", None),
        ("", None),
    ],
)
def test_parse_principal(principal: str, parsed: tuple[str, str, str] | None) -> None:
    assert parse_principal(principal) == parsed


# --- corpus ------------------------------------------------------------------------------------

KIALI_AUTHZ = "kiali/tests/data/validations/authorization/"
ANALYZERS = "istio/pkg/config/analysis/analyzers/testdata/"


def docs_of(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def policies_of(path: Path) -> list[dict[str, Any]]:
    return [d for d in docs_of(path) if d.get("kind") == "AuthorizationPolicy"]


def test_kiali_requires_mtls_fixture() -> None:
    fixture = corpus_path(KIALI_AUTHZ + "authz_policy_requires_mtls.yaml")
    policies = {p["metadata"]["name"]: p for p in policies_of(fixture)}
    assert sorted(policies, key=lambda n: int(n.split("-")[1])) == [f"policy-{i}" for i in range(11)]
    needs = {name: bool(identity_fields(p)) for name, p in policies.items()}
    assert needs == {f"policy-{i}": i in (0, 1, 3, 4, 5, 8, 9) for i in range(11)}
    assert identity_fields(policies["policy-0"]) == ["spec.rules[0].from[0].source.principals"]
    assert identity_fields(policies["policy-1"]) == ["spec.rules[0].from[0].source.notPrincipals"]
    assert identity_fields(policies["policy-3"]) == ["spec.rules[0].when[0] (source.principal)"]
    assert identity_fields(policies["policy-4"]) == ["spec.rules[0].when[0] (source.namespace)"]
    assert identity_fields(policies["policy-5"]) == ["spec.rules[0].when[0] (connection.sni)"]
    # Upstream writes these two paths as from[o]; the correct index is 0.
    assert identity_fields(policies["policy-8"]) == ["spec.rules[0].from[0].source.namespaces"]
    assert identity_fields(policies["policy-9"]) == ["spec.rules[0].from[0].source.notNamespaces"]
    assert allows_nothing(policies["policy-6"])


@pytest.mark.parametrize(
    ("fixture", "path"),
    [("mtls_enabled_checker_1.yaml", "spec.rules[0].from[0].source.principals"),
     ("mtls_enabled_checker_23.yaml", "spec.rules[0].from[0].source.namespaces"),
     ("mtls_enabled_checker_71.yaml", None),
     ("mtls_enabled_checker_101.yaml", None)],
)
def test_kiali_policy_under_test_fields(fixture: str, path: str | None) -> None:
    [policy] = [p for p in policies_of(corpus_path(KIALI_AUTHZ + fixture)) if p["metadata"]["name"] == "policy"]
    assert identity_fields(policy) == ([path] if path else [])


def test_analyzer_fixture_policies_select_the_pods_istio_says() -> None:
    docs = docs_of(corpus_path(ANALYZERS + "authorizationpolicies.yaml"))
    pods = [d for d in docs if d.get("kind") == "Pod"]
    policies = [d for d in docs if d.get("kind") == "AuthorizationPolicy"]
    selecting = {
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in policies
        if any(applies_to(p, pod["metadata"]["namespace"], pod["metadata"]["labels"], ROOT) for pod in pods)
    }
    # IST0127 (no matching workloads) is reported for exactly the other four.
    no_workload = {"istio-system/meshwide-httpbin-v1", "httpbin-empty/httpbin-empty-namespace-wide",
                   "httpbin/httpbin-nopods", "test-ambient/no-workload"}
    assert selecting == {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in policies} - no_workload
    by_name = {p["metadata"]["name"]: p for p in policies}
    assert allows_nothing(by_name["meshwide-httpbin"])  # `spec: {}` in the root namespace denies the whole mesh
    assert identity_fields(by_name["httpbin"]) == ["spec.rules[0].from[0].source.principals",
                                                   "spec.rules[0].from[1].source.namespaces"]
    assert "spec.rules[0].from[1].source.notNamespaces" in identity_fields(by_name["httpbin-bogus-not-ns"])


def test_every_corpus_authorization_policy_loads() -> None:
    files = [
        corpus_path(ANALYZERS + "authorizationpolicies.yaml"),
        corpus_path(ANALYZERS + "condition-analyzer.yaml"),
        corpus_path(ANALYZERS + "k8sgateway-selector.yaml"),
        *sorted(corpus_path("kiali").rglob("*.yaml")),
    ]
    count = 0
    for path in files:
        for policy in policies_of(path):
            count += 1
            ns = policy["metadata"].get("namespace", "default")
            assert action(policy) in ("ALLOW", "DENY", "AUDIT", "CUSTOM")
            assert isinstance(dry_run(policy), bool)
            assert not (allows_nothing(policy) and denies_everything(policy))
            for field in identity_fields(policy):
                assert field.startswith("spec.rules[")
            for path_, principal in principals(policy):
                assert path_.startswith("spec.rules[")
                parse_principal(principal)
            assert isinstance(applies_to(policy, ns, {}, ROOT), bool)
    assert count >= 40


def test_gateway_policies_do_not_reach_ordinary_sidecars() -> None:
    # Selector on the Gateway API pod label: only gateway pods could match; targetRefs: never a sidecar.
    policies = policies_of(corpus_path(ANALYZERS + "k8sgateway-selector.yaml"))
    assert policies
    for policy in policies:
        assert not applies_to(policy, "default", {"app": "productpage"}, ROOT)
