"""`kubectl mtls certs`: workload certificates and roots per pod, soonest expiry first."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from ..errors import EXIT_GATHER, EXIT_OK, EXIT_PROBLEM
from ..gather.proxies import load_many, load_proxy
from ..model import Proxy
from ..normalize.certs import parse_rfc3339
from ..render import Style, columns, duration, emit
from .common import namespace_of, now, open_source, pod_ref
from .targets import require_namespace, unknown_pod


def register(sub: Any, output: argparse.ArgumentParser, source: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "certs",
        parents=[source, output],
        help="list workload certificates and roots, soonest expiry first",
        description="List each sidecar's workload certificate chain (secret default) and trusted roots "
        "(secret ROOTCA), soonest expiry first, with the time left. Exits 1 if any is expired or not yet valid.",
        epilog="examples:\n  kubectl mtls certs -A\n  kubectl mtls certs -n bookinfo -o json "
        "--query 'items[?expires_in_seconds < `86400`]'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "pod", nargs="?", help="only this pod (POD, NAMESPACE/POD, POD.NAMESPACE, or deploy/NAME, sts/NAME, ds/NAME)"
    )
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument("-l", "--selector", help="label selector for pods (e.g. app=reviews)")
    parser.set_defaults(handler=run)


def rows_of(proxy: Proxy, moment: datetime) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    model = proxy.model
    entries: list[tuple[str, str, dict[str, Any]]] = []
    root_fps = {r["fingerprint_sha256"] for r in model["roots"]}
    for index, cert in enumerate(model["certificates"]):
        if index > 0 and cert["fingerprint_sha256"] in root_fps:
            continue  # the chain's copy of a root also in ROOTCA: listed once, as ROOTCA
        if index == 0:
            role = "workload"
        elif cert.get("self_signed"):
            role = "root"
        else:
            role = "intermediate"
        entries.append(("default", role, dict(cert)))
    entries.extend(("ROOTCA", "root", dict(root)) for root in model["roots"])
    for secret, role, info in entries:
        not_after = parse_rfc3339(info["not_after"])
        not_before = parse_rfc3339(info["not_before"])
        rows.append(
            {
                "namespace": model["namespace"],
                "pod": model["pod"],
                "secret": secret,
                "role": role,
                "subject": info["subject"],
                "identity": next(iter(info["sans"]["uri"]), None),
                "fingerprint_sha256": info["fingerprint_sha256"],
                "not_before": info["not_before"],
                "not_after": info["not_after"],
                "expires_in_seconds": int((not_after - moment).total_seconds()),
                "not_yet_valid": not_before > moment,
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    source = open_source(args)
    moment = now()
    incomplete: list[dict[str, str]] = []
    failures = 0
    if args.pod:
        namespace, name = pod_ref(args, source, args.pod)
        proxies = [load_proxy(source, namespace, name, moment, missing=unknown_pod)]
    else:
        scope = None if args.all_namespaces else namespace_of(args, source)
        pods = source.list_pods(scope, args.selector)
        if scope is not None and not pods:  # an empty namespace, or a typo: say which
            require_namespace(source, scope)
        proxies, incomplete = load_many(source, pods, moment)
    failures = len(incomplete)
    items = [row for proxy in proxies for row in rows_of(proxy, moment)]
    items.sort(key=lambda r: (r["expires_in_seconds"], r["namespace"], r["pod"], r["secret"]))
    for proxy in proxies:
        # Only what this command needed: a dump without clusters or listeners is complete for certs.
        for note in proxy.notes_about("certificates"):
            if proxy.model["sidecar"] in ("present", "native"):
                incomplete.append({"namespace": proxy.model["namespace"], "pod": proxy.model["pod"], "error": note})
    data = {"items": items, "incomplete": incomplete}
    style = Style.detect(args.no_color)
    emit(data, args.output, args.query, lambda d, wide: table(d, wide, style))
    if failures and not proxies:  # every pod failed to read: nothing was gathered
        return EXIT_GATHER
    if any(r["expires_in_seconds"] < 0 or r["not_yet_valid"] for r in items):
        return EXIT_PROBLEM
    return EXIT_OK


def table(data: dict[str, Any], wide: bool, style: Style) -> str:
    rows = []
    for r in data["items"]:
        left = duration(r["expires_in_seconds"])
        if r["expires_in_seconds"] < 0:
            left = style.error(f"EXPIRED {duration(-r['expires_in_seconds'])} ago")
        elif r["not_yet_valid"]:
            left = style.error("NOT YET VALID")
        elif r["expires_in_seconds"] < 6 * 3600:
            left = style.warn(left)
        fp = r["fingerprint_sha256"] if wide else r["fingerprint_sha256"][:23] + "…"
        rows.append(
            [
                r["namespace"],
                r["pod"],
                r["secret"],
                r["role"],
                r["subject"] or r["identity"] or "",
                r["not_after"],
                left,
                fp,
            ]
        )
    text = columns(["NAMESPACE", "POD", "SECRET", "ROLE", "SUBJECT / SAN", "NOT AFTER", "TIME LEFT", "SHA-256"], rows)
    if not data["items"]:
        text = "No certificates found.\n"
    for entry in data["incomplete"]:
        text += style.warn(f"incomplete: {entry['namespace']}/{entry['pod']}: {entry['error']}") + "\n"
    return text
