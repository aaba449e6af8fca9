"""Inbound: what the sidecar really enforces per port, read from its filter chains.

Istio writes one `virtualInbound` chain set per target port (`filter_chain_match.destination_port`):
STRICT = TLS chains requiring a client certificate and no plaintext chain; PERMISSIVE = TLS plus
`raw_buffer` chains; DISABLE = plaintext only. Chains without a port are the catch-all (port null).
"""

from __future__ import annotations

import re
from typing import Any

from .keys import JSON, field, items, obj, text
from .rbac import chain_authz
from .tls import alpn, require_client_certificate, transport_tls, validation

VIRTUAL_INBOUND = "virtualInbound"
BLACKHOLE_PORT = 15006  # virtualInbound's own port; its chain only drops loops
CHAIN_PORT = re.compile(r"^(?:0\.0\.0\.0_|\[::\]_|inbound\|)(\d+)")
RBAC_FILTERS = ("envoy.filters.network.rbac", "envoy.filters.http.rbac")


def _is_inbound(listener: JSON) -> bool:
    if text(listener, "name") == VIRTUAL_INBOUND:
        return True
    # Internal listeners (waypoints' `main_internal`) carry already-terminated traffic: not a peer's entry.
    if not obj(listener, "address", "socket_address"):
        return False
    return text(listener, "traffic_direction") == "INBOUND"


def _listener_port(listener: JSON) -> int | None:
    port = field(obj(listener, "address", "socket_address"), "port_value")
    return port if isinstance(port, int) else None


def _chain_port(chain: JSON, listener: JSON) -> int | None:
    port = field(obj(chain, "filter_chain_match"), "destination_port")
    if isinstance(port, dict):  # UInt32Value written out as an object
        port = port.get("value")
    if isinstance(port, int):
        return port
    match = CHAIN_PORT.match(text(chain, "name"))
    if match:
        return int(match.group(1))
    if text(listener, "name") != VIRTUAL_INBOUND:  # a per-port inbound listener (interception NONE)
        return _listener_port(listener)
    return None


def _has_rbac(chain: JSON) -> bool:
    for network_filter in items(chain, "filters"):
        if text(network_filter, "name") in RBAC_FILTERS:
            return True
        for http_filter in items(obj(network_filter, "typed_config"), "http_filters"):
            if text(http_filter, "name") in RBAC_FILTERS:
                return True
    return False


def _mode(tls_mutual: bool, tls_one_way: bool, plaintext: bool) -> str:
    if plaintext:
        return "PERMISSIVE" if (tls_mutual or tls_one_way) else "DISABLE"
    if tls_mutual:
        return "STRICT"
    # TLS without a required client certificate: encrypted, but not mutual (not what Istio writes).
    return "SIMPLE" if tls_one_way else "UNKNOWN"


def normalize_inbound(listeners: list[JSON], notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Per port, the mode the sidecar enforces; a chain whose transport socket is not understood makes
    its port UNKNOWN (with a note), never plaintext."""
    ports: dict[int | None, dict[str, Any]] = {}
    for listener in listeners:
        if not _is_inbound(listener):
            continue
        for chain in items(listener, "filter_chains"):
            name = text(chain, "name")
            port = _chain_port(chain, listener)
            if port == BLACKHOLE_PORT or name.endswith("-blackhole"):
                continue
            entry = ports.setdefault(
                port,
                {
                    "port": port,
                    "filter_chains": [],
                    "mutual_tls": False,
                    "one_way_tls": False,
                    "plaintext": False,
                    "client_san_patterns": [],
                    "alpn": [],
                    "rbac": False,
                    "authz_chains": [],
                },
            )
            if name not in entry["filter_chains"]:
                entry["filter_chains"].append(name)
            transport = text(obj(chain, "filter_chain_match"), "transport_protocol")
            ctx, strange = transport_tls(chain)
            if strange:
                entry["unknown"] = True
                if notes is not None:
                    notes.append(
                        f"listener {text(listener, 'name')} chain {name or '(unnamed)'}: transport socket "
                        f"{strange} not understood: inbound mode unknown"
                    )
            elif ctx is None or transport == "raw_buffer":
                entry["plaintext"] = True
            elif require_client_certificate(ctx):
                entry["mutual_tls"] = True
                common = obj(ctx, "common_tls_context")
                for pattern in validation(common)[1]:
                    if pattern not in entry["client_san_patterns"]:
                        entry["client_san_patterns"].append(pattern)
                for proto in alpn(common):
                    if proto not in entry["alpn"]:
                        entry["alpn"].append(proto)
            else:
                entry["one_way_tls"] = True
            entry["rbac"] = entry["rbac"] or _has_rbac(chain)
            if transport != "raw_buffer":  # what an mTLS caller meets; plaintext chains carry the same filters
                entry["authz_chains"].append(chain_authz(chain))
    out = []
    for entry in ports.values():
        strange = entry.pop("unknown", False)
        mode = "UNKNOWN" if strange else _mode(entry["mutual_tls"], entry["one_way_tls"], entry["plaintext"])
        out.append({"port": entry["port"], "mode": mode, **{k: v for k, v in entry.items() if k != "port"}})
    out.sort(key=lambda e: (e["port"] is None, e["port"] or 0))
    return out
