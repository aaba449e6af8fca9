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

from typing import Any

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


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _namespace(obj: dict[str, Any]) -> str:
    # API objects always have one; a bare manifest lands in "default" (kubectl, istioctl analyze).
    return str(_meta(obj).get("namespace") or "default")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    return [str(v) for v in _list(value) if isinstance(v, str | int | float) and not isinstance(v, bool)]


def _rules(policy: dict[str, Any]) -> list[Any]:
    return _list(_spec(policy).get("rules"))


def applies_to(
    policy: dict[str, Any], namespace: str, labels: dict[str, str], root_namespace: str = "istio-system"
) -> bool:
    """Whether the policy is enforced by the sidecar of a pod in `namespace` with `labels`."""
    spec = _spec(policy)
    if spec.get("targetRef") or _list(spec.get("targetRefs")):
        return False  # attached to a Gateway/Service/ServiceEntry: gateways and waypoints only
    if _namespace(policy) not in (root_namespace, namespace):
        return False
    selector = spec.get("selector")
    match = selector.get("matchLabels") if isinstance(selector, dict) else None
    if not isinstance(match, dict):
        return True  # no selector (or empty): every workload in scope
    # labels.Instance.SubsetOf: each selector key present on the pod with the same value.
    return all(str(key) in labels and labels[str(key)] == str(value) for key, value in match.items())


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
    """"<trust domain>/ns/<ns>/sa/<sa>" -> (trust domain, ns, sa).

    None for wildcards ("*", "prefix*", "*suffix") and any other shape, including a written
    "spiffe://" prefix: Istio adds that prefix itself, so such a principal never matches anyone."""
    if "*" in principal or "://" in principal:
        return None
    parts = principal.split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
        return None
    return parts[0], parts[2], parts[4]
