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

import errno
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

from .. import jsonutil
from ..errors import InputError, NotCapturedError, NotFoundError, UsageError
from ..keymaterial import key_material
from . import Document
from .kinds import KINDS
from .names import path_component
from .shapes import ShapeError, check_object, describe

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

# No file of a snapshot is read beyond this size (a whole mesh's dump of one sidecar is a few MB): a
# FIFO, /dev/zero or a runaway file must not exhaust memory. Documented in the README.
MAX_FILE_BYTES = 256 * 1024 * 1024


def read_regular_file(path: Path, root: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file inside `root`: never a FIFO, socket or device (which could hang or
    never end), never a link that leads out of `root`, never more than `limit` bytes. Every failure is
    an InputError naming the file."""
    shown = _relative(path, root)
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root:
        raise InputError(f"{shown}: links outside the snapshot directory are not followed")
    try:
        _regular(os.stat(real), shown)  # before opening: opening a socket or a FIFO has effects of its own
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as exc:
        raise InputError(f"{shown}: {_os_reason(exc)}") from None
    try:
        info = os.fstat(fd)
        _regular(info, shown)  # and again: it may have been swapped in between
        data = _read_to_end(fd, limit) if info.st_size <= limit else None
        if data is None:
            raise InputError(f"{shown}: larger than the {limit // (1024 * 1024)} MiB limit for snapshot files")
        return data
    except OSError as exc:
        raise InputError(f"{shown}: {_os_reason(exc)}") from None
    finally:
        os.close(fd)


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)


def _read_to_end(fd: int, limit: int) -> bytes | None:
    """All of an open file, or None once it passes `limit` bytes (it grew while being read)."""
    chunks, total = [], 0
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _read_plain_file(path: str, limit: int) -> bytes | None:
    """`path`, if it is a regular file no larger than `limit` whose last step is not a link (the caller
    has checked that its directory is inside the snapshot); None for anything else or any error, for
    read_regular_file to check again and name."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):  # before opening, as read_regular_file does
            return None
        fd = os.open(path, _OPEN_FLAGS | getattr(os, "O_NOFOLLOW", 0))  # no link swapped in since
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return _read_to_end(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _regular(info: os.stat_result, shown: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise InputError(f"{shown}: {kind} (only regular files are read)")


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    return exc.strerror or str(exc)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(root / path.relative_to(root))
    except ValueError:
        return str(path)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long, a directory we may not search: not a directory we can use
        return False


def _present(path: Path) -> bool:
    """Something (file, directory, link, even a dangling one) is at `path`: reading it will say what."""
    return os.path.lexists(path)


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


def _read_manifest(directory: Path, boundary: Path | None = None) -> dict[str, Any] | None:
    manifest = directory / MANIFEST
    if not _present(manifest):
        return None
    loaded = jsonutil.loads(read_regular_file(manifest, boundary or directory), str(manifest))
    if not isinstance(loaded, dict) or loaded.get("format") != FORMAT:
        raise InputError(f"{manifest}: not a kubectl-mtls snapshot manifest")
    version = loaded.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"{manifest}: 'version' must be an integer, not {version!r}")
    if version > MULTI_CONTEXT_VERSION:
        raise InputError(f"{manifest}: snapshot format {version} is newer than this tool")
    failures = loaded.get("incomplete", [])
    if not isinstance(failures, list) or not all(isinstance(f, dict) for f in failures):
        raise InputError(f"{manifest}: 'incomplete' must be a list of objects")
    return loaded


def snapshot_contexts(directory: str) -> list[tuple[str, str]]:
    """(context name, directory of its version-1 snapshot) of a snapshot: every context of a
    multi-context snapshot, else the one context a single snapshot was taken from."""
    root = Path(directory)
    if not _is_dir(root):
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
        self.boundary = self.root  # nothing outside it is read, whichever context is chosen
        self.description = f"snapshot {directory}"
        if not _is_dir(self.root):
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
            if not _is_dir(self.root):
                raise InputError(f"snapshot {directory}: context {context} has no directory {chosen}")
            loaded = _read_manifest(self.root, self.boundary)
        if loaded is not None:
            self.manifest = loaded
        elif not _is_dir(self.root / "proxies") and not _is_dir(self.root / "kubernetes"):
            raise InputError(f"snapshot {self.root}: neither {MANIFEST}, kubernetes/ nor proxies/ found")
        self._cache: dict[str, list[dict[str, Any]]] = {}
        self._proxies = str(self.root / "proxies")
        # directory -> (device, inode) of where it led when first read, None if outside the snapshot:
        # one entry per namespace read
        self._dirs: dict[str, tuple[int, int] | None] = {}

    # -- Kubernetes objects -------------------------------------------------------------------
    def _items(self, plural: str) -> list[dict[str, Any]]:
        if plural not in self._cache:
            path = self.root / "kubernetes" / f"{plural}.json"
            items: list[dict[str, Any]] = []
            if _present(path):
                data = jsonutil.loads(self._read(path), str(path))
                raw = data.get("items") if isinstance(data, dict) else data
                if not isinstance(raw, list):
                    raise InputError(f"{path}: expected {{'items': [objects]}}")
                for index, item in enumerate(raw):
                    try:
                        check_object(plural, item)
                    except ShapeError as exc:
                        raise InputError(f"{path}: {describe(item, index)}: {exc}") from None
                items = raw
            elif plural == "pods":
                items = self._pods_from_proxies()
            else:
                # Not in the snapshot is not "none exist": the checks that need this kind do not run.
                raise NotCapturedError(f"not read: the {self.description} has no kubernetes/{plural}.json")
            self._cache[plural] = items
        return self._cache[plural]

    def _pods_from_proxies(self) -> list[dict[str, Any]]:
        """A snapshot with dumps but no pods.json: each dump stands for a pod with a sidecar."""
        pods = []
        proxies = self.root / "proxies"
        if _is_dir(proxies):
            for ns_dir in sorted(p for p in self._list_dir(proxies) if _is_dir(p)):
                for entry in sorted(self._list_dir(ns_dir)):
                    name = entry.name.removesuffix(".json")
                    if _is_dir(entry) or entry.suffix == ".json":
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

    def _read(self, path: Path) -> bytes:
        return read_regular_file(path, self.boundary)

    def _read_in(self, directory: str, name: str) -> bytes | None:
        """`directory/name` as read_regular_file reads it, or None if nothing (not even a dangling link)
        is there. Resolving the whole path and the snapshot's root for every file cost more than
        reading it, so the directory is resolved once; each read then checks that its path still leads
        to that same directory (a stat) and that the file is regular, not a link, before opening it.
        A link, anything odd and every failure take read_regular_file, which says what is wrong."""
        path = os.path.join(directory, name)
        if directory not in self._dirs:
            self._dirs[directory] = self._inside(directory)
        known = self._dirs[directory]
        if known is not None:
            try:
                info = os.stat(directory)
                same = (info.st_dev, info.st_ino) == known
            except OSError:
                same = False
            data = _read_plain_file(path, MAX_FILE_BYTES) if same else None
            if data is not None:
                return data
        if not _present(Path(path)):
            return None
        return self._read(Path(path))

    def _inside(self, directory: str) -> tuple[int, int] | None:
        """The identity of the directory that `directory` leads to, if that is inside the snapshot."""
        real, root = os.path.realpath(directory), os.path.realpath(self.boundary)
        if os.path.commonpath([real, root]) != root:
            return None
        try:
            info = os.stat(real)
        except OSError:
            return None
        return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None

    def _list_dir(self, directory: Path) -> list[Path]:
        root = os.path.realpath(self.boundary)
        if os.path.commonpath([os.path.realpath(directory), root]) != root:
            raise InputError(f"{directory}: links outside the snapshot directory are not followed")
        try:
            return list(directory.iterdir())
        except OSError as exc:
            raise InputError(f"{directory}: {_os_reason(exc)}") from None

    def _pod_path(self, namespace: str, pod: str) -> tuple[str, str]:
        return path_component(namespace, "namespace"), path_component(pod, "pod")

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
        for failure in self.manifest.get("incomplete") or []:
            # Listed in part when the snapshot was taken: what failed was not read, it is not "none".
            if not isinstance(failure, dict) or failure.get("kind") != kind:
                continue
            where = str(failure.get("namespace") or "")
            if namespace is None or not where or where == namespace:
                scope = f" in namespace {where}" if where else ""
                raise NotCapturedError(f"{kind}{scope} not read when the snapshot was taken: {failure.get('error')}")
        return [
            o
            for o in self._items(kind)
            if namespace is None
            or not KINDS[kind].namespaced
            or (o.get("metadata") or {}).get("namespace") == namespace
        ]

    def proxy_status(self) -> bytes:
        path = self.root / PROXY_STATUS
        if not _present(path):
            raise NotFoundError(f"{self.description} has no istioctl proxy-status output")
        return self._read(path)

    def pod_log(self, namespace: str, pod: str, container: str, tail: int) -> str:
        path = self.root / log_path(*self._pod_path(namespace, pod), path_component(container, "container"))
        if not _present(path):
            raise NotFoundError(f"{self.description} has no {container} log of {namespace}/{pod}")
        lines = self._read(path).decode(errors="replace").splitlines(keepends=True)
        return "".join(lines[-tail:] if tail else [])

    def exec(
        self, namespace: str, pod: str, container: str, command: list[str], timeout: float
    ) -> tuple[str, str, int | None]:
        raise UsageError("--probe needs a live cluster, not a snapshot")

    def envoy_stats(self, namespace: str, pod: str) -> str:
        path = self.root / stats_path(*self._pod_path(namespace, pod))
        if not _present(path):
            raise NotFoundError(f"{self.description} has no stats of {namespace}/{pod} (snapshot --stats saves them)")
        return self._read(path).decode(errors="replace")

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
        if _is_dir(folder):
            for path in sorted(f for f in self._list_dir(folder) if f.suffix == ".json"):
                found.setdefault(path.stem, _ztunnel_stub(path.stem, None, None))
        return list(found.values())

    def ztunnel_stats(self, namespace: str, pod: str) -> str:
        path = self.root / stats_path(namespace, pod)
        if not path.is_file():
            raise NotFoundError(f"{self.description} has no stats of ztunnel {namespace}/{pod} (snapshot --stats)")
        return path.read_text(errors="replace")

    def ztunnel_config(self, namespace: str, pod: str) -> Document:
        path = self.root / ztunnel_path(path_component(pod, "pod"))
        if _present(path):
            return (str(path), self._read(path))
        for failure in self.manifest.get("incomplete") or []:
            if isinstance(failure, dict) and failure.get("pod") == pod and failure.get("namespace") == namespace:
                raise InputError(f"ztunnel {namespace}/{pod}: not in the snapshot: {failure.get('error')}")
        raise NotFoundError(f"ztunnel {namespace}/{pod}: no ztunnel config in {self.description}")

    # -- proxies ------------------------------------------------------------------------------
    def proxy_documents(self, namespace: str, name: str) -> list[Document]:
        namespace, name = self._pod_path(namespace, name)
        directory = os.path.join(self._proxies, namespace)
        data = self._read_in(directory, f"{name}.json")
        if data is not None:
            return [(os.path.join(directory, f"{name}.json"), data)]
        folder = self.root / "proxies" / namespace / name
        if _is_dir(folder):
            files = sorted(f for f in self._list_dir(folder) if f.suffix == ".json")
            if files:
                return [(str(f), self._read(f)) for f in files]
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
        # Workers write concurrently; once aborted, a late writer must not recreate the directory.
        self._lock = threading.Lock()
        self._closed = False

    def write_json(self, relative: str, value: Any) -> None:
        data = jsonutil.dumps(value)
        self.write_bytes(relative, data)

    def write_bytes(self, relative: str, data: bytes) -> None:
        parts = relative.split("/")
        for part in parts:  # names come from the cluster: none may lead out of the snapshot
            path_component(part, "path")
        found = key_material(data)  # last line of defence; scrubbers run before this
        if found:
            raise InputError(f"refusing to write {relative}: it contains {found}")
        path = self.tmp.joinpath(*parts)
        with self._lock:
            if self._closed:
                raise InputError(f"snapshot {self.target} was abandoned")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            except OSError as exc:
                raise InputError(f"cannot write {relative} of snapshot {self.target}: {_os_reason(exc)}") from None

    def commit(self) -> None:
        with self._lock:
            self._closed = True
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old.", dir=self.target.parent))
            os.rename(self.target, old)
            os.rename(self.tmp, self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.tmp, self.target)

    def abort(self) -> None:
        with self._lock:
            self._closed = True
            shutil.rmtree(self.tmp, ignore_errors=True)
