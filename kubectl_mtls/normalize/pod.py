"""What the Pod object says: service account, and whether and how a sidecar runs."""

from __future__ import annotations

from typing import Any

PROXY_CONTAINER = "istio-proxy"


def sidecar_kind(pod: dict[str, Any]) -> str:
    """present / native (init container restartPolicy Always) / ambient / absent."""
    spec = pod.get("spec") or {}
    for container in spec.get("containers") or []:
        if container.get("name") == PROXY_CONTAINER:
            return "present"
    for container in spec.get("initContainers") or []:
        if container.get("name") == PROXY_CONTAINER:
            # Native sidecars (Istio 1.19+) are init containers that keep running.
            return "native" if container.get("restartPolicy") == "Always" else "present"
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get("ambient.istio.io/redirection") in ("enabled", "pending"):
        return "ambient"
    return "absent"


def service_account(pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    name = spec.get("serviceAccountName") or spec.get("serviceAccount")
    return name if isinstance(name, str) and name else "default"


def has_envoy(pod: dict[str, Any]) -> bool:
    return sidecar_kind(pod) in ("present", "native")


def is_gateway(pod: dict[str, Any]) -> bool:
    """An ingress/egress gateway: its istio-proxy runs `proxy router` (a sidecar runs `proxy sidecar`).
    Gateways serve Gateway listeners, not `virtualInbound`: PeerAuthentication and the sidecar rules do
    not describe what they accept."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == PROXY_CONTAINER:
            args = [str(a) for a in container.get("args") or []]
            return len(args) >= 2 and args[0] == "proxy" and args[1] == "router"
    return False


def name_of(pod: dict[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


DATAPLANE_MODE = "istio.io/dataplane-mode"
REDIRECTION = "ambient.istio.io/redirection"


def ambient_enrolment(pod: dict[str, Any], namespace_labels: dict[str, str] | None) -> str | None:
    """Why the pod belongs to the ambient mesh: `pod label`, `namespace label`, `redirection annotation`;
    None when it does not (a sidecar, the pod label `none`, host networking, or no label at all)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if sidecar_kind(pod) in ("present", "native") or (pod.get("spec") or {}).get("hostNetwork"):
        return None
    if labels.get(DATAPLANE_MODE) == "none":
        return None
    if labels.get(DATAPLANE_MODE) == "ambient":
        return "pod label"
    if (namespace_labels or {}).get(DATAPLANE_MODE) == "ambient":
        return "namespace label"
    if annotations.get(REDIRECTION) in ("enabled", "pending"):
        return "redirection annotation"
    return None
