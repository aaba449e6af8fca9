"""`kubectl mtls proxy POD`: the normalized model of one sidecar."""

from __future__ import annotations

import argparse
from typing import Any

from ..gather.proxies import load_proxy
from ..render import Style, columns, emit
from .common import namespace_of, now, open_source, pod_ref, require
from .targets import selector_pod, unknown_pod


def register(sub: Any, output: argparse.ArgumentParser, source: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "proxy",
        parents=[source, output],
        help="show one sidecar's normalized mTLS config",
        description="Show what one sidecar holds and enforces: identity, workload certificate chain, "
        "trusted roots, inbound mode per port and the TLS of every outbound cluster.",
        epilog="examples:\n  kubectl mtls proxy productpage-v1-6b746f74dc-9stvs -n bookinfo\n"
        "  kubectl mtls proxy bookinfo/reviews-v1-545db77b95-2ps7q -o json \\\n"
        "      --query 'clusters[?tls_mode==`DISABLE`].host'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "pod",
        nargs="?",
        help="POD, NAMESPACE/POD or POD.NAMESPACE, or a workload (deploy/NAME, sts/NAME, ds/NAME): one running "
        "pod of it",
    )
    parser.add_argument("-l", "--selector", help="instead of POD: one running pod with these labels (e.g. app=reviews)")
    parser.set_defaults(handler=run)


def short(fp: str | None, wide: bool) -> str:
    if not fp:
        return ""
    return fp if wide else fp[:23] + "…"


def run(args: argparse.Namespace) -> int:
    require(bool(args.pod) != bool(args.selector), "name one pod: POD, deploy/NAME or -l SELECTOR")
    source = open_source(args)
    if args.selector:
        namespace = namespace_of(args, source)
        name = selector_pod(source, namespace, args.selector)
    else:
        namespace, name = pod_ref(args, source, args.pod)
    proxy = load_proxy(source, namespace, name, now(), missing=unknown_pod)
    style = Style.detect(args.no_color)
    emit(proxy.model, args.output, args.query, lambda m, wide: table(m, wide, style))
    return 0


def table(model: dict[str, Any], wide: bool, style: Style) -> str:
    out: list[str] = []
    proxy = model.get("proxy") or {}
    version = f", istio {proxy['istio_version']}" if proxy.get("istio_version") else ""
    kind = "gateway (router)" if proxy.get("type") == "router" else f"sidecar {model['sidecar']}"
    out.append(f"POD        {model['namespace']}/{model['pod']} ({kind}{version})")
    out.append(f"ACCOUNT    {model['service_account'] or '-'}")
    out.append(f"IDENTITY   {model['identity'] or '-'}")
    if model["certificates"]:
        leaf = model["certificates"][0]
        verified = (
            style.ok("verifies to a root")
            if leaf["chain_verified"]
            else style.error(f"does NOT verify to the pod's roots ({model['chain_error']})")
        )
        out.append(f"CERT       expires {leaf['not_after']}, chain of {len(model['certificates'])}, {verified}")
    if model.get("ambient"):
        out.extend(_ambient_lines(model["ambient"], style))
    out.append("")
    if model["certificates"] or model["roots"]:
        rows = [
            [
                "default",
                c["subject"] or ",".join(c["sans"]["uri"]),
                c["not_after"],
                short(c["fingerprint_sha256"], wide),
            ]
            for c in model["certificates"]
        ] + [["ROOTCA", r["subject"], r["not_after"], short(r["fingerprint_sha256"], wide)] for r in model["roots"]]
        out.append(columns(["SECRET", "SUBJECT / SAN", "NOT AFTER", "SHA-256 FINGERPRINT"], rows))
    if model["inbound"]:
        rows = [
            [
                i["port"] if i["port"] is not None else "*",
                _mode(i["mode"], style),
                ",".join(i["filter_chains"]),
            ]
            for i in model["inbound"]
        ]
        out.append(columns(["INBOUND PORT", "MODE", "FILTER CHAINS"], rows))
    if model.get("gateway"):
        rows = [
            [
                g["port"] if g["port"] is not None else "-",
                _mode(g["mode"], style),
                ",".join(g["server_names"]) or "*",
                g["credential"] or "-",
                (g["ca_credential"] or "-") + (" (required)" if g["client_certificate_required"] else ""),
            ]
            for g in model["gateway"]
        ]
        out.append(columns(["GATEWAY PORT", "TLS", "HOSTS (SNI)", "CERTIFICATE", "CLIENT CA"], rows))
    for item in model.get("rejected") or []:
        out.append(style.error(f"REJECTED   {item['type']} {item['name']}: {item['error']}"))
    if model["clusters"]:
        rows = [
            [
                c["host"],
                c["port"],
                c["subset"] or "-",
                _mode(c["tls_mode"], style),
                c["sni"] or "-",
                ",".join(c["expected_sans"]) if wide else str(len(c["expected_sans"])),
                f"{c['destination_rule']['namespace']}/{c['destination_rule']['name']}"
                if c["destination_rule"]
                else "-",
            ]
            for c in model["clusters"]
        ]
        sans = "EXPECTED SANS" if wide else "SANS"
        out.append(columns(["OUTBOUND HOST", "PORT", "SUBSET", "TLS", "SNI", sans, "DESTINATIONRULE"], rows))
    for note in model["incomplete"]:
        out.append(style.warn(f"incomplete: {note}"))
    return "\n".join(out).rstrip("\n") + "\n"


def _ambient_lines(ambient: dict[str, Any], style: Style) -> list[str]:
    """An ambient pod's ztunnel view: where it runs, whether it is captured, waypoint, L4 policies."""
    protocol = ambient["protocol"]
    if protocol == "HBONE":
        captured = style.ok("HBONE (captured by ztunnel: mTLS)")
    elif protocol is None:
        captured = style.error("not listed by ztunnel")
    else:
        captured = style.error(f"{protocol} (NOT captured: plaintext, no mTLS)")
    lines = [
        f"ZTUNNEL    {ambient['ztunnel'] or '-'} (node {ambient['node'] or '?'})",
        f"PROTOCOL   {captured}, enrolled by {ambient['enrolled_by']}",
    ]
    waypoint = ambient["waypoint"]
    names = [w["service"] for w in waypoint["services"]]
    if waypoint["workload"]:
        names.insert(0, f"workload: {waypoint['workload']['hostname'] or waypoint['workload']['address']}")
    lines.append(f"WAYPOINT   {', '.join(names) or '-'}")
    cert = ambient["certificate"]
    if cert is None:
        lines.append(style.error("ZT CERT    none held by the node's ztunnel"))
    else:
        state = style.ok(cert["state"]) if cert["state"] == "Available" else style.error(cert["state"])
        lines.append(f"ZT CERT    {state}")
    for policy in ambient["policies"]:
        rules = len(policy["rules"])
        lines.append(
            f"L4 POLICY  {policy['namespace']}/{policy['name']} ({policy['action']}, {policy['scope']}, {rules} rules)"
        )
    return lines


def _mode(mode: str, style: Style) -> str:
    if mode in ("STRICT", "ISTIO_MUTUAL", "AUTO"):
        return style.ok(mode)
    if mode in ("DISABLE", "UNKNOWN"):
        return style.error(mode)
    return style.warn(mode)
