"""The README says what the code does: which command takes which flags, each command's own flags in its
section, the RBAC table (the same list as the krew caveats and the code), the snapshot layout."""

from __future__ import annotations

import argparse
import re

import pytest
import yaml
from conftest import REPO

from kubectl_mtls import cli
from kubectl_mtls.commands.common import output_parent, source_parent
from kubectl_mtls.completion import subcommands
from kubectl_mtls.sources.kinds import rbac

README = (REPO / "README.md").read_text()


def section(title_start: str) -> str:
    """The README text from a heading starting with `title_start` (included) to the next heading of its
    level."""
    match = re.search(rf"^(#+) {re.escape(title_start)}.*$", README, re.M)
    assert match, title_start
    level = len(match.group(1))
    rest = README[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return match.group(0) + (rest[: end.start()] if end else rest)


def parser_of(name: str) -> argparse.ArgumentParser:
    sub = subcommands(cli.build_parser("kubectl mtls", name))
    assert sub is not None
    return sub.choices[name]


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


def spellings(parser: argparse.ArgumentParser) -> dict[str, tuple[str, ...]]:
    """long flag -> every way to write it (`--all-namespaces` -> ("-A", "--all-namespaces"))."""
    return {s: tuple(a.option_strings) for a in parser._actions for s in a.option_strings if s.startswith("--")}


SHARED = flags(output_parent()) | flags(source_parent())


def test_every_command_has_its_section() -> None:
    for name in cli.COMMANDS:
        assert re.search(rf"^### `kubectl mtls {re.escape(name)}\b", README, re.M), name


def test_the_flags_table_says_which_command_takes_the_shared_flags() -> None:
    table = section("Commands")
    rows = [line for line in table.splitlines() if line.startswith("| `-")]
    output_row, source_row = rows[0], rows[1]
    for name, (_, _, groups) in cli.COMMANDS.items():
        taken = flags(parser_of(name))
        assert ("--query" in taken) == ("output" in groups), name
        assert ("--snapshot" in taken) == ("source" in groups), name
        if "source" in groups:
            assert f"`{name}`" in source_row.split("|")[2], name
    assert "every command but `completion`" in output_row
    without = [n for n, (_, _, groups) in cli.COMMANDS.items() if "source" not in groups]
    none_row = next(line for line in table.splitlines() if line.startswith("| none of those"))
    assert sorted(re.findall(r"`([a-z-]+)`", none_row)) == sorted(without)


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_commands_own_flags_are_in_its_section(name: str) -> None:
    text = section(f"`kubectl mtls {name}")
    if name == "check":  # check pair has its own section
        text += section("`kubectl mtls check pair")
    ways = spellings(parser_of(name))
    missing = [
        flag
        for flag in sorted(flags(parser_of(name)) - SHARED)
        if not any(re.search(rf"[`\[| ]{re.escape(way)}\b", text) for way in ways[flag])
    ]
    assert not missing, f"README section of {name} does not mention {missing}"


def test_rbac_is_the_same_in_the_readme_the_krew_caveats_and_the_code() -> None:
    needed = rbac()
    install = section("Install")
    table = [line for line in install.splitlines() if line.startswith("| `")]
    in_readme: dict[str, str] = {}
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for resource in re.findall(r"`([a-z0-9./-]+)`", cells[0]):
            in_readme[resource] = cells[1]
    assert in_readme == needed
    manifest = yaml.safe_load((REPO / "krew-manifest.yaml").read_text())
    caveats = manifest["spec"]["caveats"]
    named = set(re.findall(r"[a-z]+(?:/[a-z]+|(?:\.[a-z0-9-]+)+)?", caveats))
    assert set(needed) <= named, set(needed) - named
    for resource, verbs in needed.items():  # each resource under the verbs the code uses
        block = caveats.split(resource, 1)[0]
        assert verbs.split(", ")[-1] in block.rsplit(":", 1)[0].split("\n")[-1] + block, resource


def test_snapshot_layout_names_every_path_the_writer_uses() -> None:
    from kubectl_mtls.sources import snapshot

    text = section("`kubectl mtls snapshot")
    for path in ("snapshot.json", "kubernetes/<kind>.json", "proxies/<namespace>/<pod>.json",
                 snapshot.PROXY_STATUS, "logs/<namespace>/<pod>/<container>.log", "stats/<namespace>/<pod>.prom",
                 "ztunnel/<ztunnel-pod>.json", "default_namespace"):
        assert path in text, path
    assert snapshot.log_path("NS", "POD", "C") == "logs/NS/POD/C.log"
    assert snapshot.stats_path("NS", "POD") == "stats/NS/POD.prom"
