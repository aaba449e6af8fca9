"""An internal error (a bug of ours) that slips through is still one line, exit 2, and
KUBECTL_MTLS_DEBUG=1 shows its traceback. The bug is planted by replacing one command's `run` before the
real entry point starts, in a subprocess, so the whole CLI error path is the one under test."""

from __future__ import annotations

import os
import subprocess
import sys

PLANTED = (
    "import kubectl_mtls.commands.version as v\n"
    "def run(args):\n"
    "    raise KeyError('planted bug')\n"
    "v.run = run\n"
    "from kubectl_mtls.cli import main\n"
    "raise SystemExit(main(['version']))\n"
)


def _run(debug: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("KUBECTL_MTLS_DEBUG", None)
    if debug:
        env["KUBECTL_MTLS_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-c", PLANTED], capture_output=True, text=True, env=env, timeout=60)


def test_internal_error_is_one_line_by_default() -> None:
    proc = _run(debug=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: internal error: KeyError: 'planted bug' (set KUBECTL_MTLS_DEBUG=1 for a traceback; please report it)"
    ]


def test_debug_shows_the_traceback() -> None:
    proc = _run(debug=True)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "KeyError: 'planted bug'" in proc.stderr
    assert 'line 3, in run' in proc.stderr and "kubectl_mtls/cli.py" in proc.stderr
