"""One cluster's mesh identity setup: trust domain and aliases, the CA in use and its chain, the
root it publishes, and what a sample of its sidecars really hold (workload chains and roots).

Pure: the command reads the inputs through a Source and hands them over as `ClusterInputs`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..istio import trust as rules
from ..model import ParsedCert, Proxy
from ..normalize.certs import CertError, parse_bundle, parse_rfc3339, rfc3339, verify_chain


@dataclass
class ClusterInputs:
    name: str  # the kubeconfig context (or the snapshot's name for it)
    source: str  # where it was read from, for messages
    istio_namespace: str
    mesh_text: Any  # the `mesh` key of ConfigMap istio, None when absent or unreadable
    root_configmap: dict[str, Any] | None  # ConfigMap istio-ca-root-cert of the Istio namespace
    secrets: list[dict[str, Any]]  # cacerts / istio-ca-secret, certificates only
    istiod_pods: list[dict[str, Any]]
    sidecar_pods: list[dict[str, Any]]  # the sampled pods (their Pod objects)
    proxies: list[Proxy]  # the sampled sidecars' models
    incomplete: list[dict[str, str]] = field(default_factory=list)  # [{what, why}]


@dataclass
class Cluster:
    """A profile: `report` is the JSON shown to users; the parsed certificates stay out of it."""

    name: str
    istio_namespace: str
    report: dict[str, Any]
    mesh: rules.MeshTrust
    ca_kind: str
    ca_root: ParsedCert | None  # the root the CA's signing certificate chains to
    ca_chain: list[ParsedCert]  # the CA's signing certificate and intermediates up to (not incl.) the root
    published: list[ParsedCert]
    proxies: list[Proxy]
    workload_domains: list[str]


def _secret_certs(secret: dict[str, Any] | None, key: str) -> list[ParsedCert]:
    value = ((secret or {}).get("data") or {}).get(key)
    if not isinstance(value, str):
        return []
    try:
        return parse_bundle(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, CertError):
        return []


def _pem_certs(text: Any) -> list[ParsedCert]:
    if not isinstance(text, str):
        return []
    try:
        return parse_bundle(text.encode())
    except CertError:
        return []


def _path_len(cert: ParsedCert) -> int | None:
    from cryptography import x509

    try:
        return cert.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except (x509.ExtensionNotFound, ValueError):
        return None


def issued_by(cert: ParsedCert, issuer: ParsedCert) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        cert.cert.verify_directly_issued_by(issuer.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def short(fingerprint: str) -> str:
    return fingerprint[:23] + "…"


def _name(cert: ParsedCert) -> str:
    return cert.info["subject"] or "(empty subject)"


def _problem(severity: str, message: str, fix: str | None) -> dict[str, Any]:
    return {"severity": severity, "message": message, "fix": fix}


def _ca_material(
    inputs: ClusterInputs, now: datetime
) -> tuple[list[ParsedCert], ParsedCert | None, str, list[dict[str, Any]]]:
    """(signing chain leaf side first, root, where from, problems) of istiod's CA secrets."""
    by_name = {str((s.get("metadata") or {}).get("name")): s for s in inputs.secrets}
    ns, ctx = inputs.istio_namespace, inputs.name
    problems: list[dict[str, Any]] = []
    if "cacerts" in by_name:
        secret = by_name["cacerts"]
        roots = _secret_certs(secret, "root-cert.pem")
        signer = _secret_certs(secret, "ca-cert.pem")
        chain = _secret_certs(secret, "cert-chain.pem")
        # cert-chain.pem is the signing certificate, its intermediates, then the root.
        ca_chain = signer[:1] + [c for c in chain if not c.info["self_signed"] and signer and c.cert != signer[0].cert]
        root = next((r for r in roots if ca_chain and _chains_to(ca_chain, r, now)), None)
        where = f"Secret {ns}/cacerts"
        if ca_chain and roots and root is None:
            problems.append(
                _problem(
                    "error",
                    f"{where}: the intermediate {_name(ca_chain[0])} is not signed by root-cert.pem "
                    f"({', '.join(short(r.info['fingerprint_sha256']) for r in roots)})",
                    f"re-issue cacerts in {ctx} from the shared root, then "
                    f"kubectl --context {ctx} -n {ns} rollout restart deployment/istiod",
                )
            )
        root = root or (roots[0] if roots else None)
        return ca_chain, root, where, problems
    if "istio-ca-secret" in by_name:
        own = _secret_certs(by_name["istio-ca-secret"], "ca-cert.pem")
        return [], (own[0] if own else None), f"Secret {ns}/istio-ca-secret", problems
    return [], None, "", problems


def _chains_to(ca_chain: list[ParsedCert], root: ParsedCert, now: datetime) -> bool:
    ok, _ = verify_chain([c.cert for c in ca_chain], [root.cert], now)
    return ok or issued_by(ca_chain[-1], root)


def _intermediate_problems(
    inputs: ClusterInputs, ca_chain: list[ParsedCert], root: ParsedCert | None, now: datetime
) -> list[dict[str, Any]]:
    ctx, ns = inputs.name, inputs.istio_namespace
    fix = (
        f"re-issue {ctx}'s intermediate from the shared root (cacerts: ca-cert.pem, ca-key.pem, cert-chain.pem), "
        f"then kubectl --context {ctx} -n {ns} rollout restart deployment/istiod"
    )
    problems = []
    chain_facts = [(_name(c), bool(c.info["is_ca"]), _path_len(c)) for c in ca_chain]
    if root is not None:
        chain_facts.append((_name(root), bool(root.info["is_ca"]), _path_len(root)))
    # position 0 is istiod's signing CA: it signs leaves, so it has no CA below it
    for message in rules.path_length_problems(chain_facts):
        problems.append(_problem("error", f"plug-in CA chain: {message}", fix))
    for cert in ca_chain:
        start, end = parse_rfc3339(cert.info["not_before"]), parse_rfc3339(cert.info["not_after"])
        if end <= now:
            problems.append(_problem("error", f"intermediate {_name(cert)} expired at {cert.info['not_after']}", fix))
        elif start > now:
            problems.append(
                _problem("error", f"intermediate {_name(cert)} is not valid before {cert.info['not_before']}", fix)
            )
        if root is not None and end > parse_rfc3339(root.info["not_after"]):
            problems.append(
                _problem(
                    "warning",
                    f"intermediate {_name(cert)} outlives its root (until {cert.info['not_after']}, root until "
                    f"{root.info['not_after']}): chains fail once the root expires",
                    fix,
                )
            )
    return problems


def build(inputs: ClusterInputs, now: datetime) -> Cluster:
    mesh = rules.parse_mesh(inputs.mesh_text)
    held = {str((s.get("metadata") or {}).get("name")) for s in inputs.secrets}
    ca = rules.detect_ca(mesh, inputs.istiod_pods, inputs.sidecar_pods, "cacerts" in held, "istio-ca-secret" in held)
    ca_chain, ca_root, ca_where, problems = _ca_material(inputs, now)
    if ca.kind == "istiod-plugin":
        problems += _intermediate_problems(inputs, ca_chain, ca_root, now)
    published = _pem_certs(((inputs.root_configmap or {}).get("data") or {}).get("root-cert.pem"))
    ctx, ns = inputs.name, inputs.istio_namespace
    published_fps = {p.info["fingerprint_sha256"] for p in published}
    if ca_root is not None and published and ca_root.info["fingerprint_sha256"] not in published_fps:
        problems.append(
            _problem(
                "error",
                f"{ca_where}'s root {short(ca_root.info['fingerprint_sha256'])} is not in ConfigMap "
                f"{ns}/istio-ca-root-cert: istiod has not loaded the CA secret since it changed",
                f"kubectl --context {ctx} -n {ns} rollout restart deployment/istiod",
            )
        )
    sidecars = []
    domains: list[str] = []
    for proxy in inputs.proxies:
        m = proxy.model
        domain = rules.trust_domain_of(m["identity"])
        if domain and domain not in domains:
            domains.append(domain)
        sidecars.append(
            {
                "namespace": m["namespace"],
                "pod": m["pod"],
                "identity": m["identity"],
                "trust_domain": domain,
                "workload_issuer": m["certificates"][0]["issuer"] if m["certificates"] else None,
                "chain": [c["fingerprint_sha256"] for c in m["certificates"]],
                "roots": [r["fingerprint_sha256"] for r in m["roots"]],
                "chain_error": m["chain_error"],
            }
        )
    for proxy in inputs.proxies:
        if proxy.chain and proxy.roots and proxy.model["chain_error"]:
            problems.append(
                _problem(
                    "error",
                    f"sidecar {proxy.ref}'s own chain does not verify to its roots: {proxy.model['chain_error']}",
                    None,
                )
            )
    if ca_root is not None:
        current = ca_root.info["fingerprint_sha256"]
        stale = [p for p in inputs.proxies if p.roots and current not in p.root_fingerprints()]
        for proxy in stale:
            problems.append(
                _problem(
                    "warning",
                    f"sidecar {proxy.ref} does not trust the CA's root {short(ca_root.info['fingerprint_sha256'])}",
                    f"kubectl --context {ctx} -n {proxy.model['namespace']} delete pod {proxy.model['pod']}",
                )
            )
    incomplete = list(inputs.incomplete)
    if not mesh.known and mesh.note:
        incomplete.append({"what": f"ConfigMap {ns}/istio", "why": mesh.note})
    if not inputs.proxies:
        incomplete.append({"what": "sidecars", "why": "no sidecar could be read: workload chains and roots unknown"})
    roots: dict[str, dict[str, Any]] = {}
    for proxy in inputs.proxies:
        for root in proxy.model["roots"]:
            roots.setdefault(root["fingerprint_sha256"], dict(root))
    report = {
        "context": inputs.name,
        "source": inputs.source,
        "trust_domain": mesh.trust_domain if mesh.known else (domains[0] if domains else None),
        "trust_domain_aliases": mesh.aliases if mesh.known else None,
        "mesh_config_read": mesh.known,
        "ca_certificates": mesh.ca_certificates,
        "ca": {
            "kind": ca.kind,
            "evidence": ca.evidence,
            "secret": ca_where or None,
            "root": ca_root.info if ca_root else None,
            "intermediates": [c.info for c in ca_chain],
        },
        "published_roots": [p.info for p in published],
        "sidecar_roots": list(roots.values()),
        "workload_trust_domains": domains,
        "sidecars": sidecars,
        "problems": problems,
        "incomplete": incomplete,
    }
    return Cluster(
        name=inputs.name,
        istio_namespace=inputs.istio_namespace,
        report=report,
        mesh=mesh,
        ca_kind=ca.kind,
        ca_root=ca_root,
        ca_chain=ca_chain,
        published=published,
        proxies=inputs.proxies,
        workload_domains=domains,
    )


__all__ = ["Cluster", "ClusterInputs", "build", "issued_by", "rfc3339", "short"]
