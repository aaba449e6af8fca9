"""Certificates and trust: does each sidecar hold a valid workload certificate for its own identity,
issued under the root the rest of the mesh trusts?"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from ..fixes import restart_command
from ..model import ParsedCert, Proxy
from ..normalize.certs import CertError, describe, load_pem_bundle, parse_rfc3339
from ..render import duration
from .base import Finding, check, finding
from .context import Context, key_of

AREA = "certificates and trust"
YEAR = 365 * 86400.0



def _sidecars(ctx: Context) -> list[tuple[dict[str, Any], Proxy]]:
    """Sidecars whose certificates were read (a dump without secrets, or with file-mounted
    certificates, says nothing about them: named under `incomplete`, never reported missing); found
    once for the seven checks that read them."""

    def read() -> list[tuple[dict[str, Any], Proxy]]:
        pairs = ((pod, ctx.proxy(pod)) for pod in ctx.targets)
        return [(pod, proxy) for pod, proxy in pairs if proxy is not None and proxy.knows("certificates")]

    return ctx.derived("sidecars-with-certificates", read)


def _times(ctx: Context) -> Callable[[str], datetime]:
    """parse_rfc3339, each distinct timestamp once per run: the sidecars' certificates share a few, and
    three checks read them."""
    parsed: dict[str, datetime] = ctx.derived("certificate-times", dict)

    def time_of(text: str) -> datetime:
        if text not in parsed:
            parsed[text] = parse_rfc3339(text)
        return parsed[text]

    return time_of


def _remedy(ctx: Context, proxy: Proxy, istiod_hint: str) -> str:
    """istiod's hint, or the external CA's own remedy when istiod does not sign (istio-csr, SPIRE, ...)."""
    from ..istio.trust import ca_remedy

    m = proxy.model
    sa = m["service_account"] or "default"
    remedy = ca_remedy(ctx.ca_setup, m["namespace"], sa, ctx.options.istio_namespace, restart_command(proxy))
    return remedy or istiod_hint


def _pods(proxy: Proxy) -> list[str]:
    return [proxy.ref]


@check(
    "cert-missing",
    area=AREA,
    severity="error",
    title="every sidecar holds a workload certificate and trusted roots",
    reads=("pods", "proxies", "certificates"),
    explain="""
What it looks at: the sidecar's SDS secrets `default` (workload certificate chain) and `ROOTCA`
(trusted roots), as Envoy reports them: missing, or still warming.

Why it breaks mTLS: without `default` the sidecar has nothing to present; without `ROOTCA` it cannot
verify anyone. Every mTLS connection in and out of the pod fails. The usual cause is that
pilot-agent's CSR to istiod failed (RBAC, a wrong CA, istiod unreachable).

How to fix: read the pod's istio-proxy log and istiod's log for CSR errors
(`kubectl logs POD -c istio-proxy | grep -i -e csr -e certificate`), fix the cause, restart the pod.
When istiod does not sign (cert-manager istio-csr, SPIRE, another signer: see `kubectl mtls trust`),
the hint is that CA's own remedy: istio-csr's CertificateRequests and its issuer's status, SPIRE's
registration entries and agent.
""",
)
def cert_missing(ctx: Context) -> Iterator[Finding]:
    for _, proxy in _sidecars(ctx):
        missing = [
            what
            for what, have in (
                ("workload certificate (secret default)", proxy.chain),
                ("trusted roots (secret ROOTCA)", proxy.roots),
            )
            if not have
        ]
        if missing:
            yield finding(
                "cert-missing",
                "error",
                "Pod",
                proxy.model["namespace"],
                proxy.model["pod"],
                f"the sidecar has no {' and no '.join(missing)}",
                _remedy(
                    ctx,
                    proxy,
                    f"kubectl logs {proxy.model['pod']} -n {proxy.model['namespace']} -c istio-proxy | grep -i csr",
                ),
                pods=_pods(proxy),
                secrets=proxy.model["secrets"],
            )


@check(
    "cert-expired",
    area=AREA,
    severity="error",
    title="no workload certificate is expired",
    reads=("pods", "proxies", "certificates"),
    explain="""
What it looks at: `not_after` of every certificate in the sidecar's workload chain.

Why it breaks mTLS: peers reject an expired certificate (`certificate_has_expired`,
`SSLV3_ALERT_CERTIFICATE_EXPIRED`); pooled connections may keep working, new ones fail. Istio renews
at half the lifetime, so an expired one means rotation stopped for this pod (istiod unreachable, CSR
rejected, the agent wedged).

How to fix: restart the pod to get a fresh certificate, then find why rotation stopped (istiod and
istio-proxy logs; with an external CA such as istio-csr or SPIRE, that CA's state, as the hint says).
""",
)
def cert_expired(ctx: Context) -> Iterator[Finding]:
    time_of = _times(ctx)
    for _pod, proxy in _sidecars(ctx):
        for cert in proxy.model["certificates"]:
            left = (time_of(cert["not_after"]) - ctx.now).total_seconds()
            if left < 0:
                yield finding(
                    "cert-expired",
                    "error",
                    "Pod",
                    proxy.model["namespace"],
                    proxy.model["pod"],
                    f"{'workload' if not cert['is_ca'] else 'chain'} certificate expired "
                    f"{duration(-left)} ago ({cert['not_after']})",
                    _remedy(ctx, proxy, restart_command(proxy)),
                    pods=_pods(proxy),
                    certificate=cert["fingerprint_sha256"],
                    not_after=cert["not_after"],
                )
                break


@check(
    "cert-not-yet-valid",
    area=AREA,
    severity="error",
    title="no workload certificate starts in the future (clock skew)",
    reads=("pods", "proxies", "certificates"),
    explain="""
What it looks at: `not_before` of the workload chain against the current time.

Why it breaks mTLS: a peer whose clock is behind rejects a certificate that is not valid yet. istiod
backdates certificates by two minutes; more than that means the node clocks disagree.

How to fix: fix time synchronisation (NTP/chrony) on the nodes involved, then restart the pod.
""",
)
def cert_not_yet_valid(ctx: Context) -> Iterator[Finding]:
    time_of = _times(ctx)
    for _, proxy in _sidecars(ctx):
        for cert in proxy.model["certificates"]:
            ahead = (time_of(cert["not_before"]) - ctx.now).total_seconds()
            if ahead > 0:
                yield finding(
                    "cert-not-yet-valid",
                    "error",
                    "Pod",
                    proxy.model["namespace"],
                    proxy.model["pod"],
                    f"certificate is valid only from {cert['not_before']} ({duration(ahead)} from now): clock skew",
                    "check NTP on the nodes, then " + restart_command(proxy),
                    pods=_pods(proxy),
                    not_before=cert["not_before"],
                )
                break


@check(
    "cert-chain-untrusted",
    area=AREA,
    severity="error",
    title="every workload chain verifies to the pod's own roots",
    reads=("pods", "proxies", "certificates"),
    explain="""
What it looks at: whether the sidecar's workload chain (leaf plus intermediates) verifies, with an
X.509 path validator, up to one of the roots in its own `ROOTCA`.

Why it breaks mTLS: peers holding the same roots reject this certificate (`unable to get local issuer
certificate`, `TLSV1_ALERT_UNKNOWN_CA`). Typical after a plug-in CA change where `cacerts` holds a
cert-chain that does not lead to its root-cert, or after a partial root rotation.

How to fix: check the `cacerts` Secret (cert-chain.pem must chain to root-cert.pem), restart istiod
if it changed, then restart the pod.
""",
)
def cert_chain_untrusted(ctx: Context) -> Iterator[Finding]:
    for _, proxy in _sidecars(ctx):
        if proxy.chain and proxy.roots and proxy.model["chain_error"]:
            yield finding(
                "cert-chain-untrusted",
                "error",
                "Pod",
                proxy.model["namespace"],
                proxy.model["pod"],
                f"workload chain does not verify to the pod's own roots: {proxy.model['chain_error']}",
                restart_command(proxy),
                pods=_pods(proxy),
                issuer=proxy.model["certificates"][0]["issuer"],
                roots=[r["fingerprint_sha256"] for r in proxy.model["roots"]],
            )


@check(
    "cert-identity-mismatch",
    area=AREA,
    severity="error",
    title="every workload certificate names the pod's own service account",
    reads=("pods", "proxies", "certificates", "configmaps"),
    explain="""
What it looks at: the URI SAN of the workload certificate against
`spiffe://<trust domain>/ns/<pod namespace>/sa/<pod service account>` (trust domain from meshConfig,
aliases accepted).

Why it breaks mTLS: clients check the server's SAN against the service accounts they expect
(`SAN matcher` failures), and AuthorizationPolicies match principals built from it. A certificate for
another identity means a wrong trust domain, a stale secret, or a service account changed under a
running pod.

How to fix: restart the pod so pilot-agent requests a certificate for its current service account;
check `trustDomain` in the mesh config if the domain differs.
""",
)
def cert_identity_mismatch(ctx: Context) -> Iterator[Finding]:
    domains = [ctx.mesh.trust_domain, *ctx.mesh.trust_domain_aliases]
    for _pod, proxy in _sidecars(ctx):
        identity = proxy.model["identity"]
        sa = proxy.model["service_account"]
        if not proxy.chain or sa is None:
            continue
        ns = proxy.model["namespace"]
        expected = [f"spiffe://{td}/ns/{ns}/sa/{sa}" for td in domains]
        if identity not in expected:
            yield finding(
                "cert-identity-mismatch",
                "error",
                "Pod",
                ns,
                proxy.model["pod"],
                f"certificate says {identity or 'no SPIFFE ID'}, expected {expected[0]}",
                restart_command(proxy),
                pods=_pods(proxy),
                identity=identity,
                expected=expected[0],
            )


@check(
    "cert-expiring",
    area=AREA,
    severity="warning",
    title="workload certificates are being rotated in time",
    reads=("pods", "proxies", "certificates"),
    explain="""
What it looks at: how much of the workload certificate's lifetime has passed. Istio renews at about
half of it, so a certificate past 75% means rotation is failing for this pod. With
`--expiring-within DURATION`, any certificate expiring within that time is reported too.

Why it breaks mTLS: soon the certificate expires and every new connection fails (cert-expired).

How to fix: look at the pod's istio-proxy log for CSR errors and at istiod's health (with an external
CA such as istio-csr or SPIRE, that CA's state, as the hint says); restarting the pod gets a fresh
certificate meanwhile.
""",
)
def cert_expiring(ctx: Context) -> Iterator[Finding]:
    time_of = _times(ctx)
    for _, proxy in _sidecars(ctx):
        if not proxy.model["certificates"]:
            continue
        leaf = proxy.model["certificates"][0]
        start, end = time_of(leaf["not_before"]), time_of(leaf["not_after"])
        left = (end - ctx.now).total_seconds()
        lifetime = (end - start).total_seconds() or 1.0
        used = 1 - left / lifetime
        if left < 0:
            continue  # cert-expired
        within = ctx.options.expiring_within
        if used > 0.75 or (within is not None and left < within):
            why = f"{used:.0%} of its lifetime used; Istio renews at ~50%" if used > 0.75 else "within the limit given"
            yield finding(
                "cert-expiring",
                "warning",
                "Pod",
                proxy.model["namespace"],
                proxy.model["pod"],
                f"workload certificate expires in {duration(left)} ({why})",
                _remedy(ctx, proxy, restart_command(proxy)),
                pods=_pods(proxy),
                not_after=leaf["not_after"],
                used=round(used, 3),
            )


def _certs_of(b64: Any) -> list[ParsedCert]:
    if not isinstance(b64, str):
        return []
    try:
        return [describe(c) for c in load_pem_bundle(base64.b64decode(b64))]
    except (CertError, ValueError):
        return []


def _issued_by(cert: ParsedCert, issuer: ParsedCert) -> bool:
    from cryptography.exceptions import InvalidSignature

    if cert.info["fingerprint_sha256"] == issuer.info["fingerprint_sha256"]:
        return True
    try:
        cert.cert.verify_directly_issued_by(issuer.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def reference_roots(ctx: Context) -> tuple[list[ParsedCert], str, str, str]:
    """(roots, kind, name, how found): the CA's root, else the root ConfigMap, else the majority."""
    ns = ctx.options.istio_namespace
    secrets = {key_of(s)[1]: s for s in ctx.objects("secrets") if key_of(s)[0] == ns}
    cacerts = (secrets.get("cacerts") or {}).get("data") or {}
    roots = _certs_of(cacerts.get("root-cert.pem") or cacerts.get("ca.crt"))
    if roots:
        signer = _certs_of(cacerts.get("ca-cert.pem") or cacerts.get("tls.crt"))
        # root-cert.pem may hold several roots (rotation): the current one is the one that issued the
        # CA's signing certificate, else the newest.
        chosen = next((r for r in roots if signer and _issued_by(signer[0], r)), None)
        chosen = chosen or max(roots, key=lambda r: r.info["not_before"])
        return [chosen], "Secret", "cacerts", f"Secret {ns}/cacerts (plug-in CA)"
    own = _certs_of(((secrets.get("istio-ca-secret") or {}).get("data") or {}).get("ca-cert.pem"))
    if own:
        return own[:1], "Secret", "istio-ca-secret", f"Secret {ns}/istio-ca-secret (istiod's self-signed CA)"
    cm = ctx.configmap(ns, "istio-ca-root-cert")
    text = ((cm or {}).get("data") or {}).get("root-cert.pem")
    if isinstance(text, str):
        try:
            certs = [describe(c) for c in load_pem_bundle(text.encode())]
        except CertError:
            certs = []
        if certs:
            newest = max(certs, key=lambda c: c.info["not_before"])
            return [newest], "ConfigMap", "istio-ca-root-cert", f"ConfigMap {ns}/istio-ca-root-cert"
    return [], "", "", ""


@check(
    "root-mismatch",
    area=AREA,
    severity="error",
    title="every sidecar trusts the mesh's current root",
    reads=("pods", "proxies", "certificates"),
    optional=("secrets", "configmaps"),
    explain="""
What it looks at: each sidecar's `ROOTCA` fingerprints against the reference root: the CA's own root
(Secret `cacerts`, else `istio-ca-secret`, in the Istio namespace, when RBAC lets us read it; only the
certificates are read), else the `istio-ca-root-cert` ConfigMap of the Istio namespace, else the root
most sidecars hold (a tie is a warning naming each group). Holding the old and the new root together
during a rotation is fine.

Why it breaks mTLS: after a root rotation, pods that were not restarted still trust only the old root
and hold certificates issued under it; restarted pods trust only the new one. Calls between the two
groups fail with `unable to get local issuer certificate` / `TLSV1_ALERT_UNKNOWN_CA`.

How to fix: restart the listed workloads (`kubectl rollout restart deployment/NAME -n NS`) so they load
the current root and get certificates issued under it. `kubectl mtls rootdiff A B` shows one pair.
""",
)
def root_mismatch(ctx: Context) -> Iterator[Finding]:
    sidecars = [proxy for _, proxy in _sidecars(ctx) if proxy.roots]
    if not sidecars:
        return
    reference, _, _, how = reference_roots(ctx)
    if reference:
        ref_fps = {r.info["fingerprint_sha256"] for r in reference}
    else:
        counts = Counter(frozenset(p.root_fingerprints()) for p in sidecars)
        (top, n), *rest = counts.most_common()
        ties = [group for group, m in rest if m == n]
        if ties:
            groups = {
                ", ".join(sorted(g))[:60]: [p.ref for p in sidecars if frozenset(p.root_fingerprints()) == g]
                for g in (top, *ties)
            }
            yield finding(
                "root-mismatch",
                "warning",
                "Namespace",
                "",
                ctx.scope.namespace or "",
                f"sidecars are split evenly between {len(groups)} root sets and no CA root could be read "
                "to say which is current",
                "kubectl get configmap istio-ca-root-cert -n istio-system -o jsonpath='{.data.root-cert\\.pem}'",
                groups=groups,
                pods=[p for g in groups.values() for p in g],
            )
            return
        ref_fps = set(top)
        how = f"the root set held by most sidecars ({n} of {len(sidecars)})"
    for proxy in sidecars:
        fps = set(proxy.root_fingerprints())
        if fps & ref_fps:
            continue
        yield finding(
            "root-mismatch",
            "error",
            "Pod",
            proxy.model["namespace"],
            proxy.model["pod"],
            f"does not trust the current root (reference: {how}); restart it to load the current root and "
            "get a certificate issued under it",
            restart_command(proxy),
            pods=[proxy.ref],
            reference=sorted(ref_fps),
            reference_from=how,
            holds=sorted(fps),
        )


@check(
    "ca-root-expiring",
    area=AREA,
    severity="warning",
    title="the mesh's root certificate is not close to expiry",
    reads=("configmaps",),
    optional=("secrets",),
    mesh_wide=True,
    explain="""
What it looks at: the expiry of the reference root (see root-mismatch): a warning under one year, an
error under 30 days.

Why it breaks mTLS: when the root expires every workload certificate stops verifying at once. Root
rotation needs a window in which both roots are trusted, which takes planning and restarts.

How to fix: plan a root rotation now (Istio's "plugin CA cert rotation" procedure): distribute the new
root alongside the old one, switch the signing CA, restart workloads, then drop the old root.
""",
)
def ca_root_expiring(ctx: Context) -> Iterator[Finding]:
    reference, kind, name, how = reference_roots(ctx)
    for root in reference:
        left = (parse_rfc3339(root.info["not_after"]) - ctx.now).total_seconds()
        if left < YEAR:
            severity = "error" if left < 30 * 86400 else "warning"
            yield finding(
                "ca-root-expiring",
                severity,
                kind,
                ctx.options.istio_namespace,
                name,
                f"the mesh root ({how}) "
                + (f"expired {duration(-left)} ago" if left < 0 else f"expires in {duration(left)}")
                + f" ({root.info['not_after']})",
                "plan a root rotation: https://istio.io/latest/docs/tasks/security/cert-management/plugin-ca-cert/",
                root=root.info["fingerprint_sha256"],
                not_after=root.info["not_after"],
            )
