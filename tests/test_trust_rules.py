"""Istio's trust rules across clusters (kubectl_mtls.istio.trust), table-tested, and the `trust`
command's usage errors and unreachable clusters, run through the CLI without Envoy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_line_error, run_cli
from harness.kubeapi import FakeKubeAPI

from kubectl_mtls.istio import trust


@pytest.mark.parametrize(
    ("text", "domain", "aliases", "known"),
    [
        ("trustDomain: east.local\ntrustDomainAliases: [old.local]\n", "east.local", ["old.local"], True),
        ("rootNamespace: istio-system\n", "cluster.local", [], True),  # Istio's default trust domain
        ("", "cluster.local", [], True),
        (None, "cluster.local", [], False),
        ("trustDomain: [unclosed\n", "cluster.local", [], False),
        ("- a list\n", "cluster.local", [], False),
    ],
)
def test_parse_mesh(text: str | None, domain: str, aliases: list[str], known: bool) -> None:
    mesh = trust.parse_mesh(text)
    assert (mesh.trust_domain, mesh.aliases, mesh.known) == (domain, aliases, known)


@pytest.mark.parametrize(
    ("mesh", "peer", "expected"),
    [
        (trust.MeshTrust("east.local"), "east.local", True),
        (trust.MeshTrust("east.local"), "west.local", False),
        (trust.MeshTrust("east.local", ["west.local"]), "west.local", True),
        (trust.MeshTrust(known=False), "west.local", None),  # aliases unknown: never a confident "no"
    ],
)
def test_accepts(mesh: trust.MeshTrust, peer: str, expected: bool | None) -> None:
    assert trust.accepts(mesh, peer) is expected


def test_trust_domain_of() -> None:
    assert trust.trust_domain_of("spiffe://west.local/ns/shop/sa/api") == "west.local"
    assert trust.trust_domain_of("https://example.com") is None
    assert trust.trust_domain_of("spiffe:///ns/shop") is None


def _pod(env: dict[str, str] | None = None, csi: bool = False, container: str = "istio-proxy") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": container, "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}]
    }
    if csi:
        spec["volumes"] = [{"name": "workload-socket", "csi": {"driver": "csi.spiffe.io", "readOnly": True}}]
    return {"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}


@pytest.mark.parametrize(
    ("mesh", "istiod", "sidecars", "cacerts", "own", "kind"),
    [
        (trust.MeshTrust(), [], [_pod(csi=True)], False, False, "spire"),
        (trust.MeshTrust(ca_address="cert-manager-istio-csr.cert-manager.svc:443"), [], [], False, False, "istio-csr"),
        (trust.MeshTrust(), [], [_pod({"CA_ADDR": "vault-signer.ca.svc:443"})], True, False, "external"),
        (trust.MeshTrust(), [], [_pod({"CA_ADDR": "istiod.istio-system.svc:15012"})], True, True, "istiod-plugin"),
        (trust.MeshTrust(), [_pod({"ENABLE_CA_SERVER": "false"}, container="discovery")], [], False, False, "external"),
        (trust.MeshTrust(), [], [], False, True, "istiod-self-signed"),
        (trust.MeshTrust(), [], [_pod({"CA_ADDR": "[redacted]"})], False, False, "unknown"),
    ],
)
def test_detect_ca(mesh: Any, istiod: Any, sidecars: Any, cacerts: bool, own: bool, kind: str) -> None:
    assert trust.detect_ca(mesh, istiod, sidecars, cacerts, own).kind == kind


def test_path_length_problems() -> None:
    assert trust.path_length_problems([("CN=signer", True, None), ("CN=inter", True, 0), ("O=root", True, None)]) == [
        "CN=inter has pathLenConstraint 0 but 1 CA certificate(s) below it: every chain through it is rejected"
    ]
    assert trust.path_length_problems([("CN=signer", True, 0), ("O=root", True, 1)]) == []
    assert trust.path_length_problems([("CN=leafish", False, None)]) == [
        "CN=leafish is not a CA (basicConstraints CA:FALSE or missing)"
    ]


def test_trust_needs_contexts() -> None:
    proc = run_cli("trust")
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert "--context A --context B" in proc.stderr


def test_one_cluster_commands_refuse_several_contexts(tmp_path: Path) -> None:
    proc = run_cli("certs", "-A", "--context", "a", "--context", "b")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --context and --kubeconfig name one cluster here; only trust and snapshot")


def test_kubeconfig_count_must_match_contexts(tmp_path: Path) -> None:
    proc = run_cli(
        "trust", "--context", "a", "--context", "b", "--context", "c", "--kubeconfig", "x", "--kubeconfig", "y"
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "error: --kubeconfig given 2 times for 3 contexts: give it once, or once per --context"
    )


def _multi_snapshot(root: Path, contexts: list[dict[str, Any]]) -> None:
    root.mkdir()
    (root / "snapshot.json").write_text(
        json.dumps({"format": "kubectl-mtls-snapshot", "version": 2, "contexts": contexts, "incomplete": []})
    )


@pytest.mark.parametrize(
    ("contexts", "message"),
    [
        ([{"name": "east", "path": "../elsewhere"}], "contexts[0] needs a name and a relative path inside it"),
        ([{"name": "east"}], "contexts[0] needs a name and a relative path inside it"),
        ([], "'contexts' must be a non-empty list"),
    ],
)
def test_bad_multi_context_manifest_is_one_line(tmp_path: Path, contexts: list[Any], message: str) -> None:
    snap = tmp_path / "snap"
    _multi_snapshot(snap, contexts)
    proc = run_cli("trust", "--snapshot", str(snap))
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert message in proc.stderr


def test_unknown_context_of_snapshot(tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    _multi_snapshot(snap, [{"name": "east", "path": "contexts/east"}])
    proc = run_cli("trust", "--snapshot", str(snap), "--context", "north")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: snapshot {snap} has no context 'north': it holds east")


def test_unreachable_cluster_is_incomplete_and_exit_3(tmp_path: Path) -> None:
    with FakeKubeAPI([]) as api:
        api.write_kubeconfig(tmp_path / "a", context="east")
        api.fail(403, path="/api/v1/pods")
        proc = run_cli("trust", "--context", "east", "--kubeconfig", str(tmp_path / "a"), "-o", "json")
    assert proc.returncode == 3
    assert_one_line_error(proc)
    assert proc.stderr.startswith("error: context east: Forbidden")
