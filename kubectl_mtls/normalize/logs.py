"""Classify istio-proxy and istiod log lines into mTLS findings.

Signatures are the exact strings measured on Envoy 1.40 and read from istiod's source
(../shared/reference/ERROR-SIGNATURES.md). Two spellings of each exist: access logs replace spaces
inside ``%RESPONSE_CODE_DETAILS%``/``%..._TRANSPORT_FAILURE_REASON%`` with ``_`` while debug lines keep
them, so every comparison runs on a normalised copy (lower case, ``_`` and ``-`` as spaces).

``side`` names the end of the connection that *refused* it (or, for ``tls-to-plaintext``, that failed):
``client`` when the caller refused the server or its upstream connection failed, ``server`` when the
callee refused the caller. A verification error that this proxy logs is this proxy's role; a TLS alert
it *received* (``TLSV1_ALERT_UNKNOWN_CA``, ``SSLV3_ALERT_CERTIFICATE_EXPIRED``...) means the peer refused,
so the side is the peer's role. That keeps ``(kind, side)`` meaning one root cause whichever of the two
logs it came from: ``unknown-ca``/``client`` = the client lacks the server's root, ``unknown-ca``/
``server`` = the server lacks the client's root. ``istiod`` marks control-plane trouble (NACKs, CSRs,
xDS authorization), ``unknown`` a connection whose direction the line does not reveal.

Pure: text in, findings out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["LogFinding", "classify_istiod_log", "classify_proxy_log"]

MAX_LINE = 300


@dataclass
class LogFinding:
    """One kind of failure seen in a log, with the last line that showed it."""

    kind: str  # unknown-ca | verify-failed | expired | san-mismatch | plaintext-to-strict | no-client-cert |
    # tls-to-plaintext | rbac-denied | csr-failure | nack | authn-failure | xds-unauthorized | rbac-permission
    side: str  # client | server | istiod | unknown (see the module docstring)
    summary: str  # one line in words
    line: str  # evidence, trimmed to MAX_LINE characters
    policy: str | None = None  # rbac-denied: matched policy name, "none" when no ALLOW policy matched
    count: int = 1


# ------------------------------------------------------------------------------------------------
# shared helpers


def _norm(text: str) -> str:
    """Comparable form: access logs write `SSL_routines`, debug logs `SSL routines`."""
    return text.lower().replace("_", " ").replace("-", " ")


def _trim(line: str) -> str:
    line = line.strip()
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _other(role: str) -> str:
    return "server" if role == "client" else "client"


@dataclass
class _Hit:
    kind: str
    side: str
    summary: str
    policy: str | None = None
    subject: str | None = None  # extra dedupe key (istiod: which proxy / which reason)


class _Collector:
    """Deduplicates hits by key, counting them and keeping the latest line and summary as evidence."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str, str | None, str | None], LogFinding] = {}

    def add(self, hit: _Hit, line: str) -> None:
        key = (hit.kind, hit.side, hit.policy, hit.subject)
        found = self._found.get(key)
        if found is None:
            self._found[key] = LogFinding(hit.kind, hit.side, hit.summary, _trim(line), hit.policy)
        else:
            found.count += 1
            found.line = _trim(line)
            found.summary = hit.summary

    def result(self) -> list[LogFinding]:
        return list(self._found.values())  # dicts keep first-seen order


def _json_object(line: str) -> dict[str, Any] | None:
    """The JSON object a line holds, tolerating a `kubectl logs --timestamps/--prefix` prefix."""
    start = line.find("{")
    if start < 0 or not line.endswith("}"):
        return None
    try:
        value = orjson.loads(line[start:])
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _s(value: Any) -> str:
    return "" if value is None else str(value)


# ------------------------------------------------------------------------------------------------
# TLS signatures

# (normalised needle, kind, local) in priority order. local=True: this proxy's verifier refused the peer;
# local=False: this proxy received an alert, i.e. the peer refused this proxy.
_TLS_SIGNATURES: tuple[tuple[str, str, bool], ...] = (
    ("unable to get local issuer certificate", "unknown-ca", True),
    ("unable to get issuer certificate", "unknown-ca", True),
    # The server's chain carries its own (foreign) root, as Istio's `default` secret does: BoringSSL then
    # stops at that untrusted self-signed root. Same cause as above: the verifier lacks the peer's root.
    ("self signed certificate", "unknown-ca", True),
    ("certificate has expired", "expired", True),
    ("san matcher", "san-mismatch", True),
    ("peer did not return a certificate", "no-client-cert", True),
    ("wrong version number", "tls-to-plaintext", True),
    ("tlsv1 alert unknown ca", "unknown-ca", False),
    ("sslv3 alert certificate expired", "expired", False),
    ("sslv3 alert certificate unknown", "san-mismatch", False),
    # BoringSSL (Envoy) names it TLSV1_ALERT_CERTIFICATE_REQUIRED, OpenSSL (Python, curl) TLSV13_...
    ("alert certificate required", "no-client-cert", False),
    ("certificate verify failed", "verify-failed", True),  # any other verification error
    # Envoy's TLS socket before SDS delivered the secret: this proxy has no certificate or roots yet.
    ("secret is not supplied by sds", "no-secret", True),
)
# A line must look like a TLS error before its words count: "certificate has expired" alone could be
# pilot-agent talking about something else.
_TLS_CONTEXT = ("tls error", "verify cert failed", "openssl internal", "ssl routines", "[ssl:")
_DEPTH_REASON = re.compile(r"error at depth \d+: ([^:|{}]+)")
_SANS = re.compile(r"SAN[ _]matcher,[ _]certificate[ _]SANs[ _]are[ _](\[[^\]]*\])")


def _tls_hit(fragment: str, role: str | None) -> _Hit | None:
    """Classify a TLS error text; ``role`` is this proxy's role on the connection, None when unknown."""
    norm = _norm(fragment)
    if not any(ctx in norm for ctx in _TLS_CONTEXT):
        return None
    match = next((sig for sig in _TLS_SIGNATURES if sig[0] in norm), None)
    if match is None:
        return None
    _, kind, local = match

    if kind == "no-client-cert":
        # Only a server asks for a client certificate: the server refused, whichever log this is.
        side = "server"
    elif kind == "no-secret":
        side = role or "unknown"  # this proxy, whatever its role: it had nothing to present or verify with
    elif kind == "tls-to-plaintext" and role == "server":
        # A server reading a non-TLS record on a TLS-only port: a plaintext caller hit a strict port.
        kind, side = "plaintext-to-strict", "server"
    elif kind == "tls-to-plaintext":
        side = "client"
    elif role is None:
        side = "unknown"
    else:
        side = role if local else _other(role)
    return _Hit(kind, side, _tls_summary(kind, side, local, fragment, norm))


def _parties(side: str, local: bool) -> tuple[str, str]:
    """(who refused, whose certificate was refused), as sentence subjects. When the line does not say
    which end this proxy was, the refuser is "this proxy" if its own verifier spoke, else "the peer"."""
    if side in ("client", "server"):
        return f"the {side}", f"the {_other(side)}"
    return ("this proxy", "its peer") if local else ("the peer", "this proxy")


def _owner(party: str) -> str:
    return "its peer's" if party == "its peer" else f"{party}'s"


def _tls_summary(kind: str, side: str, local: bool, fragment: str, norm: str) -> str:
    refuser, other = _parties(side, local)
    if kind == "unknown-ca":
        if local:
            reason = _DEPTH_REASON.search(norm)
            why = f" ({reason.group(1).strip()})" if reason else ""
            return (
                f"{refuser} cannot verify {_owner(other)} certificate{why}: "
                f"{_owner(refuser)} ROOTCA lacks {_owner(other)} root (roots differ)"
            )
        return (
            f"{refuser} rejected {_owner(other)} certificate as unknown CA: "
            f"{refuser} lacks {_owner(other)} root (roots differ)"
        )
    if kind == "expired":
        if local:
            return f"peer certificate has expired ({_owner(other)} certificate), rejected by {refuser}"
        if other == "this proxy":
            return "this proxy's certificate has expired; the peer rejected it (alert received)"
        return f"this proxy's certificate has expired ({_owner(other)} certificate), rejected by {refuser}"
    if kind == "san-mismatch":
        if local:
            sans = _SANS.search(fragment)
            got = f"; it presents {sans.group(1)}" if sans else ""
            return (
                f"{_owner(other)} identity is not one {refuser} expects (SAN mismatch{got}): "
                "check DestinationRule subjectAltNames and the service account"
            )
        return (
            f"{refuser} rejected {_owner(other)} certificate (certificate unknown: usually the identity "
            "or trust domain, i.e. a SAN mismatch)"
        )
    if kind == "no-client-cert":
        return (
            "the server requires a client certificate (STRICT mTLS) and the client sent none "
            "(TLS SIMPLE or a non-Istio TLS client)"
        )
    if kind == "tls-to-plaintext":
        return "TLS sent to a plaintext port (WRONG_VERSION_NUMBER): the server has no sidecar or the port is not TLS"
    if kind == "plaintext-to-strict":
        return "a non-TLS caller reached a TLS-only port (WRONG_VERSION_NUMBER): plaintext to STRICT"
    if kind == "no-secret":
        who = f"this proxy (as {side})" if side in ("client", "server") else "this proxy"
        return (
            f"{who} has no certificate or roots yet (Secret is not supplied by SDS): istio-agent never "
            "delivered them; look for its CSR errors"
        )
    # verify-failed: some other verification error; name it
    reason = _DEPTH_REASON.search(norm)
    detail = reason.group(1).strip() if reason else "certificate verification failed"
    return f"{refuser} could not verify {_owner(other)} certificate: {detail}"


_NO_CHAIN_SUMMARY = "no filter chain matched the connection (NR filter_chain_not_found): plaintext to a STRICT port"
_NO_CHAIN_PLAINTEXT = (
    "plaintext connection refused by a STRICT port: no filter chain matched (NR filter_chain_not_found) "
    "and the TLS inspector saw a plaintext HTTP request"
)


def _no_chain_hit(norm_line: str) -> _Hit:
    # HTTP_REQUEST alone only says the TLS inspector saw plaintext (PERMISSIVE accepts that); with
    # NR filter_chain_not_found it confirms a plaintext caller refused by a STRICT port.
    summary = _NO_CHAIN_PLAINTEXT if "http request" in norm_line else _NO_CHAIN_SUMMARY
    return _Hit("plaintext-to-strict", "server", summary)


# ------------------------------------------------------------------------------------------------
# RBAC

_RBAC_MARK = "rbac_access_denied_matched_policy["
_RBAC_DEBUG = re.compile(r"enforced denied, matched policy (\S+)")


def _bracketed(text: str, open_at: int) -> str:
    """Content of the bracket opened at ``open_at``; policy names nest: ``ns[x]-policy[y]-rule[0]``."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return text[open_at + 1 :]


def _rbac_hit(text: str) -> _Hit | None:
    at = text.find(_RBAC_MARK)
    if at >= 0:
        policy = _bracketed(text, at + len(_RBAC_MARK) - 1) or "none"
    else:
        match = _RBAC_DEBUG.search(text)
        if not match:
            return None
        policy = match.group(1).rstrip(",.")
    if policy == "none":
        summary = "request denied by AuthorizationPolicy: ALLOW policies exist and none matched"
    else:
        summary = f"request denied by AuthorizationPolicy rule {policy}"
    return _Hit("rbac-denied", "server", summary, policy=policy)


# ------------------------------------------------------------------------------------------------
# access logs

# Istio's text format up to %UPSTREAM_TRANSPORT_FAILURE_REASON% (telemetry_logging.go). Searched, not
# anchored, so `kubectl logs --timestamps` prefixes do not matter.
_ISTIO_TEXT = re.compile(
    r'\] "(?P<request>[^"]*)" (?P<code>\d{1,3}) (?P<flags>\S+) (?P<details>\S+) (?P<termination>\S+) '
    r'"(?P<upstream_reason>[^"]*)"'
)


def _access_hits(flags: str, details: str, upstream: str, downstream: str, whole: str) -> list[_Hit]:
    """Hits of one access-log entry, split into what concerns the upstream and the downstream connection."""
    hits: list[_Hit] = []
    if "NR" in flags.split(",") and "filter_chain_not_found" in details:
        hits.append(_no_chain_hit(_norm(whole)))
    tls = _tls_hit(upstream, "client") or _tls_hit(downstream, "server")
    if tls is not None:
        hits.append(tls)
    rbac = _rbac_hit(details) or _rbac_hit(downstream)
    if rbac is not None:
        hits.append(rbac)
    return hits


# Istio 1.1-1.5: `%RESPONSE_CODE% %RESPONSE_FLAGS% "%DYNAMIC_METADATA(istio.mixer:status)%"
# "%UPSTREAM_TRANSPORT_FAILURE_REASON%"`: no details field, the upstream reason follows the mixer status.
_ISTIO_TEXT_OLD = re.compile(
    r'\] "(?P<request>[^"]*)" (?P<code>\d{1,3}) (?P<flags>\S+) "(?P<mixer>[^"]*)" "(?P<upstream_reason>[^"]*)"'
)


def _text_access_hits(line: str) -> list[_Hit] | None:
    match = _ISTIO_TEXT.search(line)
    if match is None:
        old = _ISTIO_TEXT_OLD.search(line)
        if old is None:
            return None
        return _access_hits(old.group("flags"), "", old.group("upstream_reason"), "", line)
    details = match.group("details")
    # Upstream: the reset details (`upstream_reset_before_response_started{...}`) and the upstream
    # transport failure reason. Anything after them (a custom %DOWNSTREAM_TRANSPORT_FAILURE_REASON%, the
    # connection termination details of a TCP RBAC denial) is about the downstream connection.
    upstream = details + " " + match.group("upstream_reason")
    downstream = match.group("termination") + " " + line[match.end() :]
    return _access_hits(match.group("flags"), details, upstream, downstream, line)


def _json_access_hits(entry: dict[str, Any]) -> list[_Hit]:
    details = _s(entry.get("response_code_details"))
    upstream = details + " " + _s(entry.get("upstream_transport_failure_reason"))
    downstream = " ".join(
        _s(entry.get(k)) for k in ("connection_termination_details", "downstream_transport_failure_reason")
    )
    whole = " ".join(_s(v) for v in entry.values())
    return _access_hits(_s(entry.get("response_flags")), details, upstream, downstream, whole)


# ------------------------------------------------------------------------------------------------
# Envoy debug lines: which connection, which direction

_CONN_ID = re.compile(r'"ConnectionId":"(\d+)"|\[C(\d+)\]')


# Lines only an upstream (client-side) connection writes, possibly after its TLS error: the HTTP
# codec client and the connection pool (`[C321] client disconnected, failure reason: TLS error: ...`).
_UPSTREAM_MARKS = ("client disconnected", "codec_client", "conn_pool", "disconnect. resetting", "connecting to ")
_EPOCH = "initializing epoch"


class _Connections:
    """Direction of each connection id, learnt from Envoy's `connection:debug` lines.

    Upstream connections log ``connecting to <addr>`` before their handshake; at the same log level a
    downstream connection never does. Older Envoys (and logs without `connecting to`) show it only in the
    pool's lines after the failure, so those are collected ahead. Ids restart with Envoy, so the map is
    cleared at start-up.
    """

    def __init__(self, lines: list[str]) -> None:
        self.upstream: set[str] = set()
        self.downstream: set[str] = set()
        self.reported: set[tuple[str, str]] = set()  # (connection id, kind): one failure, one count
        self.epoch = 0
        self.later_upstream: set[tuple[int, str]] = set()  # (epoch, id) marked upstream anywhere in it
        epoch = 0
        for line in lines:
            if _EPOCH in line:
                epoch += 1
            elif any(mark in line for mark in _UPSTREAM_MARKS):
                cid = _connection_id(line)
                if cid is not None:
                    self.later_upstream.add((epoch, cid))

    def observe(self, line: str, cid: str | None) -> None:
        if _EPOCH in line:  # Envoy (re)started: connection ids start over
            self.epoch += 1
            self.upstream.clear()
            self.downstream.clear()
            self.reported.clear()
        if cid is None:
            return
        if "connecting to " in line or "current connecting state: true" in line:
            self.upstream.add(cid)
            self.downstream.discard(cid)
        elif "current connecting state: false" in line and cid not in self.upstream:
            self.downstream.add(cid)

    def role(self, cid: str | None, seen_debug: bool) -> str | None:
        if cid is None:
            return None
        if cid in self.upstream or (self.epoch, cid) in self.later_upstream:
            return "client"
        if cid in self.downstream or seen_debug:
            # With connection:debug on, an upstream connection would have logged "connecting to" first.
            return "server"
        return None


# Text that only the client side of a connection writes: Envoy's upstream reset details (custom access
# log formats), and the body of the local 503 it returns (`upstream connect error or disconnect/reset
# before headers. reset reason: connection failure, transport failure reason: TLS error: ...`).
_CLIENT_SAYS = ("upstream_reset_before_response_started", "upstream connect error", "transport failure reason")


def _connection_id(line: str) -> str | None:
    match = _CONN_ID.search(line)
    if match is None:
        return None
    return match.group(1) or match.group(2)


def _validator_echoed(lines: list[str], index: int) -> bool:
    """Is this untagged `verify cert failed:` line repeated by the ssl_socket line that follows?

    default_validator.cc logs the reason without a connection id, then ssl_socket.cc logs the same
    reason with one; counting both would double every failure and the first has no direction.
    """
    return any("TLS_error" in nxt and "verify cert failed" in nxt for nxt in lines[index + 1 : index + 4])


# ------------------------------------------------------------------------------------------------
# pilot-agent / Envoy control-plane lines (part of the istio-proxy container log)

_ENVOY_NACK = re.compile(r"config for (type\.googleapis\.com/\S+) rejected: (.*)")
_TYPE_SHORT = {
    "Cluster": "CDS",
    "Listener": "LDS",
    "ClusterLoadAssignment": "EDS",
    "RouteConfiguration": "RDS",
    "TypedExtensionConfig": "ECDS",
    "Secret": "SDS",
}


def _xds_short(type_url: str) -> str:
    last = type_url.rsplit(".", 1)[-1]
    return _TYPE_SHORT.get(last, last)


# istio-agent's certificate requests: `failed to sign CSR`, `resource:default failed to sign`, and
# `failed to generate secret for ROOTCA: failed to generate workload certificate: create certificate:
# rpc error: ...` (the SDS stream closing because the CSR failed).
_CSR_MARKS = (
    "failed to sign",
    "csr signing error",
    "failed to generate workload certificate",
    "create certificate: rpc error",
)


def _agent_hits(text: str) -> list[_Hit]:
    match = _ENVOY_NACK.search(text)
    if match:
        kind = _xds_short(match.group(1))
        return [
            _Hit("nack", "istiod", f"this proxy rejected {kind} config from istiod (NACK): {_shorten(match.group(2))}")
        ]
    # "config not received from XDS server (is Istiod running?): cds updates: 0 successful, 0 rejected" also
    # says "rejected": only "but was rejected" is a NACK.
    if "Envoy proxy is NOT ready" in text and "but was rejected" in text:
        reason = text.split("NOT ready:", 1)[-1]
        return [_Hit("nack", "istiod", f"Envoy rejected config from istiod (NACK): {_shorten(reason)}")]
    lowered = text.lower()
    if any(mark in lowered for mark in _CSR_MARKS):
        if "unknown service istio.v1.auth.istiocertificateservice" in lowered or "code = unimplemented" in lowered:
            return [
                _Hit(
                    "csr-failure",
                    "istiod",
                    "the CA address (CA_ADDR) does not serve Istio's certificate service (unknown service "
                    "istio.v1.auth.IstioCertificateService): istio-agent gets no certificate and no roots",
                )
            ]
        if "impersonation" in lowered:
            return [
                _Hit(
                    "authn-failure",
                    "istiod",
                    "the CA refused the identity this CSR asked for (request impersonation authentication "
                    "failure): the caller is not a trusted node account (CA_TRUSTED_NODE_ACCOUNTS)",
                )
            ]
        if "unauthenticated" in lowered or "authenticate failure" in lowered:
            return [
                _Hit(
                    "authn-failure",
                    "istiod",
                    "the CA (istiod) refused to authenticate this proxy's CSR (Unauthenticated): "
                    "token or client certificate not accepted",
                )
            ]
        at = min((lowered.find(mark) for mark in _CSR_MARKS if mark in lowered), default=0)
        return [_Hit("csr-failure", "istiod", f"workload certificate signing failed: {_shorten(text[at:])}")]
    if "PermissionDenied" in text and "authorization failed" in text:
        return [
            _Hit(
                "xds-unauthorized",
                "istiod",
                "istiod refused this proxy's xDS connection (PermissionDenied: authorization failed): "
                "identity does not match the pod's namespace/service account",
            )
        ]
    return []


# ------------------------------------------------------------------------------------------------
# proxy log


def classify_proxy_log(text: str) -> list[LogFinding]:
    """Findings in an istio-proxy container log (access logs in Istio text or JSON form, Envoy debug
    lines, pilot-agent lines), deduplicated by (kind, side, policy), counted, last line kept."""
    out = _Collector()
    lines = text.splitlines()
    conns = _Connections(lines)
    seen_debug = False  # has this log shown connection-level debug lines (so direction is knowable)?
    for index, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        entry = _json_object(line) if "{" in line else None
        if entry is not None:
            message = entry.get("msg", entry.get("message"))
            if message is None:  # a JSON access-log entry
                for hit in _json_access_hits(entry):
                    out.add(hit, line)
                continue
            line_text = _s(message)  # pilot-agent with --log_as_json
        else:
            line_text = line

        access = _text_access_hits(line_text)
        if access is not None:
            for hit in access:
                out.add(hit, line)
            continue

        cid = _connection_id(line_text)
        conns.observe(line_text, cid)
        if cid is not None and ("connecting to " in line_text or "connecting state" in line_text):
            seen_debug = True
            continue
        for hit in _debug_hits(line_text, lines, index, cid, conns, seen_debug):
            out.add(hit, line)
    return out.result()


def _debug_hits(
    text: str, lines: list[str], index: int, cid: str | None, conns: _Connections, seen_debug: bool
) -> Iterator[_Hit]:
    if "NR filter_chain_not_found" in text or "no matching filter chain found" in text:
        yield _no_chain_hit(_norm(text))
        return
    rbac = _rbac_hit(text) if ("enforced denied" in text or _RBAC_MARK in text) else None
    if rbac is not None:
        yield rbac
        return
    # `TLS_error:` since Envoy 1.14; `TLS error:` (with a space) before, e.g. Istio 1.5-1.7 debug lines
    if "TLS_error" in text or "TLS error" in text or "verify cert failed" in text or "[SSL:" in text:
        if cid is None and "verify cert failed" in text and _validator_echoed(lines, index):
            return
        role = conns.role(cid, seen_debug)
        if role is None and any(mark in text for mark in _CLIENT_SAYS):
            role = "client"  # a reset towards an upstream, or the 503 body the caller got back
        hit = _tls_hit(text, role)
        if hit is None:
            return
        if cid is not None:
            # One handshake can log two TLS_error lines (the alert, then "Broken pipe"): count it once.
            if (cid, hit.kind) in conns.reported:
                return
            conns.reported.add((cid, hit.kind))
        yield hit
        return
    yield from _agent_hits(text)


# ------------------------------------------------------------------------------------------------
# istiod log

# `ADS:LDS: ACK ERROR <conn-id> <grpc-code>:<Envoy's message>`; conn-id = <proxy id>-<counter>.
_ACK_ERROR = re.compile(r"(?:ADS:)?(?P<type>[A-Z]+)?:? ?ACK ERROR (?P<conn>\S+) (?P<code>[A-Za-z]+):(?P<msg>.*)")
_AUTHN = re.compile(r"Failed to authenticate client from (?P<addr>\S+?):? (?P<reason>.*)")
_UNAUTHORIZED_XDS = re.compile(r"Unauthorized XDS: (?P<peer>\S+) with identity (?P<ids>.*?): (?P<why>.*)")
_FORBIDDEN = re.compile(
    r'(?P<what>\S+) is forbidden: User "(?P<user>[^"]+)" cannot (?P<verb>\S+) resource "(?P<res>[^"]+)"'
    r'(?: in API group "(?P<group>[^"]*)")?(?P<scope> in the namespace "[^"]*"| at the cluster scope)?'
)
_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}|\])(:\d+)")
_ISTIOD_META = {"time", "level", "scope", "msg", "caller", "stack"}


def _proxy_of(conn: str) -> str:
    """`sidecar~10.0.0.5~pod.ns~ns.svc.cluster.local-42` or `pod.ns-42` -> `pod.ns`."""
    base = re.sub(r"-\d+$", "", conn)
    parts = base.split("~")
    return parts[2] if len(parts) >= 3 else base


def _no_ports(text: str) -> str:
    """Drop client ports so that repeated failures of one pod deduplicate."""
    return _PORT.sub(r"\1", text)


def _forbidden_hit(text: str) -> _Hit | None:
    match = _FORBIDDEN.search(text)
    if match is None:
        return None
    group = match.group("group")
    where = f" in API group {group!r}" if group else ""
    scope = (match.group("scope") or "").strip()
    summary = (
        f'Kubernetes RBAC: user "{match.group("user")}" cannot {match.group("verb")} '
        f"{match.group('res')}{where}{' ' + scope if scope else ''}"
    )
    return _Hit("rbac-permission", "istiod", summary, subject=summary)


def _istiod_hits(text: str) -> Iterable[_Hit]:
    ack = _ACK_ERROR.search(text) if "ACK ERROR" in text else None
    if ack is not None:
        proxy = _proxy_of(ack.group("conn"))
        xds = ack.group("type") or "xDS"
        summary = f"proxy {proxy} rejected {xds} config (NACK, {ack.group('code')}): {_shorten(ack.group('msg'))}"
        return [_Hit("nack", "istiod", summary, subject=f"{proxy} {xds}")]
    if "impersonation not allowed" in text or "impersonation failed for identity" in text:
        summary = f"istiod refused a CSR that asked for another identity: {_shorten(_no_ports(text))}"
        return [_Hit("authn-failure", "istiod", summary, subject="impersonation")]
    if "CSR signing error" in text:
        reason = text.split("CSR signing error", 1)[1].lstrip(": ")
        summary = f"istiod failed to sign a workload certificate (CSR signing error): {_shorten(_no_ports(reason))}"
        return [_Hit("csr-failure", "istiod", summary, subject=summary)]
    hits: list[_Hit] = []
    authn = _AUTHN.search(text)
    if authn is not None:
        addr = _no_ports(authn.group("addr"))
        # The reason lists every authenticator's complaint; the last one (usually the JWT's) matters most.
        reason = _shorten(_no_ports(authn.group("reason")), 320)
        summary = f"istiod could not authenticate a client from {addr}: {reason}"
        hits.append(_Hit("authn-failure", "istiod", summary, subject=summary))
    xds = _UNAUTHORIZED_XDS.search(text)
    if xds is not None:
        peer = _no_ports(xds.group("peer"))
        summary = (
            f"istiod refused xDS to {peer} (identity {_shorten(xds.group('ids'), 80)}): {_shorten(xds.group('why'))}"
        )
        hits.append(_Hit("xds-unauthorized", "istiod", summary, subject=summary))
    forbidden = _forbidden_hit(text)
    if forbidden is not None:
        hits.append(forbidden)
    return hits


def classify_istiod_log(text: str) -> list[LogFinding]:
    """Findings in an istiod log (text `time<TAB>level<TAB>scope<TAB>msg` or --log_as_json lines).

    Deduplicated per cause (for NACKs: per proxy and xDS type), counted, last line kept.
    """
    out = _Collector()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        entry = _json_object(line) if line.endswith("}") else None
        if entry is not None and "msg" in entry:
            labels = " ".join(f"{k}={_s(v)}" for k, v in entry.items() if k not in _ISTIOD_META)
            line_text = _s(entry["msg"]) + ("\t" + labels if labels else "")
        else:
            line_text = line
        for hit in _istiod_hits(line_text):
            out.add(hit, line)
    return out.result()
