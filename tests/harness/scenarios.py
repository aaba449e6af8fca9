"""Ready-made meshes of real Envoy sidecars, with the Pod objects a cluster would show for them.

`rotation` is the bundled demo (examples/rotation): a root CA rotation where one deployment was
not restarted, so it still holds the old root and a certificate signed by it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from harness.envoy import GatewayServer, Mesh, OutboundCluster, RunningSidecar, Sidecar, invalid_lua_listener
from harness.pki import Issued, make_root, make_workload, spiffe_id

NAMESPACE = "shop"
YEARS = 5  # the demo's certificates stay valid for years, so it shows the fault, not an expiry


def proxy_status_table(rows: list[tuple[str, str, dict[str, str]]], version: str = "1.28.0") -> str:
    """`istioctl proxy-status -v 1` (1.27+) as Go's tabwriter lays it out: (pod, namespace, {type: state})."""
    header = ["NAME", "CLUSTER", "CDS", "ECDS", "EDS", "LDS", "RDS", "ISTIOD", "VERSION"]
    table = [header] + [
        [
            f"{pod}.{ns}",
            "Kubernetes",
            *(states.get(t, "SYNCED") for t in ("CDS", "ECDS", "EDS", "LDS", "RDS")),
            "istiod-7d4f8b9c6-x2kqz",
            version,
        ]
        for pod, ns, states in rows
    ]
    widths = [max(len(r[i]) for r in table) + 3 for i in range(len(header))]
    return "\n".join("".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table) + "\n"


def add_sidecar(
    mesh: Mesh, namespace: str, pod: str, service_account: str, cert: Issued, roots: list[Issued], **kw: Any
) -> RunningSidecar:
    """Start one sidecar holding `cert` (secret default) and `roots` (secret ROOTCA)."""
    return mesh.add(
        Sidecar(
            pod=pod,
            namespace=namespace,
            service_account=service_account,
            cert_chain_pem=cert.cert_pem,
            key_pem=cert.key_pem,
            root_pems=[r.cert_pem for r in roots],
            **kw,
        )
    )


@dataclass
class Scenario:
    namespace: str
    sidecars: dict[str, RunningSidecar] = field(default_factory=dict)  # pod name -> sidecar
    pods: list[dict[str, Any]] = field(default_factory=list)  # Pod objects for the API double
    objects: list[dict[str, Any]] = field(default_factory=list)  # namespaces, services, SAs
    roots: dict[str, Issued] = field(default_factory=dict)
    proxy_status: str = ""


def gateway_pod_object(namespace: str, name: str, service_account: str) -> dict[str, Any]:
    """A gateway Pod as Istio deploys it: istio-proxy runs `proxy router`, no tlsMode label."""
    pod = pod_object(namespace, name, "ingress", service_account, sidecar="absent")
    pod["metadata"]["labels"] = {"app": "ingress", "istio": "ingressgateway"}
    pod["spec"]["containers"] = [
        {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.28.0", "args": ["proxy", "router"]}
    ]
    return pod


def pod_object(
    namespace: str,
    name: str,
    app: str,
    service_account: str,
    *,
    sidecar: str = "present",
    owner: tuple[str, str] | None = None,
    created: str = "2026-01-01T00:00:00Z",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Pod as the API returns it: injected (container or native sidecar) or not."""
    labels = {"app": app}
    refs = []
    if owner:
        kind, owner_name = owner
        if kind == "ReplicaSet":
            labels["pod-template-hash"] = owner_name.rsplit("-", 1)[1]
        refs = [
            {"apiVersion": "apps/v1", "kind": kind, "name": owner_name, "controller": True, "uid": f"uid-{owner_name}"}
        ]
    if sidecar != "absent":
        labels["security.istio.io/tlsMode"] = "istio"
    proxy = {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.28.0", "args": ["proxy", "sidecar"]}
    containers = [{"name": app, "image": f"example/{app}:1.0", "ports": [{"containerPort": 8080}]}]
    init: list[dict[str, Any]] = []
    if sidecar == "present":
        containers.append(proxy)
    elif sidecar == "native":
        init.append({**proxy, "restartPolicy": "Always"})
    spec: dict[str, Any] = {"serviceAccountName": service_account, "containers": containers}
    if init:
        spec["initContainers"] = init
    annotations = {
        **({"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'} if sidecar != "absent" else {}),
        **(annotations or {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": refs,
            "creationTimestamp": created,
        },
        "spec": spec,
        "status": {"phase": "Running", "podIP": "127.0.0.1"},
    }


def rotation(mesh: Mesh, now: dt.datetime | None = None) -> Scenario:
    """frontend and payments were restarted after the root rotation; orders was not."""
    now = now or dt.datetime.now(dt.UTC)
    ns = NAMESPACE
    old_root = make_root(not_before=now - dt.timedelta(days=700), days=3650)
    new_root = make_root(not_before=now - dt.timedelta(days=3), days=3650)
    hours = YEARS * 365 * 24

    def cert(root: Issued, sa: str, start: dt.timedelta) -> Issued:
        return make_workload(root, ns, sa, not_before=now - start, hours=hours, chain=[root])

    sc = Scenario(namespace=ns, roots={"old": old_root, "new": new_root})
    orders_cert = cert(old_root, "orders", dt.timedelta(days=30))
    payments_cert = cert(new_root, "payments", dt.timedelta(days=2))
    frontend_cert = cert(new_root, "frontend", dt.timedelta(days=2))
    orders = add_sidecar(
        mesh,
        ns,
        "orders-7f5b9c6d8-wq4zn",
        "orders",
        orders_cert,
        [old_root],
        inbound_mode="STRICT",
        labels={"app": "orders"},
    )
    payments = add_sidecar(
        mesh,
        ns,
        "payments-5d8c7b9f6-h3m9t",
        "payments",
        payments_cert,
        [new_root],
        inbound_mode="STRICT",
        labels={"app": "payments"},
    )
    frontend = add_sidecar(
        mesh,
        ns,
        "frontend-6c9f7d8b4-k2x7p",
        "frontend",
        frontend_cert,
        [new_root],
        labels={"app": "frontend"},
        outbound=[
            OutboundCluster(
                f"orders.{ns}.svc.cluster.local",
                8080,
                orders.inbound_port or 0,
                expected_sans=[f"spiffe://cluster.local/ns/{ns}/sa/orders"],
            ),
            OutboundCluster(
                f"payments.{ns}.svc.cluster.local",
                8080,
                payments.inbound_port or 0,
                expected_sans=[f"spiffe://cluster.local/ns/{ns}/sa/payments"],
            ),
        ],
    )
    sc.sidecars = {s.spec.pod: s for s in (frontend, orders, payments)}
    sc.pods = [
        pod_object(
            ns,
            frontend.spec.pod,
            "frontend",
            "frontend",
            owner=("ReplicaSet", "frontend-6c9f7d8b4"),
            created="2026-11-20T09:12:00Z",
        ),
        pod_object(
            ns,
            orders.spec.pod,
            "orders",
            "orders",
            owner=("ReplicaSet", "orders-7f5b9c6d8"),
            created="2026-10-24T14:03:00Z",
        ),
        pod_object(
            ns,
            payments.spec.pod,
            "payments",
            "payments",
            sidecar="native",
            owner=("ReplicaSet", "payments-5d8c7b9f6"),
            created="2026-11-20T09:15:00Z",
        ),
        pod_object(
            ns,
            "reports-29384750-xk2lp",
            "reports",
            "default",
            sidecar="absent",
            owner=("Job", "reports-29384750"),
            created="2026-11-22T02:00:00Z",
        ),
    ]
    sc.pods[-1]["status"]["phase"] = "Succeeded"  # a finished Job pod: no sidecar needed any more
    for pod, sidecar in ((sc.pods[1], orders), (sc.pods[2], payments)):
        pod["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": sidecar.inbound_port}]
    sc.proxy_status = proxy_status_table([(s.spec.pod, ns, {}) for s in (frontend, orders, payments)])
    sc.objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"istio-injection": "enabled"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}},
        *(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}}
            for sa in ("default", "frontend", "orders", "payments")
        ),
        # The Services target the sidecars' real inbound ports (loopback ports in this harness), so what
        # the listeners enforce is compared port by port, as on a cluster.
        *(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": app, "namespace": ns},
                "spec": {
                    "selector": {"app": app},
                    "ports": [{"name": "http", "port": 8080, "targetPort": sidecar.inbound_port}],
                },
            }
            for app, sidecar in (("orders", orders), ("payments", payments))
        ),
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "istio-system", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"mtls": {"mode": "STRICT"}},
        },
        *(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "istio-ca-root-cert", "namespace": where},
                "data": {"root-cert.pem": new_root.cert_pem.decode()},
            }
            for where in (ns, "istio-system")
        ),
    ]
    return sc


# -- `kubectl mtls check`: one mesh where every check fails once, one where all pass ----------------

ISTIO_NS = "istio-system"


def _ns(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _sa(ns: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}


def _svc(ns: str, name: str, app: str, ports: tuple[int, ...] = (80,), target: int = 8080) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": f"http-{p}", "port": p, "targetPort": target} for p in ports],
        },
    }


def _pa(
    ns: str,
    name: str,
    mode: str | None,
    created: str,
    match: dict[str, str] | None = None,
    ports: dict[int, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if mode:
        spec["mtls"] = {"mode": mode}
    if match is not None:
        spec["selector"] = {"matchLabels": match}
    if ports:
        spec["portLevelMtls"] = {str(p): {"mode": m} for p, m in ports.items()}
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
        "spec": spec,
    }


def _dr(ns: str, name: str, host: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"host": host, "trafficPolicy": {"tls": {"mode": mode}}},
    }


def _ap(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec,
    }


def _root_configmap(root: Issued) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio-ca-root-cert", "namespace": ISTIO_NS},
        "data": {"root-cert.pem": root.cert_pem.decode()},
    }


@dataclass
class CheckWorld:
    """Pods and objects for the API double, plus which Envoy answers for each pod (pod.ns -> admin URL)."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    admins: dict[tuple[str, str], str] = field(default_factory=dict)
    proxy_rows: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # for proxy_status_table
    logs: dict[tuple[str, str, str], str] = field(default_factory=dict)
    roots: dict[str, Issued] = field(default_factory=dict)


def _serve(world: CheckWorld, ns: str, pod: dict[str, Any], sidecar: RunningSidecar) -> None:
    world.objects.append(pod)
    world.admins[(ns, pod["metadata"]["name"])] = sidecar.admin_url


def broken_world(mesh: Mesh, now: dt.datetime | None = None) -> CheckWorld:
    """Every non-log check fails exactly where the comments say. Namespaces `app` and `team`."""
    now = now or dt.datetime.now(dt.UTC)
    # The current root expires in ~9 months: ca-root-expiring.
    current = make_root(not_before=now - dt.timedelta(days=30), days=300)
    old = make_root(not_before=now - dt.timedelta(days=900))
    w = CheckWorld(roots={"current": current, "old": old})

    def sidecar(ns: str, pod: str, sa: str, cert: Issued, roots: list[Issued], **kw: Any) -> RunningSidecar:
        # Like a real sidecar, every one has an inbound listener: it is what makes Envoy load the
        # `default` and `ROOTCA` secrets at all.
        kw.setdefault("inbound_mode", "STRICT")
        return add_sidecar(mesh, ns, pod, sa, cert, roots, **kw)

    def cert(sa: str, ns: str = "app", root: Issued = current, **kw: Any) -> Issued:
        return make_workload(root, ns, sa, chain=[root], **kw)

    web = sidecar("app", "web-5d9f8c7b6-aaaaa", "web", cert("web"), [current], inbound_mode="STRICT")
    host = "web.app.svc.cluster.local"
    client = sidecar(
        "app",
        "client-6b7c8d9f5-bbbbb",
        "client",
        cert("client"),
        [current],
        outbound=[
            OutboundCluster(host, 80, web.inbound_port or 0, expected_sans=[spiffe_id("app", "web")]),
            # a DestinationRule DISABLE: plaintext to a STRICT server (outbound-plaintext-to-strict)
            OutboundCluster(host, 81, web.inbound_port or 0, mode="DISABLE", destination_rule=("app", "web-plain")),
        ],
    )
    stale = sidecar("app", "stale-7c8d9e6f4-ccccc", "stale", cert("stale", root=old), [old])  # root-mismatch
    expired = sidecar(
        "app",
        "expired-8d9e7f5a3-ddddd",
        "expired",
        cert("expired", not_before=now - dt.timedelta(hours=48), hours=24),
        [current],
    )
    wrong = sidecar("app", "wrongid-9e7f6a4b2-eeeee", "wrongid", cert("somebody-else"), [current])
    aging = sidecar(
        "app",
        "aging-1f2a3b4c5-fffff",
        "aging",
        cert("aging", not_before=now - dt.timedelta(hours=20), hours=24),
        [current],
    )
    future = sidecar(
        "app",
        "future-2a3b4c5d6-ggggg",
        "future",
        cert("future", not_before=now + dt.timedelta(hours=3), hours=24),
        [current],
    )
    untrusted = sidecar(
        "app", "untrusted-3b4c5d6e7-hhhhh", "untrusted", cert("untrusted", root=old), [current]
    )  # cert-chain-untrusted
    drift = sidecar(
        "app", "drift-4c5d6e7f8-iiiii", "drift", cert("drift"), [current], inbound_mode="PERMISSIVE"
    )  # proxy-policy-drift (laxer than STRICT)
    team = sidecar(
        "team", "tools-5d6e7f8a9-jjjjj", "tools", cert("tools", ns="team"), [current], inbound_mode="PERMISSIVE"
    )
    # DISABLE by its workload policy, yet a DestinationRule sends it ISTIO_MUTUAL: tls-to-plaintext-server
    plainsrv = sidecar(
        "app", "plainsrv-2d3e4f5a6-qqqqq", "plainsrv", cert("plainsrv"), [current], inbound_mode="DISABLE"
    )

    def p(ns: str, name: str, app: str, sa: str, **kw: Any) -> dict[str, Any]:
        return pod_object(ns, name, app, sa, owner=("ReplicaSet", name.rsplit("-", 1)[0]), **kw)

    for ns, sc, app in (
        ("app", web, "web"),
        ("app", client, "client"),
        ("app", stale, "stale"),
        ("app", expired, "expired"),
        ("app", wrong, "wrongid"),
        ("app", aging, "aging"),
        ("app", future, "future"),
        ("app", untrusted, "untrusted"),
        ("app", drift, "drift"),
        ("team", team, "tools"),
        ("app", plainsrv, "plainsrv"),
    ):
        _serve(w, ns, p(ns, sc.spec.pod, app, sc.spec.service_account), sc)
    # Pods that reuse an Envoy: the probe pod (web's identity) and two unsynced pods.
    probe = p(
        "app", "probe-6e7f8a9b1-kkkkk", "web", "web", annotations={"sidecar.istio.io/rewriteAppHTTPProbers": "false"}
    )
    probe["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080}}
    _serve(w, "app", probe, web)
    # Prometheus (no sidecar) scrapes an application port that STRICT covers: metrics-scrape-strict
    scraped = p(
        "app",
        "scraped-2b3c4d5e6-sssss",
        "scraped",
        "web",
        annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
    )
    _serve(w, "app", scraped, web)
    _serve(w, "app", p("app", "lagging-7f8a9b1c2-lllll", "web", "web"), web)
    # Envoy rejected its latest virtualInbound (proxy-status LDS ERROR): envoy-config-rejected
    nacked = sidecar("app", "nacked-8a9b1c2d3-mmmmm", "web", cert("web"), [current])
    nacked.push_rejected(listeners=[invalid_lua_listener("virtualInbound", nacked.inbound_port or 0)])
    _serve(w, "app", p("app", "nacked-8a9b1c2d3-mmmmm", "web", "web"), nacked)
    # An ingress gateway whose MUTUAL server names a credential that never arrived: gateway-credential-missing
    gateway = add_sidecar(
        mesh,
        ISTIO_NS,
        "ingress-3e4f5a6b7-rrrrr",
        "ingress",
        make_workload(current, ISTIO_NS, "ingress", chain=[current]),
        [current],
        gateway=[GatewayServer("PLAINTEXT"), GatewayServer("MUTUAL", ["api.example.com"], "api-cert", delivered=False)],
    )
    _serve(w, ISTIO_NS, gateway_pod_object(ISTIO_NS, "ingress-3e4f5a6b7-rrrrr", "ingress"), gateway)
    # No sidecar although STRICT applies, behind Service web: sidecar-missing + mixed-sidecar-service.
    w.objects.append(p("app", "legacy-9b1c2d3e4-nnnnn", "web", "default", sidecar="absent"))
    ambient = pod_object("app", "mesh-less-1c2d3e4f5-ooooo", "ambient", "default", sidecar="absent")
    ambient["metadata"]["annotations"]["ambient.istio.io/redirection"] = "enabled"
    w.objects.append(ambient)
    w.objects += [
        _ns("app", **{"istio-injection": "enabled"}),
        _ns("team"),
        _ns(ISTIO_NS),
        *(
            _sa("app", sa)
            for sa in (
                "default",
                "web",
                "client",
                "stale",
                "expired",
                "wrongid",
                "aging",
                "future",
                "untrusted",
                "drift",
                "plainsrv",
            )
        ),
        _sa("team", "tools"),
        _svc("app", "web", "web", ports=(80, 81)),
        _pa(ISTIO_NS, "default", "STRICT", "2026-01-01T00:00:00Z"),
        _pa(ISTIO_NS, "zz-newer-mesh", "PERMISSIVE", "2026-06-01T00:00:00Z"),  # ignored duplicate (conflict)
        _pa("team", "default", "PERMISSIVE", "2026-02-01T00:00:00Z", ports={9090: "DISABLE"}),  # overridden+conflict
        _pa("app", "ghost", "STRICT", "2026-02-01T00:00:00Z", match={"app": "ghost"}),  # selects no pod
        _dr("app", "web-plain", "web", "DISABLE"),  # destinationrule-tls-conflict
        _svc("app", "plainsrv", "plainsrv"),
        _pa("app", "plainsrv", "DISABLE", "2026-02-01T00:00:00Z", match={"app": "plainsrv"}),
        _dr("app", "plainsrv-mtls", "plainsrv", "ISTIO_MUTUAL"),  # tls-to-plaintext-server
        _ap(
            "team",
            "tools-by-identity",
            {
                "selector": {"matchLabels": {"app": "tools"}},
                "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/app/sa/client"]}}]}],
            },
        ),  # authz-requires-mtls
        _ap(
            "app",
            "web-from-ghost",
            {
                "selector": {"matchLabels": {"app": "web"}},
                "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/app/sa/ghost"]}}]}],
            },
        ),  # principal-unknown
        _ap("app", "nothing", {"selector": {"matchLabels": {"app": "drift"}}}),  # authz-deny-all
        _ap(  # authz-custom-provider-missing: no meshConfig.extensionProviders defines "opa"
            "app",
            "ext-authz-opa",
            {
                "action": "CUSTOM",
                "provider": {"name": "opa"},
                "selector": {"matchLabels": {"app": "drift"}},
                "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}],
            },
        ),
        _root_configmap(current),
        # the kube-apiserver calls an admission webhook on web's STRICT port (apiserver-caller-strict)
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "web-admission"},
            "webhooks": [
                {
                    "name": "validate.web.app",
                    "clientConfig": {"service": {"namespace": "app", "name": "web", "port": 80}},
                    "sideEffects": "None",
                }
            ],
        },
    ]
    w.proxy_rows = [(n, ns, {}) for (ns, n) in w.admins if n.split("-")[0] not in ("lagging", "nacked")] + [
        ("lagging-7f8a9b1c2-lllll", "app", {"EDS": "STALE"}),
        ("nacked-8a9b1c2d3-mmmmm", "app", {"LDS": "ERROR"}),
    ]
    w.logs[("app", "client-6b7c8d9f5-bbbbb", "istio-proxy")] = (
        '[2026-11-23T05:00:00.000Z] "GET / HTTP/1.1" 503 URX,UF upstream_reset_before_response_started'
        "{remote_connection_failure|TLS_error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
        "verify_cert_failed:_X509_verify_cert:_certificate_verification_error_at_depth_0:"
        '_unable_to_get_local_issuer_certificate:TLS_error_end} - "TLS_error:|268435581:SSL_routines:'
        "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify_cert_failed:_X509_verify_cert:"
        '_certificate_verification_error_at_depth_0:_unable_to_get_local_issuer_certificate:TLS_error_end" '
        '0 91 3 - "-" "curl/8.5.0" "abc" "web.app:80" "127.0.0.1:40000" outbound|80||web.app.svc.cluster.local '
        "- 127.0.0.1:50000 127.0.0.1:50001 - default\n"
    )
    istiod = pod_object(ISTIO_NS, "istiod-7d4f8b9c6-x2kqz", "istiod", "istiod", sidecar="absent")
    w.objects.append(istiod)
    w.logs[(ISTIO_NS, "istiod-7d4f8b9c6-x2kqz", "discovery")] = (
        "2026-11-23T05:00:00.000000Z\twarn\tads\tADS:LDS: ACK ERROR sidecar~127.0.0.1~nacked-8a9b1c2d3-mmmmm.app"
        "~app.svc.cluster.local-12 Internal:Error adding/updating listener(s) virtualInbound: bad filter chain\n"
    )
    return w


def healthy_world(mesh: Mesh, now: dt.datetime | None = None) -> CheckWorld:
    """Namespace `ok`: STRICT everywhere, one root, ISTIO_MUTUAL, probes rewritten, identity-based authz."""
    now = now or dt.datetime.now(dt.UTC)
    root = make_root(not_before=now - dt.timedelta(days=30))
    w = CheckWorld(roots={"current": root})
    server_cert = make_workload(root, "ok", "server", chain=[root])
    server = add_sidecar(mesh, "ok", "server-1a2b3c4d5-aaaaa", "server", server_cert, [root], inbound_mode="STRICT")
    client_cert = make_workload(root, "ok", "client", chain=[root])
    host = "server.ok.svc.cluster.local"
    client = add_sidecar(
        mesh,
        "ok",
        "client-2b3c4d5e6-bbbbb",
        "client",
        client_cert,
        [root],
        outbound=[
            OutboundCluster(
                host,
                80,
                server.inbound_port or 0,
                mode="ISTIO_MUTUAL",
                expected_sans=[spiffe_id("ok", "server")],
                destination_rule=("ok", "server"),
            )
        ],
    )
    server_pod = pod_object("ok", server.spec.pod, "server", "server", owner=("ReplicaSet", "server-1a2b3c4d5"))
    server_pod["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/app-health/server/readyz", "port": 15020}
    }
    _serve(w, "ok", server_pod, server)
    _serve(
        w, "ok", pod_object("ok", client.spec.pod, "client", "client", owner=("ReplicaSet", "client-2b3c4d5e6")), client
    )
    w.objects += [
        _ns("ok", **{"istio-injection": "enabled"}),
        _ns(ISTIO_NS),
        _sa("ok", "server"),
        _sa("ok", "client"),
        _svc("ok", "server", "server"),
        _pa(ISTIO_NS, "default", "STRICT", "2026-01-01T00:00:00Z"),
        _dr("ok", "server", "server", "ISTIO_MUTUAL"),
        _ap(
            "ok",
            "server-from-client",
            {
                "selector": {"matchLabels": {"app": "server"}},
                "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/ok/sa/client"]}}]}],
            },
        ),
        _root_configmap(root),
    ]
    w.proxy_rows = [(name, ns, {}) for (ns, name) in w.admins]
    w.logs[("ok", client.spec.pod, "istio-proxy")] = (
        '[2026-11-23T05:00:00.000Z] "GET / HTTP/1.1" 200 - via_upstream - "-" 0 42 3 2 "-" "curl/8.5.0" "abc" '
        '"server.ok:80" "127.0.0.1:40000" outbound|80||server.ok.svc.cluster.local 127.0.0.1:1 127.0.0.1:2 '
        "127.0.0.1:3 outbound_.80_._.server.ok.svc.cluster.local default\n"
    )
    return w
