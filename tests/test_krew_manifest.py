"""krew-manifest.yaml against krew's rules (tests/krew_validator.py), and the validator against each rule."""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from krew_validator import KrewError, check_manifest, conventions, index_checks, validate_plugin

from kubectl_mtls import __version__

MANIFEST = REPO / "krew-manifest.yaml"
PLATFORMS = {("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64")}


def manifest() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    return doc


def test_the_manifest_passes_every_krew_rule_and_convention() -> None:
    assert check_manifest(MANIFEST, name="mtls") == []  # no error, no warning


def test_krew_index_takes_the_name_from_the_file_name(tmp_path: Path) -> None:
    with pytest.raises(KrewError, match=r'^plugin should be named "krew-manifest", not "mtls"$'):
        check_manifest(MANIFEST)
    shutil.copy(MANIFEST, tmp_path / "mtls.yaml")  # what a krew-index submission is called
    assert check_manifest(tmp_path / "mtls.yaml") == []


def test_what_the_issue_asks_of_the_manifest() -> None:
    doc = manifest()
    spec = doc["spec"]
    assert "{{" not in MANIFEST.read_text()  # concrete, not a release-bot template
    assert doc["metadata"]["name"] == "mtls"
    assert spec["version"] == f"v{__version__}"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", spec["version"])
    assert len(spec["shortDescription"]) <= 50 and "\n" not in spec["shortDescription"]
    description = spec["description"]
    assert "istioctl" in description and "live cluster" in description
    for checked in ("certificate", "roots", "inbound", "PeerAuthentication", "DestinationRule"):
        assert checked in description
    caveats = spec["caveats"]
    assert "istioctl on PATH" in caveats
    for rbac in ("pods", "namespaces", "peerauthentications", "pods/portforward"):
        assert rbac in caveats
    assert "kubectl mtls completion kubectl" in caveats
    seen = set()
    for entry in spec["platforms"]:
        labels = entry["selector"]["matchLabels"]
        pair = (labels["os"], labels["arch"])
        seen.add(pair)
        assert entry["uri"].startswith("https://")
        assert entry["uri"].endswith(f"/v{__version__}/kubectl-mtls_v{__version__}_{pair[0]}_{pair[1]}.tar.gz")
        assert re.fullmatch(r"[a-f0-9]{64}", entry["sha256"])
        assert entry["bin"] == "kubectl-mtls/kubectl-mtls"
        files = {(op["from"], op["to"]) for op in entry["files"]}
        assert files == {("kubectl-mtls", "."), ("kubectl_complete-mtls", "."), ("LICENSE", ".")}
    assert seen == PLATFORMS


def test_the_packages_version_is_the_manifests() -> None:
    text = (REPO / "kubectl_mtls" / "__init__.py").read_text()
    assert f'__version__ = "{manifest()["spec"]["version"][1:]}"' in text


# -- the validator applies each rule, with krew's words ---------------------------------------------------------


def edited(change: str) -> dict[str, Any]:
    doc = copy.deepcopy(manifest())
    spec, first = doc["spec"], doc["spec"]["platforms"][0]
    if change == "apiVersion":
        doc["apiVersion"] = "krew.googlecontainertools.github.com/v1alpha1"
    elif change == "kind":
        doc["kind"] = "Plugins"
    elif change == "name":
        doc["metadata"]["name"] = "istio-mtls"
    elif change == "no-short":
        spec["shortDescription"] = ""
    elif change == "short-newline":
        spec["shortDescription"] = "two\nlines"
    elif change == "no-platforms":
        spec["platforms"] = []
    elif change == "no-version":
        del spec["version"]
    elif change == "version-no-v":
        spec["version"] = __version__
    elif change == "version-two-parts":
        spec["version"] = "v1.2"
    elif change == "no-uri":
        del first["uri"]
    elif change == "no-sha":
        first["sha256"] = ""
    elif change == "upper-sha":
        first["sha256"] = first["sha256"].upper().replace("0", "A")
    elif change == "no-bin":
        del first["bin"]
    elif change == "empty-files":
        first["files"] = []
    elif change == "no-from":
        first["files"][0]["from"] = ""
    elif change == "no-to":
        del first["files"][1]["to"]
    elif change == "no-selector":
        del first["selector"]
    elif change == "empty-selector":
        first["selector"] = {}
    elif change == "bad-key":
        first["selector"]["matchLabels"]["distro"] = "debian"
    elif change == "empty-labels":
        first["selector"] = {"matchLabels": {}, "matchExpressions": [{"key": "os", "operator": "Exists"}]}
    elif change == "empty-expressions":
        first["selector"] = {"matchLabels": {"os": "linux"}, "matchExpressions": []}
    return doc


PLATFORM_ERROR = r"^platform \(\{URI:.*\}\) is badly constructed: "


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ("apiVersion", r'^plugin manifest has apiVersion="krew.googlecontainertools.github.com/v1alpha1", not '
                       r"supported in this version of krew \(try updating plugin index or install a newer version "
                       r"of krew\)$"),
        ("kind", r'^plugin manifest has kind="Plugins", but only "Plugin" is supported$'),
        ("name", r'^plugin should be named "mtls", not "istio-mtls"$'),
        ("no-short", r"^should have a short description$"),
        ("short-newline", r"^should not have line breaks in short description$"),
        ("no-platforms", r"^should have a platform specified$"),
        ("no-version", r"^should have a version specified$"),
        ("version-no-v", r"^failed to parse plugin version: "),
        ("version-two-parts", r"^failed to parse plugin version: "),
        ("no-uri", PLATFORM_ERROR + r"`uri` has to be set$"),
        ("no-sha", PLATFORM_ERROR + r"`sha256` sum has to be set$"),
        ("upper-sha", PLATFORM_ERROR + r"`sha256` value [0-9A-F]{64} is not valid, must match pattern "
                      r"\^\[a-f0-9\]\{64\}\$$"),
        ("no-bin", PLATFORM_ERROR + r"`bin` has to be set$"),
        ("empty-files", PLATFORM_ERROR + r"`files` is invalid: `files` has to be unspecified or non-empty$"),
        ("no-from", PLATFORM_ERROR + r"`files` is invalid: `from` field has to be set$"),
        ("no-to", PLATFORM_ERROR + r"`files` is invalid: `to` field has to be set$"),
        ("no-selector", PLATFORM_ERROR + r"invalid platform selector: nil selector is not supported$"),
        ("empty-selector", PLATFORM_ERROR + r"invalid platform selector: empty selector is not supported$"),
        ("bad-key", PLATFORM_ERROR + r'invalid platform selector: key "distro" not supported$'),
        ("empty-labels", PLATFORM_ERROR + r"invalid platform selector: `matchLabels` specified but empty$"),
        ("empty-expressions", PLATFORM_ERROR + r"invalid platform selector: `matchExpressions` specified but empty$"),
    ],
)
def test_each_validate_plugin_rule(change: str, error: str) -> None:
    with pytest.raises(KrewError, match=error):
        validate_plugin(edited(change), "mtls")


@pytest.mark.parametrize("name", ["mtls", "istio-mtls", "a_b", "X1"])
def test_allowed_names(name: str) -> None:
    doc = manifest()
    doc["metadata"]["name"] = name
    validate_plugin(doc, name)


@pytest.mark.parametrize("name", ["m.tls", "mtls!", "mtlś", "con", "LPT1", "com9", ""])
def test_refused_names(name: str) -> None:
    doc = manifest()
    doc["metadata"]["name"] = name
    with pytest.raises(KrewError, match=r'^the plugin name ".*" is not allowed, must match "\^\[\\\\w-\]\+\$"$'):
        validate_plugin(doc, name)


@pytest.mark.parametrize(
    ("version", "valid"),
    [("v1.2.3", True), ("v1.2.3-rc.1", True), ("v1.2.3-rc.1+build.5", True), ("v0.0.0", True),
     ("1.2.3", False), ("v1.2", False), ("v1.2.3.4", False), ("v01.2.3", False), ("v1.2.3-rc.01", False),
     ("V1.2.3", False)],
)
def test_versions(version: str, valid: bool) -> None:
    doc = manifest()
    doc["spec"]["version"] = version
    if valid:
        validate_plugin(doc, "mtls")
    else:
        with pytest.raises(KrewError, match=r"^failed to parse plugin version: "):
            validate_plugin(doc, "mtls")


def test_yaml_scalars_are_read_as_strings_like_krew_does() -> None:
    doc = manifest()
    doc["spec"]["platforms"] = [{**doc["spec"]["platforms"][0], "selector": {"matchLabels": {"os": "linux",
                                                                                         "arch": 386}}}]
    validate_plugin(doc, "mtls")
    index_checks(doc)  # arch: 386 (an int in YAML) is linux/386


def test_index_rejects_unsupported_and_overlapping_selectors() -> None:
    doc = manifest()
    doc["spec"]["platforms"][0]["selector"]["matchLabels"]["arch"] = "riscv64"
    with pytest.raises(KrewError, match=r"^spec\.platform\[0\]'s selector .* doesn't match any supported platforms$"):
        index_checks(doc)
    doc = manifest()
    doc["spec"]["platforms"].append({**doc["spec"]["platforms"][0], "selector": {"matchLabels": {"os": "linux"}}})
    with pytest.raises(KrewError, match=r"^multiple spec\.platforms \(at indexes \[0, 4\]\) have overlapping "
                                        r"selectors that select linux/amd64$"):
        index_checks(doc)
    doc = manifest()
    doc["spec"]["platforms"][0]["selector"] = {"matchExpressions": [{"key": "os", "operator": "In", "values": []}]}
    with pytest.raises(KrewError, match="operator In needs values"):
        index_checks(doc)


def test_conventions() -> None:
    doc = manifest()
    doc["spec"]["shortDescription"] = "x" * 51
    doc["spec"]["description"] = "y" * 81
    del doc["spec"]["homepage"]
    doc["spec"]["platforms"][0]["files"] = [{"from": "kubectl-mtls", "to": "."}]
    doc["spec"]["platforms"][1]["uri"] = "http://example.invalid/a.tar.gz"
    warnings = conventions(doc)
    assert len(warnings) == 5, warnings
    doc["spec"]["platforms"][2]["bin"] = "../kubectl-mtls"
    with pytest.raises(KrewError, match="escapes the install directory"):
        conventions(doc)


# -- scripts/release keeps the manifest in step (without building: --manifest-only, --check) ------------------


def release(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "release"), *args], capture_output=True,
                          text=True, timeout=120)


def test_release_writes_each_archives_sha256_into_its_platform(tmp_path: Path) -> None:
    target = tmp_path / "krew-manifest.yaml"
    text = MANIFEST.read_text().replace(f"v{__version__}", "v0.0.9")  # an older release, to be updated
    target.write_text(text)
    out = tmp_path / "dist"
    out.mkdir()
    sums = {}
    for os_name, arch in sorted(PLATFORMS):
        archive = out / f"kubectl-mtls_v{__version__}_{os_name}_{arch}.tar.gz"
        archive.write_bytes(f"{os_name}/{arch}".encode())
        sums[(os_name, arch)] = hashlib.sha256(archive.read_bytes()).hexdigest()
    proc = release("--manifest-only", "--out", str(out), "--manifest", str(target))
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(target.read_text())
    assert doc["spec"]["version"] == f"v{__version__}"
    for entry in doc["spec"]["platforms"]:
        labels = entry["selector"]["matchLabels"]
        assert entry["sha256"] == sums[(labels["os"], labels["arch"])]
        assert f"/v{__version__}/kubectl-mtls_v{__version__}_" in entry["uri"]
    comments = [line for line in MANIFEST.read_text().splitlines() if line.startswith("#")]
    assert len([line for line in target.read_text().splitlines() if line.startswith("#")]) == len(comments)
    assert check_manifest(target, name="mtls") == []
    assert release("--check", "--manifest", str(target)).returncode == 0


def test_release_check_refuses_platforms_not_built(tmp_path: Path) -> None:
    target = tmp_path / "krew-manifest.yaml"
    text = MANIFEST.read_text()
    target.write_text(re.sub(r'sha256: "?[a-f0-9]{64}"?', 'sha256: "' + "0" * 64 + '"', text))
    proc = release("--check", "--manifest", str(target))
    assert proc.returncode == 1
    assert "not built yet" in proc.stderr and "linux/amd64" in proc.stderr


# -- the archive rules krew applies at install time (small archives made here) --------------------------------


def make_archive(path: Path, entries: dict[str, bytes | str | None], kind: str = "tar.gz") -> Path:
    """name -> bytes (a file, mode 0755 if the name has no dot), str (a symlink to it), None (a directory)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644 if "." in name or name == "LICENSE" else 0o755
                tar.addfile(info, io.BytesIO(content))
    data = buffer.getvalue()
    path.write_bytes(data if kind == "tar" else gzip.compress(data))
    return path


GOOD = {"kubectl-mtls": None, "kubectl-mtls/kubectl-mtls": b"#!/bin/sh\necho ok\n",
        "kubectl_complete-mtls": b"#!/bin/sh\n", "LICENSE": b"MIT\n"}


def install(tmp_path: Path, entries: dict[str, bytes | str | None], kind: str = "tar.gz",
            edit: Any = None) -> Path:
    from krew_validator import install_like_krew

    archive = make_archive(tmp_path / "a.tar.gz", entries, kind)
    doc = manifest()
    entry = doc["spec"]["platforms"][0]
    entry["sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    if edit:
        edit(entry)
    return install_like_krew(doc, "linux", "amd64", archive, tmp_path / "krew")


def test_a_good_archive_installs_like_krew(tmp_path: Path) -> None:
    link = install(tmp_path, GOOD)
    assert link == tmp_path / "krew" / "bin" / "kubectl-mtls"
    assert link.resolve() == tmp_path / "krew" / "store" / "mtls" / f"v{__version__}" / "kubectl-mtls" / "kubectl-mtls"
    assert subprocess.run([str(link)], capture_output=True, text=True).stdout == "ok\n"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("symlink", r"^unable to handle file type 50 for \"kubectl-mtls/python\" in tar$"),
        ("plain-tar", r"^mime type for archive file is not a supported archive format"),
        ("escape", r"tries to escape the extraction directory"),
        ("unclean-to", r'^the provided path is not clean, "\./bin" should be "bin"$'),
        ("trailing-slash", r'^the provided path is not clean, "bin/" should be "bin"$'),
        ("no-match", r"^no files in the plugin archive matched the glob pattern=LICENSE$"),
        ("no-license", r"^LICENSE \(or alike\) file is not extracted from the archive as part of installation$"),
        ("sha", r"^checksum does not match"),
        ("not-executable", r"is not an executable file after installation$"),
    ],
)
def test_archive_rules_at_install_time(tmp_path: Path, case: str, error: str) -> None:
    entries: dict[str, bytes | str | None] = dict(GOOD)
    kind, edit = "tar.gz", None
    if case == "symlink":
        entries["kubectl-mtls/python"] = "kubectl-mtls"
    elif case == "plain-tar":
        kind = "tar"
    elif case == "escape":
        entries["../evil"] = b"x"
    elif case in ("unclean-to", "trailing-slash"):
        to = "./bin" if case == "unclean-to" else "bin/"

        def edit(entry: dict[str, Any]) -> None:
            entry["files"][0]["to"] = to
    elif case == "no-match":
        del entries["LICENSE"]
    elif case == "no-license":
        def edit(entry: dict[str, Any]) -> None:
            entry["files"] = entry["files"][:2]
    elif case == "sha":
        def edit(entry: dict[str, Any]) -> None:
            entry["sha256"] = "a" * 64
    elif case == "not-executable":
        def edit(entry: dict[str, Any]) -> None:
            entry["bin"] = "LICENSE"
    with pytest.raises(KrewError, match=error):
        install(tmp_path, entries, kind, edit)
