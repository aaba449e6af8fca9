"""Authorization filters of one inbound filter chain, as the sidecar enforces them.

Istio puts its RBAC filters on every inbound chain of a workload with AuthorizationPolicies:
`envoy.filters.network.rbac` on TCP chains, `envoy.filters.http.rbac` inside the HTTP connection
manager, plus an `ext_authz` filter for a CUSTOM provider. Kept in chain order with their typed_config
as dumped (either field casing), for istio.rbac_filter to evaluate."""

from __future__ import annotations

from typing import Any

from .keys import JSON, field, items, obj, text

RBAC = ("envoy.filters.network.rbac", "envoy.filters.http.rbac")
EXT_AUTHZ = ("envoy.filters.network.ext_authz", "envoy.filters.http.ext_authz")
HCM = "envoy.filters.network.http_connection_manager"


def _kind(name: str, config: JSON) -> str | None:
    if name in RBAC or name.startswith("istio.authorization"):
        return "rbac"
    if name in EXT_AUTHZ:
        return "ext_authz"
    type_url = config.get("@type", "") if isinstance(config, dict) else ""
    if isinstance(type_url, str) and type_url.endswith(".rbac.v3.RBAC"):
        return "rbac"
    return None


def chain_authz(chain: JSON) -> dict[str, Any]:
    """{"chain", "protocol": "http"|"tcp", "filters": [{"name", "kind": "rbac"|"ext_authz", "config"}]}."""
    filters: list[dict[str, Any]] = []
    protocol = "tcp"
    for network_filter in items(chain, "filters"):
        name = text(network_filter, "name")
        config = obj(network_filter, "typed_config")
        if name == HCM or field(config, "http_filters") is not None:
            protocol = "http"
            for http_filter in items(config, "http_filters"):
                inner = obj(http_filter, "typed_config")
                kind = _kind(text(http_filter, "name"), inner)
                if kind:
                    filters.append({"name": text(http_filter, "name"), "kind": kind, "config": inner})
            continue
        kind = _kind(name, config)
        if kind:
            filters.append({"name": name, "kind": kind, "config": config})
    return {"chain": text(chain, "name"), "protocol": protocol, "filters": filters}
