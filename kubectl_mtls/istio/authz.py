"""AuthorizationPolicy facts that bear on mTLS, as istiod's sidecar RBAC builder sees a policy.

Scope: a policy applies to a sidecar when it is in the root namespace (no selector: every workload in
the mesh; with a selector: matching workloads in *every* namespace, unlike PeerAuthentication) or in
the workload's own namespace (no selector, or a selector whose labels the pod carries). Policies that
attach through `targetRef`/`targetRefs` are for gateways and waypoints; sidecars ignore them.

Identity: `principals`, `namespaces`, `serviceAccounts` (and their `not` forms) and the conditions
`source.principal`, `source.namespace`, `connection.sni` are read from the peer's mTLS certificate.
A plaintext caller has none of them, so it never matches the positive forms and always matches the
negative ones. `requestPrincipals` is JWT, not mTLS.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from .objects import meta as _meta
from .objects import name as _name
from .objects import namespace as _namespace
from .objects import spec as _spec

ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
DRY_RUN_ANNOTATION = "istio.io/dry-run"

# Source fields derived from the peer certificate (SPIFFE URI SAN); each needs mTLS to ever match.
IDENTITY_SOURCE_FIELDS = (
    "principals",
    "notPrincipals",
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
)
# `when` keys read from the TLS connection of the peer.
IDENTITY_CONDITION_KEYS = ("source.principal", "source.namespace", "connection.sni")
_PRINCIPAL_FIELDS = ("principals", "notPrincipals")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    return [str(v) for v in _list(value) if isinstance(v, str | int | float) and not isinstance(v, bool)]


def _rules(policy: dict[str, Any]) -> list[Any]:
    return _list(_spec(policy).get("rules"))


def workload_scope(
    policy: dict[str, Any], root_namespace: str = "istio-system"
) -> tuple[str | None, dict[str, str] | None] | None:
    """Which sidecars enforce the policy: (namespace, or None for every namespace; matchLabels, or
    None for every workload there). None when no sidecar does (a targetRef policy)."""
    spec = _spec(policy)
    if spec.get("targetRef") or _list(spec.get("targetRefs")):
        return None  # attached to a Gateway/Service/ServiceEntry: gateways and waypoints only
    namespace = _namespace(policy)
    selector = spec.get("selector")
    match = selector.get("matchLabels") if isinstance(selector, dict) else None
    labels = {str(key): str(value) for key, value in match.items()} if isinstance(match, dict) else None
    return (None if namespace == root_namespace else namespace), (labels or None)


def applies_to(
    policy: dict[str, Any], namespace: str, labels: dict[str, str], root_namespace: str = "istio-system"
) -> bool:
    """Whether the policy is enforced by the sidecar of a pod in `namespace` with `labels`."""
    scope = workload_scope(policy, root_namespace)
    if scope is None or scope[0] not in (None, namespace):
        return False
    match = scope[1]
    if match is None:
        return True  # no selector (or empty): every workload in scope
    # labels.Instance.SubsetOf: each selector key present on the pod with the same value.
    return all(key in labels and labels[key] == value for key, value in match.items())


def action(policy: dict[str, Any]) -> str:
    """The action; ALLOW when missing (the proto default). Unknown values are returned as written."""
    raw = _spec(policy).get("action")
    return str(raw) if isinstance(raw, str) and raw else "ALLOW"


def dry_run(policy: dict[str, Any]) -> bool:
    """istio.io/dry-run as istiod reads it (Go strconv.ParseBool): the policy is only shadowed."""
    annotations = _meta(policy).get("annotations")
    value = annotations.get(DRY_RUN_ANNOTATION) if isinstance(annotations, dict) else None
    return value in ("1", "t", "T", "true", "TRUE", "True")


def identity_fields(policy: dict[str, Any]) -> list[str]:
    """Paths of every field that can only match with an mTLS peer identity, in document order.

    Source fields are named by their list ("spec.rules[0].from[0].source.principals"); conditions by
    the condition and its key ("spec.rules[1].when[0] (source.namespace)"). Empty lists are ignored:
    proto3 treats them as unset."""
    out: list[str] = []
    for r, rule in enumerate(_rules(policy)):
        if not isinstance(rule, dict):
            continue
        for f, entry in enumerate(_list(rule.get("from"))):
            source = entry.get("source") if isinstance(entry, dict) else None
            if not isinstance(source, dict):
                continue
            for name in IDENTITY_SOURCE_FIELDS:
                if _list(source.get(name)):
                    out.append(f"spec.rules[{r}].from[{f}].source.{name}")
        for w, condition in enumerate(_list(rule.get("when"))):
            key = condition.get("key") if isinstance(condition, dict) else None
            if key in IDENTITY_CONDITION_KEYS:
                out.append(f"spec.rules[{r}].when[{w}] ({key})")
    return out


def allows_nothing(policy: dict[str, Any]) -> bool:
    """An ALLOW policy without rules: it matches nothing, so the workloads it selects deny all."""
    return action(policy) == "ALLOW" and not _rules(policy)


def _matches_any(entries: list[Any], inner: str) -> bool:
    # `from`/`to` entries are ORed: the list matches everything when it is empty or when one entry has
    # no constraint at all (istiod then emits an "any" principal/permission for it).
    if not entries:
        return True
    for entry in entries:
        body = entry.get(inner) if isinstance(entry, dict) else None
        if not isinstance(body, dict) or not any(_list(v) for v in body.values()):
            return True
    return False


def _rule_matches_all(rule: Any) -> bool:
    if not isinstance(rule, dict):
        return False
    return (
        _matches_any(_list(rule.get("from")), "source")
        and _matches_any(_list(rule.get("to")), "operation")
        and not _list(rule.get("when"))
    )


def denies_everything(policy: dict[str, Any]) -> bool:
    """A DENY policy with a rule that matches every request (`rules: [{}]` or only empty from/to/when).

    A DENY policy without rules matches nothing and so denies nothing."""
    return action(policy) == "DENY" and any(_rule_matches_all(rule) for rule in _rules(policy))


def principals(policy: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, principal) for every entry of `principals`/`notPrincipals`, and for the values of
    `source.principal` conditions, which take the same strings."""
    out: list[tuple[str, str]] = []
    for r, rule in enumerate(_rules(policy)):
        if not isinstance(rule, dict):
            continue
        for f, entry in enumerate(_list(rule.get("from"))):
            source = entry.get("source") if isinstance(entry, dict) else None
            if not isinstance(source, dict):
                continue
            for name in _PRINCIPAL_FIELDS:
                for i, value in enumerate(_strings(source.get(name))):
                    out.append((f"spec.rules[{r}].from[{f}].source.{name}[{i}]", value))
        for w, condition in enumerate(_list(rule.get("when"))):
            if not isinstance(condition, dict) or condition.get("key") != "source.principal":
                continue
            for field in ("values", "notValues"):
                for i, value in enumerate(_strings(condition.get(field))):
                    out.append((f"spec.rules[{r}].when[{w}].{field}[{i}]", value))
    return out


def parse_principal(principal: str) -> tuple[str, str, str] | None:
    """ "<trust domain>/ns/<ns>/sa/<sa>" -> (trust domain, ns, sa).

    None for wildcards ("*", "prefix*", "*suffix") and any other shape, including a written
    "spiffe://" prefix: Istio adds that prefix itself, so such a principal never matches anyone."""
    if "*" in principal or "://" in principal:
        return None
    parts = principal.split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
        return None
    return parts[0], parts[2], parts[4]


# --- evaluator -----------------------------------------------------------------------------------
#
# A static re-play of what istiod builds for a sidecar and what Envoy's RBAC filters then do with it
# (istio/istio pilot/pkg/security/authz/{builder,model}, pilot/pkg/security/trustdomain/bundle.go):
#
# * each rule becomes one Envoy policy `ns[<ns>]-policy[<name>]-rule[<i>]`; the `when` conditions are
#   ANDed into every `from` entry (principal side) and every `to` entry (permission side), so a rule
#   matches when one `from`, one `to` and every `when` match;
# * a field istiod cannot translate for the filter chain (an HTTP-only field on a TCP port, an
#   unparsable port or CIDR) fails the whole rule for ALLOW (the rule is skipped) and is only dropped
#   for DENY, AUDIT and CUSTOM (the rule matches more);
# * Envoy keeps the policies of one filter in a std::map, so the policy it reports for a match is the
#   first matching name in byte order (`rule[10]` sorts before `rule[2]`).
#
# What cannot be known from the API objects (headers, JWT claims, the destination IP, the SNI of an
# mTLS connection, ...) is evaluated as "unknown": Kleene three-valued logic carries it up to the rule,
# and a rule that stays unknown is treated as matching for DENY/CUSTOM and as not matching for ALLOW.

MESH_DEFAULT_TRUST_DOMAIN = "cluster.local"
_SPIFFE = "spiffe://"
_TEMPLATE_ONE = "{*}"
_TEMPLATE_ANY = "{**}"
# Envoy uri_template: `*` is one non-empty path segment, `**` any run of segments (possibly empty).
_SEGMENT_CHARS = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]"

Tri = bool | None  # True / False / None = cannot be known statically


@dataclass(frozen=True)
class Caller:
    """Who calls. `principal` is the peer's SPIFFE identity without `spiffe://`
    ("cluster.local/ns/app/sa/client"); None for a plaintext caller (no mTLS identity)."""

    principal: str | None
    namespace: str | None  # informational: `namespaces` are matched on the principal, as Envoy does
    ip: str | None = None


@dataclass(frozen=True)
class Request:
    """What is called: the destination (target) port, "http" or "tcp", and for HTTP what is known."""

    port: int
    protocol: str = "tcp"
    method: str | None = None
    path: str | None = None
    host: str | None = None


@dataclass
class Decision:
    allowed: bool
    action: str  # "DENY" | "ALLOW" | "CUSTOM" | "DEFAULT-ALLOW" | "DEFAULT-DENY"
    policy: str | None  # "ns/name" that decided
    rule: int | None  # index of the deciding rule
    envoy_name: str | None  # "ns[<ns>]-policy[<name>]-rule[<i>]"
    reason: str
    considered: list[str] = dataclasses.field(default_factory=list)
    unknown: list[str] = dataclasses.field(default_factory=list)


class _Untranslatable(Exception):
    """istiod cannot generate an Envoy matcher for this value on this filter chain."""


class _RuleDropped(Exception):
    """An ALLOW rule istiod skips: one of its values is untranslatable."""


@dataclass
class _Ctx:
    caller: Caller
    request: Request
    tcp: bool
    action: str
    trust_domains: tuple[str, ...]
    policy_namespace: str
    labels: list[str] = dataclasses.field(default_factory=list)  # unknowns met while evaluating the current rule


def envoy_policy_name(policy: dict[str, Any], rule: int) -> str:
    """The key istiod gives a rule in Envoy's RBAC `policies` (and in rbac_access_denied_matched_policy).

    CUSTOM rules carry the ext-authz prefix; since multi-provider support (istio/istio#58082) it also
    names the provider: `istio-ext-authz-<provider>-ns[...]` (older releases: `istio-ext-authz-ns[...]`)."""
    base = f"ns[{_namespace(policy)}]-policy[{_name(policy)}]-rule[{rule}]"
    if action(policy) != "CUSTOM":
        return base
    name = _provider(policy)
    return f"istio-ext-authz-{name}-{base}" if name else f"istio-ext-authz-{base}"


def _provider(policy: dict[str, Any]) -> str:
    provider = _spec(policy).get("provider")
    name = provider.get("name") if isinstance(provider, dict) else None
    return name if isinstance(name, str) else ""


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """Istio's string match: "*" = present (non-empty), "abc*" prefix, "*abc" suffix, else exact."""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _expand_trust_domains(principal: str, bundle: tuple[str, ...]) -> list[str]:
    """trustdomain.Bundle.ReplaceTrustDomainAliases for one principal."""
    parts = principal.split("/")
    if len(parts) != 5 or parts[0] == "*":
        return [principal]  # no trust domain enforced (or not a SPIFFE-shaped value): kept as written
    written = parts[0]
    if written not in bundle and written != MESH_DEFAULT_TRUST_DOMAIN:
        return [principal]  # istiod keeps it and warns "... does not match the current trust domain ..."
    out: list[str] = []
    for domain in bundle:
        suffix_match = written.startswith("*") and domain.endswith(written[1:])
        candidate = principal if suffix_match else "/".join([domain, *parts[1:]])
        if candidate not in out:
            out.append(candidate)
    return out


def _peer(ctx: _Ctx) -> str | None:
    principal = ctx.caller.principal
    if principal is None:
        return None
    return principal[len(_SPIFFE) :] if principal.startswith(_SPIFFE) else principal


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _in_cidr(ctx: _Ctx, value: str, address: str | None, label: str) -> Tri:
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise _Untranslatable(f"{label} value {value!r} is not an IP or CIDR") from exc
    parsed = _ip(address) if address is not None else None
    if parsed is None:
        ctx.labels.append(f"{label} (caller IP unknown)")
        return None
    return parsed.version == network.version and parsed in network


def _port(value: str, label: str) -> int:
    try:
        port = int(value.strip())
    except ValueError as exc:
        raise _Untranslatable(f"{label} value {value!r} is not a port") from exc
    if not 0 <= port <= 65535:
        raise _Untranslatable(f"{label} value {value!r} is not a port")
    return port


def _http_only(ctx: _Ctx, label: str) -> None:
    if ctx.tcp:
        raise _Untranslatable(f"{label} is HTTP-only and the port is TCP")


def _path_template(pattern: str, path: str) -> bool:
    regex = ""
    for piece in re.split(r"(\{\*\*\}|\{\*\})", pattern):
        if piece == _TEMPLATE_ANY:
            regex += f"(?:{_SEGMENT_CHARS}|/)*"
        elif piece == _TEMPLATE_ONE:
            regex += f"{_SEGMENT_CHARS}+"
        else:
            regex += re.escape(piece)
    return re.fullmatch(regex, path) is not None


def _match_one(ctx: _Ctx, key: str, value: str) -> Tri:
    """One value of one field or condition against the caller and request.

    Keys are the `source`/`operation` field names and the `when` attribute names."""
    peer = _peer(ctx)
    if key in ("principals", "source.principal"):
        if peer is None:
            return False  # plaintext: no peer certificate, no principal
        return any(_glob(p, peer) for p in _expand_trust_domains(value, ctx.trust_domains))
    if key in ("namespaces", "source.namespace"):
        if peer is None:
            return False
        # srcNamespaceGenerator: regex ".*/ns/<value with * -> .*>/.*" on the URI SAN.
        inner = ".*".join(re.escape(part) for part in value.split("*"))
        return re.fullmatch(f".*/ns/{inner}/.*", _SPIFFE + peer) is not None
    if key in ("serviceAccounts", "source.serviceAccount"):
        if peer is None:
            return False
        ns, sep, sa = value.partition("/")
        if not sep:
            ns, sa = ctx.policy_namespace, value
        regex = f"spiffe://.+/ns/{re.escape(ns)}/(.+/|)sa/{re.escape(sa)}(/.+)?"
        return re.fullmatch(regex, _SPIFFE + peer) is not None
    if key in ("ipBlocks", "source.ip"):
        return _in_cidr(ctx, value, ctx.caller.ip, key)
    if key in ("remoteIpBlocks", "remote.ip"):
        # TCP: the connection's peer address; HTTP: may come from X-Forwarded-For / proxy protocol.
        if ctx.tcp:
            return _in_cidr(ctx, value, ctx.caller.ip, key)
        _in_cidr(ctx, value, "0.0.0.0", key)  # still validate the value
        ctx.labels.append(f"{key} (from X-Forwarded-For on HTTP)")
        return None
    if key in ("ports", "destination.port"):
        return _port(value, key) == ctx.request.port
    if key == "connection.sni":
        if peer is None:
            return _glob(value, "")  # no TLS, no SNI
        ctx.labels.append("connection.sni (SNI the client sent)")
        return None
    if key == "destination.ip":
        _in_cidr(ctx, value, "0.0.0.0", key)
        ctx.labels.append("destination.ip (pod IP)")
        return None
    if key in ("methods", "hosts", "paths"):
        _http_only(ctx, key)
        if value == "*":
            return True  # presence: every HTTP request has a :method, an :authority and a non-empty path
        known = {"methods": ctx.request.method, "hosts": ctx.request.host, "paths": ctx.request.path}[key]
        if known is None:
            ctx.labels.append(f"{key} (request {key[:-1]} not given)")
            return None
        if key == "methods":
            return _glob(value, known)
        if key == "hosts":
            return _glob(value, known, ignore_case=True)
        path = known.split("?", 1)[0].split("#", 1)[0]
        if _TEMPLATE_ONE in value or _TEMPLATE_ANY in value:
            return _path_template(value, path)
        return _glob(value, path)
    if key == "requestPrincipals" or key.startswith(("request.auth.", "request.headers", "request.experimental.")):
        _http_only(ctx, key)
        ctx.labels.append(f"{key} (JWT/header content)")
        return None
    if key.startswith("experimental.envoy.filters."):
        ctx.labels.append(f"{key} (Envoy dynamic metadata)")
        return None
    ctx.labels.append(f"{key} (not known to this evaluator)")
    return None


def _any(results: list[Tri]) -> Tri:
    if any(r is True for r in results):
        return True
    return None if any(r is None for r in results) else False


def _all(results: list[Tri]) -> Tri:
    if any(r is False for r in results):
        return False
    return None if any(r is None for r in results) else True


def _not(result: Tri) -> Tri:
    return None if result is None else not result


def _values(ctx: _Ctx, key: str, values: list[str]) -> list[Tri]:
    out: list[Tri] = []
    for value in values:
        try:
            out.append(_match_one(ctx, key, value))
        except _Untranslatable as exc:
            if ctx.action == "ALLOW":
                raise _RuleDropped(str(exc)) from exc
            # DENY/AUDIT/CUSTOM: istiod drops just this value (checkError).
    return out


def _constraint(ctx: _Ctx, key: str, values: list[str], not_values: list[str]) -> list[Tri]:
    """The AND terms of one key: OR of its values, NOT(OR of its notValues); dropped parts vanish."""
    terms: list[Tri] = []
    positive = _values(ctx, key, values)
    if positive:
        terms.append(_any(positive))
    negative = _values(ctx, key, not_values)
    if negative:
        terms.append(_not(_any(negative)))
    return terms


def _fields(ctx: _Ctx, body: dict[str, Any], known: tuple[str, ...], kind: str) -> Tri:
    terms: list[Tri] = []
    for name in known:
        if name.startswith("not"):
            continue
        negation = "not" + name[0].upper() + name[1:]
        terms += _constraint(ctx, name, _strings(body.get(name)), _strings(body.get(negation)))
    for name, raw in body.items():
        if name not in known and _list(raw):
            ctx.labels.append(f"{kind}.{name} (not known to this evaluator)")
            terms.append(None)
    return _all(terms)


_SOURCE_FIELDS = (
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
)
_OPERATION_FIELDS = ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")


def _entries(ctx: _Ctx, entries: list[Any], inner: str, known: tuple[str, ...]) -> Tri:
    if not entries:
        return True
    results: list[Tri] = []
    for entry in entries:
        body = entry.get(inner) if isinstance(entry, dict) else None
        results.append(_fields(ctx, body, known, inner) if isinstance(body, dict) else True)
    return _any(results)


def _rule_matches(ctx: _Ctx, rule: dict[str, Any]) -> Tri:
    """Raises _RuleDropped for an ALLOW rule istiod would skip. Evaluates every part (no short cut)."""
    source = _entries(ctx, _list(rule.get("from")), "source", _SOURCE_FIELDS)
    operation = _entries(ctx, _list(rule.get("to")), "operation", _OPERATION_FIELDS)
    conditions: list[Tri] = []
    for condition in _list(rule.get("when")):
        if not isinstance(condition, dict):
            continue
        key = str(condition.get("key") or "")
        conditions += _constraint(ctx, key, _strings(condition.get("values")), _strings(condition.get("notValues")))
    return _all([source, operation, _all(conditions)])


@dataclass
class _Hit:
    policy: dict[str, Any]
    rule: int
    result: Tri
    labels: list[str]

    @property
    def ref(self) -> str:
        return f"{_namespace(self.policy)}/{_name(self.policy)}"

    @property
    def envoy(self) -> str:
        return envoy_policy_name(self.policy, self.rule)


def _evaluate_policy(ctx: _Ctx, policy: dict[str, Any], dropped: list[str]) -> list[_Hit]:
    """Every rule that matches (True) or may match (None)."""
    hits: list[_Hit] = []
    for index, rule in enumerate(_rules(policy)):
        if not isinstance(rule, dict):
            continue  # nil rule: istiod skips it
        ctx.labels = []
        try:
            result = _rule_matches(ctx, rule)
        except _RuleDropped as exc:
            dropped.append(f"{_namespace(policy)}/{_name(policy)} rule[{index}] skipped by istiod ({exc})")
            continue
        if result is not False:
            hits.append(_Hit(policy, index, result, list(dict.fromkeys(ctx.labels))))
    return hits


def _first(hits: list[_Hit]) -> _Hit | None:
    """Envoy's pick: prefer a certain match; among equals the smallest policy name (std::map order)."""
    if not hits:
        return None
    return min(hits, key=lambda h: (h.result is not True, h.envoy))


def _unknown_line(hit: _Hit, treated: str) -> str:
    return (
        f"{hit.ref} rule[{hit.rule}] ({action(hit.policy)}): {', '.join(hit.labels)} cannot be known "
        f"statically; treated as {treated}"
    )


def _describe(caller: Caller, request: Request) -> str:
    who = caller.principal if caller.principal is not None else "a plaintext caller (no mTLS identity)"
    what = f"{request.protocol.lower()} port {request.port}"
    if request.method or request.path:
        what += f" {request.method or '?'} {request.path or '?'}"
    return f"{who} -> {what}"


def evaluate(
    policies: list[dict[str, Any]],
    namespace: str,
    labels: dict[str, str],
    caller: Caller,
    request: Request,
    root_namespace: str = "istio-system",
    trust_domain: str = MESH_DEFAULT_TRUST_DOMAIN,
    trust_domain_aliases: tuple[str, ...] = (),
) -> Decision:
    """Whether the sidecar of a pod (`namespace`, `labels`) lets `caller` make `request`.

    Istio's order: a matching CUSTOM policy hands the request to its ext-authz provider (which can only
    deny more), then any matching DENY denies, then with no ALLOW policy the request is allowed, then a
    matching ALLOW allows, else it is denied. Dry-run, AUDIT and unsupported actions never decide."""
    protocol = request.protocol.lower()
    if protocol not in ("http", "tcp"):
        raise ValueError(f"request protocol must be 'http' or 'tcp', not {request.protocol!r}")
    bundle = (trust_domain, *(a for a in trust_domain_aliases if a != trust_domain))

    applied = [
        p
        for p in policies
        if isinstance(p, dict)
        and p.get("kind", "AuthorizationPolicy") == "AuthorizationPolicy"
        and applies_to(p, namespace, labels, root_namespace)
    ]
    considered: list[str] = []
    enforced: dict[str, list[dict[str, Any]]] = {name: [] for name in ACTIONS}
    for policy in applied:
        act = action(policy)
        entry = f"{_namespace(policy)}/{_name(policy)} ({act})"
        if act not in ACTIONS:
            entry += " (unsupported action: ignored)"
        elif dry_run(policy):
            entry += " (dry-run)"
        else:
            enforced[act].append(policy)
        considered.append(entry)

    def ctx_for(act: str, policy: dict[str, Any]) -> _Ctx:
        return _Ctx(caller, request, protocol == "tcp", act, bundle, _namespace(policy))

    dropped: list[str] = []

    def hits_of(act: str) -> list[_Hit]:
        out: list[_Hit] = []
        for policy in enforced[act]:
            out += _evaluate_policy(ctx_for(act, policy), policy, dropped)
        return out

    scene = _describe(caller, request)
    unknown: list[str] = []

    custom = _first(hits_of("CUSTOM"))
    providers = {_provider(p) for p in enforced["CUSTOM"]}
    if len(providers) > 1:
        unknown.append(
            f"CUSTOM policies name {len(providers)} ext-authz providers; without "
            "PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS (and before Istio added it) istiod "
            "generates deny rules instead"
        )

    deny = _first(hits_of("DENY"))
    if deny is not None:
        if deny.result is None:
            unknown.append(_unknown_line(deny, "matching for DENY"))
        return Decision(
            allowed=False,
            action="DENY",
            policy=deny.ref,
            rule=deny.rule,
            envoy_name=deny.envoy,
            reason=f"denied by DENY policy {deny.ref} rule[{deny.rule}] ({scene})"
            + ("; best-effort, see unknown" if deny.result is None else ""),
            considered=considered,
            unknown=unknown,
        )

    if not enforced["ALLOW"]:
        decision = Decision(
            allowed=True,
            action="DEFAULT-ALLOW",
            policy=None,
            rule=None,
            envoy_name=None,
            reason=f"allowed: no DENY policy matches and no ALLOW policy applies to the workload ({scene})",
            considered=considered,
            unknown=unknown,
        )
    else:
        allow_hits = hits_of("ALLOW")
        allow = _first([h for h in allow_hits if h.result is True])
        if allow is not None:
            decision = Decision(
                allowed=True,
                action="ALLOW",
                policy=allow.ref,
                rule=allow.rule,
                envoy_name=allow.envoy,
                reason=f"allowed by ALLOW policy {allow.ref} rule[{allow.rule}] ({scene})",
                considered=considered,
                unknown=unknown,
            )
        else:
            names = ", ".join(f"{_namespace(p)}/{_name(p)}" for p in enforced["ALLOW"])
            unknown += [_unknown_line(h, "not matching for ALLOW") for h in allow_hits]
            reason = f"denied: ALLOW policies apply ({names}) but none matches ({scene})"
            if dropped:  # only ALLOW rules are ever dropped
                reason += "; " + "; ".join(dropped)
            if allow_hits:
                reason += "; best-effort, see unknown"
            return Decision(
                allowed=False,
                action="DEFAULT-DENY",
                policy=None,
                rule=None,
                envoy_name=None,
                reason=reason,
                considered=considered,
                unknown=unknown,
            )

    if custom is None:
        return decision
    provider = _provider(custom.policy) or "(unnamed)"
    line = f"{custom.ref} rule[{custom.rule}] (CUSTOM): the ext-authz provider {provider!r} decides" + (
        " (on a TCP port only a gRPC provider is consulted)" if protocol == "tcp" else ""
    )
    unknown.append(line)
    if custom.result is None:
        unknown.append(_unknown_line(custom, "matching for CUSTOM"))
    return Decision(
        allowed=True,
        action="CUSTOM",
        policy=custom.ref,
        rule=custom.rule,
        envoy_name=custom.envoy,
        reason=f"CUSTOM policy {custom.ref} rule[{custom.rule}] sends the request to ext-authz provider "
        f"{provider!r}, which decides; DENY/ALLOW alone would allow ({decision.action}) ({scene})",
        considered=considered,
        unknown=unknown,
    )
