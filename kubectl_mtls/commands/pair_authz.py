"""The authorization step of `check pair`: Istio's AuthorizationPolicy evaluation for one caller, one
port and (with --request) one request, at every destination pod."""

from __future__ import annotations

from typing import Any

from ..checks.context import Context, key_of, labels_of, target_port
from ..fixes import edit_policy
from ..istio import authz
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
    depends: tuple[str, authz.Decision, int] | None = None
    decision: authz.Decision | None = None
    for pod in pods:
        ref = "/".join(key_of(pod))
        tport = (target_port(service_port, pod) if service_port else port) or port
        decision = authz.evaluate(
            ctx.objects("authorizationpolicies"),
            key_of(pod)[0],
            labels_of(pod),
            caller,
            _request(spec, tport, protocol, sni, pod),
            root_namespace=ctx.mesh.root_namespace,
            trust_domain=ctx.mesh.trust_domain,
            trust_domain_aliases=tuple(ctx.mesh.trust_domain_aliases),
            extension_providers=tuple(providers) if providers is not None else None,
        )
        evidence = _evidence(decision, spec, protocol)
        if decision.outcome == "deny":
            if decision.policy:
                ns, name = decision.policy.split("/", 1)
                rule = f"spec.rules[{decision.rule}] " if decision.rule is not None else ""
                hint = edit_policy("authorizationpolicy", ns, name, f"{rule}decides ({decision.action})")
            else:
                hint = (
                    f"add an ALLOW rule for {identity or 'this caller'} "
                    f"(kubectl get authorizationpolicy -n {key_of(pod)[0]})"
                )
            who = identity or "a plaintext caller"
            return _step(False, f"{ref} denies {who} on port {tport}: {decision.reason}", hint, evidence)
        if decision.outcome == "depends" and depends is None:
            depends = (ref, decision, tport)
    if depends is not None:
        ref, decision, tport = depends
        custom_only = decision.action == "CUSTOM"
        hint = (
            f"the ext-authz provider decides: read its logs ({', '.join(decision.depends_on)})"
            if custom_only
            else REQUEST_HINT
            if spec is None
            else "give what the decision depends on (--header, --host, --jwt)"
        )
        return _step(None, f"{ref} port {tport}: {decision.reason}", hint, _evidence(decision, spec, protocol))
    assert decision is not None
    reason = decision.reason if decision.reason.startswith("allowed") else f"allowed: {decision.reason}"
    return _step(True, reason, None, _evidence(decision, spec, protocol))


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
