"""Read Envoy TLS contexts (Upstream/DownstreamTlsContext) the way Istio builds them."""

from __future__ import annotations

from typing import Any

from .keys import JSON, field, items, obj, text, type_name

TLS_SOCKET = "envoy.transport_sockets.tls"
INTERNAL_UPSTREAM = "envoy.transport_sockets.internal_upstream"


RAW_BUFFER = "envoy.transport_sockets.raw_buffer"


def tls_context(socket: Any) -> JSON | None:
    """The TLS context inside a transport socket, unwrapping sockets that wrap another one
    (`internal_upstream`, `tap`, `tcp_stats`); None = plaintext (or not understood: see `unknown_socket`)."""
    if not isinstance(socket, dict) or not socket:
        return None
    config = obj(socket, "typed_config")
    kind = type_name(config)
    if kind in ("UpstreamTlsContext", "DownstreamTlsContext") or text(socket, "name") == TLS_SOCKET:
        return config
    inner = obj(config, "transport_socket")
    if inner or kind == "InternalUpstreamTransport" or text(socket, "name") == INTERNAL_UPSTREAM:
        return tls_context(inner)
    return None


def unknown_socket(socket: Any) -> str | None:
    """The name of a transport socket that is neither TLS nor plaintext (nor a wrapper of one):
    its mode cannot be told, so it must never be read as plaintext."""
    if not isinstance(socket, dict) or not socket:
        return None
    config = obj(socket, "typed_config")
    kind = type_name(config)
    name = text(socket, "name")
    if kind in ("UpstreamTlsContext", "DownstreamTlsContext", "RawBuffer") or name in (TLS_SOCKET, RAW_BUFFER):
        return None
    inner = obj(config, "transport_socket")
    if inner:
        return unknown_socket(inner)
    if kind == "InternalUpstreamTransport" or name == INTERNAL_UPSTREAM:
        return None  # no inner socket: plaintext to the internal listener
    return name or kind or "(unnamed)"


def socket_tls(socket: Any) -> tuple[JSON | None, str | None]:
    """(`tls_context(socket)`, `unknown_socket(socket)`) in one walk: every cluster and filter chain
    asks both of the same socket."""
    if not isinstance(socket, dict) or not socket:
        return None, None
    config = obj(socket, "typed_config")
    kind = type_name(config)
    name = text(socket, "name")
    if kind in ("UpstreamTlsContext", "DownstreamTlsContext") or name == TLS_SOCKET:
        return config, None
    inner = obj(config, "transport_socket")
    if kind == "RawBuffer" or name == RAW_BUFFER:  # understood: plaintext (unless it wraps TLS)
        return tls_context(inner), None
    if inner:
        return socket_tls(inner)
    if kind == "InternalUpstreamTransport" or name == INTERNAL_UPSTREAM:
        return None, None  # no inner socket: plaintext to the internal listener
    return None, name or kind or "(unnamed)"


def transport_tls(holder: JSON) -> tuple[JSON | None, str | None]:
    """A cluster's or filter chain's (TLS context, transport socket not understood): what
    `cluster_tls_context` / `chain_tls_context` and `unknown_socket` of its socket answer."""
    socket = obj(holder, "transport_socket")
    if socket:
        return socket_tls(socket)
    return obj(holder, "tls_context") or None, None


def cluster_tls_context(cluster: JSON) -> JSON | None:
    """A cluster's UpstreamTlsContext: its transport socket, or Envoy v2's deprecated `tls_context`
    field (Istio <= 1.5 dumps), which is the same message without the socket around it."""
    socket = obj(cluster, "transport_socket")
    if socket:
        return tls_context(socket)
    legacy = obj(cluster, "tls_context")
    return legacy or None


def chain_tls_context(chain: JSON) -> JSON | None:
    """A filter chain's DownstreamTlsContext, from its transport socket or the deprecated `tls_context`."""
    socket = obj(chain, "transport_socket")
    if socket:
        return tls_context(socket)
    legacy = obj(chain, "tls_context")
    return legacy or None


def _san_matcher(matcher: Any) -> str | None:
    """One StringMatcher as a readable pattern: exact as is, prefix `x*`, suffix `*x`."""
    if not isinstance(matcher, dict):
        return None
    for key, fmt in (("exact", "{}"), ("prefix", "{}*"), ("suffix", "*{}"), ("contains", "*{}*")):
        value = matcher.get(key)
        if isinstance(value, str):
            return fmt.format(value)
    regex = obj(matcher, "safe_regex")
    if regex:
        return "regex:" + text(regex, "regex")
    return None


def validation(common: JSON) -> tuple[str | None, list[str]]:
    """(validation SDS secret name, SAN patterns the peer certificate must match)."""
    combined = obj(common, "combined_validation_context")
    default = obj(combined, "default_validation_context") or obj(common, "validation_context")
    sds = obj(combined, "validation_context_sds_secret_config") or obj(common, "validation_context_sds_secret_config")
    sans: list[str] = []
    for matcher in items(default, "match_subject_alt_names"):
        pattern = _san_matcher(matcher)
        if pattern:
            sans.append(pattern)
    for typed in items(default, "match_typed_subject_alt_names"):  # waypoints use the typed form
        pattern = _san_matcher(obj(typed, "matcher"))
        if pattern:
            sans.append(pattern)
    # Envoy < 1.12 (Istio <= 1.4): exact SANs as plain strings
    sans.extend(v for v in items(default, "verify_subject_alt_name") if isinstance(v, str) and v not in sans)
    name = text(sds, "name") or None
    if name is None and obj(default, "trusted_ca"):
        name = "inline"
    return name, sans


def certificate_names(common: JSON) -> list[str]:
    names = [text(c, "name") for c in items(common, "tls_certificate_sds_secret_configs")]
    for cert in items(common, "tls_certificates"):  # a file path (Istio < 1.6 mounted certs) or inline
        names.append(text(obj(cert, "certificate_chain"), "filename") or "inline")
    return [n for n in names if n]


def alpn(common: JSON) -> list[str]:
    return [p for p in items(common, "alpn_protocols") if isinstance(p, str)]


def require_client_certificate(ctx: JSON) -> bool:
    value = field(ctx, "require_client_certificate")
    if isinstance(value, dict):  # BoolValue written out as an object
        value = value.get("value")
    return value is True


def _file_paths(common: JSON) -> list[str]:
    return [
        text(obj(cert, "certificate_chain"), "filename")
        for cert in items(common, "tls_certificates")
        if text(obj(cert, "certificate_chain"), "filename")
    ]


def file_certificates(sections: Any) -> str:
    """Where the proxy's TLS contexts read their certificate from files (Istio < 1.6 mounted
    `/etc/certs/cert-chain.pem`), as one readable list; "" when none does."""
    paths: list[str] = []
    for cluster in sections.clusters:
        ctx = cluster_tls_context(cluster)
        if ctx:
            paths.extend(_file_paths(obj(ctx, "common_tls_context")))
    for listener in sections.listeners:
        for chain in items(listener, "filter_chains"):
            ctx = chain_tls_context(chain)
            if ctx:
                paths.extend(_file_paths(obj(ctx, "common_tls_context")))
    return ", ".join(sorted(set(paths)))
