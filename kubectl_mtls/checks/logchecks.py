"""Logs: TLS failures the sidecars already saw, and istiod's certificate and config errors."""

from __future__ import annotations

from collections.abc import Iterator

from .base import Finding, check, finding
from .context import Context

AREA = "logs"
FIXES = {
    "unknown-ca": "kubectl mtls rootdiff POD PEER   # the two sides trust different roots",
    "verify-failed": "kubectl mtls rootdiff POD PEER",
    "expired": "kubectl mtls certs POD   # and restart the pod with the expired certificate",
    "san-mismatch": "kubectl mtls proxy POD -o json --query 'clusters[].expected_sans'",
    "plaintext-to-strict": "kubectl mtls check pod POD   # a caller without sidecar, or a DestinationRule DISABLE",
    "no-client-cert": "look for a DestinationRule with tls.mode SIMPLE towards this pod",
    "tls-to-plaintext": "the server has no sidecar: kubectl mtls check pod SERVER",
    "rbac-denied": "kubectl get authorizationpolicy -A   # the policy named in the evidence denied it",
    "no-secret": "kubectl logs POD -c istio-proxy | grep -i -e csr -e 'workload certificate'   # why SDS is empty",
    "csr-failure": "kubectl get pod POD -o yaml | grep -A1 CA_ADDR   # must point at istiod (or your Istio CA)",
    "authn-failure": "kubectl logs -n istio-system -l app=istiod | grep -i -e authenticate -e impersonation",
    "nack": "istioctl proxy-status POD   # then fix the config the proxy rejected",
}
# How the message says who refused: the log line decides (see normalize/logs.py).
WHERE = {"client": " on the client side", "server": " on the server side", "istiod": " (certificates and config)"}


@check(
    "proxy-tls-errors",
    area=AREA,
    severity="warning",
    title="the sidecar's recent log shows no TLS or authorization failures",
    reads=("pods", "proxy-logs"),
    needs_logs=True,
    explain="""
What it looks at: the last lines of the pod's istio-proxy log (access log and debug lines), classified
by the exact strings Envoy writes (access logs in today's and Istio <= 1.5's format, JSON logs, debug
lines with `TLS_error:` or the older `TLS error:`, the 503 body a caller gets): unknown CA, verification
failed, expired certificate, SAN mismatch, plaintext to STRICT (`NR filter_chain_not_found`), no client
certificate, TLS to a plaintext port, no certificate yet (`Secret is not supplied by SDS`), istio-agent
CSR failures (a CA_ADDR that is no Istio CA, authentication or impersonation refused), and RBAC denials
with the policy that matched. An alert *received* (`TLSV1_ALERT_UNKNOWN_CA`,
`SSLV3_ALERT_CERTIFICATE_EXPIRED`, `SSLV3_ALERT_CERTIFICATE_UNKNOWN`) means the peer rejected this
proxy's certificate; the finding says which side refused when the line shows it. A bare `UF,URX` with
no TLS evidence is not classified. Read by default for `check pod`, with `--logs` for scans.

Why it matters: these are the failures the users saw, with the side that rejected the handshake; they
may be over already (a warning, not an error).

How to fix: follow the class: a root or SAN problem (rootdiff, proxy), a plaintext caller (check pod),
a policy (the AuthorizationPolicy named in the evidence). Access logs are off by default: set
meshConfig `accessLogFile: /dev/stdout` to get them.
""",
)
def proxy_tls_errors(ctx: Context) -> Iterator[Finding]:
    from ..normalize.logs import classify_proxy_log

    for (ns, name), text in sorted(ctx.proxy_logs.items()):
        for item in classify_proxy_log(text):
            policy = f" (policy {item.policy})" if item.policy else ""
            yield finding(
                "proxy-tls-errors",
                "warning",
                "Pod",
                ns,
                name,
                f"istio-proxy logged {item.count}x {item.kind}{WHERE.get(item.side, '')}{policy}: {item.summary}",
                FIXES.get(item.kind, "").replace("POD", f"{name} -n {ns}") or None,
                pods=[f"{ns}/{name}"],
                log_class=item.kind,
                side=item.side,
                count=item.count,
                line=item.line,
                policy=item.policy,
            )


@check(
    "istiod-cert-errors",
    area=AREA,
    severity="error",
    title="istiod's recent log shows no CSR, NACK or permission errors",
    reads=("istiod-logs",),
    needs_logs=True,
    mesh_wide=True,
    explain="""
What it looks at: the last lines of every istiod (`app=istiod`) log: CSR signing errors, client
authentication failures, `ACK ERROR` (a proxy rejected config: a NACK), unauthorized xDS clients and
Kubernetes RBAC denials (`is forbidden`).

Why it breaks mTLS: failed CSRs leave sidecars without or with expired certificates; a NACK leaves a
proxy on old config; istiod without RBAC cannot validate tokens, so nobody gets a certificate.

How to fix: the evidence carries the log line; typical fixes are restoring istiod's ClusterRole
(`tokenreviews` create), fixing the plug-in CA Secret, or fixing the config a proxy rejected. When
cert-manager istio-csr, SPIRE or another signer issues the certificates, istiod signs nothing: the
run says so under `incomplete` (that CA's logs are where CSR errors show).
""",
)
def istiod_cert_errors(ctx: Context) -> Iterator[Finding]:
    from ..normalize.logs import classify_istiod_log

    ns = ctx.options.istio_namespace
    ca = ctx.ca_setup
    if ca.kind in ("istio-csr", "spire", "external"):
        # istiod does not sign here: its log cannot show why a workload has no certificate
        ctx.note(
            "check istiod-cert-errors",
            f"workload certificates come from {ca.kind} ({'; '.join(ca.evidence)}), not istiod: CSR errors are in "
            "that CA's own logs, which are not read; istiod's NACK and RBAC errors are still checked",
        )
    for name, text in sorted(ctx.istiod_logs.items()):
        for item in classify_istiod_log(text):
            yield finding(
                "istiod-cert-errors",
                "error",
                "Pod",
                ns,
                name,
                f"logged {item.count}x {item.kind}: {item.summary}",
                f"kubectl logs {name} -n {ns} | grep -F {item.line[:40]!r}",
                log_class=item.kind,
                count=item.count,
                line=item.line,
            )
