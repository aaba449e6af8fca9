"""Bad and odd ambient input: a ztunnel dump that is not JSON, not an object, or has fields of the wrong
types, and NetworkPolicies of the wrong shape, give a one-line error or an `incomplete` note, never a
traceback or an internal error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_line_error, run_cli
from harness.cluster import FakeCluster
from harness.pki import make_root
from harness.ztunnel import Mesh, Pod

NS = "shop"


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mesh = Mesh(root=make_root())
    mesh.namespaces[NS] = {"istio.io/dataplane-mode": "ambient"}
    mesh.pods += [
        Pod(NS, "client-1", "client", "node-a", "10.244.0.5", app="client"),
        Pod(NS, "server-1", "server", "node-a", "10.244.0.6", app="server"),
    ]
    base = tmp_path_factory.mktemp("hostile")
    snap = base / "snap"
    with FakeCluster(base / "cluster") as fake:
        mesh.serve(fake)
        assert run_cli("snapshot", "-A", "-d", str(snap), env=fake.env()).returncode == 0
    return snap


def variant(snapshot: Path, tmp_path: Path, dump: bytes | None = None, netpols: list[Any] | None = None) -> Path:
    import shutil

    copy = tmp_path / "snap"
    shutil.copytree(snapshot, copy)
    if dump is not None:
        (copy / "ztunnel" / "ztunnel-node-a.json").write_bytes(dump)
    if netpols is not None:
        (copy / "kubernetes" / "networkpolicies.json").write_text(json.dumps({"items": netpols}))
    return copy


@pytest.mark.parametrize("dump", [b"not json {", b"[]", b'"a string"', b"\xff\xfe\x00"])
def test_unreadable_dump_is_one_line_for_proxy_and_incomplete_for_check(
    snapshot: Path, tmp_path: Path, dump: bytes
) -> None:
    snap = variant(snapshot, tmp_path, dump=dump)
    proc = run_cli("proxy", f"{NS}/client-1", "--snapshot", str(snap))
    assert proc.returncode in (2, 3), proc.stdout
    assert_one_line_error(proc)
    assert "ztunnel" in proc.stderr
    check = run_cli("check", "-A", "-o", "json", "--snapshot", str(snap))
    assert "Traceback" not in check.stderr, check.stderr
    report = json.loads(check.stdout)
    whys = " ".join(i["why"] for i in report["incomplete"])
    assert "internal error" not in whys, report["incomplete"]
    assert any("ztunnel" in i["what"] for i in report["incomplete"]), report["incomplete"]
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert statuses["ztunnel-cert"] == "skipped" and statuses["ambient-not-enrolled"] == "skipped"


def test_dump_fields_of_the_wrong_type(snapshot: Path, tmp_path: Path) -> None:
    dump = {
        "workloads": {"x": {"uid": 5, "name": ["client-1"], "workloadIps": "10.0.0.1", "authorizationPolicies": 3}},
        "services": "nope",
        "policies": [{"name": "p", "namespace": NS, "scope": "Namespace", "action": "Allow", "rules": "x"}, 7],
        "certificates": [{"identity": 5, "certChain": "no"}, {"identity": "spiffe://x", "certChain": [{"pem": 3}]}],
    }
    snap = variant(snapshot, tmp_path, dump=json.dumps(dump).encode())
    proxy = run_cli("proxy", f"{NS}/client-1", "-o", "json", "--snapshot", str(snap))
    assert proxy.returncode == 0, proxy.stderr
    assert json.loads(proxy.stdout)["ambient"]["protocol"] is None  # not listed: unknown to this ztunnel
    check = run_cli("check", "-A", "-o", "json", "--snapshot", str(snap))
    assert "Traceback" not in check.stderr, check.stderr
    report = json.loads(check.stdout)
    assert "internal error" not in json.dumps(report["incomplete"]), report["incomplete"]


def test_networkpolicies_of_the_wrong_shape(snapshot: Path, tmp_path: Path) -> None:
    not_an_object = [{"metadata": {"name": "a", "namespace": NS}, "spec": []}]
    snap = variant(snapshot, tmp_path / "a", netpols=not_an_object)
    rejected = run_cli("check", "-A", "--snapshot", str(snap))
    assert rejected.returncode == 2  # the snapshot's objects must have the API's types
    assert_one_line_error(rejected)
    odd = [
        {"metadata": {"name": "b", "namespace": NS}, "spec": {"podSelector": "x", "ingress": "y"}},
        {
            "metadata": {"name": "c", "namespace": NS},
            "spec": {
                "podSelector": {"matchLabels": ["app"], "matchExpressions": "z"},
                "ingress": [{"from": {"podSelector": 1}, "ports": [{"port": [1]}, "x"]}],
            },
        },
        {
            "metadata": {"name": "d", "namespace": NS},
            "spec": {
                "podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "bad", "except": 5}}], "ports": [8]}],
            },
        },
    ]
    snap = variant(snapshot, tmp_path / "b", netpols=odd)
    check = run_cli("check", "-A", "-o", "json", "--snapshot", str(snap))
    assert "Traceback" not in check.stderr, check.stderr
    report = json.loads(check.stdout)
    assert "internal error" not in json.dumps(report["incomplete"]), report["incomplete"]
    pair = run_cli("check", "pair", f"{NS}/client-1", f"{NS}/server-1", "-o", "json", "--snapshot", str(snap))
    assert "Traceback" not in pair.stderr, pair.stderr
    assert json.loads(pair.stdout)["verdict"] in ("ok", "fail", "unknown")
