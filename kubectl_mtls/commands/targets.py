"""What the user typed, turned into pods: `POD`, `NS/POD`, `POD.NS`, a workload (`deploy/NAME`,
`sts/NAME`, `ds/NAME`, long forms, `NS/deploy/NAME`) or `-l SELECTOR`; and, when a name matches
nothing, one line saying so with the closest names ("did you mean"), exit 2.

Workloads are found through the pods' ownerReferences (a Deployment's pods are owned by its
ReplicaSet `NAME-<pod-template-hash>`), so no Deployment, StatefulSet or DaemonSet is ever read:
the RBAC the README lists is enough, and snapshots work too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import MtlsError, NotFoundError
from ..sources import Source, parse_pod_ref

# kubectl's names for the workload kinds we resolve -> the kind in ownerReferences
WORKLOAD_KINDS = {
    "deploy": "Deployment",
    "deployment": "Deployment",
    "deployments": "Deployment",
    "sts": "StatefulSet",
    "statefulset": "StatefulSet",
    "statefulsets": "StatefulSet",
    "ds": "DaemonSet",
    "daemonset": "DaemonSet",
    "daemonsets": "DaemonSet",
}
SHORT = {"Deployment": "deploy", "StatefulSet": "sts", "DaemonSet": "ds"}


def parse_workload(ref: str) -> tuple[str | None, str, str] | None:
    """(namespace or None, owner kind, name) of `deploy/NAME` or `NS/deploy/NAME`; None for a pod."""
    parts = ref.split("/")
    if len(parts) == 2 and parts[0] in WORKLOAD_KINDS and parts[1]:
        return None, WORKLOAD_KINDS[parts[0]], parts[1]
    if len(parts) == 3 and parts[1] in WORKLOAD_KINDS and parts[0] and parts[2]:
        return parts[0], WORKLOAD_KINDS[parts[1]], parts[2]
    return None


def workload_of(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the Deployment, StatefulSet or DaemonSet that runs the pod, from its owners."""
    meta = pod.get("metadata") or {}
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    for owner in meta.get("ownerReferences") or []:
        kind, name = owner.get("kind"), str(owner.get("name") or "")
        if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            return "Deployment", name.removesuffix(f"-{template_hash}")
        if kind in ("StatefulSet", "DaemonSet") and name:
            return str(kind), name
    return None


def did_you_mean(word: str, names: list[str], limit: int = 3) -> str:
    """`; did you mean a, b?` from names that start with the word, then close matches; else ""."""
    import difflib

    unique = sorted(set(names))
    found = [n for n in unique if n.startswith(word) and n != word][:limit]
    found += [n for n in difflib.get_close_matches(word, unique, n=limit, cutoff=0.6) if n not in found]
    return f"; did you mean {', '.join(found[:limit])}?" if found else ""


def _names(objects: list[dict[str, Any]]) -> list[str]:
    return [str((o.get("metadata") or {}).get("name") or "") for o in objects]


def namespace_names(source: Source) -> list[str] | None:
    """Every namespace's name; None when they cannot be listed (RBAC), so nothing is claimed."""
    try:
        names = _names(source.list_objects("namespaces", None))
        if not names:  # a snapshot without kubernetes/namespaces.json: the pods' namespaces
            names = [str((p.get("metadata") or {}).get("namespace") or "") for p in source.list_pods(None)]
    except MtlsError:
        return None
    return [n for n in names if n]


def require_namespace(source: Source, namespace: str) -> None:
    """Unknown namespace -> exit 2 with the closest names. Called when a namespace gave no pods, so a
    typo is not mistaken for an empty namespace; when namespaces cannot be listed, nothing is said."""
    names = namespace_names(source)
    if names and namespace not in names:
        raise NotFoundError(f'namespace "{namespace}" not found{did_you_mean(namespace, names)}')


def unknown_pod(
    source: Source, namespace: str, name: str, pods: list[dict[str, Any]] | None = None
) -> NotFoundError:
    """The error for a pod that does not exist, naming the namespace's closest pods."""
    if pods is None:
        try:
            pods = source.list_pods(namespace)
        except MtlsError:
            pods = []
    if not pods:
        require_namespace(source, namespace)
    return NotFoundError(f'pod "{name}" not found in namespace "{namespace}"{_close_pods(name, pods)}')


def _close_pods(word: str, pods: list[dict[str, Any]], limit: int = 3) -> str:
    """Pods named like the word, or whose workload is (`ordrs` -> orders-7f5b9c6d8-wq4zn, deploy/orders)."""
    import difflib

    found = did_you_mean(word, _names(pods), limit).removeprefix("; did you mean ").removesuffix("?")
    picks = [n for n in found.split(", ") if n]
    by_workload: dict[str, str] = {}
    for pod in pods:
        workload = workload_of(pod)
        if workload is not None:
            by_workload.setdefault(workload[1], f"{SHORT[workload[0]]}/{workload[1]}")
    for name in difflib.get_close_matches(word, list(by_workload), n=limit, cutoff=0.6):
        if by_workload[name] not in picks:
            picks.append(by_workload[name])
    return f"; did you mean {', '.join(picks[:limit])}?" if picks else ""


def _running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not (pod.get("metadata") or {}).get(
        "deletionTimestamp"
    )


def _ready(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all(s.get("ready") for s in statuses)


def pick_running(pods: list[dict[str, Any]], what: str, namespace: str) -> dict[str, Any]:
    """One running pod (ready ones first, then by name, so the pick is stable), said on stderr."""
    running = sorted((p for p in pods if _running(p)), key=lambda p: (not _ready(p), _names([p])[0]))
    if not running:
        phases = ", ".join(f"{_names([p])[0]} ({(p.get('status') or {}).get('phase') or 'unknown'})" for p in pods[:5])
        raise NotFoundError(f"{what} in namespace {namespace!r} has no running pod: {phases}")
    chosen = running[0]
    sys.stderr.write(
        f"using pod {namespace}/{_names([chosen])[0]} of {what}"
        + (f" (1 of {len(running)} running)" if len(running) > 1 else "")
        + "\n"
    )
    return chosen


def workload_pod(source: Source, namespace: str, kind: str, name: str) -> str:
    """The name of a running pod of a Deployment / StatefulSet / DaemonSet."""
    pods = source.list_pods(namespace)
    owned = [p for p in pods if workload_of(p) == (kind, name)]
    label = f"{SHORT[kind]}/{name}"
    if not owned:
        if not pods:
            require_namespace(source, namespace)
        same_kind = [w[1] for p in pods if (w := workload_of(p)) is not None and w[0] == kind]
        raise NotFoundError(
            f"no pod of {label} in namespace {namespace!r}{did_you_mean(name, same_kind)}"
        )
    return _names([pick_running(owned, label, namespace)])[0]


def selector_pod(source: Source, namespace: str, selector: str) -> str:
    """The name of a running pod matching a label selector (`-l` where one pod is asked for)."""
    pods = source.list_pods(namespace, selector)
    if not pods:
        require_namespace(source, namespace)
        raise NotFoundError(f"no pod matches -l {selector} in namespace {namespace!r}")
    return _names([pick_running(pods, f"-l {selector}", namespace)])[0]


def pod_ref(args: argparse.Namespace, source: Source, ref: str) -> tuple[str, str]:
    """(namespace, pod) of `POD`, `NS/POD`, `POD.NS` or a workload (a running pod of it is picked).
    The default namespace (which may need the kubeconfig) is looked up only when the reference names
    none."""
    workload = parse_workload(ref)
    if workload is not None:
        namespace = workload[0] or _namespace(args, source)
        return namespace, workload_pod(source, namespace, workload[1], workload[2])
    qualified = "/" in ref or "." in ref
    return parse_pod_ref(ref, "" if qualified else _namespace(args, source))


def _namespace(args: argparse.Namespace, source: Source) -> str:
    return str(args.namespace) if getattr(args, "namespace", None) else source.default_namespace()
