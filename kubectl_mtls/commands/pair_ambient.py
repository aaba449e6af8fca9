"""`check pair` when ambient is involved: SRC and DST may each be ambient (captured by ztunnel), a sidecar
or outside the mesh. The walk follows what the data plane does, from the ztunnels' own config dumps:

- ambient -> ambient: HBONE (mTLS inside HTTP/2 CONNECT to the destination pod's IP on 15008) between
  the two nodes' ztunnels, each holding the certificate of its pod's identity;
- ambient -> sidecar: the source ztunnel uses HBONE only when its workload list says the sidecar pod
  speaks it (`protocol: HBONE`, sidecars injected with HBONE support); otherwise it sends plaintext TCP,
  which a STRICT sidecar rejects;
- sidecar -> ambient: the sidecar's outbound cluster for the Service decides: a `tunnel: http` match
  means HBONE; without it (auto-mTLS off with ISTIO_MUTUAL, istio/istio#53526) the sidecar sends
  Istio TLS to the application port, which ztunnel passes through as bytes, or plaintext;
- outside the mesh -> ambient: plaintext, which ztunnel accepts unless STRICT applies to the port.
Then the destination ztunnel's L4 authorization (its policies as printed in its dump, deciding policy
named) and, when a waypoint serves DST, the waypoint's L7 policies (bound by `targetRefs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..checks.context import Context, key_of, labels_of, target_port
from ..istio import authz, ztunnel_rbac
from ..istio import networkpolicy as netpol
from ..model import ParsedCert, Proxy
from ..normalize import pod as podinfo
from ..normalize.certs import parse_rfc3339, verify_chain
from ..normalize.ztunnel import HBONE_PORT

STEPS = ("dataplane", "certificate", "trust", "network", "server-mode", "authz", "waypoint")


@dataclass
class AmbientWalk:
    """One port's walk, with the same reading as pair.Walk: steps, and whether the call is mTLS."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    sends: dict[str, str] = field(default_factory=dict)  # destination pod -> "mtls" | "plaintext"
    reasons: list[str] = field(default_factory=list)  # why some of it is plaintext
    fixes: list[str] = field(default_factory=list)  # how to make it mTLS

    @property
    def mtls(self) -> bool | None:
        if not self.sends:
            return None
        return all(v == "mtls" for v in self.sends.values())


def step(slug: str, ok: bool | None, detail: str, hint: str | None = None, **evidence: Any) -> dict[str, Any]:
    return {"step": slug, "ok": ok, "detail": detail, "hint": hint, "evidence": evidence}


def involves_ambient(ctx: Context, src: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
    return any(key_of(p) in ctx.ambient.enrolment for p in [src, *pods])


def mode_of(ctx: Context, pod: dict[str, Any]) -> str:
    """sidecar / ambient (captured) / not-captured (labelled, but TCP or unknown to ztunnel) / none /
    unknown (ambient, but its ztunnel could not be read)."""
    if podinfo.has_envoy(pod):
        return "sidecar"
    key = key_of(pod)
    if key not in ctx.ambient.enrolment:
        return "none"
    proxy = ctx.ambient.proxies.get(key)
    if proxy is None:
        return "unknown"
    protocol = (proxy.model.get("ambient") or {}).get("protocol")
    return "ambient" if protocol == "HBONE" else "not-captured"


def _ref(pod: dict[str, Any]) -> str:
    return "/".join(key_of(pod))


def _side(ctx: Context, pod: dict[str, Any], mode: str) -> Proxy | None:
    if mode == "sidecar":
        return ctx.proxy(pod)
    if mode == "ambient":
        return ctx.ambient.proxies.get(key_of(pod))
    return None


def _ztunnel_protocol(ctx: Context, src: dict[str, Any], dst: dict[str, Any]) -> str | None:
    """How the source's ztunnel lists the destination pod (HBONE / TCP), from its own workload list."""
    proxy = ctx.ambient.proxies.get(key_of(src))
    view = ctx.ambient.view_of_node((proxy.model.get("ambient") or {}).get("node") if proxy else None)
    views = [view] if view else ctx.ambient.views
    for candidate in views:
        workload = candidate.workload(*key_of(dst))
        if workload is not None:
            return str(workload["protocol"])
    return None


def _sidecar_cluster(src_proxy: Proxy, host: str, port: int) -> dict[str, Any] | None:
    return next((c for c in src_proxy.model["clusters"] if c["host"] == host and c["port"] == port), None)


def transport(
    ctx: Context, src: dict[str, Any], src_mode: str, dst: dict[str, Any], dst_mode: str, host: str | None, port: int
) -> tuple[str | None, str, bool | None]:
    """(transport, why, breaks): `hbone` | `istio-tls` | `plaintext` | None (unknown); `breaks` True when
    the combination itself cannot work (TLS into a ztunnel-captured port)."""
    if src_mode in ("none", "not-captured"):
        return "plaintext", f"{_ref(src)} is not in the mesh ({src_mode}): it sends plaintext", False
    if src_mode == "ambient":
        if dst_mode == "ambient":
            return "hbone", "both ambient: ztunnel to ztunnel over HBONE", False
        if dst_mode == "sidecar":
            protocol = _ztunnel_protocol(ctx, src, dst)
            if protocol == "HBONE":
                return "hbone", "the source ztunnel lists the sidecar pod as HBONE: it tunnels to its sidecar", False
            if protocol is None:
                return None, "the source ztunnel does not list the destination pod", False
            return (
                "plaintext",
                "the source ztunnel lists the sidecar pod as TCP (no HBONE support): it sends plaintext",
                False,
            )
        return "plaintext", f"the destination is not captured ({dst_mode}): ztunnel sends plaintext", False
    # sidecar source
    proxy = ctx.proxy(src)
    if proxy is None or host is None:
        return None, "the source sidecar's config (or the Service) is not known", False
    cluster = _sidecar_cluster(proxy, host, port)
    if cluster is None:
        return None, f"the source sidecar has no outbound cluster for {host}:{port}", False
    if dst_mode != "ambient":
        return None, "not an ambient destination", False
    if cluster.get("hbone"):
        return "hbone", f"the sidecar's cluster {cluster['name']} tunnels to ambient endpoints (HBONE)", False
    if cluster["tls_mode"] == "ISTIO_MUTUAL" or (cluster["tls_mode"] == "AUTO" and cluster.get("mtls_endpoints")):
        return (
            "istio-tls",
            f"the sidecar's cluster {cluster['name']} has no HBONE match and originates Istio TLS "
            f"({cluster['tls_mode']}) to the application port: ztunnel passes the TLS bytes through to the app, "
            "which cannot answer a handshake (istio/istio#53526)",
            True,
        )
    return "plaintext", f"the sidecar's cluster {cluster['name']} sends plaintext ({cluster['tls_mode']})", False


def _material(proxy: Proxy) -> tuple[list[ParsedCert], list[ParsedCert]]:
    return proxy.chain, proxy.roots


def walk(
    ctx: Context,
    src: dict[str, Any],
    dst_pods: list[dict[str, Any]],
    service: dict[str, Any] | None,
    service_port: dict[str, Any] | None,
    port: int,
) -> AmbientWalk:
    """The steps of one port, stopping after the first that fails or cannot be decided."""
    result = AmbientWalk()
    steps = result.steps

    def done(item: dict[str, Any]) -> bool:
        steps.append(item)
        return item["ok"] is not True

    src_ref = _ref(src)
    src_mode = mode_of(ctx, src)
    if not dst_pods:
        done(step("dataplane", False, "no running pod behind the destination"))
        return result
    host = f"{key_of(service)[1]}.{key_of(service)[0]}.svc.cluster.local" if service else None
    modes = {_ref(p): mode_of(ctx, p) for p in dst_pods}
    unknown = [r for r, m in [(src_ref, src_mode), *modes.items()] if m == "unknown"]
    if unknown:
        done(step("dataplane", None, f"the ztunnel of {', '.join(unknown)} could not be read", None, modes=modes))
        return result
    transports: dict[str, tuple[str | None, str, bool | None]] = {
        _ref(p): transport(ctx, src, src_mode, p, modes[_ref(p)], host, port) for p in dst_pods
    }
    for ref, (kind, why, breaks) in transports.items():
        if breaks:
            done(step("dataplane", False, f"{src_ref} -> {ref}: {why}", _mtls_hint(ctx, src), transport=kind))
            return result
        if kind is None:
            done(step("dataplane", None, f"{src_ref} -> {ref}: {why}", None, source_mode=src_mode, modes=modes))
            return result
    for ref, (kind, why, _breaks) in transports.items():
        result.sends[ref] = "mtls" if kind == "hbone" else "plaintext"
        if kind != "hbone" and why not in result.reasons:
            result.reasons.append(why)
    if src_mode in ("none", "not-captured"):
        result.fixes.append(_mtls_hint(ctx, src))
    uses = sorted({t[0] for t in transports.values() if t[0]})
    if done(
        step(
            "dataplane",
            True,
            f"{src_ref} is {src_mode}; destination pods: "
            + ", ".join(f"{r} {m}" for r, m in modes.items())
            + f"; transport: {', '.join(uses)} ("
            + "; ".join(t[1] for t in transports.values())
            + ")",
            source_mode=src_mode,
            modes=modes,
            transport=uses,
        )
    ):
        return result

    mtls_pods = [p for p in dst_pods if transports[_ref(p)][0] in ("hbone",)]
    # certificates and trust, only where mTLS is spoken
    if mtls_pods:
        src_side = _side(ctx, src, src_mode)
        for pod in [src, *mtls_pods]:
            mode = src_mode if pod is src else modes[_ref(pod)]
            side = _side(ctx, pod, mode)
            problem = _certificate_problem(ctx, pod, mode, side)
            if problem is not None:
                done(step("certificate", *problem))
                return result
        if done(step("certificate", True, "each side holds an available certificate of its identity, in date")):
            return result
        assert src_side is not None
        for pod in mtls_pods:
            side = _side(ctx, pod, modes[_ref(pod)])
            assert side is not None
            for chain_of, roots_of, a, b in (
                (src_side, side, src_ref, _ref(pod)),
                (side, src_side, _ref(pod), src_ref),
            ):
                chain, _ = _material(chain_of)
                _, roots = _material(roots_of)
                ok, error = verify_chain([c.cert for c in chain], [r.cert for r in roots], ctx.now)
                if not ok:
                    holder = str((roots_of.model.get("ambient") or {}).get("ztunnel") or b)
                    done(
                        step(
                            "trust",
                            False,
                            f"{holder} (for {b}) does not trust {a}'s certificate: {error}",
                            f"kubectl mtls rootdiff {src_ref} {_ref(pod)}",
                            roots_of_verifier=roots_of.root_fingerprints(),
                        )
                    )
                    return result
        if done(step("trust", True, "each side's chain verifies to the other side's roots")):
            return result

    # NetworkPolicies: HBONE is TCP 15008 to the pod IP; plaintext keeps the application port
    if not ctx.available("networkpolicies"):
        done(step("network", None, "NetworkPolicies could not be read", None, why=ctx.unavailable["networkpolicies"]))
        return result
    policies = ctx.objects("networkpolicies")
    src_ep = _endpoint(ctx, src)
    for pod in dst_pods:
        kind = transports[_ref(pod)][0]
        wire = HBONE_PORT if kind == "hbone" else (target_port(service_port, pod) if service_port else port) or port
        dst_ep = _endpoint(ctx, pod)
        out = netpol.egress(policies, src_ep, dst_ep, wire)
        into = netpol.ingress(policies, dst_ep, src_ep, wire)
        if not out.allowed or not into.allowed:
            blocking = (out if not out.allowed else into).policies
            where = "egress from " + src_ref if not out.allowed else "ingress to " + _ref(pod)
            done(
                step(
                    "network",
                    False,
                    f"NetworkPolicy {', '.join(blocking)} blocks {where} on TCP {wire}"
                    + (" (HBONE): the connection times out" if wire == HBONE_PORT else ""),
                    f"kubectl mtls check -n {key_of(pod if into.allowed is False else src)[0]}   # see hbone-blocked",
                    port=wire,
                    policies=list(blocking),
                )
            )
            return result
    if done(step("network", True, "no NetworkPolicy blocks the connection", policies=len(policies))):
        return result

    # the destination's mode: STRICT rejects plaintext
    plaintext = [p for p in dst_pods if transports[_ref(p)][0] == "plaintext"]
    for pod in plaintext:
        tport = target_port(service_port, pod) if service_port else port
        effective = ctx.effective(pod)
        mode = effective.mode_for(tport or port)
        if mode == "STRICT" and modes[_ref(pod)] in ("ambient", "sidecar"):
            by = effective.decided_by
            done(
                step(
                    "server-mode",
                    False,
                    f"{_ref(pod)} requires mTLS on port {tport} (STRICT"
                    + (f", PeerAuthentication {by.namespace}/{by.name}" if by else "")
                    + f") and {src_ref} sends plaintext: "
                    + ("ztunnel rejects it" if modes[_ref(pod)] == "ambient" else "its sidecar rejects it"),
                    _mtls_hint(ctx, src),
                    port=tport,
                    policy=mode,
                )
            )
            return result
    mtls = not plaintext
    detail = "mTLS (HBONE) to every destination pod" if mtls else "the destination accepts plaintext on this port"
    if done(step("server-mode", True, detail, mtls=mtls)):
        return result

    # ztunnel's L4 authorization on the destination side
    identity: str | None = None
    if src_mode in ("ambient", "sidecar"):
        side = _side(ctx, src, src_mode)
        identity = side.model["identity"] if side else None
    reasons: list[str] = []
    for pod in dst_pods:
        if modes[_ref(pod)] != "ambient":
            continue
        proxy = ctx.ambient.proxies[key_of(pod)]
        ambient = proxy.model.get("ambient") or {}
        tport = target_port(service_port, pod) if service_port else port
        peer = ztunnel_rbac.Peer(
            identity=identity if transports[_ref(pod)][0] == "hbone" else None,
            source_ip=(src.get("status") or {}).get("podIP"),
            destination_ip=(pod.get("status") or {}).get("podIP"),
            port=tport or port,
        )
        decision = ztunnel_rbac.evaluate(ambient.get("policies") or [], peer)
        evidence = {
            "policy": decision.policy,
            "ztunnel": ambient.get("ztunnel"),
            "policies": len(ambient.get("policies") or []),
        }
        if decision.allowed is None:
            done(step("authz", None, f"{_ref(pod)}: {decision.reason}", None, **evidence))
            return result
        if not decision.allowed:
            policy = decision.policy.split(",")[0].strip() if decision.policy else None
            hint = (
                f"kubectl get authorizationpolicy {policy.split('/')[1]} -n {policy.split('/')[0]} -o yaml"
                if policy and "/" in policy
                else None
            )
            done(
                step(
                    "authz",
                    False,
                    f"ztunnel {ambient.get('ztunnel')} closes the connection to {_ref(pod)}: {decision.reason}",
                    hint,
                    **evidence,
                )
            )
            return result
        reasons.append(f"{_ref(pod)}: {decision.reason}")
    if done(step("authz", True, "; ".join(reasons) or "no ambient destination: ztunnel authorization does not apply")):
        return result

    # a waypoint serving DST: its L7 policies (targetRefs)
    waypoints = {
        _waypoint_name(ctx.ambient.proxies[key_of(p)].model.get("ambient") or {})
        for p in dst_pods
        if modes[_ref(p)] == "ambient"
    } - {None}
    if not waypoints:
        return result
    bound = _bound_policies(ctx, service, waypoints)
    principal = identity.removeprefix("spiffe://") if identity else None
    caller = authz.Caller(principal=principal, namespace=key_of(src)[0] if identity else None, ip=None)
    ns = key_of(dst_pods[0])[0]
    decision_ = authz.evaluate(
        bound,
        ns,
        {},
        caller,
        authz.Request(port=port, protocol="http"),
        root_namespace=ctx.mesh.root_namespace,
        trust_domain=ctx.mesh.trust_domain,
        trust_domain_aliases=tuple(ctx.mesh.trust_domain_aliases),
    )
    names = sorted(w for w in waypoints if w)
    ev = {"waypoint": names, "policy": decision_.policy, "unknown": decision_.unknown}
    if decision_.unknown and decision_.allowed is False:
        done(step("waypoint", None, f"the waypoint's decision depends on the request: {decision_.reason}", None, **ev))
    elif not decision_.allowed:
        done(
            step("waypoint", False, f"the waypoint denies {principal or 'the caller'}: {decision_.reason}", None, **ev)
        )
    else:
        done(step("waypoint", True, f"waypoint {', '.join(names)}: {decision_.reason}", None, **ev))
    return result


def _waypoint_name(ambient: dict[str, Any]) -> str | None:
    waypoint = ambient.get("waypoint") or {}
    entries = [waypoint.get("workload"), *(waypoint.get("services") or [])]
    for entry in entries:
        if entry and entry.get("hostname"):
            return str(entry["hostname"]).split(".")[0]
        if entry and entry.get("address"):
            return str(entry["address"])
    return None


def _bound_policies(ctx: Context, service: dict[str, Any] | None, waypoints: set[str | None]) -> list[dict[str, Any]]:
    """AuthorizationPolicies bound (targetRefs) to the waypoint Gateway or to DST's Service, made to apply
    to the waypoint as a namespace-wide policy would (the evaluator selects by namespace and labels)."""
    out = []
    svc = key_of(service) if service else None
    for policy in ctx.objects("authorizationpolicies"):
        spec = policy.get("spec") or {}
        refs = spec.get("targetRefs") or ([spec["targetRef"]] if spec.get("targetRef") else [])
        for ref in refs:
            kind, name = (ref or {}).get("kind"), (ref or {}).get("name")
            if (kind == "Gateway" and name in waypoints) or (
                kind == "Service" and svc and (key_of(policy)[0], name) == svc
            ):
                copy = {
                    **policy,
                    "spec": {k: v for k, v in spec.items() if k not in ("targetRef", "targetRefs", "selector")},
                }
                out.append(copy)
                break
    return out


def _certificate_problem(
    ctx: Context, pod: dict[str, Any], mode: str, side: Proxy | None
) -> tuple[bool | None, str, str | None] | None:
    ref = _ref(pod)
    if side is None:
        return None, f"{ref}'s {'sidecar' if mode == 'sidecar' else 'ztunnel'} config could not be read", None
    if mode == "ambient":
        cert = (side.model.get("ambient") or {}).get("certificate")
        zt = (side.model.get("ambient") or {}).get("ztunnel")
        if cert is None:
            return (
                None,
                f"ztunnel {zt} holds no certificate for {side.model['identity']} yet (some versions fetch it on the "
                "first connection)",
                None,
            )
        if cert["state"] != "Available":
            return (
                False,
                f"ztunnel {zt} has no usable certificate for {ref}'s identity: {cert['state']}",
                (f"kubectl mtls check -A   # see ztunnel-cert for {zt}"),
            )
    if not side.chain:
        return None, f"{ref}: no workload certificate known", None
    leaf = side.chain[0].info
    if parse_rfc3339(leaf["not_after"]) < ctx.now:
        return False, f"{ref}'s certificate expired at {leaf['not_after']}", None
    if parse_rfc3339(leaf["not_before"]) > ctx.now:
        return False, f"{ref}'s certificate is not valid before {leaf['not_before']} (clock skew)", None
    return None


def _endpoint(ctx: Context, pod: dict[str, Any]) -> netpol.Endpoint:
    return netpol.endpoint(pod, labels_of(ctx.namespaces.get(key_of(pod)[0], {})))


def _mtls_hint(ctx: Context, src: dict[str, Any]) -> str:
    ns = key_of(src)[0]
    return f"kubectl label namespace {ns} {podinfo.DATAPLANE_MODE}=ambient --overwrite   # then restart {_ref(src)}"
