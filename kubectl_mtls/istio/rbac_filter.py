"""What a sidecar's own RBAC filters decide for one caller and request: Envoy's RBAC semantics
(envoy/extensions/filters/{http,network}/rbac, envoy/config/rbac/v3) over the filters read from its
config dump (normalize.rbac). This is the evidence `check pair` sets against the policies' evaluation
(istio.authz): when the two disagree, the sidecar does not enforce what the policies say (drift).

Filters run in chain order: an enforcing ALLOW filter denies unless one of its policies matches, a DENY
filter denies when one matches, LOG and shadow-only filters never decide, and an ext_authz filter
hands the request to its provider when the CUSTOM shadow rules before it match. A policy matches when
one permission and one principal match. What the request does not say is unknown, and a decision
that hinges on it is "depends"."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from ..normalize.keys import field as pfield
from ..normalize.keys import items, obj
from .authz import Caller, Request, Tri

CUSTOM_PREFIX = "istio-ext-authz"
PEER_PRINCIPAL_KEY = "io.istio.peer_principal"
_SPIFFE = "spiffe://"


@dataclass
class Enforced:
    outcome: str  # "allow" | "deny" | "depends"
    policy: str | None  # the Envoy policy name that decided: a matching DENY or ALLOW policy
    action: str | None  # the deciding filter's action: "ALLOW" | "DENY" | "EXT_AUTHZ" | None
    reason: str
    chain: str | None = None
    filters: list[str] = field(default_factory=list)  # "<name> <action> (<n> policies)" in chain order


class _Eval:
    def __init__(self, caller: Caller, request: Request) -> None:
        self.caller = caller
        self.request = request
        self.http = request.protocol.lower() == "http"

    # --- values of the request ---------------------------------------------------------------

    def peer(self) -> str | None:
        principal = self.caller.principal
        if principal is None:
            return None
        return principal if principal.startswith(_SPIFFE) else _SPIFFE + principal

    def header(self, name: str) -> str | bool | None:
        """Joined header value; None when absent; False when not known."""
        lower = name.lower()
        req = self.request
        if not self.http:
            return None
        if lower == ":method":
            return req.method if req.method is not None else False
        if lower == ":path":
            return req.path if req.path is not None else False
        if lower in (":authority", "host"):
            return req.host if req.host is not None else False
        if lower == ":scheme":
            return "http"
        if req.headers is None:
            return False
        values = [v for k, v in req.headers if k.lower() == lower]
        return ",".join(values) if values else None

    def remote_ip(self) -> str | bool | None:
        if self.http:
            xff = self.header("x-forwarded-for")
            if xff is False:
                return False
            if isinstance(xff, str):
                return xff.split(",")[-1].strip()
        return self.caller.ip

    # --- matchers ----------------------------------------------------------------------------

    def string(self, matcher: Any, value: str) -> bool:
        if not isinstance(matcher, dict):
            return False
        ignore = pfield(matcher, "ignore_case") is True
        subject = value.lower() if ignore else value

        def norm(x: Any) -> str:
            return str(x).lower() if ignore else str(x)

        for key in ("exact", "prefix", "suffix", "contains"):
            want = pfield(matcher, key)
            if want is not None:
                if key == "exact":
                    return subject == norm(want)
                if key == "prefix":
                    return subject.startswith(norm(want))
                if key == "suffix":
                    return subject.endswith(norm(want))
                return norm(want) in subject
        regex = pfield(obj(matcher, "safe_regex"), "regex")
        if isinstance(regex, str):
            return _fullmatch(regex, value)
        return False

    def cidr(self, block: Any, address: str | bool | None) -> Tri:
        if address is False or address is None:
            return None
        prefix = pfield(block, "address_prefix")
        length = pfield(block, "prefix_len")
        try:
            length = int(length) if length is not None else None
            network = ipaddress.ip_network(f"{prefix}/{length}" if length is not None else str(prefix), strict=False)
            ip = ipaddress.ip_address(str(address))
        except (TypeError, ValueError):
            return None
        return ip.version == network.version and ip in network

    def header_matcher(self, matcher: Any) -> Tri:
        name = pfield(matcher, "name")
        if not isinstance(name, str):
            return None
        found = self.header(name)
        if found is False or found is True:
            return None
        invert = pfield(matcher, "invert_match") is True
        if found is None:
            absent = pfield(matcher, "present_match") is False
            return not absent if invert else absent
        value: str = found
        result: bool
        if pfield(matcher, "present_match") is not None:
            result = pfield(matcher, "present_match") is True
        elif pfield(matcher, "string_match") is not None:
            result = self.string(pfield(matcher, "string_match"), value)
        elif pfield(matcher, "exact_match") is not None:
            result = value == pfield(matcher, "exact_match")
        elif pfield(matcher, "prefix_match") is not None:
            result = value.startswith(str(pfield(matcher, "prefix_match")))
        elif pfield(matcher, "suffix_match") is not None:
            result = value.endswith(str(pfield(matcher, "suffix_match")))
        elif pfield(matcher, "contains_match") is not None:
            result = str(pfield(matcher, "contains_match")) in value
        elif isinstance(pfield(obj(matcher, "safe_regex_match"), "regex"), str):
            result = _fullmatch(pfield(obj(matcher, "safe_regex_match"), "regex"), value)
        else:
            return None
        return not result if invert else result

    def path(self, matcher: Any) -> Tri:
        if not self.http:
            return False
        if self.request.path is None:
            return None
        path = self.request.path.split("?", 1)[0].split("#", 1)[0]
        return self.string(pfield(matcher, "path"), path)

    def uri_template(self, config: Any) -> Tri:
        template = pfield(obj(config, "typed_config"), "path_template")
        if not isinstance(template, str) or not self.http:
            return None if self.http else False
        if self.request.path is None:
            return None
        seg = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]"
        regex = ""
        for piece in re.split(r"(\*\*|\*)", template):
            regex += f"(?:{seg}|/)*" if piece == "**" else f"{seg}+" if piece == "*" else re.escape(piece)
        return re.fullmatch(regex, self.request.path.split("?", 1)[0]) is not None

    def metadata(self, matcher: Any) -> Tri:
        if pfield(matcher, "filter") != "istio_authn":
            return None  # other filters' dynamic metadata is not known
        if not self.http:
            return False
        if not self.request.jwt_known:
            return None
        struct = _authn_metadata(self.request.jwt)
        value: Any = struct
        for step in items(matcher, "path"):
            key = pfield(step, "key")
            value = value.get(key) if isinstance(value, dict) else None
        result = value is not None and self.value(pfield(matcher, "value"), value)
        return not result if pfield(matcher, "invert") is True else result

    def value(self, matcher: Any, value: Any) -> bool:
        if not isinstance(matcher, dict):
            return False
        if pfield(matcher, "present_match") is not None:
            return value is not None
        if pfield(matcher, "string_match") is not None:
            values = value if isinstance(value, list) else [value]
            return any(isinstance(v, str) and self.string(pfield(matcher, "string_match"), v) for v in values)
        if pfield(matcher, "list_match") is not None:
            one_of = pfield(obj(matcher, "list_match"), "one_of")
            return isinstance(value, list) and any(self.value(one_of, v) for v in value)
        if pfield(matcher, "or_match") is not None:
            return any(self.value(m, value) for m in items(obj(matcher, "or_match"), "value_matchers"))
        return False

    def permission(self, rule: Any) -> Tri:
        if not isinstance(rule, dict):
            return None
        if pfield(rule, "any") is True:
            return True
        if pfield(rule, "and_rules") is not None:
            return _all([self.permission(r) for r in items(obj(rule, "and_rules"), "rules")])
        if pfield(rule, "or_rules") is not None:
            return _any([self.permission(r) for r in items(obj(rule, "or_rules"), "rules")])
        if pfield(rule, "not_rule") is not None:
            return _not(self.permission(pfield(rule, "not_rule")))
        if pfield(rule, "header") is not None:
            return self.header_matcher(pfield(rule, "header")) if self.http else False
        if pfield(rule, "url_path") is not None:
            return self.path(pfield(rule, "url_path"))
        if pfield(rule, "uri_template") is not None:
            return self.uri_template(pfield(rule, "uri_template"))
        if pfield(rule, "destination_port") is not None:
            return int(pfield(rule, "destination_port")) == self.request.port
        if pfield(rule, "destination_port_range") is not None:
            span = obj(rule, "destination_port_range")
            return int(pfield(span, "start", 0)) <= self.request.port < int(pfield(span, "end", 0))
        if pfield(rule, "destination_ip") is not None:
            return self.cidr(pfield(rule, "destination_ip"), self.request.destination_ip)
        if pfield(rule, "requested_server_name") is not None:
            if self.peer() is None:
                return self.string(pfield(rule, "requested_server_name"), "")
            sni = self.request.sni
            return None if sni is None else self.string(pfield(rule, "requested_server_name"), sni)
        if pfield(rule, "metadata") is not None:
            return self.metadata(pfield(rule, "metadata"))
        return None

    def principal(self, rule: Any) -> Tri:
        if not isinstance(rule, dict):
            return None
        if pfield(rule, "any") is True:
            return True
        if pfield(rule, "and_ids") is not None:
            return _all([self.principal(r) for r in items(obj(rule, "and_ids"), "ids")])
        if pfield(rule, "or_ids") is not None:
            return _any([self.principal(r) for r in items(obj(rule, "or_ids"), "ids")])
        if pfield(rule, "not_id") is not None:
            return _not(self.principal(pfield(rule, "not_id")))
        if pfield(rule, "authenticated") is not None:
            peer = self.peer()
            if peer is None:
                return False
            name = pfield(obj(rule, "authenticated"), "principal_name")
            return True if name is None else self.string(name, peer)
        if pfield(rule, "direct_remote_ip") is not None or pfield(rule, "source_ip") is not None:
            block = pfield(rule, "direct_remote_ip") or pfield(rule, "source_ip")
            return self.cidr(block, self.caller.ip)
        if pfield(rule, "remote_ip") is not None:
            return self.cidr(pfield(rule, "remote_ip"), self.remote_ip())
        if pfield(rule, "header") is not None:
            return self.header_matcher(pfield(rule, "header")) if self.http else False
        if pfield(rule, "url_path") is not None:
            return self.path(pfield(rule, "url_path"))
        if pfield(rule, "metadata") is not None:
            return self.metadata(pfield(rule, "metadata"))
        if pfield(rule, "filter_state") is not None:
            # Istio's newer sidecars match the peer identity in filter state instead of `authenticated`.
            state = obj(rule, "filter_state")
            if pfield(state, "key") != PEER_PRINCIPAL_KEY:
                return None
            peer = self.peer()
            return False if peer is None else self.string(pfield(state, "string_match"), peer)
        return None  # newer matchers: not known here

    def policy(self, body: Any) -> Tri:
        try:
            permissions = [self.permission(p) for p in items(body, "permissions")]
            principals = [self.principal(p) for p in items(body, "principals")]
        except _UnsafeRegex:
            return None  # not evaluated here rather than risk a hang: the policy may match
        return _all([_any(permissions), _any(principals)])


def _authn_metadata(claims: dict[str, Any] | None) -> dict[str, Any]:
    """The `istio_authn` dynamic metadata for a request with these (accepted) JWT claims."""
    if not claims:
        return {}
    listed = {k: ([v] if isinstance(v, str) else v) for k, v in claims.items()}
    out: dict[str, Any] = {"request.auth.claims": listed}
    iss, sub = claims.get("iss"), claims.get("sub")
    if isinstance(iss, str) and isinstance(sub, str):
        out["request.auth.principal"] = f"{iss}/{sub}"
    if "aud" in claims:
        out["request.auth.audiences"] = listed["aud"]
    if isinstance(claims.get("azp"), str):
        out["request.auth.presenter"] = claims["azp"]
    return out


class _UnsafeRegex(Exception):
    """A regex Python's backtracking engine could take exponential time on (Envoy uses RE2, which cannot)."""


# A group holding a quantifier, itself repeated: `(a+)+`, `(x*y)*`, `(a|b+){2,}`.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)[+*{]")
_MAX_REGEX = 4096
_MAX_SUBJECT = 16384


_MAX_WILDCARDS = 6  # `.*`/`.+` per alternative: Istio writes at most 3; many make backtracking polynomial-deep


def _fullmatch(regex: str, value: str) -> bool:
    unsafe = len(regex) > _MAX_REGEX or len(value) > _MAX_SUBJECT or _NESTED_QUANTIFIER.search(regex)
    if unsafe or any(part.count(".*") + part.count(".+") > _MAX_WILDCARDS for part in regex.split("|")):
        raise _UnsafeRegex(regex[:80])
    try:
        return re.fullmatch(regex, value, re.DOTALL) is not None
    except re.error:
        return False


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


def pick_chain(chains: list[dict[str, Any]], protocol: str) -> dict[str, Any] | None:
    """The chain a caller of this protocol meets on the port (the catch-all splits HTTP from TCP)."""
    same = [c for c in chains if c.get("protocol") == protocol.lower()]
    chosen = same or chains
    return chosen[0] if chosen else None


def enforce(chain: dict[str, Any], caller: Caller, request: Request) -> Enforced:
    """What the chain's authorization filters do with this caller and request."""
    ev = _Eval(caller, request)
    pending: list[str] = []  # filters that may deny, or a provider that decides
    custom_may_match: Tri = False
    allowed_by: str | None = None  # the ALLOW policy that let it through, as Envoy reports the first match
    seen: list[str] = []
    name_of = chain.get("chain") or None
    for item in chain.get("filters") or []:
        config = item.get("config") or {}
        if item.get("kind") == "ext_authz":
            seen.append(f"{item.get('name')}")
            if custom_may_match is True:
                return Enforced("depends", None, "EXT_AUTHZ", "the ext-authz provider decides", name_of, seen)
            if custom_may_match is None:
                pending.append("the ext-authz provider may be asked")
            continue
        shadow = pfield(config, "shadow_rules")
        if isinstance(shadow, dict):
            policies = pfield(shadow, "policies") or {}
            custom = [ev.policy(body) for name, body in policies.items() if str(name).startswith(CUSTOM_PREFIX)]
            if custom:
                custom_may_match = _any(custom)
        rules = pfield(config, "rules")
        if not isinstance(rules, dict):
            seen.append(f"{item.get('name')} shadow only")
            continue
        act = str(pfield(rules, "action") or "ALLOW")
        policies = pfield(rules, "policies") or {}
        seen.append(f"{item.get('name')} {act} ({len(policies)} policies)")
        if act not in ("ALLOW", "DENY"):
            continue  # LOG: audit only
        results = {str(name): ev.policy(body) for name, body in policies.items()}
        sure = sorted(name for name, r in results.items() if r is True)
        maybe = sorted(name for name, r in results.items() if r is None)
        if act == "DENY":
            if sure:
                return Enforced("deny", sure[0], "DENY", f"the sidecar's DENY policy {sure[0]} matches", name_of, seen)
            pending += [f"DENY policy {m} may match" for m in maybe]
            continue
        if sure:
            allowed_by = allowed_by or sure[0]
            continue
        if maybe:
            pending += [f"ALLOW policy {m} may match" for m in maybe]
            continue
        why = (
            "no policy of the sidecar's ALLOW filter matches"
            if policies
            else "the sidecar's ALLOW filter has no policies: it denies everything"
        )
        return Enforced("deny", None, "ALLOW", why, name_of, seen)
    if pending:
        return Enforced("depends", None, None, "; ".join(pending), name_of, seen)
    why = f"the sidecar's ALLOW policy {allowed_by} matches" if allowed_by else "no authorization filter denies it"
    return Enforced("allow", allowed_by, "ALLOW" if allowed_by else None, why, name_of, seen)
