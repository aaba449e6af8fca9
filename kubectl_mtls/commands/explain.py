"""`kubectl mtls explain [CHECK]`: what a check looks at, why it breaks mTLS, how to fix it."""

from __future__ import annotations

import argparse
import difflib
from typing import Any

from ..checks.base import Check, all_checks
from ..errors import UsageError
from ..render import columns, emit


def register(sub: Any, output: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "explain",
        parents=[output],
        help="explain a check (no argument: list them all)",
        description="Print what a check looks at, why it breaks mTLS and how to fix it. "
        "Without a CHECK, list every check.",
    )
    parser.add_argument("check", nargs="?", help="a check slug, e.g. root-mismatch")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    checks = all_checks()
    if args.check:
        match = [c for c in checks if c.slug == args.check]
        if not match:
            close = difflib.get_close_matches(args.check, [c.slug for c in checks], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; 'kubectl mtls explain' lists them"
            raise UsageError(f"no check named {args.check!r}{hint}")
        item = match[0]
        data: Any = {
            "check": item.slug,
            "area": item.area,
            "severity": item.severity,
            "title": item.title,
            "reads": list(item.reads),
            "explain": item.explain,
        }
        emit(
            data,
            args.output,
            args.query,
            lambda d, wide: (
                f"{d['check']} ({d['severity']}, {d['area']})\n{d['title']}\n\n{d['explain']}\n"
                f"\nReads: {', '.join(d['reads'])}\n" + (_details(item) if wide else "")
            ),
        )
        return 0
    by_slug = {c.slug: c for c in checks}
    data = {"checks": [{"check": c.slug, "area": c.area, "severity": c.severity, "title": c.title} for c in checks]}
    emit(
        data,
        args.output,
        args.query,
        lambda d, wide: columns(
            ["CHECK", "SEVERITY", "AREA", "WHAT IT CHECKS"] + (["READS"] if wide else []),
            [
                [c["check"], c["severity"], c["area"], c["title"]]
                + ([", ".join(by_slug[c["check"]].reads)] if wide else [])
                for c in d["checks"]
            ],
        ),
    )
    return 0


def _details(item: Check) -> str:
    """-o wide: what else decides when the check runs."""
    lines = []
    if item.optional:
        lines.append(f"Also reads, when readable: {', '.join(item.optional)}")
    if item.needs_logs:
        lines.append("Runs for `check pod`, and for scans only with --logs")
    if item.mesh_wide:
        lines.append("Mesh-wide: `check pod` keeps its findings too")
    return "".join(line + "\n" for line in lines)
