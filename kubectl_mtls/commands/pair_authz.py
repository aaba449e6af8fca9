"""The authorization step of `check pair`: Istio's AuthorizationPolicy evaluation for one caller, one
port and (with --request) one request, at every destination pod."""

from __future__ import annotations

from typing import Any

from ..checks.context import Context, key_of, labels_of, target_port
from ..fixes import edit_policy
from ..istio import authz, rbac_filter
from .request_spec import RequestSpec

REQUEST_HINT = "say which request: --request 'METHOD PATH' [--header 'name: value'] [--host HOST] [--jwt TOKEN|none]"


def _request(spec: RequestSpec | None, port: int, protocol: str, sni: str | None, pod: dict[str, Any]) -> authz.Request:
    pod_ip = (pod.get("status") or {}).get("podIP")
    if spec is None:
        return authz.Request(port=port, protocol=protocol, sni=sni, destination_ip=pod_ip)
    return authz.Request(
        port=port,
        protocol=protocol,
        method=spec.method,
        path=spec.path,
        host=spec.host,
        headers=spec.headers,
        jwt=spec.jwt,
        jwt_known=spec.jwt_known,
        sni=sni,
        destination_ip=pod_ip,
    )


def authz_step(
    ctx: Context,
    src: dict[str, Any],
    identity: str | None,
    pods: list[dict[str, Any]],
    service_port: dict[str, Any] | None,
    port: int,
    protocol: str,
    sni: str | None,
    spec: RequestSpec | None,
) -> dict[str, Any]:
    """One `authz` step: ok True (allowed), False (denied) or None with outcome "depends"."""
    caller = authz.Caller(
        principal=identity, namespace=key_of(src)[0] if identity else None, ip=(src.get("status") or {}).get("podIP")
    )
    providers = ctx.mesh.extension_providers
    depends: tuple[str, str | None, dict[str, Any]] | None = None
    allowed: tuple[str, dict[str, Any]] | None = None
    who = identity or "a plaintext caller"
    for pod in pods:
        ref = "/".join(key_of(pod))
        tport = (target_port(service_port, pod) if service_port else port) or port
        request = _request(spec, tport, protocol, sni, pod)
        decision = authz.evaluate(
            ctx.objects("authorizationpolicies"),
            key_of(pod)[0],
            labels_of(pod),
            caller,
            request,
            root_namespace=ctx.mesh.root_namespace,
            trust_domain=ctx.mesh.trust_domain,
            trust_domain_aliases=tuple(ctx.mesh.trust_domain_aliases),
            extension_providers=tuple(providers) if providers is not None else None,
        )
        evidence = _evidence(decision, spec, protocol)
        enforced = _enforced(ctx, pod, tport, protocol, caller, request)
        outcome = _combine(decision, enforced, evidence)
        drift = f"; drift: {evidence['drift']}" if evidence.get("drift") else ""
        if outcome == "deny":
            if decision.outcome != "deny":
                assert enforced is not None
                detail = f"{ref} denies {who} on port {tport}: {enforced.reason}{drift}"
                hint = f"istioctl proxy-status {key_of(pod)[1]}.{key_of(pod)[0]}   # not in sync with the policies?"
            elif decision.policy:
                ns, name = decision.policy.split("/", 1)
                detail = f"{ref} denies {who} on port {tport}: {decision.reason}{drift}"
                rule = f"spec.rules[{decision.rule}] " if decision.rule is not None else ""
                hint = edit_policy("authorizationpolicy", ns, name, f"{rule}decides ({decision.action})")
            else:
                detail = f"{ref} denies {who} on port {tport}: {decision.reason}{drift}"
                hint = f"add an ALLOW rule for {who} (kubectl get authorizationpolicy -n {key_of(pod)[0]})"
            return _step(False, detail, hint, evidence)
        if outcome == "depends" and depends is None:
            if decision.outcome == "depends":
                detail = f"{ref} port {tport}: {decision.reason}{drift}"
                hint = (
                    f"the ext-authz provider decides: read its logs ({', '.join(decision.depends_on)})"
                    if decision.action == "CUSTOM"
                    else REQUEST_HINT
                    if spec is None
                    else "give what the decision depends on (--header, --host, --jwt)"
                )
            else:
                assert enforced is not None
                detail = (
                    f"{ref} port {tport}: the policies allow, but the sidecar's filters say: {enforced.reason}{drift}"
                )
                hint = REQUEST_HINT if spec is None else "give what the decision depends on (--header, --host, --jwt)"
            depends = (detail, hint, evidence)
        elif outcome == "allow" and allowed is None:
            reason = decision.reason if decision.reason.startswith("allowed") else f"allowed: {decision.reason}"
            allowed = (reason + drift, evidence)
    if depends is not None:
        return _step(None, *depends)
    assert allowed is not None
    return _step(True, allowed[0], None, allowed[1])


def _enforced(
    ctx: Context, pod: dict[str, Any], port: int, protocol: str, caller: authz.Caller, request: authz.Request
) -> rbac_filter.Enforced | None:
    """What the server sidecar's own authorization filters decide; None when its listeners were not read."""
    proxy = ctx.proxy(pod)
    if proxy is None:
        return None
    inbound = proxy.model.get("inbound") or []
    entry = next((e for e in inbound if e.get("port") == port), None) or next(
        (e for e in inbound if e.get("port") is None), None
    )
    if entry is None or "authz_chains" not in entry:
        return None
    chain = rbac_filter.pick_chain(entry["authz_chains"], protocol)
    if chain is None:
        return None
    return rbac_filter.enforce(chain, caller, request)


def _combine(decision: authz.Decision, enforced: rbac_filter.Enforced | None, evidence: dict[str, Any]) -> str:
    """The outcome from the policies and from the sidecar's filters: a denial by either one denies (the
    sidecar enforces its filters now; the policies once istiod pushes them). Records the evidence."""
    if enforced is None:
        evidence["sidecar_rbac"] = None
        return decision.outcome
    # The same deciding rule too: the DENY that matched, or the ALLOW that let it through.
    same_rule = decision.outcome == "depends" or decision.envoy_name == enforced.policy
    agrees = decision.outcome == enforced.outcome and same_rule
    evidence["sidecar_rbac"] = {
        "outcome": enforced.outcome,
        "policy": enforced.policy,
        "reason": enforced.reason,
        "chain": enforced.chain,
        "filters": enforced.filters,
        "agrees": agrees,
    }
    if not agrees:
        evidence["drift"] = (
            f"the policies say {decision.outcome}"
            + (f" ({decision.envoy_name})" if decision.envoy_name else "")
            + f"; the server sidecar's RBAC filters say {enforced.outcome}"
            + (f" ({enforced.policy})" if enforced.policy else "")
            + f": {enforced.reason} (a policy not yet pushed or rejected, or the sidecar out of sync)"
        )
    outcomes = {decision.outcome, enforced.outcome}
    return "deny" if "deny" in outcomes else "depends" if "depends" in outcomes else "allow"


def _step(ok: bool | None, detail: str, hint: str | None, evidence: dict[str, Any]) -> dict[str, Any]:
    return {"step": "authz", "ok": ok, "detail": detail, "hint": hint, "evidence": evidence}


def _evidence(decision: authz.Decision, spec: RequestSpec | None, protocol: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "outcome": decision.outcome,
        "action": decision.action,
        "policy": decision.policy,
        "rule": decision.rule,
        "envoy_name": decision.envoy_name,
        "condition": decision.condition,
        "allowed_when": decision.allowed_when,
        "denied_when": decision.denied_when,
        "depends_on": decision.depends_on,
        "considered": decision.considered,
        "unknown": decision.unknown,
        "request": spec.describe() if spec else None,
    }
    if spec is not None and protocol == "tcp":
        out["note"] = "the port is TCP: its RBAC filter sees the connection only, not the HTTP request"
    return out
