"""Effective PeerAuthentication: one table row per rule of ISTIO-RULES §2, plus the Kiali fixtures.

Expected outcomes are written from istiod's documented behaviour (ComposePeerAuthentication and the
candidate selection in pilot/pkg/model/authentication.go), not from our implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import corpus_path

from kubectl_mtls.istio import peerauthn
from kubectl_mtls.istio.peerauthn import STRENGTH, PolicyRef, duplicates, effective, scope_of

ROOT = "istio-system"
T0 = "2024-01-01T00:00:00Z"
T1 = "2024-01-02T00:00:00Z"
T2 = "2024-01-03T00:00:00Z"
APP = {"app": "reviews", "version": "v1"}


def pa(
    name: str,
    ns: str,
    mode: str | None = None,
    *,
    selector: dict[str, str] | None = None,
    ports: dict[str, str | None] | None = None,
    created: str | None = T0,
    mtls: bool = True,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if created is not None:
        meta["creationTimestamp"] = created
    spec: dict[str, Any] = {}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if mtls:
        spec["mtls"] = {"mode": mode} if mode is not None else {}
    if ports is not None:
        spec["portLevelMtls"] = {port: ({"mode": m} if m is not None else {}) for port, m in ports.items()}
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": meta, "spec": spec}


def names(refs: list[PolicyRef]) -> list[str]:
    return [f"{r.namespace}/{r.name}" for r in refs]


def decider(eff: peerauthn.Effective) -> str | None:
    return None if eff.decided_by is None else f"{eff.decided_by.namespace}/{eff.decided_by.name}"


# (id, policies, pod namespace, pod labels, expected mode, expected decided_by, expected applied)
INHERITANCE = [
    ("no-policy-permissive-default", [], "prod", APP, "PERMISSIVE", None, []),
    ("mesh-strict", [pa("default", ROOT, "STRICT")], "prod", APP, "STRICT", "istio-system/default",
     ["istio-system/default"]),
    # The seed's case: a namespace PERMISSIVE policy overrides mesh-wide STRICT.
    ("seed-namespace-permissive-overrides-mesh-strict",
     [pa("default", ROOT, "STRICT"), pa("default", "prod", "PERMISSIVE")], "prod", APP,
     "PERMISSIVE", "prod/default", ["istio-system/default", "prod/default"]),
    ("namespace-disable-overrides-mesh-strict",
     [pa("default", ROOT, "STRICT"), pa("default", "prod", "DISABLE")], "prod", APP,
     "DISABLE", "prod/default", ["istio-system/default", "prod/default"]),
    ("other-namespace-policy-has-no-effect",
     [pa("default", ROOT, "STRICT"), pa("default", "other", "DISABLE")], "prod", APP,
     "STRICT", "istio-system/default", ["istio-system/default"]),
    ("mesh-unset-is-permissive", [pa("default", ROOT, "UNSET")], "prod", APP, "PERMISSIVE", None,
     ["istio-system/default"]),
    ("mesh-without-mtls-is-permissive", [pa("default", ROOT, mtls=False)], "prod", APP, "PERMISSIVE", None,
     ["istio-system/default"]),
    ("namespace-unset-inherits-mesh",
     [pa("default", ROOT, "STRICT"), pa("ns", "prod", "UNSET")], "prod", APP, "STRICT", "istio-system/default",
     ["istio-system/default", "prod/ns"]),
    ("namespace-without-mode-inherits-mesh",
     [pa("default", ROOT, "DISABLE"), pa("ns", "prod")], "prod", APP, "DISABLE", "istio-system/default",
     ["istio-system/default", "prod/ns"]),
    ("workload-unset-inherits-namespace",
     [pa("default", ROOT, "DISABLE"), pa("ns", "prod", "STRICT"),
      pa("wl", "prod", "UNSET", selector={"app": "reviews"})],
     "prod", APP, "STRICT", "prod/ns", ["istio-system/default", "prod/ns", "prod/wl"]),
    ("workload-unset-everything-unset-is-permissive",
     [pa("default", ROOT, "UNSET"), pa("ns", "prod", "UNSET"), pa("wl", "prod", "UNSET", selector={"app": "reviews"})],
     "prod", APP, "PERMISSIVE", None, ["istio-system/default", "prod/ns", "prod/wl"]),
    ("workload-overrides-namespace",
     [pa("ns", "prod", "STRICT"), pa("wl", "prod", "DISABLE", selector={"app": "reviews"})], "prod", APP,
     "DISABLE", "prod/wl", ["prod/ns", "prod/wl"]),
    ("workload-selector-must-be-subset-of-labels",
     [pa("ns", "prod", "STRICT"), pa("wl", "prod", "DISABLE", selector={"app": "reviews", "version": "v2"})],
     "prod", APP, "STRICT", "prod/ns", ["prod/ns"]),
    ("workload-selector-needs-the-key-not-just-an-empty-value",
     [pa("ns", "prod", "STRICT"), pa("wl", "prod", "DISABLE", selector={"team": ""})], "prod", APP,
     "STRICT", "prod/ns", ["prod/ns"]),
    ("workload-policy-only-in-its-namespace",
     [pa("ns", "prod", "STRICT"), pa("wl", "other", "DISABLE", selector={"app": "reviews"})], "prod", APP,
     "STRICT", "prod/ns", ["prod/ns"]),
    ("empty-matchlabels-in-root-is-mesh", [pa("mesh", ROOT, "STRICT", selector={})], "prod", APP, "STRICT",
     "istio-system/mesh", ["istio-system/mesh"]),
    ("empty-matchlabels-elsewhere-is-namespace",
     [pa("default", ROOT, "STRICT"), pa("ns", "prod", "DISABLE", selector={})], "prod", APP, "DISABLE", "prod/ns",
     ["istio-system/default", "prod/ns"]),
    ("root-namespace-selector-is-ignored",
     [pa("default", ROOT, "STRICT"), pa("wl", ROOT, "DISABLE", selector={"app": "reviews"})], "prod", APP,
     "STRICT", "istio-system/default", ["istio-system/default"]),
    ("pod-in-root-namespace-gets-mesh-not-selector",
     [pa("default", ROOT, "PERMISSIVE"), pa("wl", ROOT, "STRICT", selector={"app": "reviews"})], ROOT, APP,
     "PERMISSIVE", "istio-system/default", ["istio-system/default"]),
    ("other-kinds-are-skipped",
     [pa("default", ROOT, "STRICT"), {**pa("x", "prod", "DISABLE"), "kind": "RequestAuthentication"}], "prod", APP,
     "STRICT", "istio-system/default", ["istio-system/default"]),
]


@pytest.mark.parametrize(("policies", "ns", "labels", "mode", "decided", "applied"),
                         [row[1:] for row in INHERITANCE], ids=[row[0] for row in INHERITANCE])
def test_mode_inheritance(policies: list[dict[str, Any]], ns: str, labels: dict[str, str], mode: str,
                          decided: str | None, applied: list[str]) -> None:
    eff = effective(ns, labels, policies, ROOT)
    assert eff.mode == mode
    assert decider(eff) == decided
    assert names(eff.applied) == applied
    assert [r.scope for r in eff.applied] == [s for s in ("mesh", "namespace", "workload")
                                              if any(r.scope == s for r in eff.applied)]
    assert eff.mode_for(None) == mode


def test_policy_ref_records_own_mode_not_effective_mode() -> None:
    eff = effective("prod", APP, [pa("default", ROOT, "STRICT"), pa("ns", "prod", "UNSET")], ROOT)
    assert eff.applied == [PolicyRef(ROOT, "default", "mesh", "STRICT"), PolicyRef("prod", "ns", "namespace", None)]


def test_default_root_namespace_is_istio_system() -> None:
    assert effective("prod", {}, [pa("default", "istio-system", "STRICT")]).mode == "STRICT"
    assert effective("prod", {}, [pa("default", "istio-config", "STRICT")], "istio-config").mode == "STRICT"
    # With another root, istio-system is an ordinary namespace: its policy does not reach "prod".
    assert effective("prod", {}, [pa("default", "istio-system", "STRICT")], "istio-config").mode == "PERMISSIVE"


# --- port level -------------------------------------------------------------------------------


def test_port_level_exception_on_strict_workload_policy() -> None:
    wl = pa("wl", "prod", "STRICT", selector={"app": "reviews"}, ports={"8080": "PERMISSIVE", "9090": "DISABLE"})
    eff = effective("prod", APP, [pa("default", ROOT, "PERMISSIVE"), wl], ROOT)
    assert eff.mode == "STRICT"
    assert eff.ports == {8080: "PERMISSIVE", 9090: "DISABLE"}
    assert eff.mode_for(8080) == "PERMISSIVE"
    assert eff.mode_for(9090) == "DISABLE"
    assert eff.mode_for(9080) == "STRICT"
    assert {p: r.name for p, r in eff.port_decided_by.items()} == {8080: "wl", 9090: "wl"}
    assert eff.ignored == []


def test_port_unset_inherits_workload_mode() -> None:
    wl = pa("wl", "prod", "STRICT", selector={"app": "reviews"}, ports={"8080": None, "8081": "UNSET"})
    eff = effective("prod", APP, [pa("ns", "prod", "DISABLE"), wl], ROOT)
    assert eff.ports == {}
    assert eff.mode_for(8080) == "STRICT"
    assert eff.mode_for(8081) == "STRICT"


def test_port_level_on_unset_workload_policy_keeps_inherited_mode_elsewhere() -> None:
    wl = pa("wl", "prod", "UNSET", selector={"app": "reviews"}, ports={"8080": "DISABLE"})
    eff = effective("prod", APP, [pa("ns", "prod", "STRICT"), wl], ROOT)
    assert (eff.mode, decider(eff)) == ("STRICT", "prod/ns")
    assert eff.mode_for(8080) == "DISABLE"
    assert eff.port_decided_by[8080].name == "wl"


def test_port_level_on_namespace_or_mesh_policy_is_ignored_with_reason() -> None:
    mesh = pa("default", ROOT, "STRICT", ports={"8080": "DISABLE"})
    ns = pa("ns", "prod", "PERMISSIVE", ports={"9090": "DISABLE"})
    eff = effective("prod", APP, [mesh, ns], ROOT)
    assert eff.mode == "PERMISSIVE"
    assert eff.ports == {}
    assert eff.mode_for(8080) == eff.mode_for(9090) == "PERMISSIVE"
    reasons = {f"{r.namespace}/{r.name}": why for r, why in eff.ignored}
    assert set(reasons) == {"istio-system/default", "prod/ns"}
    assert all("portLevelMtls" in why for why in reasons.values())


def test_port_level_only_from_the_chosen_workload_policy() -> None:
    older = pa("older", "prod", "STRICT", selector={"app": "reviews"}, created=T0)
    newer = pa("newer", "prod", "STRICT", selector={"version": "v1"}, ports={"8080": "DISABLE"}, created=T1)
    eff = effective("prod", APP, [newer, older], ROOT)
    assert decider(eff) == "prod/older"
    assert eff.ports == {}
    assert [(r.name, "older" in why) for r, why in eff.ignored] == [("newer", True)]


# --- several policies in one scope -------------------------------------------------------------


def test_oldest_mesh_policy_wins_whatever_the_list_order() -> None:
    old = pa("zzz-old", ROOT, "STRICT", created=T0)
    new = pa("aaa-new", ROOT, "DISABLE", created=T1)
    for order in ([old, new], [new, old]):
        eff = effective("prod", {}, order, ROOT)
        assert (eff.mode, decider(eff)) == ("STRICT", "istio-system/zzz-old")
        [(ref, why)] = eff.ignored
        assert ref == PolicyRef(ROOT, "aaa-new", "mesh", "DISABLE")
        assert "older" in why and "istio-system/zzz-old" in why


def test_identical_timestamps_resolved_by_name() -> None:
    b = pa("b-policy", "prod", "DISABLE", created=T1)
    a = pa("a-policy", "prod", "STRICT", created=T1)
    eff = effective("prod", {}, [b, a], ROOT)
    assert (eff.mode, decider(eff)) == ("STRICT", "prod/a-policy")
    [(ref, why)] = eff.ignored
    assert ref.name == "b-policy"
    assert "same creationTimestamp" in why and "by name" in why


def test_missing_creation_timestamp_counts_as_oldest() -> None:
    dated, undated = pa("dated", "prod", "STRICT", created=T0), pa("undated", "prod", "DISABLE", created=None)
    eff = effective("prod", {}, [dated, undated])
    assert decider(eff) == "prod/undated"


def test_oldest_workload_policy_wins_and_ties_go_by_name() -> None:
    first = pa("first", "prod", "DISABLE", selector={"app": "reviews"}, created=T2)
    second = pa("second", "prod", "STRICT", selector={"version": "v1"}, created=T2)
    third = pa("third", "prod", "PERMISSIVE", selector={"app": "reviews"}, created=T0)
    assert decider(effective("prod", APP, [second, first], ROOT)) == "prod/first"
    eff = effective("prod", APP, [second, first, third], ROOT)
    assert decider(eff) == "prod/third"
    assert sorted(r.name for r, _ in eff.ignored) == ["first", "second"]


def test_root_selector_policy_reported_only_when_it_matches_the_pod() -> None:
    stray = pa("stray", ROOT, "STRICT", selector={"app": "reviews"})
    eff = effective("prod", APP, [stray], ROOT)
    assert eff.mode == "PERMISSIVE" and eff.applied == []
    [(ref, why)] = eff.ignored
    assert ref.name == "stray" and "root namespace" in why
    assert effective("prod", {"app": "ratings"}, [stray], ROOT).ignored == []


# --- helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "scope"),
    [
        (pa("p", ROOT, "STRICT"), "mesh"),
        (pa("p", ROOT, "STRICT", selector={}), "mesh"),
        (pa("p", ROOT, "STRICT", selector={"app": "a"}), None),
        (pa("p", "prod", "STRICT"), "namespace"),
        (pa("p", "prod", "STRICT", selector={}), "namespace"),
        (pa("p", "prod", "STRICT", selector={"app": "a"}), "workload"),
        ({"kind": "PeerAuthentication", "metadata": {"name": "p"}, "spec": None}, "namespace"),
    ],
    ids=["root", "root-empty-labels", "root-selector", "ns", "ns-empty-labels", "ns-selector", "no-namespace"],
)
def test_scope_of(policy: dict[str, Any], scope: str | None) -> None:
    assert scope_of(policy, ROOT) == scope


def test_strength_orders_modes() -> None:
    assert STRENGTH["DISABLE"] < STRENGTH["PERMISSIVE"] < STRENGTH["STRICT"]
    assert set(STRENGTH) == {"DISABLE", "PERMISSIVE", "STRICT"}


def test_duplicates_lists_winner_first() -> None:
    policies = [
        pa("m-new", ROOT, "DISABLE", created=T1),
        pa("m-old", ROOT, "STRICT", created=T0),
        pa("b", "prod", "STRICT", created=T0),
        pa("a", "prod", "STRICT", created=T0),
        pa("only", "dev", "STRICT"),
        pa("wl1", "prod", "STRICT", selector={"app": "x"}),
        pa("wl2", "prod", "STRICT", selector={"app": "x"}),
        pa("sel", ROOT, "STRICT", selector={"app": "x"}),
    ]
    got = [(key, [p["metadata"]["name"] for p in group]) for key, group in duplicates(policies, ROOT)]
    assert got == [("mesh", ["m-old", "m-new"]), ("namespace:prod", ["a", "b"])]
    assert duplicates([pa("one", ROOT, "STRICT")], ROOT) == []


# --- external fixtures (Kiali); they agree with Istio on these points --------------------------

KIALI = "kiali/tests/data/validations/"


def load(relative: str) -> list[dict[str, Any]]:
    text = corpus_path(relative).read_text()
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]


def pas(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == "PeerAuthentication"]


@pytest.mark.parametrize(
    ("fixture", "labels", "mode", "decided"),
    [
        # mesh and namespace PERMISSIVE, workload policies STRICT for details and ratings
        ("authorization/mtls_enabled_checker_18.yaml", {"app": "ratings"}, "STRICT", "bookinfo/ratings-policy"),
        ("authorization/mtls_enabled_checker_18.yaml", {"app": "productpage"}, "PERMISSIVE", "bookinfo/default-policy"),
        # namespace STRICT, workload policies DISABLE
        ("authorization/mtls_enabled_checker_19.yaml", {"app": "ratings"}, "DISABLE", "bookinfo/ratings-policy"),
        ("authorization/mtls_enabled_checker_19.yaml", {"app": "reviews"}, "STRICT", "bookinfo/default-policy"),
        # namespace STRICT; ratings PERMISSIVE, details DISABLE
        ("authorization/mtls_enabled_checker_21.yaml", {"app": "ratings"}, "PERMISSIVE", "bookinfo/ratings-policy"),
        ("authorization/mtls_enabled_checker_21.yaml", {"app": "details"}, "DISABLE", "bookinfo/details-policy"),
        ("authorization/mtls_enabled_checker_9.yaml", {"app": "ratings"}, "DISABLE", "istio-system/default"),
        ("authorization/mtls_enabled_checker_7.yaml", {"app": "ratings"}, "DISABLE", "bookinfo/default"),
    ],
)
def test_kiali_fixtures(fixture: str, labels: dict[str, str], mode: str, decided: str) -> None:
    policies = pas(load(KIALI + fixture))
    eff = effective("bookinfo", labels, policies, ROOT)
    assert eff.mode == mode
    assert decider(eff) == decided


def test_kiali_root_namespace_selector_with_port_level_is_ignored() -> None:
    # disabled_meshwide_checker_1: a grafana PA with selector and portLevelMtls sits in istio-system,
    # where Istio ignores selector policies; only the mesh-wide DISABLE applies.
    policies = pas(load(KIALI + "peerauthentications/disabled_meshwide_checker_1.yaml"))
    for ns in (ROOT, "monitoring"):
        eff = effective(ns, {"app": "grafana"}, policies, ROOT)
        assert (eff.mode, decider(eff), eff.ports) == ("DISABLE", "istio-system/disable-mesh-mtls", {})
        assert [r.name for r, _ in eff.ignored] == ["grafana-ports-mtls-disabled"]


def test_every_kiali_peer_authentication_evaluates() -> None:
    files = sorted(Path(corpus_path("kiali")).rglob("*.yaml"))
    seen = 0
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        policies = pas(docs)
        for policy in policies:
            seen += 1
            ns = policy["metadata"].get("namespace", "default")
            labels = ((policy.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            eff = effective(ns, labels, policies, ROOT)
            assert eff.mode in STRENGTH
            assert all(m in STRENGTH for m in eff.ports.values())
            duplicates(policies, ROOT)
    assert seen > 20
