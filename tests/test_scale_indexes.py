"""The indexes behind policy resolution give exactly the answers of a plain scan.

PeerAuthentication, DestinationRule and AuthorizationPolicy resolution, Service selection and pod
selection are indexed by namespace and label so that `check -A` grows linearly with the mesh. Each
test here generates many small random meshes (seeded, so a failure reproduces) full of the cases
that make precedence subtle — equal creation times, equal names, missing timestamps, empty and
root-namespace selectors, wildcard and short hosts, exportTo, odd label values — and compares the
indexed answer with a reference that compares every object with every pod, written independently
from istiod's rules (the rules themselves are table-tested in tests/test_istio_*.py).
"""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from kubectl_mtls.checks.context import Context, Options, Scope, key_of, labels_of
from kubectl_mtls.istio import authz, destinationrule, peerauthn
from kubectl_mtls.istio.objects import created, name, namespace, spec
from kubectl_mtls.labelindex import LabeledIndex, SelectorIndex, subset_of
from kubectl_mtls.sources.snapshot import SnapshotSource

ROOT = "istio-system"
NAMESPACES = ["a", "b", "c", ROOT]
KEYS = ["app", "version", "tier"]
VALUES = ["x", "y", "z"]
TIMES = ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00+00:00", "not a time", None]
CASES = 300


def labels(rng: random.Random, odd: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {k: rng.choice(VALUES) for k in rng.sample(KEYS, rng.randint(0, 3))}
    if odd and rng.random() < 0.05:
        out[rng.choice(KEYS)] = rng.choice([1, None, True])  # hostile snapshots: never equal to a string
    return out


def metadata(rng: random.Random, prefix: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"{prefix}{rng.randint(0, 3)}", "namespace": rng.choice(NAMESPACES)}
    stamp = rng.choice(TIMES)
    if stamp is not None:
        meta["creationTimestamp"] = stamp
    return meta


# --- PeerAuthentication --------------------------------------------------------------------------


def random_pa(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {}
    shape = rng.random()
    if shape < 0.4:
        body["selector"] = {"matchLabels": labels(rng, odd=False)}
    elif shape < 0.45:
        body["selector"] = {}
    if rng.random() < 0.9:
        body["mtls"] = {"mode": rng.choice(["STRICT", "PERMISSIVE", "DISABLE", "UNSET", "bogus"])}
    if rng.random() < 0.3:
        body["portLevelMtls"] = {
            str(rng.choice([8080, 9090, 15021])): {"mode": rng.choice(["STRICT", "DISABLE", "UNSET"])}
            for _ in range(rng.randint(1, 2))
        }
    kind = rng.choice(["PeerAuthentication"] * 8 + [None, "DestinationRule"])
    obj: dict[str, Any] = {"metadata": metadata(rng, "pa"), "spec": body}
    if kind is not None:
        obj["kind"] = kind
    return obj


def reference_effective(ns: str, pod_labels: dict[str, Any], policies: list[Any], root: str) -> peerauthn.Effective:
    """istiod's composition written as a scan of every policy for the one pod."""

    def match_labels(policy: dict[str, Any]) -> dict[str, str]:
        selector = spec(policy).get("selector")
        raw = selector.get("matchLabels") if isinstance(selector, dict) else None
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def selects(selector: dict[str, str]) -> bool:
        return all(k in pod_labels and pod_labels[k] == v for k, v in selector.items())

    def ref(policy: dict[str, Any], scope: str) -> peerauthn.PolicyRef:
        mtls = spec(policy).get("mtls")
        mode = mtls.get("mode") if isinstance(mtls, dict) else None
        return peerauthn.PolicyRef(namespace(policy), name(policy), scope, mode if mode in peerauthn.STRENGTH else None)

    def age(policy: dict[str, Any]) -> tuple[datetime, str, str]:
        return created(policy), name(policy), namespace(policy)

    result = peerauthn.Effective()
    levels: dict[str, list[dict[str, Any]]] = {"mesh": [], "namespace": [], "workload": []}
    for policy in policies:
        if not isinstance(policy, dict) or policy.get("kind", "PeerAuthentication") != "PeerAuthentication":
            continue
        selector, in_root = match_labels(policy), namespace(policy) == root
        if not selector:
            if in_root:
                levels["mesh"].append(policy)
            elif namespace(policy) == ns:
                levels["namespace"].append(policy)
        elif in_root:
            if selects(selector):
                result.ignored.append((ref(policy, "workload"), "root"))
        elif namespace(policy) == ns and selects(selector):
            levels["workload"].append(policy)
    chosen = []
    for scope, group in levels.items():
        group = sorted(group, key=age)
        if group:
            chosen.append((group[0], ref(group[0], scope)))
            result.ignored += [(ref(loser, scope), "duplicate") for loser in group[1:]]
    for policy, chosen_ref in chosen:
        result.applied.append(chosen_ref)
        if chosen_ref.mode is not None:
            result.mode, result.decided_by = chosen_ref.mode, chosen_ref
        ports = spec(policy).get("portLevelMtls")
        if chosen_ref.scope != "workload":
            if isinstance(ports, dict) and ports:
                result.ignored.append((chosen_ref, "port level"))
            continue
        for port, setting in sorted((int(p), s) for p, s in (ports or {}).items()):
            mode = setting.get("mode") if isinstance(setting, dict) else None
            if mode in peerauthn.STRENGTH:
                result.ports[port], result.port_decided_by[port] = mode, chosen_ref
    return result


def _refs(eff: peerauthn.Effective) -> tuple[Any, ...]:
    # Reasons are prose; which policy is ignored, and in which order, is what must agree.
    return eff.mode, eff.ports, eff.applied, eff.decided_by, eff.port_decided_by, [r for r, _ in eff.ignored]


def test_peerauthn_index_equals_a_scan() -> None:
    rng = random.Random(10)
    for case in range(CASES):
        policies = [random_pa(rng) for _ in range(rng.randint(0, 25))]
        index = peerauthn.Index(policies, ROOT)
        for _ in range(8):
            ns, pod_labels = rng.choice(NAMESPACES), labels(rng)
            got = index.effective(ns, pod_labels)
            want = reference_effective(ns, pod_labels, policies, ROOT)
            assert _refs(got) == _refs(want), (case, ns, pod_labels)
            assert _refs(peerauthn.effective(ns, pod_labels, policies, ROOT)) == _refs(want)


# --- DestinationRule -----------------------------------------------------------------------------

HOSTS = [
    "web",
    "web.a",
    "web.a.svc.cluster.local",
    "web.b.svc.cluster.local",
    "api.a.svc.cluster.local",
    "*.a.svc.cluster.local",
    "*b.a.svc.cluster.local",
    "*.svc.cluster.local",
    "*.cluster.local",
    "*.local",
    "*",
    "*.example.com",
    "10.0.0.1",
]
SERVICE_HOSTS = [
    "web.a.svc.cluster.local",
    "web.b.svc.cluster.local",
    "api.a.svc.cluster.local",
    "web.c.svc.cluster.local",
    "*.example.com",
    "api.example.com",
    "10.0.0.1",
]


def random_dr(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"host": rng.choice(HOSTS)}
    if rng.random() < 0.5:
        body["exportTo"] = rng.sample([".", "*", "a", "b", "c", "~"], rng.randint(1, 2))
    if rng.random() < 0.2:
        body["workloadSelector"] = {"matchLabels": labels(rng, odd=False)}
    if rng.random() < 0.5:
        body["trafficPolicy"] = {"tls": {"mode": rng.choice(["DISABLE", "ISTIO_MUTUAL"])}}
    if rng.random() < 0.3:
        body["subsets"] = [{"name": rng.choice(["v1", "v2"])}]
    return {"kind": "DestinationRule", "metadata": metadata(rng, "dr"), "spec": body}


def reference_select(
    rules: list[dict[str, Any]],
    fqdn: str,
    client_ns: str,
    service_ns: str,
    root: str,
    client_labels: dict[str, str] | None,
    default_export: str,
) -> destinationrule.Selected | None:
    """The three lookup steps, each scanning every rule for the most specific host."""
    dr = destinationrule
    ordered = sorted((r for r in rules if dr._is_dr(r)), key=dr._order)
    hosts = {id(r): dr.expand_host(str(spec(r)["host"]), namespace(r)) for r in ordered}

    def lookup(pool: list[dict[str, Any]], step: str, exported: bool) -> tuple[bool, destinationrule.Selected | None]:
        matching = [hosts[id(r)] for r in pool if dr.host_matches(hosts[id(r)], fqdn) or hosts[id(r)] == fqdn]
        if not matching:
            return False, None
        best = fqdn if fqdn in matching else max(matching, key=len)
        entries = dr._consolidate([r for r in pool if hosts[id(r)] == best])
        if exported:
            entries = [e for e in entries if not e.export or "*" in e.export or client_ns in e.export]
            if not entries:
                return False, None
        chosen = dr._pick(entries, client_ns, client_labels)
        return True, (dr.Selected(list(chosen.members), step, best) if chosen else None)

    def in_ns(ns: str) -> list[dict[str, Any]]:
        return [r for r in ordered if namespace(r) == ns]

    if client_ns != root:
        found, selected = lookup([r for r in in_ns(client_ns) if dr._namespace_local(r)], dr.STEPS[0], False)
    else:
        pool = [r for r in in_ns(root) if dr._private_only(r, default_export)]
        found, selected = lookup(pool, dr.STEPS[0], False)
    if found:
        return selected
    for ns, step in ((service_ns, dr.STEPS[1]), (root, dr.STEPS[2])):
        pool = [r for r in in_ns(ns) if not dr._private_only(r, default_export)]
        found, selected = lookup(pool, step, True)
        if found:
            return selected
    return None


def _who(selected: destinationrule.Selected | None) -> tuple[Any, ...] | None:
    return None if selected is None else (selected.step, selected.host, tuple(id(r) for r in selected.rules))


def test_destinationrule_index_equals_a_scan() -> None:
    rng = random.Random(20)
    for case in range(CASES):
        rules = [random_dr(rng) for _ in range(rng.randint(0, 20))]
        default_export = rng.choice(["*", "."])
        index = destinationrule.Index(rules, ROOT, default_export=default_export)
        for _ in range(10):
            fqdn, client, service = rng.choice(SERVICE_HOSTS), rng.choice(NAMESPACES), rng.choice(NAMESPACES)
            client_labels = rng.choice([None, labels(rng, odd=False)])
            want = reference_select(rules, fqdn, client, service, ROOT, client_labels, default_export)
            assert _who(index.select(fqdn, client, service, client_labels)) == _who(want), (case, fqdn, client)


def test_answers_for_every_client_namespace_equal_a_scan() -> None:
    """What destinationrule-tls-conflict and tls-to-plaintext-server ask: one service, every client."""
    rng = random.Random(35)
    clients = [*NAMESPACES, "d", "e", "f"]
    for case in range(CASES):
        rules = [random_dr(rng) for _ in range(rng.randint(0, 20))]
        index = destinationrule.Index(rules, ROOT)
        for fqdn in SERVICE_HOSTS:
            service = rng.choice(NAMESPACES)
            answers = index.for_service(fqdn, service)
            for client in clients:
                want = reference_select(rules, fqdn, client, service, ROOT, None, "*")
                assert _who(answers.of(client)) == _who(want), (case, fqdn, client)
            visited = answers.distinct(clients)
            assert {_who(answers.of(c)) for c in visited} == {_who(answers.of(c)) for c in clients}


def test_namespaces_outside_the_noted_ones_get_one_answer() -> None:
    rng = random.Random(30)
    outsiders = ["d", "e", "f"]
    for _ in range(CASES):
        rules = [random_dr(rng) for _ in range(rng.randint(0, 20))]
        index = destinationrule.Index(rules, ROOT)
        for fqdn in SERVICE_HOSTS:
            service = rng.choice(NAMESPACES)
            noted = index.namespaces_of_note(fqdn) | {ROOT, service}
            answers = {
                _who(index.select(fqdn, client, service)) for client in [*NAMESPACES, *outsiders] if client not in noted
            }
            assert len(answers) <= 1, (fqdn, noted, answers)


# --- label indexes, AuthorizationPolicy scope, Services and pods in a Context ----------------------


def test_label_indexes_equal_a_scan() -> None:
    rng = random.Random(40)
    for _ in range(CASES):
        selectors = [(rng.choice(NAMESPACES), labels(rng, odd=False), i) for i in range(rng.randint(0, 20))]
        pods = [(rng.choice(NAMESPACES), labels(rng), i) for i in range(rng.randint(0, 20))]
        by_selector = SelectorIndex(selectors)
        by_labels = LabeledIndex(pods)
        for ns, pod_labels, _ in pods:
            clean = {k: v for k, v in pod_labels.items() if isinstance(v, str)}
            want = [i for s_ns, sel, i in selectors if s_ns == ns and all(clean.get(k) == v for k, v in sel.items())]
            assert by_selector.matching(ns, clean) == want
        for ns, selector, _ in selectors:
            if not selector:
                continue
            for scope in (ns, None):
                want = [
                    i
                    for p_ns, pod_labels, i in pods
                    if scope in (None, p_ns) and all(pod_labels.get(k) == v for k, v in selector.items())
                ]
                got = by_labels.select(scope, selector, lambda lbl, sel=selector: subset_of(sel, lbl))
                assert got == want


def random_authz(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"action": rng.choice(["ALLOW", "DENY"])}
    shape = rng.random()
    if shape < 0.5:
        body["selector"] = {"matchLabels": labels(rng, odd=False)}
    elif shape < 0.55:
        body["selector"] = {"matchLabels": None}
    elif shape < 0.6:
        body["targetRefs"] = [{"kind": "Gateway", "name": "gw"}]
    return {"kind": "AuthorizationPolicy", "metadata": metadata(rng, "ap"), "spec": body}


def reference_applies(policy: dict[str, Any], ns: str, pod_labels: dict[str, Any]) -> bool:
    body = spec(policy)
    if body.get("targetRef") or body.get("targetRefs") or namespace(policy) not in (ROOT, ns):
        return False
    selector = body.get("selector")
    match = selector.get("matchLabels") if isinstance(selector, dict) else None
    if not isinstance(match, dict):
        return True
    return all(str(k) in pod_labels and pod_labels[str(k)] == str(v) for k, v in match.items())


def random_pod(rng: random.Random, i: int) -> dict[str, Any]:
    # Snapshots refuse labels that are not strings (tested with the label indexes above instead).
    meta = {"name": f"pod{i}", "namespace": rng.choice(NAMESPACES), "labels": labels(rng, odd=False)}
    if rng.random() < 0.05:
        del meta["labels"]
    containers = [{"name": "app"}] + ([{"name": "istio-proxy"}] if rng.random() < 0.8 else [])
    return {"kind": "Pod", "metadata": meta, "spec": {"containers": containers}}


def random_service(rng: random.Random, i: int) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": [{"port": 80}]}
    if rng.random() < 0.9:
        body["selector"] = labels(rng, odd=False)
    return {"kind": "Service", "metadata": {"name": f"svc{i % 6}", "namespace": rng.choice(NAMESPACES)}, "spec": body}


def context_of(tmp: Path, objects: dict[str, list[dict[str, Any]]], scope: Scope) -> Context:
    (tmp / "kubernetes").mkdir(parents=True, exist_ok=True)
    for plural, items in objects.items():
        (tmp / "kubernetes" / f"{plural}.json").write_bytes(orjson.dumps({"items": items}))
    ctx = Context(SnapshotSource(str(tmp)), scope, datetime.now().astimezone(), Options())
    ctx.load(["services", "authorizationpolicies", "peerauthentications"])
    return ctx


@pytest.mark.parametrize("seed", range(6))
def test_context_lookups_equal_a_scan(tmp_path: Path, seed: int) -> None:
    rng = random.Random(50 + seed)
    pods = [random_pod(rng, i) for i in range(60)]
    services = [random_service(rng, i) for i in range(25)]
    policies = [random_authz(rng) for _ in range(25)]
    pas = [random_pa(rng) for _ in range(25)]
    scope = Scope(None, selector="app=x") if seed % 2 else Scope(None)
    objects = {"pods": pods, "services": services, "authorizationpolicies": policies, "peerauthentications": pas}
    ctx = context_of(tmp_path, objects, scope)

    def svc_selects(svc: dict[str, Any], pod: dict[str, Any]) -> bool:
        selector = svc["spec"].get("selector") or {}
        return (
            key_of(svc)[0] == key_of(pod)[0]
            and bool(selector)
            and all(labels_of(pod).get(k) == v for k, v in selector.items())
        )

    for pod in ctx.pods:
        assert ctx.services_of(pod) == [s for s in ctx.objects("services") if svc_selects(s, pod)]
        want = reference_effective(key_of(pod)[0], labels_of(pod), ctx.objects("peerauthentications"), ROOT)
        assert _refs(ctx.effective(pod)) == _refs(want)
    for svc in ctx.objects("services"):
        assert ctx.pods_of(svc) == [p for p in ctx.pods if svc_selects(svc, p)]
        assert ctx.service_by_host(f"{key_of(svc)[1]}.{key_of(svc)[0]}.svc.cluster.local") is next(
            s for s in ctx.objects("services") if key_of(s) == key_of(svc)
        )
    for policy in ctx.objects("authorizationpolicies"):
        scoped = authz.workload_scope(policy, ROOT)
        got = ctx.select_pods(*scoped) if scoped else []
        want = [p for p in ctx.pods if reference_applies(policy, key_of(p)[0], labels_of(p))]
        assert got == want, policy
        assert [authz.applies_to(policy, key_of(p)[0], labels_of(p), ROOT) for p in ctx.pods] == [
            p in want for p in ctx.pods
        ]
    assert [p for p in ctx.pods if ctx.is_target(p)] == ctx.targets


def test_assumed_policy_reaches_the_index(tmp_path: Path) -> None:
    """strict-ready reasons with a simulated mesh-wide STRICT policy: the index must be rebuilt."""
    pod = {"metadata": {"name": "p", "namespace": "a", "labels": {"app": "x"}}, "spec": {"containers": []}}
    ctx = context_of(tmp_path, {"pods": [pod]}, Scope(None))
    assert ctx.effective(pod).mode == "PERMISSIVE"
    ctx.assume(
        "peerauthentications",
        {
            "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": ROOT},
            "spec": {"mtls": {"mode": "STRICT"}},
        },
    )
    assert ctx.effective(pod).mode == "STRICT"
