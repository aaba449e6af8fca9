"""Kubernetes NetworkPolicy semantics (networking.k8s.io/v1), pure and table-tested: does a policy set let
one pod reach another on a TCP port? Used for HBONE, which ambient mode carries on TCP 15008 to the
destination pod's own IP, so NetworkPolicies see port 15008 rather than the application port.

Rules (Kubernetes API reference, "NetworkPolicy"):
- a policy selects the pods of its namespace matching `podSelector` (`{}`: all of them);
- `policyTypes` defaults to `[Ingress]`, plus `Egress` when the policy has `egress` rules;
- a pod is isolated for ingress (egress) once any policy selecting it has that type; then only what
  some rule of those policies allows gets through, else everything does;
- a rule with no `from`/`to` peers matches every peer, with no `ports` every port; a peer is a
  `podSelector` (the policy's namespace), a `namespaceSelector` (every pod there), both (pods matching
  in matching namespaces) or an `ipBlock` (`cidr` minus `except`, matched against the pod IP);
- a port entry's `protocol` defaults to TCP; `port` is a number or a name (resolved on the destination
  pod's container ports); no `port` means every port; `endPort` makes `port..endPort` a range.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """One side of a connection: a pod with its namespace's labels."""

    namespace: str
    labels: dict[str, str]
    namespace_labels: dict[str, str]
    ip: str | None = None
    container_ports: dict[str, int] | None = None  # named ports of the pod (for named NetworkPolicy ports)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    isolated: bool  # some policy selects the pod for this direction
    policies: tuple[str, ...]  # "ns/name" of the policies that isolate the pod (or allowed it)


def endpoint(pod: dict[str, Any], namespace_labels: dict[str, str]) -> Endpoint:
    """A Pod object as NetworkPolicies see it: labels, its namespace's labels (plus the
    `kubernetes.io/metadata.name` label the API server sets), pod IP and named container ports."""
    meta = _obj(pod.get("metadata"))
    ns = str(meta.get("namespace") or "")
    named = {
        str(p["name"]): int(p["containerPort"])
        for c in _list(_obj(pod.get("spec")).get("containers"))
        for p in _list(_obj(c).get("ports"))
        if isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("containerPort"), int)
    }
    ip = _obj(pod.get("status")).get("podIP")
    return Endpoint(
        namespace=ns,
        labels={str(k): str(v) for k, v in _obj(meta.get("labels")).items()},
        namespace_labels={"kubernetes.io/metadata.name": ns, **namespace_labels},
        ip=ip if isinstance(ip, str) else None,
        container_ports=named,
    )


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def selector_matches(selector: Any, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector: matchLabels AND every matchExpression. `{}` matches everything; a
    selector that is not an object (or an unknown operator) matches nothing."""
    if selector is None:
        return True
    if not isinstance(selector, dict):
        return False
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        return False
    for key, value in match_labels.items():
        if labels.get(key) != value:
            return False
    for expr in _list(selector.get("matchExpressions")):
        if not isinstance(expr, dict):
            return False
        key, op, values = str(expr.get("key")), expr.get("operator"), _list(expr.get("values"))
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def policy_types(policy: dict[str, Any]) -> list[str]:
    spec = _obj(policy.get("spec"))
    types = spec.get("policyTypes")
    if isinstance(types, list) and types:
        return [t for t in types if isinstance(t, str)]
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _name(policy: dict[str, Any]) -> str:
    meta = _obj(policy.get("metadata"))
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def selects(policy: dict[str, Any], pod: Endpoint) -> bool:
    meta = _obj(policy.get("metadata"))
    if meta.get("namespace") != pod.namespace:
        return False
    return selector_matches(_obj(policy.get("spec")).get("podSelector") or {}, pod.labels)


def _peer_matches(peer: Any, policy_namespace: str, other: Endpoint) -> bool:
    if not isinstance(peer, dict):
        return False
    block = peer.get("ipBlock")
    if isinstance(block, dict):
        if other.ip is None:
            return False
        try:
            address = ipaddress.ip_address(other.ip)
            if address not in ipaddress.ip_network(str(block.get("cidr")), strict=False):
                return False
            excepted = _list(block.get("except"))
            return not any(address in ipaddress.ip_network(str(e), strict=False) for e in excepted)
        except ValueError:
            return False
    pod_selector, ns_selector = peer.get("podSelector"), peer.get("namespaceSelector")
    if pod_selector is None and ns_selector is None:
        return False
    if ns_selector is None:
        in_namespace = other.namespace == policy_namespace
    else:
        in_namespace = selector_matches(ns_selector, other.namespace_labels)
    return in_namespace and selector_matches(pod_selector if pod_selector is not None else {}, other.labels)


def port_matches(entry: Any, port: int, protocol: str, destination: Endpoint) -> bool:
    if not isinstance(entry, dict):
        return False
    if str(entry.get("protocol") or "TCP").upper() != protocol:
        return False
    value = entry.get("port")
    if value is None:
        return True
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        named = (destination.container_ports or {}).get(value)
        return named == port
    try:
        start = int(value)
    except (TypeError, ValueError):
        return False
    end = entry.get("endPort")
    if isinstance(end, int) and end >= start:
        return start <= port <= end
    return port == start


def _rule_allows(
    rule: Any, peers_key: str, policy_namespace: str, other: Endpoint, port: int, protocol: str, destination: Endpoint
) -> bool:
    if not isinstance(rule, dict):
        return False
    peers = _list(rule.get(peers_key))
    ports = _list(rule.get("ports"))
    peer_ok = not peers or any(_peer_matches(p, policy_namespace, other) for p in peers)
    port_ok = not ports or any(port_matches(p, port, protocol, destination) for p in ports)
    return peer_ok and port_ok


def ingress(
    policies: list[dict[str, Any]], destination: Endpoint, source: Endpoint, port: int, protocol: str = "TCP"
) -> Verdict:
    """May `source` open a connection to `destination`:`port`, as far as `destination`'s policies go?"""
    return _evaluate(policies, "Ingress", "ingress", "from", destination, source, port, protocol, destination)


def egress(
    policies: list[dict[str, Any]], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
) -> Verdict:
    """May `source` open a connection to `destination`:`port`, as far as `source`'s policies go?"""
    return _evaluate(policies, "Egress", "egress", "to", source, destination, port, protocol, destination)


def _evaluate(
    policies: list[dict[str, Any]],
    kind: str,
    rules_key: str,
    peers_key: str,
    subject: Endpoint,
    other: Endpoint,
    port: int,
    protocol: str,
    destination: Endpoint,
) -> Verdict:
    isolating = [p for p in policies if selects(p, subject) and kind in policy_types(p)]
    if not isolating:
        return Verdict(True, False, ())
    for policy in isolating:
        namespace = str(_obj(policy.get("metadata")).get("namespace") or "")
        for rule in _list(_obj(policy.get("spec")).get(rules_key)):
            if _rule_allows(rule, peers_key, namespace, other, port, protocol, destination):
                return Verdict(True, True, (_name(policy),))
    return Verdict(False, True, tuple(sorted(_name(p) for p in isolating)))


def rules_of(policies: list[dict[str, Any]], kind: str, subject: Endpoint) -> list[tuple[str, dict[str, Any]]]:
    """(policy "ns/name", rule) for each ingress/egress rule of the policies isolating `subject`."""
    key = "ingress" if kind == "Ingress" else "egress"
    out = []
    for policy in policies:
        if selects(policy, subject) and kind in policy_types(policy):
            for rule in _list(_obj(policy.get("spec")).get(key)):
                if isinstance(rule, dict):
                    out.append((_name(policy), rule))
    return out


def rule_peer_matches(rule: dict[str, Any], kind: str, policy_namespace: str, other: Endpoint) -> bool:
    peers = _list(rule.get("from" if kind == "Ingress" else "to"))
    return not peers or any(_peer_matches(p, policy_namespace, other) for p in peers)
