"""The command line at its edges: JMESPath expressions that break evaluators, a --prometheus that is not
a URL, and stdout that is closed, full or a pipe closed early. Each ends in a one-line `error:` (exit 2)
or in normal output, and the exit code still tells what the command found."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, assert_one_line_error, cli_argv, run_cli

SNAP = str(REPO / "examples" / "rotation")


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("items[::0]", "slice step cannot be zero"),
        ("(" * 3000 + "items" + ")" * 3000, "nested too deeply"),
        ("[" * 3000 + "]" * 3000, "nested too deeply"),
        ("items[?", "--query"),
    ],
)
def test_query_edge_cases_are_one_line_usage_errors(query: str, says: str) -> None:
    proc = run_cli("certs", "-A", "-o", "json", "--snapshot", SNAP, "--query", query)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc)
    assert says in proc.stderr, proc.stderr[:300]


@pytest.mark.parametrize("output", ["json", "yaml", "table"])
def test_query_results_json_cannot_hold_natively_still_print(output: str) -> None:
    """Integers beyond 64 bits and lone surrogates (only a --query literal can make them) print escaped."""
    query = "[abs(`-18446744073709551617`), `\"\\ud800\"`, length(items)]"
    proc = run_cli("certs", "-A", "-o", output, "--snapshot", SNAP, "--query", query)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert "18446744073709551617" in proc.stdout
    assert "\\ud800" in proc.stdout.lower()
    if output == "json":
        assert json.loads(proc.stdout) == [18446744073709551617, "\ud800", 6]


def test_deeply_nested_query_result_prints() -> None:
    query = "[" * 300 + "`1`" + "]" * 300  # deeper than orjson writes
    proc = run_cli("certs", "-A", "-o", "json", "--snapshot", SNAP, "--query", query)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr[:300]
    value = json.loads(proc.stdout)
    for _ in range(300):
        value = value[0]
    assert value == 1


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://prometheus:99999", "Port out of range"),
        ("http://prometheus:port", "Port could not be cast"),
        ("file:///etc/passwd", "expected http://HOST:PORT"),
        ("http://" + "a" * 70 + ".example", "is not a valid host name"),
        ("http://user:hunter2@prometheus:99999", "user:***@"),
        ("http://prom etheus:9090", "control characters or spaces"),
    ],
)
def test_prometheus_url_that_is_not_a_url(url: str, says: str) -> None:
    proc = run_cli("strict-ready", "-n", "shop", "--snapshot", SNAP, "--prometheus", url)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc)
    assert says in proc.stderr and "hunter2" not in proc.stderr


def _run_to(stdout: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run with fd 1 closed (`>&-`), on /dev/full, or into a pipe whose reader exits at once."""
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("KUBECTL_MTLS_DEBUG", None)
    argv = [*cli_argv(), *args]
    if stdout == "closed":
        return subprocess.run(
            argv, stdout=None, stderr=subprocess.PIPE, text=True, env=env, timeout=120, pass_fds=(),
            preexec_fn=lambda: os.close(1),
        )
    if stdout == "full":
        with open("/dev/full", "w") as full:
            return subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        return subprocess.run(argv, stdout=reader.stdin, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        assert reader.stdin is not None
        reader.stdin.close()
        reader.wait()


@pytest.mark.parametrize("stdout", ["closed", "full", "pipe"])
@pytest.mark.parametrize(
    "args",
    [
        ["check", "-A", "--snapshot", SNAP],
        ["certs", "-A", "-o", "yaml", "--snapshot", SNAP],
        ["--help"],
        ["proxy", "nope", "-n", "shop", "--snapshot", SNAP],
    ],
)
def test_unwritable_stdout_exits_quietly_with_the_commands_code(stdout: str, args: list[str]) -> None:
    if stdout == "full" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    normal = run_cli(*args)
    proc = _run_to(stdout, *args)
    assert proc.returncode == normal.returncode, proc.stderr
    assert proc.stderr == normal.stderr  # only the command's own error line, never `Exception ignored`
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
