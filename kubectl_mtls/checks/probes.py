"""Probes: health checks that STRICT would break."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..normalize import pod as podinfo
from .base import Finding, check, finding
from .context import Context, key_of, meta

AREA = "probes"
AGENT_PORT = 15020  # pilot-agent serves rewritten probes at /app-health/<container>/<kind>
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def _port(value: Any, container: dict[str, Any]) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value and isinstance(port.get("containerPort"), int):
            return int(port["containerPort"])
    return None


def _rewrite_enabled(ctx: Context, pod: dict[str, Any]) -> tuple[bool, str]:
    value = (meta(pod).get("annotations") or {}).get("sidecar.istio.io/rewriteAppHTTPProbers")
    if value is not None:
        return str(value).lower() != "false", f"annotation sidecar.istio.io/rewriteAppHTTPProbers={value}"
    return ctx.mesh.rewrite_probes, "mesh default (sidecarInjectorWebhook.rewriteAppHTTPProbe)"


@check(
    "probe-not-rewritten",
    area=AREA,
    severity="error",
    title="HTTP and gRPC probes on STRICT ports go through the sidecar agent",
    reads=("pods", "peerauthentications", "configmaps"),
    explain="""
What it looks at: `httpGet` and `grpc` liveness, readiness and startup probes of pods with a sidecar,
on ports that are STRICT, that still point at the application port instead of pilot-agent's
`:15020/app-health/...` (the injector rewrites them unless
`sidecar.istio.io/rewriteAppHTTPProbers: "false"` or the mesh default turns it off; the originals are
kept in the sidecar's `ISTIO_KUBE_APP_PROBERS`).

Why it breaks mTLS: the kubelet has no Istio certificate; its plaintext probe is rejected on a STRICT
port, the pod never gets Ready or is restarted in a loop. TCP probes are not affected.

How to fix: remove the `rewriteAppHTTPProbers: "false"` annotation (or enable the mesh default) and
restart the workload, or exclude the probe port with a port-level PERMISSIVE exception.
""",
)
def probe_not_rewritten(ctx: Context) -> Iterator[Finding]:
    for pod in ctx.targets:
        if not podinfo.has_envoy(pod):
            continue
        ns, name = key_of(pod)
        enabled, why = _rewrite_enabled(ctx, pod)
        eff = ctx.effective(pod)
        for container in (pod.get("spec") or {}).get("containers") or []:
            if container.get("name") == podinfo.PROXY_CONTAINER:
                continue
            for probe_kind in PROBES:
                probe = container.get(probe_kind) or {}
                handler = "httpGet" if "httpGet" in probe else "grpc" if "grpc" in probe else None
                if handler is None:
                    continue
                port = _port((probe[handler] or {}).get("port"), container)
                if port is None or port == AGENT_PORT or eff.mode_for(port) != "STRICT":
                    continue
                state = "rewriting is off" if not enabled else "it was not rewritten (created before injection?)"
                yield finding(
                    "probe-not-rewritten",
                    "error",
                    "Pod",
                    ns,
                    name,
                    f"{probe_kind} ({handler}) of container {container.get('name')} hits STRICT "
                    f"port {port} directly: {state}; the kubelet's plaintext probe will be rejected",
                    'remove sidecar.istio.io/rewriteAppHTTPProbers: "false" from the pod template and restart it'
                    if not enabled
                    else f"kubectl delete pod {name} -n {ns}   # re-injection rewrites the probe",
                    pods=[f"{ns}/{name}"],
                    container=container.get("name"),
                    probe=probe_kind,
                    port=port,
                    rewrite=why,
                )
