"""`kubectl mtls check pair SRC DST [--port P]`: walk the path one call takes and stop at the first
broken link: sidecars, client TLS, identity, server mode, trust, authorization (and, with --probe,
one real request)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from ..checks.context import Context, Options, Scope, key_of, labels_of, target_port
from ..errors import EXIT_DEPENDS, EXIT_GATHER, EXIT_OK, EXIT_PROBLEM, NotFoundError, UsageError
from ..fixes import edit_policy, inject_sidecar, restart_command, restart_pod
from ..istio import automtls, destinationrule
from ..model import Proxy
from ..normalize import pod as podinfo
from ..normalize.certs import parse_rfc3339, verify_chain
from ..render import Style, emit
from ..sources import parse_pod_ref
from . import pair_ambient
from .common import namespace_of, now, open_source, pod_ref
from .pair_authz import authz_step
from .pair_steps import (
    Destination,
    PairContext,
    enforced_text,
    gateway_servers,
    gather_error,
    matches_san,
    policy_note,
    protocol_of,
    server_side,
    service_fqdn,
    step,
    table,
    verdict_of,
)
from .request_spec import RequestSpec, parse_request
from .targets import did_you_mean, parse_workload, unknown_pod


def parse_destination(ref: str, default_namespace: str) -> tuple[str, str, str]:
    """(kind, namespace, name): svc/NAME, svc/NAME.NS, NAME.NS.svc.<domain>, or a pod reference."""
    for prefix in ("svc/", "service/", "services/"):
        if ref.startswith(prefix):
            name, _, ns = ref.removeprefix(prefix).partition(".")
            return "service", ns or default_namespace, name
    parts = ref.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return "service", parts[1], parts[0]
    ns, name = parse_pod_ref(ref, default_namespace)
    return "pod", ns, name


@dataclass
class Walk:
    """One port's walk: the steps, and whether the call (when it works) travels in mTLS."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    sends: dict[tuple[str, str], str] = field(default_factory=dict)  # destination pod -> "mtls" | "plaintext"
    reasons: list[str] = field(default_factory=list)  # why some of it is plaintext
    fixes: list[str] = field(default_factory=list)  # how to make it mTLS
    request: RequestSpec | None = None  # --request: the HTTP request authorization is decided for
    cluster: dict[str, Any] | None = None  # SRC's outbound cluster the call leaves through

    def plaintext(self, reason: str, fix: str | None) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)
        if fix and fix not in self.fixes:
            self.fixes.append(fix)

    @property
    def mtls(self) -> bool | None:
        """True: every destination pod gets mTLS; False: some get plaintext; None: not decided."""
        if not self.sends:
            return False if self.reasons else None
        return all(v == "mtls" for v in self.sends.values())


def _plaintext_refused(
    ctx: Context, dst: Destination, service_port: dict[str, Any] | None, port: int, pods: list[dict[str, Any]]
) -> tuple[list[tuple[str, int | None, str, str | None]], list[str]]:
    """Of the pods that receive plaintext: (pod, port, what it enforces in words, policy) of those that refuse it, and
    the pods whose inbound mode was not read."""
    refused, unknown = [], []
    for pod in pods:
        tport, enforced, policy = server_side(ctx, pod, service_port, port)
        ok = automtls.accepts(enforced, "plaintext")
        ref = "/".join(key_of(pod))
        if ok is False:
            refused.append((ref, tport, enforced_text(ctx, pod, enforced, tport), policy))
        elif ok is None:
            unknown.append(ref)
    return refused, unknown


def _plaintext_why(
    ctx: Context, pod: dict[str, Any], service_port: dict[str, Any] | None, port: int
) -> tuple[str, str | None]:
    """Why auto mTLS gives this pod's endpoint no tlsMode: istio, and what would change that."""
    ns, name = key_of(pod)
    ref = f"{ns}/{name}"
    if podinfo.sidecar_kind(pod) == "absent":
        return f"{ref} has no sidecar", inject_sidecar(pod, ns, name, _namespace_labels(ctx, ns))
    if podinfo.is_gateway(pod):
        return f"{ref} is a gateway", None
    tport = target_port(service_port, pod) if service_port else port
    eff = ctx.effective(pod)
    if eff.mode_for(tport) == "DISABLE":
        by = (eff.port_decided_by.get(tport) if tport is not None else None) or eff.decided_by
        fix = edit_policy("peerauthentication", by.namespace, by.name, "mtls.mode: STRICT") if by else None
        return f"{ref} is DISABLE on port {tport}" + (f" by PeerAuthentication {by}" if by else ""), fix
    label = labels_of(pod).get(automtls.TLS_LABEL, "istio")
    if label != "istio":
        return f"{ref} is labelled {automtls.TLS_LABEL}={label}", None
    return f"{ref}: reason not known", None


def walk(
    ctx: Context,
    src: dict[str, Any],
    dst: Destination,
    service_port: dict[str, Any] | None,
    port: int,
    probe: Any = None,
    request: RequestSpec | None = None,
) -> Walk:
    """The steps for one port, stopping after the first failure. A call that works in plaintext is not
    a failure: the walk records which pods get plaintext and why, and skips the mTLS-only steps."""
    result = Walk(request=request)
    steps = result.steps
    src_ns, src_name = key_of(src)
    src_ref = f"{src_ns}/{src_name}"
    src_proxy = ctx.proxy(src)

    def done(item: dict[str, Any]) -> bool:
        steps.append(item)
        return item["ok"] is not True

    # 1. sidecars, and SRC in sync with istiod
    kind = podinfo.sidecar_kind(src)
    if not dst.pods:
        skipped = f" (skipped, not running: {', '.join(dst.skipped)})" if dst.skipped else ""
        selector = ((dst.service or {}).get("spec") or {}).get("selector") or {}
        labels = ",".join(f"{k}={v}" for k, v in selector.items())
        done(
            step(
                "sidecar",
                False,
                f"no running pod behind {dst.label}{skipped}",
                f"kubectl get pods -n {dst.namespace}" + (f" -l {labels}" if labels else "") + " -o wide",
                skipped=dst.skipped,
            )
        )
        return result
    inject_src = inject_sidecar(src, src_ns, src_name, _namespace_labels(ctx, src_ns))
    if kind == "absent":
        # No sidecar: the application's own plaintext, without an identity, goes straight to DST.
        for pod in dst.pods:
            result.sends[key_of(pod)] = "plaintext"
        result.plaintext("caller has no sidecar", inject_src)
        refused, unknown = _plaintext_refused(ctx, dst, service_port, port, dst.pods)
        if refused:
            ref, tport, enforced, policy = refused[0]
            done(
                step(
                    "sidecar",
                    False,
                    f"{src_ref} has no sidecar (absent): it sends plaintext without an identity, and {ref} port "
                    f"{tport} {enforced}{policy_note(policy)}",
                    inject_src,
                    sidecar=kind,
                    refused_by=[r[0] for r in refused],
                )
            )
            return result
        if unknown:
            done(
                step(
                    "sidecar",
                    None,
                    f"{src_ref} has no sidecar: it sends plaintext; whether {', '.join(unknown)} accept it "
                    "is not known (inbound listeners not read)",
                    None,
                    sidecar=kind,
                    why=_why(ctx, unknown[0]),
                )
            )
            return result
        if done(
            step(
                "sidecar",
                True,
                f"{src_ref} has no sidecar: it sends plaintext without an identity, which every pod behind "
                f"{dst.label} accepts on this port",
                sidecar=kind,
            )
        ):
            return result
        return _server_mode(ctx, src, dst, service_port, port, probe, result)
    if kind not in ("present", "native"):
        done(
            step(
                "sidecar",
                False,
                f"{src_ref} has no sidecar ({kind}): it sends plaintext without an identity",
                inject_src,
                sidecar=kind,
            )
        )
        return result
    if src_proxy is None:
        done(step("sidecar", None, f"could not read {src_ref}'s sidecar config", None, why=_why(ctx, src_ref)))
        return result
    status = ctx.proxy_status.get((src_ns, src_name))
    if status is not None and status.state in ("STALE", "ERROR"):  # NOT SENT: nothing to send, not out of sync
        done(
            step(
                "sidecar",
                False,
                f"{src_ref}'s sidecar is {status.state} with istiod: it runs old config",
                restart_command(src_proxy),
                types=status.types,
            )
        )
        return result
    bare = [p for p in dst.pods if podinfo.sidecar_kind(p) == "absent"]
    sync = f"synced ({status.state})" if status is not None else "sync unknown (no proxy-status)"
    with_sidecar = len(dst.pods) - len(bare)
    if done(
        step(
            "sidecar",
            True,
            f"{src_ref} has a sidecar, {sync}; {with_sidecar} of {len(dst.pods)} destination pod(s) have sidecars",
            sync=status.state if status else None,
            without_sidecar=["/".join(key_of(p)) for p in bare],
        )
    ):
        return result

    # 2. what SRC's sidecar really sends to each destination pod, and the DestinationRule istiod applies
    if unread(ctx, result, "client-tls", [(src_proxy, "outbound")], ("services",)):
        return result
    if dst.service is None:
        # A pod IP no Service owns leaves through PassthroughCluster: plaintext, whatever the policies say.
        for pod in dst.pods:
            result.sends[key_of(pod)] = "plaintext"
        result.plaintext(
            "passthrough to a pod IP: no Service selects the destination",
            f"call it through a Service (kubectl get svc -n {dst.namespace})",
        )
        refused, unknown = _plaintext_refused(ctx, dst, service_port, port, dst.pods)
        if refused or unknown:
            ref, tport, enforced, policy = refused[0] if refused else (unknown[0], port, "", "")
            done(
                step(
                    "client-tls",
                    False if refused else None,
                    f"no Service selects {dst.label}: calls to its pod IP leave through the passthrough cluster in "
                    + (
                        f"plaintext, and {ref} port {tport} {enforced}{policy_note(policy)}"
                        if refused
                        else f"plaintext; whether {ref} accepts it is not known"
                    ),
                    f"call it through a Service (kubectl get svc -n {dst.namespace})",
                )
            )
            return result
        if done(
            step(
                "client-tls",
                True,
                f"no Service selects {dst.label}: calls to its pod IP leave through the passthrough cluster in "
                "plaintext, which it accepts on this port",
            )
        ):
            return result
        return _server_mode(ctx, src, dst, service_port, port, probe, result)
    svc_ns, svc_name = key_of(dst.service)
    host = service_fqdn(svc_ns, svc_name)
    clusters = [c for c in src_proxy.model["clusters"] if c["host"] == host and c["port"] == port]
    rejected = [
        r
        for r in src_proxy.model.get("rejected") or []
        if r["type"] == "cluster" and r["name"].startswith(f"outbound|{port}|") and r["name"].endswith(f"|{host}")
    ]
    if rejected and not clusters:
        done(
            step(
                "client-tls",
                False,
                f"Envoy rejected cluster {rejected[0]['name']}: calls from {src_ref} to {host}:{port} fail. "
                f"Envoy: {rejected[0]['error']}",
                f"kubectl get envoyfilter -A   # then: kubectl mtls check pod {src_name} -n {src_ns}",
                cluster=rejected[0]["name"],
                error=rejected[0]["error"],
            )
        )
        return result
    if not clusters:
        done(
            step(
                "client-tls",
                False,
                f"{src_ref}'s sidecar has no outbound cluster for {host}:{port} (outside its "
                "Sidecar/exportTo scope, or stale config)",
                f"istioctl proxy-config cluster {src_name}.{src_ns} --fqdn {host}",
                host=host,
                port=port,
            )
        )
        return result
    for cluster in clusters:
        mode = cluster["tls_mode"]
        dr = cluster["destination_rule"]
        dr_name = automtls.destination_rule_of(cluster)
        dr_fix = (
            f"kubectl edit destinationrule {dr['name']} -n {dr['namespace']}   # tls.mode: ISTIO_MUTUAL"
            if dr_name and dr
            else None
        )
        if mode == "UNKNOWN":  # a transport socket the tool does not understand: never guessed
            done(
                step(
                    "client-tls",
                    None,
                    f"cannot tell: cluster {cluster['name']} uses a transport socket that is not understood "
                    "(see incomplete)",
                    cluster=cluster["name"],
                )
            )
            return result
        if mode in ("SIMPLE", "MUTUAL"):
            done(
                step(
                    "client-tls",
                    False,
                    f"cluster {cluster['name']} sends {mode}" + (f" (DestinationRule {dr_name})" if dr_name else "")
                    + ": TLS with a certificate that is not the workload's Istio identity",
                    dr_fix,
                    cluster=cluster["name"],
                    tls_mode=mode,
                    destination_rule=dr_name,
                )
            )
            return result
        if mode == "DISABLE":
            plain_pods = list(dst.pods)
            reason = automtls.disable_reason(cluster)
            failure = f"cluster {cluster['name']} sends DISABLE" + (f" (DestinationRule {dr_name})" if dr_name else "")
            fix = dr_fix
        elif mode == "AUTO":
            plain_pods = _auto_plaintext_pods(ctx, cluster, dst, service_port, port)
            if not plain_pods:
                for pod in dst.pods:
                    result.sends.setdefault(key_of(pod), "mtls")
                continue
            total, istio = cluster["endpoints"], cluster["mtls_endpoints"]
            plain = total - (istio or 0) if total is not None else None
            whys = [_plaintext_why(ctx, p, service_port, port) for p in plain_pods]
            reason = automtls.auto_reason(plain, total, [w for w, _ in whys])
            failure = (
                f"auto mTLS: {plain} of {total} endpoints of {host} lack tlsMode: istio, so SRC sends them plaintext"
                if plain is not None
                else f"auto mTLS: endpoints of {host} lack tlsMode: istio, so SRC sends them plaintext"
            )
            fix = next((f for _, f in whys if f), None) or f"kubectl mtls check namespace {dst.namespace}"
        else:  # ISTIO_MUTUAL
            for pod in dst.pods:
                result.sends.setdefault(key_of(pod), "mtls")
            continue
        for pod in plain_pods:
            result.sends[key_of(pod)] = "plaintext"
        result.plaintext(reason, fix)
        refused, unknown = _plaintext_refused(ctx, dst, service_port, port, plain_pods)
        if refused:
            ref, tport, enforced, policy = refused[0]
            done(
                step(
                    "client-tls",
                    False,
                    f"{failure}, but {ref} port {tport} {enforced}{policy_note(policy)}: "
                    "it refuses plaintext",
                    fix,
                    cluster=cluster["name"],
                    tls_mode=mode,
                    destination_rule=dr_name,
                    refused_by=[r[0] for r in refused],
                )
            )
            return result
        if unknown:
            done(
                step(
                    "client-tls",
                    None,
                    f"{failure}; whether {', '.join(unknown)} accept plaintext is not known "
                    "(inbound listeners not read)",
                    None,
                    cluster=cluster["name"],
                    tls_mode=mode,
                    why=_why(ctx, unknown[0]),
                )
            )
            return result
        for pod in dst.pods:
            result.sends.setdefault(key_of(pod), "mtls")
    selected = destinationrule.select(
        ctx.objects("destinationrules"), host, src_ns, svc_ns, ctx.mesh.root_namespace, client_labels=labels_of(src)
    )
    if selected is not None:
        # A DestinationRule istiod selects for SRC whose mode the sidecar does not show: it has not applied it.
        applied = {c["tls_mode"] for c in clusters}
        bad = [(m, w) for m, w in destinationrule.tls_modes(selected, port) if m != "ISTIO_MUTUAL" and m not in applied]
        if bad:
            mode, where = bad[0]
            owner = where.split(":", 1)[0]
            done(
                step(
                    "client-tls",
                    False,
                    f"DestinationRule {owner} sets {mode} ({where.split(': ', 1)[-1]}) for "
                    f"{src_ref}; its sidecar has not applied it yet",
                    f"kubectl edit destinationrule {owner.split('/')[-1]} -n {owner.split('/')[0]}",
                    destination_rule=owner,
                    mode=mode,
                )
            )
            return result
    cluster = clusters[0]
    result.cluster = cluster
    modes = ", ".join(sorted({c["tls_mode"] for c in clusters}))
    if result.reasons:
        plain = sum(1 for v in result.sends.values() if v == "plaintext")
        detail = f"{cluster['name']}: {modes}; plaintext to {plain} of {len(dst.pods)} pod(s), which accept it"
    else:
        detail = f"{cluster['name']}: {cluster['tls_mode']} (Istio mTLS)"
    if done(
        step(
            "client-tls",
            True,
            detail,
            cluster=cluster["name"],
            tls_mode=cluster["tls_mode"],
            destination_rule=selected.rules[0]["metadata"]["name"] if selected else None,
        )
    ):
        return result

    # 3. identity: the server's SPIFFE ID is one SRC accepts, and the server's cert carries its own SA
    # Pods that refuse TLS outright are left to the server-mode step, which names that cause.
    mtls_pods = [
        p
        for p in dst.pods
        if result.sends.get(key_of(p)) == "mtls"
        and podinfo.has_envoy(p)
        and automtls.accepts(server_side(ctx, p, service_port, port)[1], "mtls") is not False
    ]
    if unread(ctx, result, "identity", [(ctx.proxy(p), "certificates") for p in mtls_pods]):
        return result
    if mtls_pods:
        expected = cluster["expected_sans"]
        for pod in mtls_pods:
            proxy = ctx.proxy(pod)
            ref = "/".join(key_of(pod))
            if proxy is None:
                done(step("identity", None, f"could not read {ref}'s sidecar config", why=_why(ctx, ref)))
                return result
            identity = proxy.model["identity"]
            sa = proxy.model["service_account"]
            own = f"spiffe://{ctx.mesh.trust_domain}/ns/{key_of(pod)[0]}/sa/{sa}"
            if identity != own and sa is not None:  # (a pod known only from its dump has no service account)
                done(
                    step(
                        "identity",
                        False,
                        f"{ref}'s certificate says {identity}, not its own {own}",
                        restart_command(proxy),
                        identity=identity,
                        expected=own,
                    )
                )
                return result
            if expected and not matches_san(expected, identity or ""):
                done(
                    step(
                        "identity",
                        False,
                        f"{src_ref} accepts only {', '.join(expected)} but {ref} presents {identity} (SAN mismatch)",
                        f"check the DestinationRule's subjectAltNames and the service accounts of {dst.label}'s pods",
                        expected_sans=expected,
                        identity=identity,
                    )
                )
                return result
        identities = sorted({proxy.model["identity"] or "" for p in mtls_pods if (proxy := ctx.proxy(p)) is not None})
        if done(step("identity", True, "server identity accepted: " + ", ".join(identities), expected_sans=expected)):
            return result
    return _server_mode(ctx, src, dst, service_port, port, probe, result)


def _auto_plaintext_pods(
    ctx: Context, cluster: dict[str, Any], dst: Destination, service_port: dict[str, Any] | None, port: int
) -> list[dict[str, Any]]:
    """The destination pods an auto mTLS cluster sends plaintext. The cluster's EDS counts are what the
    sidecar holds; which pods they are follows istiod's labelling rule."""
    total, istio = cluster["endpoints"], cluster["mtls_endpoints"]
    if total is not None and istio is not None and istio >= total:
        return []

    def labelled(pod: dict[str, Any]) -> bool:
        tport = target_port(service_port, pod) if service_port else port
        return not podinfo.is_gateway(pod) and automtls.endpoint_labelled_istio(
            podinfo.has_envoy(pod), labels_of(pod), ctx.effective(pod).mode_for(tport)
        )

    if total is not None and istio == 0:
        return list(dst.pods)
    predicted = [p for p in dst.pods if not labelled(p)]
    if total is not None and not predicted:
        return list(dst.pods)  # the dump says some endpoints get plaintext; we cannot tell which
    return predicted


def _server_mode(
    ctx: Context,
    src: dict[str, Any],
    dst: Destination,
    service_port: dict[str, Any] | None,
    port: int,
    probe: Any,
    result: Walk,
) -> Walk:
    # 4. what each destination pod enforces on the port takes what SRC sends it
    steps = result.steps
    if unread(ctx, result, "server-mode", [(ctx.proxy(p), "inbound") for p in dst.pods]):
        return result
    modes: dict[str, Any] = {}
    for pod in dst.pods:
        ref = "/".join(key_of(pod))
        sends = result.sends.get(key_of(pod), "mtls")
        tport, enforced, policy = server_side(ctx, pod, service_port, port)
        modes[ref] = policy
        ok = automtls.accepts(enforced, sends)
        if ok is False and sends == "mtls":
            effective = ctx.effective(pod)
            decided = (effective.port_decided_by.get(tport) if tport is not None else None) or effective.decided_by
            if policy == "DISABLE" and decided is not None:  # the policy says so: edit that policy
                hint = edit_policy(
                    "peerauthentication", decided.namespace, decided.name, "mtls.mode: STRICT (or PERMISSIVE)"
                )
            elif enforced == "REJECTED":  # Envoy refused the listener: the config that produced it is wrong
                hint = f"kubectl mtls check pod {key_of(pod)[1]} -n {key_of(pod)[0]}   # envoy-config-rejected"
            else:  # the policy accepts mTLS but the sidecar does not yet: its config is old
                hint = restart_pod(pod, *key_of(pod))
            cause = (
                "it does not accept mTLS (it takes only plaintext, so every TLS connection SRC opens is closed)"
                if enforced != "REJECTED"
                else "nothing accepts the connection"
            )
            steps.append(
                step(
                    "server-mode",
                    False,
                    f"{ref} port {tport}: {enforced_text(ctx, pod, enforced, tport)}{policy_note(policy)}: {cause}",
                    hint,
                    port=tport,
                    enforced=enforced,
                    policy=policy,
                )
            )
            return result
        if ok and enforced == "GW_TLS" and sends == "plaintext":
            # The sidecar adds no TLS; the gateway terminates (or passes through) the caller's own TLS.
            result.plaintext(
                f"{ref} is a gateway whose server on port {tport} takes the caller's own TLS "
                f"({gateway_servers(ctx, pod, tport)}): the call works when SRC's application speaks TLS to it",
                None,
            )
        if ok is None:
            # No inbound chain for the port and no catch-all, or one not understood: not seen, not guessed.
            seen = (
                "its inbound chain uses a transport socket that is not understood"
                if enforced == "UNKNOWN"
                else "the sidecar's inbound listener for this port was not in its config"
            )
            steps.append(
                step(
                    "server-mode",
                    None,
                    f"{ref} port {tport}: {seen} (policy says {policy})",
                    f"istioctl proxy-config listener {key_of(pod)[1]}.{key_of(pod)[0]} --port 15006",
                    port=tport,
                    policy=policy,
                )
            )
            return result
    takes = "mTLS" if result.mtls else "what SRC sends (mTLS or plaintext)" if result.mtls is None else "plaintext"
    steps.append(step("server-mode", True, f"destination accepts {takes} on the port", modes=modes))
    if result.mtls is False and not any(v == "mtls" for v in result.sends.values()):
        return _authorize(ctx, src, dst, service_port, port, probe, result)

    # 5. trust both ways, and dates (only where the call is mTLS)
    src_ns, src_name = key_of(src)
    src_ref = f"{src_ns}/{src_name}"
    src_proxy = ctx.proxy(src)
    assert src_proxy is not None
    ends = [src_proxy, *(ctx.proxy(p) for p in dst.pods if result.sends.get(key_of(p)) == "mtls")]
    if unread(ctx, result, "trust", [(end, "certificates") for end in ends]):
        return result
    for pod in dst.pods:
        if result.sends.get(key_of(pod)) != "mtls":
            continue
        proxy = ctx.proxy(pod)
        assert proxy is not None
        ref = "/".join(key_of(pod))
        for who, proxy_ in ((src_ref, src_proxy), (ref, proxy)):
            for cert in proxy_.model["certificates"][:1]:
                if parse_rfc3339(cert["not_after"]) < ctx.now:
                    problem = f"expired at {cert['not_after']}"
                elif parse_rfc3339(cert["not_before"]) > ctx.now:
                    problem = f"is not valid before {cert['not_before']} (clock skew)"
                else:
                    continue
                steps.append(
                    step(
                        "trust",
                        False,
                        f"{who}'s workload certificate {problem}",
                        restart_command(proxy_),
                        not_before=cert["not_before"],
                        not_after=cert["not_after"],
                    )
                )
                return result
        for chain_of, roots_of, a, b in ((src_proxy, proxy, src_ref, ref), (proxy, src_proxy, ref, src_ref)):
            ok, why = verify_chain([c.cert for c in chain_of.chain], [r.cert for r in roots_of.roots], ctx.now)
            if ok is None:
                steps.append(step("trust", None, f"cannot tell whether {b} trusts {a}'s certificate: {why}"))
                return result
            if not ok:
                from .rootdiff import compare  # the same verdict and fix `rootdiff` prints

                steps.append(
                    step(
                        "trust",
                        False,
                        f"{b} does not trust {a}'s certificate: {why}",
                        compare(src_proxy, proxy, ctx.now)["fix"],
                        roots_of_verifier=roots_of.root_fingerprints(),
                    )
                )
                return result
    steps.append(step("trust", True, "each side's chain verifies to the other's roots; certificates in date"))
    return _authorize(ctx, src, dst, service_port, port, probe, result)


def _authorize(
    ctx: Context,
    src: dict[str, Any],
    dst: Destination,
    service_port: dict[str, Any] | None,
    port: int,
    probe: Any,
    result: Walk,
) -> Walk:
    # 6. authorization at the destination, for SRC's identity (none over plaintext), this port and
    # (--request) this request
    src_proxy = ctx.proxy(src)
    enforcing = [p for p in dst.pods if podinfo.sidecar_kind(p) != "absent"]  # no sidecar: nothing enforces
    if not enforcing:
        result.steps.append(step("authz", True, "no destination pod has a sidecar: no AuthorizationPolicy is enforced"))
    elif unread(ctx, result, "authz", [], ("authorizationpolicies",)):
        return result
    else:
        own = ((src_proxy.model["identity"] if src_proxy else None) or "").removeprefix("spiffe://") or None
        identity = own if any(result.sends.get(key_of(p)) == "mtls" for p in enforcing) else None
        sni = result.cluster.get("sni") if result.cluster else None
        protocol = protocol_of(service_port)
        item = authz_step(ctx, src, identity, enforcing, service_port, port, protocol, sni, result.request)
        result.steps.append(item)
        if item["ok"] is not True:
            return result
    if probe is not None:
        result.steps.append(probe(src, dst, port))
    return result

def unread(
    ctx: Context, result: Walk, slug: str, aspects: list[tuple[Proxy | None, str]], kinds: tuple[str, ...] = ()
) -> bool:
    """A step whose input was not read is unknown and names that input: never a pass, never a failure."""
    gap = _unread_input(ctx, aspects, kinds)
    if gap is None:
        return False
    result.steps.append(step(slug, None, f"cannot tell: {gap}", not_read=gap))
    return True


def _unread_input(ctx: Context, aspects: list[tuple[Proxy | None, str]], kinds: tuple[str, ...]) -> str | None:
    """The input a step needs that was not read, with the reason; None when everything was read."""
    for kind in kinds:
        if not ctx.available(kind):
            return f"{kind} not read ({ctx.unavailable[kind]})"
    for proxy, aspect in aspects:
        if proxy is not None and not proxy.knows(aspect):
            return f"{proxy.ref}: {proxy.unknown[aspect]}"
    return None


def _needed(incomplete: list[dict[str, str]], src: dict[str, Any], dst: Destination) -> list[dict[str, str]]:
    """Only what this call needed: notes about other pods of the destination's namespace (read to find
    the Service's pods) are left out."""
    ends = {f"pod {'/'.join(key_of(p))}" for p in (src, *dst.pods)}
    return [i for i in incomplete if not i["what"].startswith("pod ") or i["what"] in ends]


def _namespace_labels(ctx: Context, namespace: str) -> dict[str, Any] | None:
    obj = ctx.namespaces.get(namespace)
    return labels_of(obj) if obj is not None else None


def _why(ctx: Context, ref: str) -> str:
    return "; ".join(i["why"] for i in ctx.incomplete if i["what"] == f"pod {ref}") or "unknown"


def _resolve(ctx: Context, args: argparse.Namespace, dst_ref: tuple[str, str, str]) -> Destination:
    kind, ns, name = dst_ref
    if kind == "service":
        if not ctx.available("services"):
            from ..errors import GatherError

            raise GatherError(f"cannot find svc/{ns}/{name}: services not read ({ctx.unavailable['services']})")
        svc = next((s for s in ctx.objects("services") if key_of(s) == (ns, name)), None)
        if svc is None:
            names = [key_of(s)[1] for s in ctx.objects("services") if key_of(s)[0] == ns]
            raise NotFoundError(f'service "{name}" not found in namespace "{ns}"{did_you_mean(name, names)}')
        selected = ctx.pods_of(svc)
        pods = [p for p in selected if ctx.running(p)]
        skipped = [
            f"{'/'.join(key_of(p))} ({(p.get('status') or {}).get('phase')})" for p in selected if not ctx.running(p)
        ]
        return Destination("service", ns, name, svc, pods, skipped)
    pod = ctx.pods_by_key.get((ns, name))
    if pod is None:
        raise unknown_pod(ctx.source, ns, name, [p for p in ctx.pods if key_of(p)[0] == ns])
    services = ctx.services_of(pod)
    return Destination("pod", ns, name, services[0] if services else None, [pod])


def _ports(dst: Destination, wanted: int | None) -> list[tuple[dict[str, Any] | None, int]]:
    """(Service port, the port SRC dials) pairs to walk."""
    if dst.service is not None:
        ports = [p for p in (dst.service.get("spec") or {}).get("ports") or [] if isinstance(p.get("port"), int)]
        if dst.kind == "pod" and wanted is not None:  # a pod destination: --port is the container port
            ports = [p for p in ports if target_port(p, dst.pods[0]) == wanted] or ports
        elif wanted is not None:
            ports = [p for p in ports if p["port"] == wanted]
            if not ports:
                has = ", ".join(
                    f"{p['port']}" + (f" ({p['name']})" if p.get("name") else "")
                    for p in (dst.service.get("spec") or {}).get("ports") or []
                )
                raise UsageError(f"--port {wanted}: {dst.label} has no port {wanted}; its ports: {has or 'none'}")
        if ports:  # a headless Service may list none: then the pods' own ports, as without a Service
            return [(p, int(p["port"])) for p in ports]
    if wanted is not None:
        return [(None, wanted)]
    container_ports = [
        int(cp["containerPort"])
        for c in (dst.pods[0].get("spec") or {}).get("containers") or []
        for cp in c.get("ports") or []
        if isinstance(cp.get("containerPort"), int)
    ]
    return [(None, p) for p in container_ports] or [(None, 0)]


def run_pair(args: argparse.Namespace) -> int:
    if len(args.names) != 2:
        raise UsageError("check pair needs SRC and DST, e.g. check pair client-7d9 svc/reviews")
    from . import contexts

    if contexts.named(args, args.names):  # CONTEXT:NS/POD or --source-context/--destination-context
        dst_name = contexts.split(args.names[1])[1]
        if dst_name.startswith(("svc/", "service/", "services/")) or ".svc." in dst_name:
            raise UsageError("across clusters DST is a pod (CONTEXT:NAMESPACE/POD); its Services are found from it")
        src_side, dst_side, across = contexts.sides(args, *args.names)
        if across:
            from .pair_clusters import run as run_across

            return run_across(args, src_side, dst_side)
        args.names, args.context = [contexts.split(n)[1] for n in args.names], src_side.context
    request = parse_request(args)
    source = open_source(args)
    default_ns = namespace_of(args, source)
    src_ns, src_name = pod_ref(args, source, args.names[0])  # a pod, or a running pod of deploy/NAME ...
    if parse_workload(args.names[1]) is not None:
        dst_ref: tuple[str, str, str] = ("pod", *pod_ref(args, source, args.names[1]))
    else:
        dst_ref = parse_destination(args.names[1], default_ns)
    scope = Scope(src_ns) if src_ns == dst_ref[1] else Scope(None)
    options = Options(istio_namespace=args.istio_namespace, concurrency=args.concurrency)
    service = dst_ref[0] == "service"
    ctx = PairContext(
        source,
        scope,
        now(),
        options,
        pods={(src_ns, src_name)} | (set() if service else {(dst_ref[1], dst_ref[2])}),
        namespaces={dst_ref[1]} if service else set(),
    )
    ctx.load(
        (
            "pods",
            "namespaces",
            "services",
            "peerauthentications",
            "destinationrules",
            "authorizationpolicies",
            "configmaps",
            "proxies",
            "proxy-status",
            "ztunnels",  # read only when SRC or DST is ambient
        )
    )
    if not ctx.available("pods"):
        raise gather_error(ctx)
    src = ctx.pods_by_key.get((src_ns, src_name))
    if src is None:
        raise unknown_pod(source, src_ns, src_name, [p for p in ctx.pods if key_of(p)[0] == src_ns])
    dst = _resolve(ctx, args, dst_ref)
    probe = None
    if args.probe:
        from .probe import Prober

        probe = Prober(source, ctx)
    walks: list[dict[str, Any]] = []
    ambient = pair_ambient.involves_ambient(ctx, src, dst.pods)
    if ambient:  # HBONE, ztunnel authorization and NetworkPolicies: commands/pair_ambient.py
        ctx.load_kind("networkpolicies")
        if args.probe:
            ctx.note("--probe", "not run: an ambient pair has no sidecar access log to classify the request by")
    for service_port, port in _ports(dst, args.port):
        walked: Walk | pair_ambient.AmbientWalk
        if ambient:
            walked = pair_ambient.walk(ctx, src, dst.pods, dst.service, service_port, port)
        else:
            walked = walk(ctx, src, dst, service_port, port, probe, request)
        verdict, first, hint = verdict_of(walked.steps)
        mtls = walked.mtls
        reason = "; ".join(walked.reasons) or None
        if verdict == "ok" and mtls is False and args.require_mtls:
            verdict, first, hint = "fail", "require-mtls", "; ".join(walked.fixes) or None
        walks.append(
            {
                "port": port,
                "verdict": verdict,
                "mtls": mtls,
                "plaintext_reason": reason if mtls is False else None,
                "steps": walked.steps,
                "first_failure": first,
                "hint": hint,
                **({"plan": list(pair_ambient.STEPS)} if ambient else {}),
            }
        )
    order = {"fail": 0, "unknown": 1, "depends": 2, "ok": 3}
    worst = min(walks, key=lambda w: (order[w["verdict"]], w["mtls"] is not False))
    data: dict[str, Any] = {
        "verdict": worst["verdict"],
        "mtls": worst["mtls"],
        "plaintext_reason": worst["plaintext_reason"],
        "source": f"{src_ns}/{src_name}",
        "destination": dst.label,
        "port": worst["port"] if len(walks) == 1 or worst["verdict"] != "ok" or worst["mtls"] is False else None,
        "steps": worst["steps"],
        "first_failure": worst["first_failure"],
        "hint": worst["hint"],
        "ports": walks,
        "incomplete": _needed(ctx.incomplete, src, dst),
        "request": request.describe() if request else None,
    }
    if worst["verdict"] == "depends":
        evidence = worst["steps"][-1]["evidence"]
        data["conditions"] = {"allowed_when": evidence["allowed_when"], "denied_when": evidence["denied_when"]}
    style = Style.detect(args.no_color)
    emit(data, args.output, args.query, lambda d, wide: table(d, style, wide))
    return {"ok": EXIT_OK, "fail": EXIT_PROBLEM, "unknown": EXIT_GATHER, "depends": EXIT_DEPENDS}[str(data["verdict"])]


