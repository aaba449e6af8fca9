"""The command line's grammar: the command table, the argparse parser and its one-line usage errors.

Shared by the entry point (cli.py) and shell completion (completion.py), which both read the parser;
stdlib only, and a command's module is imported only when that command is being run or completed.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .errors import EXIT_USAGE

TYPE_CHECKING = False  # typing itself costs a few ms of every start-up; mypy reads the block anyway
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

EXIT_CODES = """exit codes:
  0  fine
  1  a problem was found (mismatched roots, expired certificates, ...)
  2  usage error, unreadable input (malformed dump or snapshot), unknown namespace or pod
  3  could not gather: cluster or istioctl unreachable, forbidden, timed out"""

# Every command: name -> (module under kubectl_mtls.commands, one-line summary for --help, the shared
# flag groups its `register(sub, *groups)` takes: "output" (-o, --query, --no-color), "source" (-n,
# --snapshot, --kubeconfig, ...)). register() adds the command's parser with the same summary. To add a
# command: its module, and one line here.
COMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "check": ("check", "diagnose mTLS for a pod, a namespace or the whole mesh", ("output", "source")),
    "explain": ("explain", "explain a check (no argument: list them all)", ("output",)),
    "proxy": ("proxy", "show one sidecar's normalized mTLS config", ("output", "source")),
    "certs": ("certs", "list workload certificates and roots, soonest expiry first", ("output", "source")),
    "rootdiff": ("rootdiff", "compare two sidecars' trusted roots and check trust both ways", ("output", "source")),
    "strict-ready": (
        "strict_ready",
        "is it safe to switch from PERMISSIVE to STRICT? who still sends plaintext",
        ("output", "source"),
    ),
    "trust": (
        "trust",
        "check trust between the clusters of a multi-cluster mesh (roots, intermediates, trust domains)",
        ("output", "source"),
    ),
    "snapshot": ("snapshot", "save pods, Istio policies and sidecar configs to a directory", ("output", "source")),
    "version": ("version", "print the version", ("output",)),
    "completion": ("completion", "print a shell completion script (bash, zsh, kubectl)", ()),
}


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line naming the argument, plus where to read more, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message}; see {self.prog} --help\n")


def program_name(argv0: str) -> str:
    """`kubectl mtls` when kubectl (or krew's symlink) started us as kubectl-mtls."""
    base = os.path.basename(argv0)
    if base == "__main__.py":  # python -m kubectl_mtls
        return "kubectl-mtls"
    return "kubectl mtls" if base.startswith("kubectl-") else base or "kubectl-mtls"


def command_word(args: Sequence[str]) -> str | None:
    """The command typed: the first word that is not an option (the top level has no option values)."""
    for word in args:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def build_parser(prog: str, command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported and registered (None: none, all: every one)."""
    from importlib import import_module

    parser = Parser(
        prog=prog,
        description="Find why Istio mutual TLS fails: policies, sidecar config, certificates and roots.",
        epilog=EXIT_CODES + "\n\nRun '%(prog)s COMMAND --help' for a command's flags and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kubectl-mtls v{__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    groups: dict[str, argparse.ArgumentParser] = {}
    for name, (module, summary, wanted) in COMMANDS.items():
        if command not in (name, "all"):
            sub.add_parser(name, help=summary, add_help=False)
            continue
        if not groups:
            from .commands.common import output_parent, source_parent

            groups = {"output": output_parent(), "source": source_parent()}
        register = import_module(f".commands.{module}", __package__).register
        register(sub, *(groups[group] for group in wanted))
    return parser


def unknown_command(prog: str, word: str) -> NoReturn:
    import difflib

    close = difflib.get_close_matches(word, list(COMMANDS), n=3, cutoff=0.5)
    close += [name for name in COMMANDS if name.startswith(word[:3]) and name not in close]
    hint = f"did you mean {' or '.join(close[:3])}? " if close else ""
    sys.stderr.write(
        f"error: unknown command {word!r}: {hint}commands are {', '.join(COMMANDS)}; see {prog} --help\n"
    )
    sys.exit(EXIT_USAGE)
