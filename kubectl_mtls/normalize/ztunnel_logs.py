"""ztunnel's access log: `connection complete` lines that carry an `error=`, classified. Pure.

ztunnel writes (src/proxy.rs, src/tls, src/rbac.rs; ../shared/reference/AMBIENT.md):
`<RFC 3339 time>  error  access  connection complete  src.addr=IP:PORT src.workload="..." src.namespace="..."
src.identity="spiffe://..." dst.addr=IP:15008 dst.hbone_addr=IP:PORT dst.service="..." dst.workload="..."
dst.namespace="..." dst.identity="spiffe://..." direction="inbound" bytes_sent=0 bytes_recv=0 duration="0ms"
error="..."` — fields separated by spaces (the prefix by tabs or spaces), strings quoted, some absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_FIELD = re.compile(r'([a-z_.]+)=("(?:[^"\\]|\\.)*"|\S+)')
_DENIED_BY = re.compile(r"explicitly denied by: ?([^\s\"]+)")

# (class, substrings of ztunnel's error text), checked in order: the first that matches wins.
CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("policy-denied", ("policy rejection: explicitly denied by",)),
    ("policy-not-allowed", ("allow policies exist, but none allowed",)),
    ("policy-rejected", ("connection closed due to policy rejection", "connection closed due to policy change")),
    ("hbone-blocked", ("maybe a NetworkPolicy is blocking HBONE port 15008",)),
    ("trust-domain", ("did not present the expected trustdomain",)),
    ("san-mismatch", ("did not present the expected SAN",)),
    ("identity-error", ("identity error", "signing error", "signing gRPC error")),
    ("unknown-issuer", ("UnknownIssuer", "unknown issuer", "unable to get local issuer", "CERTIFICATE_VERIFY_FAILED")),
    ("revoked", ("revoked",)),
    ("tls-handshake", ("tls handshake error", "tls error", "handshake failed")),
    ("unknown-destination", ("unknown destination", "unknown waypoint", "no service or workload for hostname")),
    ("no-healthy-upstream", ("no healthy upstream",)),
)

MEANING = {
    "policy-denied": "a DENY AuthorizationPolicy matched",
    "policy-not-allowed": "ALLOW policies apply, and none allowed this caller",
    "policy-rejected": "an AuthorizationPolicy rejected the connection",
    "hbone-blocked": "the HBONE connection to port 15008 timed out (a NetworkPolicy?)",
    "trust-domain": "the peer's certificate is from another trust domain",
    "san-mismatch": "the peer presented another identity than expected",
    "unknown-issuer": "the peer's certificate does not chain to a trusted root",
    "revoked": "the peer's certificate is revoked",
    "identity-error": "ztunnel could not get a certificate for the identity",
    "tls-handshake": "the TLS handshake failed",
    "unknown-destination": "ztunnel does not know the destination",
    "no-healthy-upstream": "no healthy endpoint behind the destination",
    "other": "another connection error",
}


@dataclass
class ConnectionError:
    kind: str
    error: str
    direction: str | None
    src_workload: str | None
    src_namespace: str | None
    src_identity: str | None
    src_addr: str | None
    dst_workload: str | None
    dst_namespace: str | None
    dst_identity: str | None
    dst_service: str | None
    policy: str | None  # "ns/name" named by an explicit deny
    line: str
    count: int = 1
    lines: list[str] = field(default_factory=list)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def classify(error: str) -> str:
    for kind, needles in CLASSES:
        if any(n in error for n in needles):
            return kind
    return "other"


def parse_line(line: str) -> ConnectionError | None:
    if "connection complete" not in line or "error=" not in line or "access" not in line:
        return None
    fields = {k: _unquote(v) for k, v in _FIELD.findall(line.split("connection complete", 1)[1])}
    error = fields.get("error")
    if not error:
        return None
    denied = _DENIED_BY.search(error)
    return ConnectionError(
        kind=classify(error),
        error=error,
        direction=fields.get("direction"),
        src_workload=fields.get("src.workload"),
        src_namespace=fields.get("src.namespace"),
        src_identity=fields.get("src.identity"),
        src_addr=fields.get("src.addr"),
        dst_workload=fields.get("dst.workload"),
        dst_namespace=fields.get("dst.namespace"),
        dst_identity=fields.get("dst.identity"),
        dst_service=fields.get("dst.service"),
        policy=denied.group(1) if denied else None,
        line=line.strip(),
    )


def classify_log(text: str) -> list[ConnectionError]:
    """Errors grouped by (class, source, destination, direction), counted, first line kept as a sample."""
    grouped: dict[tuple[str | None, ...], ConnectionError] = {}
    for line in text.splitlines():
        item = parse_line(line)
        if item is None:
            continue
        key = (
            item.kind,
            item.src_namespace,
            item.src_workload,
            item.src_identity,
            item.dst_namespace,
            item.dst_workload,
            item.direction,
            item.policy,
        )
        if key in grouped:
            grouped[key].count += 1
        else:
            grouped[key] = item
    return list(grouped.values())
