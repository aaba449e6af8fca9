"""DestinationRule selection and TLS modes (ISTIO-RULES §4), table by table, plus the corpus files.

Expectations restate istiod's lookup (push_context.go destinationRule / setDestinationRules,
destination_rule.go mergeDestinationRule, sidecar.go DestinationRule) and its per-port policy merge
(networking/util MergeSubsetTrafficPolicy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import corpus_path

from kubectl_mtls.istio.destinationrule import Selected, expand_host, exported_to, host_matches, select, tls_modes

ROOT = "istio-system"
T0 = "2024-01-01T00:00:00Z"
T1 = "2024-01-02T00:00:00Z"
T2 = "2024-01-03T00:00:00Z"
REVIEWS = "reviews.prod.svc.cluster.local"
MODES = {"DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"}


def dr(
    name: str,
    ns: str,
    host: str,
    tls: str | None = None,
    *,
    created: str = T0,
    export: list[str] | None = None,
    selector: dict[str, str] | None = None,
    subsets: list[dict[str, Any]] | None = None,
    ports: dict[int, str | None] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": host}
    policy: dict[str, Any] = {}
    if tls is not None:
        policy["tls"] = {"mode": tls}
    if ports is not None:
        policy["portLevelSettings"] = [
            {"port": {"number": p}, **({"tls": {"mode": m}} if m else {"connectionPool": {}})} for p, m in ports.items()
        ]
    if policy:
        spec["trafficPolicy"] = policy
    if export is not None:
        spec["exportTo"] = export
    if selector is not None:
        spec["workloadSelector"] = {"matchLabels": selector}
    if subsets is not None:
        spec["subsets"] = subsets
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
        "spec": spec,
    }


def subset(name: str, tls: str | None = None, *, ports: dict[int, str | None] | None = None,
           policy: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "labels": {"version": name}}
    tp: dict[str, Any] = dict(policy or {})
    if tls is not None:
        tp["tls"] = {"mode": tls}
    if ports is not None:
        tp["portLevelSettings"] = [
            {"port": {"number": p}, **({"tls": {"mode": m}} if m else {"loadBalancer": {"simple": "RANDOM"}})}
            for p, m in ports.items()
        ]
    if tp or policy is not None:
        out["trafficPolicy"] = tp
    return out


def who(selected: Selected | None) -> tuple[str, list[str], str] | None:
    if selected is None:
        return None
    rules = [f"{r['metadata']['namespace']}/{r['metadata']['name']}" for r in selected.rules]
    return selected.step, rules, selected.host


# --- hosts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "ns", "domain", "expanded"),
    [
        ("reviews", "prod", "cluster.local", "reviews.prod.svc.cluster.local"),
        ("reviews", "prod", "corp.example", "reviews.prod.svc.corp.example"),
        # istiod qualifies only dot-less names; "reviews.prod" is taken literally (and matches no Service).
        ("reviews.prod", "default", "cluster.local", "reviews.prod"),
        ("reviews.prod.svc.cluster.local", "default", "cluster.local", "reviews.prod.svc.cluster.local"),
        ("*.prod.svc.cluster.local", "default", "cluster.local", "*.prod.svc.cluster.local"),
        ("*.local", "default", "cluster.local", "*.local"),
        ("*", "default", "cluster.local", "*"),
        ("10.0.0.1", "default", "cluster.local", "10.0.0.1"),
        ("2001:db8::1", "default", "cluster.local", "2001:db8::1"),
    ],
)
def test_expand_host(host: str, ns: str, domain: str, expanded: str) -> None:
    assert expand_host(host, ns, domain) == expanded


@pytest.mark.parametrize(
    ("pattern", "fqdn", "matches"),
    [
        (REVIEWS, REVIEWS, True),
        (REVIEWS, "ratings.prod.svc.cluster.local", False),
        ("*.prod.svc.cluster.local", REVIEWS, True),
        ("*.prod.svc.cluster.local", "prod.svc.cluster.local", False),
        ("*.prod.svc.cluster.local", "reviews.dev.svc.cluster.local", False),
        ("*.local", REVIEWS, True),
        ("*.cluster.local", REVIEWS, True),
        ("*", REVIEWS, True),
        ("*", "example.com", True),
        ("*.example.com", "*.example.com", True),
        ("*.com", "*.example.com", True),
        ("*.example.com", "*.com", False),
        ("www.example.com", "*.example.com", False),
    ],
)
def test_host_matches(pattern: str, fqdn: str, matches: bool) -> None:
    assert host_matches(pattern, fqdn) is matches


@pytest.mark.parametrize(
    ("rule", "client", "default", "visible"),
    [
        (dr("d", "prod", "reviews"), "prod", "*", True),
        (dr("d", "prod", "reviews"), "other", "*", True),
        (dr("d", "prod", "reviews"), "other", ".", False),
        (dr("d", "prod", "reviews"), "prod", ".", True),
        (dr("d", "prod", "reviews", export=["."]), "prod", "*", True),
        (dr("d", "prod", "reviews", export=["."]), "other", "*", False),
        (dr("d", "prod", "reviews", export=["*"]), "other", ".", True),
        (dr("d", "prod", "reviews", export=["other"]), "other", "*", True),
        (dr("d", "prod", "reviews", export=["other"]), "prod", "*", False),
        (dr("d", "prod", "reviews", export=[".", "other"]), "prod", "*", True),
        (dr("d", "prod", "reviews", export=[".", "other"]), "third", "*", False),
        (dr("d", "prod", "reviews", export=["~"]), "prod", "*", False),
        (dr("d", "prod", "reviews", export=["*"], selector={"app": "x"}), "other", "*", False),
        (dr("d", "prod", "reviews", export=["*"], selector={"app": "x"}), "prod", "*", True),
    ],
)
def test_exported_to(rule: dict[str, Any], client: str, default: str, visible: bool) -> None:
    assert exported_to(rule, client, default) is visible


# --- selection steps ---------------------------------------------------------------------------

NS_DR = dr("ns-wide", "prod", "*.prod.svc.cluster.local", "DISABLE")
MESH_DR = dr("mesh", ROOT, "*.local", "ISTIO_MUTUAL")


@pytest.mark.parametrize(
    ("rules", "client", "expected"),
    [
        # (1) the client's namespace first, even over a more specific rule in the service namespace
        ([dr("exact", "prod", "reviews", "SIMPLE"), dr("mine", "web", "*.local", "MUTUAL")], "web",
         ("client-namespace", ["web/mine"], "*.local")),
        # (2) the service namespace when the client namespace has nothing for the host
        ([dr("exact", "prod", "reviews", "SIMPLE"), MESH_DR], "web",
         ("service-namespace", ["prod/exact"], REVIEWS)),
        # (3) the root namespace last
        ([MESH_DR, dr("unrelated", "web", "ratings.prod.svc.cluster.local")], "web",
         ("root-namespace", ["istio-system/mesh"], "*.local")),
        # a service-namespace rule exported only to its own namespace is skipped
        ([dr("private", "prod", "reviews", "SIMPLE", export=["."]), MESH_DR], "web",
         ("root-namespace", ["istio-system/mesh"], "*.local")),
        # ... and one exported to the client by name is used
        ([dr("shared", "prod", "reviews", "SIMPLE", export=["web"]), MESH_DR], "web",
         ("service-namespace", ["prod/shared"], REVIEWS)),
        # a rule exported away from its own namespace is not seen there
        ([dr("away", "prod", "reviews", "SIMPLE", export=["web"]), MESH_DR], "prod",
         ("root-namespace", ["istio-system/mesh"], "*.local")),
        # within a step an exact host beats a wildcard, whatever the age
        ([dr("wild", "prod", "*.prod.svc.cluster.local", created=T0), dr("exact", "prod", "reviews", created=T2)],
         "prod", ("client-namespace", ["prod/exact"], REVIEWS)),
        # and the longest matching wildcard beats shorter ones
        ([dr("w1", "prod", "*.local"), dr("w3", "prod", "*.prod.svc.cluster.local"),
          dr("w2", "prod", "*.cluster.local")], "prod", ("client-namespace", ["prod/w3"], "*.prod.svc.cluster.local")),
        # a short host resolves in the rule's namespace: "reviews" in web is reviews.web, not reviews.prod
        ([dr("short", "web", "reviews", "SIMPLE"), NS_DR], "web",
         ("service-namespace", ["prod/ns-wide"], "*.prod.svc.cluster.local")),
        # "reviews.prod" is literal for istiod and matches nothing
        ([dr("dotted", "web", "reviews.prod", "SIMPLE")], "web", None),
        # nothing anywhere
        ([dr("other", "prod", "ratings")], "web", None),
    ],
    ids=["client-ns-first", "service-ns", "root-ns", "service-ns-private-skipped", "exported-by-name",
         "exported-away-from-own-ns", "exact-beats-wildcard", "longest-wildcard", "short-name-own-ns",
         "dotted-name-literal", "no-match"],
)
def test_select_steps(rules: list[dict[str, Any]], client: str, expected: tuple[str, list[str], str] | None) -> None:
    assert who(select(rules, REVIEWS, client, "prod", ROOT)) == expected


def test_no_merge_across_steps() -> None:
    # The client-namespace rule has no TLS at all; the service-namespace rule's DISABLE must not leak in.
    rules = [dr("client-lb", "web", "reviews.prod.svc.cluster.local"), dr("svc", "prod", "reviews", "DISABLE")]
    selected = select(rules, REVIEWS, "web", "prod", ROOT)
    assert who(selected) == ("client-namespace", ["web/client-lb"], REVIEWS)
    assert selected is not None and tls_modes(selected, 9080) == []


def test_most_specific_host_not_exported_hides_broader_one_in_that_step() -> None:
    # istiod picks the host among the service namespace's exported rules first and only then checks
    # exportTo, so the wildcard exported to everyone is never reached; the lookup moves on to the root.
    rules = [dr("for-dev", "prod", "reviews", "SIMPLE", export=["dev"]), NS_DR, MESH_DR]
    assert who(select(rules, REVIEWS, "web", "prod", ROOT)) == ("root-namespace", ["istio-system/mesh"], "*.local")
    assert who(select(rules[:2], REVIEWS, "web", "prod", ROOT)) is None
    assert who(select(rules, REVIEWS, "dev", "prod", ROOT)) == ("service-namespace", ["prod/for-dev"], REVIEWS)
    # A rule exported only to its own namespace is not in that pool at all, so the wildcard is used.
    private = [dr("private", "prod", "reviews", "SIMPLE", export=["."]), NS_DR, MESH_DR]
    assert who(select(private, REVIEWS, "web", "prod", ROOT)) == (
        "service-namespace", ["prod/ns-wide"], "*.prod.svc.cluster.local")


def test_default_export_private_hides_rules_without_export_to() -> None:
    rules = [dr("svc", "prod", "reviews", "SIMPLE"), MESH_DR]
    got = select(rules, REVIEWS, "web", "prod", ROOT, default_export=".")
    # The root rule has no exportTo either, so with "." as default it is private to istio-system too.
    assert got is None
    assert who(select(rules, REVIEWS, "prod", "prod", ROOT, default_export="."))[1] == ["prod/svc"]


def test_root_namespace_client_sees_private_root_rules_first_and_exported_ones_last() -> None:
    private = dr("private", ROOT, "*.local", "DISABLE", export=["."])
    public = dr("public", ROOT, "*.prod.svc.cluster.local", "ISTIO_MUTUAL")
    svc = dr("svc", "prod", "reviews", "SIMPLE")
    assert who(select([private, public, svc], REVIEWS, ROOT, "prod", ROOT)) == (
        "client-namespace", ["istio-system/private"], "*.local")
    assert who(select([public, svc], REVIEWS, ROOT, "prod", ROOT)) == ("service-namespace", ["prod/svc"], REVIEWS)
    assert who(select([public], REVIEWS, ROOT, "prod", ROOT)) == (
        "root-namespace", ["istio-system/public"], "*.prod.svc.cluster.local")


# --- same host in one step ---------------------------------------------------------------------


def test_same_host_rules_are_consolidated_oldest_first() -> None:
    newer = dr("newer", "prod", "reviews", "SIMPLE", created=T1, subsets=[subset("v1", "MUTUAL"), subset("v2")])
    older = dr("older", "prod", "reviews", created=T0, subsets=[subset("v1", "DISABLE")])
    selected = select([newer, older], REVIEWS, "prod", "prod", ROOT)
    assert who(selected) == ("client-namespace", ["prod/older", "prod/newer"], REVIEWS)
    assert selected is not None
    # top-level policy: the oldest rule that has one (newer); subset v1 is the older rule's (first wins)
    assert tls_modes(selected, 9080) == [
        ("SIMPLE", "prod/newer: trafficPolicy.tls"),
        ("DISABLE", "prod/older: subsets[v1].trafficPolicy.tls"),
    ]


def test_oldest_top_level_policy_wins() -> None:
    a = dr("a", "prod", "reviews", "ISTIO_MUTUAL", created=T1)
    b = dr("b", "prod", "reviews", "DISABLE", created=T1)
    c = dr("c", "prod", "reviews", "SIMPLE", created=T0)
    selected = select([a, b, c], REVIEWS, "prod", "prod", ROOT)
    assert who(selected) == ("client-namespace", ["prod/c", "prod/a", "prod/b"], REVIEWS)
    assert selected is not None and tls_modes(selected, None) == [("SIMPLE", "prod/c: trafficPolicy.tls")]


def test_same_host_with_different_export_to_is_not_merged() -> None:
    # ENABLE_ENHANCED_DESTINATIONRULE_MERGE (default since 1.24): two entries; the sidecar then uses
    # the last one without selector.
    public = dr("public", "prod", "reviews", "ISTIO_MUTUAL", created=T0)
    private = dr("private", "prod", "reviews", "DISABLE", created=T1, export=["."])
    both = [public, private]
    assert who(select(both, REVIEWS, "prod", "prod", ROOT)) == ("client-namespace", ["prod/private"], REVIEWS)
    assert who(select(both, REVIEWS, "web", "prod", ROOT)) == ("service-namespace", ["prod/public"], REVIEWS)


# --- workloadSelector --------------------------------------------------------------------------

SEL = dr("for-db", "prod", "reviews", "SIMPLE", selector={"app": "db"}, created=T2)
PLAIN = dr("plain", "prod", "reviews", "ISTIO_MUTUAL", created=T0)
SVC_NS = dr("svc", "data", "reviews.prod.svc.cluster.local", "DISABLE")


@pytest.mark.parametrize(
    ("rules", "client", "labels", "expected"),
    [
        ([PLAIN, SEL], "prod", {"app": "db", "x": "y"}, ("client-namespace", ["prod/for-db"], REVIEWS)),
        ([PLAIN, SEL], "prod", {"app": "web"}, ("client-namespace", ["prod/plain"], REVIEWS)),
        ([PLAIN, SEL], "prod", None, ("client-namespace", ["prod/plain"], REVIEWS)),
        # a selector-only rule in the client namespace finds the host, then fits no client:
        # istiod gives such a client no DestinationRule at all, not the service namespace's
        ([SEL, SVC_NS], "prod", {"app": "web"}, None),
        ([SEL, SVC_NS], "prod", {"app": "db"}, ("client-namespace", ["prod/for-db"], REVIEWS)),
        # selector rules are never exported to other namespaces
        ([SEL, PLAIN], "web", {"app": "db"}, ("service-namespace", ["prod/plain"], REVIEWS)),
        ([SEL], "web", {"app": "db"}, None),
    ],
    ids=["matching-client", "non-matching-client", "labels-unknown", "selector-only-shadows", "selector-only-match",
         "not-exported", "not-exported-alone"],
)
def test_workload_selector(rules: list[dict[str, Any]], client: str, labels: dict[str, str] | None,
                           expected: tuple[str, list[str], str] | None) -> None:
    service_ns = "data" if SVC_NS in rules else "prod"
    assert who(select(rules, REVIEWS, client, service_ns, ROOT, labels)) == expected


def test_plain_rule_exported_like_a_selector_rule_merges_into_it() -> None:
    # A selector rule's exportTo is forced to ["."]; a plain rule with the same exportTo and host is
    # merged into the selector entry and, with equal exportTo, not kept on its own (istiod's
    # mergeDestinationRule control flow): matching clients get both, the others get no rule.
    plain = dr("plain", "prod", "reviews", "ISTIO_MUTUAL", export=["."], created=T0, subsets=[subset("v1")])
    both = [plain, SEL]
    selected = select(both, REVIEWS, "prod", "prod", ROOT, {"app": "db"})
    assert who(selected) == ("client-namespace", ["prod/for-db", "prod/plain"], REVIEWS)
    assert selected is not None and tls_modes(selected, 9080) == [("SIMPLE", "prod/for-db: trafficPolicy.tls")]
    assert select(both, REVIEWS, "prod", "prod", ROOT, {"app": "web"}) is None
    # With the default exportTo the two stay apart and the plain rule is the catch-all.
    apart = [dr("plain", "prod", "reviews", "ISTIO_MUTUAL"), SEL]
    assert who(select(apart, REVIEWS, "prod", "prod", ROOT, {"app": "web"}))[1] == ["prod/plain"]


# --- TLS modes per port ------------------------------------------------------------------------


def modes(rule_list: list[dict[str, Any]], port: int | None) -> list[tuple[str, str]]:
    selected = select(rule_list, REVIEWS, "prod", "prod", ROOT)
    assert selected is not None
    return tls_modes(selected, port)


@pytest.mark.parametrize(
    ("rule", "port", "expected"),
    [
        (dr("d", "prod", "reviews", "ISTIO_MUTUAL"), 9080, [("ISTIO_MUTUAL", "prod/d: trafficPolicy.tls")]),
        (dr("d", "prod", "reviews"), 9080, []),
        # a port-level entry replaces the top level on its port only
        (dr("d", "prod", "reviews", "ISTIO_MUTUAL", ports={8080: "DISABLE"}), 8080,
         [("DISABLE", "prod/d: trafficPolicy.portLevelSettings[port=8080]")]),
        (dr("d", "prod", "reviews", "ISTIO_MUTUAL", ports={8080: "DISABLE"}), 9080,
         [("ISTIO_MUTUAL", "prod/d: trafficPolicy.tls")]),
        # a port entry without tls means autoMtls on that port: no explicit mode at all
        (dr("d", "prod", "reviews", "DISABLE", ports={8080: None}), 8080, []),
        # unknown port: every mode the rule can give on some port
        (dr("d", "prod", "reviews", "ISTIO_MUTUAL", ports={8080: "DISABLE", 443: "SIMPLE"}), None,
         [("ISTIO_MUTUAL", "prod/d: trafficPolicy.tls"),
          ("SIMPLE", "prod/d: trafficPolicy.portLevelSettings[port=443]"),
          ("DISABLE", "prod/d: trafficPolicy.portLevelSettings[port=8080]")]),
    ],
    ids=["top-level", "no-tls", "port-level-replaces", "other-port-keeps-top", "port-without-tls-is-auto", "any-port"],
)
def test_tls_modes_destination_level(rule: dict[str, Any], port: int | None, expected: list[tuple[str, str]]) -> None:
    assert modes([rule], port) == expected


def test_tls_modes_subsets() -> None:
    rule = dr("d", "prod", "reviews", "ISTIO_MUTUAL", ports={8080: "DISABLE"}, subsets=[
        subset("v1", "SIMPLE"),                                   # overrides the destination tls
        subset("v2"),                                             # no policy: inherits
        subset("v3", policy={"loadBalancer": {"simple": "RANDOM"}}),  # policy without tls: inherits
        subset("v4", ports={8080: None}),                         # port entry without tls: auto on 8080
        subset("v5", ports={8080: "MUTUAL"}),                     # port entry replaces both levels
    ])
    assert modes([rule], 9080) == [
        ("ISTIO_MUTUAL", "prod/d: trafficPolicy.tls"),
        ("SIMPLE", "prod/d: subsets[v1].trafficPolicy.tls"),
    ]
    assert modes([rule], 8080) == [
        ("DISABLE", "prod/d: trafficPolicy.portLevelSettings[port=8080]"),
        ("SIMPLE", "prod/d: subsets[v1].trafficPolicy.tls"),
        ("MUTUAL", "prod/d: subsets[v5].trafficPolicy.portLevelSettings[port=8080]"),
    ]


def test_subset_policy_applies_without_destination_policy() -> None:
    rule = dr("d", "prod", "reviews", subsets=[subset("v1", "DISABLE")])
    assert modes([rule], 9080) == [("DISABLE", "prod/d: subsets[v1].trafficPolicy.tls")]


def test_tls_block_without_mode_is_disable() -> None:
    rule = dr("d", "prod", "reviews")
    rule["spec"]["trafficPolicy"] = {"tls": {"sni": "reviews.example"}}
    assert modes([rule], 9080) == [("DISABLE", "prod/d: trafficPolicy.tls (mode unset: DISABLE)")]


# --- corpus ------------------------------------------------------------------------------------

ANALYZERS = "istio/pkg/config/analysis/analyzers/testdata/"


def docs_of(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def rules_of(path: Path) -> list[dict[str, Any]]:
    return [d for d in docs_of(path) if d.get("kind") == "DestinationRule"]


def corpus_files() -> list[Path]:
    istio = sorted(corpus_path(ANALYZERS).glob("destinationrule-*.yaml"))
    kiali = sorted(corpus_path("kiali").rglob("*.yaml"))
    return istio + kiali


def probe_host(host: str) -> str:
    # A concrete service host that a wildcard covers.
    if host == "*":
        return "probe.default.svc.cluster.local"
    return "probe" + host[1:] if host.startswith("*") else host


def test_every_corpus_destination_rule_selects_and_gives_modes() -> None:
    files = corpus_files()
    count = 0
    for path in files:
        rules = rules_of(path)
        for rule in rules:
            count += 1
            ns = rule["metadata"].get("namespace", "default")
            spec = rule["spec"]
            fqdn = probe_host(expand_host(spec["host"], ns))
            labels = (spec.get("workloadSelector") or {}).get("matchLabels")
            selected = select(rules, fqdn, ns, ns, ROOT, labels)
            assert selected is not None, f"{path.name}: {ns}/{rule['metadata']['name']}"
            assert host_matches(selected.host, fqdn)
            ports = [s["port"]["number"] for s in (spec.get("trafficPolicy") or {}).get("portLevelSettings") or []]
            for port in [None, 80, *ports]:
                for mode, where in tls_modes(selected, port):
                    assert mode in MODES
                    assert where.split(": ", 1)[0].count("/") == 1
    assert count >= 40


@pytest.mark.parametrize(
    ("fixture", "top", "port_level"),
    [("destinationrule-compound-simple-mutual.yaml", "MUTUAL", "SIMPLE"),
     ("destinationrule-compound-mutual-simple.yaml", "SIMPLE", "MUTUAL")],
)
def test_compound_port_level_replaces_top_level(fixture: str, top: str, port_level: str) -> None:
    rules = rules_of(corpus_path(ANALYZERS + fixture))
    # The rule has no namespace, so it lives in "default": only clients there (or of services there) use it.
    selected = select(rules, "mydbserver.prod.svc.cluster.local", "default", "prod", ROOT)
    assert selected is not None and selected.step == "client-namespace"
    assert tls_modes(selected, 443) == [(port_level, "default/db-mtls: trafficPolicy.portLevelSettings[port=443]")]
    assert tls_modes(selected, 3306) == [(top, "default/db-mtls: trafficPolicy.tls")]
    assert [m for m, _ in tls_modes(selected, None)] == [top, port_level]
    assert select(rules, "mydbserver.prod.svc.cluster.local", "prod", "prod", ROOT) is None


def test_corpus_selector_rule_only_for_matching_clients() -> None:
    rules = rules_of(corpus_path(ANALYZERS + "destinationrule-simple-port-credentialname-selector.yaml"))
    host = "mydbserver.prod.svc.cluster.local"
    selected = select(rules, host, "default", "prod", ROOT, {"app": "db"})
    assert selected is not None
    assert tls_modes(selected, 443) == [("SIMPLE", "default/db-tls: trafficPolicy.portLevelSettings[port=443]")]
    assert select(rules, host, "default", "prod", ROOT, {"app": "web"}) is None


KIALI_AUTHZ = "kiali/tests/data/validations/authorization/"


@pytest.mark.parametrize(
    ("fixture", "fqdn", "client", "service_ns", "step", "mode"),
    [
        # _15: mesh DR ISTIO_MUTUAL on *.local, namespace DR DISABLE on *.bookinfo.svc.cluster.local
        ("mtls_enabled_checker_15.yaml", "ratings.bookinfo.svc.cluster.local", "bookinfo", "bookinfo",
         "client-namespace", "DISABLE"),
        ("mtls_enabled_checker_15.yaml", "ratings.bookinfo.svc.cluster.local", "frontend", "bookinfo",
         "service-namespace", "DISABLE"),
        ("mtls_enabled_checker_15.yaml", "ratings.bookinfo.svc.cluster.local", ROOT, "bookinfo",
         "service-namespace", "DISABLE"),
        ("mtls_enabled_checker_15.yaml", "api.shop.svc.cluster.local", "shop", "shop",
         "root-namespace", "ISTIO_MUTUAL"),
        # _21: host DRs for ratings (ISTIO_MUTUAL) and details (DISABLE) beat the namespace MUTUAL wildcard
        ("mtls_enabled_checker_21.yaml", "ratings.bookinfo.svc.cluster.local", "bookinfo", "bookinfo",
         "client-namespace", "ISTIO_MUTUAL"),
        ("mtls_enabled_checker_21.yaml", "details.bookinfo.svc.cluster.local", "bookinfo", "bookinfo",
         "client-namespace", "DISABLE"),
        ("mtls_enabled_checker_21.yaml", "reviews.bookinfo.svc.cluster.local", "bookinfo", "bookinfo",
         "client-namespace", "MUTUAL"),
    ],
)
def test_kiali_fixture_selection(fixture: str, fqdn: str, client: str, service_ns: str, step: str, mode: str) -> None:
    rules = rules_of(corpus_path(KIALI_AUTHZ + fixture))
    selected = select(rules, fqdn, client, service_ns, ROOT)
    assert selected is not None and selected.step == step
    assert [m for m, _ in tls_modes(selected, 9080)] == [mode]
