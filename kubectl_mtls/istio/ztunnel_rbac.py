"""ztunnel's L4 authorization, evaluated on the policies exactly as its config dump prints them.

Rules from ztunnel's `rbac.rs` and policy store (../shared/reference/AMBIENT.md):
- which policies apply to a workload: scope `Global` (mesh-wide), scope `Namespace` of the workload's
  namespace, and the `WorkloadSelector` policies the workload lists in `authorizationPolicies`;
  dry-run policies are only logged;
- a policy matches when ANY rule matches; a rule when ALL its clauses match; a clause when ANY of
  its match groups matches (an empty clause matches, an empty match group never does); in a match
  group every field present must match (ANY of its values) and no `not*` value may match;
- a policy without rules matches nothing;
- DENY first (`explicitly denied by: NS/NAME`), then ALLOW: no ALLOW policy allows all, otherwise one
  must match (`allow policies exist, but none allowed`).
Identities are `spiffe://<td>/ns/<ns>/sa/<sa>`; principals are matched without the `spiffe://` prefix.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Peer:
    """The connection as ztunnel sees it on the destination side."""

    identity: str | None  # None: the caller has no mesh identity (plaintext)
    source_ip: str | None
    destination_ip: str | None
    port: int | None  # the destination (target) port; None = any


@dataclass(frozen=True)
class Decision:
    allowed: bool | None  # None: could not be decided (a field the caller did not give)
    policy: str | None  # "ns/name" that decided, if one did
    reason: str  # ztunnel's own words where it has them


def applicable(policies: dict[str, dict[str, Any]], workload: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    listed = set(workload.get("authorization_policies") or [])
    for key, policy in policies.items():
        scope = policy.get("scope")
        if (
            scope == "Global"
            or (scope == "Namespace" and policy.get("namespace") == workload.get("namespace"))
            or key in listed
        ):
            out.append(policy)
    return out


def _identity_parts(identity: str | None) -> tuple[str, str, str] | None:
    if not identity or not identity.startswith("spiffe://"):
        return None
    parts = identity.removeprefix("spiffe://").split("/")
    if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa":
        return parts[0], parts[2], parts[4]
    return None


def _string_match(matcher: Any, value: str) -> bool:
    if not isinstance(matcher, dict) or len(matcher) != 1:
        return False
    kind, expected = next(iter(matcher.items()))
    if kind == "Presence":
        return bool(value)
    if not isinstance(expected, str):
        return False
    if kind == "Exact":
        return value == expected
    if kind == "Prefix":
        return value.startswith(expected)
    if kind == "Suffix":
        return value.endswith(expected)
    return False


def _in_net(net: Any, ip: str | None) -> bool:
    if not isinstance(net, str) or ip is None:
        return False
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(net if "/" in net else f"{net}/32", strict=False)
    except ValueError:
        return False


class _Unknown(Exception):
    """A field the evaluation needs was not given (e.g. no source IP): the answer is unknown."""


def _field(group: dict[str, Any], name: str, negated: str, test: Any) -> bool:
    positive = group.get(name) or []
    negative = group.get(negated) or []
    ok = not positive or any(test(v) for v in positive)
    return ok and not (negative and any(test(v) for v in negative))


def _group_matches(group: dict[str, Any], peer: Peer) -> bool:
    parts = _identity_parts(peer.identity)
    namespace = parts[1] if parts else ""
    principal = (
        peer.identity.removeprefix("spiffe://") if peer.identity and peer.identity.startswith("spiffe://") else None
    )

    def need(value: Any, name: str) -> Any:
        if value is None and (group.get(name) or group.get("not" + name[0].upper() + name[1:])):
            raise _Unknown(name)
        return value

    need(peer.source_ip, "sourceIps")
    need(peer.destination_ip, "destinationIps")
    need(peer.port, "destinationPorts")

    def account(match: Any) -> bool:
        return (
            parts is not None
            and isinstance(match, dict)
            and match.get("namespace") == parts[1]
            and match.get("serviceAccount") == parts[2]
        )

    return (
        _field(group, "destinationIps", "notDestinationIps", lambda n: _in_net(n, peer.destination_ip))
        and _field(group, "sourceIps", "notSourceIps", lambda n: _in_net(n, peer.source_ip))
        and _field(group, "destinationPorts", "notDestinationPorts", lambda p: p == peer.port)
        and _field(group, "serviceAccounts", "notServiceAccounts", account)
        and _field(
            group, "principals", "notPrincipals", lambda m: principal is not None and _string_match(m, principal)
        )
        and _field(group, "namespaces", "notNamespaces", lambda m: _string_match(m, namespace))
    )


FIELDS = (
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "principals",
    "notPrincipals",
    "sourceIps",
    "notSourceIps",
    "destinationIps",
    "notDestinationIps",
    "destinationPorts",
    "notDestinationPorts",
)


def matches(policy: dict[str, Any], peer: Peer) -> bool:
    rules = policy.get("rules") or []
    for rule in rules:
        rule_ok = True
        for clause in rule if isinstance(rule, list) else []:
            groups = clause if isinstance(clause, list) else []
            clause_ok = not groups
            for group in groups:
                if not isinstance(group, dict) or not any(group.get(f) for f in FIELDS):
                    continue  # an empty match group never matches
                if _group_matches(group, peer):
                    clause_ok = True
                    break
            if not clause_ok:
                rule_ok = False
                break
        if rule_ok and isinstance(rule, list):
            return True
    return False


def evaluate(policies: list[dict[str, Any]], peer: Peer) -> Decision:
    """ztunnel's verdict for one inbound connection, naming the deciding policy."""
    live = [p for p in policies if not p.get("dry_run")]

    def key(policy: dict[str, Any]) -> str:
        return f"{policy.get('namespace')}/{policy.get('name')}"

    try:
        for policy in sorted((p for p in live if p.get("action") == "Deny"), key=key):
            if matches(policy, peer):
                return Decision(False, key(policy), f"explicitly denied by: {key(policy)}")
        allows = sorted((p for p in live if p.get("action") == "Allow"), key=key)
        if not allows:
            return Decision(True, None, "no ALLOW policy applies: every connection is allowed")
        for policy in allows:
            if matches(policy, peer):
                return Decision(True, key(policy), f"allowed by {key(policy)}")
    except _Unknown as exc:
        return Decision(None, None, f"a policy matches on {exc.args[0]}, which is not known for this call")
    names = ", ".join(key(p) for p in allows)
    return Decision(False, names, f"allow policies exist, but none allowed ({names})")
