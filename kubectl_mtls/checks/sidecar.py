"""Sidecar and sync: is there an Envoy to do mTLS, and does it have istiod's current config?"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..fixes import enable_injection, inject_sidecar, restart_pod, then
from ..normalize import pod as podinfo
from .base import Finding, check, finding
from .context import Context, key_of, labels_of, meta

AREA = "sidecar and sync"


def _injection_enabled(ns: dict[str, Any] | None) -> bool:
    """As Istio's webhooks select: istio-injection=enabled, or istio.io/rev without istio-injection."""
    return enable_injection("", labels_of(ns or {})) is None


def _ambient_namespace(ns: dict[str, Any] | None) -> bool:
    return labels_of(ns or {}).get("istio.io/dataplane-mode") == "ambient"


def _strict_applies(
    ctx: Context, pod: dict[str, Any], strict_peer: dict[int, dict[str, Any] | None]
) -> tuple[bool, str]:
    """Does STRICT reach this pod, through its own policies or through a Service it shares?

    `strict_peer` remembers, per Service, its first STRICT sidecar pod, so that many pods behind one
    big Service do not each walk all of it."""
    eff = ctx.effective(pod)
    if eff.mode == "STRICT":
        by = eff.decided_by
        return True, f"PeerAuthentication {by.namespace}/{by.name} ({by.scope}) is STRICT" if by else "STRICT"
    for svc in ctx.services_of(pod):
        if id(svc) not in strict_peer:
            strict_peer[id(svc)] = next(
                (p for p in ctx.pods_of(svc) if podinfo.has_envoy(p) and ctx.effective(p).mode == "STRICT"), None
            )
        peer = strict_peer[id(svc)]
        if peer is not None:
            return True, f"Service {key_of(svc)[1]} also selects STRICT pod {key_of(peer)[1]}"
    return False, ""


def _restart(pod: dict[str, Any]) -> str:
    return restart_pod(pod, *key_of(pod))


def _inject(ctx: Context, pod: dict[str, Any]) -> str:
    ns, name = key_of(pod)
    namespace = ctx.namespaces.get(ns)
    return inject_sidecar(pod, ns, name, labels_of(namespace) if namespace is not None else None)


def _opted_out(pod: dict[str, Any]) -> str | None:
    value = (meta(pod).get("annotations") or {}).get("sidecar.istio.io/inject") or labels_of(pod).get(
        "sidecar.istio.io/inject"
    )
    return "sidecar.istio.io/inject=false" if str(value).lower() == "false" else None


def _candidates(ctx: Context) -> list[dict[str, Any]]:
    """Running target pods that injection applies to (found once for sidecar-missing and injection-disabled)."""

    def find() -> list[dict[str, Any]]:
        found = []
        for pod in ctx.targets:
            ns = key_of(pod)[0]
            spec = pod.get("spec") or {}
            if ctx.exempt(ns) or not ctx.running(pod) or spec.get("hostNetwork"):
                continue
            if podinfo.is_gateway(pod):  # a gateway runs its own proxy: injection rules do not apply
                continue
            found.append(pod)
        return found

    return ctx.derived("injection-candidates", find)


@check(
    "sidecar-missing",
    area=AREA,
    severity="error",
    title="every pod that STRICT mTLS applies to has an istio-proxy sidecar",
    reads=("pods", "namespaces", "services", "peerauthentications"),
    explain="""
What it looks at: pods without an `istio-proxy` container (or native-sidecar init container with
`restartPolicy: Always`) in a namespace, or behind a Service, that STRICT PeerAuthentication applies
to. Pods in kube-system, kube-public, kube-node-lease and the Istio namespace are exempt (Istio never
injects there), and so are ambient pods (ztunnel does their mTLS).

Why it breaks mTLS: without a sidecar the pod neither presents an Istio certificate nor accepts mTLS.
Callers whose DestinationRule says ISTIO_MUTUAL fail with `503 UF ... WRONG_VERSION_NUMBER`; the pod
itself takes plaintext from anyone, so STRICT is not in force for it.

How to fix: enable injection for the namespace (`kubectl label namespace NS istio-injection=enabled`)
or remove the pod's `sidecar.istio.io/inject: "false"` opt-out, then restart the workload so the
webhook injects the sidecar (`kubectl rollout restart deployment/NAME -n NS`).
""",
)
def sidecar_missing(ctx: Context) -> Iterator[Finding]:
    strict_peer: dict[int, dict[str, Any] | None] = {}
    for pod in _candidates(ctx):
        ns, name = key_of(pod)
        kind = podinfo.sidecar_kind(pod)
        if kind != "absent" or _ambient_namespace(ctx.namespaces.get(ns)):
            continue
        strict, why = _strict_applies(ctx, pod, strict_peer)
        if not strict:
            continue
        opt_out = _opted_out(pod)
        hint = _inject(ctx, pod)  # the opt-out removed, or injection turned on, then the restart
        yield finding(
            "sidecar-missing",
            "error",
            "Pod",
            ns,
            name,
            f"no istio-proxy sidecar, but STRICT mTLS applies to it ({why})",
            hint,
            pods=[f"{ns}/{name}"],
            strict_because=why,
            opted_out=opt_out,
        )


@check(
    "injection-disabled",
    area=AREA,
    severity="warning",
    title="namespaces with mesh workloads have sidecar injection enabled",
    reads=("pods", "namespaces", "peerauthentications"),
    explain="""
What it looks at: namespaces in scope that hold sidecar pods or that STRICT applies to, but carry
neither `istio-injection=enabled` nor `istio.io/rev` (the revision's webhook skips namespaces that also
carry `istio-injection`, e.g. `=disabled`), and are not ambient.

Why it breaks mTLS: pods created there from now on (a rollout, a reschedule, a scale-up) start without
a sidecar, and under STRICT nobody in the mesh can reach them over mTLS.

How to fix: `kubectl label namespace NS istio-injection=enabled` (`--overwrite` over
`istio-injection=disabled`); in a revision-based install (`istio.io/rev` on the namespace) never set
`istio-injection`, which would override the revision: remove `istio-injection=disabled` instead
(`kubectl label namespace NS istio-injection-`). Then restart the workloads that lack a sidecar.
""",
)
def injection_disabled(ctx: Context) -> Iterator[Finding]:
    by_ns: dict[str, list[dict[str, Any]]] = {}
    for pod in _candidates(ctx):
        by_ns.setdefault(key_of(pod)[0], []).append(pod)
    for ns, pods in sorted(by_ns.items()):
        namespace = ctx.namespaces.get(ns)
        if namespace is None or _injection_enabled(namespace) or _ambient_namespace(namespace):
            continue
        meshed = [p for p in pods if podinfo.has_envoy(p)]
        strict = [p for p in pods if ctx.effective(p).mode == "STRICT"]
        if not meshed and not strict:
            continue
        label = labels_of(namespace).get("istio-injection")
        state = f"istio-injection={label}" if label else "no istio-injection or istio.io/rev label"
        yield finding(
            "injection-disabled",
            "warning",
            "Namespace",
            "",
            ns,
            f"{state}, yet {len(meshed)} pod(s) here have sidecars"
            + (" and STRICT applies" if strict else "")
            + ": new pods will start without one",
            enable_injection(ns, labels_of(namespace)),
            pods=[f"{ns}/{key_of(p)[1]}" for p in pods if not podinfo.has_envoy(p)],
            label=label,
        )


@check(
    "ambient-workload",
    area=AREA,
    severity="info",
    title="ambient pods are enforced by ztunnel (no sidecar to inspect)",
    reads=("pods", "namespaces"),
    explain="""
What it looks at: pods redirected to ztunnel (annotation `ambient.istio.io/redirection`).

Why it matters: ztunnel terminates and originates their mTLS (HBONE) with its own certificates, so
there is no Envoy config to compare; PeerAuthentication DISABLE is not supported there and
port-level settings become ztunnel policies.

How to inspect: `istioctl ztunnel-config workloads` and `istioctl ztunnel-config certificates`.
""",
)
def ambient_workload(ctx: Context) -> Iterator[Finding]:
    by_ns: dict[str, list[str]] = {}
    for pod in ctx.targets:
        if podinfo.sidecar_kind(pod) == "ambient":
            ns, name = key_of(pod)
            by_ns.setdefault(ns, []).append(f"{ns}/{name}")
    for ns, pods in sorted(by_ns.items()):
        yield finding(
            "ambient-workload",
            "info",
            "Namespace",
            "",
            ns,
            f"{len(pods)} ambient pod(s) in {ns}: mTLS is done by ztunnel",
            f"istioctl ztunnel-config certificates -n {ns}",
            pods=pods,
        )


@check(
    "proxy-not-synced",
    area=AREA,
    severity="warning",
    title="every sidecar is connected to istiod and has its latest config",
    reads=("pods", "proxy-status"),
    explain="""
What it looks at: `istioctl proxy-status` (JSON on istioctl 1.30+, per-type columns on 1.27+, the
plain table before) for each sidecar and gateway: STALE, ERROR, or not listed at all. `NOT SENT` is not
a sync problem: istiod had nothing of that type to send (a gateway without routes shows `RDS NOT SENT`),
as the istioctl documentation says.

Why it breaks mTLS: a stale proxy keeps old clusters, listeners and secrets — an old inbound mode, old
TLS settings, an old root after a rotation. ERROR means Envoy rejected (NACKed) istiod's config, so
the change you made never took effect on that pod. A sidecar missing from the list is not connected.

How to fix: look at istiod's log for `ACK ERROR <pod>` (the rejection reason), fix the offending
config, then restart the pod; for STALE, check istiod's health and the pod's connectivity to it.
""",
)
def proxy_not_synced(ctx: Context) -> Iterator[Finding]:
    for pod in ctx.targets:
        if not podinfo.has_envoy(pod) or not ctx.running(pod):
            continue
        ns, name = key_of(pod)
        status = ctx.proxy_status.get((ns, name))
        if status is None:
            yield finding(
                "proxy-not-synced",
                "warning",
                "Pod",
                ns,
                name,
                "sidecar not listed by istioctl proxy-status: it is not connected to istiod",
                f"kubectl logs {name} -n {ns} -c istio-proxy | grep -i xds",
                pods=[f"{ns}/{name}"],
            )
            continue
        state = status.state
        if state in ("SYNCED", "UNKNOWN", "NOT SENT"):  # NOT SENT: istiod had nothing of that type to send
            continue
        severity = "error" if state == "ERROR" else "warning"
        bad = {t: s for t, s in status.types.items() if s in ("STALE", "ERROR")}
        detail = ", ".join(f"{t} {s}" for t, s in sorted(bad.items()))
        reason = f": {status.error}" if getattr(status, "error", None) else ""
        hint = (
            f"kubectl logs -n {ctx.options.istio_namespace} -l app=istiod | grep 'ACK ERROR.*{name}'"
            if state == "ERROR"
            else _restart(pod)
        )
        yield finding(
            "proxy-not-synced",
            severity,
            "Pod",
            ns,
            name,
            f"sidecar is {state} ({detail}){reason}",
            hint,
            pods=[f"{ns}/{name}"],
            types=status.types,
            istiod=status.istiod,
        )


@check(
    "mixed-sidecar-service",
    area=AREA,
    severity="error",
    title="no Service selects pods both with and without sidecars",
    reads=("pods", "services", "peerauthentications"),
    explain="""
What it looks at: Services whose selector matches running pods in the mesh (a sidecar, or captured by
ztunnel in ambient mode) and pods outside it.

Why it breaks mTLS: the same service name leads to some endpoints that speak mTLS and some that do
not. Under STRICT the sidecar-less endpoints accept plaintext from anyone, and callers forcing
ISTIO_MUTUAL fail on them intermittently (one request in N gets 503): an error when STRICT applies,
otherwise a warning.

How to fix: inject the missing sidecars (enable injection, restart those workloads) or split the
workloads into separate Services.
""",
)
def mixed_sidecar_service(ctx: Context) -> Iterator[Finding]:
    namespaces = {key_of(p)[0] for p in ctx.targets}
    for svc in ctx.objects("services"):
        ns, name = key_of(svc)
        if ns not in namespaces or ctx.exempt(ns):
            continue
        pods = [p for p in ctx.pods_of(svc) if ctx.running(p)]
        # In the mesh: a sidecar, or captured by ztunnel (ambient pods speak HBONE, which is mTLS).
        with_sidecar = [p for p in pods if podinfo.has_envoy(p) or podinfo.sidecar_kind(p) == "ambient"]
        meshed = {id(p) for p in with_sidecar}
        without = [p for p in pods if id(p) not in meshed]
        if not with_sidecar or not without:
            continue
        strict = any(ctx.effective(p).mode == "STRICT" for p in with_sidecar)
        yield finding(
            "mixed-sidecar-service",
            "error" if strict else "warning",
            "Service",
            ns,
            name,
            f"selects {len(with_sidecar)} pod(s) with a sidecar and {len(without)} without"
            + (" while STRICT applies" if strict else ""),
            then(*dict.fromkeys(_inject(ctx, p) for p in without)),
            pods=[f"{ns}/{key_of(p)[1]}" for p in without],
            with_sidecar=[f"{ns}/{key_of(p)[1]}" for p in with_sidecar],
        )
