"""`check pair CONTEXT:NS/POD CONTEXT:NS/POD`: one call from a pod in one cluster to a pod in another.

Each side is read in its own context. The walk: both sidecars; the client's outbound cluster for the
destination's Service as the client's cluster sees it (does it exist at all, i.e. is the remote
cluster discovered; does it originate Istio mTLS to every endpoint); identity (each side's trust
domain accepted by the other, the server's SPIFFE ID among the SANs the client expects); what the
server enforces on the target port; trust both ways (chains, roots, dates); authorization at the
server for the client's principal (with the server mesh's trust-domain aliases).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..checks.context import Context, Options, Scope, key_of
from ..errors import EXIT_DEPENDS, EXIT_GATHER, EXIT_OK, EXIT_PROBLEM
from ..fixes import inject_sidecar, restart_command
from ..istio import automtls
from ..istio import trust as trust_rules
from ..normalize import pod as podinfo
from ..normalize.certs import parse_rfc3339, verify_chain
from ..render import Style, emit
from .contexts import Side
from .pair_authz import authz_step
from .pair_steps import (
    PairContext,
    enforced_text,
    gather_error,
    matches_san,
    protocol_of,
    server_side,
    step,
    table,
    verdict_of,
)
from .targets import unknown_pod

KINDS = ("pods", "namespaces", "services", "peerauthentications", "authorizationpolicies", "configmaps", "proxies")


def _load(side: Side, args: argparse.Namespace, moment: Any) -> tuple[Context, dict[str, Any]]:
    options = Options(istio_namespace=args.istio_namespace, concurrency=args.concurrency)
    ctx = PairContext(
        side.source, Scope(side.namespace), moment, options, pods={(side.namespace, side.pod)}, namespaces=set()
    )
    ctx.load(KINDS)
    if not ctx.available("pods"):
        raise gather_error(ctx)
    pod = ctx.pods_by_key.get((side.namespace, side.pod))
    if pod is None:
        raise unknown_pod(
            side.source, side.namespace, side.pod, [p for p in ctx.pods if key_of(p)[0] == side.namespace]
        )
    return ctx, pod


def _mesh_trust(ctx: Context) -> trust_rules.MeshTrust:
    known = ctx.configmap(ctx.options.istio_namespace, "istio") is not None
    return trust_rules.MeshTrust(ctx.mesh.trust_domain, list(ctx.mesh.trust_domain_aliases), known=known)


def walk(
    args: argparse.Namespace, src_side: Side, dst_side: Side, moment: Any
) -> tuple[list[dict[str, Any]], int | None, list[dict[str, str]]]:
    """(steps up to the first broken link, the Service port walked, incomplete notes of both sides)."""
    src_ctx, src = _load(src_side, args, moment)
    dst_ctx, dst = _load(dst_side, args, moment)
    sc, dc = src_side.context, dst_side.context
    src_ref, dst_ref = f"{sc}:{'/'.join(key_of(src))}", f"{dc}:{'/'.join(key_of(dst))}"
    notes = [{"what": f"{sc}: {i['what']}", "why": i["why"]} for i in src_ctx.incomplete]
    notes += [{"what": f"{dc}: {i['what']}", "why": i["why"]} for i in dst_ctx.incomplete]
    steps: list[dict[str, Any]] = []

    def done(item: dict[str, Any]) -> bool:
        steps.append(item)
        return item["ok"] is not True

    # 1. both sides have a sidecar whose config was read
    for ref, ctx, pod, context in ((src_ref, src_ctx, src, sc), (dst_ref, dst_ctx, dst, dc)):
        if not podinfo.has_envoy(pod):
            done(
                step(
                    "sidecar",
                    False,
                    f"{ref} has no sidecar ({podinfo.sidecar_kind(pod)}): it has no mesh identity across clusters",
                    inject_sidecar(pod, *key_of(pod), _labels(ctx, key_of(pod)[0]), context),
                )
            )
            return steps, None, notes
        if ctx.proxy(pod) is None:
            done(step("sidecar", None, f"{ref}'s sidecar config could not be read"))
            return steps, None, notes
    src_proxy, dst_proxy = src_ctx.proxy(src), dst_ctx.proxy(dst)
    assert src_proxy is not None and dst_proxy is not None
    src_proxy.context, dst_proxy.context = sc, dc
    done(step("sidecar", True, "both pods have a sidecar"))

    # 2. the client's view of the remote Service: its outbound cluster and the TLS it originates
    services = dst_ctx.services_of(dst)
    candidates = [
        (svc, p) for svc in services for p in (svc.get("spec") or {}).get("ports") or [] if isinstance(p, dict)
    ]
    if args.port is not None:
        candidates = [(s, p) for s, p in candidates if p.get("port") == args.port]
    if not candidates:
        done(
            step(
                "client-tls",
                False,
                f"no Service in {dc} selects {dst_ref}"
                + (f" on port {args.port}" if args.port else "")
                + ": across clusters a call goes to a Service name",
                f"kubectl get services -n {key_of(dst)[0]} --context {dc} -o wide",
            )
        )
        return steps, args.port, notes
    service, service_port = candidates[0]
    port = int(service_port.get("port") or 0)
    host = f"{key_of(service)[1]}.{key_of(service)[0]}.svc.cluster.local"
    cluster = next((c for c in src_proxy.model["clusters"] if c.get("host") == host and c.get("port") == port), None)
    if cluster is None:
        done(
            step(
                "client-tls",
                False,
                f"{src_ref} has no outbound cluster for {host}:{port}: {sc} does not discover {dc}'s endpoints "
                "(no remote secret for it, or the Service is missing in one of the clusters)",
                f"istioctl create-remote-secret --context {dc} --name {dc} | kubectl apply -f - --context {sc}",
                host=host,
                port=port,
            )
        )
        return steps, port, notes
    mode, endpoints, mtls_endpoints = cluster.get("tls_mode"), cluster.get("endpoints"), cluster.get("mtls_endpoints")
    if mode == "AUTO" and endpoints is not None and mtls_endpoints is not None and mtls_endpoints < endpoints:
        if done(
            step(
                "client-tls",
                False,
                f"auto mTLS: only {mtls_endpoints} of {endpoints} endpoints of {host} are labelled tlsMode istio; "
                "the others (across the east-west gateway?) get plaintext",
                f"istioctl proxy-config endpoint {key_of(src)[1]}.{key_of(src)[0]} --cluster "
                f"'{cluster.get('name')}' --context {sc}",
                cluster=cluster.get("name"),
            )
        ):
            return steps, port, notes
    elif mode not in ("ISTIO_MUTUAL", "AUTO"):
        done(
            step(
                "client-tls",
                False,
                f"{src_ref} originates {mode} to {host}:{port}, not Istio mTLS"
                + (
                    f" (DestinationRule {cluster['destination_rule']['namespace']}/"
                    f"{cluster['destination_rule']['name']})"
                    if cluster.get("destination_rule")
                    else ""
                ),
                f"kubectl get destinationrules -A --context {sc}   # set tls.mode ISTIO_MUTUAL for {host}",
                cluster=cluster.get("name"),
            )
        )
        return steps, port, notes
    else:
        done(step("client-tls", True, f"{src_ref} originates Istio mTLS ({mode}) to {host}:{port}"))

    # 3. identity: trust domains and the SANs the client expects
    src_id, dst_id = src_proxy.model["identity"], dst_proxy.model["identity"]
    src_td, dst_td = trust_rules.trust_domain_of(src_id), trust_rules.trust_domain_of(dst_id)
    for td, who, mesh, context in (
        (src_td, dc, _mesh_trust(dst_ctx), dc),
        (dst_td, sc, _mesh_trust(src_ctx), sc),
    ):
        accepted = trust_rules.accepts(mesh, td) if td else None
        if accepted is False:
            done(
                step(
                    "identity",
                    False,
                    f"{who} does not accept trust domain {td} (its own is {mesh.trust_domain}, aliases: "
                    f"{', '.join(mesh.aliases) or 'none'})",
                    f"add {td} to meshConfig.trustDomainAliases of {who} "
                    f"(kubectl --context {context} -n {args.istio_namespace} edit configmap istio)",
                )
            )
            return steps, port, notes
        if accepted is None:
            done(step("identity", None, f"whether {who} accepts trust domain {td} is unknown (mesh config not read)"))
            return steps, port, notes
    expected = cluster.get("expected_sans") or []
    if expected and dst_id and not matches_san(expected, dst_id):
        done(
            step(
                "identity",
                False,
                f"{src_ref} expects the server to be one of {', '.join(expected)}, but {dst_ref} presents {dst_id}",
                f"add {dst_td} to meshConfig.trustDomainAliases of {sc} "
                f"(kubectl --context {sc} -n {args.istio_namespace} edit configmap istio)",
            )
        )
        return steps, port, notes
    done(step("identity", True, f"trust domains line up ({src_td} ↔ {dst_td}); the server's SAN is expected"))

    # 4. what the server enforces on the target port takes mTLS
    tport, enforced, policy = server_side(dst_ctx, dst, service_port, port)
    ok = automtls.accepts(enforced, "mtls")
    if ok is not True:
        detail = f"{dst_ref} port {tport}: {enforced_text(dst_ctx, dst, enforced)}, policy says {policy}"
        done(step("server-mode", ok, detail + (": it does not take mTLS" if ok is False else ""), None))
        return steps, port, notes
    done(step("server-mode", True, f"{dst_ref} takes mTLS on port {tport} (policy {policy})"))

    # 5. trust both ways, and dates
    for who, proxy in ((src_ref, src_proxy), (dst_ref, dst_proxy)):
        for cert in proxy.model["certificates"][:1]:
            if parse_rfc3339(cert["not_after"]) < moment or parse_rfc3339(cert["not_before"]) > moment:
                done(step("trust", False, f"{who}'s workload certificate is out of date", restart_command(proxy)))
                return steps, port, notes
    for chain_of, roots_of, a, b in (
        (src_proxy, dst_proxy, src_ref, dst_ref),
        (dst_proxy, src_proxy, dst_ref, src_ref),
    ):
        verified, why = verify_chain([c.cert for c in chain_of.chain], [r.cert for r in roots_of.roots], moment)
        if verified is not True:
            done(
                step(
                    "trust",
                    verified,
                    f"{b} does not trust {a}'s certificate: {why}" if verified is False else f"cannot tell: {why}",
                    f"kubectl mtls trust --context {sc} --context {dc}",
                    roots_of_verifier=roots_of.root_fingerprints(),
                )
            )
            return steps, port, notes
    done(step("trust", True, "each side's chain verifies to the other's roots; certificates in date"))

    # 6. authorization at the server for the client's principal (aliases as the server's istiod applies them)
    principal = (src_id or "").removeprefix("spiffe://") or None
    done(
        authz_step(
            dst_ctx, src, principal, [dst], service_port, port, protocol_of(service_port), cluster.get("sni"), None
        )
    )
    return steps, port, notes


def run(args: argparse.Namespace, src_side: Side, dst_side: Side) -> int:
    from .common import now

    moment = now()
    steps, port, notes = walk(args, src_side, dst_side, moment)
    verdict, first, hint = verdict_of(steps)
    data: dict[str, Any] = {
        "verdict": verdict,
        "mtls": True if verdict == "ok" else None,
        "plaintext_reason": None,
        "source": f"{src_side.context}:{src_side.namespace}/{src_side.pod}",
        "destination": f"{dst_side.context}:{dst_side.namespace}/{dst_side.pod}",
        "port": port,
        "steps": steps,
        "first_failure": first,
        "hint": hint,
        "ports": [
            {
                "port": port,
                "verdict": verdict,
                "mtls": True if verdict == "ok" else None,
                "plaintext_reason": None,
                "steps": steps,
                "first_failure": first,
                "hint": hint,
            }
        ],
        "incomplete": notes,
        "request": None,
    }
    emit(data, args.output, args.query, lambda d, wide: table(d, Style.detect(args.no_color)))
    return {"ok": EXIT_OK, "fail": EXIT_PROBLEM, "unknown": EXIT_GATHER, "depends": EXIT_DEPENDS}[verdict]


def _labels(ctx: Context, namespace: str) -> dict[str, Any] | None:
    """The namespace's labels, None when it was not read (the fix then says what to look for)."""
    obj = ctx.namespaces.get(namespace)
    return (obj.get("metadata") or {}).get("labels") or {} if obj is not None else None
