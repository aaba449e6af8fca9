"""Traffic rules, the mirror of destinationrule-tls-conflict: TLS sent to a server that takes only plaintext."""

from __future__ import annotations

from collections.abc import Iterator

from ..istio import automtls, destinationrule
from .base import Finding, check, finding
from .context import Context, key_of
from .traffic import client_namespaces, ports_in_mode, service_fqdn

AREA = "traffic rules"


@check(
    "tls-to-plaintext-server",
    area=AREA,
    severity="error",
    title="no DestinationRule or client sidecar originates TLS towards a server that accepts only plaintext",
    reads=("pods", "services", "peerauthentications", "destinationrules"),
    optional=("proxies",),
    explain="""
What it looks at: every Service whose server pods are DISABLE on a port (their own workload-level mode,
or a `portLevelMtls` exception for the target port), then (1) the DestinationRule Istio applies for each
client namespace, at the top level, at the port level for that Service port and in each subset, and
(2) each client sidecar's actual outbound cluster for that Service port.

Why it breaks mTLS: a DISABLE server sidecar has only plaintext (`raw_buffer`) inbound chains, so a TLS
ClientHello matches no chain and the connection is closed: every call fails (`503 UC` or
`upstream connect error ... connection termination` on the client, `NR filter_chain_not_found` on the
server). `ISTIO_MUTUAL`, `MUTUAL` and `SIMPLE` all originate TLS. Auto mTLS does not have this
problem: istiod leaves `tlsMode: istio` off a DISABLE server's endpoints, so the client sends them
plaintext and the call works (`check pair` then says `mtls: false`).

How to fix: decide which side is right. To keep the server plaintext, remove the `tls` block from the
DestinationRule (auto mTLS then sends plaintext) or set `tls.mode: DISABLE` for that port
(`kubectl edit destinationrule NAME -n NS`); to get mTLS, change the server's PeerAuthentication from
DISABLE to PERMISSIVE or STRICT (`kubectl edit peerauthentication NAME -n NS`).
""",
)
def tls_to_plaintext_server(ctx: Context) -> Iterator[Finding]:
    rules = ctx.objects("destinationrules")
    clients = client_namespaces(ctx)
    by_service: dict[tuple[str, str], dict[int, list[str]]] = {}
    for svc in ctx.objects("services"):
        ports = ports_in_mode(ctx, svc, "DISABLE")
        if ports:
            by_service[key_of(svc)] = ports
    flagged: set[tuple[str, str]] = set()
    seen: set[tuple[str, str, int, str, str]] = set()
    for svc in ctx.objects("services"):
        disabled = by_service.get(key_of(svc))
        if not disabled or not rules:
            continue
        svc_ns, svc_name = key_of(svc)
        answers = ctx.destination_rules.for_service(service_fqdn(svc), svc_ns)
        # Namespaces that share an answer would only repeat the findings of the first of them.
        for client_ns in answers.distinct(sorted(set(clients) | {svc_ns})):
            selected = answers.of(client_ns)
            if selected is None:
                continue
            for port, servers in sorted(disabled.items()):
                for mode, where in destinationrule.tls_modes(selected, port):
                    if mode not in automtls.TLS_ORIGINATING:
                        continue
                    owner = where.split(":", 1)[0]
                    dr_ns, _, dr_name = owner.partition("/")
                    key = (dr_ns, dr_name, port, mode, where)
                    if key in seen:
                        continue
                    seen.add(key)
                    flagged.add((dr_ns, dr_name))
                    yield finding(
                        "tls-to-plaintext-server",
                        "error",
                        "DestinationRule",
                        dr_ns,
                        dr_name,
                        f"gives {mode} ({where.split(': ', 1)[-1]}) for {svc_ns}/{svc_name}:{port}, whose pods are "
                        "DISABLE there and accept only plaintext: every call fails",
                        f"kubectl edit destinationrule {dr_name} -n {dr_ns}   # drop tls (auto mTLS), or make the "
                        "server PERMISSIVE/STRICT",
                        pods=servers,
                        service=f"{svc_ns}/{svc_name}",
                        port=port,
                        mode=mode,
                        where=where,
                        client_namespaces=[c for c in clients if answers.of(c) == selected] or [client_ns],
                        step=selected.step,
                    )
    if not ctx.available("proxies"):
        return
    for pod in ctx.targets:
        proxy = ctx.proxy(pod)
        if proxy is None:
            continue
        ns, name = key_of(pod)
        for cluster in proxy.model["clusters"]:
            mode = cluster["tls_mode"]
            if mode not in automtls.TLS_ORIGINATING or cluster["port"] is None:
                continue
            target = ctx.service_by_host(cluster["host"])
            plain_pods = by_service.get(key_of(target), {}).get(cluster["port"]) if target is not None else None
            if not plain_pods or target is None:
                continue
            dr = cluster["destination_rule"]
            if dr and (dr.get("namespace"), dr.get("name")) in flagged:
                continue  # the DestinationRule finding above already names this cause
            named = automtls.destination_rule_of(cluster)
            target_ns, target_name = key_of(target)
            yield finding(
                "tls-to-plaintext-server",
                "error",
                "Pod",
                ns,
                name,
                f"sends {mode} to {target_ns}/{target_name}:{cluster['port']}, whose pods are DISABLE there and "
                "accept only plaintext" + (f" (DestinationRule {named})" if named else ""),
                f"kubectl edit destinationrule {dr['name']} -n {dr['namespace']}   # drop tls (auto mTLS)"
                if named and dr
                else f"kubectl get destinationrule -A | grep {target_name}",
                pods=[f"{ns}/{name}"],
                cluster=cluster["name"],
                tls_mode=mode,
                servers=plain_pods,
                destination_rule=dr,
            )
