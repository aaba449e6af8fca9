"""Istio's identity rules across clusters: trust domains, their aliases, and which CA issues certificates.

Pure functions over mesh config, Pod objects and certificate facts (no I/O). Facts behind them:
../shared/reference/TRUST.md ("Istio's CA setups", "Multi-cluster failures people report").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_TRUST_DOMAIN = "cluster.local"  # meshConfig.trustDomain when unset
SPIFFE_PREFIX = "spiffe://"
SPIRE_CSI_DRIVER = "csi.spiffe.io"  # SPIRE's workload API socket, mounted into injected pods


@dataclass
class MeshTrust:
    """The trust part of meshConfig. `known` is False when the mesh config could not be read: then
    the trust domain is only what the workloads' certificates say, and aliases are unknown."""

    trust_domain: str = DEFAULT_TRUST_DOMAIN
    aliases: list[str] = field(default_factory=list)
    ca_certificates: list[dict[str, Any]] = field(default_factory=list)  # meshConfig.caCertificates as given
    ca_address: str | None = None  # defaultConfig.caAddress: where sidecars send their CSRs
    known: bool = True
    note: str | None = None


def parse_mesh(text: Any) -> MeshTrust:
    """meshConfig YAML (the `mesh` key of the `istio` ConfigMap) -> MeshTrust; never raises."""
    if not isinstance(text, str):
        return MeshTrust(known=False, note="no mesh config (ConfigMap istio, key mesh)")
    import yaml

    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        return MeshTrust(known=False, note=f"mesh config is not YAML: {str(exc).splitlines()[0]}")
    if not isinstance(config, dict):
        return MeshTrust(known=False, note="mesh config is not a mapping")
    aliases = config.get("trustDomainAliases") or []
    extra = config.get("caCertificates") or []
    default_config = config.get("defaultConfig") or {}
    ca_address = default_config.get("caAddress") if isinstance(default_config, dict) else None
    return MeshTrust(
        trust_domain=str(config.get("trustDomain") or DEFAULT_TRUST_DOMAIN),
        aliases=[str(a) for a in aliases] if isinstance(aliases, list) else [],
        ca_certificates=[c for c in extra if isinstance(c, dict)] if isinstance(extra, list) else [],
        ca_address=str(ca_address) if ca_address else None,
    )


def trust_domain_of(identity: str | None) -> str | None:
    """`spiffe://td/ns/x/sa/y` -> `td`."""
    if not identity or not identity.startswith(SPIFFE_PREFIX):
        return None
    domain = identity[len(SPIFFE_PREFIX) :].split("/", 1)[0]
    return domain or None


def accepted_trust_domains(mesh: MeshTrust) -> list[str]:
    """The trust domains a cluster's proxies treat as "our mesh": its own plus every alias. istiod
    writes one SAN matcher per domain into inbound and outbound TLS, and expands policy principals."""
    return [mesh.trust_domain, *[a for a in mesh.aliases if a != mesh.trust_domain]]


def accepts(mesh: MeshTrust, trust_domain: str) -> bool | None:
    """Does a cluster with this mesh config accept peers of `trust_domain`? None when unknown."""
    if trust_domain in accepted_trust_domains(mesh):
        return True
    return False if mesh.known else None


# -- which CA issues the workload certificates ----------------------------------------------------

CA_KINDS = ("istiod-self-signed", "istiod-plugin", "istio-csr", "spire", "external", "unknown")


@dataclass
class CaSetup:
    kind: str  # one of CA_KINDS
    evidence: list[str] = field(default_factory=list)


def _env(pod: dict[str, Any], container_name: str) -> dict[str, str]:
    spec = pod.get("spec") or {}
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if container.get("name") == container_name:
            return {
                str(v.get("name")): str(v.get("value"))
                for v in container.get("env") or []
                if isinstance(v, dict) and "value" in v and v.get("value") != "[redacted]"
            }
    return {}


def uses_spire(pod: dict[str, Any]) -> bool:
    """SPIRE serves SDS through its CSI driver's socket mounted as the workload socket."""
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if ((volume or {}).get("csi") or {}).get("driver") == SPIRE_CSI_DRIVER:
            return True
    return False


def detect_ca(
    mesh: MeshTrust,
    istiod_pods: list[dict[str, Any]],
    sidecar_pods: list[dict[str, Any]],
    has_cacerts: bool,
    has_self_signed: bool,
) -> CaSetup:
    """The CA in use, from the strongest signal down: SPIRE's socket in the pods, a CA address that is
    not istiod (istio-csr or another signer), istiod's CA switched off, then istiod's own secrets."""
    spire = [p for p in sidecar_pods if uses_spire(p)]
    if spire:
        meta = spire[0].get("metadata") or {}
        return CaSetup(
            "spire", [f"pod {meta.get('namespace')}/{meta.get('name')} mounts SPIRE's socket ({SPIRE_CSI_DRIVER})"]
        )
    addresses = [mesh.ca_address] if mesh.ca_address else []
    for pod in sidecar_pods:
        address = _env(pod, "istio-proxy").get("CA_ADDR")
        if address:
            addresses.append(address)
            break
    external = next((a for a in addresses if not a.split(".")[0].split(":")[0].startswith("istiod")), None)
    ca_server_off = any(_env(p, "discovery").get("ENABLE_CA_SERVER", "").lower() == "false" for p in istiod_pods)
    if external and "istio-csr" in external:
        return CaSetup("istio-csr", [f"sidecars send CSRs to {external} (cert-manager istio-csr)"])
    if external:
        return CaSetup("external", [f"sidecars send CSRs to {external}, not istiod"])
    if ca_server_off:
        return CaSetup("external", ["istiod runs with ENABLE_CA_SERVER=false (an external CA signs)"])
    if has_cacerts:
        return CaSetup("istiod-plugin", ["Secret cacerts in the Istio namespace (plug-in CA)"])
    if has_self_signed:
        return CaSetup("istiod-self-signed", ["Secret istio-ca-secret in the Istio namespace (self-signed root)"])
    return CaSetup("unknown", ["neither cacerts nor istio-ca-secret could be read"])


def path_length_problems(chain: list[tuple[str, bool, int | None]]) -> list[str]:
    """CA path-length sanity for a CA chain given leaf side first as (subject, is_ca, pathLen): the
    issuing CA signs leaves, so the certificate at position i has i CA certificates below it."""
    problems = []
    for index, (subject, is_ca, limit) in enumerate(chain):
        if not is_ca:
            problems.append(f"{subject or '(empty subject)'} is not a CA (basicConstraints CA:FALSE or missing)")
        elif limit is not None and index > limit:
            problems.append(
                f"{subject or '(empty subject)'} has pathLenConstraint {limit} but {index} CA certificate(s) "
                "below it: every chain through it is rejected"
            )
    return problems


EXTERNAL_CAS = ("istio-csr", "spire", "external")


def ca_remedy(ca: CaSetup, namespace: str, service_account: str, istio_namespace: str, restart: str) -> str | None:
    """What to look at when a workload certificate is missing, stale or expiring and istiod does not
    sign: the external CA's own state, then `restart` (the pod's restart command). None for istiod's CA."""
    if ca.kind == "istio-csr":
        return (
            f"certificates come from cert-manager istio-csr: kubectl get certificaterequests -n {istio_namespace} "
            "(istio-csr's requests and their Ready condition) and kubectl get issuers,clusterissuers -A (the "
            f"issuer's status), then restart the pod ({restart})"
        )
    if ca.kind == "spire":
        return (
            f"certificates come from SPIRE: spire-server entry show -selector k8s:ns:{namespace} -selector "
            f"k8s:sa:{service_account} (in the SPIRE server pod: is the workload registered?) and the SPIRE agent "
            f"on the pod's node (kubectl get pods -A -l app=spire-agent -o wide), then restart the pod ({restart})"
        )
    if ca.kind == "external":
        return (
            f"certificates come from an external signer ({'; '.join(ca.evidence)}): check that signer's status and "
            f"logs, then restart the pod ({restart})"
        )
    return None
