"""Ambient mode: is each ambient pod captured by ztunnel, does its ztunnel hold a good certificate, can
HBONE (TCP 15008) pass the NetworkPolicies, and do the policies mean what ztunnel will enforce?"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..fixes import restart_pod
from ..istio import networkpolicy as netpol
from ..normalize import pod as podinfo
from ..normalize.certs import parse_rfc3339
from ..normalize.ztunnel import HBONE_PORT, ZtunnelView
from .base import Finding, as_dict, check, finding
from .context import Context, key_of, labels_of

AREA = "ambient"
GATEWAY_LABELS = ("gateway.networking.k8s.io/gateway-name", "istio.io/gateway-name", "gateway.istio.io/managed")
USE_WAYPOINT = "istio.io/use-waypoint"
USE_WAYPOINT_NS = "istio.io/use-waypoint-namespace"


def _lst(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _restart(pod: dict[str, Any]) -> str:
    return restart_pod(pod, *key_of(pod))


def _is_gateway(pod: dict[str, Any]) -> bool:
    """Waypoints and gateways are Envoys of their own: ztunnel never captures them."""
    labels = labels_of(pod)
    return any(label in labels for label in GATEWAY_LABELS)


def _enrolled_targets(ctx: Context) -> Iterator[tuple[dict[str, Any], str]]:
    if not ctx.ambient.enrolment:  # a mesh of sidecars only: five checks need not visit every pod to see it
        return
    for pod in ctx.targets:
        key = key_of(pod)
        why = ctx.ambient.enrolment.get(key)
        if why is None or ctx.exempt(key[0]) or not ctx.running(pod) or _is_gateway(pod):
            continue
        yield pod, why


def _ztunnel_restart(view: ZtunnelView) -> str:
    return f"kubectl delete pod {view.pod} -n {view.namespace}   # the DaemonSet starts a fresh ztunnel"


@check(
    "ambient-not-enrolled",
    area=AREA,
    severity="error",
    title="every pod labelled for ambient is captured by its node's ztunnel (HBONE)",
    reads=("pods", "namespaces", "ztunnels"),
    explain="""
What it looks at: pods that belong to the ambient mesh (label `istio.io/dataplane-mode=ambient` on the
pod or its namespace, unless the pod says `none`) and how the ztunnel of their node lists them:
`HBONE` means captured; `TCP` means ztunnel knows the pod but istio-cni never redirected its traffic;
not listed at all means ztunnel does not know it. Also pods that have both a sidecar and the ambient
label. Waypoint and gateway pods are never captured and are skipped.

Why it breaks mTLS: a pod that is not captured sends and receives plaintext; under STRICT its callers
are rejected, and it has no identity for AuthorizationPolicies. Common causes: the pod started before
the label was set, istio-cni is not running on the node, or the `ambient.istio.io/redirection`
annotation never appeared.

How to fix: check istio-cni on that node (`kubectl get pods -n istio-system -l k8s-app=istio-cni-node -o
wide`), then restart the workload so istio-cni captures the new pod (`kubectl rollout restart
deployment/NAME -n NS`). For a pod with a sidecar, choose one data plane: drop the ambient label or
the injection.
""",
)
def ambient_not_enrolled(ctx: Context) -> Iterator[Finding]:
    for pod in ctx.targets:  # a sidecar and the ambient label: the sidecar wins, ztunnel skips the pod
        ns, name = key_of(pod)
        if not podinfo.has_envoy(pod) or ctx.exempt(ns) or not ctx.running(pod):
            continue
        ns_label = labels_of(ctx.namespaces.get(ns, {})).get(podinfo.DATAPLANE_MODE)
        pod_label = labels_of(pod).get(podinfo.DATAPLANE_MODE)
        if pod_label == "ambient" or (ns_label == "ambient" and pod_label != "none"):
            yield finding(
                "ambient-not-enrolled",
                "warning",
                "Pod",
                ns,
                name,
                "has an istio-proxy sidecar and the ambient label: ztunnel leaves it to its sidecar; "
                "choose one data plane",
                f"kubectl label pod {name} -n {ns} {podinfo.DATAPLANE_MODE}=none --overwrite",
                pods=[f"{ns}/{name}"],
            )
    for pod, why in _enrolled_targets(ctx):
        ns, name = key_of(pod)
        proxy = ctx.ambient.proxies.get((ns, name))
        if proxy is None:
            continue  # could not be read: listed under incomplete
        ambient = proxy.model.get("ambient") or {}
        protocol, node = ambient.get("protocol"), ambient.get("node")
        if protocol == "HBONE":
            continue
        if ambient.get("ztunnel") is None:
            message = f"belongs to ambient ({why}) but no ztunnel runs on its node {node or '(unknown)'}"
            hint = "kubectl get daemonset ztunnel -n istio-system   # is ztunnel scheduled on every node?"
        elif protocol is None:
            message = f"belongs to ambient ({why}) but ztunnel {ambient['ztunnel']} does not list it as a workload"
            hint = _restart(pod)
        else:
            cause = (
                "istio-cni never marked it (no ambient.istio.io/redirection annotation): it started before the "
                f"label, or istio-cni is not running on node {node}"
                if not ambient.get("redirection")
                else f"istio-cni marked it ({podinfo.REDIRECTION}={ambient['redirection']}) yet ztunnel has not "
                "captured it"
            )
            message = f"belongs to ambient ({why}) but ztunnel lists it as {protocol}, not HBONE: {cause}"
            hint = _restart(pod)
        yield finding(
            "ambient-not-enrolled",
            "error",
            "Pod",
            ns,
            name,
            message + "; its traffic is plaintext",
            hint,
            pods=[f"{ns}/{name}"],
            protocol=protocol,
            node=node,
            ztunnel=ambient.get("ztunnel"),
            enrolled_by=why,
        )


def _cert_cause(reason: str) -> tuple[str, str]:
    """ztunnel's `Unavailable: <reason>` -> (what it means, what to do)."""
    low = reason.lower()
    if any(w in low for w in ("impersonat", "authenticat", "not authorized", "permissiondenied", "unauthorized")):
        return (
            "istiod refused to sign for this identity (ztunnel asks on behalf of the pod's service account)",
            "kubectl -n istio-system set env deploy/istiod CA_TRUSTED_NODE_ACCOUNTS=istio-system/ztunnel",
        )
    if "cert verification failed" in low or "certificate_verify_failed" in low or "unknown issuer" in low:
        return (
            "ztunnel does not trust istiod's serving certificate (their roots differ)",
            "kubectl mtls check -A   # compare roots; then restart ztunnel: kubectl rollout restart daemonset/ztunnel "
            "-n istio-system",
        )
    if any(w in low for w in ("connect", "unavailable", "transport", "timed out", "deadline")):
        return ("ztunnel cannot reach the CA (istiod)", "kubectl get pods -n istio-system -l app=istiod")
    return ("signing failed", "kubectl logs -n istio-system -l app=istiod -c discovery | grep -i csr")


@check(
    "ztunnel-cert",
    area=AREA,
    severity="error",
    title="each ztunnel holds a valid, trusted certificate for the identities of its node",
    reads=("pods", "ztunnels"),
    explain="""
What it looks at: every certificate in each ztunnel's config dump (`istioctl ztunnel-config all`):
its state (`Available`, `Initializing`, `Unavailable: <reason>`), its PEM chain (dates, and whether it
verifies to that ztunnel's own roots), and whether all ztunnels trust the same roots. (A certificate
a ztunnel does not hold yet is not a finding: some versions fetch it on the first connection; `proxy`
and `check pair` say so.) `Unavailable:
the identity is no longer needed` is normal (no pod of that identity left on the node) and ignored.

Why it breaks mTLS: without an Available certificate for an identity, ztunnel cannot open or accept
HBONE for the pods of that identity (`identity error: signing ...` in its log). ztunnels that trust
different roots reject each other's certificates (`invalid peer certificate: UnknownIssuer`), the
ambient form of a root CA mismatch.

How to fix: follow ztunnel's reason: an impersonation or authentication failure needs
`CA_TRUSTED_NODE_ACCOUNTS` on istiod; a CA it cannot reach or does not trust needs istiod and the
roots fixed; then restart the ztunnel pods named in the finding so they fetch fresh certificates and
roots.
""",
)
def ztunnel_cert(ctx: Context) -> Iterator[Finding]:
    pods_by_node_identity: dict[tuple[str | None, str], list[str]] = {}
    for proxy in ctx.ambient.proxies.values():
        ambient = proxy.model.get("ambient") or {}
        pods_by_node_identity.setdefault((ambient.get("node"), str(proxy.model["identity"])), []).append(proxy.ref)
    for view in ctx.ambient.views:
        for cert in view.certificate_entries:
            pods = pods_by_node_identity.get((view.node, cert.identity), [])
            yield from _cert_findings(ctx, view, cert, pods)
    yield from _root_mismatch(ctx.ambient.views)


def _cert_findings(ctx: Context, view: ZtunnelView, cert: Any, pods: list[str]) -> Iterator[Finding]:
    common = {"pods": pods, "identity": cert.identity, "state": cert.state, "ztunnel": view.ref, "node": view.node}
    who = f"ztunnel {view.ref} (node {view.node or '?'})"
    reason = cert.reason
    if reason is not None:
        if reason.startswith("the identity is no longer needed"):
            return
        meaning, hint = _cert_cause(reason)
        yield finding(
            "ztunnel-cert",
            "error",
            "Pod",
            view.namespace,
            view.pod,
            f"{who} has no certificate for {cert.identity}: {meaning} (ztunnel: {reason})",
            hint,
            **common,
        )
        return
    if cert.state == "Initializing":
        yield finding(
            "ztunnel-cert",
            "warning",
            "Pod",
            view.namespace,
            view.pod,
            f"{who} is still fetching the certificate of {cert.identity} (state Initializing; "
            "if it stays so, istiod is not answering its CSR)",
            "kubectl logs -n istio-system -l app=istiod -c discovery | grep -i csr",
            **common,
        )
        return
    if not cert.available or not cert.chain:
        return
    leaf = cert.chain[0].info
    if parse_rfc3339(leaf["not_after"]) <= ctx.now:
        problem = f"expired at {leaf['not_after']}"
    elif parse_rfc3339(leaf["not_before"]) > ctx.now:
        problem = f"is not valid before {leaf['not_before']} (clock skew?)"
    elif cert.chain_verified is False:
        problem = f"does not verify to the ztunnel's own roots ({cert.chain_error})"
    else:
        return
    yield finding(
        "ztunnel-cert",
        "error",
        "Pod",
        view.namespace,
        view.pod,
        f"{who}: the certificate of {cert.identity} {problem}",
        _ztunnel_restart(view),
        fingerprint=leaf["fingerprint_sha256"],
        **common,
    )


def _root_mismatch(views: list[ZtunnelView]) -> Iterator[Finding]:
    groups: dict[frozenset[str], list[ZtunnelView]] = {}
    for view in views:
        roots = view.root_fingerprints()
        if roots:
            groups.setdefault(roots, []).append(view)
    if len(groups) < 2:
        return
    newest = {fps: max(r.info["not_before"] for v in vs for r in v.root_certs()) for fps, vs in groups.items()}
    reference = max(groups, key=lambda fps: (len(groups[fps]), newest[fps]))
    for roots, members in groups.items():
        if roots == reference:
            continue
        for view in members:
            missing = sorted(reference - roots)
            yield finding(
                "ztunnel-cert",
                "error",
                "Pod",
                view.namespace,
                view.pod,
                f"ztunnel {view.ref} (node {view.node or '?'}) trusts other roots than "
                f"{', '.join(v.ref for v in groups[reference])}: HBONE between their nodes fails "
                "(invalid peer certificate: UnknownIssuer); it lacks root "
                + ", ".join(fp[:23] + "…" for fp in missing),
                _ztunnel_restart(view),
                ztunnel=view.ref,
                node=view.node,
                roots=sorted(roots),
                expected_roots=sorted(reference),
                pods=[],
            )


def _endpoint(ctx: Context, pod: dict[str, Any]) -> netpol.Endpoint:
    return netpol.endpoint(pod, labels_of(ctx.namespaces.get(key_of(pod)[0], {})))


def _captured(ctx: Context, key: tuple[str, str]) -> bool:
    """Enrolled, and not known to be TCP (not captured pods send no HBONE)."""
    if key not in ctx.ambient.enrolment:
        return False
    proxy = ctx.ambient.proxies.get(key)
    return proxy is None or (proxy.model.get("ambient") or {}).get("protocol") != "TCP"


def _opens_15008(rule: dict[str, Any]) -> bool:
    ports = _lst(rule.get("ports"))
    probe = netpol.Endpoint("", {}, {})
    return not ports or any(netpol.port_matches(p, HBONE_PORT, "TCP", probe) for p in ports)


@check(
    "hbone-blocked",
    area=AREA,
    severity="error",
    title="NetworkPolicies that let ambient pods talk also allow HBONE (TCP 15008)",
    reads=("pods", "namespaces", "networkpolicies"),
    optional=("ztunnels",),
    explain="""
What it looks at: NetworkPolicies (Kubernetes semantics: podSelector, namespaceSelector, ipBlock,
policyTypes, ports with protocol and endPort, named ports) around ambient pods. For each rule that
lets ambient pods reach an ambient pod on its application ports, the same callers must also be
allowed to reach it on TCP 15008 (ingress), and for each egress rule of an ambient pod towards ambient
pods, 15008 must be allowed too.

Why it breaks mTLS: ztunnel carries ambient traffic as HBONE to the destination pod's IP on port
15008, so the NetworkPolicy sees port 15008, not the application port. A policy that allows only 8080
silently drops every mesh connection; the caller's ztunnel logs `connection timed out, maybe a
NetworkPolicy is blocking HBONE port 15008`.

How to fix: add `{protocol: TCP, port: 15008}` to the rule's ports (the hint patches the exact rule),
or add a rule allowing 15008 from the same peers.
""",
)
def hbone_blocked(ctx: Context) -> Iterator[Finding]:
    policies = ctx.objects("networkpolicies")
    if not policies or not ctx.ambient.enrolment:
        return
    enrolled = [p for p in ctx.pods if _captured(ctx, key_of(p)) and ctx.running(p)]
    endpoints = {key_of(p): _endpoint(ctx, p) for p in enrolled}
    for pod, _why in _enrolled_targets(ctx):
        key = key_of(pod)
        if key not in endpoints:
            continue
        yield from _blocked(ctx, policies, "Ingress", pod, endpoints, enrolled)
        yield from _blocked(ctx, policies, "Egress", pod, endpoints, enrolled)


def _blocked(
    ctx: Context,
    policies: list[dict[str, Any]],
    kind: str,
    pod: dict[str, Any],
    endpoints: dict[tuple[str, str], netpol.Endpoint],
    enrolled: list[dict[str, Any]],
) -> Iterator[Finding]:
    key = key_of(pod)
    me = endpoints[key]
    rule_index: dict[str, int] = {}
    for policy_name, rule in netpol.rules_of(policies, kind, me):
        index = rule_index[policy_name] = rule_index.get(policy_name, -1) + 1
        if _opens_15008(rule):
            continue
        policy_ns = policy_name.split("/", 1)[0]
        blocked: list[str] = []
        for other in enrolled:
            other_key = key_of(other)
            if other_key == key or not netpol.rule_peer_matches(rule, kind, policy_ns, endpoints[other_key]):
                continue
            if kind == "Ingress":
                verdict = netpol.ingress(policies, me, endpoints[other_key], HBONE_PORT)
            else:
                verdict = netpol.egress(policies, me, endpoints[other_key], HBONE_PORT)
            if not verdict.allowed:
                blocked.append("/".join(other_key))
        if not blocked:
            continue
        ns, name = policy_name.split("/", 1)
        ports = [
            f"{p.get('protocol', 'TCP')}/{p.get('port', '*')}" + (f"-{p['endPort']}" if p.get("endPort") else "")
            for p in _lst(rule.get("ports"))
            if isinstance(p, dict)
        ]
        direction = "from" if kind == "Ingress" else "to"
        shown = ", ".join(blocked[:5]) + (f" and {len(blocked) - 5} more" if len(blocked) > 5 else "")
        patch = (
            f"kubectl -n {ns} patch networkpolicy {name} --type=json -p "
            f'\'[{{"op":"add","path":"/spec/{kind.lower()}/{index}/ports/-",'
            f'"value":{{"protocol":"TCP","port":{HBONE_PORT}}}}}]\''
        )
        yield finding(
            "hbone-blocked",
            "error",
            "NetworkPolicy",
            ns,
            name,
            f"{kind.lower()} rule {index} allows {', '.join(ports)} {direction} ambient pods ({shown}) for "
            f"{'/'.join(key)}, but no NetworkPolicy allows TCP {HBONE_PORT} (HBONE) for them: "
            "their mesh connections time out",
            patch,
            pods=["/".join(key), *blocked],
            direction=kind.lower(),
            rule=index,
            ports=ports,
        )


def _applied(
    ctx: Context, policy: dict[str, Any], targets: list[dict[str, Any]], ids: set[int]
) -> list[dict[str, Any]]:
    """The pods of `targets` (whose ids are `ids`) a policy is for: every one for a root-namespace
    policy without selector, else the pods of the policy's namespace whose labels hold its
    matchLabels (all of them without). Found through the pod index, in `targets`' order."""
    policy_ns = key_of(policy)[0]
    selector = as_dict(as_dict(policy.get("spec")).get("selector")).get("matchLabels")
    if selector is not None and not isinstance(selector, dict):
        return []
    if policy_ns == ctx.mesh.root_namespace and not selector:
        return list(targets)
    return [p for p in ctx.select_pods(policy_ns, selector or None) if id(p) in ids]


@check(
    "ambient-peerauthn",
    area=AREA,
    severity="warning",
    title="PeerAuthentications on ambient pods say what ztunnel enforces",
    reads=("pods", "namespaces", "peerauthentications"),
    optional=("services",),
    explain="""
What it looks at: PeerAuthentications that apply to ambient pods: `DISABLE` (top level or per port),
`portLevelMtls` without a workload selector, root-namespace policies with a selector; and STRICT on
ambient pods while pods of the same namespace have no mesh identity (no sidecar, not ambient). (The
kube-apiserver calling a webhook served by a STRICT ambient pod is `apiserver-caller-strict`.)

Why it matters: ztunnel always speaks mTLS between enrolled pods, so DISABLE is not supported in
ambient (istio/api#3184) and port-level settings need a selector; root-namespace policies with a
selector are ignored (istio/istio#61023): what the policy says is not what happens. Under STRICT
ztunnel rejects every plaintext caller: non-mesh pods lose access.

How to fix: delete DISABLE policies (or move the workload out of ambient); give port-level policies a
selector; enrol the non-mesh callers or keep PERMISSIVE.
""",
)
def ambient_peerauthn(ctx: Context) -> Iterator[Finding]:
    targets = list(_enrolled_targets(ctx))
    if not targets:
        return
    pods_only = [p for p, _ in targets]
    ids = {id(p) for p in pods_only}
    for policy in ctx.objects("peerauthentications"):
        pns, pname = key_of(policy)
        spec = as_dict(policy.get("spec"))
        hit = _applied(ctx, policy, pods_only, ids)
        selector = as_dict(spec.get("selector")).get("matchLabels")
        pods = [f"{key_of(p)[0]}/{key_of(p)[1]}" for p in hit]
        modes = [str(as_dict(spec.get("mtls")).get("mode") or "")] + [
            str(as_dict(v).get("mode") or "") for v in as_dict(spec.get("portLevelMtls")).values()
        ]
        if hit and "DISABLE" in modes:
            yield finding(
                "ambient-peerauthn",
                "warning",
                "PeerAuthentication",
                pns,
                pname,
                "says DISABLE, which ztunnel does not support: mTLS stays on between ambient pods "
                f"({len(pods)} pod(s) here)",
                f"kubectl delete peerauthentication {pname} -n {pns}",
                pods=pods,
            )
        if spec.get("portLevelMtls") and not selector and (hit or pns == ctx.mesh.root_namespace):
            yield finding(
                "ambient-peerauthn",
                "warning",
                "PeerAuthentication",
                pns,
                pname,
                "has portLevelMtls without a workload selector: ignored",
                f"kubectl edit peerauthentication {pname} -n {pns}   # add spec.selector.matchLabels",
                pods=pods,
            )
        if pns == ctx.mesh.root_namespace and selector:
            yield finding(
                "ambient-peerauthn",
                "warning",
                "PeerAuthentication",
                pns,
                pname,
                "is in the root namespace and has a selector: ambient ignores it",
                f"move it to the namespace of the pods it selects (kubectl get peerauthentication {pname} -n {pns} "
                "-o yaml)",
                pods=[],
            )
    yield from _strict_callers(ctx, targets)


def _strict_callers(ctx: Context, targets: list[tuple[dict[str, Any], str]]) -> Iterator[Finding]:
    strict = [p for p, _ in targets if ctx.effective(p).mode == "STRICT"]
    by_ns: dict[str, list[str]] = {}
    for pod in strict:
        by_ns.setdefault(key_of(pod)[0], []).append("/".join(key_of(pod)))
    for ns, pods in sorted(by_ns.items()):
        outsiders = [
            "/".join(key_of(p))
            for p in ctx.pods_by_namespace.get(ns, [])
            if ctx.running(p)
            and not podinfo.has_envoy(p)
            and key_of(p) not in ctx.ambient.enrolment
            and not as_dict(p.get("spec")).get("hostNetwork")
            and not _is_gateway(p)
        ]
        if outsiders:
            yield finding(
                "ambient-peerauthn",
                "warning",
                "Namespace",
                "",
                ns,
                f"STRICT applies to ambient pods here, and {len(outsiders)} pod(s) of {ns} have no mesh identity "
                f"({', '.join(outsiders[:5])}): their plaintext calls to the ambient pods are rejected",
                f"kubectl label namespace {ns} {podinfo.DATAPLANE_MODE}=ambient --overwrite   # then restart them",
                pods=[*pods, *outsiders],
                outsiders=outsiders,
            )


def _waypoint_of(ctx: Context, pod: dict[str, Any]) -> tuple[str, str, str, str] | None:
    """(kind, object, waypoint namespace, waypoint name) of the `istio.io/use-waypoint` that applies."""
    ns, name = key_of(pod)
    candidates: list[tuple[str, str, dict[str, str]]] = [("Pod", name, labels_of(pod))]
    candidates += [("Service", key_of(s)[1], labels_of(s)) for s in ctx.services_of(pod)]
    candidates.append(("Namespace", ns, labels_of(ctx.namespaces.get(ns, {}))))
    for kind, obj, labels in candidates:
        value = labels.get(USE_WAYPOINT)
        if value:
            if value == "none":
                return None
            return kind, obj, labels.get(USE_WAYPOINT_NS) or ns, value
    return None


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in _lst(as_dict(obj.get("status")).get("conditions")):
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


@check(
    "waypoint-missing",
    area=AREA,
    severity="error",
    title="every istio.io/use-waypoint names a waypoint that exists and is ready",
    reads=("pods", "namespaces", "services", "gateways"),
    explain="""
What it looks at: the label `istio.io/use-waypoint` on ambient pods, their Services and namespaces
(pod first, then Service, then namespace; `none` opts out; `istio.io/use-waypoint-namespace` names
another namespace) and the Gateway it names (class `istio-waypoint`), with its `Programmed` condition.

Why it matters: traffic for a destination bound to a waypoint goes through that waypoint, which
enforces its L7 AuthorizationPolicies. A waypoint that does not exist, or is not programmed, enforces
nothing: the L7 policies meant for it do not apply, and connections that need it fail.

How to fix: create the waypoint (`istioctl waypoint apply -n NS --name NAME`), fix the label's value,
or look at the Gateway's status (`kubectl get gateway NAME -n NS -o yaml`).
""",
)
def waypoint_missing(ctx: Context) -> Iterator[Finding]:
    gateways = {key_of(g): g for g in ctx.objects("gateways")}
    seen: dict[tuple[str, str, str, str], list[str]] = {}
    for pod, _why in _enrolled_targets(ctx):
        bound = _waypoint_of(ctx, pod)
        if bound is not None:
            seen.setdefault(bound, []).append("/".join(key_of(pod)))
    for (kind, obj, wns, wname), pods in sorted(seen.items()):
        gateway = gateways.get((wns, wname))
        owner_ns = "" if kind == "Namespace" else pods[0].split("/", 1)[0]
        if gateway is None:
            message = f"{USE_WAYPOINT}={wname} names a waypoint that does not exist in {wns}"
            hint = f"istioctl waypoint apply -n {wns} --name {wname}"
        else:
            programmed = _condition(gateway, "Programmed")
            if programmed is None or programmed.get("status") != "False":
                continue
            message = f"waypoint {wns}/{wname} is not ready (Programmed=False: {programmed.get('message') or ''})"
            hint = f"kubectl get gateway {wname} -n {wns} -o yaml"
        yield finding(
            "waypoint-missing",
            "error",
            kind,
            owner_ns,
            obj,
            message + f": the L7 policies meant for it are not enforced for {len(pods)} pod(s)",
            hint,
            pods=pods,
            waypoint=f"{wns}/{wname}",
        )


L7_OPERATION = ("methods", "notMethods", "paths", "notPaths", "hosts", "notHosts")
L7_SOURCE = ("requestPrincipals", "notRequestPrincipals")


def _l7_fields(rule: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for entry in _lst(rule.get("to")):
        operation = as_dict(as_dict(entry).get("operation"))
        found += [f"to.operation.{f}" for f in L7_OPERATION if operation.get(f)]
    for entry in _lst(rule.get("from")):
        source = as_dict(as_dict(entry).get("source"))
        found += [f"from.source.{f}" for f in L7_SOURCE if source.get(f)]
    for cond in _lst(rule.get("when")):
        key = str(as_dict(cond).get("key") or "")
        if key.startswith("request.") or key.startswith("experimental.envoy"):
            found.append(f"when {key}")
    return found


@check(
    "waypoint-policy-unbound",
    area=AREA,
    severity="warning",
    title="AuthorizationPolicies with L7 rules on ambient pods are bound to a waypoint",
    reads=("pods", "namespaces", "authorizationpolicies"),
    explain="""
What it looks at: AuthorizationPolicies that select ambient pods (by `selector`, namespace-wide or from
the root namespace) instead of a waypoint (`targetRefs`), and use L7 fields (methods, paths, hosts,
requestPrincipals, `request.*` conditions); and every policy whose status says `ZtunnelAccepted` or
`WaypointAccepted` is False, with istiod's message.

Why it breaks traffic: ztunnel only enforces L4. It drops the L7 parts: an ALLOW rule with L7 fields
matches nothing (a policy made only of such rules denies every caller) and a DENY rule with L7 fields
matches everything (all callers denied).

How to fix: deploy a waypoint for the workload and bind the policy to it with `targetRefs` (kind
Gateway or Service), or reduce the policy to L4 fields (principals, namespaces, ipBlocks, ports).
""",
)
def waypoint_policy_unbound(ctx: Context) -> Iterator[Finding]:
    targets = [p for p, _ in _enrolled_targets(ctx)]
    ids = {id(p) for p in targets}
    for policy in ctx.objects("authorizationpolicies"):
        pns, pname = key_of(policy)
        spec = as_dict(policy.get("spec"))
        for kind in ("ZtunnelAccepted", "WaypointAccepted"):
            cond = _condition(policy, kind)
            if cond and cond.get("status") == "False":
                yield finding(
                    "waypoint-policy-unbound",
                    "warning",
                    "AuthorizationPolicy",
                    pns,
                    pname,
                    f"{kind}=False: {cond.get('message') or cond.get('reason') or 'no message'}",
                    f"kubectl get authorizationpolicy {pname} -n {pns} -o yaml",
                    pods=[],
                    condition=kind,
                    reason=cond.get("reason"),
                )
        if spec.get("targetRef") or spec.get("targetRefs") or not targets:
            continue
        hit = ["/".join(key_of(p)) for p in _applied(ctx, policy, targets, ids)]
        if not hit:
            continue
        rules = [r for r in _lst(spec.get("rules")) if isinstance(r, dict)]
        l7 = [(i, _l7_fields(r)) for i, r in enumerate(rules)]
        l7 = [(i, f) for i, f in l7 if f]
        if not l7:
            continue
        action = str(spec.get("action") or "ALLOW").upper()
        fields = sorted({f for _, fs in l7 for f in fs})
        if action == "DENY":
            effect, severity = "ztunnel applies its L7 rules as deny-everything: every caller is denied", "error"
        elif len(l7) == len(rules):
            effect, severity = "ztunnel drops its L7 rules, so nothing is allowed: every caller is denied", "error"
        else:
            effect, severity = (
                f"ztunnel drops rule(s) {', '.join(str(i) for i, _ in l7)} (L7): they allow nobody",
                "warning",
            )
        if action not in ("ALLOW", "DENY"):
            continue
        yield finding(
            "waypoint-policy-unbound",
            severity,
            "AuthorizationPolicy",
            pns,
            pname,
            f"{action} policy with L7 fields ({', '.join(fields)}) selects ambient pods without a waypoint "
            f"(no targetRefs): {effect}",
            f"istioctl waypoint apply -n {pns} --enroll-namespace && kubectl edit authorizationpolicy {pname} -n {pns}"
            '   # replace selector with targetRefs: [{kind: Service, group: "", name: SERVICE}]',
            pods=hit,
            l7_fields=fields,
        )


@check(
    "ztunnel-errors",
    area=AREA,
    severity="warning",
    title="ztunnel's recent access log shows no mTLS, policy or HBONE failures",
    reads=("pods", "ztunnel-logs"),
    needs_logs=True,
    explain="""
What it looks at: the last lines of each ztunnel's log (`--logs`), its `error access connection
complete ... error="..."` lines, classified by ztunnel's own error text: policy rejection (`allow
policies exist, but none allowed`, `explicitly denied by: NS/NAME`), `connection timed out, maybe a
NetworkPolicy is blocking HBONE port 15008`, TLS handshake errors, `peer did not present the expected
SAN` / trust domain, unknown issuer, revoked certificates, identity (signing) errors, `unknown
destination` / waypoint, `no healthy upstream`. Each finding names the source and destination
workloads from the line.

Why it matters: these are connections that already failed, with the side and the reason ztunnel saw.

How to fix: by class: the AuthorizationPolicy named (or `kubectl mtls check pair SRC DST`), the
NetworkPolicy (hbone-blocked), the certificates and roots (ztunnel-cert, rootdiff), the destination.
""",
)
def ztunnel_errors(ctx: Context) -> Iterator[Finding]:
    from ..normalize.ztunnel_logs import MEANING, classify_log

    for (zns, zname), text in sorted(ctx.ambient.logs.items()):
        for item in classify_log(text):
            src = f"{item.src_namespace}/{item.src_workload}" if item.src_workload else (item.src_addr or "?")
            dst = f"{item.dst_namespace}/{item.dst_workload}" if item.dst_workload else "?"
            pods = [p for p in (src, dst) if "/" in p and not p.startswith("?")]
            hint: str | None = None
            if item.kind.startswith("policy") and item.policy:
                policy_ns, _, policy_name = item.policy.partition("/")
                hint = f"kubectl get authorizationpolicy {policy_name} -n {policy_ns} -o yaml"
            elif item.kind.startswith("policy"):
                hint = f"kubectl mtls check pair {src} {dst}" if "/" in src and "/" in dst else None
            elif item.kind == "hbone-blocked":
                hint = f"kubectl mtls check -n {item.dst_namespace or 'NS'}   # see hbone-blocked"
            elif item.kind in ("unknown-issuer", "san-mismatch", "trust-domain"):
                hint = f"kubectl mtls rootdiff {src} {dst}" if "/" in src and "/" in dst else None
            yield finding(
                "ztunnel-errors",
                "warning",
                "Pod",
                item.dst_namespace or zns,
                item.dst_workload or zname,
                f"ztunnel {zns}/{zname} logged {item.count}x {item.kind} ({item.direction or '?'}) {src} -> {dst}: "
                f'{MEANING.get(item.kind, item.kind)} (error="{item.error}")',
                hint,
                pods=pods,
                log_class=item.kind,
                direction=item.direction,
                source=src,
                destination=dst,
                policy=item.policy,
                ztunnel=f"{zns}/{zname}",
                line=item.line,
            )


@check(
    "ztunnel-allow-nothing",
    area=AREA,
    severity="warning",
    title="no L4 policy in ztunnel's config denies every connection to ambient pods by accident",
    reads=("pods", "ztunnels"),
    optional=("authorizationpolicies",),
    explain="""
What it looks at: the L4 policies as ztunnel's own config dump prints them, applied the way ztunnel
applies them (scope Global, Namespace, or the workload's `authorizationPolicies`): an `Allow` policy
without rules on captured pods. When the AuthorizationPolicy object is known, `authz-deny-all` reports
it; this check reports what ztunnel enforces without such an object (a stale policy, or a dump read
without its cluster).

Why it matters: ztunnel allows nothing under an ALLOW policy without rules, so every connection to
those pods is closed with `connection closed due to policy rejection: allow policies exist, but none
allowed`, whatever their certificates say.

How to fix: add ALLOW policies for the legitimate callers, or delete the policy; if no object exists,
restart the ztunnel so it drops the stale policy.
""",
)
def ztunnel_allow_nothing(ctx: Context) -> Iterator[Finding]:
    known = {"/".join(key_of(p)) for p in ctx.objects("authorizationpolicies")}
    from ..istio import ztunnel_rbac

    for view in ctx.ambient.views:
        hit: dict[str, list[str]] = {}
        for workload in view.workloads:
            if workload["protocol"] != "HBONE" or ctx.exempt(workload["namespace"]):
                continue
            for policy in ztunnel_rbac.applicable(view.policies, workload):
                key = f"{policy['namespace']}/{policy['name']}"
                if policy["action"] == "Allow" and not policy["rules"] and not policy["dry_run"] and key not in known:
                    hit.setdefault(key, []).append(f"{workload['namespace']}/{workload['name']}")
        for key, pods in sorted(hit.items()):
            ns, _, name = key.partition("/")
            yield finding(
                "ztunnel-allow-nothing",
                "warning",
                "AuthorizationPolicy",
                ns,
                name,
                f"ztunnel {view.ref} applies ALLOW policy {key} without rules to {len(pods)} captured pod(s): "
                "it allows nothing, every connection to them is rejected",
                f"kubectl get authorizationpolicy {name} -n {ns} -o yaml",
                pods=pods,
                ztunnel=view.ref,
            )
        if hit:
            break  # every ztunnel holds the same policies: report them once
