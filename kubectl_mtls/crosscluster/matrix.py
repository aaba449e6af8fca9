"""Who trusts whom: for every ordered pair of clusters (A, B), do B's sidecars accept A's workload
certificates? Two questions, each as the proxies decide them: the chain verifies to one of B's
sidecars' roots (the shared chain verifier; SPIFFE trust bundles only for the peer's trust domain),
and A's trust domain is B's own or one of B's aliases. Each failing direction gets its reason and
the fix on the side that has to change.

Cost: chains and root sets are compared per distinct value, not per pod pair.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..istio import trust as rules
from ..model import ParsedCert, Proxy
from ..normalize.certs import parse_rfc3339, verify_chain
from .profile import Cluster, short


def _chain_key(proxy: Proxy) -> tuple[str, ...]:
    """Chains from the same CA compare alike: the leaf's issuer and the certificates above it."""
    if not proxy.chain:
        return ()
    return (proxy.chain[0].info["issuer"], *(c.info["fingerprint_sha256"] for c in proxy.chain[1:]))


def _distinct_chains(cluster: Cluster) -> list[Proxy]:
    seen: dict[tuple[str, ...], Proxy] = {}
    for proxy in cluster.proxies:
        if proxy.chain:
            seen.setdefault(_chain_key(proxy), proxy)
    return list(seen.values())


def _distinct_root_sets(cluster: Cluster) -> list[tuple[list[ParsedCert], list[str]]]:
    """(roots, pods holding exactly these roots) per distinct ROOTCA of the sampled sidecars."""
    sets: dict[frozenset[str], tuple[list[ParsedCert], list[str]]] = {}
    for proxy in cluster.proxies:
        if not proxy.roots:
            continue
        key = frozenset(proxy.root_fingerprints())
        sets.setdefault(key, (proxy.roots, []))[1].append(proxy.ref)
    return list(sets.values())


def _roots_for(roots: list[ParsedCert], domain: str | None) -> tuple[list[ParsedCert], bool]:
    """SPIFFE validator: only the bundle of the peer's trust domain counts. (roots, is SPIFFE bundles)."""
    bundled = [r for r in roots if r.info.get("trust_domain")]
    if not bundled:
        return roots, False
    return [r for r in roots if r.info.get("trust_domain") in (domain, None)], True


def _issuing_root(cluster: Cluster, proxy: Proxy, now: datetime) -> ParsedCert | None:
    """The root A's chain really leads to: one of A's own sidecars' roots, else A's CA root."""
    candidates = list(proxy.roots) + ([cluster.ca_root] if cluster.ca_root else [])
    for root in candidates:
        ok, _ = verify_chain([c.cert for c in proxy.chain], [root.cert], now)
        if ok:
            return root
    return cluster.ca_root


ROTATION_GAP = timedelta(hours=1)  # roots issued further apart than this are an old and a new one


def _age(root: ParsedCert | None, others: list[ParsedCert]) -> int:
    """+1 when `root` is newer than every root in `others`, -1 when older than the newest of them, else 0."""
    if root is None or not others:
        return 0
    mine = parse_rfc3339(root.info["not_before"])
    newest = max(parse_rfc3339(o.info["not_before"]) for o in others)
    if mine > newest + ROTATION_GAP:
        return 1
    if mine + ROTATION_GAP < newest:
        return -1
    return 0


def _restart(cluster: Cluster) -> str:
    return (
        f"kubectl --context {cluster.name} -n {cluster.istio_namespace} rollout restart deployment/istiod, "
        f"then restart {cluster.name}'s workloads"
    )


def _install_cacerts(x: Cluster, root_text: str) -> str:
    return (
        f"kubectl --context {x.name} -n {x.istio_namespace} create secret generic cacerts --from-file=ca-cert.pem "
        f"--from-file=ca-key.pem --from-file=root-cert.pem --from-file=cert-chain.pem (an intermediate for {x.name} "
        f"signed by {root_text}), then {_restart(x)}"
    )


def _join(x: Cluster, other: Cluster, root_text: str) -> str:
    """Cluster `x` issues from a root of its own: how it joins the root `other` trusts, per CA."""
    if x.ca_kind == "istio-csr":
        return (
            f"{x.name}'s certificates come from cert-manager istio-csr: make its issuer an intermediate of {root_text} "
            f"and serve that root through istio-csr's trust bundle, then restart {x.name}'s workloads "
            f"(kubectl --context {x.name} get certificaterequests -A shows what istio-csr signs)"
        )
    if x.ca_kind == "spire":
        return (
            f"{x.name}'s certificates come from SPIRE: federate its trust domain with {other.name} (a bundle endpoint "
            f"and a ClusterFederatedTrustDomain on both sides), or give SPIRE an UpstreamAuthority under {root_text}"
        )
    if x.ca_kind == "external":
        return f"{x.name}'s external signer must issue under {root_text}; then restart {x.name}'s workloads"
    return f"{x.name} signs with its own root: install the shared root's plug-in CA in {x.name}: " + _install_cacerts(
        x, root_text
    )


def _add_root(b: Cluster, a: Cluster, fp: str) -> str:
    """Cluster `b` (istio-csr, SPIRE, external signer) must also trust `a`'s root."""
    if b.ca_kind == "spire":
        return f"federate {a.name}'s trust bundle (root {fp}) into {b.name}'s SPIRE server"
    if b.ca_kind == "istio-csr":
        return f"add {a.name}'s root {fp} to the trust bundle istio-csr serves in {b.name}, then restart its workloads"
    domains = ", ".join(a.workload_domains) or "its trust domain"
    return (
        f"add {a.name}'s root {fp} to {b.name}'s meshConfig.caCertificates (pem, trustDomains: [{domains}]) "
        f"(kubectl --context {b.name} -n {b.istio_namespace} edit configmap istio)"
    )


def _root_fix(a: Cluster, b: Cluster, root: ParsedCert | None, b_roots: list[ParsedCert], spiffe: bool) -> str:
    """`b` does not trust the root `a`'s chain leads to: which side changes, and how."""
    fp = short(root.info["fingerprint_sha256"]) if root else "(unknown)"
    if spiffe:
        return (
            f"{b.name}'s SPIFFE trust bundles hold no root of {a.name}'s trust domain that signed this chain: "
            + _add_root(b, a, fp)
        )
    age = _age(root, b_roots)
    if a.ca_kind == b.ca_kind == "istiod-plugin" and age:
        behind, ahead = (b, a) if age > 0 else (a, b)
        return (
            f"{behind.name} is behind the root rotation ({ahead.name} moved to a newer root): install the new cacerts "
            f"in {behind.name} (root-cert.pem holding the new root and the old one while both are in use): "
            + _install_cacerts(behind, f"the new root {ahead.name} uses")
        )
    if a.ca_kind != "istiod-plugin" and b.ca_kind == "istiod-plugin":
        return _join(a, b, f"the root {b.name} trusts")
    if b.ca_kind != "istiod-plugin" and a.ca_kind == "istiod-plugin":
        if b.ca_kind == "istiod-self-signed":
            return _join(b, a, f"{a.name}'s root {fp}")
        return _add_root(b, a, fp)
    return (
        f"{a.name}'s CA root {fp} is not one {b.name} trusts: give both clusters one shared root (re-issue "
        f"{a.name}'s cacerts from the root {b.name} trusts, or add {fp} to {b.name}'s cacerts root-cert.pem), "
        f"then {_restart(a)}"
    )


def _chain_fix(a: Cluster, error: str) -> str:
    problems = [p for p in a.report["problems"] if p["fix"] and "intermediate" in p["message"] + p["fix"]]
    if problems:
        return str(problems[0]["fix"])
    if a.ca_kind == "istio-csr":
        return f"check {a.name}'s istio-csr issuer chain (kubectl --context {a.name} get issuers,clusterissuers -A)"
    return f"re-issue {a.name}'s intermediate so its chain verifies ({error})"


def direction(a: Cluster, b: Cluster, now: datetime) -> dict[str, Any]:
    """Do B's sidecars accept A's workload certificates?"""
    chains, root_sets = _distinct_chains(a), _distinct_root_sets(b)
    result: dict[str, Any] = {
        "from": a.name,
        "to": b.name,
        "ok": None,
        "chain_verified": None,
        "trust_domain_accepted": None,
        "checked": [],
        "reasons": [],
        "fix": None,
    }
    if not chains or not root_sets:
        missing = a.name if not chains else b.name
        result["reasons"].append(f"unknown: no workload chain or roots could be read from {missing}'s sidecars")
        return result
    fixes: list[str] = []
    chain_ok = True
    for proxy in chains:
        domain = rules.trust_domain_of(proxy.model["identity"])
        for roots, pods in root_sets:
            usable, spiffe = _roots_for(roots, domain)
            if usable:
                ok, error = verify_chain([c.cert for c in proxy.chain], [r.cert for r in usable], now)
            else:
                ok, error = False, f"no SPIFFE trust bundle for trust domain {domain}"
            result["checked"].append({"chain_of": proxy.ref, "roots_of": pods, "verified": ok, "error": error})
            if ok:
                continue
            chain_ok = False
            issuing = _issuing_root(a, proxy, now)
            trusted = {r.info["fingerprint_sha256"] for r in usable}
            if issuing is not None and issuing.info["fingerprint_sha256"] in trusted:
                fixes.append(_chain_fix(a, error or ""))
                why = f"{a.name}'s chain up to a root {b.name} trusts is rejected: {error}"
            else:
                fixes.append(_root_fix(a, b, issuing, usable, spiffe))
                held = ", ".join(short(f) for f in sorted(trusted)) or "none"
                where = pods[0] + (" and others" if len(pods) > 1 else "")
                root_fp = short(issuing.info["fingerprint_sha256"]) if issuing else "(unknown)"
                why = (
                    f"{b.name}'s sidecars ({where}) do not trust {a.name}'s root {root_fp} (they trust {held}): {error}"
                )
            if why not in result["reasons"]:
                result["reasons"].append(why)
    result["chain_verified"] = chain_ok

    domain_ok: bool | None = True
    b_domains = b.workload_domains
    for domain in a.workload_domains:
        accepted = rules.accepts(b.mesh, domain) if b.mesh.known else (True if domain in b_domains else None)
        if accepted is False:
            domain_ok = False
            result["reasons"].append(
                f"{a.name}'s trust domain {domain} is neither {b.name}'s ({b.mesh.trust_domain}) nor one of its "
                f"trustDomainAliases ({', '.join(b.mesh.aliases) or 'none'}): SAN and principal matching reject it"
            )
            fixes.append(
                f"add {domain} to meshConfig.trustDomainAliases of {b.name} "
                f"(kubectl --context {b.name} -n {b.istio_namespace} edit configmap istio)"
            )
        elif accepted is None and domain_ok:
            domain_ok = None
            result["reasons"].append(
                f"unknown: {b.name}'s mesh config was not read, so whether it aliases {domain} is unknown"
            )
    result["trust_domain_accepted"] = domain_ok
    if not chain_ok or domain_ok is False:
        result["ok"] = False
    elif domain_ok is None:
        result["ok"] = None
    else:
        result["ok"] = True
    unique_fixes = list(dict.fromkeys(fixes))
    result["fix"] = "; ".join(unique_fixes) if unique_fixes else None
    return result


def matrix(clusters: list[Cluster], now: datetime) -> list[dict[str, Any]]:
    return [direction(a, b, now) for a in clusters for b in clusters if a is not b]
