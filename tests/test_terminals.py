"""Terminals that are not UTF-8 never crash the output (ASCII marks, \\u escapes, JSON unchanged), and
areas a scan leaves out are shown as skipped with the flag that turns them on. The CLI is run as a
user runs it, on the bundled snapshot."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import REPO, cli_argv

SNAP = ["--snapshot", str(REPO / "examples" / "rotation")]
NS = "shop"
FRONTEND, ORDERS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn"
# Locales and encodings an operator's terminal may have; the C locale with Python's UTF-8 coercion
# turned off is the plain ASCII terminal.
TERMINALS = {
    "LANG=C": {"LANG": "C", "LC_ALL": "C"},
    "C, no coercion": {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
    "latin-1": {"PYTHONIOENCODING": "latin-1"},
    "cp1252": {"PYTHONIOENCODING": "cp1252"},
    "ascii": {"PYTHONIOENCODING": "ascii"},
}
COMMANDS = [
    (["check", "-n", NS, *SNAP], 1),
    (["check", "pod", ORDERS, "-n", NS, *SNAP], 1),
    (["check", "pair", FRONTEND, "svc/orders", "-n", NS, *SNAP], 1),
    (["rootdiff", FRONTEND, ORDERS, "-n", NS, *SNAP], 1),
    (["certs", "-n", NS, *SNAP], 0),
    (["certs", "-n", NS, "-o", "wide", *SNAP], 0),
    (["proxy", ORDERS, "-n", NS, *SNAP], 0),
    (["strict-ready", "-n", NS, *SNAP], 0),
    (["explain"], 0),
    (["explain", "root-mismatch"], 0),
]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    full = {**{k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIO"))}, "NO_COLOR": "1", **env}
    full.pop("KUBECTL_MTLS_DEBUG", None)
    return subprocess.run([*cli_argv(), *args], capture_output=True, env=full, timeout=120)


def encoding_of(env: dict[str, str]) -> str:
    return env.get("PYTHONIOENCODING") or ("ascii" if env.get("PYTHONUTF8") == "0" else "utf-8")


@pytest.mark.parametrize("terminal", list(TERMINALS))
@pytest.mark.parametrize(("args", "code"), COMMANDS)
def test_output_never_crashes_on_a_terminal_that_is_not_utf8(terminal: str, args: list[str], code: int) -> None:
    env = TERMINALS[terminal]
    proc = run(env, *args)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert b"Traceback" not in proc.stderr and b"internal error" not in proc.stderr, proc.stderr
    text = proc.stdout.decode(encoding_of(env))  # what the terminal shows, in its own encoding
    assert text.strip()


def test_an_ascii_terminal_gets_ascii_marks() -> None:
    env = TERMINALS["C, no coercion"]
    check = run(env, "check", "-n", NS, *SNAP).stdout.decode("ascii")
    assert "ok every pod that STRICT mTLS applies to has an istio-proxy sidecar [sidecar-missing]" in check
    assert "x every sidecar trusts the mesh's current root [root-mismatch]" in check
    diff = run(env, "rootdiff", FRONTEND, ORDERS, "-n", NS, *SNAP).stdout.decode("ascii")
    assert "x MISMATCH" in diff and "fix: kubectl rollout restart deployment/orders -n shop" in diff
    pair = run(env, "check", "pair", FRONTEND, "svc/orders", "-n", NS, *SNAP).stdout.decode("ascii")
    assert f"PAIR   shop/{FRONTEND} -> svc/orders -n shop" in pair


@pytest.mark.parametrize("terminal", ["C, no coercion", "latin-1"])
def test_json_and_yaml_stay_exact_on_any_terminal(terminal: str) -> None:
    """Non-ASCII data (here a --query literal, typed in ASCII) comes out as JSON's and YAML's own escapes."""
    env = TERMINALS[terminal]
    query = '{text: `"\\u00e9 \\u221a \\u203c \\ud834\\udd1e"`, check: `1`}'
    as_json = run(env, "certs", "-n", NS, "-o", "json", "--query", query, *SNAP)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout.decode("ascii")) == {"text": "é √ ‼ 𝄞", "check": 1}
    import yaml

    as_yaml = run(env, "certs", "-n", NS, "-o", "yaml", "--query", query, *SNAP)
    assert yaml.safe_load(as_yaml.stdout.decode("ascii")) == {"text": "é √ ‼ 𝄞", "check": 1}


def test_log_checks_left_out_of_a_scan_are_shown_as_skipped_with_the_flag() -> None:
    proc = run({}, "check", "-n", NS, *SNAP)
    table = proc.stdout.decode()
    assert ("- the sidecar's recent log shows no TLS or authorization failures [proxy-tls-errors] "
            "(skipped: scans read no logs; add --logs)") in table
    assert "[istiod-cert-errors] (skipped: scans read no logs; add --logs)" in table
    data = json.loads(run({}, "check", "-n", NS, "-o", "json", *SNAP).stdout)
    off = {c["check"]: c for c in data["checks"] if c["area"] == "logs"}
    assert off["proxy-tls-errors"] == {"check": "proxy-tls-errors", "area": "logs", "status": "off", "enable": "--logs"}
    assert data["summary"]["skipped"] == sum(1 for c in data["checks"] if c["status"] == "skipped")
    # with --logs (or for one pod) they run, and nothing is shown as off
    with_logs = json.loads(run({}, "check", "-n", NS, "--logs", "-o", "json", *SNAP).stdout)
    assert not [c for c in with_logs["checks"] if c["status"] == "off"]
    one_pod = json.loads(run({}, "check", "pod", ORDERS, "-n", NS, "-o", "json", *SNAP).stdout)
    assert not [c for c in one_pod["checks"] if c["status"] == "off"]
