"""`kubectl mtls check`: run every check on a pod, a namespace or the mesh; findings with evidence and fixes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..checks.base import AREAS, Check, all_checks
from ..errors import EXIT_GATHER, EXIT_OK, EXIT_PROBLEM, NotFoundError, UsageError
from ..render import Style, emit
from .common import namespace_of, now, open_source, parse_span, pod_ref, positive_int
from .targets import did_you_mean, unknown_pod

IGNORE_ANNOTATION = "mtls.kubectl.io/ignore"
MARKS = {"ok": "√", "error": "×", "warning": "‼", "info": "·", "skipped": "?", "off": "-"}


def register(sub: Any, output: argparse.ArgumentParser, source: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "check",
        parents=[source, output],
        help="diagnose mTLS for a pod, a namespace or the whole mesh",
        description="Run every check (sidecars and sync, PeerAuthentication precedence and what the sidecars "
        "enforce, certificates and roots, DestinationRules and outbound TLS, AuthorizationPolicies, probes, "
        "logs) and report each problem with its evidence and the command that fixes it. "
        "Exit 1 when an error is found (--fail-on warning: also for warnings).",
        epilog="examples:\n"
        "  kubectl mtls check pod productpage-v1-6b746f74dc-9stvs -n bookinfo\n"
        "  kubectl mtls check namespace bookinfo\n"
        "  kubectl mtls check -A --logs -o json --query 'findings[?severity==`error`]'\n"
        "  kubectl mtls explain root-mismatch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "target",
        nargs="?",
        choices=("pod", "pods", "po", "namespace", "ns", "pair"),
        help="what to check (default: the namespace); 'pair SRC DST': will this call work",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="pod (POD, NAMESPACE/POD, POD.NAMESPACE, or a workload: deploy/NAME, sts/NAME, ds/NAME) or namespace; "
        "for pair: SRC and DST "
        "(a pod, or a Service: svc/NAME, svc/NAME.NS, NAME.NS.svc.cluster.local)",
    )
    parser.add_argument("--port", type=int, help="pair: the Service port SRC dials (a pod: the container port)")
    from .contexts import add_flags

    add_flags(parser)  # pair across clusters: CONTEXT:NS/POD, --source-context, --destination-context
    parser.add_argument(
        "--probe",
        action="store_true",
        help="pair: also send one request from SRC through its sidecar to DST (runs curl in SRC's application "
        "container through the exec API: needs create on pods/exec)",
    )
    parser.add_argument(
        "--require-mtls",
        action="store_true",
        help="pair: a call that works only in plaintext is a failure (exit 1)",
    )
    parser.add_argument(
        "--request",
        metavar="'METHOD PATH'",
        help="pair: decide authorization for this HTTP request (e.g. 'GET /api/items'); without it a "
        "request-dependent answer is 'depends'",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="pair, with --request: a header the request carries (repeatable)",
    )
    parser.add_argument("--host", help="pair, with --request: the request's Host (:authority), with :PORT if sent")
    parser.add_argument(
        "--jwt",
        metavar="TOKEN|none",
        help="pair, with --request: the request's JWT (decoded, not verified, never printed), a JSON object of "
        "its claims, or 'none'",
    )
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="check the whole mesh")
    parser.add_argument("-l", "--selector", help="only check pods with these labels (e.g. app=reviews)")
    parser.add_argument("--logs", action="store_true", help="also read sidecar and istiod logs when scanning")
    parser.add_argument("--tail", type=positive_int, default=500, metavar="N", help="log lines to read per container")
    parser.add_argument(
        "--expiring-within",
        type=parse_span,
        metavar="DURATION",
        help="also warn about certificates expiring within this time (e.g. 72h, 30d)",
    )
    parser.add_argument(
        "--fail-on",
        choices=("error", "warning"),
        default="error",
        help="lowest severity that makes the exit code 1 (default: error)",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="CHECK[:NS/NAME]",
        help="suppress a check, or a check for one object (repeatable)",
    )
    parser.add_argument("--concurrency", type=positive_int, default=8, metavar="N", help="sidecars read at once")
    parser.set_defaults(handler=run)


def _scope(args: argparse.Namespace, source: Any) -> Any:
    from ..checks.context import Scope

    if len(args.names) > 1:
        raise UsageError(f"unexpected arguments {' '.join(args.names[1:])!r}: one pod or namespace at a time")
    name = args.names[0] if args.names else None
    if args.all_namespaces:
        if args.target in ("pod", "pods", "po") and name:
            raise UsageError("a pod name and -A do not go together")
        return Scope(None)
    if args.target in ("pod", "pods", "po") and name:
        return Scope(*pod_ref(args, source, name))
    if args.target in ("namespace", "ns") and name:
        return Scope(name)
    if name:
        raise UsageError(f"unexpected argument {name!r}: use 'check pod NAME' or 'check namespace NAME'")
    return Scope(namespace_of(args, source))


def _concerns(finding: dict[str, Any], namespace: str, pod: str) -> bool:
    if finding["kind"] == "Pod" and (finding["namespace"], finding["name"]) == (namespace, pod):
        return True
    return f"{namespace}/{pod}" in (finding["evidence"].get("pods") or [])


def _ignored(finding: dict[str, Any], rules: list[str], ctx: Any) -> bool:
    obj = f"{finding['namespace']}/{finding['name']}" if finding["namespace"] else finding["name"]
    for rule in rules:
        slug, _, target = rule.partition(":")
        if slug == finding["check"] and (not target or target == obj or target in finding["evidence"].get("pods", [])):
            return True
    annotated: list[dict[str, Any]] = []
    ns = finding["namespace"] or (finding["name"] if finding["kind"] == "Namespace" else "")
    if ns in ctx.namespaces:
        annotated.append(ctx.namespaces[ns])
    if finding["kind"] == "Pod" and (finding["namespace"], finding["name"]) in ctx.pods_by_key:
        annotated.append(ctx.pods_by_key[(finding["namespace"], finding["name"])])
    for obj_ in annotated:
        value = ((obj_.get("metadata") or {}).get("annotations") or {}).get(IGNORE_ANNOTATION, "")
        if finding["check"] in {v.strip() for v in str(value).split(",")}:
            return True
    return False


def run(args: argparse.Namespace) -> int:
    if args.target == "pair":
        from .pair import run_pair

        return run_pair(args)
    if args.port is not None or args.probe or args.require_mtls or args.request or args.header or args.host or args.jwt:
        raise UsageError(
            "--port, --probe, --require-mtls, --request, --header, --host and --jwt go with 'check pair SRC DST'"
        )
    checks = all_checks()
    known = {c.slug for c in checks}
    for rule in args.ignore:
        if rule.endswith(":"):
            raise UsageError(f"--ignore {rule}: name the object after ':' (NAMESPACE/NAME), or drop the ':'")
        if rule.partition(":")[0] not in known:
            raise UsageError(f"--ignore {rule}: no check named {rule.partition(':')[0]!r} (see kubectl mtls explain)")
    import gc

    # A scan keeps every object it lists and every model it builds until it prints, and they hold no
    # reference cycles: the cyclic collector would only walk the freshly parsed pods and objects again
    # and again while they are listed, and the checks' own allocations after. Paused for the scan, as
    # gather.proxies pauses it for the loading; whatever cycle a scan leaves is collected once it is over.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _scan(args, checks)
    finally:
        if collecting:
            gc.enable()


def _scan(args: argparse.Namespace, checks: list[Check]) -> int:
    from ..checks.context import Context, Options, key_of

    source = open_source(args)
    scope = _scope(args, source)
    scope.selector = args.selector
    options = Options(
        istio_namespace=args.istio_namespace,
        expiring_within=args.expiring_within,
        logs=args.logs,
        tail=args.tail,
        concurrency=args.concurrency,
        progress=sys.stderr.isatty() and args.output != "json",
    )
    with_logs = scope.pod is not None or args.logs
    selected = [c for c in checks if with_logs or not c.needs_logs]
    ctx = Context(source, scope, now(), options)
    try:
        ctx.load({name for c in selected for name in (*c.reads, *c.optional)})
    except NotFoundError:
        if scope.pod is None or not ctx.available("pods"):
            raise
        raise unknown_pod(source, scope.namespace, scope.pod, ctx.pods) from None
    known_namespaces = ctx.available("namespaces") and ctx.objects("namespaces")
    if scope.namespace and known_namespaces and scope.namespace not in ctx.namespaces:
        close = did_you_mean(scope.namespace, list(ctx.namespaces))
        raise NotFoundError(f'namespace "{scope.namespace}" not found{close}')
    finished = [p for p in ctx.targets if not ctx.running(p)]
    if finished:  # say why these pods get no verdict, instead of a silent √
        shown = ", ".join(f"{'/'.join(key_of(p))} ({(p.get('status') or {}).get('phase')})" for p in finished[:5])
        more = f", and {len(finished) - 5} more" if len(finished) > 5 else ""
        ctx.note("pods", f"skipped {len(finished)} pod(s) that are not running: {shown}{more}")
    if ctx.available("pods") and not ctx.targets:
        where = f"namespace {scope.namespace}" if scope.namespace else "any namespace"
        ctx.note("pods", f"no pods to check in {where}" + (f" matching {scope.selector}" if scope.selector else ""))
    findings: list[dict[str, Any]] = []
    statuses: list[dict[str, str]] = []
    suppressed = 0
    for item in checks:
        if item not in selected:  # a log check left out of a scan by choice: say so, and how to turn it on
            statuses.append({"check": item.slug, "area": item.area, "status": "off", "enable": "--logs"})
            continue
        missing = [name for name in item.reads if not ctx.available(name)]
        if missing:
            listed = {entry["what"] for entry in ctx.incomplete}  # reasons already given once
            why = ", ".join(name if name in listed else f"{name} ({ctx.unavailable[name]})" for name in missing)
            ctx.note(f"check {item.slug}", f"not run: could not read {why}")
            statuses.append({"check": item.slug, "area": item.area, "status": "skipped"})
            continue
        try:
            produced = list(item.run(ctx))
        except Exception as exc:  # one faulty check must not hide the others' findings
            ctx.note(f"check {item.slug}", f"internal error: {type(exc).__name__}: {exc}")
            statuses.append({"check": item.slug, "area": item.area, "status": "skipped"})
            continue
        if scope.pod is not None and not item.mesh_wide:  # `check pod`: what concerns this pod only
            produced = [f for f in produced if _concerns(f, scope.namespace, scope.pod)]
        kept = [f for f in produced if not _ignored(f, args.ignore, ctx)]
        suppressed += len(produced) - len(kept)
        findings.extend(kept)
        statuses.append({"check": item.slug, "area": item.area, "status": _worst(kept)})
    summary = {sev: sum(1 for f in findings if f["severity"] == sev) for sev in ("error", "warning", "info")}
    summary["suppressed"] = suppressed
    summary["skipped"] = sum(1 for status in statuses if status["status"] == "skipped")
    data = {"findings": findings, "summary": summary, "incomplete": ctx.incomplete, "checks": statuses}
    style = Style.detect(args.no_color)
    by_slug = {c.slug: c for c in checks}
    emit(data, args.output, args.query, lambda d, wide: table(d, by_slug, style, wide))
    if not ctx.available("pods"):  # every check is about workloads: without pods nothing was gathered
        return EXIT_GATHER
    bar = ("error", "warning") if args.fail_on == "warning" else ("error",)
    return EXIT_PROBLEM if any(f["severity"] in bar for f in findings) else EXIT_OK


def _worst(findings: list[dict[str, Any]]) -> str:
    for severity in ("error", "warning", "info"):
        if any(f["severity"] == severity for f in findings):
            return severity
    return "ok"


def _evidence(evidence: dict[str, Any], wide: bool) -> str:
    parts = []
    for key, value in evidence.items():
        if value in (None, [], {}, "") or (key == "pods" and not wide):
            continue
        if isinstance(value, list):
            shown = ", ".join(str(v) for v in value[:5]) + (f", … ({len(value)} in all)" if len(value) > 5 else "")
        elif isinstance(value, dict):
            shown = ", ".join(f"{k} {v}" for k, v in list(value.items())[:6])
        else:
            shown = str(value)
        parts.append(f"{key.replace('_', ' ')}: {shown}")
    return "; ".join(parts)


def table(data: dict[str, Any], checks: dict[str, Check], style: Style, wide: bool) -> str:
    paint: dict[str, Callable[[str], str]] = {
        "ok": style.ok,
        "error": style.error,
        "warning": style.warn,
        "info": lambda s: s,
        "skipped": style.warn,
        "off": lambda s: s,
    }
    lines: list[str] = []
    for area in AREAS:
        statuses = [s for s in data["checks"] if s["area"] == area]
        if not statuses:
            continue
        lines += [style.bold(area), "-" * len(area)]
        for status in statuses:
            item = checks[status["check"]]
            mark = paint[status["status"]](MARKS[status["status"]])
            off = f" (skipped: scans read no logs; add {status['enable']})" if status["status"] == "off" else ""
            lines.append(f"{mark} {item.title} [{item.slug}]{off}")
            for f in data["findings"]:
                if f["check"] != item.slug:
                    continue
                obj = f"{f['namespace']}/{f['name']}" if f["namespace"] else f["name"]
                lines.append(f"    {paint[f['severity']](MARKS[f['severity']])} {f['kind']} {obj}: {f['message']}")
                if f["severity"] != "info" or wide:
                    evidence = _evidence(f["evidence"], wide)
                    if evidence:
                        lines.append(f"      evidence: {evidence}")
                if f["hint"]:
                    lines.append(f"      fix: {f['hint']}")
            if status["status"] in ("error", "warning"):
                lines.append(f"      see: kubectl mtls explain {item.slug}")
        lines.append("")
    if data["incomplete"]:
        lines += [style.bold("could not check"), "-" * 15]
        lines += [style.warn(f"? {i['what']}: {i['why']}") for i in data["incomplete"]]
        lines.append("")
    s = data["summary"]
    if s["error"]:
        verdict = style.error("×")
    elif s["warning"]:
        verdict = style.warn("‼")
    else:  # nothing found is only "fine" if every check could run
        verdict = style.warn("?") if s.get("skipped") else style.ok("√")
    extra = f", {s['suppressed']} suppressed" if s["suppressed"] else ""
    extra += f", {s['skipped']} check(s) could not run" if s.get("skipped") else ""
    lines.append(
        f"Status check results are {verdict}: {s['error']} error(s), {s['warning']} warning(s), {s['info']} info{extra}"
    )
    return "\n".join(lines) + "\n"
