"""`kubectl mtls strict-ready`: who still sends plaintext, from the sidecars' own metrics (and a real
Prometheus), and what would break once STRICT applies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli
from harness.cluster import FakeCluster
from harness.scenarios import _ns, _pa, pod_object

DUMP = REPO / "examples" / "rotation" / "proxies" / "shop" / "payments-5d8c7b9f6-h3m9t.json"
NS = "legacy"


def series(
    dest: str,
    source: str,
    policy: str,
    value: float,
    principal: str = "unknown",
    source_ns: str = "unknown",
    metric: str = "istio_requests_total",
) -> str:
    labels = {
        "reporter": "destination",
        "source_workload": source,
        "source_workload_namespace": source_ns,
        "source_principal": principal,
        "destination_workload": dest,
        "destination_workload_namespace": NS,
        "destination_service": f"{dest}.{NS}.svc.cluster.local",
        "connection_security_policy": policy,
        "response_code": "200",
        "request_protocol": "http",
    }
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{text}}} {value}\n"


HEADER = "# HELP istio_requests_total Total requests.\n# TYPE istio_requests_total counter\n"
STATS = {
    "web-5d9f8c7b6-aaaaa": HEADER
    + series("web", "unknown", "none", 42)
    + series("web", "frontend", "mutual_tls", 17, "spiffe://cluster.local/ns/shop/sa/frontend", "shop"),
    "api-6b7c8d9f5-bbbbb": HEADER
    + series("api", "frontend", "mutual_tls", 5, "spiffe://cluster.local/ns/shop/sa/frontend", "shop"),
    "quiet-7c8d9e6f4-ccccc": "# TYPE envoy_server_live gauge\nenvoy_server_live 1\n",
    "probe-8d9e7f5a3-ddddd": HEADER
    + series("probe", "frontend", "mutual_tls", 3, "spiffe://cluster.local/ns/x/sa/y", "x"),
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with FakeCluster(tmp_path) as fake:
        for pod, text in STATS.items():
            app = pod.split("-")[0]
            obj = pod_object(NS, pod, app, app, owner=("ReplicaSet", pod.rsplit("-", 1)[0]))
            if app == "probe":
                obj["metadata"]["annotations"]["sidecar.istio.io/rewriteAppHTTPProbers"] = "false"
                obj["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/ready", "port": 8080}}
            fake.api.add(obj)
            fake.set_proxy(NS, pod, {"dump": str(DUMP), "stats": text})
        for obj in (
            _ns(NS, **{"istio-injection": "enabled"}),
            _ns("istio-system"),
            _pa("istio-system", "default", "PERMISSIVE", "2026-01-01T00:00:00Z"),
        ):
            fake.api.add(obj)
        yield fake


def ready(cluster: FakeCluster, *args: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli("strict-ready", "-n", NS, *args, "-o", "json", env=cluster.env())
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_plaintext_callers_unknown_and_after_switch(cluster: FakeCluster) -> None:
    code, data = ready(cluster)
    assert code == 1 and data["verdict"] == "not ready"
    verdicts = {w["workload"]: w["verdict"] for w in data["workloads"]}
    assert verdicts == {"web": "not ready", "api": "ready", "quiet": "unknown", "probe": "not ready"}
    web = next(w for w in data["workloads"] if w["workload"] == "web")
    assert [(c["source_workload"], c["requests"]) for c in web["callers"]] == [("unknown", 42.0)]
    plain = [f for f in data["findings"] if f["check"] == "plaintext-caller"]
    assert len(plain) == 1 and plain[0]["evidence"]["no_sidecar"] is True
    after = [f for f in data["findings"] if f["message"].startswith("after the switch")]
    assert [(f["check"], f["name"]) for f in after] == [("probe-not-rewritten", "probe-8d9e7f5a3-ddddd")]
    assert any(f["check"] == "no-traffic-data" and f["name"] == "quiet-7c8d9e6f4-ccccc" for f in data["findings"])
    calls = cluster.istioctl_calls()
    assert ["experimental", "envoy-stats", f"web-5d9f8c7b6-aaaaa.{NS}", "--output", "prom"] in [c[:5] for c in calls]
    assert {r.method for r in cluster.api.requests} <= {"GET"}


def test_ready_once_callers_are_meshed(cluster: FakeCluster) -> None:
    for pod in ("web-5d9f8c7b6-aaaaa", "quiet-7c8d9e6f4-ccccc", "probe-8d9e7f5a3-ddddd"):
        cluster.set_proxy(
            NS,
            pod,
            {"dump": str(DUMP), "stats": STATS["api-6b7c8d9f5-bbbbb"].replace('"api"', f'"{pod.split("-")[0]}"')},
        )
    probe = next(o for o in _pods(cluster) if o["metadata"]["name"].startswith("probe"))
    probe["metadata"]["annotations"].pop("sidecar.istio.io/rewriteAppHTTPProbers")
    probe["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = 15020
    cluster.api.add(probe)
    code, data = ready(cluster)
    assert code == 0 and data["verdict"] == "ready", data
    human = run_cli("strict-ready", "-n", NS, env=cluster.env())
    assert human.returncode == 0 and "verdict: READY" in human.stdout


def test_no_data_is_unknown_exit_3(cluster: FakeCluster) -> None:
    for pod in STATS:
        cluster.set_proxy(NS, pod, {"dump": str(DUMP), "fail": "Error: failed to execute command on sidecar"})
    code, data = ready(cluster)
    assert code in (1, 3)  # the probe pod still breaks after the switch
    assert {w["verdict"] for w in data["workloads"] if w["workload"] != "probe"} == {"unknown"}
    assert any("failed to execute command on sidecar" in i["why"] for i in data["incomplete"])


def test_already_strict_namespace_is_ready(cluster: FakeCluster) -> None:
    cluster.api.add(_pa(NS, "default", "STRICT", "2026-02-01T00:00:00Z"))
    proc = run_cli("strict-ready", "-n", NS, env=cluster.env())
    assert "already enforces STRICT" in proc.stdout


def _pods(cluster: FakeCluster) -> list[dict[str, Any]]:
    out = run_cli("snapshot", "-n", NS, "-d", str(cluster.workdir / "s"), "--force", env=cluster.env())
    assert out.returncode == 0, out.stderr
    return json.loads((cluster.workdir / "s" / "kubernetes" / "pods.json").read_text())["items"]


def test_prometheus_history_through_the_cli(cluster: FakeCluster) -> None:
    """The sidecar of `quiet` saw no traffic since its restart; a real Prometheus remembers a plaintext caller."""
    from harness.prometheus import SKIP_REASON, Exporter, PrometheusServer, find_prometheus

    if find_prometheus() is None:
        pytest.skip(SKIP_REASON)
    history = HEADER + series("quiet", "unknown", "none", 5)
    with Exporter(history) as exporter, PrometheusServer([exporter.target]) as prom:
        prom.wait_for_series('istio_requests_total{destination_workload="quiet"}')
        exporter.wait_scraped(exporter.set_text(HEADER + series("quiet", "unknown", "none", 9)))
        prom.wait_for_value('sum(istio_requests_total{destination_workload="quiet"})', 9)
        code, data = ready(cluster, "--prometheus", prom.url, "--window", "10m")
    quiet = next(w for w in data["workloads"] if w["workload"] == "quiet")
    assert quiet["verdict"] == "not ready", quiet
    assert quiet["callers"] and quiet["callers"][0]["source_workload"] == "unknown"
    assert code == 1
    bad = run_cli("strict-ready", "-n", NS, "--prometheus", "http://127.0.0.1:1", env=cluster.env())
    assert "cannot reach Prometheus at http://127.0.0.1:1" in bad.stdout


def test_listener_stats_note(cluster: FakeCluster) -> None:
    proc = run_cli("strict-ready", "-n", NS, env=cluster.env())
    assert "proxyStatsMatcher" in proc.stdout  # the fixtures, like a default sidecar, expose no listener stats
