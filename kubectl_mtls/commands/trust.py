"""`kubectl mtls trust --context A --context B`: do the clusters of a multi-cluster mesh trust each other?"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from ..errors import EXIT_GATHER, EXIT_OK, EXIT_PROBLEM, InputError, MtlsError, NotFoundError, UsageError
from ..normalize import pod as podinfo
from ..render import Style, emit
from ..sources import Source
from .common import now, open_context, paired_kubeconfigs, positive_int, several

DEFAULT_SAMPLE = 3


def register(sub: Any, output: argparse.ArgumentParser, source: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "trust",
        parents=[source, output],
        help="check trust between the clusters of a multi-cluster mesh (roots, intermediates, trust domains)",
        description="For each cluster (--context, repeatable; or every context of a multi-context snapshot): "
        "trust domain and aliases, the CA in use and its intermediate chain, the published root, and what a "
        "sample of sidecars holds. Then, for every ordered pair of clusters, whether the second's sidecars "
        "accept the first's workload certificates (chain to a root they trust, trust domain their own or an "
        "alias), with the fix. Exits 1 when a direction fails, 3 when one could not be decided.",
        epilog="examples:\n"
        "  kubectl mtls trust --context east --context west\n"
        "  kubectl mtls trust --context east --kubeconfig east.yaml --context west --kubeconfig west.yaml\n"
        "  kubectl mtls snapshot --context east --context west -A -d ./mesh && kubectl mtls trust --snapshot ./mesh",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sample",
        type=positive_int,
        default=DEFAULT_SAMPLE,
        metavar="N",
        help=f"sidecars read per cluster, from different namespaces first (default {DEFAULT_SAMPLE})",
    )
    parser.set_defaults(handler=run)


def _contexts(args: argparse.Namespace) -> list[tuple[str, Source]]:
    contexts = several(args, "contexts")
    if len(set(contexts)) != len(contexts):
        raise UsageError("--context: each context once")
    if args.snapshot:
        from ..sources.snapshot import snapshot_contexts

        available = snapshot_contexts(args.snapshot)
        names = [n for n, _ in available]
        if len(available) == 1 and contexts in ([], names):
            return [(names[0], open_context(args, None, None))]
        if not contexts:
            contexts = names
        unknown = [c for c in contexts if c not in names]
        if unknown:
            raise UsageError(f"snapshot {args.snapshot} has no context {unknown[0]!r}: it holds {', '.join(names)}")
        return [(c, open_context(args, c, None)) for c in contexts]
    if not contexts:
        raise UsageError("trust needs the clusters to compare: --context A --context B (or --snapshot DIR)")
    return [(c, open_context(args, c, k)) for c, k in zip(contexts, paired_kubeconfigs(args, contexts), strict=True)]


def _sample(pods: list[dict[str, Any]], istio_namespace: str, size: int) -> list[dict[str, Any]]:
    """Sidecars spread over namespaces (one per namespace in turn), gateways only when nothing else."""
    with_envoy = [p for p in pods if podinfo.has_envoy(p) and (p.get("status") or {}).get("phase") != "Succeeded"]
    preferred = [p for p in with_envoy if podinfo.name_of(p)[0] != istio_namespace] or with_envoy
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for pod in sorted(preferred, key=podinfo.name_of):
        by_namespace.setdefault(podinfo.name_of(pod)[0], []).append(pod)
    chosen: list[dict[str, Any]] = []
    while len(chosen) < size and any(by_namespace.values()):
        for queue in by_namespace.values():
            if queue and len(chosen) < size:
                chosen.append(queue.pop(0))
    return chosen


def gather(name: str, source: Source, istio_namespace: str, sample: int, moment: datetime) -> Any:
    """Read one cluster; what cannot be read is noted, never fatal, except an unreachable cluster."""
    from ..crosscluster.profile import ClusterInputs
    from ..gather.proxies import load_many

    incomplete: list[dict[str, str]] = []

    def read(what: str, call: Any, default: Any) -> Any:
        try:
            return call()
        except NotFoundError:
            return default
        except InputError:
            raise
        except MtlsError as exc:
            incomplete.append({"what": what, "why": str(exc)})
            return default

    pods = source.list_pods(None)  # an unreachable cluster stops here, with its own error line
    configmaps = read("configmaps", lambda: source.list_objects("configmaps", istio_namespace), [])
    by_name = {
        str((c.get("metadata") or {}).get("name")): c
        for c in configmaps
        if (c.get("metadata") or {}).get("namespace") in (istio_namespace, None)
    }
    secrets = read("Secrets cacerts / istio-ca-secret", lambda: source.list_objects("secrets", istio_namespace), [])
    istiods = read("istiod pods", lambda: source.list_pods(istio_namespace, "app=istiod"), [])
    chosen = _sample(pods, istio_namespace, sample)
    proxies, failures = load_many(source, chosen, moment)
    incomplete += [{"what": f"{f['namespace']}/{f['pod']}", "why": f["error"]} for f in failures]
    mesh_cm = by_name.get("istio")
    return ClusterInputs(
        name=name,
        source=source.description,
        istio_namespace=istio_namespace,
        mesh_text=((mesh_cm or {}).get("data") or {}).get("mesh"),
        root_configmap=by_name.get("istio-ca-root-cert"),
        secrets=[s for s in secrets if (s.get("metadata") or {}).get("namespace") in (istio_namespace, None)],
        istiod_pods=istiods,
        sidecar_pods=chosen,
        proxies=proxies,
        incomplete=incomplete,
    )


def run(args: argparse.Namespace) -> int:
    from ..crosscluster import matrix, profile

    moment = now()
    clusters = []
    unreachable: list[dict[str, str]] = []
    for name, source in _contexts(args):
        try:
            inputs = gather(name, source, args.istio_namespace, args.sample, moment)
        except MtlsError as exc:
            if exc.exit_code != EXIT_GATHER:
                raise
            unreachable.append({"context": name, "why": str(exc)})
            continue
        clusters.append(profile.build(inputs, moment))
    if not clusters:
        raise _gather_error(unreachable)
    pairs = matrix.matrix(clusters, moment)
    problems = [p for c in clusters for p in c.report["problems"] if p["severity"] == "error"]
    failed = [p for p in pairs if p["ok"] is False]
    undecided = [p for p in pairs if p["ok"] is None]
    verdict = "fail" if failed or problems else ("unknown" if undecided or unreachable else "ok")
    result = {
        "verdict": verdict,
        "clusters": [c.report for c in clusters],
        "pairs": pairs,
        "incomplete": unreachable,
    }
    emit(result, args.output, args.query, lambda d, wide: table(d, wide, Style.detect(args.no_color)))
    return {"fail": EXIT_PROBLEM, "unknown": EXIT_GATHER}.get(verdict, EXIT_OK)


def _gather_error(unreachable: list[dict[str, str]]) -> MtlsError:
    from ..errors import GatherError

    return GatherError("; ".join(f"context {u['context']}: {u['why']}" for u in unreachable))


def _fp(cert: dict[str, Any] | None) -> str:
    return cert["fingerprint_sha256"][:23] + "…" if cert else "-"


CA_NAMES = {
    "istiod-self-signed": "istiod, self-signed root (istio-ca-secret)",
    "istiod-plugin": "istiod, plug-in CA (cacerts)",
    "istio-csr": "cert-manager istio-csr",
    "spire": "SPIRE",
    "external": "external signer",
    "unknown": "unknown",
}


def table(data: dict[str, Any], wide: bool, style: Style) -> str:
    lines = []
    for pair in data["pairs"]:
        if pair["ok"] is True:
            mark, text = style.ok("✓"), f"{pair['to']} trusts {pair['from']}'s workload certificates"
        elif pair["ok"] is False:
            mark, text = style.error("×"), "; ".join(r for r in pair["reasons"] if not r.startswith("unknown"))
        else:
            mark, text = style.warn("?"), "; ".join(pair["reasons"])
        lines.append(f"{mark} {pair['from']} → {pair['to']}   {text}")
        if pair["ok"] is False and pair["fix"]:
            lines.append(f"    fix: {pair['fix']}")
    if not data["pairs"]:
        lines.append("(one cluster: no pairs to compare; its own setup follows)")
    for cluster in data["clusters"]:
        lines.append("")
        lines.append(style.bold(f"{cluster['context']}") + f"   ({cluster['source']})")
        aliases = cluster["trust_domain_aliases"]
        alias_text = ", ".join(aliases) if aliases else ("none" if aliases is not None else "unknown")
        lines.append(f"  trust domain      {cluster['trust_domain'] or 'unknown'}   aliases: {alias_text}")
        ca = cluster["ca"]
        lines.append(f"  CA                {CA_NAMES.get(ca['kind'], ca['kind'])}   ({'; '.join(ca['evidence'])})")
        for label, cert in [("CA root", ca["root"])] * bool(ca["root"]) + [
            ("intermediate", i) for i in ca["intermediates"]
        ]:
            lines.append(f"  {label:<17} {_fp(cert)}  {cert['subject']}  until {cert['not_after']}")
        published = ", ".join(_fp(r) for r in cluster["published_roots"]) or "-"
        lines.append(f"  published root    {published}   (istio-ca-root-cert)")
        roots = ", ".join(_fp(r) for r in cluster["sidecar_roots"]) or "-"
        lines.append(f"  sidecars' roots   {roots}   ({len(cluster['sidecars'])} sampled)")
        if wide:
            for sidecar in cluster["sidecars"]:
                lines.append(f"    {sidecar['namespace']}/{sidecar['pod']}   {sidecar['identity'] or '(no identity)'}")
        for problem in cluster["problems"]:
            mark = style.error("×") if problem["severity"] == "error" else style.warn("‼")
            lines.append(f"  {mark} {problem['message']}")
            if problem["fix"]:
                lines.append(f"      fix: {problem['fix']}")
        for note in cluster["incomplete"]:
            lines.append(style.warn(f"  incomplete: {note['what']}: {note['why']}"))
    for note in data["incomplete"]:
        lines.append(style.warn(f"incomplete: context {note['context']}: {note['why']}"))
    return "\n".join(lines) + "\n"
