"""Authorization: CUSTOM AuthorizationPolicies whose ext-authz provider the mesh does not define."""

from __future__ import annotations

from collections.abc import Iterator

from ..istio import authz
from ..normalize import pod as podinfo
from .base import Finding, check, finding
from .context import Context, key_of

AREA = "authorization"


@check(
    "authz-custom-provider-missing",
    area=AREA,
    severity="error",
    title="every CUSTOM AuthorizationPolicy names an ext-authz provider the mesh config defines",
    reads=("pods", "authorizationpolicies", "configmaps"),
    explain="""
What it looks at: AuthorizationPolicies with `action: CUSTOM` whose `provider.name` is not one of the
`extensionProviders` in the mesh config (ConfigMap `istio` in the Istio namespace, key `mesh`).

Why it breaks traffic: istiod cannot build the ext-authz filter for an unknown provider, so it turns
every rule of the policy into a DENY rule (`...-deny-due-to-bad-CUSTOM-action` in the sidecar's RBAC
filter). Every request the rules match gets 403 `RBAC: access denied`, whatever the certificates and
the other policies say. `kubectl mtls check pair SRC DST --request 'GET /path'` names such a rule.

How to fix: add the provider under `meshConfig.extensionProviders` (istioctl install / the `istio`
ConfigMap), or correct `provider.name` in the policy.
""",
)
def authz_custom_provider_missing(ctx: Context) -> Iterator[Finding]:
    known = ctx.mesh.extension_providers
    if known is None:
        return  # the mesh config was unreadable: whether the provider exists is not known
    root = ctx.mesh.root_namespace
    for policy in ctx.objects("authorizationpolicies"):
        ns, name = key_of(policy)
        if authz.action(policy) != "CUSTOM" or authz.dry_run(policy):
            continue
        if ctx.scope.namespace is not None and ns not in (ctx.scope.namespace, root):
            continue
        provider = authz.provider(policy)
        if provider and provider in known:
            continue
        scope = authz.workload_scope(policy, root)
        selected = ctx.select_pods(*scope) if scope is not None else []
        pods = ["/".join(key_of(p)) for p in selected if podinfo.has_envoy(p) and ctx.is_target(p)]
        defined = ", ".join(known) if known else "none"
        what = f"names ext-authz provider {provider!r}" if provider else "names no ext-authz provider"
        yield finding(
            "authz-custom-provider-missing",
            "error",
            "AuthorizationPolicy",
            ns,
            name,
            f"CUSTOM policy {what}, which meshConfig.extensionProviders does not define (defined: {defined}): "
            f"Istio denies every request its rules match on {len(pods)} workload(s)",
            f"kubectl get configmap istio -n {ctx.options.istio_namespace} -o yaml   # add the provider under "
            "mesh.extensionProviders, or fix provider.name",
            pods=pods,
            provider=provider or None,
            extension_providers=known,
        )
