"""Ordinary mistakes get one `error:` line naming the argument (and what it accepts) and where to read
more, exit 2, in every command: the CLI run as a user runs it, on the bundled snapshot."""

from __future__ import annotations

import pytest
from conftest import REPO, assert_one_line_error, run_cli

SNAP = ["--snapshot", str(REPO / "examples" / "rotation")]
FRONTEND, ORDERS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["certs", "-o", "xml"], ["-o/--output", "'xml'", "table", "wide", "json", "yaml", "certs --help"]),
        (["rootdiff"], ["required", "src", "dst", "see kubectl mtls rootdiff --help"]),
        (["rootdiff", "a"], ["required", "dst"]),
        (["chek"], ["unknown command 'chek'", "did you mean check", "see kubectl mtls --help"]),
        (["certz", "-A"], ["unknown command 'certz'", "certs"]),
        (["check", "--expiring-within", "3x", *SNAP], ["--expiring-within", "'3x'", "72h", "check --help"]),
        (["check", "--request-timeout", "5q", *SNAP], ["--request-timeout", "Invalid timeout value"]),
        (["check", "--concurrency", "0", *SNAP], ["--concurrency", "'0'", "positive integer"]),
        (["check", "--tail", "-5", *SNAP], ["--tail"]),
        (["check", "--fail-on", "x"], ["--fail-on", "error", "warning"]),
        (["certs", "-n"], ["-n/--namespace", "expected one argument"]),
        (["proxy", "a", "b", "c", *SNAP], ["'b c'", "kubectl mtls proxy", "see kubectl mtls proxy --help"]),
        (["version", "extra"], ["'extra'", "see kubectl mtls version --help"]),
        (["explain", "root-mismatch", "more"], ["'more'", "explain --help"]),
        (["check", "pod", "a", "b", *SNAP], ["'b'", "one pod or namespace", "see kubectl mtls check --help"]),
        (["check", "pair", "a", *SNAP], ["SRC and DST", "see kubectl mtls check --help"]),
        (["check", "--ignore", "nope", *SNAP], ["--ignore nope", "no check named 'nope'"]),
        (["check", "--port", "80", *SNAP], ["--port", "check pair"]),
        (["strict-ready", "--window", "3q", *SNAP], ["--window", "'3q'"]),
        (["completion", "fish"], ["'fish'", "bash", "zsh", "kubectl"]),
    ],
)
def test_a_usage_error_is_one_line_naming_the_argument(args: list[str], says: list[str]) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    assert_one_line_error(proc)
    assert "usage:" not in proc.stderr
    for text in says:
        assert text in proc.stderr, (text, proc.stderr)


def test_a_bad_query_gives_jmespaths_message_and_position() -> None:
    proc = run_cli("certs", "-n", "shop", "--query", "items[?pod==]", *SNAP)
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert "--query 'items[?pod==]'" in proc.stderr and "column 12" in proc.stderr
    unfinished = run_cli("certs", "-n", "shop", "--query", "items[", *SNAP)
    assert unfinished.returncode == 2 and "Incomplete expression at column 6" in unfinished.stderr


@pytest.mark.parametrize("query", ["nothing", "items[?pod=='nobody']"])
def test_a_query_that_selects_nothing_says_so_and_keeps_the_exit_code(query: str) -> None:
    plain = run_cli("rootdiff", FRONTEND, ORDERS, "-n", "shop", "--query", query, *SNAP)
    assert plain.returncode == 1  # the roots still differ: the query does not change the verdict
    assert plain.stdout == ""
    assert f"--query {query!r} selected nothing" in plain.stderr
    as_json = run_cli("rootdiff", FRONTEND, ORDERS, "-n", "shop", "-o", "json", "--query", query, *SNAP)
    assert as_json.returncode == 1
    assert as_json.stdout.strip() in ("null", "[]")


def test_no_command_prints_the_help_and_exits_2() -> None:
    proc = run_cli()
    assert proc.returncode == 2
    assert "COMMAND" in proc.stdout and "exit codes:" in proc.stdout
