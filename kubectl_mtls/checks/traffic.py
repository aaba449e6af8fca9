"""Traffic rules: do clients really originate Istio mTLS towards STRICT servers?"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..istio import destinationrule
from ..normalize import pod as podinfo
from .base import Finding, check, finding
from .context import Context, key_of, labels_of, target_port

AREA = "traffic rules"
NOT_ISTIO_MTLS = ("DISABLE", "SIMPLE", "MUTUAL")


def service_fqdn(svc: dict[str, Any]) -> str:
    ns, name = key_of(svc)
    return f"{name}.{ns}.svc.cluster.local"


def client_namespaces(ctx: Context) -> list[str]:
    """Namespaces with a sidecar pod, sorted: where the clients a DestinationRule applies to live (found
    once for destinationrule-tls-conflict and tls-to-plaintext-server)."""
    return ctx.derived("sidecar-namespaces", lambda: sorted({key_of(p)[0] for p in ctx.pods if podinfo.has_envoy(p)}))


def ports_in_mode(ctx: Context, svc: dict[str, Any], mode: str) -> dict[int, list[str]]:
    """Service port -> the running sidecar pods behind it whose effective mode on the matching target port
    is `mode` (the workload-level mode, or a port-level exception). Gateways are left out: they take
    what their Gateway servers say, not what a PeerAuthentication says; pods that are not running take
    no calls."""
    out: dict[int, list[str]] = {}
    for number, modes in _port_modes(ctx, svc):
        for pod, pod_mode in modes:
            if pod_mode == mode:
                out.setdefault(number, []).append(pod)
    return out


def _port_modes(ctx: Context, svc: dict[str, Any]) -> list[tuple[int, list[tuple[str, str]]]]:
    """(Service port, [(pod, its mode on the target port)]) for ports_in_mode, worked out once per
    Service: three checks ask for STRICT or DISABLE ports of the same Services."""
    # By id, with the Service kept: while the cache lives its id cannot name another object.
    known: dict[int, tuple[dict[str, Any], list[tuple[int, list[tuple[str, str]]]]]] = ctx.derived(
        "service-port-modes", dict
    )
    if id(svc) in known and known[id(svc)][0] is svc:
        return known[id(svc)][1]
    out: list[tuple[int, list[tuple[str, str]]]] = []
    pods = [p for p in ctx.pods_of(svc) if podinfo.has_envoy(p) and ctx.running(p) and not podinfo.is_gateway(p)]
    for port in (svc.get("spec") or {}).get("ports") or []:
        number = port.get("port")
        if not isinstance(number, int):
            continue
        modes = [("/".join(key_of(pod)), ctx.effective(pod).mode_for(target_port(port, pod))) for pod in pods]
        out.append((number, modes))
    known[id(svc)] = (svc, out)
    return out


@check(
    "destinationrule-tls-conflict",
    area=AREA,
    severity="error",
    title="no DestinationRule turns off Istio mTLS towards a STRICT service",
    reads=("pods", "services", "peerauthentications", "destinationrules"),
    explain="""
What it looks at: for every Service whose server pods are STRICT, the DestinationRule Istio applies for
each client namespace (client namespace first, then the Service's namespace if exported there, then
the root namespace; exact host before wildcards), and every TLS mode it can give: top level, the
port-level setting for the Service port (which replaces the top level), and each subset.

Why it breaks mTLS: `DISABLE` sends plaintext (the server resets it: `503 UC`, server log `NR
filter_chain_not_found`), `SIMPLE` sends TLS without a client certificate
(`PEER_DID_NOT_RETURN_A_CERTIFICATE`), `MUTUAL` presents a non-Istio certificate the server does not
trust. Auto mTLS does not help: an explicit DestinationRule TLS mode wins.

How to fix: set `tls.mode: ISTIO_MUTUAL` in that place of the DestinationRule, or remove the `tls`
block so auto mTLS decides (`kubectl edit destinationrule NAME -n NS`).
""",
)
def destinationrule_tls_conflict(ctx: Context) -> Iterator[Finding]:
    if not ctx.objects("destinationrules"):
        return
    rules = ctx.destination_rules
    clients = client_namespaces(ctx)
    seen: set[tuple[str, str, int, str, str]] = set()
    for svc in ctx.objects("services"):
        ports = ports_in_mode(ctx, svc, "STRICT")
        if not ports:
            continue
        svc_ns, svc_name = key_of(svc)
        answers = rules.for_service(service_fqdn(svc), svc_ns)
        # Namespaces that share an answer would only repeat the findings of the first of them.
        for client_ns in answers.distinct(sorted(set(clients) | {svc_ns})):
            selected = answers.of(client_ns)
            if selected is None:
                continue
            for port, servers in sorted(ports.items()):
                for mode, where in destinationrule.tls_modes(selected, port):
                    if mode not in NOT_ISTIO_MTLS:
                        continue
                    owner = where.split(":", 1)[0]
                    dr_ns, _, dr_name = owner.partition("/")
                    key = (dr_ns, dr_name, port, mode, where)
                    if key in seen:
                        continue
                    seen.add(key)
                    yield finding(
                        "destinationrule-tls-conflict",
                        "error",
                        "DestinationRule",
                        dr_ns,
                        dr_name,
                        f"gives {mode} ({where.split(': ', 1)[-1]}) for {svc_ns}/{svc_name}:{port}, "
                        "whose pods are STRICT",
                        f"kubectl edit destinationrule {dr_name} -n {dr_ns}   # tls.mode: ISTIO_MUTUAL, or drop tls",
                        pods=servers,
                        service=f"{svc_ns}/{svc_name}",
                        port=port,
                        mode=mode,
                        where=where,
                        client_namespaces=[c for c in clients if answers.of(c) == selected] or [client_ns],
                        step=selected.step,
                    )


@check(
    "outbound-plaintext-to-strict",
    area=AREA,
    severity="error",
    title="every client sidecar originates Istio mTLS to STRICT services",
    reads=("pods", "services", "peerauthentications", "proxies", "outbound"),
    explain="""
What it looks at: the client sidecar's actual outbound cluster for each STRICT Service port: its TLS
mode (from `transport_socket` / `transport_socket_matches`) and, under auto mTLS, how many endpoints
carry `tlsMode: istio` (only those get mTLS; the rest get plaintext).

Why it breaks mTLS: whatever the YAML says, this is what the client sends. Plaintext to a STRICT server
is reset (`503 UC`, `NR filter_chain_not_found` on the server). Endpoints without `tlsMode: istio` are
pods without a sidecar or without the `security.istio.io/tlsMode` label.

How to fix: if the cluster names a DestinationRule, fix its TLS mode (destinationrule-tls-conflict);
if some endpoints lack `tlsMode: istio`, inject sidecars into those server pods and restart them.
""",
)
def outbound_plaintext_to_strict(ctx: Context) -> Iterator[Finding]:
    strict_cache: dict[tuple[str, str], dict[int, list[str]]] = {}
    for pod in ctx.targets:
        proxy = ctx.proxy(pod)
        if proxy is None:
            continue
        ns, name = key_of(pod)
        for cluster in proxy.model["clusters"]:
            svc = ctx.service_by_host(cluster["host"])
            if svc is None or cluster["port"] is None:
                continue
            key = key_of(svc)
            if key not in strict_cache:
                strict_cache[key] = ports_in_mode(ctx, svc, "STRICT")
            servers = strict_cache[key].get(cluster["port"])
            if not servers:
                continue
            mode = cluster["tls_mode"]
            dr = cluster["destination_rule"]
            dr_text = f" (DestinationRule {dr['namespace']}/{dr['name']})" if dr and dr.get("name") else ""
            if mode in NOT_ISTIO_MTLS:
                message = f"sends {mode} to STRICT {key[0]}/{key[1]}:{cluster['port']}{dr_text}"
                hint = (
                    f"kubectl edit destinationrule {dr['name']} -n {dr['namespace']}   # tls.mode: ISTIO_MUTUAL"
                    if dr and dr.get("name")
                    else f"kubectl get destinationrule -A | grep {key[1]}"
                )
            elif mode == "AUTO" and cluster["endpoints"] and (cluster["mtls_endpoints"] or 0) < cluster["endpoints"]:
                plain = cluster["endpoints"] - (cluster["mtls_endpoints"] or 0)
                message = (
                    f"sends plaintext to {plain} of {cluster['endpoints']} endpoints of STRICT "
                    f"{key[0]}/{key[1]}:{cluster['port']} (no tlsMode: istio label: no sidecar there)"
                )
                hint = f"kubectl mtls check namespace {key[0]}   # find the server pods without a sidecar"
            else:
                continue
            yield finding(
                "outbound-plaintext-to-strict",
                "error",
                "Pod",
                ns,
                name,
                message,
                hint,
                pods=[f"{ns}/{name}"],
                cluster=cluster["name"],
                tls_mode=mode,
                servers=servers,
                destination_rule=dr,
            )


__all__ = ["labels_of"]
