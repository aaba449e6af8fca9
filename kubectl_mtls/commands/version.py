"""`kubectl mtls version`."""

from __future__ import annotations

import argparse
import platform
from typing import Any

from .. import __version__
from ..render import emit


def register(sub: Any, output: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("version", parents=[output], help="print the version", description="Print the version.")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    data = {"version": f"v{__version__}", "python": platform.python_version()}
    emit(
        data,
        args.output,
        args.query,
        lambda d, wide: f"kubectl-mtls {d['version']}" + (f" (Python {d['python']})" if wide else "") + "\n",
    )
    return 0
