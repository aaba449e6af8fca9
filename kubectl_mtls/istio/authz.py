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
# (istio/istio pilot/pkg/security/authz/{builder,model,matcher}, pilot/pkg/security/trustdomain):
#
# * each rule becomes one Envoy policy `ns[<ns>]-policy[<name>]-rule[<i>]`; the `when` conditions are
#   ANDed into every `from` entry (principal side) and every `to` entry (permission side), so a rule
#   matches when one `from`, one `to` and every `when` match;
# * a field istiod cannot translate for the filter chain (an HTTP-only field on a TCP port, an
#   unparsable port or CIDR) fails the whole rule for ALLOW (the rule is skipped) and is only dropped
#   for DENY, AUDIT and CUSTOM (the rule matches more);
# * CUSTOM rules whose provider is not in meshConfig.extensionProviders become DENY rules named
#   `...-deny-due-to-bad-CUSTOM-action`;
# * Envoy keeps the policies of one filter in a std::map, so the policy it reports for a match is the
#   first matching name in byte order (`rule[10]` sorts before `rule[2]`).
#
# What the caller did not tell us (the request's method, path, headers, JWT; the caller's IP; ...) is
# "unknown": Kleene three-valued logic carries it up to the rule together with the residual condition
# ("method is GET and path matches /api/*"), and a decision that hinges on it is `depends`, never a guess.

MESH_DEFAULT_TRUST_DOMAIN = "cluster.local"
BAD_CUSTOM_SUFFIX = "-deny-due-to-bad-CUSTOM-action"
_SPIFFE = "spiffe://"
_TEMPLATE_ONE = "{*}"
_TEMPLATE_ANY = "{**}"
# Envoy uri_template: `*` is one non-empty path segment, `**` any run of segments (possibly empty).
_SEGMENT_CHARS = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]"

Tri = bool | None  # True / False / None = not known from what we were told
OUTCOMES = ("allow", "deny", "depends")


@dataclass(frozen=True)
class Caller:
    """Who calls. `principal` is the peer's SPIFFE identity without `spiffe://`
    ("cluster.local/ns/app/sa/client"); None for a plaintext caller (no mTLS identity)."""

    principal: str | None
    namespace: str | None  # informational: `namespaces` are matched on the principal, as Envoy does
    ip: str | None = None


@dataclass(frozen=True)
class Request:
    """What is called: the destination (target) port, "http" or "tcp", and what is known of the request.

    `headers` None means the headers are not known; a tuple (possibly empty) is every header the request
    carries, names in any case. `jwt` is the claims of the request's JWT as the sidecar sees them after
    RequestAuthentication accepted it; `jwt_known` False means we do not know whether one is sent."""

    port: int
    protocol: str = "tcp"
    method: str | None = None
    path: str | None = None
    host: str | None = None
    headers: tuple[tuple[str, str], ...] | None = None
    jwt: dict[str, Any] | None = None
    jwt_known: bool = False
    sni: str | None = None  # the SNI of the caller's TLS connection, when known
    destination_ip: str | None = None  # the server pod's IP, when known


@dataclass
class Decision:
    allowed: bool  # True only for outcome "allow"
    action: str  # "DENY" | "ALLOW" | "CUSTOM" | "DEFAULT-ALLOW" | "DEFAULT-DENY" | "DEPENDS"
    policy: str | None  # "ns/name" that decided
    rule: int | None  # index of the deciding rule
    envoy_name: str | None  # "ns[<ns>]-policy[<name>]-rule[<i>]"
    reason: str
    considered: list[str] = dataclasses.field(default_factory=list)
    unknown: list[str] = dataclasses.field(default_factory=list)
    outcome: str = "allow"  # "allow" | "deny" | "depends"
    allowed_when: list[str] = dataclasses.field(default_factory=list)  # for "depends": each way in
    denied_when: list[str] = dataclasses.field(default_factory=list)  # for "depends": each way out
    depends_on: list[str] = dataclasses.field(default_factory=list)  # the request attributes it hinges on
    condition: str | None = None  # what matched (or, for DEFAULT-DENY, what no rule matched)


class _Untranslatable(Exception):
    """istiod cannot generate an Envoy matcher for this value on this filter chain."""


class _RuleDropped(Exception):
    """An ALLOW rule istiod skips: one of its values is untranslatable."""


@dataclass
class _Ctx:
    caller: Caller
    request: Request
    tcp: bool
    action: str  # the RBAC action the rule is built for: ALLOW, DENY (also CUSTOM), LOG
    trust_domains: tuple[str, ...]
    policy_namespace: str
    needs: list[str] = dataclasses.field(default_factory=list)  # unknown inputs met in the current rule


# A three-valued result with, when unknown, the residual condition under which it would be true.
Res = tuple[Tri, str]


def envoy_policy_name(policy: dict[str, Any], rule: int) -> str:
    """The key istiod gives a rule in Envoy's RBAC `policies` (and in rbac_access_denied_matched_policy).

    CUSTOM rules carry the ext-authz prefix; since multi-provider support (istio/istio#58082) it also
    names the provider: `istio-ext-authz-<provider>-ns[...]` (older releases: `istio-ext-authz-ns[...]`)."""
    base = f"ns[{_namespace(policy)}]-policy[{_name(policy)}]-rule[{rule}]"
    if action(policy) != "CUSTOM":
        return base
    name = _provider(policy)
    return f"istio-ext-authz-{name}-{base}" if name else f"istio-ext-authz-{base}"


def provider(policy: dict[str, Any]) -> str:
    """The ext-authz provider a CUSTOM policy names ("" when none)."""
    return _provider(policy)


def _provider(policy: dict[str, Any]) -> str:
    value = _spec(policy).get("provider")
    name = value.get("name") if isinstance(value, dict) else None
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


def _wildcard(pattern: str, text: str) -> bool:
    """`*` matches any run of characters (slashes included); the rest literally. Greedy with one
    backtrack point, so linear-ish whatever the number of `*`."""
    p = t = 0
    star, mark = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] != "*" and pattern[p] == text[t]:
            p, t = p + 1, t + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, t, p + 1
        elif star >= 0:
            p, mark = star + 1, mark + 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def _header_glob(pattern: str, joined: str) -> bool:
    """HeaderMatcherWithRegex: the pattern against one element of the comma-joined header values
    (`^v$|^v,.*|.*,v,.*|.*,v$`), as Envoy matches a header sent several times or as a list."""
    if pattern.startswith("*"):
        inner = ".*" + re.escape(pattern[1:])
    elif pattern.endswith("*"):
        inner = re.escape(pattern[:-1]) + ".*"
    else:
        inner = re.escape(pattern)
    regex = f"^{inner}$|^{inner},.*|.*,{inner},.*|.*,{inner}$"
    return re.search(regex, joined, re.DOTALL) is not None


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


def _in_cidr(ctx: _Ctx, value: str, address: str | None, need: str) -> Tri:
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise _Untranslatable(f"value {value!r} is not an IP or CIDR") from exc
    parsed = _ip(address) if address is not None else None
    if parsed is None:
        ctx.needs.append(need)
        return None
    return parsed.version == network.version and parsed in network


def _port(value: str) -> int:
    try:
        port = int(value.strip())
    except ValueError as exc:
        raise _Untranslatable(f"value {value!r} is not a port") from exc
    if not 0 <= port <= 65535:
        raise _Untranslatable(f"value {value!r} is not a port")
    return port


def _http_only(ctx: _Ctx, key: str) -> None:
    if ctx.tcp:
        raise _Untranslatable(f"{key} is HTTP-only and the port is TCP")


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


def _bracketed(text: str) -> list[str] | None:
    """ "[a][b]" -> ["a", "b"]; None when malformed (istiod rejects such keys)."""
    names = re.findall(r"\[([^\[\]]+)\]", text)
    return names if names and "".join(f"[{n}]" for n in names) == text else None


def _header(ctx: _Ctx, name: str) -> str | bool | None:
    """The comma-joined values of a request header; None when absent; False when headers are unknown."""
    headers = ctx.request.headers
    if headers is None:
        return False
    values = [v for k, v in headers if k.lower() == name.lower()]
    return ",".join(values) if values else None


def _claim(claims: dict[str, Any], path: list[str]) -> list[str] | None:
    """A (nested) JWT claim as Istio's authn filter stores it: strings and lists of strings, a string
    claim as a one-element list; None when absent or not a string/list."""
    value: Any = claims
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool) or not isinstance(value, list | int | float):
        return None
    if isinstance(value, int | float):
        return [str(value)]
    return [str(v) for v in value if isinstance(v, str | int | float) and not isinstance(v, bool)]


def _jwt_principal(value: str, iss: str | None, sub: str | None) -> bool:
    """requestPrincipalGenerator: `<iss>/<sub>` split at the last "/", with its wildcard forms."""
    if iss is None or sub is None:
        return False
    cut = value.rfind("/")
    found = cut >= 0
    want_iss, want_sub = (value[:cut], value[cut + 1 :]) if found else (value, "")
    if value == "*":
        return iss != "" and sub != ""
    if value.startswith("*"):
        if found:
            iss_ok = iss != "" if want_iss == "*" else iss.endswith(want_iss[1:])
            return iss_ok and sub == want_sub
        return iss != "" and sub.endswith(value[1:])
    if value.endswith("*"):
        if found:
            sub_ok = sub != "" if want_sub == "*" else sub.startswith(want_sub[:-1])
            return iss == want_iss and sub_ok
        return iss.startswith(value[:-1]) and sub != ""
    return iss == want_iss and sub == want_sub


def _jwt(ctx: _Ctx, key: str) -> dict[str, Any] | bool | None:
    _http_only(ctx, key)
    if not ctx.request.jwt_known:
        ctx.needs.append("the request's JWT")
        return False
    return ctx.request.jwt or None


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
        # srcNamespaceGenerator: regex ".*/ns/<value with * -> .*>/.*" on the URI SAN, matched here as a
        # wildcard pattern in linear time (a policy with many `*` must not make the evaluation hang).
        return _wildcard(f"*/ns/{value}/*", _SPIFFE + peer)
    if key in ("serviceAccounts", "source.serviceAccount"):
        if peer is None:
            return False
        ns, sep, sa = value.partition("/")
        if not sep:
            ns, sa = ctx.policy_namespace, value
        regex = f"spiffe://.+/ns/{re.escape(ns)}/(.+/|)sa/{re.escape(sa)}(/.+)?"
        return re.fullmatch(regex, _SPIFFE + peer) is not None
    if key in ("ipBlocks", "source.ip"):
        return _in_cidr(ctx, value, ctx.caller.ip, "the caller's IP")
    if key in ("remoteIpBlocks", "remote.ip"):
        # HTTP-only (istiod drops it from TCP filters). remote_ip is the last X-Forwarded-For entry when
        # there is one (the inbound HTTP manager trusts no hops), else the peer address.
        _http_only(ctx, key)
        address = ctx.caller.ip
        xff = _header(ctx, "x-forwarded-for")
        if xff is False:
            ctx.needs.append("X-Forwarded-For")
            _in_cidr(ctx, value, "0.0.0.0", "X-Forwarded-For")  # still validate the value
            return None
        if isinstance(xff, str):
            address = xff.split(",")[-1].strip()
        return _in_cidr(ctx, value, address, "the caller's IP")
    if key in ("ports", "destination.port"):
        return _port(value) == ctx.request.port
    if key == "connection.sni":
        if peer is None:
            return _glob(value, "")  # no TLS, no SNI
        if ctx.request.sni is None:
            ctx.needs.append("the SNI the caller sends")
            return None
        return _glob(value, ctx.request.sni)
    if key == "destination.ip":
        return _in_cidr(ctx, value, ctx.request.destination_ip, "the destination pod's IP")
    if key in ("methods", "hosts", "paths"):
        _http_only(ctx, key)
        if value == "*":
            return True  # presence: every HTTP request has a :method, an :authority and a non-empty path
        known = {"methods": ctx.request.method, "hosts": ctx.request.host, "paths": ctx.request.path}[key]
        if known is None:
            ctx.needs.append({"methods": "method", "hosts": "host", "paths": "path"}[key])
            return None
        if key == "methods":
            return _glob(value, known)
        if key == "hosts":
            return _glob(value, known, ignore_case=True)  # the whole :authority, port included
        path = known.split("?", 1)[0].split("#", 1)[0]
        if _TEMPLATE_ONE in value or _TEMPLATE_ANY in value:
            return _path_template(value, path)
        return _glob(value, path)
    if key.startswith("request.headers"):
        _http_only(ctx, key)
        names = _bracketed(key[len("request.headers") :])
        if names is None or len(names) != 1:
            raise _Untranslatable(f"{key} is not request.headers[<name>]")
        joined = _header(ctx, names[0])
        if joined is False:
            ctx.needs.append(f"header {names[0]}")
            return None
        if not isinstance(joined, str):
            return False  # an absent header matches no matcher, not even presence
        return True if value == "*" else _header_glob(value, joined)
    if key in ("requestPrincipals", "request.auth.principal"):
        claims = _jwt(ctx, key)
        if claims is False:
            return None
        body = claims if isinstance(claims, dict) else {}
        iss, sub = body.get("iss"), body.get("sub")
        return _jwt_principal(value, iss if isinstance(iss, str) else None, sub if isinstance(sub, str) else None)
    if key in ("request.auth.audiences", "request.auth.presenter") or key.startswith("request.auth.claims"):
        claims = _jwt(ctx, key)
        if claims is False:
            return None
        if key == "request.auth.audiences":
            claim_path = ["aud"]
        elif key == "request.auth.presenter":
            claim_path = ["azp"]
        else:
            parsed = _bracketed(key[len("request.auth.claims") :])
            if parsed is None:
                raise _Untranslatable(f"{key} is not request.auth.claims[<name>]...")
            claim_path = parsed
        found = _claim(claims, claim_path) if isinstance(claims, dict) else None
        return found is not None and any(_glob(value, v) for v in found)
    if key.startswith("experimental.envoy.filters."):
        ctx.needs.append(f"Envoy dynamic metadata {key}")
        return None
    ctx.needs.append(f"{key} (not known to this evaluator)")
    return None


def _subject(key: str) -> str:
    names = {
        "methods": "method",
        "paths": "path",
        "hosts": "host",
        "ports": "port",
        "destination.port": "port",
        "principals": "caller principal",
        "source.principal": "caller principal",
        "namespaces": "caller namespace",
        "source.namespace": "caller namespace",
        "serviceAccounts": "caller service account",
        "source.serviceAccount": "caller service account",
        "ipBlocks": "caller IP",
        "source.ip": "caller IP",
        "remoteIpBlocks": "remote IP",
        "remote.ip": "remote IP",
        "connection.sni": "SNI",
        "destination.ip": "destination IP",
        "requestPrincipals": "JWT principal (iss/sub)",
        "request.auth.principal": "JWT principal (iss/sub)",
        "request.auth.audiences": "JWT audience",
        "request.auth.presenter": "JWT presenter (azp)",
    }
    if key in names:
        return names[key]
    if key.startswith("request.headers"):
        return "header " + key[len("request.headers") :].strip("[]")
    if key.startswith("request.auth.claims"):
        return "JWT claim " + ".".join(_bracketed(key[len("request.auth.claims") :]) or [key])
    return key


def _phrase(key: str, values: list[str], negated: bool) -> str:
    subject = _subject(key)
    if len(values) == 1:
        return f"{subject} {'is not' if negated else 'is'} {values[0]}"
    return f"{subject} {'is none of' if negated else 'is one of'} {', '.join(values)}"


def _and(parts: list[Res]) -> Res:
    failed = [text for r, text in parts if r is False]
    if failed:
        return False, failed[0]
    open_ = [text for r, text in parts if r is None]
    if open_:
        return None, " and ".join(t for t in open_ if t)
    return True, " and ".join(text for _, text in parts if text)


def _or(parts: list[Res]) -> Res:
    matched = [text for r, text in parts if r is True]
    if matched:
        return True, matched[0]
    open_ = [text for r, text in parts if r is None]
    if not open_:
        failed = list(dict.fromkeys(text for _, text in parts if text))
        return False, " or ".join(failed)
    return None, open_[0] if len(open_) == 1 else " or ".join(f"({t})" for t in open_)


def _values(ctx: _Ctx, key: str, values: list[str]) -> tuple[list[Tri], list[str]]:
    """Each value's result, and the values left unknown. Untranslatable values follow istiod."""
    results: list[Tri] = []
    open_: list[str] = []
    for value in values:
        try:
            result = _match_one(ctx, key, value)
        except _Untranslatable as exc:
            if ctx.action == "ALLOW":
                raise _RuleDropped(f"{key}: {exc}") from exc
            continue  # DENY/AUDIT/CUSTOM: istiod drops just this value (the rule matches more)
        results.append(result)
        if result is None:
            open_.append(value)
    return results, open_


def _constraint(ctx: _Ctx, key: str, values: list[str], not_values: list[str]) -> list[Res]:
    """The AND terms of one key: OR of its values, NOT(OR of its notValues); dropped parts vanish."""
    terms: list[Res] = []
    # The text is what matched, the residual condition when unknown, and what was required when it failed.
    positive, open_pos = _values(ctx, key, values)
    if positive:
        result = True if any(r is True for r in positive) else (None if open_pos else False)
        text = {
            None: _phrase(key, open_pos, False),
            False: _phrase(key, values, False),
            True: _phrase(key, values, False),
        }
        terms.append((result, text[result]))
    negative, open_neg = _values(ctx, key, not_values)
    if negative:
        hit = True if any(r is True for r in negative) else (None if open_neg else False)
        result = None if hit is None else not hit
        text = {
            None: _phrase(key, open_neg, True),
            False: _phrase(key, not_values, True),
            True: _phrase(key, not_values, True),
        }
        terms.append((result, text[result]))
    return terms


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


def _fields(ctx: _Ctx, body: dict[str, Any], known: tuple[str, ...], kind: str) -> Res:
    terms: list[Res] = []
    for name in known:
        if name.startswith("not"):
            continue
        negation = "not" + name[0].upper() + name[1:]
        terms += _constraint(ctx, name, _strings(body.get(name)), _strings(body.get(negation)))
    for name, raw in body.items():
        if name not in known and _list(raw):
            ctx.needs.append(f"{kind}.{name} (not known to this evaluator)")
            terms.append((None, f"{kind}.{name} matches"))
    return _and(terms)


def _entries(ctx: _Ctx, entries: list[Any], inner: str, known: tuple[str, ...]) -> Res:
    if not entries:
        return True, ""
    results: list[Res] = []
    for entry in entries:
        body = entry.get(inner) if isinstance(entry, dict) else None
        results.append(_fields(ctx, body, known, inner) if isinstance(body, dict) else (True, ""))
    return _or(results)


def _rule_matches(ctx: _Ctx, rule: dict[str, Any]) -> Res:
    """Raises _RuleDropped for an ALLOW rule istiod would skip. Evaluates every part (no short cut)."""
    source = _entries(ctx, _list(rule.get("from")), "source", _SOURCE_FIELDS)
    operation = _entries(ctx, _list(rule.get("to")), "operation", _OPERATION_FIELDS)
    conditions: list[Res] = []
    for condition in _list(rule.get("when")):
        if not isinstance(condition, dict):
            continue
        key = str(condition.get("key") or "")
        conditions += _constraint(ctx, key, _strings(condition.get("values")), _strings(condition.get("notValues")))
    return _and([source, operation, _and(conditions)])


@dataclass
class _Hit:
    policy: dict[str, Any]
    rule: int
    result: Tri
    condition: str  # the residual condition when result is None
    needs: list[str]
    bad_custom: bool = False

    @property
    def ref(self) -> str:
        return f"{_namespace(self.policy)}/{_name(self.policy)}"

    @property
    def envoy(self) -> str:
        name = envoy_policy_name(self.policy, self.rule)
        return name + BAD_CUSTOM_SUFFIX if self.bad_custom else name

    @property
    def what(self) -> str:
        return f"{self.envoy} ({self.ref} rule[{self.rule}], {action(self.policy)})"


def _evaluate_policy(
    ctx: _Ctx, policy: dict[str, Any], dropped: list[str], misses: list[str], bad_custom: bool = False
) -> list[_Hit]:
    """Every rule that matches (True) or may match (None); what each other rule required goes to `misses`."""
    hits: list[_Hit] = []
    for index, rule in enumerate(_rules(policy)):
        if not isinstance(rule, dict):
            continue  # nil rule: istiod skips it
        ctx.needs = []
        try:
            result, condition = _rule_matches(ctx, rule)
        except _RuleDropped as exc:
            dropped.append(f"{_namespace(policy)}/{_name(policy)} rule[{index}] skipped by istiod ({exc})")
            continue
        hit = _Hit(policy, index, result, condition, list(dict.fromkeys(ctx.needs)), bad_custom)
        if result is not False:
            hits.append(hit)
        else:
            misses.append(f"{hit.envoy} requires {condition or 'what this caller is not'}")
    if not _rules(policy) and action(policy) == "ALLOW":
        misses.append(f"{envoy_policy_name(policy, 0)} has no rules: it matches nothing")
    return hits


def _first(hits: list[_Hit]) -> _Hit | None:
    """Envoy's pick among matching policies of one filter: the smallest name (std::map order)."""
    return min(hits, key=lambda h: h.envoy) if hits else None


def _describe(caller: Caller, request: Request) -> str:
    who = caller.principal if caller.principal is not None else "a plaintext caller (no mTLS identity)"
    what = f"{request.protocol.lower()} port {request.port}"
    if request.protocol.lower() == "http" and (request.method or request.path):
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
    extension_providers: tuple[str, ...] | None = None,
) -> Decision:
    """Whether the sidecar of a pod (`namespace`, `labels`) lets `caller` make `request`.

    Istio's order: a matching CUSTOM policy hands the request to its ext-authz provider (which can only
    deny more), then any matching DENY denies, then with no ALLOW policy the request is allowed, then a
    matching ALLOW allows, else it is denied. Dry-run, AUDIT and unsupported actions never decide.

    `extension_providers` are the names in meshConfig.extensionProviders; None when the mesh config
    was not read (then a CUSTOM policy's provider may or may not exist). A CUSTOM policy whose provider
    is missing denies every request its rules match, as istiod generates it.

    The outcome is "depends" when the decision hinges on something `request` leaves unknown; the
    decision then lists the conditions under which the call is allowed and denied."""
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

    unknown: list[str] = []
    dropped: list[str] = []
    allow_misses: list[str] = []
    tcp = protocol == "tcp"

    def hits_of(policies_: list[dict[str, Any]], built_as: str, bad: bool = False) -> list[_Hit]:
        out: list[_Hit] = []
        misses = allow_misses if built_as == "ALLOW" else []
        for policy in policies_:
            ctx = _Ctx(caller, request, tcp, built_as, bundle, _namespace(policy))
            out += _evaluate_policy(ctx, policy, dropped, misses, bad)
        return out

    # CUSTOM: rules are built like DENY rules. A provider missing from the mesh config turns them into
    # DENY rules; several providers without PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS do too.
    providers = sorted({_provider(p) for p in enforced["CUSTOM"]})
    if len(providers) > 1:
        unknown.append(
            f"CUSTOM policies name {len(providers)} ext-authz providers ({', '.join(providers)}); unless istiod "
            "runs with PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS it generates deny rules instead"
        )
    missing_known = extension_providers is not None
    known_providers = set(extension_providers or ())
    bad_custom = [p for p in enforced["CUSTOM"] if missing_known and _provider(p) not in known_providers]
    good_custom = [p for p in enforced["CUSTOM"] if p not in bad_custom]
    custom_hits = hits_of(good_custom, "DENY")
    if custom_hits and not missing_known:
        unknown.append(
            "meshConfig was not read: a CUSTOM provider missing from its extensionProviders would make Istio "
            "deny the requests the CUSTOM rules match instead of asking the provider"
        )
    deny_hits = hits_of(enforced["DENY"], "DENY") + hits_of(bad_custom, "DENY", bad=True)
    allow_hits = hits_of(enforced["ALLOW"], "ALLOW") if enforced["ALLOW"] else []
    scene = _describe(caller, request)

    def decision(outcome: str, act: str, hit: _Hit | None, reason: str, **extra: Any) -> Decision:
        return Decision(
            allowed=outcome == "allow",
            action=act,
            policy=hit.ref if hit else None,
            rule=hit.rule if hit else None,
            envoy_name=hit.envoy if hit else None,
            reason=reason,
            considered=considered,
            unknown=unknown,
            outcome=outcome,
            **extra,
        )

    sure_deny = _first([h for h in deny_hits if h.result is True])
    if sure_deny is not None:
        why = (
            f"CUSTOM policy {sure_deny.ref} names ext-authz provider {_provider(sure_deny.policy)!r}, which is not "
            "in meshConfig.extensionProviders: istiod turns its rules into DENY rules"
            if sure_deny.bad_custom
            else f"DENY policy {sure_deny.ref} rule[{sure_deny.rule}] ({sure_deny.envoy})"
        )
        matched = f"; matched: {sure_deny.condition}" if sure_deny.condition else ""
        return decision(
            "deny", "DENY", sure_deny, f"denied by {why} ({scene}){matched}", condition=sure_deny.condition or None
        )

    maybe_deny = [h for h in deny_hits if h.result is None]
    maybe_custom = [h for h in custom_hits if h.result is None]
    sure_custom = _first([h for h in custom_hits if h.result is True])
    denied_when = [f"{h.what} matches when {h.condition}" for h in maybe_deny]
    denied_when += [
        f"{h.what}: ext-authz provider {_provider(h.policy)!r} is asked (and may deny) when {h.condition}"
        for h in maybe_custom
    ]

    # The DENY-and-ALLOW part, as if no CUSTOM policy existed.
    if not enforced["ALLOW"]:
        base_hit: _Hit | None = None
        base: tuple[str, str] = ("allow", "DEFAULT-ALLOW")
        base_reason = f"allowed: no DENY policy matches and no ALLOW policy applies to the workload ({scene})"
        allowed_when = ["any request no DENY rule matches (no ALLOW policy applies)"] if denied_when else []
    else:
        sure_allow = _first([h for h in allow_hits if h.result is True])
        maybe_allow = [h for h in allow_hits if h.result is None]
        allowed_when = [f"{h.what} matches when {h.condition}" for h in maybe_allow]
        names = ", ".join(f"{_namespace(p)}/{_name(p)}" for p in enforced["ALLOW"])
        if sure_allow is not None:
            base_hit, base = sure_allow, ("allow", "ALLOW")
            base_reason = (
                f"allowed by ALLOW policy {sure_allow.ref} rule[{sure_allow.rule}] ({sure_allow.envoy}) ({scene})"
            ) + (f"; matched: {sure_allow.condition}" if sure_allow.condition else "")
            allowed_when = [f"{sure_allow.what} matches"]
        elif maybe_allow:
            base_hit, base = None, ("depends", "DEPENDS")
            base_reason = ""
        else:
            reason = f"denied: ALLOW policies apply ({names}) but none matches ({scene})"
            if allow_misses:
                reason += "; " + "; ".join(allow_misses[:5]) + ("; ..." if len(allow_misses) > 5 else "")
            if dropped:  # only ALLOW rules are ever dropped
                reason += "; " + "; ".join(dropped)
            condition = "; ".join(allow_misses) or f"no rule of {names} matches"
            return decision("deny", "DEFAULT-DENY", None, reason, condition=condition)
        if maybe_allow or maybe_deny:
            allowed_when.append(f"every other request is denied by default once an ALLOW policy applies ({names})")

    open_hits = [h for h in [*maybe_deny, *maybe_custom, *allow_hits] if h.result is None]
    needs = list(dict.fromkeys(n for h in open_hits for n in h.needs))
    if base[0] == "allow" and not denied_when and sure_custom is None:
        what_matched = (base_hit.condition or None) if base_hit else None
        return decision("allow", base[1], base_hit, base_reason, condition=what_matched)

    if base[0] == "allow" and not denied_when and sure_custom is not None:
        name = _provider(sure_custom.policy) or "(unnamed)"
        tcp_note = " (on a TCP port only a gRPC provider is consulted)" if tcp else ""
        unknown.append(f"{sure_custom.what}: the ext-authz provider {name!r} decides{tcp_note}")
        return decision(
            "depends",
            "CUSTOM",
            sure_custom,
            f"depends on ext-authz provider {name!r}: CUSTOM policy {sure_custom.ref} rule[{sure_custom.rule}] sends "
            f"the request to it, which decides; DENY/ALLOW alone would allow ({base[1]}) ({scene})",
            allowed_when=[f"ext-authz provider {name!r} allows it"],
            denied_when=[f"ext-authz provider {name!r} denies it"],
            depends_on=[f"ext-authz provider {name!r}"],
        )
    if sure_custom is not None:
        name = _provider(sure_custom.policy) or "(unnamed)"
        denied_when.insert(0, f"ext-authz provider {name!r} denies it ({sure_custom.what})")
        needs.insert(0, f"ext-authz provider {name!r}")
    hinge = ", ".join(needs) or "the request"
    return decision(
        "depends",
        "DEPENDS",
        None,
        f"depends on {hinge} ({scene})",
        allowed_when=allowed_when if base[0] != "allow" or allowed_when else [base_reason],
        denied_when=denied_when,
        depends_on=needs,
    )
