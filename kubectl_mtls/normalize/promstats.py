"""Prometheus text exposition (format 0.0.4) -> plaintext callers and inbound TLS stats. Pure, stdlib only.

Input is what an Istio sidecar serves on ``:15090/stats/prometheus`` (Envoy's ``/stats/prometheus``,
``istioctl experimental envoy-stats POD.NS --output prom``), or any other 0.0.4 text.

Two readings (see ../shared/reference/ERROR-SIGNATURES.md §5):

* :func:`plaintext_callers`: Istio standard metrics reported by the *server* (``reporter="destination"``),
  whose ``connection_security_policy`` says whether the connection carried mutual TLS. Who still sends
  plaintext is who breaks when the namespace goes STRICT.
* :func:`inbound_tls_stats`: Envoy's listener TLS counters, which Istio's default stats inclusion list
  filters out. Absent is not zero: an empty result means "not recorded", never "no failures".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

Sample = tuple[str, dict[str, str], float]

UNKNOWN = "unknown"  # what Istio writes for a label it cannot fill
MUTUAL_TLS = "mutual_tls"

REQUESTS = "istio_requests_total"
TCP_OPENED = "istio_tcp_connections_opened_total"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_VALUE = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|(?i:nan|inf(?:inity)?))")
_TIMESTAMP = re.compile(r"-?\d+")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


# --------------------------------------------------------------------------------------------------
# the text format


def parse_exposition(text: str) -> list[Sample]:
    """Every sample of a Prometheus 0.0.4 text exposition as ``(name, labels, value)``, in order.

    ``# HELP`` / ``# TYPE`` and other comment lines and blank lines are skipped; label values are
    unescaped (``\\"``, ``\\\\``, ``\\n``; other escapes are kept as written, as Prometheus does);
    values may be ``NaN``/``+Inf``/``-Inf``; a trailing millisecond timestamp is accepted and dropped.
    Garbage raises ``ValueError("line N: ...")``.
    """
    samples: list[Sample] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        stripped = line.lstrip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        try:
            samples.append(_parse_sample(stripped))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}: {_clip(stripped)}") from None
    return samples


def _parse_sample(line: str) -> Sample:
    match = _METRIC_NAME.match(line)
    if not match:
        raise ValueError("expected a metric name")
    name, pos = match.group(), match.end()
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        labels, pos = _parse_labels(line, pos + 1)
    rest = line[pos:]
    if rest[:1] not in (" ", "\t"):
        raise ValueError(f"expected a space and a value after {name}")
    fields = rest.split()
    if not fields:
        raise ValueError(f"missing value for {name}")
    if len(fields) > 2:
        raise ValueError(f"unexpected text after the value of {name}")
    if not _VALUE.fullmatch(fields[0]):
        raise ValueError(f"invalid value {fields[0]!r}")
    if len(fields) == 2 and not _TIMESTAMP.fullmatch(fields[1]):
        raise ValueError(f"invalid timestamp {fields[1]!r}")
    return name, labels, float(fields[0])


def _parse_labels(line: str, pos: int) -> tuple[dict[str, str], int]:
    """Parse ``name="value",...}`` starting after ``{``; returns the labels and the position after ``}``."""
    labels: dict[str, str] = {}
    end = len(line)
    while True:
        pos = _skip_blanks(line, pos)
        if pos < end and line[pos] == "}":
            return labels, pos + 1
        match = _LABEL_NAME.match(line, pos)
        if not match:
            raise ValueError("expected a label name or '}'")
        label = match.group()
        pos = _skip_blanks(line, match.end())
        if pos >= end or line[pos] != "=":
            raise ValueError(f"expected '=' after label {label}")
        pos = _skip_blanks(line, pos + 1)
        if pos >= end or line[pos] != '"':
            raise ValueError(f"expected a quoted value for label {label}")
        value, pos = _parse_quoted(line, pos + 1, label)
        if label in labels:
            raise ValueError(f"duplicate label {label}")
        labels[label] = value
        pos = _skip_blanks(line, pos)
        if pos < end and line[pos] == ",":
            pos += 1
        elif pos >= end or line[pos] != "}":
            raise ValueError(f"expected ',' or '}}' after label {label}")


def _parse_quoted(line: str, pos: int, label: str) -> tuple[str, int]:
    out: list[str] = []
    end = len(line)
    while pos < end:
        char = line[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < end:
            nxt = line[pos + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            pos += 2
            continue
        out.append(char)
        pos += 1
    raise ValueError(f"unterminated value of label {label}")


def _skip_blanks(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos


def _clip(line: str, limit: int = 120) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# plaintext callers


@dataclass(frozen=True)
class PlaintextCaller:
    """One caller that reached a workload without mutual TLS, as the server's sidecar saw it.

    ``requests``/``connections`` sum every non-``mutual_tls`` series (Istio writes ``none``) of
    ``istio_requests_total`` / ``istio_tcp_connections_opened_total``: raw totals for a scrape, increases
    for a Prometheus window. ``mtls_*`` are the same source *workload*'s mutual-TLS totals to the same
    destination over any principal (a plaintext caller has principal ``unknown``; its mTLS series carry
    the SPIFFE ID), so non-zero means the workload is partly migrated, e.g. some pods lack a sidecar.
    A caller without a sidecar usually shows as workload/namespace ``unknown``: Istio has no peer metadata.
    """

    destination_workload: str
    destination_namespace: str
    source_workload: str
    source_namespace: str
    source_principal: str
    requests: float
    connections: float
    mtls_requests: float = 0
    mtls_connections: float = 0


_Key = tuple[str, str, str, str, str]  # dest workload, dest ns, source workload, source ns, source principal


def plaintext_callers(samples: Iterable[Sample]) -> list[PlaintextCaller]:
    """Plaintext callers per destination workload, from ``reporter="destination"`` series only.

    Grouped by destination workload/namespace and source workload/namespace/principal, summed over every
    other label (response code, protocol, ...). A caller seen only with ``mutual_tls`` (or only with zero
    plaintext) is not returned. Sorted by destination namespace/workload, then source.
    """
    plain: dict[_Key, list[float]] = {}
    mtls: dict[tuple[str, str, str, str], list[float]] = {}
    for name, labels, value in samples:
        if name == REQUESTS:
            slot = 0
        elif name == TCP_OPENED:
            slot = 1
        else:
            continue
        if labels.get("reporter") != "destination" or math.isnan(value):
            continue
        key: _Key = (
            _label(labels, "destination_workload"),
            _label(labels, "destination_workload_namespace"),
            _label(labels, "source_workload"),
            _label(labels, "source_workload_namespace"),
            _label(labels, "source_principal"),
        )
        # Destination reporters write "mutual_tls" or "none"; anything else is treated as plaintext, the
        # safe side when deciding whether STRICT would break someone.
        if labels.get("connection_security_policy") == MUTUAL_TLS:
            mtls.setdefault(key[:4], [0.0, 0.0])[slot] += value
        else:
            plain.setdefault(key, [0.0, 0.0])[slot] += value
    out: list[PlaintextCaller] = []
    for key, (requests, connections) in plain.items():
        if requests <= 0 and connections <= 0:
            continue
        mtls_requests, mtls_connections = mtls.get(key[:4], (0.0, 0.0))
        out.append(PlaintextCaller(*key, requests, connections, mtls_requests, mtls_connections))
    out.sort(
        key=lambda c: (
            c.destination_namespace,
            c.destination_workload,
            c.source_namespace,
            c.source_workload,
            c.source_principal,
        )
    )
    return out


def seen_destinations(samples: Iterable[Sample]) -> set[tuple[str, str]]:
    """``(namespace, workload)`` of every destination with any server-reported traffic, mTLS or not.

    A workload here without a :class:`PlaintextCaller` received only mutual TLS: ready for STRICT as far as
    the metrics go. One missing here had no traffic in the data (or its stats were not read): unknown.
    """
    seen: set[tuple[str, str]] = set()
    for name, labels, value in samples:
        if name in (REQUESTS, TCP_OPENED) and labels.get("reporter") == "destination" and value > 0:
            seen.add((_label(labels, "destination_workload_namespace"), _label(labels, "destination_workload")))
    return seen


def _label(labels: dict[str, str], name: str) -> str:
    return labels.get(name) or UNKNOWN


# --------------------------------------------------------------------------------------------------
# inbound TLS stats

# Istio's bootstrap (use_all_default_tags: false) names the listener tag `listener_address`; upstream
# Envoy's default tags prefix every tag with `envoy_`.
_LISTENER_TAGS = ("listener_address", "envoy_listener_address")
# Upstream default tags split these stats by a tag; Istio's bootstrap leaves the part in the name.
_SSL_SUB_TAGS = {
    "ssl_ciphers": "envoy_ssl_cipher",
    "ssl_curves": "envoy_ssl_curve",
    "ssl_sigalgs": "envoy_ssl_sigalg",
    "ssl_versions": "envoy_ssl_version",
}
_LISTENER_PLAIN = ("no_filter_chain_match", "downstream_cx_total")
_TLS_INSPECTOR = (
    "tls_found",
    "tls_not_found",
    "client_hello_too_large",
    "alpn_found",
    "alpn_not_found",
    "sni_found",
    "sni_not_found",
    "read_error",
)
INBOUND_PORT_SUFFIX = "_15006"  # the sidecar's inbound listener 0.0.0.0:15006 (virtualInbound)


def inbound_tls_stats(samples: Iterable[Sample]) -> dict[str, float]:
    """Envoy's inbound TLS evidence, keyed by the admin ``/stats`` name (as ``pilot-agent request GET stats``).

    Listener stats ``listener.<address>.no_filter_chain_match``, ``….downstream_cx_total`` and
    ``….ssl.*`` (``ssl.handshake``, ``ssl.connection_error``, ``ssl.fail_verify_error|san|no_cert``,
    ``ssl.versions.TLSv1.3``, ``ssl.certificate.default.expiration_unix_time_seconds`` ...) of the inbound
    listener: ``0.0.0.0_15006`` on a sidecar, or any listener that terminates TLS. Plus the proxy-wide
    ``tls_inspector.*`` counters (``tls_not_found`` counts plaintext connections sniffed on *any* listener).

    Both Istio's tag names (``listener_address``) and upstream Envoy's (``envoy_listener_address``,
    ``envoy_ssl_version`` ...) are understood. An empty dict means Istio's default inclusion list dropped
    these stats (``proxyStatsMatcher`` ``inclusionPrefixes: ["listener"]`` restores them): absent, not zero.
    """
    per_listener: dict[str, dict[str, float]] = {}
    inspector: dict[str, float] = {}
    for name, labels, value in samples:
        if name.startswith("envoy_tls_inspector_"):
            stat = name[len("envoy_tls_inspector_") :]
            if stat in _TLS_INSPECTOR:
                key = f"tls_inspector.{stat}"
                inspector[key] = inspector.get(key, 0.0) + value
            continue
        if not name.startswith("envoy_listener_"):
            continue
        address = next((labels[t] for t in _LISTENER_TAGS if labels.get(t)), None)
        if address is None:  # admin listener, or a listener without the address tag
            continue
        dotted = _listener_stat(name[len("envoy_listener_") :], labels)
        if dotted is None:
            continue
        stats = per_listener.setdefault(address, {})
        stats[dotted] = stats.get(dotted, 0.0) + value
    out: dict[str, float] = {}
    for address in sorted(per_listener):
        stats = per_listener[address]
        if address.endswith(INBOUND_PORT_SUFFIX) or any(s.startswith("ssl.") for s in stats):
            out.update({f"listener.{address}.{stat}": stats[stat] for stat in sorted(stats)})
    out.update(sorted(inspector.items()))
    return out


def _listener_stat(rest: str, labels: dict[str, str]) -> str | None:
    """``ssl_fail_verify_san`` -> ``ssl.fail_verify_san`` and friends; None for stats that are not TLS evidence."""
    if rest in _LISTENER_PLAIN:
        return rest
    if not rest.startswith("ssl_"):
        return None
    tag = _SSL_SUB_TAGS.get(rest)
    if tag is not None:  # upstream tags: envoy_listener_ssl_versions{envoy_ssl_version="TLSv1.3"}
        sub = labels.get(tag)
        return f"ssl.{rest[4:]}.{sub}" if sub else f"ssl.{rest[4:]}"
    for prefix in _SSL_SUB_TAGS:  # Istio: envoy_listener_ssl_versions_TLSv1_3
        if rest.startswith(prefix + "_"):
            sub = rest[len(prefix) + 1 :]
            if prefix == "ssl_versions":
                sub = re.sub(r"^TLSv1_(\d)$", r"TLSv1.\1", sub)
            return f"ssl.{prefix[4:]}.{sub}"
    expiry = "expiration_unix_time_seconds"
    if rest == f"ssl_certificate_{expiry}":  # upstream: envoy_tls_certificate="default"
        cert = labels.get("envoy_tls_certificate")
        return f"ssl.certificate.{cert}.{expiry}" if cert else None
    if rest.startswith("ssl_certificate_") and rest.endswith("_" + expiry):  # Istio: name in the stat
        cert = rest[len("ssl_certificate_") : -len(expiry) - 1]
        return f"ssl.certificate.{cert}.{expiry}"
    if rest.startswith("ssl_ocsp_"):
        return None
    return "ssl." + rest[4:]
