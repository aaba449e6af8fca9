"""Read protobuf-JSON fields in either casing.

`istioctl proxy-config all` prints Envoy's admin JSON (snake_case); `proxy-config cluster|listener|secret`
re-marshal it as camelCase. Only message field names change: map and Struct keys (`tlsMode`,
`envoy.transport_socket_match`) never do, so those are read with plain `dict.get`.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

# snake_case name -> camelCase name. The names come from this code (a few hundred at most); the bound
# only keeps a caller passing names read from input from growing it. A plain dict: these lookups run
# for every field of every proxy, and an lru_cache call cost as much as the rest of `field`.
_CAMEL: dict[str, str] = {}
_CAMEL_KEPT = 1024


def camel(name: str) -> str:
    found = _CAMEL.get(name)
    if found is None:
        head, *rest = name.split("_")
        found = head + "".join(part[:1].upper() + part[1:] for part in rest)
        if len(_CAMEL) < _CAMEL_KEPT:
            _CAMEL[name] = found
    return found


def field(obj: Any, name: str, default: Any = None) -> Any:
    """obj[name] by its snake_case proto name, or its camelCase JSON name."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    return obj.get(_CAMEL.get(name) or camel(name), default)


def obj(parent: Any, *path: str) -> JSON:
    """Walk message fields; a missing or non-object step gives {} so callers can chain."""
    cur: Any = parent
    for name in path:  # `field`, inlined: this runs for nearly every object of a dump
        if not isinstance(cur, dict):
            return {}
        cur = cur[name] if name in cur else cur.get(_CAMEL.get(name) or camel(name))
    return cur if isinstance(cur, dict) else {}


def items(parent: Any, name: str) -> list[Any]:
    if not isinstance(parent, dict):
        return []
    value = parent[name] if name in parent else parent.get(_CAMEL.get(name) or camel(name))
    return value if isinstance(value, list) else []


def text(parent: Any, name: str, default: str = "") -> str:
    if not isinstance(parent, dict):
        return default
    value = parent[name] if name in parent else parent.get(_CAMEL.get(name) or camel(name))
    return value if isinstance(value, str) else default


def type_name(message: Any) -> str:
    """The short type of an Any (`...tls.v3.UpstreamTlsContext` -> `UpstreamTlsContext`)."""
    url = message.get("@type", "") if isinstance(message, dict) else ""
    return url.rsplit(".", 1)[-1] if isinstance(url, str) else ""
