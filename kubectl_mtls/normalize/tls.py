"""Read Envoy TLS contexts (Upstream/DownstreamTlsContext) the way Istio builds them."""

from __future__ import annotations

from typing import Any

from .keys import JSON, field, items, obj, text, type_name

TLS_SOCKET = "envoy.transport_sockets.tls"
INTERNAL_UPSTREAM = "envoy.transport_sockets.internal_upstream"


def tls_context(socket: Any) -> JSON | None:
    """The TLS context inside a transport socket, unwrapping `internal_upstream`; None = plaintext."""
    if not isinstance(socket, dict) or not socket:
        return None
    config = obj(socket, "typed_config")
    kind = type_name(config)
    if kind in ("UpstreamTlsContext", "DownstreamTlsContext") or text(socket, "name") == TLS_SOCKET:
        return config
    if kind == "InternalUpstreamTransport" or text(socket, "name") == INTERNAL_UPSTREAM:
        return tls_context(obj(config, "transport_socket"))
    return None


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
    name = text(sds, "name") or None
    if name is None and obj(default, "trusted_ca"):
        name = "inline"
    return name, sans


def certificate_names(common: JSON) -> list[str]:
    names = [text(c, "name") for c in items(common, "tls_certificate_sds_secret_configs")]
    if items(common, "tls_certificates"):
        names.append("inline")
    return [n for n in names if n]


def alpn(common: JSON) -> list[str]:
    return [p for p in items(common, "alpn_protocols") if isinstance(p, str)]


def require_client_certificate(ctx: JSON) -> bool:
    value = field(ctx, "require_client_certificate")
    if isinstance(value, dict):  # BoolValue written out as an object
        value = value.get("value")
    return value is True
