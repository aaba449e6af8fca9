"""`kubectl mtls snapshot -d DIR`: save what the live source reads, to replay with --snapshot DIR."""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from .. import __version__
from ..errors import EXIT_GATHER, EXIT_OK, GatherError, InputError, MtlsError, NotFoundError, UsageError
from ..gather.proxies import WORKERS
from ..normalize import pod as podinfo
from ..render import Style, columns, emit
from ..sources.kinds import KINDS, SNAPSHOT_KINDS
from ..sources.scrub import redact_key_strings, scrub_crd, scrub_dump, scrub_object, scrub_pod, scrub_secret
from ..sources.snapshot import (
    CONTEXTS_DIR,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MULTI_CONTEXT_VERSION,
    PROXY_STATUS,
    SnapshotWriter,
    log_path,
    stats_path,
    ztunnel_path,
)
from .common import namespace_of, now, open_context, open_source, paired_kubeconfigs, positive_int, several
from .targets import require_namespace

ROOT_NAMESPACE = "istio-system"  # mesh-wide policies live here (meshConfig rootNamespace default)


def register(sub: Any, output: argparse.ArgumentParser, source: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "snapshot",
        parents=[source, output],
        help="save pods, Istio policies and sidecar configs to a directory",
        description="Save what kubectl-mtls reads from the cluster (Kubernetes objects and one Envoy config "
        "dump per sidecar) into DIR, so any command can replay it with --snapshot DIR, without a cluster. "
        "No private key and no Secret data is ever written; env values in pod specs are redacted.",
        epilog="examples:\n  kubectl mtls snapshot -n bookinfo -d ./bookinfo-snap\n"
        "  kubectl mtls snapshot -A -l app=reviews -d ./snap && kubectl mtls certs -A --snapshot ./snap\n"
        "  kubectl mtls snapshot --context east --context west -A -d ./mesh   # one snapshot per context, "
        "side by side (contexts/NAME/); kubectl mtls trust --snapshot ./mesh",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-d", "--dir", required=True, metavar="DIR", help="directory to write (new or empty)")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument("-l", "--selector", help="label selector for pods")
    parser.add_argument("--force", action="store_true", help="replace an earlier snapshot in DIR")
    parser.add_argument(
        "--logs",
        action="store_true",
        help="also save the last log lines of each sidecar, each ztunnel and istiod (for check's log checks)",
    )
    parser.add_argument(
        "--tail", type=positive_int, default=500, metavar="N", help="log lines per container with --logs"
    )
    parser.add_argument(
        "--stats",
        action="store_true",
        help="also save each sidecar's and ztunnel's Prometheus stats (who sends plaintext: for strict-ready)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.snapshot:
        raise UsageError("snapshot reads a live cluster; --snapshot makes no sense here")
    if len(several(args, "contexts")) > 1:
        with _signals_as_exit():
            return _run_contexts(args)
    source = open_source(args)
    scope = None if args.all_namespaces else namespace_of(args, source)
    writer = SnapshotWriter(args.dir, force=args.force)
    try:
        with _signals_as_exit():
            manifest = _collect(source, scope, args.selector, writer, args)
            writer.write_json(MANIFEST, manifest)
            writer.commit()
    except BaseException:  # Ctrl-C, SIGTERM, SIGHUP or an error: no temporary directory left behind
        writer.abort()
        raise
    style = Style.detect(args.no_color)
    summary = {"directory": args.dir, **manifest}
    emit(summary, args.output, args.query, lambda d, wide: table(d, style, wide))
    nothing = not manifest["proxies"] and not manifest["ztunnels"]
    return EXIT_GATHER if manifest["pods"] and nothing and manifest["incomplete"] else EXIT_OK


class _Under:
    """A writer that puts everything under one sub-directory (one context of a multi-context snapshot)."""

    def __init__(self, writer: SnapshotWriter, prefix: str) -> None:
        self.writer, self.prefix = writer, prefix

    def write_json(self, relative: str, value: Any) -> None:
        self.writer.write_json(f"{self.prefix}/{relative}", value)

    def write_bytes(self, relative: str, data: bytes) -> None:
        self.writer.write_bytes(f"{self.prefix}/{relative}", data)


def context_directory(name: str, taken: set[str]) -> str:
    """A directory name for a context: context names may hold `/` and `:` (EKS ARNs)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "context"
    candidate, index = base, 2
    while candidate in taken:
        candidate, index = f"{base}-{index}", index + 1
    taken.add(candidate)
    return candidate


def _run_contexts(args: argparse.Namespace) -> int:
    """`snapshot --context A --context B`: one version-1 snapshot per context, side by side."""
    contexts = several(args, "contexts")
    if len(set(contexts)) != len(contexts):
        raise UsageError("--context: each context once")
    writer = SnapshotWriter(args.dir, force=args.force)
    taken: set[str] = set()
    entries, summaries, failed = [], [], []
    try:
        for context, kubeconfig in zip(contexts, paired_kubeconfigs(args, contexts), strict=True):
            source = open_context(args, context, kubeconfig)
            try:
                scope = None if args.all_namespaces else namespace_of(args, source)
                path = f"{CONTEXTS_DIR}/{context_directory(context, taken)}"
                manifest = _collect(source, scope, args.selector, _Under(writer, path), args)
            except MtlsError as exc:
                if exc.exit_code != EXIT_GATHER:
                    raise
                failed.append({"context": context, "error": str(exc)})
                continue
            manifest["context"] = context
            _Under(writer, path).write_json(MANIFEST, manifest)
            entries.append({"name": context, "path": path})
            summaries.append({"context": context, "directory": f"{args.dir}/{path}", **manifest})
        if not entries:
            raise GatherError("; ".join(f"{f['context']}: {f['error']}" for f in failed))
        writer.write_json(
            MANIFEST,
            {
                "format": FORMAT,
                "version": MULTI_CONTEXT_VERSION,
                "tool_version": f"v{__version__}",
                "created": now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                "contexts": entries,
                "incomplete": failed,
            },
        )
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    style = Style.detect(args.no_color)
    result = {"directory": args.dir, "contexts": summaries, "incomplete": failed}
    emit(result, args.output, args.query, lambda d, wide: _contexts_table(d, style))
    return EXIT_GATHER if failed else EXIT_OK


def _contexts_table(data: dict[str, Any], style: Style) -> str:
    text = ""
    for summary in data["contexts"]:
        text += f"context {summary['context']}: " + table(summary, style).split("Replay with:")[0]
    for failure in data["incomplete"]:
        text += style.warn(f"incomplete: context {failure['context']}: {failure['error']}") + "\n"
    text += f"Replay with: kubectl mtls trust --snapshot {data['directory']}\n"
    return text


@contextlib.contextmanager
def _signals_as_exit() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C does, through the cleanup above (exit 128+signal).
    SIGKILL cannot be caught: it may leave a `.DIR.*` temporary directory (see the README)."""

    from ..sources import istioctl

    def leave(signum: int, _frame: Any) -> None:
        istioctl.stop_all()  # worker threads waiting on istioctl return, so the process can end
        raise SystemExit(128 + signum)

    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                previous[sig] = signal.signal(sig, leave)
    except ValueError:  # not the main thread (embedded use): nothing to install
        pass
    try:
        yield
    except KeyboardInterrupt:
        istioctl.stop_all()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _collect(
    source: Any, scope: str | None, selector: str | None, writer: SnapshotWriter | _Under, args: argparse.Namespace
) -> dict[str, Any]:
    incomplete: list[dict[str, str]] = []
    pods = source.list_pods(scope, selector)  # without pods there is nothing to snapshot: errors stop here
    if scope is not None and not pods:  # an empty namespace, or a typo: say which
        require_namespace(source, scope)
    writer.write_json("kubernetes/pods.json", redact_key_strings({"items": [scrub_pod(p) for p in pods]}))
    counts: dict[str, int] = {"pods": len(pods)}
    for kind in SNAPSHOT_KINDS:
        if kind == "pods":
            continue
        spec = KINDS[kind]
        scopes: list[str | None] = [None] if (scope is None or not spec.namespaced or spec.names) else [scope]
        if scope is not None and spec.namespaced and not spec.names and scope != ROOT_NAMESPACE:
            scopes.append(ROOT_NAMESPACE)
        if spec.istio_namespace_only:
            scopes = [args.istio_namespace]
        objects: list[dict[str, Any]] = []
        read = failed = False
        for ns in scopes:
            try:
                objects.extend(source.list_objects(kind, ns))
                read = True
            except NotFoundError:
                continue
            except MtlsError as exc:
                failed = True
                incomplete.append({"kind": kind, "namespace": ns or "", "error": str(exc)})
        if failed and not read:
            continue  # no file: a replay says "not read", never "none"
        counts[kind] = len(objects)
        scrub = {"secrets": scrub_secret, "customresourcedefinitions": scrub_crd}.get(kind, scrub_object)
        writer.write_json(f"kubernetes/{kind}.json", redact_key_strings({"items": [scrub(o) for o in objects]}))

    with_envoy = [p for p in pods if podinfo.has_envoy(p)]

    def dump(pod: dict[str, Any]) -> dict[str, str] | None:
        ns, name = podinfo.name_of(pod)
        try:
            documents = source.proxy_documents(ns, name)
        except MtlsError as exc:
            return {"namespace": ns, "pod": name, "error": str(exc)}
        for what, raw in documents:
            try:
                doc = orjson.loads(raw)  # never store what we could not read back
            except orjson.JSONDecodeError as exc:
                return {"namespace": ns, "pod": name, "error": f"{what}: not valid JSON ({exc})"}
            scrubbed = scrub_dump(doc)
            try:
                if scrubbed != doc:
                    writer.write_json(f"proxies/{ns}/{name}.json", scrubbed)
                else:  # istioctl's bytes unchanged: replays exactly, and keeps the fast parse path
                    writer.write_bytes(f"proxies/{ns}/{name}.json", raw)
            except InputError as exc:  # key material outside the fields Envoy marks sensitive
                return {"namespace": ns, "pod": name, "error": str(exc)}
        return None

    pool = ThreadPoolExecutor(max_workers=WORKERS)
    try:
        failures = [f for f in pool.map(dump, with_envoy) if f]
    finally:  # interrupted: queued dumps are dropped, not fetched into an abandoned directory
        pool.shutdown(wait=False, cancel_futures=True)
    incomplete.extend(failures)
    ztunnels = _save_ztunnels(source, writer, incomplete)
    try:
        writer.write_bytes(PROXY_STATUS, source.proxy_status())
    except MtlsError as exc:
        incomplete.append({"kind": "istioctl proxy-status", "namespace": "", "error": str(exc)})
    if args.logs:
        incomplete.extend(_save_logs(source, with_envoy, writer, args))
        for entry in ztunnels:  # ztunnel's access log: its container is called istio-proxy too
            ns, name = entry["namespace"], entry["pod"]
            try:
                writer.write_bytes(
                    log_path(ns, name, "istio-proxy"), source.pod_log(ns, name, "istio-proxy", args.tail).encode()
                )
            except MtlsError as exc:
                incomplete.append({"namespace": ns, "pod": name, "error": f"ztunnel log: {exc}"})
    if args.stats:
        for pod in with_envoy:
            ns, name = podinfo.name_of(pod)
            try:
                writer.write_bytes(stats_path(ns, name), source.envoy_stats(ns, name).encode())
            except MtlsError as exc:
                incomplete.append({"namespace": ns, "pod": name, "error": f"stats: {exc}"})
        for entry in ztunnels:  # ambient workloads' metrics are reported by their node's ztunnel
            try:
                text = source.ztunnel_stats(entry["namespace"], entry["pod"])
                writer.write_bytes(stats_path(entry["namespace"], entry["pod"]), text.encode())
            except MtlsError as exc:
                incomplete.append(
                    {"namespace": entry["namespace"], "pod": entry["pod"], "error": f"ztunnel stats: {exc}"}
                )
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tool_version": f"v{__version__}",
        "created": now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source.description,
        "context": getattr(source, "context_name", None),
        "scope": scope or "all namespaces",
        "selector": selector,
        "default_namespace": scope or source.default_namespace(),
        "pods": len(pods),
        "proxies": len(with_envoy) - len(failures),
        "ztunnels": ztunnels,
        "objects": counts,
        "incomplete": incomplete,
    }


def _save_ztunnels(
    source: Any, writer: SnapshotWriter | _Under, incomplete: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """`ztunnel/<pod>.json` per ztunnel pod: istioctl's bytes, once they parse as JSON."""
    try:
        pods = source.ztunnel_pods()
    except MtlsError as exc:
        incomplete.append({"kind": "ztunnel pods", "namespace": "", "error": str(exc)})
        return []
    saved = []
    for pod in pods:
        ns, name = podinfo.name_of(pod)
        try:
            what, raw = source.ztunnel_config(ns, name)
            orjson.loads(raw)
            writer.write_bytes(ztunnel_path(name), raw)  # refused (InputError) if it holds key material
        except orjson.JSONDecodeError as exc:
            incomplete.append({"namespace": ns, "pod": name, "error": f"{what}: not valid JSON ({exc})"})
            continue
        except MtlsError as exc:
            incomplete.append({"namespace": ns, "pod": name, "error": str(exc)})
            continue
        node = (pod.get("spec") or {}).get("nodeName")
        saved.append({"namespace": ns, "pod": name, "node": node if isinstance(node, str) else None})
    return saved


def _save_logs(
    source: Any, pods: list[dict[str, Any]], writer: SnapshotWriter | _Under, args: argparse.Namespace
) -> list[dict[str, str]]:
    """istio-proxy logs of the sidecars and the discovery logs of istiod (found by label app=istiod)."""
    failures = []
    targets = [(*podinfo.name_of(p), "istio-proxy") for p in pods]
    try:
        istiods = source.list_pods(args.istio_namespace, "app=istiod")
        targets += [(*podinfo.name_of(p), "discovery") for p in istiods]
    except MtlsError as exc:
        failures.append({"kind": "istiod pods", "namespace": args.istio_namespace, "error": str(exc)})
    for ns, name, container in targets:
        try:
            writer.write_bytes(log_path(ns, name, container), source.pod_log(ns, name, container, args.tail).encode())
        except MtlsError as exc:
            failures.append({"namespace": ns, "pod": name, "error": f"{container} log: {exc}"})
    return failures


def table(data: dict[str, Any], style: Style, wide: bool = False) -> str:
    text = (
        f"Wrote snapshot {data['directory']}: {data['pods']} pods ({data['scope']}), "
        f"{data['proxies']} sidecar configs, {len(data['ztunnels'])} ztunnel configs.\n"
    )
    if wide:
        text += (
            f"Format {data.get('format')} v{data.get('version')}, written {data.get('created')} by "
            f"kubectl-mtls {data.get('tool_version')} from {data.get('source')}"
            + (f", default namespace {data['default_namespace']}" if data.get("default_namespace") else "")
            + "\n"
        )
    rows = [[kind, count] for kind, count in data["objects"].items()]
    text += columns(["KIND", "OBJECTS"], rows)
    for entry in data["incomplete"]:
        if "pod" in entry:
            where = f"{entry['namespace']}/{entry['pod']}"
        else:
            where = entry["kind"] + (f" in {entry['namespace']}" if entry["namespace"] else "")
        text += style.warn(f"incomplete: {where}: {entry['error']}") + "\n"
    text += f"Replay with: kubectl mtls check -A --snapshot {data['directory']}\n"
    return text
