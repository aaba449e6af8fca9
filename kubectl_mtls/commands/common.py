"""Flags every command shares, and turning them into a Source."""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime
from typing import Any

from ..errors import UsageError
from ..render import FORMATS
from ..sources import Source

TIMEOUT_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: str) -> float:
    """kubectl's --request-timeout: a bare integer is seconds, else a Go duration (1m30s); 0 = none."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * TIMEOUT_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(
            "Invalid timeout value. Timeout must be a single integer in seconds, or an integer followed by "
            "a corresponding time unit (e.g. 1s | 2m | 3h)"
        )
    return total


def parse_span(value: str) -> float:
    """A length of time for certificate horizons: --request-timeout's forms plus days and weeks (30d, 2w)."""
    text = value.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([dw])", text)
    if match:
        return float(match.group(1)) * (86400.0 if match.group(2) == "d" else 7 * 86400.0)
    try:
        return parse_duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"invalid duration {value!r}: use e.g. 72h, 30d or 2w") from None


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return number


class _Repeatable(argparse.Action):
    """`--context` / `--kubeconfig`: the last value in `dest` (what one-cluster commands use) and every
    value in `<dest>s` (what `trust` and `snapshot` use, one per cluster)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)
        plural = self.dest + "s"
        setattr(namespace, plural, [*(getattr(namespace, plural, None) or []), values])


def output_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    group.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default: table)")
    group.add_argument("--query", metavar="JMESPATH", help="JMESPath expression applied to the JSON output")
    group.add_argument("--no-color", action="store_true", help="no colour (also: NO_COLOR set)")
    return parent


def source_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("where to read from")
    group.add_argument("-n", "--namespace", help="namespace (default: the context's, else 'default')")
    group.add_argument("--snapshot", metavar="DIR", help="read a saved snapshot instead of the cluster")
    group.add_argument("--kubeconfig", action=_Repeatable, help="path to the kubeconfig file")
    group.add_argument("--context", action=_Repeatable, help="kubeconfig context to use")
    group.add_argument("--cluster", help="kubeconfig cluster to use")
    group.add_argument("--user", help="kubeconfig user to use")
    group.add_argument(
        "--request-timeout",
        type=parse_duration,
        default=30.0,  # sources.live.DEFAULT_REQUEST_TIMEOUT, kept literal: --help must not import the source
        metavar="DURATION",
        help="per API request timeout (e.g. 5, 5s, 1m; default 30s; 0 = none)",
    )
    group.add_argument("--istioctl", metavar="PATH", help="istioctl binary (default: istioctl on PATH)")
    group.add_argument(
        "-i",
        "--istio-namespace",
        default="istio-system",
        metavar="NS",
        help="namespace of istiod and its CA (default istio-system)",
    )
    group.add_argument(
        "--istioctl-timeout",
        type=parse_duration,
        default=30.0,
        metavar="DURATION",
        help="timeout per istioctl call (default 30s)",
    )
    return parent


def several(args: argparse.Namespace, dest: str) -> list[str]:
    """Every value of a repeatable flag (`contexts`, `kubeconfigs`), in the order given."""
    return list(getattr(args, dest, None) or [])


def open_source(args: argparse.Namespace) -> Source:
    if len(several(args, "contexts")) > 1 or len(several(args, "kubeconfigs")) > 1:
        raise UsageError("--context and --kubeconfig name one cluster here; only trust and snapshot take several")
    return open_context(args, args.context, args.kubeconfig)


def paired_kubeconfigs(args: argparse.Namespace, contexts: list[str]) -> list[str | None]:
    """One kubeconfig per context: none given (the default for all), one (for all), or one per
    --context in the same order."""
    given: list[str | None] = list(several(args, "kubeconfigs"))
    if not given:
        return [None] * len(contexts)
    if len(given) == 1:
        return given * len(contexts)
    if len(given) != len(contexts):
        raise UsageError(
            f"--kubeconfig given {len(given)} times for {len(contexts)} contexts: give it once, or once per --context"
        )
    return given


def open_context(args: argparse.Namespace, context: str | None, kubeconfig: str | None) -> Source:
    """The source of one context: a live cluster, or that context of a (multi-context) snapshot."""
    if args.snapshot:
        from ..sources.snapshot import SnapshotSource

        return SnapshotSource(args.snapshot, context)
    from ..sources.live import Connection, LiveSource

    return LiveSource(
        Connection(
            kubeconfig=kubeconfig,
            context=context,
            cluster=args.cluster,
            user=args.user,
            request_timeout=args.request_timeout or None,
            istioctl=args.istioctl,
            istioctl_timeout=args.istioctl_timeout,
            istio_namespace=args.istio_namespace,
        )
    )


def namespace_of(args: argparse.Namespace, source: Source) -> str:
    return str(args.namespace) if args.namespace else source.default_namespace()


def pod_ref(args: argparse.Namespace, source: Source, ref: str) -> tuple[str, str]:
    """(namespace, pod) of `pod`, `ns/pod`, `pod.ns` or a workload (`deploy/NAME`...): see targets."""
    from .targets import pod_ref as resolve

    return resolve(args, source, ref)


def now() -> datetime:
    """The clock; KUBECTL_MTLS_NOW (RFC 3339) pins it, to replay an old snapshot as of its day."""
    pinned = os.environ.get("KUBECTL_MTLS_NOW")
    if pinned:
        try:
            moment = datetime.fromisoformat(pinned.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"KUBECTL_MTLS_NOW={pinned!r} is not an RFC 3339 time") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return datetime.now(UTC)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def pod_names(pods: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [((p.get("metadata") or {}).get("namespace", ""), (p.get("metadata") or {}).get("name", "")) for p in pods]
