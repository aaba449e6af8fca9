"""Callers without a mesh identity: the kube-apiserver calling webhooks and aggregated APIs under STRICT."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..normalize import apiserver_callers as callers
from ..normalize import pod as podinfo
from .base import Finding, check, finding
from .context import Context, key_of, meta, target_port

AREA = "policy"
SLUG = "apiserver-caller-strict"
KINDS = {
    "validatingwebhookconfigurations": "ValidatingWebhookConfiguration",
    "mutatingwebhookconfigurations": "MutatingWebhookConfiguration",
    "apiservices": "APIService",
    "customresourcedefinitions": "CustomResourceDefinition",
}
EXCLUDE = "traffic.sidecar.istio.io/excludeInboundPorts"
INCLUDE = "traffic.sidecar.istio.io/includeInboundPorts"


def _calls(ctx: Context) -> Iterator[callers.ServiceCall]:
    for plural, kind in KINDS.items():
        for obj in ctx.objects(plural):
            if plural == "apiservices":
                yield from callers.apiservice_calls(obj)
            elif plural == "customresourcedefinitions":
                yield from callers.conversion_calls(obj)
            else:
                yield from callers.webhook_calls(kind, obj)


def _ports(value: Any) -> set[str]:
    return {p.strip() for p in str(value or "").split(",") if p.strip()}


def intercepted(pod: dict[str, Any], port: int) -> bool:
    """Does the sidecar capture inbound traffic to this port? (Istio's annotations; default: every port.)"""
    annotations = meta(pod).get("annotations") or {}
    if str(port) in _ports(annotations.get(EXCLUDE)):
        return False
    include = _ports(annotations.get(INCLUDE)) if INCLUDE in annotations else {"*"}
    return "*" in include or str(port) in include


def _fix(ctx: Context, call: callers.ServiceCall, pod: dict[str, Any], port: int, selector: dict[str, str]) -> str:
    """A port-level PERMISSIVE exception on the workload policy that decides, else a new one for the pods."""
    eff = ctx.effective(pod)
    decided = eff.port_decided_by.get(port) or eff.decided_by
    patch = json.dumps({"spec": {"portLevelMtls": {str(port): {"mode": "PERMISSIVE"}}}}, separators=(",", ":"))
    if decided is not None and decided.scope == "workload":
        return f"kubectl patch peerauthentication {decided.name} -n {decided.namespace} --type merge -p '{patch}'"
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": f"{call.service}-apiserver", "namespace": call.namespace},
        "spec": {"selector": {"matchLabels": selector}, "portLevelMtls": {str(port): {"mode": "PERMISSIVE"}}},
    }
    return f"echo '{json.dumps(policy, separators=(',', ':'))}' | kubectl apply -f -"


@check(
    SLUG,
    area=AREA,
    severity="error",
    title="webhooks and aggregated APIs the kube-apiserver calls are not behind STRICT",
    reads=("pods", "services", "peerauthentications", *KINDS),
    explain="""
What it looks at: every ValidatingWebhookConfiguration and MutatingWebhookConfiguration webhook,
APIService and CRD conversion webhook served through a Service (`clientConfig.service`,
`spec.service`, `spec.conversion.webhook.clientConfig.service`; port 443 when unset), the pods that
Service selects, the target port the Service port maps to on each pod, and the effective
PeerAuthentication mode on that port (pods whose sidecar does not capture the port,
`traffic.sidecar.istio.io/excludeInboundPorts`, are fine).

Why it breaks mTLS: the kube-apiserver runs outside the mesh and has no Istio certificate. On a
STRICT port the sidecar (or ztunnel) rejects its connection: admission requests fail with `failed
calling webhook ... connection reset by peer` or `EOF`, aggregated APIs become unavailable and custom
resources cannot be converted. PERMISSIVE ports are fine.

How to fix: a workload PeerAuthentication with `portLevelMtls` PERMISSIVE (or DISABLE) on the
webhook's target port (the hint patches the workload policy in force, or creates one selecting the
Service's pods), or exclude the port from interception with the pod annotation
`traffic.sidecar.istio.io/excludeInboundPorts: "<port>"`.
""",
)
def apiserver_caller_strict(ctx: Context) -> Iterator[Finding]:
    services = {key_of(s): s for s in ctx.objects("services")}
    for call in _calls(ctx):
        service = services.get((call.namespace, call.service))
        if service is None:
            continue  # a missing Service is the webhook's own failure, not an mTLS one
        spec = service.get("spec") or {}
        port_spec = next((p for p in spec.get("ports") or [] if p.get("port") == call.port), None)
        selector = spec.get("selector") or {}
        if port_spec is None or not selector:
            continue
        strict: list[tuple[dict[str, Any], int]] = []
        for pod in ctx.pods_of(service):
            kind = podinfo.sidecar_kind(pod)
            if kind == "absent" or not ctx.running(pod):
                continue
            port = target_port(port_spec, pod)
            if port is None or (kind != "ambient" and not intercepted(pod, port)):
                continue
            if ctx.effective(pod).mode_for(port) == "STRICT":
                strict.append((pod, port))
        if not strict:
            continue
        pod, port = strict[0]
        eff = ctx.effective(pod)
        decided = eff.port_decided_by.get(port) or eff.decided_by
        yield finding(
            SLUG,
            "error",
            call.kind,
            "",
            call.name,
            f"the kube-apiserver calls {call.caller} at Service {call.namespace}/{call.service}:{call.port}, whose "
            f"pods are STRICT on target port {port}: the apiserver has no mesh certificate, so the call fails "
            "(failed calling webhook ... connection reset by peer)",
            _fix(ctx, call, pod, port, {str(k): str(v) for k, v in selector.items()}),
            pods=[f"{key_of(p)[0]}/{key_of(p)[1]}" for p, _ in strict],
            service=f"{call.namespace}/{call.service}",
            service_port=call.port,
            target_port=port,
            caller=call.caller,
            policy=str(decided) if decided else None,
            alternative=f'annotate the pods {EXCLUDE}: "{port}" (the port is then not intercepted)',
        )
