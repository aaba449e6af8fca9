"""`kubectl mtls strict-ready`: is it safe to switch a namespace (or the mesh) from PERMISSIVE to STRICT?

For every workload that accepts plaintext today it lists who still sends it plaintext, from the
sidecars' own Istio metrics (`istio_requests_total` / `istio_tcp_connections_opened_total` with
`reporter="destination"`, `connection_security_policy="none"`) and, with --prometheus, from their
history; and it runs the checks that would start failing once STRICT applies, against a simulated
STRICT policy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from ..checks.base import Finding, all_checks, finding
from ..checks.context import Context, Options, Scope, key_of, labels_of, meta
from ..errors import EXIT_GATHER, EXIT_OK, EXIT_PROBLEM, MtlsError
from ..normalize import pod as podinfo
from ..render import Style, columns, emit
from .common import namespace_of, now, open_source, positive_int
from .targets import require_namespace

# Checks whose findings appear only once STRICT is in force: run them against the simulated switch.
AFTER_SWITCH = (
    "sidecar-missing",
    "mixed-sidecar-service",
    "probe-not-rewritten",
    "destinationrule-tls-conflict",
    "outbound-plaintext-to-strict",
    "apiserver-caller-strict",
    "metrics-scrape-strict",
)


def register(sub: Any, output: argparse.ArgumentParser, source: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "strict-ready",
        parents=[source, output],
        help="is it safe to switch from PERMISSIVE to STRICT? who still sends plaintext",
        description="For each workload that accepts plaintext today, list who still talks to it in plaintext "
        "(and which callers have no sidecar), from the sidecars' own Istio metrics and optionally a Prometheus "
        "server's history; and list what would start failing once STRICT applies. Exit 0 ready, 1 not ready, "
        "3 unknown (no traffic data).",
        epilog="examples:\n  kubectl mtls strict-ready -n bookinfo\n"
        "  kubectl mtls strict-ready -A --prometheus http://localhost:9090 --window 14d",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="the whole mesh (mesh-wide switch)")
    parser.add_argument("-l", "--selector", help="only workloads whose pods have these labels")
    parser.add_argument("--prometheus", metavar="URL", help="also read the metrics' history from this Prometheus")
    parser.add_argument(
        "--window", default="7d", type=_window, help="history window with --prometheus (default 7d; e.g. 12h, 14d)"
    )
    parser.add_argument("--concurrency", type=positive_int, default=8, metavar="N", help="sidecars read at once")
    parser.set_defaults(handler=run)


def _window(value: str) -> str:
    from ..errors import UsageError
    from ..sources.prometheus import check_window

    try:
        return check_window(value)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def workload_of(pod: dict[str, Any]) -> str:
    """Istio's `destination_workload`: the controller's name (Deployment behind its ReplicaSet)."""
    labels = labels_of(pod)
    for owner in meta(pod).get("ownerReferences") or []:
        name = str(owner.get("name") or "")
        template_hash = labels.get("pod-template-hash")
        if owner.get("kind") == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            return name.removesuffix(f"-{template_hash}")
        if name:
            return name
    return str(meta(pod).get("name") or "")


def caller_reason(ctx: Context, caller: Any, dst_pods: list[dict[str, Any]]) -> tuple[str, str | None]:
    """Why this caller sends the workload plaintext, in check pair's words, and what would change it:
    from the caller's own sidecar config (its outbound clusters for the workload's Services)."""
    from ..istio import automtls

    if caller.source_workload == "unknown":
        return "caller has no sidecar", None
    ns, workload = caller.source_namespace, caller.source_workload
    client_pods = [p for p in ctx.pods_by_namespace.get(ns, []) if workload_of(p) == workload]
    proxies = [proxy for p in client_pods if (proxy := ctx.proxy(p)) is not None]
    if not proxies:
        return f"not known: the sidecar config of {ns}/{workload} was not read (outside the scope, or unreadable)", None
    hosts = {f"{key_of(svc)[1]}.{key_of(svc)[0]}.svc.cluster.local" for p in dst_pods for svc in ctx.services_of(p)}
    clusters = [c for proxy in proxies for c in proxy.model["clusters"] if c["host"] in hosts]
    if not clusters:
        return (
            f"{ns}/{workload}'s sidecar has no outbound cluster for the workload's Services: it calls a pod IP, "
            "which leaves through the passthrough cluster in plaintext",
            None,
        )
    for cluster in clusters:
        if cluster["tls_mode"] == "DISABLE":
            dr = cluster["destination_rule"]
            hint = (
                f"kubectl edit destinationrule {dr['name']} -n {dr['namespace']}   # tls.mode ISTIO_MUTUAL, or no tls"
                if dr and dr.get("name")
                else None
            )
            return automtls.disable_reason(cluster), hint
    for cluster in clusters:
        total, istio = cluster["endpoints"], cluster["mtls_endpoints"]
        if cluster["tls_mode"] == "AUTO" and total and (istio or 0) < total:
            whys = []
            for pod in dst_pods:
                label = labels_of(pod).get(automtls.TLS_LABEL, "istio")
                if ctx.effective(pod).mode == "DISABLE":
                    whys.append(f"{'/'.join(key_of(pod))} is DISABLE")
                elif label != "istio":
                    whys.append(f"{'/'.join(key_of(pod))} is labelled {automtls.TLS_LABEL}={label}")
            return automtls.auto_reason(total - (istio or 0), total, whys), None
    return (
        f"not known: {ns}/{workload}'s sidecar sends this workload mTLS now (the plaintext came earlier, or over "
        "another path)",
        None,
    )


def _simulate_strict(ctx: Context, scope: Scope) -> None:
    """Add the STRICT policy the user is about to apply, older than everything so it wins its level."""
    where = scope.namespace or ctx.mesh.root_namespace
    synthetic = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {
            "name": "kubectl-mtls-simulated-strict",
            "namespace": where,
            "creationTimestamp": "1970-01-01T00:00:00Z",
        },
        "spec": {"mtls": {"mode": "STRICT"}},
    }
    ctx.assume("peerauthentications", synthetic)


ZTUNNEL = "ztunnel"  # marks the ztunnel pods among those whose stats are read


def ztunnels_of(ctx: Context, ambient: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ztunnels of the nodes the ambient pods run on: each reports, as `reporter="destination"`, the
    connections its node's ambient pods accept (`connection_security_policy` `mutual_tls` or `unknown`)."""
    if not ambient:
        return []
    try:
        by_node = {(p.get("spec") or {}).get("nodeName"): p for p in ctx.source.ztunnel_pods()}
    except MtlsError as exc:
        ctx.note("ztunnel pods", str(exc))
        return []
    wanted: dict[tuple[str, str], dict[str, Any]] = {}
    for pod in ambient:
        node = (pod.get("spec") or {}).get("nodeName")
        ztunnel = by_node.get(node)
        if ztunnel is None:
            ctx.note(f"stats of {'/'.join(key_of(pod))}", f"no ztunnel pod found on its node {node or '(unknown)'}")
            continue
        wanted[key_of(ztunnel)] = {**ztunnel, "kind": ZTUNNEL}
    return list(wanted.values())


def _callers(
    ctx: Context, source: Any, pods: list[dict[str, Any]], args: argparse.Namespace, scope: Scope
) -> tuple[dict[tuple[str, str], list[Any]], set[tuple[str, str]], dict[tuple[str, str], dict[str, float]]]:
    """(namespace, workload) -> plaintext callers; the workloads we have any traffic data for; and each
    pod's inbound listener TLS stats where the mesh exposes them."""
    from concurrent.futures import ThreadPoolExecutor

    from ..normalize.promstats import inbound_tls_stats, parse_exposition, plaintext_callers, seen_destinations

    by_workload: dict[tuple[str, str], dict[tuple[str, str, str], Any]] = {}
    listener_stats: dict[tuple[str, str], dict[str, float]] = {}
    seen: set[tuple[str, str]] = set()

    def merge(callers: list[Any]) -> None:
        for caller in callers:
            key = (caller.destination_namespace, caller.destination_workload)
            seen.add(key)
            if caller.requests <= 0 and caller.connections <= 0:
                continue
            who = (caller.source_namespace, caller.source_workload, caller.source_principal)
            slot = by_workload.setdefault(key, {})
            if who not in slot or (slot[who].requests + slot[who].connections) < caller.requests + caller.connections:
                slot[who] = caller

    def stats(pod: dict[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
        ns, name = key_of(pod)
        try:
            if pod.get("kind") == ZTUNNEL:
                return pod, source.ztunnel_stats(ns, name), None
            return pod, source.envoy_stats(ns, name), None
        except MtlsError as exc:
            return pod, None, str(exc)

    sidecars = [p for p in pods if podinfo.has_envoy(p)]
    ztunnels = ztunnels_of(ctx, [p for p in pods if not podinfo.has_envoy(p)])
    with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
        for pod, text, error in pool.map(stats, sidecars + ztunnels):
            ns, name = key_of(pod)
            if error is not None or text is None:
                ctx.note(f"stats of {ns}/{name}", error or "empty")
                continue
            try:
                samples = parse_exposition(text)
                merge(plaintext_callers(samples))
                seen.update(seen_destinations(samples))
                listener = inbound_tls_stats(samples)
                if listener:
                    listener_stats[(ns, name)] = listener
            except ValueError as exc:
                ctx.note(f"stats of {ns}/{name}", f"unreadable Prometheus text: {exc}")
    if args.prometheus:
        from ..sources.prometheus import PrometheusSource

        try:
            history = PrometheusSource(args.prometheus).traffic(scope.namespace, args.window)
            merge(plaintext_callers(history))
            seen.update(seen_destinations(history))  # workloads that only ever saw mTLS are ready
        except MtlsError as exc:
            ctx.note(f"Prometheus {args.prometheus}", str(exc))
    return {k: list(v.values()) for k, v in by_workload.items()}, seen, listener_stats


def run(args: argparse.Namespace) -> int:
    if args.prometheus:  # a URL that cannot work is a usage error before anything is read
        from ..sources.prometheus import check_url

        check_url(args.prometheus)
    source = open_source(args)
    scope = Scope(None) if args.all_namespaces else Scope(namespace_of(args, source))
    scope.selector = args.selector
    options = Options(
        istio_namespace=args.istio_namespace,
        concurrency=args.concurrency,
        progress=sys.stderr.isatty() and args.output != "json",
    )
    ctx = Context(source, scope, now(), options)
    checks = {c.slug: c for c in all_checks()}
    ctx.load({name for slug in AFTER_SWITCH for name in checks[slug].reads})
    if scope.namespace and ctx.available("pods") and not ctx.pods:  # an empty namespace, or a typo
        require_namespace(source, scope.namespace)
    if not ctx.available("pods"):
        data = {
            "verdict": "unknown",
            "workloads": [],
            "findings": [],
            "summary": _summary([]),
            "incomplete": ctx.incomplete,
        }
        emit(data, args.output, args.query, lambda d, wide: table(d, Style.detect(args.no_color), wide))
        return EXIT_GATHER
    today = {key_of(p): ctx.effective(p) for p in ctx.targets}
    # In the mesh: a sidecar, or captured by ztunnel (ambient; its node's ztunnel reports its traffic).
    meshed = [
        p
        for p in ctx.targets
        if (podinfo.has_envoy(p) or podinfo.sidecar_kind(p) == "ambient")
        and ctx.running(p)
        and not ctx.exempt(key_of(p)[0])
        and not podinfo.is_gateway(p)
    ]
    policies_read = ctx.available("peerauthentications")
    lax = [
        p
        for p in meshed
        # without PeerAuthentications read, today's mode is unknown: every workload is looked at
        if not policies_read
        or today[key_of(p)].mode != "STRICT"
        or any(m != "STRICT" for m in today[key_of(p)].ports.values())
    ]
    if not meshed:
        where = f"namespace {scope.namespace}" if scope.namespace else "any namespace"
        ctx.note("pods", f"no sidecar pods in {where}" + (f" matching {scope.selector}" if scope.selector else ""))
    callers, seen, listener = _callers(ctx, source, lax, args, scope)

    workloads: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pod in lax:
        workloads.setdefault((key_of(pod)[0], workload_of(pod)), []).append(pod)
    findings: list[Finding] = []
    rows: list[dict[str, Any]] = []
    for (ns, name), pods in sorted(workloads.items()):
        found = callers.get((ns, name), [])
        reasons = [caller_reason(ctx, caller, pods) for caller in found]
        if found:
            verdict = "not ready"
            for caller, (reason, reason_hint) in zip(found, reasons, strict=True):
                no_sidecar = caller.source_workload == "unknown"
                who = (
                    "a caller without sidecar" if no_sidecar else f"{caller.source_namespace}/{caller.source_workload}"
                )
                findings.append(
                    finding(
                        "plaintext-caller",
                        "error",
                        "Pod",
                        ns,
                        key_of(pods[0])[1],
                        f"workload {ns}/{name} still receives plaintext from {who}: {caller.requests:g} request(s), "
                        f"{caller.connections:g} connection(s); why: {reason}",
                        "find that client (the access log's source address) and give it a sidecar, or keep a "
                        "port-level PERMISSIVE exception for it"
                        if no_sidecar
                        else reason_hint
                        or f"kubectl mtls check pod -n {caller.source_namespace} -l app={caller.source_workload}   "
                        "# it has a sidecar but sends plaintext: look for a DestinationRule DISABLE",
                        plaintext_reason=reason,
                        pods=["/".join(key_of(p)) for p in pods],
                        source_workload=caller.source_workload,
                        source_namespace=caller.source_namespace,
                        source_principal=caller.source_principal,
                        no_sidecar=no_sidecar,
                        requests=caller.requests,
                        connections=caller.connections,
                    )
                )
        elif (ns, name) in seen:
            verdict = "ready"
        else:
            verdict = "unknown"
            findings.append(
                finding(  # not read is said, never a warning: the verdict is "unknown"
                    "no-traffic-data",
                    "info",
                    "Pod",
                    ns,
                    key_of(pods[0])[1],
                    f"no Istio traffic metrics for workload {ns}/{name}: it had no traffic yet, or its stats were not "
                    "read; cannot tell who would break",
                    "re-run after traffic, or pass --prometheus URL for history",
                    pods=["/".join(key_of(p)) for p in pods],
                )
            )
        rows.append(
            {
                "namespace": ns,
                "workload": name,
                "mode": today[key_of(pods[0])].mode if policies_read else "unknown",
                "verdict": verdict,
                "pods": ["/".join(key_of(p)) for p in pods],
                "callers": [{**c.__dict__, "plaintext_reason": r[0]} for c, r in zip(found, reasons, strict=True)],
            }
        )

    _simulate_strict(ctx, scope)
    not_run = []
    for slug in AFTER_SWITCH:
        item = checks[slug]
        missing = [name for name in item.reads if not ctx.available(name)]
        if missing:
            ctx.note(f"check {slug}", f"not run: could not read {', '.join(missing)}")
            not_run.append(slug)
            continue
        for f in _after_switch(item.run(ctx)):
            f["message"] = "after the switch: " + f["message"]
            findings.append(f)
            for row in rows:
                if set(row["pods"]) & set(f["evidence"].get("pods") or []):
                    row["verdict"] = "not ready"

    notes = []
    for row in rows:
        keys = [tuple(p.split("/", 1)) for p in row["pods"]]
        row["listener_stats"] = {"/".join(k): listener[(k[0], k[1])] for k in keys if (k[0], k[1]) in listener}
    if rows and not listener:
        notes.append(
            "listener TLS stats (ssl.*, no_filter_chain_match, tls_inspector) are not exposed: Istio's default stats "
            "inclusion list drops them, so plaintext that carries no Istio metadata shows only in istio_* metrics; "
            "to see it, restart the workloads with the annotation proxy.istio.io/config: "
            '\'{"proxyStatsMatcher":{"inclusionPrefixes":["listener","tls_inspector"]}}\''
        )
    verdicts = {r["verdict"] for r in rows}
    errors = [f for f in findings if f["severity"] == "error"]
    overall = "not ready" if errors or "not ready" in verdicts else "unknown" if "unknown" in verdicts else "ready"
    if not meshed:  # nothing to judge: neither ready nor not ready
        overall = "unknown"
    if overall == "ready" and not_run and rows:  # "ready" would rest on checks that could not run
        overall = "unknown"
    data = {
        "verdict": overall,
        "workloads": rows,
        "findings": findings,
        "summary": _summary(findings),
        "notes": notes,
        "incomplete": ctx.incomplete,
    }
    emit(data, args.output, args.query, lambda d, wide: table(d, Style.detect(args.no_color), wide))
    return {"ready": EXIT_OK, "not ready": EXIT_PROBLEM, "unknown": EXIT_GATHER}[overall]


def _after_switch(produced: Any) -> Iterator[Finding]:
    for f in produced:
        if f["severity"] == "error" or f["check"] != "mixed-sidecar-service":
            yield f


def _summary(findings: list[Finding]) -> dict[str, int]:
    return {sev: sum(1 for f in findings if f["severity"] == sev) for sev in ("error", "warning", "info")}


def table(data: dict[str, Any], style: Style, wide: bool = False) -> str:
    paint = {"ready": style.ok, "not ready": style.error, "unknown": style.warn}
    lines = []
    if data["workloads"]:
        rows = []
        for w in data["workloads"]:
            callers = (
                ", ".join(
                    (
                        "(no sidecar)"
                        if c["source_workload"] == "unknown"
                        else f"{c['source_namespace']}/{c['source_workload']}"
                    )
                    + f" {c['requests'] + c['connections']:g}"
                    for c in w["callers"]
                )
                or "-"
            )
            pods = [", ".join(str(p) for p in w.get("pods") or [])] if wide else []
            rows.append([w["namespace"], w["workload"], w["mode"], paint[w["verdict"]](w["verdict"]), callers, *pods])
        headers = ["NAMESPACE", "WORKLOAD", "MODE NOW", "VERDICT", "PLAINTEXT CALLERS"] + (["PODS"] if wide else [])
        lines.append(columns(headers, rows).rstrip())
    else:
        lines.append(
            "No workload to switch." if data["incomplete"] else "Every workload in scope already enforces STRICT."
        )
    why = [(w, c) for w in data["workloads"] for c in w["callers"] if c.get("plaintext_reason")]
    if why:
        lines += ["", style.bold("why they send plaintext")]
        for w, c in why:
            who = f"{c['source_namespace']}/{c['source_workload']}"
            who = "(no sidecar)" if c["source_workload"] == "unknown" else who
            lines.append(f"  {who} → {w['namespace']}/{w['workload']}: {c['plaintext_reason']}")
    after = [f for f in data["findings"] if f["message"].startswith("after the switch")]
    if after:
        lines += ["", style.bold("would break after the switch")]
        for f in after:
            obj = f"{f['namespace']}/{f['name']}" if f["namespace"] else f["name"]
            lines.append(f"  {style.error('×')} {f['check']} {f['kind']} {obj}: {f['message']}")
            if f["hint"]:
                lines.append(f"      fix: {f['hint']}")
    for note in data.get("notes") or []:
        lines.append(f"note: {note}")
    for entry in data["incomplete"]:
        lines.append(style.warn(f"incomplete: {entry['what']}: {entry['why']}"))
    lines += ["", f"verdict: {paint[data['verdict']](data['verdict'].upper())}"]
    return "\n".join(lines) + "\n"
