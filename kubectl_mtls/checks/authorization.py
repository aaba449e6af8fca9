"""Authorization: AuthorizationPolicies that can only work with mTLS, or that deny everything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..istio import authz
from ..normalize import pod as podinfo
from .base import Finding, check, finding
from .context import Context, key_of

AREA = "authorization"


def _in_scope(ctx: Context, policy: dict[str, Any]) -> bool:
    ns = key_of(policy)[0]
    return ctx.scope.namespace is None or ns in (ctx.scope.namespace, ctx.mesh.root_namespace)


def _workloads(ctx: Context, policy: dict[str, Any]) -> list[dict[str, Any]]:
    scope = authz.workload_scope(policy, ctx.mesh.root_namespace)
    if scope is None:
        return []
    return [p for p in ctx.select_pods(*scope) if podinfo.has_envoy(p) and ctx.is_target(p)]


def _accepts_plaintext(ctx: Context, pod: dict[str, Any]) -> bool:
    proxy = ctx.proxy(pod)
    if proxy is not None and proxy.model["inbound"]:
        return any(entry["plaintext"] for entry in proxy.model["inbound"])
    return ctx.effective(pod).mode != "STRICT" or any(m != "STRICT" for m in ctx.effective(pod).ports.values())


@check(
    "authz-requires-mtls",
    area=AREA,
    severity="warning",
    title="policies that match on peer identity only guard workloads that require mTLS",
    reads=("pods", "peerauthentications", "authorizationpolicies"),
    explain="""
What it looks at: AuthorizationPolicies whose rules use `principals`, `namespaces` (or `notPrincipals`,
`notNamespaces`), or `when` on `source.principal`, `source.namespace`, `connection.sni`, applied to
workloads that still accept plaintext (PERMISSIVE or DISABLE, per policy or per sidecar).

Why it breaks mTLS: those fields come from the peer's mTLS certificate. A plaintext caller has no
identity: an ALLOW rule never matches it (403 `RBAC: access denied`) and a DENY rule with `notPrincipals`
or `notNamespaces` always does. The policy looks like identity-based security but either blocks
legitimate plaintext callers or lets everything through where you expected it to bite.

How to fix: make the workload STRICT (PeerAuthentication), or use `ipBlocks` for callers that cannot
do mTLS.
""",
)
def authz_requires_mtls(ctx: Context) -> Iterator[Finding]:
    for policy in ctx.objects("authorizationpolicies"):
        if not _in_scope(ctx, policy) or authz.action(policy) not in ("ALLOW", "DENY"):
            continue
        fields = authz.identity_fields(policy)
        if not fields:
            continue
        plain = [p for p in _workloads(ctx, policy) if _accepts_plaintext(ctx, p)]
        if not plain:
            continue
        ns, name = key_of(policy)
        effect = (
            "plaintext callers are always denied"
            if authz.action(policy) == "ALLOW"
            else "plaintext callers match its not-fields and are denied"
        )
        yield finding(
            "authz-requires-mtls",
            "warning",
            "AuthorizationPolicy",
            ns,
            name,
            f"{authz.action(policy)} policy matching on peer identity "
            f"({', '.join(fields[:3])}) but {len(plain)} workload(s) it guards accept plaintext: {effect}",
            f"kubectl mtls check namespace {key_of(plain[0])[0]}   # then set a STRICT PeerAuthentication there",
            pods=["/".join(key_of(p)) for p in plain],
            fields=fields,
        )


@check(
    "authz-principal-unknown",
    area=AREA,
    severity="warning",
    title="every principal in an AuthorizationPolicy names an existing service account",
    reads=("authorizationpolicies", "serviceaccounts", "configmaps"),
    explain="""
What it looks at: `principals` / `notPrincipals` of the form `<trust domain>/ns/<ns>/sa/<sa>` (the
trust domain of the mesh, an alias, or `cluster.local`) whose service account does not exist.

Why it breaks mTLS: the principal is the identity in the caller's certificate; if no such service
account exists, no caller can ever match (ALLOW denies, DENY never fires). Usually a typo or the
workload's default service account was meant.

How to fix: `kubectl get serviceaccounts -n NS`, then correct the principal.
""",
)
def authz_principal_unknown(ctx: Context) -> Iterator[Finding]:
    known = {key_of(sa) for sa in ctx.objects("serviceaccounts")}
    listed = {ns for ns, _ in known}
    complete = ctx.scope.namespace is None
    domains = {ctx.mesh.trust_domain, *ctx.mesh.trust_domain_aliases, "cluster.local"}
    for policy in ctx.objects("authorizationpolicies"):
        if not _in_scope(ctx, policy):
            continue
        ns, name = key_of(policy)
        for path, principal in authz.principals(policy):
            parsed = authz.parse_principal(principal)
            if parsed is None:
                continue
            domain, sa_ns, sa = parsed
            if domain not in domains or (sa_ns, sa) in known:
                continue
            if not complete and sa_ns not in listed and sa_ns != ctx.scope.namespace:
                continue  # we did not list that namespace's service accounts
            yield finding(
                "authz-principal-unknown",
                "warning",
                "AuthorizationPolicy",
                ns,
                name,
                f"names principal {principal}, but service account {sa_ns}/{sa} does not exist",
                f"kubectl get serviceaccounts -n {sa_ns}",
                principal=principal,
                path=path,
            )


@check(
    "authz-deny-all",
    area=AREA,
    severity="warning",
    title="no AuthorizationPolicy denies every request by accident",
    reads=("pods", "authorizationpolicies"),
    explain="""
What it looks at: an ALLOW policy without rules (it allows nothing, so it denies everything for the
workloads it selects) and a DENY policy with a rule that matches every request (`rules: [{}]`).

Why it matters: after enabling STRICT, a 403 `RBAC: access denied` is often blamed on mTLS. These
policies deny whatever the certificates say; the server log shows
`rbac_access_denied_matched_policy[...]`.

How to fix: if deny-all is intended, add ALLOW policies for the legitimate callers; otherwise add rules
or delete the policy.
""",
)
def authz_deny_all(ctx: Context) -> Iterator[Finding]:
    for policy in ctx.objects("authorizationpolicies"):
        if not _in_scope(ctx, policy) or authz.dry_run(policy):
            continue
        ns, name = key_of(policy)
        if authz.allows_nothing(policy):
            what = "an ALLOW policy without rules: it allows nothing"
        elif authz.denies_everything(policy):
            what = "a DENY policy with a rule matching every request"
        else:
            continue
        pods = ["/".join(key_of(p)) for p in _workloads(ctx, policy)]
        yield finding(
            "authz-deny-all",
            "warning",
            "AuthorizationPolicy",
            ns,
            name,
            f"{what}; it denies all traffic to {len(pods)} workload(s)",
            f"kubectl get authorizationpolicy {name} -n {ns} -o yaml",
            pods=pods,
        )
