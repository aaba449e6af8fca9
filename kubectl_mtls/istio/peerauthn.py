"""Effective PeerAuthentication for a workload, computed the way istiod computes it.

istiod keeps at most one mesh-level policy (root namespace, no selector) and one namespace-level
policy per namespace, the oldest by `creationTimestamp`; for a pod it also picks the oldest
workload-level policy whose selector matches the pod's labels. It then starts from PERMISSIVE and
lets mesh, namespace and workload policy override the mode in that order, skipping any policy whose
mode is missing or UNSET. Port-level modes come only from the chosen workload policy and are keyed
by the pod's *target* port. A PeerAuthentication with a selector in the root namespace is ignored.

`ignored` records every policy that a reader would expect to count but that Istio drops, with the
reason in words, because "my policy has no effect" is one of the commonest mTLS surprises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..labelindex import SelectorIndex
from .objects import created as _created
from .objects import meta as _meta
from .objects import name as _name
from .objects import namespace as _namespace
from .objects import spec as _spec

Mode = str  # "STRICT" | "PERMISSIVE" | "DISABLE"

# Ordering used to compare how strongly a mode protects a port (DISABLE < PERMISSIVE < STRICT).
STRENGTH: dict[str, int] = {"DISABLE": 0, "PERMISSIVE": 1, "STRICT": 2}
DEFAULT_MODE: Mode = "PERMISSIVE"
KIND = "PeerAuthentication"

# The zero time.Time istiod would see for an object without creationTimestamp: older than anything.


@dataclass(frozen=True)
class PolicyRef:
    namespace: str
    name: str
    scope: str  # "mesh" | "namespace" | "workload"
    mode: str | None  # the policy's own top-level spec.mtls.mode; None when missing or UNSET

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Effective:
    mode: Mode = DEFAULT_MODE  # workload-level effective mode
    ports: dict[int, Mode] = field(default_factory=dict)  # target port -> mode set by the workload policy
    applied: list[PolicyRef] = field(default_factory=list)  # chosen mesh, namespace, workload policies
    decided_by: PolicyRef | None = None  # None: nothing set a mode, Istio's PERMISSIVE default holds
    port_decided_by: dict[int, PolicyRef] = field(default_factory=dict)
    ignored: list[tuple[PolicyRef, str]] = field(default_factory=list)

    def mode_for(self, port: int | None) -> Mode:
        """The mode on one target port; `None` (port unknown) gives the workload-level mode."""
        if port is None:
            return self.mode
        return self.ports.get(port, self.mode)


# ---------------------------------------------------------------------------------------------
# small readers of the Kubernetes JSON; tolerant of missing or null fields like the API itself


def _age_order(obj: dict[str, Any]) -> tuple[datetime, str, str]:
    # istiod sorts by creationTimestamp, then name, then namespace (sortConfigByCreationTime); the
    # timestamp has one-second granularity, so ties are common and the name decides.
    return _created(obj), _name(obj), _namespace(obj)


def _is_pa(obj: dict[str, Any]) -> bool:
    kind = obj.get("kind")
    return kind is None or kind == KIND


def _match_labels(policy: dict[str, Any]) -> dict[str, str]:
    selector = _spec(policy).get("selector")
    if not isinstance(selector, dict):
        return {}
    labels = selector.get("matchLabels")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    # Istio's labels.Instance.SubsetOf: every selector key present with the same value.
    return all(key in labels and labels[key] == value for key, value in selector.items())


def _mode(mtls: Any) -> str | None:
    """A mode that takes effect, or None for a missing block, UNSET, or a value istiod would not know."""
    if not isinstance(mtls, dict):
        return None
    mode = mtls.get("mode")
    return mode if isinstance(mode, str) and mode in STRENGTH else None


def _port_level(policy: dict[str, Any]) -> dict[int, str | None]:
    """portLevelMtls as {target port: mode or None for UNSET}; JSON map keys are strings."""
    raw = _spec(policy).get("portLevelMtls")
    if not isinstance(raw, dict):
        return {}
    out: dict[int, str | None] = {}
    for key, value in raw.items():
        try:
            port = int(key)
        except (TypeError, ValueError):
            continue  # the CRD only allows numbers; skip garbage rather than fail the whole check
        out[port] = _mode(value)
    return out


def _ref(policy: dict[str, Any], scope: str) -> PolicyRef:
    return PolicyRef(_namespace(policy), _name(policy), scope, _mode(_spec(policy).get("mtls")))


# ---------------------------------------------------------------------------------------------


def scope_of(policy: dict[str, Any], root_namespace: str) -> str | None:
    """ "mesh", "namespace" or "workload"; None for a root-namespace policy with a selector (ignored).

    Like istiod, a selector with empty matchLabels counts as no selector.
    """
    in_root = _namespace(policy) == root_namespace
    if not _match_labels(policy):
        return "mesh" if in_root else "namespace"
    return None if in_root else "workload"


def _describe_created(obj: dict[str, Any]) -> str:
    raw = _meta(obj).get("creationTimestamp")
    return str(raw) if raw else "no creationTimestamp"


def _duplicate_reason(loser: dict[str, Any], winner: dict[str, Any], scope: str) -> str:
    other = f"{_namespace(winner)}/{_name(winner)}"
    if _created(loser) == _created(winner):
        # Same namespace in every scope, so on a timestamp tie the name decides.
        why = f"same creationTimestamp ({_describe_created(winner)}) and {other} sorts first by name"
    else:
        why = f"{other} is older ({_describe_created(winner)} vs {_describe_created(loser)})"
    return f"another {scope}-level PeerAuthentication wins: {why}; Istio uses only the oldest one"


class Index:
    """Every PeerAuthentication sorted once into the buckets istiod keeps: mesh level, namespace level
    per namespace, workload level by namespace and selector label, and the root-namespace selector
    policies it drops. `effective` then costs what the pod's own candidates cost, not the mesh's
    policy count; answers are exactly those of a scan of the whole list in its order."""

    def __init__(self, policies: list[dict[str, Any]], root_namespace: str = "istio-system") -> None:
        self.root_namespace = root_namespace
        mesh: list[dict[str, Any]] = []
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        workload: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        dropped: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        for policy in policies:
            if not isinstance(policy, dict) or not _is_pa(policy):
                continue
            scope = scope_of(policy, root_namespace)
            if scope == "mesh":
                mesh.append(policy)
            elif scope == "namespace":
                by_namespace.setdefault(_namespace(policy), []).append(policy)
            elif scope == "workload":
                workload.append((_namespace(policy), _match_labels(policy), policy))
            else:
                dropped.append(("", _match_labels(policy), policy))
        # sorted() is stable, so policies that tie on age keep their order in the list, as in a scan.
        self._mesh = _Level(sorted(mesh, key=_age_order), "mesh")
        self._namespaces = {
            ns: _Level(sorted(group, key=_age_order), "namespace") for ns, group in by_namespace.items()
        }
        self._workload = SelectorIndex(workload)
        self._dropped = SelectorIndex(dropped)
        # Answers by namespace and the policies that match: the pods of one workload share one, and the
        # policies it names live as long as the index, so their ids stay theirs. The replicas of a
        # workload have the same labels too: those find it without matching again.
        self._answers: dict[tuple[str, tuple[int, ...], tuple[int, ...]], Effective] = {}
        self._by_labels: dict[tuple[str, tuple[tuple[str, str], ...]], Effective] = {}

    def effective(self, namespace: str, labels: dict[str, str]) -> Effective:
        """The inbound mTLS mode of a pod in `namespace` with `labels`, and which policies decide it.
        Pods with the same matching policies get the same answer object: read it, never change it."""
        labels = _string_labels(labels)
        asked = (namespace, tuple(labels.items()))
        known = self._by_labels.get(asked)
        if known is None:
            known = self._by_labels[asked] = self._matched(namespace, labels)
        return known

    def _matched(self, namespace: str, labels: dict[str, str]) -> Effective:
        dropped = self._dropped.matching("", labels)
        workload = self._workload.matching(namespace, labels)
        key = (namespace, tuple(map(id, dropped)), tuple(map(id, workload)))
        answer = self._answers.get(key)
        if answer is None:
            answer = self._answers[key] = self._effective(namespace, dropped, workload)
        return answer

    def _effective(
        self, namespace: str, dropped: list[dict[str, Any]], workload: list[dict[str, Any]]
    ) -> Effective:
        result = Effective()
        for policy in dropped:
            # Matches the pod but sits in the root namespace: istiod drops it (istioctl x describe
            # still lists it as applied, which is why this needs saying).
            result.ignored.append(
                (
                    _ref(policy, "workload"),
                    f"has a selector but is in the root namespace {self.root_namespace}: Istio ignores selector "
                    "policies there; put it in the workload's namespace",
                )
            )
        levels = (
            self._mesh,
            self._namespaces.get(namespace),
            _Level(sorted(workload, key=_age_order), "workload") if workload else None,
        )
        chosen: list[tuple[dict[str, Any], PolicyRef]] = []
        for level in levels:
            if level is None or level.winner is None or level.ref is None:
                continue
            chosen.append((level.winner, level.ref))
            result.ignored.extend(level.losers)
        _compose(result, chosen)
        return result


class _Level:
    """One level's candidates, oldest first: the winner istiod uses and why each other one is ignored."""

    def __init__(self, group: list[dict[str, Any]], scope: str) -> None:
        self.winner = group[0] if group else None
        self.ref = _ref(group[0], scope) if group else None
        self._group = group
        self._scope = scope
        self._losers: list[tuple[PolicyRef, str]] | None = None

    @property
    def losers(self) -> list[tuple[PolicyRef, str]]:
        if self._losers is None:  # computed on first use, then shared by every pod of the level
            self._losers = [
                (_ref(loser, self._scope), _duplicate_reason(loser, self._group[0], self._scope))
                for loser in self._group[1:]
            ]
        return self._losers


def _string_labels(labels: Any) -> dict[str, str]:
    # A selector value is always a string, so other label values can never match it.
    if not isinstance(labels, dict):
        return {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


def _compose(result: Effective, chosen: list[tuple[dict[str, Any], PolicyRef]]) -> None:
    # Inheritance: each level overrides only when it sets a mode; a mesh policy left UNSET keeps the
    # PERMISSIVE default, so decided_by stays None in that case.
    for policy, ref in chosen:
        result.applied.append(ref)
        if ref.mode is not None:
            result.mode = ref.mode
            result.decided_by = ref
        port_level = _port_level(policy)
        if ref.scope != "workload":
            if port_level:
                result.ignored.append(
                    (
                        ref,
                        "portLevelMtls is ignored on a policy without selector (Istio: mesh/namespace peer "
                        "authentication cannot have port level mTLS); its top-level mode still applies",
                    )
                )
            continue
        for port, mode in sorted(port_level.items()):
            if mode is None:
                continue  # UNSET on a port inherits the workload-level mode, which mode_for returns
            result.ports[port] = mode
            result.port_decided_by[port] = ref


def effective(
    namespace: str, labels: dict[str, str], policies: list[dict[str, Any]], root_namespace: str = "istio-system"
) -> Effective:
    """The inbound mTLS mode of a pod in `namespace` with `labels`, and which policies decide it.

    For many pods, build one `Index` and ask it instead: this builds one per call."""
    return Index(policies, root_namespace).effective(namespace, labels)


def duplicates(policies: list[dict[str, Any]], root_namespace: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """Groups where istiod silently keeps one policy: several mesh-level, or several namespace-level
    policies in one namespace. Each group is (key, [winner, then the ignored ones, oldest first]) with
    key "mesh" or "namespace:<ns>"; mesh first, then namespaces by name."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for policy in policies:
        if not isinstance(policy, dict) or not _is_pa(policy):
            continue
        scope = scope_of(policy, root_namespace)
        if scope == "mesh":
            groups.setdefault("mesh", []).append(policy)
        elif scope == "namespace":
            groups.setdefault(f"namespace:{_namespace(policy)}", []).append(policy)
    keys = sorted(groups, key=lambda key: (key != "mesh", key))
    return [(key, sorted(groups[key], key=_age_order)) for key in keys if len(groups[key]) > 1]
