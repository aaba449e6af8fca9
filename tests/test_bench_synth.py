"""The scale benchmark's synthetic snapshots (benchmarks/synth.py) are snapshots the CLI reads whole:
every sidecar dump loads, every certificate is the pod's own and chains to the mesh root, and the
policies it generates give the checks real work. (The benchmark itself is not a test: it is run by
hand, see benchmarks/bench_scale.py and the README's Performance section.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import REPO, run_cli

from kubectl_mtls.sources.scrub import has_private_key

sys.path.insert(0, str(REPO / "benchmarks"))

from synth import write_snapshot


def test_generated_mesh_loads_and_checks(tmp_path: Path) -> None:
    mesh = write_snapshot(tmp_path / "snap", pods=60)
    objects = mesh.objects
    assert len(objects["pods"]) == 60
    assert len(objects["peerauthentications"]) == 30 and len(objects["destinationrules"]) == 6
    for path in (tmp_path / "snap").rglob("*"):
        if path.is_file():
            assert not has_private_key(path.read_bytes()), path

    proc = run_cli("check", "-A", "--snapshot", str(tmp_path / "snap"), "-o", "json")
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stderr == ""
    data = json.loads(proc.stdout)
    assert data["incomplete"] == []  # every dump read, every section understood
    checks = {c["check"]: c["status"] for c in data["checks"]}
    assert all(status != "skipped" for status in checks.values()), checks
    found = {f["check"] for f in data["findings"]}
    # Certificates are each pod's own, for its own identity, under the root the ConfigMap names.
    assert not found & {"cert-missing", "cert-chain-untrusted", "cert-identity-mismatch", "root-mismatch"}
    assert {"peerauthn-effective", "peerauthn-overridden"} <= found

    sidecar = next(p for p in objects["pods"] if "security.istio.io/tlsMode" in p["metadata"]["labels"])
    ns, name = sidecar["metadata"]["namespace"], sidecar["metadata"]["name"]
    proxy = run_cli("proxy", f"{ns}/{name}", "--snapshot", str(tmp_path / "snap"), "-o", "json")
    model = json.loads(proxy.stdout)
    assert model["identity"] == f"spiffe://cluster.local/ns/{ns}/sa/{sidecar['spec']['serviceAccountName']}"
    assert model["certificates"][0]["chain_verified"] is True


def test_policy_heavy_mesh_spreads_policies_over_workloads(tmp_path: Path) -> None:
    mesh = write_snapshot(tmp_path / "snap", pods=4, peer_authentications=200)
    policies = mesh.objects["peerauthentications"]
    assert len(policies) == 200
    selected = {json.dumps(p["spec"].get("selector"), sort_keys=True) for p in policies}
    assert len(selected) > 50  # not 200 policies fighting over the one workload that has pods
    proc = run_cli("check", "-A", "--snapshot", str(tmp_path / "snap"), "-o", "json")
    assert proc.returncode in (0, 1), proc.stderr
    assert json.loads(proc.stdout)["incomplete"] == []
