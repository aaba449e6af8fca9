"""Sidecar and sync: config that Envoy rejected (`error_state` in its config dump)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import Finding, check, finding
from .context import Context, key_of

AREA = "sidecar and sync"
VIRTUAL_INBOUND = "virtualInbound"
VIRTUAL_OUTBOUND = "virtualOutbound"


def consequence(item: dict[str, Any], gateway: bool) -> str:
    """What a rejected resource means for traffic, in words."""
    name, kind = item["name"], item["type"]
    if item["active"]:
        return (
            f"Envoy rejected the latest version of {kind} {name}; an earlier version still serves, so the config "
            "istiod sent since then has not taken effect"
        )
    if kind == "listener" and name == VIRTUAL_INBOUND:
        return (
            f"Envoy rejected listener {name} and has no earlier version of it: the pod refuses every inbound "
            "connection"
        )
    if kind == "listener" and name == VIRTUAL_OUTBOUND:
        return f"Envoy rejected listener {name}: outbound calls the sidecar captures have no listener to go through"
    if kind == "listener" and gateway:
        return f"Envoy rejected listener {name}: the gateway does not serve that port, so its clients are refused"
    if kind == "listener":
        return f"Envoy rejected listener {name}: connections it would take are refused"
    parts = name.split("|")
    if len(parts) == 4 and parts[0] == "outbound":
        return f"Envoy rejected cluster {name}: calls to {parts[3]}:{parts[1]} from this pod fail"
    return f"Envoy rejected cluster {name}: traffic routed to it fails"


@check(
    "envoy-config-rejected",
    area=AREA,
    severity="error",
    title="every sidecar and gateway accepted the listeners and clusters istiod sent",
    reads=("pods", "proxies"),
    explain="""
What it looks at: each proxy's config dump for listeners and clusters that carry an `error_state`
(Envoy's UpdateFailureState: `failed_configuration`, `details`, `last_update_attempt`), that is,
resources Envoy refused (a NACK), with Envoy's own error text. Envoy lists such a failure even when no
earlier version of the resource is active.

Why it breaks mTLS: a rejected `virtualInbound` with no earlier version means the pod has no inbound
listener at all: it refuses every inbound connection, mTLS or not. A rejected outbound cluster means
calls to that host fail from this pod. When an earlier version is still active, the new policy (a
PeerAuthentication, a DestinationRule) never reaches the proxy, and `istioctl proxy-status` shows
ERROR for that type. The usual cause is an EnvoyFilter that patches in invalid config (a Lua or Wasm
filter, a wrong field), or a proxy older than istiod.

How to fix: read the error text; find the EnvoyFilter or config that produced it
(`kubectl get envoyfilter -A`, and istiod's `ACK ERROR` log line for the pod), fix or delete it; istiod
pushes again and the proxy accepts the corrected config without a restart.
""",
)
def envoy_config_rejected(ctx: Context) -> Iterator[Finding]:
    for pod in ctx.targets:
        proxy = ctx.proxy(pod)
        if proxy is None:
            continue
        rejected = proxy.model.get("rejected") or []
        if not rejected:
            continue
        ns, name = key_of(pod)
        gateway = (proxy.model["proxy"] or {}).get("type") == "router"
        for item in rejected:
            yield finding(
                "envoy-config-rejected",
                "error",
                "Pod",
                ns,
                name,
                f"{consequence(item, gateway)}. Envoy: {item['error']}",
                f"kubectl get envoyfilter -A; kubectl logs -n {ctx.options.istio_namespace} -l app=istiod | "
                f"grep 'ACK ERROR.*{name}'",
                pods=[f"{ns}/{name}"],
                resource_type=item["type"],
                resource=item["name"],
                error=item["error"],
                last_update_attempt=item["last_update_attempt"],
                earlier_version_active=item["active"],
            )
