"""scripts/release packs the same files into the same bytes (fixed mtimes, owner, order, gzip header) and
leaves the tracked krew-manifest.yaml alone unless --manifest names it. The tar/gzip step is run on small
trees made here; the full PyInstaller build is tests/test_packaging.py's."""

from __future__ import annotations

import gzip
import hashlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from conftest import REPO

from kubectl_mtls import __version__

RELEASE = REPO / "scripts" / "release"


def release_module() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("kubectl_mtls_release", str(RELEASE))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def tree(root: Path, order: list[str], stamp: int, private: bool) -> Path:
    """The same files, created in a different order, with other mtimes and modes."""
    contents = {
        "kubectl-mtls/kubectl-mtls": b"#!/bin/sh\necho app\n",
        "kubectl-mtls/_internal/lib.so": bytes(range(256)) * 40,
        "kubectl-mtls/_internal/data/a.txt": b"a\n",
        "kubectl_complete-mtls": b"#!/bin/sh\nexec kubectl-mtls __complete \"$@\"\n",
        "LICENSE": b"license\n",
    }
    for name in order:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(contents[name])
        executable = name in ("kubectl-mtls/kubectl-mtls", "kubectl_complete-mtls")
        path.chmod((0o700 if private else 0o775) if executable else (0o600 if private else 0o664))
        os.utime(path, (stamp, stamp))
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_files_pack_into_the_same_bytes(tmp_path: Path) -> None:
    release = release_module()
    names = ["LICENSE", "kubectl-mtls/_internal/lib.so", "kubectl-mtls/kubectl-mtls",
             "kubectl-mtls/_internal/data/a.txt", "kubectl_complete-mtls"]
    first = tree(tmp_path / "one", names, 1_000_000_000, private=False)
    second = tree(tmp_path / "two", list(reversed(names)), 1_700_000_000, private=True)
    mtime = 1_750_000_000
    release.write_tar(first, tmp_path / "one.tar.gz", mtime)
    release.write_tar(second, tmp_path / "two.tar.gz", mtime)
    assert sha256(tmp_path / "one.tar.gz") == sha256(tmp_path / "two.tar.gz")
    # gzip header: no file name (FLG 0), no time (MTIME 0)
    header = (tmp_path / "one.tar.gz").read_bytes()[:10]
    assert header[:3] == b"\x1f\x8b\x08" and header[3] == 0 and header[4:8] == b"\0\0\0\0"
    with tarfile.open(tmp_path / "one.tar.gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "root", "root", mtime)}
    modes = {m.name: m.mode for m in members}
    assert modes["kubectl-mtls/kubectl-mtls"] == modes["kubectl_complete-mtls"] == 0o755
    assert modes["LICENSE"] == 0o644 and modes["kubectl-mtls/_internal"] == 0o755
    assert all(m.isfile() or m.isdir() for m in members)
    with gzip.open(tmp_path / "one.tar.gz") as raw:
        assert raw.read()  # a complete stream
    # another mtime is another archive: the mtime is the only input besides the files
    release.write_tar(first, tmp_path / "three.tar.gz", mtime + 1)
    assert sha256(tmp_path / "three.tar.gz") != sha256(tmp_path / "one.tar.gz")


def test_the_archive_time_comes_from_the_tree_not_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    release = release_module()
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first, second = release.source_date_epoch(), release.source_date_epoch()
    assert first == second and first > 0
    commit = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%ct"], capture_output=True, text=True)
    if commit.returncode == 0 and commit.stdout.strip().isdigit():
        assert first == int(commit.stdout.strip())
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    assert release.source_date_epoch() == 1234567890


def test_release_leaves_the_tracked_manifest_alone_unless_asked(tmp_path: Path) -> None:
    tracked = (REPO / "krew-manifest.yaml").read_bytes()
    out = tmp_path / "dist"
    out.mkdir()
    archive = out / f"kubectl-mtls_v{__version__}_linux_amd64.tar.gz"
    archive.write_bytes(b"an archive")
    proc = subprocess.run([sys.executable, str(RELEASE), "--manifest-only", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (REPO / "krew-manifest.yaml").read_bytes() == tracked
    copy = yaml.safe_load((out / "krew-manifest.yaml").read_text())
    entry = next(p for p in copy["spec"]["platforms"]
                 if p["selector"]["matchLabels"] == {"os": "linux", "arch": "amd64"})
    assert entry["sha256"] == sha256(archive)
    assert str(out / "krew-manifest.yaml") in proc.stdout
