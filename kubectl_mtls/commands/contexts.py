"""Pods in other clusters for two-pod commands (`rootdiff`, `check pair`): `CONTEXT:NAMESPACE/POD`, or
`--source-context` / `--destination-context`, each side read through its own kubeconfig context (or
that context of a multi-context snapshot)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..sources import Source
from .common import open_context, open_source, pod_ref


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("across clusters")
    group.add_argument("--source-context", metavar="CONTEXT", help="kubeconfig context of SRC (or CONTEXT:NS/POD)")
    group.add_argument("--destination-context", metavar="CONTEXT", help="kubeconfig context of DST (or CONTEXT:NS/POD)")


def split(ref: str) -> tuple[str | None, str]:
    """`CONTEXT:NS/POD` -> (CONTEXT, NS/POD). Kubernetes names never hold `:`, context names may
    (EKS ARNs), so the last `:` separates them."""
    context, colon, rest = ref.rpartition(":")
    if not colon:
        return None, ref
    if not context or not rest:
        raise UsageError(f"{ref!r}: expected CONTEXT:NAMESPACE/POD")
    return context, rest


def named(args: argparse.Namespace, refs: list[str]) -> bool:
    """Does the command line name a context for either side?"""
    flags = getattr(args, "source_context", None) or getattr(args, "destination_context", None)
    return bool(flags) or any(split(r)[0] for r in refs)


@dataclass
class Side:
    source: Source
    namespace: str
    pod: str
    context: str | None  # set only when the command spans clusters


def sides(args: argparse.Namespace, src: str, dst: str) -> tuple[Side, Side, bool]:
    """(source side, destination side, spans clusters). Without any context the command's one source
    serves both sides, exactly as before."""
    src_ctx, src_ref = split(src)
    dst_ctx, dst_ref = split(dst)
    for flag, inline, name in (
        ("--source-context", src_ctx, getattr(args, "source_context", None)),
        ("--destination-context", dst_ctx, getattr(args, "destination_context", None)),
    ):
        if inline and name and inline != name:
            raise UsageError(f"{flag} {name} and the pod's own context {inline} disagree")
    src_ctx = src_ctx or getattr(args, "source_context", None)
    dst_ctx = dst_ctx or getattr(args, "destination_context", None)
    if not (src_ctx or dst_ctx):
        source = open_source(args)
        return (
            Side(source, *pod_ref(args, source, src_ref), None),
            Side(source, *pod_ref(args, source, dst_ref), None),
            False,
        )
    src_ctx, dst_ctx = src_ctx or args.context, dst_ctx or args.context
    kubeconfigs = list(getattr(args, "kubeconfigs", None) or [])
    if len(kubeconfigs) > 2:
        raise UsageError("--kubeconfig: once, or twice (the source's, then the destination's)")
    src_kc, dst_kc = (kubeconfigs * 2)[:2] if kubeconfigs else (None, None)
    opened: dict[Any, Source] = {}

    def side(context: str | None, kubeconfig: str | None, ref: str) -> Side:
        if (context, kubeconfig) not in opened:
            opened[(context, kubeconfig)] = open_context(args, context, kubeconfig)
        source = opened[(context, kubeconfig)]
        return Side(source, *pod_ref(args, source, ref), context or current(source))

    first, second = side(src_ctx, src_kc, src_ref), side(dst_ctx, dst_kc, dst_ref)
    return first, second, first.context != second.context


def current(source: Source) -> str | None:
    """The context a source reads (after it connected: the kubeconfig's current one when none was named)."""
    return getattr(source, "context_name", None)


def _mesh(side: Side, istio_namespace: str) -> Any:
    from ..errors import MtlsError
    from ..istio import trust

    try:
        maps = side.source.list_objects("configmaps", istio_namespace)
    except MtlsError as exc:
        return trust.MeshTrust(known=False, note=str(exc))
    for cm in maps:
        meta = cm.get("metadata") or {}
        if meta.get("name") == "istio" and meta.get("namespace") in (istio_namespace, None):
            return trust.parse_mesh((cm.get("data") or {}).get("mesh"))
    return trust.parse_mesh(None)


def trust_domains(args: argparse.Namespace, src_side: Side, dst_side: Side, src: Any, dst: Any) -> dict[str, Any]:
    """Across clusters: is each side's trust domain the other's own or one of its aliases?"""
    from ..istio import trust

    src_td, dst_td = trust.trust_domain_of(src.model["identity"]), trust.trust_domain_of(dst.model["identity"])
    out: dict[str, Any] = {
        "source": src_td,
        "destination": dst_td,
        "source_accepted_by_destination": None,
        "destination_accepted_by_source": None,
        "reason": None,
        "fix": None,
    }
    if not src_td or not dst_td:
        out["reason"] = "unknown: a side has no SPIFFE identity"
        return out
    if src_td == dst_td:
        out["source_accepted_by_destination"] = out["destination_accepted_by_source"] = True
        return out
    meshes = {"src": _mesh(src_side, args.istio_namespace), "dst": _mesh(dst_side, args.istio_namespace)}
    out["source_accepted_by_destination"] = trust.accepts(meshes["dst"], src_td)
    out["destination_accepted_by_source"] = trust.accepts(meshes["src"], dst_td)
    reasons, fixes = [], []
    for key, td, who, mesh in (
        ("source_accepted_by_destination", src_td, dst.context, meshes["dst"]),
        ("destination_accepted_by_source", dst_td, src.context, meshes["src"]),
    ):
        if out[key] is False:
            reasons.append(
                f"{who} does not accept trust domain {td} (its own is {mesh.trust_domain}, aliases: "
                f"{', '.join(mesh.aliases) or 'none'})"
            )
            fixes.append(
                f"add {td} to meshConfig.trustDomainAliases of {who} "
                f"(kubectl --context {who} -n {args.istio_namespace} edit configmap istio)"
            )
    out["reason"] = "; ".join(reasons) or None
    out["fix"] = "; ".join(fixes) or None
    return out
