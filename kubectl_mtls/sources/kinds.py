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
