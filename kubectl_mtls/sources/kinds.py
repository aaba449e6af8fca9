"""The Kubernetes kinds kubectl-mtls reads: one table for the live source and the snapshot."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    plural: str
    group: str  # "" for core
    versions: tuple[str, ...]  # tried in order: newest Istio API first, older clusters next
    namespaced: bool = True
    # Only these names are read/stored (ConfigMaps: just what carries roots and mesh config).
    names: tuple[str, ...] = ()
    # Read only in the Istio namespace (the CA's Secrets): never cluster-wide.
    istio_namespace_only: bool = False


KINDS: dict[str, Kind] = {
    k.plural: k
    for k in (
        Kind("pods", "", ("v1",)),
        Kind("namespaces", "", ("v1",), namespaced=False),
        Kind("services", "", ("v1",)),
        Kind("serviceaccounts", "", ("v1",)),
        Kind("configmaps", "", ("v1",), names=("istio-ca-root-cert", "istio", "istio-sidecar-injector")),
        # The CA's own root. Only the CA certificate keys are ever kept (sources.scrub.scrub_secret).
        Kind("secrets", "", ("v1",), names=("cacerts", "istio-ca-secret"), istio_namespace_only=True),
        Kind("peerauthentications", "security.istio.io", ("v1", "v1beta1")),
        Kind("authorizationpolicies", "security.istio.io", ("v1", "v1beta1")),
        Kind("destinationrules", "networking.istio.io", ("v1", "v1beta1", "v1alpha3")),
        # Ambient: NetworkPolicies can block HBONE (TCP 15008); Gateways of class istio-waypoint are waypoints.
        Kind("networkpolicies", "networking.k8s.io", ("v1",)),
        Kind("gateways", "gateway.networking.k8s.io", ("v1", "v1beta1")),
        # What the kube-apiserver calls without a mesh certificate: admission webhooks, aggregated APIs,
        # CRD conversion webhooks (apiserver-caller-strict). CRDs are stored reduced to their conversion.
        Kind("validatingwebhookconfigurations", "admissionregistration.k8s.io", ("v1",), namespaced=False),
        Kind("mutatingwebhookconfigurations", "admissionregistration.k8s.io", ("v1",), namespaced=False),
        Kind("apiservices", "apiregistration.k8s.io", ("v1",), namespaced=False),
        Kind("customresourcedefinitions", "apiextensions.k8s.io", ("v1",), namespaced=False),
    )
}

# What `kubectl mtls snapshot` stores besides pods, in this order.
SNAPSHOT_KINDS = tuple(KINDS)

# What the live source asks the API server for, beyond listing KINDS (pods are also read one by one):
# the README's RBAC table and the krew manifest's caveats name exactly these and KINDS
# (tests/test_docs_truth.py holds them to it).
SUBRESOURCES: dict[str, str] = {
    "pods/portforward": "create",  # istioctl proxy-config, ztunnel-config, proxy-status, envoy-stats
    "pods/log": "get",  # log checks (optional)
    "pods/proxy": "get",  # strict-ready in ambient mode: ztunnel metrics through the API server

    "pods/exec": "create",  # `check pair --probe` only
}


def rbac() -> dict[str, str]:
    """resource (plural, or plural.group) -> the verbs kubectl-mtls uses on it: the RBAC a user grants."""
    out = {(f"{k.plural}.{k.group}" if k.group else k.plural): "list" for k in KINDS.values()}
    out["pods"] = "get, list"
    out.update(SUBRESOURCES)
    return out
