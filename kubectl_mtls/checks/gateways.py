"""Certificates and trust, gateways: every Gateway server's TLS credential reached the gateway."""

from __future__ import annotations

from collections.abc import Iterator

from ..normalize.gateway import ISTIO_CERT
from .base import Finding, check, finding
from .context import Context, key_of

AREA = "certificates and trust"
OWN_SECRETS = (ISTIO_CERT, "ROOTCA", "inline")


@check(
    "gateway-credential-missing",
    area=AREA,
    severity="error",
    title="every TLS server of a gateway has the certificate its credentialName names",
    reads=("pods", "proxies"),
    explain="""
What it looks at: gateway pods (proxy type `router`), server by server as istiod built them from the
Gateway resources: the port, the TLS mode (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL, passthrough or
plaintext) and the SDS secrets the server reads: `kubernetes://NAME` for `credentialName: NAME` and
`kubernetes://NAME-cacert` for the CA that verifies client certificates (MUTUAL). Each must be an
active secret in the gateway's config dump. Gateways are never judged by sidecar rules: they have no
`virtualInbound`, and PeerAuthentication does not decide what their Gateway servers accept.

Why it breaks TLS: a server whose secret never arrived (not listed, or still warming) has no
certificate to present, so every TLS handshake on that port fails (clients see a reset or
`SSL_ERROR_SYSCALL`; the gateway logs `Secret is not supplied by SDS`). A MUTUAL server without its CA
cannot verify any client certificate.

How to fix: create the Secret the Gateway names in the gateway's own namespace, of type
`kubernetes.io/tls` with `tls.crt` and `tls.key` (and `ca.crt`, or a separate `NAME-cacert` Secret, for
MUTUAL): `kubectl get secret NAME -n GATEWAY_NAMESPACE`; istiod pushes it to the gateway without a
restart.
""",
)
def gateway_credential_missing(ctx: Context) -> Iterator[Finding]:
    for pod in ctx.targets:
        proxy = ctx.proxy(pod)
        if proxy is None or not proxy.model.get("gateway") or not proxy.knows("certificates"):
            continue
        ns, name = key_of(pod)
        status = {s["name"]: s["status"] for s in proxy.model["secrets"]}
        for server in proxy.model.get("gateway") or []:
            for role, secret in (("certificate", server["credential"]), ("client CA", server["ca_credential"])):
                if not secret or secret in OWN_SECRETS or status.get(secret) == "active":
                    continue
                state = "still warming (requested, never delivered)" if status.get(secret) else "not in its config"
                hosts = ", ".join(server["server_names"]) or "any host"
                credential = secret.removeprefix("kubernetes://").removesuffix("-cacert")
                yield finding(
                    "gateway-credential-missing",
                    "error",
                    "Pod",
                    ns,
                    name,
                    f"gateway server on port {server['port']} ({server['mode']}, {hosts}) reads its {role} from SDS "
                    f"secret {secret}, which is {state}: every TLS handshake on that port fails",
                    f"kubectl get secret {credential} -n {ns}   # credentialName must name a Secret in the gateway's "
                    "namespace",
                    pods=[f"{ns}/{name}"],
                    port=server["port"],
                    mode=server["mode"],
                    secret=secret,
                    secret_status=status.get(secret),
                    server_names=server["server_names"],
                )
