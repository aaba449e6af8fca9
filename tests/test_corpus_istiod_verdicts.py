"""Verdicts on config that Istio's own generator produced (../shared/corpus/istiod-generated, 01-10).

Each row restates what the corpus README says Istio generated and what it implies for a call from
`default/client` to `svc/server` (Service ports 80 -> 8080 and 81 -> 8081), and for `check -A`. Skipped
when ../shared is absent; the same behaviour is covered on real Envoy by test_pair_plaintext.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import corpus_path, run_cli

NOW = {"KUBECTL_MTLS_NOW": "2026-12-06T07:00:00Z"}

# folder -> {service port: (verdict, mtls, first_failure, text in the last step or the plaintext reason)}
PAIR = {
    "01-mesh-strict": {80: ("ok", True, None, None), 81: ("ok", True, None, None)},
    "02-ns-permissive-over-mesh-strict": {80: ("ok", True, None, None), 81: ("ok", True, None, None)},
    "03-workload-strict-port-permissive": {80: ("ok", True, None, None), 81: ("ok", True, None, None)},
    # auto mTLS sends plaintext to a server that accepts only plaintext: the call works
    "04-workload-disable": {
        80: ("ok", False, None, "default/server is DISABLE on port 8080 by PeerAuthentication default/server"),
        81: ("ok", False, None, "default/server is DISABLE on port 8081"),
    },
    # plaintext to a STRICT server: every call fails
    "05-dr-disable": {
        80: ("fail", False, "client-tls", "sidecar enforces STRICT"),
        81: ("fail", False, "client-tls", "sidecar enforces STRICT"),
    },
    # port 80 SIMPLE (no client certificate), port 81 ISTIO_MUTUAL
    "06-dr-istio-mutual-subset-port-simple": {
        80: ("fail", None, "client-tls", "sends SIMPLE"),
        81: ("ok", True, None, None),
    },
    "07-root-dr-wildcard-disable-exported": {
        80: ("fail", False, "client-tls", "DestinationRule istio-system/local-plaintext"),
        81: ("fail", False, "client-tls", "DestinationRule istio-system/local-plaintext"),
    },
    "08-no-policy": {80: ("ok", True, None, None), 81: ("ok", True, None, None)},
    "09-ns-unset-under-mesh-strict": {80: ("ok", True, None, None), 81: ("ok", True, None, None)},
    "10-authz-deny-other-namespaces": {80: ("ok", True, None, None), 81: ("ok", True, None, None)},
}

# folder -> (exit code of `check -A`, checks that must report an error, checks that must not report one)
CHECK = {
    "01-mesh-strict": (0, set()),
    "02-ns-permissive-over-mesh-strict": (0, set()),
    "03-workload-strict-port-permissive": (0, set()),
    "04-workload-disable": (0, set()),
    "05-dr-disable": (1, {"destinationrule-tls-conflict", "outbound-plaintext-to-strict"}),
    "06-dr-istio-mutual-subset-port-simple": (1, {"destinationrule-tls-conflict", "outbound-plaintext-to-strict"}),
    "07-root-dr-wildcard-disable-exported": (1, {"destinationrule-tls-conflict", "outbound-plaintext-to-strict"}),
    "08-no-policy": (0, set()),
    "09-ns-unset-under-mesh-strict": (0, set()),
    "10-authz-deny-other-namespaces": (0, set()),
}


def snapshot(folder: str) -> str:
    return str(corpus_path(f"istiod-generated/{folder}"))


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli(*args, "-o", "json", env=NOW)
    assert "Traceback" not in proc.stderr and proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("folder", sorted(PAIR))
def test_pair_client_to_server(folder: str) -> None:
    code, data = run_json("check", "pair", "client", "svc/server", "-n", "default", "--snapshot", snapshot(folder))
    walks = {w["port"]: w for w in data["ports"]}
    assert set(walks) == set(PAIR[folder])
    for port, (verdict, mtls, first, text) in PAIR[folder].items():
        walk = walks[port]
        assert (walk["verdict"], walk["first_failure"]) == (verdict, first), (port, walk["steps"])
        if mtls is not None:
            assert walk["mtls"] is mtls, (port, walk)
        if text is not None:
            assert text in (walk["plaintext_reason"] or "") + walk["steps"][-1]["detail"], (port, walk)
        if verdict == "ok" and mtls is False:
            assert walk["plaintext_reason"]
    expected = 1 if any(v[0] == "fail" for v in PAIR[folder].values()) else 0
    assert code == expected, data


def test_plaintext_that_works_fails_only_with_require_mtls() -> None:
    code, data = run_json(
        "check", "pair", "client", "svc/server", "-n", "default", "--port", "80", "--require-mtls",
        "--snapshot", snapshot("04-workload-disable"),
    )
    assert code == 1 and data["verdict"] == "fail" and data["first_failure"] == "require-mtls"
    assert "kubectl edit peerauthentication server -n default" in data["hint"]


def test_outsider_is_denied_by_the_deny_policy() -> None:
    code, data = run_json(
        "check", "pair", "other/outsider", "svc/server.default",
        "--snapshot", snapshot("10-authz-deny-other-namespaces"),
    )
    assert code == 1 and data["first_failure"] == "authz" and data["mtls"] is True
    assert data["steps"][-1]["evidence"]["policy"] == "default/deny-other-namespaces"


@pytest.mark.parametrize("folder", sorted(CHECK))
def test_check_mesh(folder: str) -> None:
    code, data = run_json("check", "-A", "--snapshot", snapshot(folder))
    exit_code, errors = CHECK[folder]
    found = {f["check"] for f in data["findings"] if f["severity"] == "error"}
    assert found == errors, [f for f in data["findings"] if f["severity"] == "error"]
    assert code == exit_code
    assert "tls-to-plaintext-server" not in found  # auto mTLS to DISABLE (04) is not TLS to a DISABLE server
