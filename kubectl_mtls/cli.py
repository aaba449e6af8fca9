"""Entry point: parse (parser.py), run the command, one-line errors, exit codes.

Top-level imports stay stdlib-only, and a command's module is imported only when that command runs
(or its --help is asked for): `kubectl mtls --help` and shell completion run at every TAB and must start
about as fast as Python itself.
"""

from __future__ import annotations

import os
import sys

from .errors import EXIT_USAGE, MtlsError, UsageError
from .parser import COMMANDS, build_parser, command_word, program_name, unknown_command

TYPE_CHECKING = False  # typing itself costs a few ms of every start-up; mypy reads the block anyway
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["COMMANDS", "build_parser", "command_word", "main", "program_name", "unknown_command"]


def main(argv: Sequence[str] | None = None) -> int:
    from .streams import guard_stdout

    guard_stdout()  # stdout closed, full or a closed pipe: the exit code still tells what was found
    from .terminal import fit_streams

    fit_streams()  # a terminal that is not UTF-8 gets ASCII marks instead of an encoding error
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["__complete"]:  # shell completion (see completion.py); never parsed as a command
        from .completion import main as complete

        return complete(args_list[1:])
    prog = program_name(sys.argv[0])
    command = command_word(args_list)
    if command is not None and command not in COMMANDS:
        unknown_command(prog, command)
    parser = build_parser(prog, command)
    args, extra = parser.parse_known_args(args_list)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    if extra:
        where = f"{prog} {command}"
        words = " ".join(extra)
        print(f"error: unexpected argument(s) {words!r} for {where}; see {where} --help", file=sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.handler(args)
        sys.stdout.flush()
        return code
    except UsageError as exc:  # a mistake in the arguments: say where the command's flags are explained
        more = "" if "--help" in str(exc) else f"; see {prog} {command} --help"
        print(f"error: {exc}{more}", file=sys.stderr)
        return exc.exit_code
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
