"""A command's module is imported only when it runs; `--help` and completion import none.

Start-up figures are measured by benchmarks/bench_startup.py, not here: this checks what is imported.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import run_cli

from kubectl_mtls import cli

PROBE = """
import sys
from kubectl_mtls.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in sys.modules if m.startswith("kubectl_mtls.commands.") or m in ("orjson", "jmespath",
                "cryptography", "kubectl_mtls.checks.base", "dataclasses"))
print("LOADED=" + ",".join(loaded), file=sys.stderr)
sys.exit(code)
"""


def loaded_by(*args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    line = next(line for line in proc.stderr.splitlines() if line.startswith("LOADED="))
    return {m for m in line.removeprefix("LOADED=").split(",") if m}


def test_help_imports_no_command_module() -> None:
    assert loaded_by("--help") == set()
    assert loaded_by() == set()  # no command: the help, exit 2


def test_version_imports_only_its_own_module() -> None:
    assert loaded_by("version") == {"kubectl_mtls.commands.common", "kubectl_mtls.commands.version"}


def test_a_commands_help_imports_that_command_only() -> None:
    loaded = loaded_by("rootdiff", "--help")
    commands = {m for m in loaded if m.startswith("kubectl_mtls.commands.")}
    assert "kubectl_mtls.commands.rootdiff" in commands
    assert not commands & {"kubectl_mtls.commands.check", "kubectl_mtls.commands.snapshot",
                           "kubectl_mtls.commands.strict_ready", "kubectl_mtls.commands.explain"}


def test_completion_imports_only_the_command_being_completed() -> None:
    assert {m for m in loaded_by("__complete", "ch") if m.startswith("kubectl_mtls.")} == set()
    loaded = loaded_by("__complete", "certs", "--")
    assert {m for m in loaded if m.startswith("kubectl_mtls.commands.")} >= {"kubectl_mtls.commands.certs"}
    assert "kubectl_mtls.commands.check" not in loaded


def test_top_level_help_lists_every_command_with_its_summary() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for name in cli.COMMANDS:
        line = next((line for line in proc.stdout.splitlines() if line.strip().startswith(name)), None)
        assert line is not None, name
    assert "usage: " in proc.stdout


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_registers_itself_with_the_summary_of_the_table(name: str) -> None:
    """The table in cli.py and the command's own register() agree (name and one-line summary)."""
    from kubectl_mtls.completion import subcommands

    sub = subcommands(cli.build_parser("kubectl mtls", name))
    assert sub is not None
    helps = {action.dest: action.help for action in sub._choices_actions}
    assert helps[name] == cli.COMMANDS[name][1]
    assert set(sub.choices) == set(cli.COMMANDS)
    assert sub.choices[name]._actions, name  # the real parser, not the placeholder
    assert any("-h" in a.option_strings for a in sub.choices[name]._actions)
