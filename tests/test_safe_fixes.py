"""Every `fix:` is safe to paste for the object it names: the CLI run on copies of the bundled snapshot
(real Envoy dumps) whose pods and namespaces are changed the way real clusters differ: Job-owned,
finished, bare and StatefulSet pods; namespaces labelled for injection by revision, enabled, disabled
or not at all. `check pair` prints the same fix as `rootdiff` and `check`."""

from __future__ import annotations

import ast
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli

EXAMPLE = REPO / "examples" / "rotation"
NS = "shop"
FRONTEND, ORDERS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn"

Edit = Callable[[dict[str, Any]], None]


def variant(tmp: Path, pods: Edit | None = None, namespaces: Edit | None = None) -> Path:
    """A copy of the example snapshot with its pods / namespaces lists edited in place."""
    target = tmp / "snap"
    shutil.copytree(EXAMPLE, target)
    for kind, edit in (("pods", pods), ("namespaces", namespaces)):
        if edit is not None:
            path = target / "kubernetes" / f"{kind}.json"
            doc = json.loads(path.read_text())
            edit(doc)
            path.write_text(json.dumps(doc))
    return target


def pod(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in doc["items"] if p["metadata"]["name"] == name)


def owned_by(name: str, kind: str, owner: str, phase: str = "Running") -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        item = pod(doc, name)
        item["metadata"]["ownerReferences"] = (
            [{"apiVersion": "batch/v1" if kind == "Job" else "apps/v1", "kind": kind, "name": owner,
              "controller": True, "uid": f"uid-{owner}"}] if kind else []
        )
        item["metadata"]["labels"].pop("pod-template-hash", None)
        item["status"]["phase"] = phase

    return edit


def rootdiff_fix(snap: Path) -> tuple[str, str]:
    proc = run_cli("rootdiff", FRONTEND, ORDERS, "-n", NS, "--snapshot", str(snap), "-o", "json")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    return data["verdict"], data["fix"]


def test_a_deployment_is_restarted_through_its_replicaset() -> None:
    _, fix = rootdiff_fix(EXAMPLE)
    assert fix == f"kubectl rollout restart deployment/orders -n {NS}"


def test_a_statefulset_pod_is_restarted_through_the_statefulset(tmp_path: Path) -> None:
    _, fix = rootdiff_fix(variant(tmp_path, pods=owned_by(ORDERS, "StatefulSet", "orders-db")))
    assert fix == f"kubectl rollout restart statefulset/orders-db -n {NS}"


def test_a_cronjobs_pod_is_never_deleted(tmp_path: Path) -> None:
    snap = variant(tmp_path, pods=owned_by(ORDERS, "Job", "orders-sync-29384750"))
    _, fix = rootdiff_fix(snap)
    assert "kubectl delete" not in fix and "rollout restart" not in fix
    assert "do not delete pod shop/orders-7f5b9c6d8-wq4zn" in fix
    assert "Job orders-sync-29384750" in fix and "CronJob orders-sync" in fix
    check = run_cli("check", "-n", NS, "--snapshot", str(snap), "-o", "json")
    findings = [f for f in json.loads(check.stdout)["findings"] if f["check"] == "root-mismatch"]
    assert findings and all("kubectl delete" not in f["hint"] for f in findings)
    assert findings[0]["hint"] == fix  # one place computes fixes: check and rootdiff agree


def test_a_plain_jobs_pod_gets_advice_not_a_deletion(tmp_path: Path) -> None:
    _, fix = rootdiff_fix(variant(tmp_path, pods=owned_by(ORDERS, "Job", "orders-migrate")))
    assert fix.startswith("do not delete") and "CronJob" not in fix


def test_a_finished_pod_needs_no_restart(tmp_path: Path) -> None:
    _, fix = rootdiff_fix(variant(tmp_path, pods=owned_by(ORDERS, "ReplicaSet", "orders-7f5b9c6d8", "Succeeded")))
    assert fix.startswith("nothing to restart: pod shop/orders-7f5b9c6d8-wq4zn has finished (Succeeded)")


def test_a_bare_pod_is_recreated_not_lost(tmp_path: Path) -> None:
    _, fix = rootdiff_fix(variant(tmp_path, pods=owned_by(ORDERS, "", "")))
    assert fix == f"kubectl get pod {ORDERS} -n {NS} -o yaml | kubectl replace --force -f -"


def _no_sidecar(doc: dict[str, Any]) -> None:
    """A pod without a sidecar in shop (mesh-wide STRICT applies), owned by a Deployment."""
    item = json.loads(json.dumps(pod(doc, ORDERS)))
    item["metadata"]["name"] = "legacy-6d5c4b3a2-abcde"
    item["metadata"]["labels"] = {"app": "legacy", "pod-template-hash": "6d5c4b3a2"}
    item["metadata"]["ownerReferences"][0]["name"] = "legacy-6d5c4b3a2"
    item["metadata"]["annotations"] = {}
    spec = item["spec"]
    spec["containers"] = [c for c in spec["containers"] if c["name"] != "istio-proxy"]
    spec.pop("initContainers", None)
    doc["items"].append(item)


def labelled(labels: dict[str, str]) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        next(n for n in doc["items"] if n["metadata"]["name"] == NS)["metadata"]["labels"] = labels

    return edit


RESTART = f"kubectl rollout restart deployment/legacy -n {NS}"


@pytest.mark.parametrize(
    ("labels", "hint"),
    [
        ({"istio.io/rev": "canary"}, RESTART),  # on through the revision: setting istio-injection would override it
        ({"istio-injection": "enabled"}, RESTART),
        ({"istio.io/rev": "canary", "istio-injection": "disabled"}, f"kubectl label namespace {NS} istio-injection- && "
         + RESTART),
        ({"istio-injection": "disabled"}, f"kubectl label namespace {NS} istio-injection=enabled --overwrite && "
         + RESTART),
        ({}, f"kubectl label namespace {NS} istio-injection=enabled && " + RESTART),
    ],
)
def test_injection_fix_keeps_the_namespaces_labels(tmp_path: Path, labels: dict[str, str], hint: str) -> None:
    snap = variant(tmp_path, pods=_no_sidecar, namespaces=labelled(labels))
    proc = run_cli("check", "-n", NS, "--snapshot", str(snap), "-o", "json")
    wanted = (NS, "legacy-6d5c4b3a2-abcde")
    findings = {f["check"]: f for f in json.loads(proc.stdout)["findings"] if f["name"] in wanted}
    assert findings["sidecar-missing"]["hint"] == hint
    if "istio.io/rev" in labels and "istio-injection" not in labels:
        assert "injection-disabled" not in findings
    # check pair from the sidecar-less pod: the same fix
    pair = run_cli("check", "pair", "legacy-6d5c4b3a2-abcde", "svc/orders", "-n", NS, "--snapshot", str(snap),
                   "-o", "json")
    assert pair.returncode == 1
    assert json.loads(pair.stdout)["hint"] == hint


def test_pairs_trust_step_prints_rootdiffs_fix() -> None:
    pair = run_cli("check", "pair", FRONTEND, "svc/orders", "-n", NS, "--snapshot", str(EXAMPLE), "-o", "json")
    data = json.loads(pair.stdout)
    assert data["first_failure"] == "trust"
    assert data["hint"] == rootdiff_fix(EXAMPLE)[1] == f"kubectl rollout restart deployment/orders -n {NS}"
    table = run_cli("check", "pair", FRONTEND, "svc/orders", "-n", NS, "--snapshot", str(EXAMPLE))
    assert f"fix: kubectl rollout restart deployment/orders -n {NS}" in table.stdout
    assert "PAIR   shop/frontend-6c9f7d8b4-k2x7p → svc/orders -n shop" in table.stdout  # pasteable back


def test_a_service_whose_pods_have_finished_says_they_were_skipped(tmp_path: Path) -> None:
    def finished(doc: dict[str, Any]) -> None:
        pod(doc, ORDERS)["status"]["phase"] = "Failed"

    snap = variant(tmp_path, pods=finished)
    proc = run_cli("check", "pair", FRONTEND, "svc/orders", "-n", NS, "--snapshot", str(snap), "-o", "json")
    data = json.loads(proc.stdout)
    assert data["first_failure"] == "sidecar"
    step = data["steps"][0]
    assert f"skipped, not running: {NS}/{ORDERS} (Failed)" in step["detail"]
    assert step["hint"] == f"kubectl get pods -n {NS} -l app=orders -o wide"


def test_fixes_are_computed_below_the_commands() -> None:
    """checks/ take their fixes from kubectl_mtls.fixes, which imports neither checks nor commands."""
    package = REPO / "kubectl_mtls"

    def imports(path: Path) -> list[str]:
        return [("." * n.level) + (n.module or "") for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.ImportFrom)]

    assert not [m for m in imports(package / "fixes.py") if "commands" in m or "checks" in m]
    for path in sorted((package / "checks").glob("*.py")):
        assert not [m for m in imports(path) if m.endswith("commands.fixes")], path.name
    assert not (package / "commands" / "fixes.py").exists()


def test_check_says_which_pods_it_skipped_because_they_are_not_running() -> None:
    proc = run_cli("check", "-n", NS, "--snapshot", str(EXAMPLE), "-o", "json")
    notes = [i["why"] for i in json.loads(proc.stdout)["incomplete"] if i["what"] == "pods"]
    assert notes == ["skipped 1 pod(s) that are not running: shop/reports-29384750-xk2lp (Succeeded)"]
    one = run_cli("check", "pod", "reports-29384750-xk2lp", "-n", NS, "--snapshot", str(EXAMPLE))
    assert "? pods: skipped 1 pod(s) that are not running: shop/reports-29384750-xk2lp (Succeeded)" in one.stdout
