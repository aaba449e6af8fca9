"""Shared fixtures: the external corpus, and running the installed `kubectl-mtls` as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
BIN = Path(sys.executable).parent


def corpus_path(relative: str) -> Path:
    path = CORPUS / relative
    if not path.exists():
        pytest.skip(f"external corpus not found at {CORPUS} (optional; see shared/corpus/README.md)")
    return path


def cli_argv() -> list[str]:
    script = BIN / "kubectl-mtls"
    return [str(script)] if script.exists() else [sys.executable, "-m", "kubectl_mtls"]


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess (real exit codes, real stdout/stderr); never hangs a test."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    full_env.pop("KUBECTL_MTLS_DEBUG", None)
    return subprocess.run(
        [*cli_argv(), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
        preexec_fn=preexec_fn,
    )


@pytest.fixture()
def snap(tmp_path: Path) -> Path:
    """A writable copy of the bundled example snapshot, for tests that damage it."""
    target = tmp_path / "snap"
    shutil.copytree(REPO / "examples" / "rotation", target)
    return target


def openssl() -> str:
    found = shutil.which("openssl")
    if not found:
        pytest.skip("openssl CLI not installed")
    return found


def openssl_fingerprint(pem: bytes) -> str:
    """What `openssl x509 -noout -fingerprint -sha256` prints, value only."""
    out = subprocess.run(
        [openssl(), "x509", "-noout", "-fingerprint", "-sha256"], input=pem, capture_output=True, check=True
    ).stdout.decode()
    return out.strip().split("=", 1)[1]


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> None:
    """Bad input must give one clear line on stderr, never a traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
