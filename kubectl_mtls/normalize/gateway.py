"""Gateway servers: what an ingress or egress gateway (proxy type `router`) serves on each port.

A gateway has no `virtualInbound`. istiod turns each Gateway server into a listener on the Service's
target port (`0.0.0.0_8443`, `traffic_direction: OUTBOUND`) with one filter chain per server:

* no transport socket and no SNI match: plaintext (HTTP or TCP servers);
* a DownstreamTlsContext: TLS terminated by the gateway; `credentialName: X` becomes the SDS secret
  `kubernetes://X` (the CA for client certificates `kubernetes://X-cacert`); MUTUAL sets
  `require_client_certificate`, OPTIONAL_MUTUAL validates without requiring; ISTIO_MUTUAL uses the
  gateway's own Istio certificate (`default`, `ROOTCA`) and requires a client certificate;
* an SNI match (`server_names`) without a transport socket: PASSTHROUGH (the backend terminates TLS),
  or AUTO_PASSTHROUGH (SNI-routed to `outbound_.PORT_._.HOST` clusters, port 15443).
"""

from __future__ import annotations

from typing import Any

from .keys import JSON, field, items, obj, text
from .tls import alpn, certificate_names, chain_tls_context, require_client_certificate, validation

ISTIO_CERT = "default"
HTTP_FILTER = "envoy.filters.network.http_connection_manager"


def _port(listener: JSON) -> int | None:
    port = field(obj(listener, "address", "socket_address"), "port_value")
    return port if isinstance(port, int) else None


def _is_gateway_listener(listener: JSON) -> bool:
    name = text(listener, "name")
    if name.startswith("virtual") or not obj(listener, "address", "socket_address"):
        return False
    return text(listener, "traffic_direction") != "INBOUND"


def _mode(ctx: JSON | None, server_names: list[str], filters: list[str], chain: JSON) -> str:
    if ctx is not None:
        common = obj(ctx, "common_tls_context")
        certs = certificate_names(common)
        validation_name, _ = validation(common)
        if require_client_certificate(ctx):
            return "ISTIO_MUTUAL" if ISTIO_CERT in certs else "MUTUAL"
        return "OPTIONAL_MUTUAL" if validation_name else "SIMPLE"
    if server_names or text(obj(chain, "filter_chain_match"), "transport_protocol") == "tls":
        # SNI-routed without terminating: AUTO_PASSTHROUGH when the tcp_proxy routes by SNI
        sni_cluster = any(name == "envoy.filters.network.sni_cluster" for name in filters)
        return "AUTO_PASSTHROUGH" if sni_cluster else "PASSTHROUGH"
    return "PLAINTEXT"


def normalize_gateway(listeners: list[JSON]) -> list[dict[str, Any]]:
    """One entry per gateway server (filter chain), by port."""
    out: list[dict[str, Any]] = []
    for listener in listeners:
        if not _is_gateway_listener(listener):
            continue
        port = _port(listener)
        for chain in items(listener, "filter_chains"):
            match = obj(chain, "filter_chain_match")
            server_names = [s for s in items(match, "server_names") if isinstance(s, str)]
            filters = [text(f, "name") for f in items(chain, "filters")]
            ctx = chain_tls_context(chain)
            common = obj(ctx, "common_tls_context") if ctx is not None else {}
            certs = certificate_names(common) if ctx is not None else []
            validation_name, client_sans = validation(common) if ctx is not None else (None, [])
            mode = _mode(ctx, server_names, filters, chain)
            out.append(
                {
                    "port": port,
                    "listener": text(listener, "name"),
                    "filter_chain": text(chain, "name") or None,
                    "mode": mode,
                    "protocol": "http" if HTTP_FILTER in filters else "tcp",
                    "server_names": server_names,
                    "credential": certs[0] if certs else None,
                    "ca_credential": validation_name,
                    "client_certificate_required": bool(ctx is not None and require_client_certificate(ctx)),
                    "client_san_patterns": client_sans,
                    "alpn": alpn(common) if ctx is not None else [],
                }
            )
    out.sort(key=lambda s: (s["port"] or 0, s["server_names"]))
    return out


def credentials(servers: list[dict[str, Any]]) -> list[str]:
    """Every SDS secret the gateway's servers read (certificates and client-certificate CAs)."""
    names: list[str] = []
    for server in servers:
        for name in (server["credential"], server["ca_credential"]):
            if name and name != "inline" and name not in names:
                names.append(name)
    return names
