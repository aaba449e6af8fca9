"""Table tests of the pure ambient rules: Kubernetes NetworkPolicy semantics, ztunnel's L4 authorization
(as rbac.rs evaluates the policies its dump prints) and the classification of ztunnel's access log."""

from __future__ import annotations

from typing import Any

import pytest

from kubectl_mtls.istio import networkpolicy as np
from kubectl_mtls.istio import ztunnel_rbac as rbac
from kubectl_mtls.normalize.ztunnel_logs import classify_log, parse_line

SERVER = np.Endpoint("shop", {"app": "server"}, {"kubernetes.io/metadata.name": "shop"}, "10.0.1.6", {"http": 8080})
CLIENT = np.Endpoint("shop", {"app": "client"}, {"kubernetes.io/metadata.name": "shop"}, "10.0.0.5")
OPS = np.Endpoint("ops", {"app": "tool"}, {"kubernetes.io/metadata.name": "ops", "team": "ops"}, "10.0.2.7")


def policy(spec: dict[str, Any], name: str = "p", ns: str = "shop") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, **spec},
    }


def ingress(*rules: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return policy({"ingress": list(rules), **spec})


FROM_CLIENT = [{"podSelector": {"matchLabels": {"app": "client"}}}]


@pytest.mark.parametrize(
    ("policies", "source", "port", "allowed"),
    [
        ([], CLIENT, 15008, True),  # not isolated
        ([ingress()], CLIENT, 8080, False),  # isolated, no rule: deny all
        ([ingress({"from": FROM_CLIENT, "ports": [{"port": 8080}]})], CLIENT, 8080, True),  # protocol defaults to TCP
        ([ingress({"from": FROM_CLIENT, "ports": [{"port": 8080}]})], CLIENT, 15008, False),
        ([ingress({"from": FROM_CLIENT, "ports": [{"port": "http"}]})], CLIENT, 8080, True),  # named port
        ([ingress({"from": FROM_CLIENT, "ports": [{"port": 15000, "endPort": 15010}]})], CLIENT, 15008, True),
        ([ingress({"from": FROM_CLIENT, "ports": [{"port": 15009, "endPort": 15010}]})], CLIENT, 15008, False),
        ([ingress({"from": FROM_CLIENT, "ports": [{"protocol": "UDP", "port": 15008}]})], CLIENT, 15008, False),
        ([ingress({"from": FROM_CLIENT})], CLIENT, 15008, True),  # no ports: all
        ([ingress({"from": FROM_CLIENT})], OPS, 15008, False),  # podSelector alone: own namespace only
        ([ingress({"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}]})], OPS, 15008, True),
        (
            [
                ingress(
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": "ops"}},
                                "podSelector": {"matchLabels": {"app": "x"}},
                            }
                        ]
                    }
                )
            ],
            OPS,
            15008,
            False,
        ),
        (
            [
                ingress(
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [{"key": "team", "operator": "In", "values": ["ops"]}]
                                }
                            }
                        ]
                    }
                )
            ],
            OPS,
            15008,
            True,
        ),
        ([ingress({"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.2.0/24"]}}]})], OPS, 15008, False),
        ([ingress({"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.2.0/24"]}}]})], CLIENT, 15008, True),
        ([policy({"policyTypes": ["Egress"], "egress": []})], CLIENT, 15008, True),  # egress-only: ingress open
        ([policy({"policyTypes": ["Ingress"]})], CLIENT, 15008, False),  # Ingress without rules
        ([ingress(), ingress({"from": FROM_CLIENT, "ports": [{"port": 15008}]}, name="q")], CLIENT, 15008, True),
    ],
)
def test_networkpolicy_ingress(policies: list[dict[str, Any]], source: np.Endpoint, port: int, allowed: bool) -> None:
    assert np.ingress(policies, SERVER, source, port).allowed is allowed


def test_networkpolicy_egress_defaults_and_types() -> None:
    egress = {
        "metadata": {"name": "e", "namespace": "shop"},
        "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]},
    }
    assert np.policy_types(egress) == ["Ingress", "Egress"]  # egress rules present: both types
    assert np.egress([egress], CLIENT, SERVER, 15008).allowed is False
    assert np.egress([egress], CLIENT, SERVER, 53, "UDP").allowed is True
    assert np.ingress([egress], SERVER, CLIENT, 15008).allowed is False  # also isolated for ingress, no rule


def match(**fields: Any) -> list[list[list[dict[str, Any]]]]:
    return [[[fields]]]


def ztp(action: str, rules: list[Any], name: str = "p", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "shop", "scope": "WorkloadSelector", "action": action, "rules": rules, **extra}


CLIENT_ID = "spiffe://cluster.local/ns/shop/sa/client"
OPS_ID = "spiffe://cluster.local/ns/ops/sa/tool"


@pytest.mark.parametrize(
    ("policies", "identity", "allowed", "policy"),
    [
        ([], CLIENT_ID, True, None),
        ([ztp("Allow", [])], CLIENT_ID, False, "shop/p"),  # allow-nothing
        ([ztp("Allow", match(namespaces=[{"Exact": "ops"}]))], OPS_ID, True, "shop/p"),
        ([ztp("Allow", match(namespaces=[{"Exact": "ops"}]))], CLIENT_ID, False, "shop/p"),
        ([ztp("Allow", match(principals=[{"Suffix": "/sa/client"}]))], CLIENT_ID, True, "shop/p"),
        ([ztp("Allow", match(principals=[{"Prefix": "cluster.local/ns/shop/"}]))], CLIENT_ID, True, "shop/p"),
        ([ztp("Allow", match(principals=[{"Presence": []}]))], None, False, "shop/p"),  # plaintext: no identity
        (
            [ztp("Allow", match(serviceAccounts=[{"namespace": "shop", "serviceAccount": "client"}]))],
            CLIENT_ID,
            True,
            "shop/p",
        ),
        (
            [ztp("Allow", match(namespaces=[{"Exact": "shop"}], notPrincipals=[{"Suffix": "/sa/client"}]))],
            CLIENT_ID,
            False,
            "shop/p",
        ),
        ([ztp("Deny", match(namespaces=[{"Exact": "shop"}]), name="d")], CLIENT_ID, False, "shop/d"),
        (
            [ztp("Deny", match(namespaces=[{"Exact": "shop"}]), name="d", dryRun=True, dry_run=True)],
            CLIENT_ID,
            True,
            None,
        ),
        ([ztp("Allow", [[[{}]]])], CLIENT_ID, False, "shop/p"),  # an empty match group never matches
        ([ztp("Allow", [[[]]])], CLIENT_ID, True, "shop/p"),  # an empty clause matches
        ([ztp("Allow", match(destinationPorts=[8080]))], CLIENT_ID, True, "shop/p"),
        ([ztp("Allow", match(destinationPorts=[9090]))], CLIENT_ID, False, "shop/p"),
    ],
)
def test_ztunnel_l4_authorization(
    policies: list[dict[str, Any]], identity: str | None, allowed: bool, policy: str | None
) -> None:
    decision = rbac.evaluate(policies, rbac.Peer(identity, "10.0.0.5", "10.0.1.6", 8080))
    assert (decision.allowed, decision.policy) == (allowed, policy)


def test_ztunnel_l4_authorization_unknown_when_a_needed_fact_is_missing() -> None:
    policies = [ztp("Allow", match(sourceIps=["10.0.0.0/8"]))]
    assert rbac.evaluate(policies, rbac.Peer(CLIENT_ID, None, "10.0.1.6", 8080)).allowed is None
    assert rbac.evaluate(policies, rbac.Peer(CLIENT_ID, "10.0.0.5", "10.0.1.6", 8080)).allowed is True


def test_applicable_policies_follow_scope() -> None:
    policies = {
        "istio-system/mesh": {"name": "mesh", "namespace": "istio-system", "scope": "Global"},
        "shop/ns": {"name": "ns", "namespace": "shop", "scope": "Namespace"},
        "other/ns": {"name": "ns", "namespace": "other", "scope": "Namespace"},
        "shop/sel": {"name": "sel", "namespace": "shop", "scope": "WorkloadSelector"},
        "shop/sel2": {"name": "sel2", "namespace": "shop", "scope": "WorkloadSelector"},
    }
    workload = {"namespace": "shop", "authorization_policies": ["shop/sel"]}
    assert [p["name"] for p in rbac.applicable(policies, workload)] == ["mesh", "ns", "sel"]


LINE = (
    "2024-08-22T10:00:00.000000Z\terror\taccess\tconnection complete\tsrc.addr=10.244.1.6:42020 "
    'src.workload="reviews-v1-6584ddcf65-k78wz" src.namespace="default" '
    'src.identity="spiffe://cluster.local/ns/default/sa/bookinfo-reviews" dst.addr=10.244.1.9:15008 '
    'dst.hbone_addr=10.244.1.9:9080 dst.service="productpage.default.svc.cluster.local" '
    'dst.workload="productpage-v1-d5789fdfb-c5w2c" dst.namespace="default" '
    'dst.identity="spiffe://cluster.local/ns/default/sa/bookinfo-productpage" direction="inbound" bytes_sent=0 '
    'bytes_recv=0 duration="0ms" error="{error}"'
)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("connection closed due to policy rejection: allow policies exist, but none allowed", "policy-not-allowed"),
        ("connection closed due to policy rejection: explicitly denied by: default/deny-reviews", "policy-denied"),
        ("connection closed due to policy rejection", "policy-rejected"),
        (
            "connection timed out, maybe a NetworkPolicy is blocking HBONE port 15008: deadline has elapsed",
            "hbone-blocked",
        ),
        (
            "io error: invalid peer certificate: Other(OtherError(identity verification error: peer did not present "
            "the expected SAN (spiffe://cluster.local/ns/sample/sa/default), got spiffe://cluster.local/ns/sample/sa/x))",
            "san-mismatch",
        ),
        (
            "tls handshake error: Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }",
            "unknown-issuer",
        ),
        ("identity error: signing gRPC error (Unavailable): [CERTIFICATE_VERIFY_FAILED]", "identity-error"),
        ("unknown destination: 10.0.0.9", "unknown-destination"),
        ("no healthy upstream: 10.0.0.9:80", "no-healthy-upstream"),
        ("destination disconnected before all data was written", "other"),
    ],
)
def test_ztunnel_log_classification(error: str, kind: str) -> None:
    item = parse_line(LINE.replace("{error}", error))
    assert item is not None and item.kind == kind
    assert (item.src_namespace, item.src_workload) == ("default", "reviews-v1-6584ddcf65-k78wz")
    assert (item.dst_namespace, item.dst_workload, item.direction) == (
        "default",
        "productpage-v1-d5789fdfb-c5w2c",
        "inbound",
    )


def test_ztunnel_log_groups_repeats_and_ignores_other_lines() -> None:
    denied = LINE.replace(
        "{error}", "connection closed due to policy rejection: explicitly denied by: default/deny-reviews"
    )
    text = "\n".join(
        [denied, denied, "2024-08-22T10:00:00Z\tinfo\taccess\tconnection complete\tsrc.addr=1.2.3.4:5", "garbage"]
    )
    items = classify_log(text)
    assert len(items) == 1 and items[0].count == 2 and items[0].policy == "default/deny-reviews"
