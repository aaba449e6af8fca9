"""`kubectl mtls check pair SRC DST [--port P]`: walk the path one call takes and stop at the first
broken link: sidecars, client TLS, identity, server mode, trust, authorization (and, with --probe,
one real request)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from ..checks.context import Context, Options, Scope, key_of, labels_of, target_port
from ..errors import EXIT_DEPENDS, EXIT_GATHER, EXIT_OK, EXIT_PROBLEM, NotFoundError, UsageError
from ..fixes import restart_command
from ..istio import destinationrule
from ..normalize import pod as podinfo
from ..normalize.certs import parse_rfc3339, verify_chain
from ..render import Style, emit
from ..sources import parse_pod_ref
from .common import namespace_of, now, open_source
from .pair_authz import authz_step
from .request_spec import RequestSpec, parse_request

STEPS = ("sidecar", "client-tls", "identity", "server-mode", "trust", "authz", "probe")
HTTP_PREFIXES = ("http", "grpc")


@dataclass
class Destination:
    kind: str  # "service" | "pod"
    namespace: str
    name: str
    service: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{'svc/' if self.kind == 'service' else ''}{self.namespace}/{self.name}"


def parse_destination(ref: str, default_namespace: str) -> tuple[str, str, str]:
    """(kind, namespace, name): svc/NAME, svc/NAME.NS, NAME.NS.svc.<domain>, or a pod reference."""
    for prefix in ("svc/", "service/", "services/"):
        if ref.startswith(prefix):
            name, _, ns = ref.removeprefix(prefix).partition(".")
            return "service", ns or default_namespace, name
    parts = ref.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return "service", parts[1], parts[0]
    ns, name = parse_pod_ref(ref, default_namespace)
    return "pod", ns, name


class PairContext(Context):
    """A Context whose sidecar reads are limited to the two ends of the call: the named pods, and for a
    Service destination every pod of its namespace (the Service's own selector is only known later)."""

    def __init__(self, *args: Any, pods: set[tuple[str, str]], namespaces: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wanted_pods = pods
        self.wanted_namespaces = namespaces

    def _load_pods(self) -> None:
        super()._load_pods()
        self.targets = [p for p in self.pods if key_of(p) in self.wanted_pods or key_of(p)[0] in self.wanted_namespaces]


def step(slug: str, ok: bool | None, detail: str, hint: str | None = None, **evidence: Any) -> dict[str, Any]:
    return {"step": slug, "ok": ok, "detail": detail, "hint": hint, "evidence": evidence}


def _fqdn(ns: str, name: str) -> str:
    return f"{name}.{ns}.svc.cluster.local"


def _protocol(service_port: dict[str, Any] | None) -> str:
    if not service_port:
        return "tcp"
    app = str(service_port.get("appProtocol") or "").lower()
    name = str(service_port.get("name") or "").lower()
    return "http" if app.startswith(HTTP_PREFIXES) or name.startswith(HTTP_PREFIXES) else "tcp"


def _matches_san(patterns: list[str], identity: str) -> bool:
    """Against the model's SAN patterns: exact, `x*` prefix, `*x` suffix, `regex:` (see normalize.tls)."""
    import re

    for pattern in patterns:
        if pattern.startswith("regex:"):
            if re.fullmatch(pattern.removeprefix("regex:"), identity):
                return True
        elif (
            pattern == identity
            or (pattern.endswith("*") and identity.startswith(pattern[:-1]))
            or (pattern.startswith("*") and identity.endswith(pattern[1:]))
        ):
            return True
    return False


def walk(
    ctx: Context,
    src: dict[str, Any],
    dst: Destination,
    service_port: dict[str, Any] | None,
    port: int,
    probe: Any = None,
    request: RequestSpec | None = None,
) -> list[dict[str, Any]]:
    """The steps for one port, stopping after the first failure."""
    steps: list[dict[str, Any]] = []
    src_ns, src_name = key_of(src)
    src_ref = f"{src_ns}/{src_name}"
    src_proxy = ctx.proxy(src)

    def done(item: dict[str, Any]) -> bool:
        steps.append(item)
        return item["ok"] is not True

    # 1. sidecars, and SRC in sync with istiod
    kind = podinfo.sidecar_kind(src)
    if kind not in ("present", "native"):
        done(
            step(
                "sidecar",
                False,
                f"{src_ref} has no sidecar ({kind}): it sends plaintext without an identity",
                f"kubectl label namespace {src_ns} istio-injection=enabled --overwrite && "
                f"kubectl delete pod {src_name} -n {src_ns}",
                sidecar=kind,
            )
        )
        return steps
    if src_proxy is None:
        done(step("sidecar", None, f"could not read {src_ref}'s sidecar config", None, why=_why(ctx, src_ref)))
        return steps
    status = ctx.proxy_status.get((src_ns, src_name))
    if status is not None and status.state in ("STALE", "NOT SENT", "ERROR"):
        done(
            step(
                "sidecar",
                False,
                f"{src_ref}'s sidecar is {status.state} with istiod: it runs old config",
                restart_command(src_proxy),
                types=status.types,
            )
        )
        return steps
    if not dst.pods:
        done(step("sidecar", False, f"no running pod behind {dst.label}", f"kubectl get endpoints -n {dst.namespace}"))
        return steps
    bare = [p for p in dst.pods if podinfo.sidecar_kind(p) == "absent"]
    if bare:
        names = ", ".join("/".join(key_of(p)) for p in bare)
        done(
            step(
                "sidecar",
                False,
                f"{len(bare)} pod(s) behind {dst.label} have no sidecar: {names}",
                f"kubectl mtls check pod {key_of(bare[0])[1]} -n {key_of(bare[0])[0]}",
                pods=["/".join(key_of(p)) for p in bare],
            )
        )
        return steps
    sync = f"synced ({status.state})" if status is not None else "sync unknown (no proxy-status)"
    if done(
        step(
            "sidecar",
            True,
            f"{src_ref} has a sidecar, {sync}; {len(dst.pods)} destination pod(s) have sidecars",
            sync=status.state if status else None,
        )
    ):
        return steps

    # 2. what SRC's sidecar really sends, and the DestinationRule istiod applies for SRC
    if dst.service is None:
        done(
            step(
                "client-tls",
                False,
                f"no Service selects {dst.label}: calls to its pod IP leave through the "
                "passthrough cluster in plaintext",
                f"call it through a Service (kubectl get svc -n {dst.namespace})",
            )
        )
        return steps
    svc_ns, svc_name = key_of(dst.service)
    host = _fqdn(svc_ns, svc_name)
    clusters = [c for c in src_proxy.model["clusters"] if c["host"] == host and c["port"] == port]
    if not clusters:
        done(
            step(
                "client-tls",
                False,
                f"{src_ref}'s sidecar has no outbound cluster for {host}:{port} (outside its "
                "Sidecar/exportTo scope, or stale config)",
                f"istioctl proxy-config cluster {src_name}.{src_ns} --fqdn {host}",
                host=host,
                port=port,
            )
        )
        return steps
    for cluster in clusters:
        mode = cluster["tls_mode"]
        dr = cluster["destination_rule"]
        dr_name = f"{dr['namespace']}/{dr['name']}" if dr and dr.get("name") else None
        if mode in ("DISABLE", "SIMPLE", "MUTUAL"):
            done(
                step(
                    "client-tls",
                    False,
                    f"cluster {cluster['name']} sends {mode}" + (f" (DestinationRule {dr_name})" if dr_name else ""),
                    f"kubectl edit destinationrule {dr['name']} -n {dr['namespace']}   # tls.mode: ISTIO_MUTUAL"
                    if dr_name and dr
                    else None,
                    cluster=cluster["name"],
                    tls_mode=mode,
                    destination_rule=dr_name,
                )
            )
            return steps
        if mode == "AUTO" and cluster["endpoints"] and (cluster["mtls_endpoints"] or 0) < cluster["endpoints"]:
            plain = cluster["endpoints"] - (cluster["mtls_endpoints"] or 0)
            done(
                step(
                    "client-tls",
                    False,
                    f"auto mTLS: {plain} of {cluster['endpoints']} endpoints of {host} lack "
                    "tlsMode: istio, so SRC sends them plaintext",
                    f"kubectl mtls check namespace {dst.namespace}",
                    cluster=cluster["name"],
                    tls_mode=mode,
                )
            )
            return steps
    selected = destinationrule.select(
        ctx.objects("destinationrules"), host, src_ns, svc_ns, ctx.mesh.root_namespace, client_labels=labels_of(src)
    )
    if selected is not None:
        bad = [(m, w) for m, w in destinationrule.tls_modes(selected, port) if m != "ISTIO_MUTUAL"]
        if bad:
            mode, where = bad[0]
            owner = where.split(":", 1)[0]
            done(
                step(
                    "client-tls",
                    False,
                    f"DestinationRule {owner} sets {mode} ({where.split(': ', 1)[-1]}) for "
                    f"{src_ref}; its sidecar has not applied it yet",
                    f"kubectl edit destinationrule {owner.split('/')[-1]} -n {owner.split('/')[0]}",
                    destination_rule=owner,
                    mode=mode,
                )
            )
            return steps
    cluster = clusters[0]
    if done(
        step(
            "client-tls",
            True,
            f"{cluster['name']}: {cluster['tls_mode']} (Istio mTLS)",
            cluster=cluster["name"],
            tls_mode=cluster["tls_mode"],
            destination_rule=selected.rules[0]["metadata"]["name"] if selected else None,
        )
    ):
        return steps

    # 3. identity: the server's SPIFFE ID is one SRC accepts, and the server's cert carries its own SA
    expected = cluster["expected_sans"]
    for pod in dst.pods:
        proxy = ctx.proxy(pod)
        ref = "/".join(key_of(pod))
        if proxy is None:
            done(step("identity", None, f"could not read {ref}'s sidecar config", why=_why(ctx, ref)))
            return steps
        identity = proxy.model["identity"]
        sa = proxy.model["service_account"]
        own = f"spiffe://{ctx.mesh.trust_domain}/ns/{key_of(pod)[0]}/sa/{sa}"
        if identity != own:
            done(
                step(
                    "identity",
                    False,
                    f"{ref}'s certificate says {identity}, not its own {own}",
                    restart_command(proxy),
                    identity=identity,
                    expected=own,
                )
            )
            return steps
        if expected and not _matches_san(expected, identity):
            done(
                step(
                    "identity",
                    False,
                    f"{src_ref} accepts only {', '.join(expected)} but {ref} presents {identity} (SAN mismatch)",
                    f"check the DestinationRule's subjectAltNames and the service accounts of {dst.label}'s pods",
                    expected_sans=expected,
                    identity=identity,
                )
            )
            return steps
    identities = sorted({proxy.model["identity"] or "" for p in dst.pods if (proxy := ctx.proxy(p)) is not None})
    if done(step("identity", True, "server identity accepted: " + ", ".join(identities), expected_sans=expected)):
        return steps

    # 4. what the server enforces on that port accepts mTLS
    for pod in dst.pods:
        proxy = ctx.proxy(pod)
        assert proxy is not None
        ref = "/".join(key_of(pod))
        tport = target_port(service_port, pod) if service_port else port
        entry = next((e for e in proxy.model["inbound"] if e["port"] == tport), None) or next(
            (e for e in proxy.model["inbound"] if e["port"] is None), None
        )
        policy = ctx.effective(pod).mode_for(tport)
        enforced = entry["mode"] if entry else None
        if enforced == "DISABLE" or policy == "DISABLE":
            done(
                step(
                    "server-mode",
                    False,
                    f"{ref} port {tport}: sidecar enforces {enforced}, policy says {policy}: it does not accept mTLS",
                    "kubectl mtls check pod " + f"{key_of(pod)[1]} -n {key_of(pod)[0]}",
                    port=tport,
                    enforced=enforced,
                    policy=policy,
                )
            )
            return steps
        if enforced is None:
            # No inbound chain for the port and no catch-all: we did not see what the sidecar enforces.
            done(
                step(
                    "server-mode",
                    None,
                    f"{ref} port {tport}: the sidecar's inbound listener for this port was not in its config "
                    f"(policy says {policy})",
                    f"istioctl proxy-config listener {key_of(pod)[1]}.{key_of(pod)[0]} --port 15006",
                    port=tport,
                    policy=policy,
                )
            )
            return steps
    if done(
        step(
            "server-mode",
            True,
            "destination accepts mTLS on the port",
            modes={
                "/".join(key_of(p)): ctx.effective(p).mode_for(target_port(service_port, p) if service_port else port)
                for p in dst.pods
            },
        )
    ):
        return steps

    # 5. trust both ways, and dates
    for pod in dst.pods:
        proxy = ctx.proxy(pod)
        assert proxy is not None
        ref = "/".join(key_of(pod))
        for who, proxy_ in ((src_ref, src_proxy), (ref, proxy)):
            for cert in proxy_.model["certificates"][:1]:
                if parse_rfc3339(cert["not_after"]) < ctx.now:
                    problem = f"expired at {cert['not_after']}"
                elif parse_rfc3339(cert["not_before"]) > ctx.now:
                    problem = f"is not valid before {cert['not_before']} (clock skew)"
                else:
                    continue
                done(
                    step(
                        "trust",
                        False,
                        f"{who}'s workload certificate {problem}",
                        restart_command(proxy_),
                        not_before=cert["not_before"],
                        not_after=cert["not_after"],
                    )
                )
                return steps
        for chain_of, roots_of, a, b in ((src_proxy, proxy, src_ref, ref), (proxy, src_proxy, ref, src_ref)):
            ok, why = verify_chain([c.cert for c in chain_of.chain], [r.cert for r in roots_of.roots], ctx.now)
            if ok is None:
                done(step("trust", None, f"cannot tell whether {b} trusts {a}'s certificate: {why}"))
                return steps
            if not ok:
                done(
                    step(
                        "trust",
                        False,
                        f"{b} does not trust {a}'s certificate: {why}",
                        f"kubectl mtls rootdiff {src_ref} {ref}",
                        roots_of_verifier=roots_of.root_fingerprints(),
                    )
                )
                return steps
    if done(step("trust", True, "each side's chain verifies to the other's roots; certificates in date")):
        return steps

    # 6. authorization at the destination, for SRC's identity, this port and (--request) this request
    identity = (src_proxy.model["identity"] or "").removeprefix("spiffe://") or None
    sni = cluster.get("sni")
    if done(authz_step(ctx, src, identity, dst.pods, service_port, port, _protocol(service_port), sni, request)):
        return steps
    if probe is not None:
        steps.append(probe(src, dst, port))
    return steps


def _why(ctx: Context, ref: str) -> str:
    return "; ".join(i["why"] for i in ctx.incomplete if i["what"] == f"pod {ref}") or "unknown"


def _verdict(steps: list[dict[str, Any]]) -> tuple[str, str | None, str | None]:
    for item in steps:
        if item["ok"] is False:
            return "fail", item["step"], item["hint"]
        if item["ok"] is None and (item.get("evidence") or {}).get("outcome") == "depends":
            return "depends", item["step"], item["hint"]
        if item["ok"] is None:
            return "unknown", item["step"], item["hint"]
    return "ok", None, None


def _resolve(ctx: Context, args: argparse.Namespace, dst_ref: tuple[str, str, str]) -> Destination:
    kind, ns, name = dst_ref
    if kind == "service":
        svc = next((s for s in ctx.objects("services") if key_of(s) == (ns, name)), None)
        if svc is None:
            raise NotFoundError(f'services "{name}" not found in namespace "{ns}"')
        pods = [p for p in ctx.pods_of(svc) if ctx.running(p)]
        return Destination("service", ns, name, svc, pods)
    pod = ctx.pods_by_key.get((ns, name))
    if pod is None:
        raise NotFoundError(f'pods "{name}" not found in namespace "{ns}"')
    services = ctx.services_of(pod)
    return Destination("pod", ns, name, services[0] if services else None, [pod])


def _ports(dst: Destination, wanted: int | None) -> list[tuple[dict[str, Any] | None, int]]:
    """(Service port, the port SRC dials) pairs to walk."""
    if dst.service is not None:
        ports = [p for p in (dst.service.get("spec") or {}).get("ports") or [] if isinstance(p.get("port"), int)]
        if dst.kind == "pod" and wanted is not None:  # a pod destination: --port is the container port
            ports = [p for p in ports if target_port(p, dst.pods[0]) == wanted] or ports
        elif wanted is not None:
            ports = [p for p in ports if p["port"] == wanted]
            if not ports:
                raise UsageError(f"{dst.label} has no port {wanted}")
        return [(p, int(p["port"])) for p in ports]
    if wanted is not None:
        return [(None, wanted)]
    container_ports = [
        int(cp["containerPort"])
        for c in (dst.pods[0].get("spec") or {}).get("containers") or []
        for cp in c.get("ports") or []
        if isinstance(cp.get("containerPort"), int)
    ]
    return [(None, p) for p in container_ports] or [(None, 0)]


def run_pair(args: argparse.Namespace) -> int:
    if len(args.names) != 2:
        raise UsageError("check pair needs SRC and DST, e.g. check pair client-7d9 svc/reviews")
    request = parse_request(args)
    source = open_source(args)
    default_ns = namespace_of(args, source)
    src_ns, src_name = parse_pod_ref(args.names[0], default_ns)
    dst_ref = parse_destination(args.names[1], default_ns)
    scope = Scope(src_ns) if src_ns == dst_ref[1] else Scope(None)
    options = Options(istio_namespace=args.istio_namespace, concurrency=args.concurrency)
    service = dst_ref[0] == "service"
    ctx = PairContext(
        source,
        scope,
        now(),
        options,
        pods={(src_ns, src_name)} | (set() if service else {(dst_ref[1], dst_ref[2])}),
        namespaces={dst_ref[1]} if service else set(),
    )
    ctx.load(
        (
            "pods",
            "namespaces",
            "services",
            "peerauthentications",
            "destinationrules",
            "authorizationpolicies",
            "configmaps",
            "proxies",
            "proxy-status",
        )
    )
    if not ctx.available("pods"):
        raise _gather_error(ctx)
    src = ctx.pods_by_key.get((src_ns, src_name))
    if src is None:
        raise NotFoundError(f'pods "{src_name}" not found in namespace "{src_ns}"')
    dst = _resolve(ctx, args, dst_ref)
    probe = None
    if args.probe:
        from .probe import Prober

        probe = Prober(source, ctx)
    walks: list[dict[str, Any]] = []
    for service_port, port in _ports(dst, args.port):
        steps = walk(ctx, src, dst, service_port, port, probe, request)
        verdict, first, hint = _verdict(steps)
        walks.append({"port": port, "verdict": verdict, "steps": steps, "first_failure": first, "hint": hint})
    order = {"fail": 0, "unknown": 1, "depends": 2, "ok": 3}
    worst = min(walks, key=lambda w: order[w["verdict"]])
    data: dict[str, Any] = {
        "verdict": worst["verdict"],
        "source": f"{src_ns}/{src_name}",
        "destination": dst.label,
        "port": worst["port"] if len(walks) == 1 or worst["verdict"] != "ok" else None,
        "steps": worst["steps"],
        "first_failure": worst["first_failure"],
        "hint": worst["hint"],
        "ports": walks,
        "incomplete": ctx.incomplete,
        "request": request.describe() if request else None,
    }
    if worst["verdict"] == "depends":
        evidence = worst["steps"][-1]["evidence"]
        data["conditions"] = {"allowed_when": evidence["allowed_when"], "denied_when": evidence["denied_when"]}
    style = Style.detect(args.no_color)
    emit(data, args.output, args.query, lambda d, wide: table(d, style))
    return {"ok": EXIT_OK, "fail": EXIT_PROBLEM, "unknown": EXIT_GATHER, "depends": EXIT_DEPENDS}[str(data["verdict"])]


def _gather_error(ctx: Context) -> Exception:
    from ..errors import GatherError

    return GatherError(ctx.unavailable.get("pods", "could not list pods"))


def table(data: dict[str, Any], style: Style) -> str:
    marks = {True: style.ok("√"), False: style.error("×"), None: style.warn("?")}
    lines = [f"PAIR   {data['source']} → {data['destination']}"]
    for walk_ in data["ports"]:
        lines.append("")
        lines.append(style.bold(f"port {walk_['port']}"))
        for index, item in enumerate(walk_["steps"], 1):
            number = STEPS.index(item["step"]) + 1 if item["step"] in STEPS else index
            lines.append(f"  {number}. {item['step']:<12} {marks[item['ok']]} {item['detail']}")
            evidence = item.get("evidence") or {}
            if evidence.get("outcome") == "depends":
                lines += [f"     allowed when: {c}" for c in evidence.get("allowed_when") or []]
                lines += [f"     denied when:  {c}" for c in evidence.get("denied_when") or []]
            if item["ok"] is not True and item["hint"]:
                lines.append(f"     fix: {item['hint']}")
        skipped = [s for s in STEPS[len(walk_["steps"]) :] if s != "probe"]
        if walk_["verdict"] != "ok" and skipped:
            lines.append(f"     (not checked after the first broken link: {', '.join(skipped)})")
    for entry in data["incomplete"]:
        lines.append(style.warn(f"incomplete: {entry['what']}: {entry['why']}"))
    verdict = {
        "ok": style.ok("OK: this call works"),
        "fail": style.error(f"FAIL at {data['first_failure']}"),
        "unknown": style.warn(f"UNKNOWN at {data['first_failure']}: data missing"),
        "depends": style.warn(f"DEPENDS at {data['first_failure']}: on the request (see the conditions above)"),
    }[data["verdict"]]
    lines += ["", f"verdict: {verdict}"]
    return "\n".join(lines) + "\n"
