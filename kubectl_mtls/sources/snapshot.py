"""Snapshot directories: what the live source read, saved so anyone can replay a diagnosis.

Layout (version 1):
    DIR/snapshot.json                  what, when, from where; pods/kinds that could not be read
    DIR/kubernetes/<plural>.json       {"items": [...]} per kind (pods, namespaces, services, ...)
    DIR/proxies/<namespace>/<pod>.json `istioctl proxy-config all <pod>.<ns> -o json`, unchanged but scrubbed
    DIR/ztunnel/<ztunnel-pod>.json     `istioctl ztunnel-config all <pod>.<ns> -o json`, unchanged
A hand-made snapshot may instead hold DIR/proxies/<namespace>/<pod>/*.json: any mix of
`proxy-config all|cluster|listener|secret -o json` outputs for that pod.

Several contexts (version 2, `snapshot --context A --context B`): DIR/snapshot.json lists
`contexts: [{name, path}]`, and each DIR/contexts/<dir>/ is a version-1 snapshot of one context,
readable on its own. `--context NAME` picks one of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .. import jsonutil
from ..errors import InputError, NotFoundError, UsageError
from . import Document
from .kinds import KINDS
from .scrub import has_private_key

FORMAT = "kubectl-mtls-snapshot"
FORMAT_VERSION = 1
MULTI_CONTEXT_VERSION = 2  # a directory of per-context version-1 snapshots
MANIFEST = "snapshot.json"
CONTEXTS_DIR = "contexts"
PROXY_STATUS = "istio/proxy-status.txt"


ZTUNNEL_DIR = "ztunnel"
ZTUNNEL_LABEL = ("app", "ztunnel")


def ztunnel_path(pod: str) -> str:
    return f"{ZTUNNEL_DIR}/{pod}.json"


def stats_path(namespace: str, pod: str) -> str:
    return f"stats/{namespace}/{pod}.prom"


def log_path(namespace: str, pod: str, container: str) -> str:
    return f"logs/{namespace}/{pod}/{container}.log"


# Marks a Pod made up from a dump file alone: its service account and spec are unknown.
FROM_DUMP = "kubectl-mtls.io/from-dump"


def _check_metadata(item: dict[str, Any], where: str, named: bool) -> None:
    """Hand-made snapshots may omit fields, but what is there must have the API's types. Pods need a
    name: every command names them. (Other kinds may come from bare manifests without one.)"""
    meta = item.get("metadata", {})
    if not isinstance(meta, dict):
        raise InputError(f"{where}: metadata must be an object")
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    if not isinstance(name, str) or not isinstance(namespace, str) or (named and not name):
        raise InputError(f"{where} needs a string metadata.name" + (" and metadata.namespace" if named else ""))


def _ztunnel_stub(pod: str, namespace: Any, node: Any) -> dict[str, Any]:
    """A ztunnel known only by its dump file or the manifest's list."""
    return {
        "metadata": {
            "name": pod,
            "namespace": namespace if isinstance(namespace, str) and namespace else "istio-system",
            "labels": {ZTUNNEL_LABEL[0]: ZTUNNEL_LABEL[1]},
        },
        "spec": {"nodeName": node} if isinstance(node, str) and node else {},
    }


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return None
    loaded = jsonutil.loads(manifest.read_bytes(), str(manifest))
    if not isinstance(loaded, dict) or loaded.get("format") != FORMAT:
        raise InputError(f"{manifest}: not a kubectl-mtls snapshot manifest")
    version = loaded.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"{manifest}: 'version' must be an integer, not {version!r}")
    if version > MULTI_CONTEXT_VERSION:
        raise InputError(f"{manifest}: snapshot format {version} is newer than this tool")
    if not isinstance(loaded.get("incomplete", []), list):
        raise InputError(f"{manifest}: 'incomplete' must be a list")
    return loaded


def snapshot_contexts(directory: str) -> list[tuple[str, str]]:
    """(context name, directory of its version-1 snapshot) of a snapshot: every context of a
    multi-context snapshot, else the one context a single snapshot was taken from."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"snapshot {directory}: no such directory")
    manifest = _read_manifest(root) or {}
    entries = manifest.get("contexts")
    if entries is None:
        name = manifest.get("context")
        return [(name if isinstance(name, str) and name else root.name or directory, directory)]
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{root / MANIFEST}: 'contexts' must be a non-empty list")
    out = []
    for index, entry in enumerate(entries):
        name, path = (entry or {}).get("name") if isinstance(entry, dict) else None, None
        if isinstance(entry, dict):
            path = entry.get("path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not _safe_relative(path):
            raise InputError(f"{root / MANIFEST}: contexts[{index}] needs a name and a relative path inside it")
        out.append((name, str(root / path)))
    return out


def _safe_relative(path: str) -> bool:
    parts = Path(path).parts
    return bool(parts) and not Path(path).is_absolute() and ".." not in parts


class SnapshotSource:
    def __init__(self, directory: str, context: str | None = None) -> None:
        self.root = Path(directory)
        self.description = f"snapshot {directory}"
        if not self.root.is_dir():
            raise InputError(f"snapshot {directory}: no such directory")
        self.manifest: dict[str, Any] = {}
        loaded = _read_manifest(self.root)
        if loaded is not None and "contexts" in loaded:
            contexts = snapshot_contexts(directory)
            names = [n for n, _ in contexts]
            chosen = next((p for n, p in contexts if n == context), None)
            if chosen is None:
                which = f"has no context {context!r}" if context else "holds several contexts"
                raise UsageError(f"snapshot {directory} {which}: pass --context with one of {', '.join(names)}")
            self.root = Path(chosen)
            self.description = f"snapshot {directory} (context {context})"
            if not self.root.is_dir():
                raise InputError(f"snapshot {directory}: context {context} has no directory {chosen}")
            loaded = _read_manifest(self.root)
        if loaded is not None:
            self.manifest = loaded
        elif not (self.root / "proxies").is_dir() and not (self.root / "kubernetes").is_dir():
            raise InputError(f"snapshot {self.root}: neither {MANIFEST}, kubernetes/ nor proxies/ found")
        self._cache: dict[str, list[dict[str, Any]]] = {}

    # -- Kubernetes objects -------------------------------------------------------------------
    def _items(self, plural: str) -> list[dict[str, Any]]:
        if plural not in self._cache:
            path = self.root / "kubernetes" / f"{plural}.json"
            items: list[dict[str, Any]] = []
            if path.is_file():
                data = jsonutil.loads(path.read_bytes(), str(path))
                raw = data.get("items") if isinstance(data, dict) else data
                if not isinstance(raw, list) or not all(isinstance(i, dict) for i in raw):
                    raise InputError(f"{path}: expected {{'items': [objects]}}")
                for index, item in enumerate(raw):
                    _check_metadata(item, f"{path}: items[{index}]", named=plural == "pods")
                items = raw
            elif plural == "pods":
                items = self._pods_from_proxies()
            self._cache[plural] = items
        return self._cache[plural]

    def _pods_from_proxies(self) -> list[dict[str, Any]]:
        """A snapshot with dumps but no pods.json: each dump stands for a pod with a sidecar."""
        pods = []
        proxies = self.root / "proxies"
        if proxies.is_dir():
            for ns_dir in sorted(p for p in proxies.iterdir() if p.is_dir()):
                for entry in sorted(ns_dir.iterdir()):
                    name = entry.name.removesuffix(".json")
                    if entry.is_dir() or entry.suffix == ".json":
                        pods.append(
                            {
                                "metadata": {
                                    "name": name,
                                    "namespace": ns_dir.name,
                                    "annotations": {FROM_DUMP: "true"},
                                },
                                "spec": {"containers": [{"name": "istio-proxy"}]},
                            }
                        )
        return pods

    def default_namespace(self) -> str:
        value = self.manifest.get("default_namespace")
        return value if isinstance(value, str) and value else "default"

    def list_pods(self, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        from ..selectors import matches

        return [
            p
            for p in self._items("pods")
            if (namespace is None or (p.get("metadata") or {}).get("namespace") == namespace)
            and (not selector or matches(selector, (p.get("metadata") or {}).get("labels") or {}))
        ]

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        for pod in self.list_pods(namespace):
            if (pod.get("metadata") or {}).get("name") == name:
                return pod
        raise NotFoundError(f'pod "{name}" not found in namespace "{namespace}" of {self.description}')

    def list_objects(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        if kind not in KINDS:
            raise UsageError(f"unknown kind {kind}")
        if KINDS[kind].istio_namespace_only:
            namespace = None  # a snapshot holds only the Istio namespace's objects of this kind
        return [
            o
            for o in self._items(kind)
            if namespace is None
            or not KINDS[kind].namespaced
            or (o.get("metadata") or {}).get("namespace") == namespace
        ]

    def proxy_status(self) -> bytes:
        path = self.root / PROXY_STATUS
        if not path.is_file():
            raise NotFoundError(f"{self.description} has no istioctl proxy-status output")
        return path.read_bytes()

    def pod_log(self, namespace: str, pod: str, container: str, tail: int) -> str:
        path = self.root / log_path(namespace, pod, container)
        if not path.is_file():
            raise NotFoundError(f"{self.description} has no {container} log of {namespace}/{pod}")
        lines = path.read_text(errors="replace").splitlines(keepends=True)
        return "".join(lines[-tail:] if tail else [])

    def exec(
        self, namespace: str, pod: str, container: str, command: list[str], timeout: float
    ) -> tuple[str, str, int | None]:
        raise UsageError("--probe needs a live cluster, not a snapshot")

    def envoy_stats(self, namespace: str, pod: str) -> str:
        path = self.root / stats_path(namespace, pod)
        if not path.is_file():
            raise NotFoundError(f"{self.description} has no stats of {namespace}/{pod} (snapshot --stats saves them)")
        return path.read_text(errors="replace")

    # -- ztunnels -----------------------------------------------------------------------------
    def ztunnel_pods(self) -> list[dict[str, Any]]:
        """Pods labelled app=ztunnel, the ztunnels the manifest lists, and any other ztunnel/*.json
        (a hand-made snapshot: its namespace is the Istio namespace, its node read from its dump)."""
        found: dict[str, dict[str, Any]] = {}
        for pod in self._items("pods"):
            meta = pod.get("metadata") or {}
            if (meta.get("labels") or {}).get(ZTUNNEL_LABEL[0]) == ZTUNNEL_LABEL[1]:
                found.setdefault(str(meta.get("name")), pod)
        listed = self.manifest.get("ztunnels")
        for entry in listed if isinstance(listed, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("pod"), str):
                found.setdefault(entry["pod"], _ztunnel_stub(entry["pod"], entry.get("namespace"), entry.get("node")))
        folder = self.root / ZTUNNEL_DIR
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                found.setdefault(path.stem, _ztunnel_stub(path.stem, None, None))
        return list(found.values())

    def ztunnel_config(self, namespace: str, pod: str) -> Document:
        path = self.root / ztunnel_path(pod)
        if path.is_file():
            return (str(path), path.read_bytes())
        for failure in self.manifest.get("incomplete") or []:
            if isinstance(failure, dict) and failure.get("pod") == pod and failure.get("namespace") == namespace:
                raise InputError(f"ztunnel {namespace}/{pod}: not in the snapshot: {failure.get('error')}")
        raise NotFoundError(f"ztunnel {namespace}/{pod}: no ztunnel config in {self.description}")

    # -- proxies ------------------------------------------------------------------------------
    def proxy_documents(self, namespace: str, name: str) -> list[Document]:
        base = self.root / "proxies" / namespace
        single = base / f"{name}.json"
        if single.is_file():
            return [(str(single), single.read_bytes())]
        folder = base / name
        if folder.is_dir():
            files = sorted(folder.glob("*.json"))
            if files:
                return [(str(f), f.read_bytes()) for f in files]
        for failure in self.manifest.get("incomplete") or []:
            if failure.get("namespace") == namespace and failure.get("pod") == name:
                raise InputError(f"{namespace}/{name}: not in the snapshot: {failure.get('error')}")
        raise NotFoundError(f"{namespace}/{name}: no proxy config in {self.description}")


class SnapshotWriter:
    """Writes into a temporary sibling directory, then renames it into place: never half-written."""

    def __init__(self, directory: str, force: bool = False) -> None:
        self.target = Path(directory)
        if self.target.exists():
            if not self.target.is_dir():
                raise UsageError(f"{directory} exists and is not a directory")
            contents = list(self.target.iterdir())
            if contents and not (force and (self.target / MANIFEST).is_file()):
                hint = " (pass --force to replace an earlier snapshot)" if (self.target / MANIFEST).is_file() else ""
                raise UsageError(f"{directory} is not empty{hint}")
        parent = self.target.parent if str(self.target.parent) else Path(".")
        parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the snapshot from teammates

    def write_json(self, relative: str, value: Any) -> None:
        data = jsonutil.dumps(value)
        self.write_bytes(relative, data)

    def write_bytes(self, relative: str, data: bytes) -> None:
        if has_private_key(data):  # last line of defence; scrubbers run before this
            raise InputError(f"refusing to write {relative}: it contains a private key")
        path = self.tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def commit(self) -> None:
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old.", dir=self.target.parent))
            os.rename(self.target, old)
            os.rename(self.tmp, self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.tmp, self.target)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
