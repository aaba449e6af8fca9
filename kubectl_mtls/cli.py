"""Entry point: argparse, one-line errors, exit codes. Top-level imports stay stdlib-only."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from .errors import EXIT_USAGE, MtlsError

EXIT_CODES = """exit codes:
  0  fine
  1  a problem was found (mismatched roots, expired certificates, ...)
  2  usage error, unreadable input (malformed dump or snapshot), unknown pod
  3  could not gather: cluster or istioctl unreachable, forbidden, timed out"""


class Parser(argparse.ArgumentParser):
    """argparse that exits with our usage code (2) and a one-line error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def program_name(argv0: str) -> str:
    """`kubectl mtls` when kubectl (or krew's symlink) started us as kubectl-mtls."""
    base = os.path.basename(argv0)
    return "kubectl mtls" if base.startswith("kubectl-") else base or "kubectl-mtls"


def build_parser(prog: str) -> argparse.ArgumentParser:
    from .commands import certs, check, completion, explain, proxy, rootdiff, snapshot, strict_ready, version
    from .commands.common import output_parent, source_parent

    parser = Parser(
        prog=prog,
        description="Find why Istio mutual TLS fails: policies, sidecar config, certificates and roots.",
        epilog=EXIT_CODES + "\n\nRun '%(prog)s COMMAND --help' for a command's flags and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kubectl-mtls v{__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    output, source = output_parent(), source_parent()
    check.register(sub, output, source)
    explain.register(sub, output)
    proxy.register(sub, output, source)
    certs.register(sub, output, source)
    rootdiff.register(sub, output, source)
    strict_ready.register(sub, output, source)
    snapshot.register(sub, output, source)
    version.register(sub, output)
    completion.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["__complete"]:  # shell completion (see completion.py); never parsed as a command
        from .completion import main as complete

        return complete(args_list[1:])
    parser = build_parser(program_name(sys.argv[0]))
    args = parser.parse_args(args_list)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.handler(args)
        sys.stdout.flush()
        return code
    except MtlsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `kubectl mtls certs -A | head`: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: still one line, and a way to see more
        if os.environ.get("KUBECTL_MTLS_DEBUG"):
            raise
        print(
            f"error: internal error: {type(exc).__name__}: {exc} (set KUBECTL_MTLS_DEBUG=1 for a traceback; "
            "please report it)",
            file=sys.stderr,
        )
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
