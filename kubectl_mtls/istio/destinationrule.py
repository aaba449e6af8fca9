"""Which DestinationRule a client sidecar applies to a service, and the TLS modes it can set.

This follows istiod (pilot/pkg/model/push_context.go, destination_rule.go, sidecar.go and
pilot/pkg/networking/util) rather than the documentation, because the differences matter when a
rule "does nothing":

* Lookup runs in three steps and the first step that knows the host wins, with no merging across
  steps: (1) rules in the client's namespace, (2) rules in the service's namespace exported to the
  client, (3) rules in the root namespace exported to the client. Within a step an exact host beats
  a wildcard, and a longer wildcard beats a shorter one.
* The host is chosen *before* exportTo is checked in steps 2 and 3: if the most specific host among
  that namespace's exported rules is exported to other namespaces but not the client's, that step
  yields nothing, even when a less specific host would be visible.
* Rules for the same host in one step are consolidated: subsets are concatenated (a duplicate name
  keeps the first), the top-level trafficPolicy comes from the oldest rule that has one. Rules whose
  exportTo differ are kept apart (Istio 1.24+ ENABLE_ENHANCED_DESTINATIONRULE_MERGE, on by default),
  as are rules with different workloadSelectors.
* A rule with a workloadSelector applies only to outbound traffic of matching clients in its own
  namespace, sorts before the others and is never exported. Because the host is found before the
  client's labels are looked at, a selector-only rule in the client's namespace leaves a
  non-matching client with *no* DestinationRule at all (the service namespace is not consulted).
* Short hosts resolve in the rule's namespace only when they contain no dot: "reviews" becomes
  "reviews.<ns>.svc.cluster.local", but "reviews.prod" stays "reviews.prod" (istiod's
  ResolveShortnameToFQDN), which then matches no Kubernetes service.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .objects import created as _created
from .objects import name as _name
from .objects import namespace as _namespace
from .objects import spec as _spec

KIND = "DestinationRule"
STEPS = ("client-namespace", "service-namespace", "root-namespace")
PUBLIC, PRIVATE, NONE = "*", ".", "~"


@dataclass
class Selected:
    rules: list[dict[str, Any]]  # the DRs consolidated into the one the client uses, in istiod's order
    step: str  # "client-namespace" | "service-namespace" | "root-namespace"
    host: str  # the DR host that matched, FQDN-expanded


# ---------------------------------------------------------------------------------------------
# readers


def _selector(dr: dict[str, Any]) -> dict[str, str] | None:
    """matchLabels of the workloadSelector, {} for an empty selector, None when there is none.

    An empty `workloadSelector: {}` is still a selector for istiod (GetWorkloadSelector() != nil)."""
    selector = _spec(dr).get("workloadSelector")
    if not isinstance(selector, dict):
        return None
    labels = selector.get("matchLabels")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _order(dr: dict[str, Any]) -> tuple[bool, datetime, str, str]:
    # sortConfigBySelectorAndCreationTime: selector rules first, then oldest, then name, namespace.
    return _selector(dr) is None, _created(dr), _name(dr), _namespace(dr)


def _label(dr: dict[str, Any]) -> str:
    return f"{_namespace(dr)}/{_name(dr)}"


def _is_dr(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("kind") in (None, KIND) and isinstance(_spec(obj).get("host"), str)


def _export_set(dr: dict[str, Any]) -> frozenset[str]:
    if _selector(dr) is not None:
        return frozenset({PRIVATE})  # selector rules are never exported
    raw = _spec(dr).get("exportTo")
    return frozenset(str(e) for e in raw) if isinstance(raw, list) else frozenset()


def _private_only(dr: dict[str, Any], default_export: str) -> bool:
    # Mirrors setDestinationRules: only "." and "*" are honoured as a mesh-wide default.
    export = _export_set(dr)
    if not export:
        return default_export == PRIVATE
    return len(export) == 1 and (PRIVATE in export or _namespace(dr) in export)


def _namespace_local(dr: dict[str, Any]) -> bool:
    # Visible to clients in its own namespace (the "namespaceLocal" index).
    export = _export_set(dr)
    return not export or bool(export & {PUBLIC, PRIVATE, _namespace(dr)})


# ---------------------------------------------------------------------------------------------
# hosts


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def expand_host(host: str, dr_namespace: str, domain: str = "cluster.local") -> str:
    """A DR host as istiod resolves it: only a dot-less short name is qualified with the rule's
    namespace ("reviews" -> "reviews.<ns>.svc.<domain>"); "*", IP addresses and anything containing
    a dot ("reviews.prod", "*.local", FQDNs) are taken literally."""
    if not host or host == "*" or _is_ip(host) or "." in host:
        return host
    out = host
    if dr_namespace:
        out += "." + dr_namespace
    if domain:
        out += ".svc." + domain
    return out


def _wildcard(host: str) -> bool:
    return host.startswith("*")


def host_matches(pattern: str, fqdn: str) -> bool:
    """Whether a DR host pattern covers a service host, as istiod's MostSpecificHostMatch decides.

    Exact names match only themselves; "*.ns.svc.cluster.local" matches by suffix (not the bare
    "ns.svc.cluster.local"); "*" matches everything. A wildcard service host (ServiceEntry) is only
    matched by the same wildcard or a broader one."""
    if not _wildcard(pattern):
        return pattern == fqdn
    if _wildcard(fqdn):
        return pattern == fqdn or fqdn[1:].endswith(pattern[1:])
    return fqdn.endswith(pattern[1:])


# ---------------------------------------------------------------------------------------------
# exportTo and selection


def exported_to(dr: dict[str, Any], client_namespace: str, default_export: str = PUBLIC) -> bool:
    """Whether a client in `client_namespace` can see this DR at all (exportTo, with selector rules
    forced to "." and an empty exportTo meaning the mesh default, where only "." restricts)."""
    own = _namespace(dr)
    export = _export_set(dr)
    if not export:
        return default_export != PRIVATE or client_namespace == own
    if PUBLIC in export or client_namespace in export:
        return True
    return PRIVATE in export and client_namespace == own


@dataclass
class _Consolidated:
    """One entry of istiod's consolidated list for a host: a first rule plus the rules merged into it."""

    members: list[dict[str, Any]]
    export: frozenset[str]
    selector: dict[str, str] | None = field(default=None)


def _consolidate(rules: list[dict[str, Any]]) -> list[_Consolidated]:
    """mergeDestinationRule for the rules of one host, in istiod's order (with enhanced merge on)."""
    entries: list[_Consolidated] = []
    for dr in rules:
        export, selector = _export_set(dr), _selector(dr)
        append_separately = True
        # Same control flow as istiod, including that the flag is overwritten by each existing entry
        # visited, so the last entry looked at decides whether the rule also stands on its own.
        for entry in entries:
            if export == entry.export:
                append_separately = False
            elif entry.export and export > entry.export:
                append_separately = True
            else:
                append_separately = True
                continue
            both_without = selector is None and entry.selector is None
            both_with = selector is not None and entry.selector is not None
            if both_with and selector != entry.selector:
                append_separately = True
                continue
            if both_without or both_with:
                append_separately = False
            entry.members.append(dr)
        if append_separately:
            entries.append(_Consolidated([dr], export, selector))
    return entries


def _pick(entries: list[_Consolidated], client_namespace: str, labels: dict[str, str] | None) -> _Consolidated | None:
    """SidecarScope.DestinationRule for outbound traffic: the first selector entry of the client's
    namespace whose labels match, else the last entry without selector, else nothing."""
    catch_all: _Consolidated | None = None
    for entry in entries:
        if entry.selector is None:
            catch_all = entry
        elif (
            labels is not None
            and _namespace(entry.members[0]) == client_namespace
            and all(k in labels and labels[k] == v for k, v in entry.selector.items())
        ):
            return entry
    return catch_all


class _Pool:
    """The rules one lookup step may see, by host: exact hosts by name, wildcards by suffix."""

    def __init__(self, rules: list[dict[str, Any]], hosts: dict[int, str]) -> None:
        self.by_host: dict[str, list[dict[str, Any]]] = {}
        for dr in rules:
            self.by_host.setdefault(hosts[id(dr)], []).append(dr)
        self._consolidated: dict[str, list[_Consolidated]] = {}
        # How long the suffixes after the "*" of this pool's wildcards are, longest first: a lookup
        # tries only these lengths, not every suffix of the name (the other patterns are not here).
        self.wildcard_lengths = sorted({len(host) - 1 for host in self.by_host if _wildcard(host)}, reverse=True)

    def wildcards_covering(self, fqdn: str) -> list[str]:
        """This pool's wildcards that cover `fqdn`, the most specific first: "*X" covers it exactly
        when X is a suffix of it (of the name after "*" for a wildcard service host)."""
        name = fqdn[1:] if _wildcard(fqdn) else fqdn
        patterns = ("*" + name[len(name) - length :] for length in self.wildcard_lengths if length <= len(name))
        return [pattern for pattern in patterns if pattern in self.by_host]

    def best_host(self, fqdn: str) -> str | None:
        """MostSpecificHostMatch: the exact host (or, for a wildcard service host, the identical
        wildcard), else the longest wildcard covering `fqdn`. Found by lookups, not by a scan: a
        wildcard "*X" covers `fqdn` exactly when X is a suffix of it (of the name after "*" for a
        wildcard service host), and matching wildcards are suffixes of one name, so the longest is
        the most specific."""
        if fqdn in self.by_host:
            return fqdn
        if not self.wildcard_lengths:
            return None
        covering = self.wildcards_covering(fqdn)
        return covering[0] if covering else None

    def consolidated(self, host: str) -> list[_Consolidated]:
        if host not in self._consolidated:
            self._consolidated[host] = _consolidate(self.by_host[host])
        return self._consolidated[host]


class Index:
    """Every DestinationRule sorted once (istiod's order) into the pools each lookup step reads, per
    namespace and host, so that `select` costs the same with ten rules or ten thousand. Answers are
    exactly those of a scan of the whole list."""

    def __init__(
        self,
        rules: list[dict[str, Any]],
        root_namespace: str = "istio-system",
        *,
        default_export: str = PUBLIC,
        domain: str = "cluster.local",
    ) -> None:
        self.root_namespace = root_namespace
        ordered = sorted((r for r in rules if _is_dr(r)), key=_order)
        hosts = {id(dr): expand_host(str(_spec(dr)["host"]), _namespace(dr), domain) for dr in ordered}
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for dr in ordered:
            by_namespace.setdefault(_namespace(dr), []).append(dr)
        self._local = {
            ns: _Pool([dr for dr in group if _namespace_local(dr)], hosts) for ns, group in by_namespace.items()
        }
        self._exported = {
            ns: _Pool([dr for dr in group if not _private_only(dr, default_export)], hosts)
            for ns, group in by_namespace.items()
        }
        root_rules = by_namespace.get(root_namespace, [])
        self._root_private = _Pool([dr for dr in root_rules if _private_only(dr, default_export)], hosts)
        self._all = _Pool(ordered, hosts)
        self._empty = _Pool([], hosts)

    def select(
        self,
        fqdn: str,
        client_namespace: str,
        service_namespace: str,
        client_labels: dict[str, str] | None = None,
    ) -> Selected | None:
        """The DestinationRule(s) a client in `client_namespace` applies to service host `fqdn` (see
        the module-level `select`)."""

        def lookup(pool: _Pool, step: str, exported: bool) -> tuple[bool, Selected | None]:
            best = pool.best_host(fqdn)
            if best is None:
                return False, None
            entries = pool.consolidated(best)
            if exported:
                # getExportedDestinationRuleFromNamespace filters after picking the host.
                entries = [e for e in entries if not e.export or PUBLIC in e.export or client_namespace in e.export]
                if not entries:
                    return False, None
            chosen = _pick(entries, client_namespace, client_labels)
            return True, (Selected(list(chosen.members), step, best) if chosen else None)

        root = self.root_namespace
        if client_namespace != root:
            found, selected = lookup(self._local.get(client_namespace, self._empty), STEPS[0], False)
        else:
            # A root-namespace client first sees only the root rules private to it; the exported root
            # rules come last, after the service namespace.
            found, selected = lookup(self._root_private, STEPS[0], False)
        if found:
            return selected
        for ns, step in ((service_namespace, STEPS[1]), (root, STEPS[2])):
            if not ns:
                continue
            found, selected = lookup(self._exported.get(ns, self._empty), step, True)
            if found:
                return selected
        return None

    def namespaces_of_note(self, fqdn: str) -> set[str]:
        """Namespaces that hold, or are named in the exportTo of, a rule whose host covers `fqdn`.

        A client in any other namespace (apart from the root and the service's own) gets the same
        answer from `select` as every other such namespace, so one lookup stands for all of them."""
        patterns = [fqdn, *self._all.wildcards_covering(fqdn)]
        out: set[str] = set()
        for pattern in patterns:
            for dr in self._all.by_host.get(pattern, ()):
                out.add(_namespace(dr))
                out.update(_export_set(dr))
        return out


    def for_service(self, fqdn: str, service_namespace: str) -> ClientAnswers:
        """`select` for one service host from every client namespace, each distinct answer once."""
        return ClientAnswers(self, fqdn, service_namespace)


class ClientAnswers:
    """The rule each client namespace applies to one service host (client labels unknown). Looked up
    once per namespace of note (see Index.namespaces_of_note, plus the root and the service's own
    namespace) and once for all the other namespaces, which share one answer."""

    def __init__(self, index: Index, fqdn: str, service_namespace: str) -> None:
        self.index, self.fqdn, self.service_namespace = index, fqdn, service_namespace
        self.noted = index.namespaces_of_note(fqdn) | {index.root_namespace, service_namespace}
        self._answers: dict[str | None, Selected | None] = {}

    def of(self, client_namespace: str) -> Selected | None:
        key = client_namespace if client_namespace in self.noted else None
        if key not in self._answers:
            self._answers[key] = self.index.select(self.fqdn, client_namespace, self.service_namespace)
        return self._answers[key]

    def distinct(self, client_namespaces: list[str]) -> list[str]:
        """The namespaces of note among `client_namespaces`, and the first of the others (in the order
        given): the others would only repeat its answer."""
        first_other = next((ns for ns in client_namespaces if ns not in self.noted), None)
        return [ns for ns in client_namespaces if ns in self.noted or ns == first_other]


def select(
    rules: list[dict[str, Any]],
    fqdn: str,
    client_namespace: str,
    service_namespace: str,
    root_namespace: str = "istio-system",
    client_labels: dict[str, str] | None = None,
    *,
    default_export: str = PUBLIC,
    domain: str = "cluster.local",
) -> Selected | None:
    """The DestinationRule(s) a client in `client_namespace` applies to service host `fqdn`.

    `client_labels=None` means the labels are unknown: selector rules are then treated as not
    matching. None is returned when no rule applies (Istio's autoMtls/defaults hold). For many
    lookups, build one `Index` and ask it instead: this builds one per call."""
    index = Index(rules, root_namespace, default_export=default_export, domain=domain)
    return index.select(fqdn, client_namespace, service_namespace, client_labels)


# ---------------------------------------------------------------------------------------------
# TLS


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _port_settings(policy: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """portLevelSettings as (service port number, entry); entries without a usable number are skipped."""
    raw = policy.get("portLevelSettings")
    out: list[tuple[int, dict[str, Any]]] = []
    for entry in raw if isinstance(raw, list) else []:
        selector = _dict(entry.get("port")) if isinstance(entry, dict) else None
        number = selector.get("number") if selector else None
        if isinstance(number, bool) or not isinstance(number, int | str):
            continue
        try:
            out.append((int(number), entry))
        except ValueError:
            continue
    return out


def _port_entry(policy: dict[str, Any], port: int) -> dict[str, Any] | None:
    # istiod takes the first entry whose number equals the port.
    return next((entry for number, entry in _port_settings(policy) if number == port), None)


def _policy_tls(policy: dict[str, Any], port: int | None, path: str) -> tuple[bool, dict[str, Any] | None, str]:
    """(replaced, tls, where) for one trafficPolicy and service port.

    A portLevelSettings entry for the port replaces the policy wholesale, so its tls (possibly
    absent, meaning autoMtls) is the answer and `replaced` is True."""
    if port is not None:
        entry = _port_entry(policy, port)
        if entry is not None:
            return True, _dict(entry.get("tls")), f"{path}.portLevelSettings[port={port}]"
    return False, _dict(policy.get("tls")), f"{path}.tls"


def _explicit(tls: dict[str, Any] | None, where: str) -> tuple[str, str] | None:
    if tls is None:
        return None  # no tls block: autoMtls decides, not the rule
    mode = tls.get("mode")
    if isinstance(mode, str) and mode:
        return mode, where
    # A tls block without mode is DISABLE: it is the proto enum's zero value, and istiod then treats
    # the settings as user supplied, so autoMtls does not step in.
    return "DISABLE", f"{where} (mode unset: DISABLE)"


def _ports_in(policies: Iterable[dict[str, Any]]) -> list[int]:
    return sorted({number for policy in policies for number, _ in _port_settings(policy)})


def tls_modes(selected: Selected, port: int | None) -> list[tuple[str, str]]:
    """Every explicit TLS mode the chosen rule(s) give traffic to this *service* port, with its source.

    Covers the default cluster and every subset cluster, merged as istiod does
    (util.MergeSubsetTrafficPolicy): a portLevelSettings entry replaces its policy, a subset policy
    overrides the destination policy, and a subset's port entry replaces both. An entry without tls
    means autoMtls and contributes nothing. With `port=None` (port unknown) the modes of every port
    any portLevelSettings names are included as well as the port-less policy."""
    rules = selected.rules
    owner = next((dr for dr in rules if _dict(_spec(dr).get("trafficPolicy")) is not None), None)
    top = _dict(_spec(owner).get("trafficPolicy")) if owner else None

    subsets: list[tuple[dict[str, Any], str, dict[str, Any]]] = []  # (rule, subset name, subset policy)
    seen: set[str] = set()
    for dr in rules:
        raw = _spec(dr).get("subsets")
        for subset in raw if isinstance(raw, list) else []:
            if not isinstance(subset, dict):
                continue
            name = str(subset.get("name") or "")
            if name in seen:
                continue  # istiod keeps the first subset of a name
            seen.add(name)
            policy = _dict(subset.get("trafficPolicy"))
            if policy is not None:
                subsets.append((dr, name, policy))

    if port is None:
        policies = [p for p in [top, *(s[2] for s in subsets)] if p is not None]
        ports: list[int | None] = [None, *_ports_in(policies)]
    else:
        ports = [port]

    out: list[tuple[str, str]] = []
    for each in ports:
        if top is not None and owner is not None:
            _, tls, where = _policy_tls(top, each, "trafficPolicy")
            found = _explicit(tls, f"{_label(owner)}: {where}")
            if found:
                out.append(found)
        for dr, name, policy in subsets:
            replaced, tls, where = _policy_tls(policy, each, f"subsets[{name}].trafficPolicy")
            if not replaced and tls is None:
                continue  # inherits the destination-level TLS, already listed above
            found = _explicit(tls, f"{_label(dr)}: {where}")
            if found:
                out.append(found)
    return list(dict.fromkeys(out))
