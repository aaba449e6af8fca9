"""Policy: which PeerAuthentication mode each workload gets, by Istio's own precedence, and whether
the sidecar really enforces it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..istio import peerauthn
from ..normalize import pod as podinfo
from .base import Finding, check, finding
from .context import Context, key_of, meta

AREA = "policy"
ISTIO_PORTS = range(15000, 15100)  # the sidecar's own ports (15006, 15008, 15020, 15021, 15090, ...)


def _ref(ref: peerauthn.PolicyRef | None) -> str:
    if ref is None:
        return "Istio's default (no policy)"
    return f"{ref.scope} PeerAuthentication {ref.namespace}/{ref.name}"


def _pa_mode(policy: dict[str, Any]) -> str | None:
    mode = ((policy.get("spec") or {}).get("mtls") or {}).get("mode")
    return mode if mode in peerauthn.STRENGTH else None


def _scoped_namespaces(ctx: Context) -> set[str]:
    return {key_of(p)[0] for p in ctx.targets}


@check(
    "peerauthn-effective",
    area=AREA,
    severity="info",
    title="the effective mTLS mode of every workload, with the policies that produced it",
    reads=("pods", "peerauthentications"),
    explain="""
What it looks at: every PeerAuthentication, resolved exactly as istiod does: the workload policy
(selector matches the pod, outside the root namespace) over the namespace policy (no selector) over
the mesh policy (no selector, root namespace); the oldest wins among several at one level; a missing or
UNSET mode inherits; a selector in the root namespace is ignored; `portLevelMtls` counts only on the
chosen workload policy and is keyed by the container (target) port.

Why it matters: this is the mode the server sidecar is told to enforce; every other check compares
against it. Port-level exceptions on a STRICT workload policy are a deliberate pattern and are
listed here, not flagged.

How to change it: edit the policy named as deciding; `kubectl get peerauthentication -A` lists them.
""",
)
def peerauthn_effective(ctx: Context) -> Iterator[Finding]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for pod in ctx.targets:
        if not podinfo.has_envoy(pod) or ctx.exempt(key_of(pod)[0]) or podinfo.is_gateway(pod):
            continue
        eff = ctx.effective(pod)
        group = (key_of(pod)[0], eff.mode, tuple(sorted(eff.ports.items())), eff.decided_by)
        groups.setdefault(group, []).append(pod)
    for (ns, mode, ports, decided_by), pods in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1])):
        eff = ctx.effective(pods[0])
        exceptions = ", ".join(f"port {p} {m}" for p, m in ports)
        names = [f"{ns}/{key_of(p)[1]}" for p in pods]
        who = names[0] if len(names) == 1 else f"{len(names)} pods in {ns}"
        kind, obj_ns, obj_name = (
            ("PeerAuthentication", decided_by.namespace, decided_by.name) if decided_by else ("Namespace", "", ns)
        )
        yield finding(
            "peerauthn-effective",
            "info",
            kind,
            obj_ns,
            obj_name,
            f"{who}: {mode} by {_ref(decided_by)}" + (f"; exceptions: {exceptions}" if exceptions else ""),
            None,
            pods=names,
            mode=mode,
            ports={str(p): m for p, m in ports},
            applied=[f"{r.scope} {r.namespace}/{r.name}: {r.mode or 'UNSET'}" for r in eff.applied],
            ignored=[f"{r.namespace}/{r.name}: {why}" for r, why in eff.ignored],
        )


@check(
    "peerauthn-overridden",
    area=AREA,
    severity="warning",
    title="no namespace or workload policy weakens a stricter mesh or namespace policy",
    reads=("pods", "peerauthentications"),
    explain="""
What it looks at: a namespace-wide PeerAuthentication whose mode is weaker than the mesh-wide one
(mesh STRICT, namespace PERMISSIVE or DISABLE: the field guides' "WRONG" example), and a workload
policy whose top-level mode is weaker than what its namespace or the mesh says. Port-level exceptions
on a STRICT workload policy are deliberate and reported by peerauthn-effective instead.

Why it breaks mTLS: the more specific policy wins silently. The operator believes STRICT is on
mesh-wide while these workloads still accept plaintext; worse, clients infer the server's mode from
the namespace policy (auto mTLS), so a namespace DISABLE makes them send plaintext even where a
workload policy says STRICT.

How to fix: delete the weaker policy or set its mode to UNSET (inherit) or STRICT:
`kubectl delete peerauthentication NAME -n NS`, or `kubectl edit`.
""",
)
def peerauthn_overridden(ctx: Context) -> Iterator[Finding]:
    root = ctx.mesh.root_namespace
    policies = ctx.objects("peerauthentications")
    index = ctx.peer_authentications
    mesh_eff = index.effective(root, {})
    mesh_mode = next((r.mode for r in mesh_eff.applied if r.scope == "mesh" and r.mode), None)
    scoped = _scoped_namespaces(ctx) if ctx.scope.namespace is not None else None
    namespace_eff: dict[str, peerauthn.Effective] = {}
    applied_in: dict[str, dict[tuple[str, str], list[str]]] = {}  # ns -> policy -> pods it applies to
    for policy in policies:
        ns, name = key_of(policy)
        if scoped is not None and ns not in scoped:
            continue
        scope = peerauthn.scope_of(policy, root)
        mode = _pa_mode(policy)
        if mode is None or scope not in ("namespace", "workload"):
            continue
        if ns not in namespace_eff:
            namespace_eff[ns] = index.effective(ns, {})
        ns_eff = namespace_eff[ns]
        if scope == "namespace":
            if not any(r.name == name and r.namespace == ns for r in ns_eff.applied):
                continue  # a newer duplicate: peerauthn-conflict reports it
            base, base_by = mesh_mode, "the mesh-wide policy"
        else:
            base, base_by = ns_eff.mode, _ref(ns_eff.decided_by)
            if ns_eff.decided_by is None:
                base = None  # nothing stricter was asked for
        if base is None or peerauthn.STRENGTH[mode] >= peerauthn.STRENGTH[base]:
            continue
        if ns not in applied_in:
            applied_in[ns] = {}
            for pod in ctx.pods_by_namespace.get(ns, []):
                for ref in dict.fromkeys((r.namespace, r.name) for r in ctx.effective(pod).applied):
                    applied_in[ns].setdefault(ref, []).append(f"{ns}/{key_of(pod)[1]}")
        pods = applied_in[ns].get((ns, name), [])
        yield finding(
            "peerauthn-overridden",
            "warning",
            "PeerAuthentication",
            ns,
            name,
            f"this {scope}-level policy sets {mode}, weaker than {base} from {base_by}",
            f"kubectl delete peerauthentication {name} -n {ns}   # or set spec.mtls.mode to {base} or UNSET",
            pods=pods,
            mode=mode,
            overrides=base,
            overridden_by_scope=scope,
        )


@check(
    "peerauthn-conflict",
    area=AREA,
    severity="warning",
    title="PeerAuthentications are unambiguous and all take effect",
    reads=("pods", "peerauthentications"),
    explain="""
What it looks at: several mesh-level (root namespace, no selector) or several namespace-level policies
in one namespace (istiod keeps the oldest and ignores the rest, logging it only at debug level);
`portLevelMtls` on a policy without a selector (rejected); a selector in the root namespace (ignored:
only workload namespaces can select); a selector that matches no pod in its namespace.

Why it breaks mTLS: each is a policy someone wrote that does nothing, or not what they think. A newer
namespace policy meant to turn on STRICT is silently ignored while the older PERMISSIVE one stays.

How to fix: keep one policy per level and namespace (`kubectl delete peerauthentication ...`), move
port-level settings to a policy with a selector, fix selectors to match pod labels.
""",
)
def peerauthn_conflict(ctx: Context) -> Iterator[Finding]:
    root = ctx.mesh.root_namespace
    policies = ctx.objects("peerauthentications")
    scoped = _scoped_namespaces(ctx) if ctx.scope.namespace is not None else None
    for where, group in peerauthn.duplicates(policies, root):
        winner, *losers = group
        w_ns, w_name = key_of(winner)
        if scoped is not None and w_ns not in scoped and w_ns != root:
            continue
        for loser in losers:
            ns, name = key_of(loser)
            yield finding(
                "peerauthn-conflict",
                "warning",
                "PeerAuthentication",
                ns,
                name,
                f"ignored: another {where.split(':')[0]}-level policy, the older {w_ns}/{w_name} "
                f"({meta(winner).get('creationTimestamp')}), wins",
                f"kubectl delete peerauthentication {name} -n {ns}   # or merge it into {w_name}",
                winner=f"{w_ns}/{w_name}",
                ignored=f"{ns}/{name}",
            )
    for policy in policies:
        ns, name = key_of(policy)
        if scoped is not None and ns not in scoped and ns != root:
            continue
        spec = policy.get("spec") or {}
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        if spec.get("portLevelMtls") and not match:
            yield finding(
                "peerauthn-conflict",
                "warning",
                "PeerAuthentication",
                ns,
                name,
                "portLevelMtls without a selector: istiod rejects it "
                "(mesh/namespace peer authentication cannot have port level mTLS)",
                "add spec.selector.matchLabels for the workload, or drop portLevelMtls",
            )
        if match and ns == root:
            yield finding(
                "peerauthn-conflict",
                "warning",
                "PeerAuthentication",
                ns,
                name,
                "a selector in the root namespace: Istio ignores this policy",
                f"move it to the workload's namespace: kubectl get peerauthentication {name} -n {ns} -o yaml",
            )
        elif (
            match
            and ns in ctx.pods_by_namespace
            and (scoped is None or ns in scoped)
            and not ctx.select_pods(ns, match)
        ):
            yield finding(
                "peerauthn-conflict",
                "warning",
                "PeerAuthentication",
                ns,
                name,
                f"selects no pod in {ns} (matchLabels {match})",
                f"kubectl get pods -n {ns} --show-labels   # and fix spec.selector.matchLabels",
                selector=match,
            )


@check(
    "proxy-policy-drift",
    area=AREA,
    severity="warning",
    title="each sidecar enforces on every inbound port the mode its policies ask for",
    reads=("pods", "peerauthentications", "proxies", "inbound"),
    explain="""
What it looks at: the inbound filter chains of each sidecar (`virtualInbound`): STRICT means only TLS
chains that require a client certificate, PERMISSIVE adds plaintext chains, DISABLE is plaintext
only. It compares that, port by port, with the effective PeerAuthentication mode.

Why it breaks mTLS: the sidecar, not the YAML, decides. Laxer than the policy (a warning): plaintext
is still accepted — often a stale sidecar (see proxy-not-synced) or a policy istiod ignored. Stricter
(an error): the sidecar rejects plaintext callers the policy means to admit, e.g. health checkers or
workloads without sidecars.

How to fix: check `istioctl proxy-status` for the pod, then restart it to get current config; if it
persists, look for an ignored or conflicting PeerAuthentication (peerauthn-conflict).
""",
)
def proxy_policy_drift(ctx: Context) -> Iterator[Finding]:
    for pod in ctx.targets:
        proxy = ctx.proxy(pod)
        if proxy is None:
            continue
        ns, name = key_of(pod)
        eff = ctx.effective(pod)
        for entry in proxy.model["inbound"]:
            port = entry["port"]
            actual = entry["mode"]
            if port in ISTIO_PORTS or actual not in peerauthn.STRENGTH:
                continue
            expected = eff.mode_for(port)
            if actual == expected:
                continue
            laxer = peerauthn.STRENGTH[actual] < peerauthn.STRENGTH[expected]
            where = f"port {port}" if port is not None else "the catch-all chains"
            by = eff.port_decided_by.get(port, eff.decided_by) if port is not None else eff.decided_by
            yield finding(
                "proxy-policy-drift",
                "warning" if laxer else "error",
                "Pod",
                ns,
                name,
                f"the sidecar enforces {actual} on {where}, but policy says {expected} ({_ref(by)})",
                f"istioctl proxy-status {name}.{ns}; kubectl delete pod {name} -n {ns}   # restart for fresh config",
                pods=[f"{ns}/{name}"],
                port=port,
                enforced=actual,
                expected=expected,
                filter_chains=entry["filter_chains"],
            )
