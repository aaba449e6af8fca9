"""`kubectl mtls rootdiff SRC DST`: do two sidecars trust the same roots, and each other?"""

from __future__ import annotations

import argparse
from typing import Any

from .. import fixes
from ..errors import EXIT_GATHER, EXIT_OK, EXIT_PROBLEM, MtlsError
from ..gather.proxies import load_proxy
from ..model import Proxy
from ..normalize.certs import verify_chain
from ..render import Style, columns, emit
from . import contexts
from .common import now
from .targets import unknown_pod


def register(sub: Any, output: argparse.ArgumentParser, source: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "rootdiff",
        parents=[source, output],
        help="compare two sidecars' trusted roots and check trust both ways",
        description="Compare the root certificates (secret ROOTCA) of two sidecars by SHA-256 fingerprint "
        "and verify each side's workload chain against the other's roots, as the TLS handshake will. "
        "Exits 0 when the roots match and both directions verify, 1 otherwise.",
        epilog="examples:\n"
        "  kubectl mtls rootdiff productpage-v1-6b746f74dc-9stvs reviews-v2-7bf8c9648f-7h5nq -n bookinfo\n"
        "  kubectl mtls rootdiff bookinfo/productpage-v1-6b746f74dc-9stvs ratings-v1-5f9699cfdf-zzs7r.prod\n"
        "  kubectl mtls rootdiff east:shop/frontend-6c9f7d8b4-k2x7p west:shop/orders-7f5b9c6d8-wq4zn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "src",
        help="client pod: POD, NAMESPACE/POD, POD.NAMESPACE or CONTEXT:NAMESPACE/POD, or a workload "
        "(deploy/NAME, sts/NAME, ds/NAME)",
    )
    parser.add_argument("dst", help="server pod, same forms")
    contexts.add_flags(parser)
    parser.set_defaults(handler=run)


def _side(proxy: Proxy) -> dict[str, Any]:
    m = proxy.model
    return {
        "context": proxy.context,
        "pod": m["pod"],
        "namespace": m["namespace"],
        "sidecar": m["sidecar"],
        "identity": m["identity"],
        "workload_issuer": m["certificates"][0]["issuer"] if m["certificates"] else None,
        "roots": m["roots"],
    }


def _trust(chain_of: Proxy, roots_of: Proxy, moment: Any) -> tuple[bool | None, str | None]:
    """(True, None), (False, why), or (None, why) when the tool cannot tell what Envoy would decide."""
    for side in (chain_of, roots_of):
        if not side.knows("certificates"):  # not read is not missing
            return None, f"{side.ref}: {side.unknown['certificates']}"
    if not chain_of.chain:
        return False, f"{chain_of.ref} has no workload certificate"
    if not roots_of.roots:
        return False, f"{roots_of.ref} has no trusted roots"
    return verify_chain([c.cert for c in chain_of.chain], [r.cert for r in roots_of.roots], moment)


def compare(
    src: Proxy, dst: Proxy, moment: Any, namespace_labels: dict[str, dict[str, Any] | None] | None = None
) -> dict[str, Any]:
    src_fps, dst_fps = src.root_fingerprints(), dst.root_fingerprints()
    s_by_d, s_by_d_reason = _trust(src, dst, moment)
    d_by_s, d_by_s_reason = _trust(dst, src, moment)
    result: dict[str, Any] = {
        "match": set(src_fps) == set(dst_fps) and bool(src_fps) and s_by_d and d_by_s,
        "source": _side(src),
        "destination": _side(dst),
        "only_in_source": [f for f in src_fps if f not in dst_fps],
        "only_in_destination": [f for f in dst_fps if f not in src_fps],
        "source_trusted_by_destination": s_by_d,
        "destination_trusted_by_source": d_by_s,
        "source_trust_error": s_by_d_reason,
        "destination_trust_error": d_by_s_reason,
    }
    result["verdict"], result["fix"] = fixes.rootdiff_verdict(src, dst, result, moment, namespace_labels)
    undecided = [why for ok, why in ((s_by_d, s_by_d_reason), (d_by_s, d_by_s_reason)) if ok is None]
    if undecided and False not in (s_by_d, d_by_s):
        result["verdict"] = f"unknown: cannot tell whether each side accepts the other ({undecided[0]})"
        result["fix"] = None
    return result


def run(args: argparse.Namespace) -> int:
    moment = now()
    src_side, dst_side, across = contexts.sides(args, args.src, args.dst)
    src = load_proxy(src_side.source, src_side.namespace, src_side.pod, moment, missing=unknown_pod)
    dst = load_proxy(dst_side.source, dst_side.namespace, dst_side.pod, moment, missing=unknown_pod)
    if across:
        src.context = src_side.context or contexts.current(src_side.source)
        dst.context = dst_side.context or contexts.current(dst_side.source)
    result = compare(src, dst, moment, _labels_without_sidecar((src_side.source, src), (dst_side.source, dst)))
    if across:
        if result["only_in_source"] or result["only_in_destination"]:
            # a pod restart helps only if that cluster's CA already has the root: the clusters' CAs decide
            check_cas = f"kubectl mtls trust --context {src.context} --context {dst.context}"
            result["fix"] = (
                f"{result['fix']}; if the pod comes back with the same roots: {check_cas}"
                if result["fix"]
                else check_cas
            )
        result["trust_domains"] = contexts.trust_domains(args, src_side, dst_side, src, dst)
        accepted = result["trust_domains"]
        refused = [
            k for k in ("source_accepted_by_destination", "destination_accepted_by_source") if accepted[k] is False
        ]
        if refused:
            result["match"] = False
            result["verdict"] = accepted["reason"]
            result["fix"] = accepted["fix"] if not result["fix"] else f"{result['fix']}; {accepted['fix']}"
    style = Style.detect(args.no_color)
    emit(result, args.output, args.query, lambda d, wide: table(d, wide, style))
    if result["verdict"].startswith("unknown:"):
        return EXIT_GATHER
    return EXIT_OK if result["match"] else EXIT_PROBLEM


def _labels_without_sidecar(*sides: tuple[Any, Proxy]) -> dict[str, dict[str, Any] | None]:
    """Labels of the namespaces of (source, side) pairs without a sidecar (their fix depends on them);
    None when the namespace cannot be read."""
    out: dict[str, dict[str, Any] | None] = {}
    for source, side in sides:
        if side.model["sidecar"] != "absent":
            continue
        try:
            listed = {
                str((ns.get("metadata") or {}).get("name")): (ns.get("metadata") or {}).get("labels") or {}
                for ns in source.list_objects("namespaces", None)
            }
        except MtlsError:
            listed = {}
        out[side.model["namespace"]] = listed.get(side.model["namespace"])
    return out


def table(data: dict[str, Any], wide: bool, style: Style) -> str:
    src, dst = data["source"], data["destination"]
    s_name, d_name = f"{src['namespace']}/{src['pod']}", f"{dst['namespace']}/{dst['pod']}"
    if src.get("context") or dst.get("context"):
        s_name, d_name = f"{src['context']}:{s_name}", f"{dst['context']}:{d_name}"
    lines = [
        f"SOURCE        {s_name}   {src['identity'] or '(no identity)'}",
        f"DESTINATION   {d_name}   {dst['identity'] or '(no identity)'}",
        "",
    ]
    roots: dict[str, dict[str, Any]] = {}
    for root in src["roots"] + dst["roots"]:
        roots.setdefault(root["fingerprint_sha256"], root)
    src_fps = {r["fingerprint_sha256"] for r in src["roots"]}
    dst_fps = {r["fingerprint_sha256"] for r in dst["roots"]}

    def held(flag: bool) -> str:
        return style.ok("yes") if flag else style.error("no")

    rows = [
        [fp, root["subject"]]
        + ([root["not_before"], root["serial"]] if wide else [])
        + [root["not_after"], held(fp in src_fps), held(fp in dst_fps)]
        for fp, root in roots.items()
    ]
    headers = ["ROOT SHA-256 FINGERPRINT", "SUBJECT"] + (["NOT BEFORE", "SERIAL"] if wide else [])
    if rows:
        lines.append(columns([*headers, "NOT AFTER", "SOURCE", "DESTINATION"], rows))
    else:
        unread = data["verdict"].startswith("unknown:")
        lines.append("No root certificate was read.\n" if unread else "Neither sidecar holds a root certificate.\n")

    def trust(ok: bool | None, reason: str | None) -> str:
        if ok is None:
            return style.warn(f"cannot tell ({reason})")
        return style.ok("yes") if ok else style.error(f"no ({reason})")

    lines.append(
        f"{d_name} trusts {s_name}'s certificate: "
        f"{trust(data['source_trusted_by_destination'], data['source_trust_error'])}"
    )
    lines.append(
        f"{s_name} trusts {d_name}'s certificate: "
        f"{trust(data['destination_trusted_by_source'], data['destination_trust_error'])}"
    )
    lines.append("")
    mark = style.ok("✓ MATCH") if data["match"] else style.error("✗ MISMATCH")
    if data["verdict"].startswith("unknown:"):
        mark = style.warn("? UNKNOWN")
    lines.append(f"{mark}  {data['verdict']}")
    if data["fix"]:
        lines.append(f"fix: {data['fix']}")
    return "\n".join(lines) + "\n"
