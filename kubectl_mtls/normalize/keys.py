"""Read protobuf-JSON fields in either casing.

`istioctl proxy-config all` prints Envoy's admin JSON (snake_case); `proxy-config cluster|listener|secret`
re-marshal it as camelCase. Only message field names change: map and Struct keys (`tlsMode`,
`envoy.transport_socket_match`) never do, so those are read with plain `dict.get`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

JSON = dict[str, Any]


@lru_cache(maxsize=512)
def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def field(obj: Any, name: str, default: Any = None) -> Any:
    """obj[name] by its snake_case proto name, or its camelCase JSON name."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    return obj.get(camel(name), default)


def obj(parent: Any, *path: str) -> JSON:
    """Walk message fields; a missing or non-object step gives {} so callers can chain."""
    cur: Any = parent
    for name in path:
        cur = field(cur, name)
        if not isinstance(cur, dict):
            return {}
    return cur if isinstance(cur, dict) else {}


def items(parent: Any, name: str) -> list[Any]:
    value = field(parent, name)
    return value if isinstance(value, list) else []


def text(parent: Any, name: str, default: str = "") -> str:
    value = field(parent, name)
    return value if isinstance(value, str) else default


def type_name(message: Any) -> str:
    """The short type of an Any (`...tls.v3.UpstreamTlsContext` -> `UpstreamTlsContext`)."""
    url = message.get("@type", "") if isinstance(message, dict) else ""
    return url.rsplit(".", 1)[-1] if isinstance(url, str) else ""
