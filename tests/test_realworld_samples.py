"""Real users' data (../shared/corpus/realworld): each sample's expect.json states the verdicts, and
this runs the CLI on the sample as a user would and compares. Skips when the corpus is absent; the
same behaviour is covered by the project's own fixtures in test_trust_envoy, test_unknown_inputs,
test_old_envoy_formats and test_logs_real_formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_path, run_cli

SAMPLES = [
    "zhb-istio-1.5.4-rootdiff-pair",
    "hpcsc-istio-1.3.1-camel-strict",
    "zhb-istio-1.4.0-sidecar-permissive",
    "log-istio-26349-tls-error-debug",
    "log-istio-40259-ca-unimplemented",
]


def sample(name: str) -> tuple[Path, dict[str, Any], dict[str, str]]:
    base = corpus_path(f"realworld/{name}")
    expect = json.loads((base / "expect.json").read_text())
    env = {"KUBECTL_MTLS_NOW": expect["now"]} if expect.get("now") else {}
    return base / "snapshot", expect, env


def cli_json(env: dict[str, str], *args: str) -> tuple[int, Any]:
    proc = run_cli(*args, "-o", "json", env=env)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_gives_its_stated_verdicts(name: str) -> None:
    snap, expect, env = sample(name)
    assert any(key in expect for key in ("rootdiff", "proxies", "checks")), f"{name}: nothing to check"
    if "rootdiff" in expect:
        rootdiff_row(snap, expect["rootdiff"], env)
    for row in expect.get("proxies") or []:
        proxy_row(snap, row, env)
    for row in expect.get("checks") or []:
        check_row(snap, row, env)


def rootdiff_row(snap: Path, row: dict[str, Any], env: dict[str, str]) -> None:
    code, data = cli_json(
        env, "rootdiff", row["source"], row["destination"], "-n", row["namespace"], "--snapshot", str(snap)
    )
    assert code == row["exit"], data
    for key in ("match", "source_trusted_by_destination", "destination_trusted_by_source"):
        assert data[key] == row[key], (key, data)


def proxy_row(snap: Path, row: dict[str, Any], env: dict[str, str]) -> None:
    code, model = cli_json(env, "proxy", row["pod"], "-n", row["namespace"], "--snapshot", str(snap))
    assert code == row["exit"], model
    inbound = {str(e["port"]).replace("None", "null"): e["mode"] for e in model["inbound"]}
    for port, mode in row.get("inbound", {}).items():
        assert inbound.get(port) == mode, (row["pod"], port, inbound)
    if row.get("inbound_exact"):
        assert set(inbound) == set(row["inbound"]), (row["pod"], inbound)
    clusters = {c["name"]: c for c in model["clusters"]}
    for name_, fields in row.get("clusters", {}).items():
        assert name_ in clusters, (row["pod"], name_)
        for key, value in fields.items():
            assert clusters[name_][key] == value, (row["pod"], name_, key, clusters[name_][key])
    if "proxy_type" in row:
        assert model["proxy"]["type"] == row["proxy_type"]
    if "istio_version" in row:
        assert model["proxy"]["istio_version"] == row["istio_version"]
    if row.get("certificates_empty"):
        assert model["certificates"] == [] and model["roots"] == []
        # unknown, and said so: never guessed
        assert any("certificates" in note and "unknown" in note for note in model["incomplete"]), model["incomplete"]


def check_row(snap: Path, row: dict[str, Any], env: dict[str, str]) -> None:
    code, data = cli_json(env, "check", *row["args"], "--snapshot", str(snap))
    assert code in row["exit_in"], data
    found = {f["check"] for f in data["findings"]}
    for slug in row.get("forbid_checks", []):
        assert slug not in found, [f for f in data["findings"] if f["check"] == slug]
    for wanted in row.get("require_findings", []):
        matching = [f for f in data["findings"] if f["check"] == wanted["check"]]
        if "log_class_in" in wanted:
            matching = [f for f in matching if f["evidence"].get("log_class") in wanted["log_class_in"]]
        assert matching, (wanted, data["findings"])
    # Nothing unread becomes an error or a warning: every such finding rests on data that was read.
    unread = {i["what"] for i in data["incomplete"] if i["what"].startswith("check ")}
    for f in data["findings"]:
        assert f"check {f['check']}" not in unread, f
