"""krew's rules for a plugin manifest and its archive, restated in Python for the tests.

Three layers, as krew and krew-index apply them (facts: ../shared/reference/ECOSYSTEM.md section 1):
* `validate_plugin`: krew's ValidatePlugin, in its order, first error wins, with its messages.
* `index_checks`: what krew-index CI adds (supported os/arch pairs, overlapping selectors, selector
  operators), plus our conventions as warnings (`conventions`).
* `install_like_krew`: what `kubectl krew install --manifest --archive` does with the archive: sha256,
  archive type sniffing, tar entry types and paths, `files` moves (clean `to`, globs that match), the
  bin link `bin/kubectl-<name>`, and a LICENSE file after install.
krew decodes YAML loosely: unknown fields are ignored and scalars become strings, so values are str()'d.
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
NAME_PATTERN = r"^[\w-]+$"
WINDOWS_FORBIDDEN = ["CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))]
SHA256_PATTERN = "^[a-f0-9]{64}$"
SUPPORTED = [("windows", "386"), ("windows", "amd64"), ("windows", "arm64"), ("linux", "386"), ("linux", "amd64"),
             ("linux", "arm"), ("linux", "arm64"), ("linux", "ppc64le"), ("darwin", "386"), ("darwin", "amd64"),
             ("darwin", "arm64")]
LICENSE_NAMES = {"license", "license.txt", "license.md", "licenses", "licenses.txt", "licenses.md", "copying",
                 "copying.txt"}
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


class KrewError(Exception):
    """What krew (or krew-index CI) would print and stop on."""


def goq(value: Any) -> str:
    """Go's %q for the strings in these messages."""
    return json.dumps(str(value), ensure_ascii=False)


def s(value: Any) -> str:
    """krew's loose decoding: a missing field is "", a scalar becomes its string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- krew ValidatePlugin -------------------------------------------------------------------------------------


def validate_plugin(doc: dict[str, Any], name: str) -> None:
    if s(doc.get("apiVersion")) != API_VERSION:
        raise KrewError(f"plugin manifest has apiVersion={goq(s(doc.get('apiVersion')))}, not supported in this "
                        "version of krew (try updating plugin index or install a newer version of krew)")
    if s(doc.get("kind")) != "Plugin":
        raise KrewError(f'plugin manifest has kind={goq(s(doc.get("kind")))}, but only "Plugin" is supported')
    if not is_safe_plugin_name(name):
        raise KrewError(f"the plugin name {goq(name)} is not allowed, must match {goq(NAME_PATTERN)}")
    actual = s((doc.get("metadata") or {}).get("name"))
    if actual != name:
        raise KrewError(f"plugin should be named {goq(name)}, not {goq(actual)}")
    spec = doc.get("spec") or {}
    short = s(spec.get("shortDescription"))
    if not short:
        raise KrewError("should have a short description")
    if "\r" in short or "\n" in short:
        raise KrewError("should not have line breaks in short description")
    platforms = spec.get("platforms") or []
    if not platforms:
        raise KrewError("should have a platform specified")
    version = s(spec.get("version"))
    if not version:
        raise KrewError("should have a version specified")
    problem = semver_problem(version)
    if problem:
        raise KrewError(f"failed to parse plugin version: {problem}")
    for entry in platforms:
        problem = platform_problem(entry or {})
        if problem:
            raise KrewError(f"platform ({go_struct(entry or {})}) is badly constructed: {problem}")


def is_safe_plugin_name(name: str) -> bool:
    if not re.match(NAME_PATTERN, name, re.ASCII):
        return False
    return not any(name.upper() == forbidden for forbidden in WINDOWS_FORBIDDEN)


def semver_problem(version: str) -> str | None:
    if not version.startswith("v"):
        return f"version string {goq(version)} does not start with 'v'"
    if not _SEMVER.match(version[1:]):
        return f"failed to parse semver from {goq(version)}"
    return None


def go_struct(entry: dict[str, Any]) -> str:
    """Roughly Go's %+v of a Platform, for the message prefix."""
    return (f"{{URI:{s(entry.get('uri'))} Sha256:{s(entry.get('sha256'))} Selector:{entry.get('selector')} "
            f"Files:{entry.get('files')} Bin:{s(entry.get('bin'))}}}")


def platform_problem(entry: dict[str, Any]) -> str | None:
    if not s(entry.get("uri")):
        return "`uri` has to be set"
    sha = s(entry.get("sha256"))
    if not sha:
        return "`sha256` sum has to be set"
    if not re.match(SHA256_PATTERN, sha):
        return f"`sha256` value {sha} is not valid, must match pattern {SHA256_PATTERN}"
    if not s(entry.get("bin")):
        return "`bin` has to be set"
    files = entry.get("files")
    if files is not None:
        if not files:
            return "`files` is invalid: `files` has to be unspecified or non-empty"
        for op in files:
            if not s((op or {}).get("from")):
                return "`files` is invalid: `from` field has to be set"
            if not s((op or {}).get("to")):
                return "`files` is invalid: `to` field has to be set"
    problem = selector_problem(entry.get("selector"))
    return f"invalid platform selector: {problem}" if problem else None


def selector_problem(selector: Any) -> str | None:
    if selector is None:
        return "nil selector is not supported"
    labels = selector.get("matchLabels")
    expressions = selector.get("matchExpressions")
    if labels is None and not expressions:
        return "empty selector is not supported"
    keys = [s(k) for k in (labels or {})] + [s((e or {}).get("key")) for e in (expressions or [])]
    for key in keys:
        if key not in ("os", "arch"):
            return f"key {goq(key)} not supported"
    if labels is not None and len(labels) == 0:
        return "`matchLabels` specified but empty"
    if expressions is not None and len(expressions) == 0:
        return "`matchExpressions` specified but empty"
    return None


# -- krew-index CI and our conventions ---------------------------------------------------------------------------


def selector_matches(selector: dict[str, Any], os_name: str, arch: str) -> bool:
    labels = {"os": os_name, "arch": arch}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(s(key)) != s(value):
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = s(expression.get("key")), s(expression.get("operator"))
        values = [s(v) for v in expression.get("values") or []]
        present = key in labels
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def index_checks(doc: dict[str, Any]) -> None:
    platforms = (doc.get("spec") or {}).get("platforms") or []
    matched: dict[tuple[str, str], list[int]] = {}
    for index, entry in enumerate(platforms):
        selector = entry.get("selector") or {}
        for expression in selector.get("matchExpressions") or []:
            operator, values = s(expression.get("operator")), expression.get("values") or []
            if operator in ("In", "NotIn") and not values:
                raise KrewError(f"spec.platform[{index}]: operator {operator} needs values")
            if operator in ("Exists", "DoesNotExist") and values:
                raise KrewError(f"spec.platform[{index}]: operator {operator} takes no values")
            if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
                raise KrewError(f"spec.platform[{index}]: {goq(operator)} is not a valid selector operator")
        pairs = [pair for pair in SUPPORTED if selector_matches(selector, *pair)]
        if not pairs:
            raise KrewError(f"spec.platform[{index}]'s selector ({selector}) doesn't match any supported platforms")
        for pair in pairs:
            matched.setdefault(pair, []).append(index)
    for (os_name, arch), indexes in matched.items():
        if len(indexes) > 1:
            raise KrewError(f"multiple spec.platforms (at indexes {indexes}) have overlapping selectors that "
                            f"select {os_name}/{arch}")


def conventions(doc: dict[str, Any]) -> list[str]:
    """Warnings on what krew does not check but users and krew-index reviewers see; errors on unsafe bin."""
    spec = doc.get("spec") or {}
    warnings = []
    if len(s(spec.get("shortDescription"))) > 50:
        warnings.append("shortDescription is longer than 50 characters (`kubectl krew search` truncates it)")
    for line in s(spec.get("description")).splitlines():
        if len(line) > 80:
            warnings.append(f"description line longer than 80 columns: {line!r}")
    if not s(spec.get("homepage")):
        warnings.append("no homepage")
    for entry in spec.get("platforms") or []:
        bin_path = s(entry.get("bin"))
        if posixpath.isabs(bin_path) or ".." in bin_path.replace("\\", "/").split("/"):
            raise KrewError(f"bin {goq(bin_path)} escapes the install directory")
        if s(entry.get("uri")).startswith("http://"):
            warnings.append(f"uri is not https: {entry.get('uri')}")
        froms = [s(op.get("from")) for op in entry.get("files") or []]
        if entry.get("files") is not None and not any(fnmatch.fnmatch("LICENSE", f) for f in froms):
            warnings.append(f"LICENSE is not in the files of {entry.get('selector')}")
    return warnings


def check_manifest(path: Path, name: str | None = None) -> list[str]:
    """Everything above for a manifest file; the name defaults to the file's stem, as krew-index does."""
    import yaml

    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    validate_plugin(doc, name or path.stem)
    index_checks(doc)
    return conventions(doc)


# -- installing an archive as krew does --------------------------------------------------------------------------


def platform_for(doc: dict[str, Any], os_name: str, arch: str) -> dict[str, Any]:
    for entry in (doc.get("spec") or {}).get("platforms") or []:  # the first match wins, as in krew
        if selector_matches(entry.get("selector") or {}, os_name, arch):
            return dict(entry)
    raise KrewError(f"plugin does not offer installation for this platform ({os_name}/{arch})")


def extract(archive: Path, into: Path) -> None:
    head = archive.read_bytes()[:512]
    if head.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                check_entry_name(info.filename)
            zipped.extractall(into)
        return
    if not head.startswith(b"\x1f\x8b"):
        raise KrewError("mime type for archive file is not a supported archive format (zip or gzip tar only)")
    with gzip.open(archive) as unzipped, tarfile.open(fileobj=io.BytesIO(unzipped.read()), mode="r:") as tar:
        for member in tar.getmembers():
            check_entry_name(member.name)
            if not (member.isfile() or member.isdir()):
                raise KrewError(f"unable to handle file type {ord(member.type)} for {goq(member.name)} in tar")
            target = into / member.name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
            target.chmod(member.mode & 0o777)  # modes come from the archive; krew never chmods


def check_entry_name(name: str) -> None:
    if name.startswith(("/", "\\")) or ".." in re.split(r"[\\/]", name):
        raise KrewError(f"archive entry {goq(name)} tries to escape the extraction directory")


def install_like_krew(doc: dict[str, Any], os_name: str, arch: str, archive: Path, root: Path) -> Path:
    """Install into root/store/<name>/<version>/ and link root/bin/kubectl-<name>; return the link."""
    name = s((doc.get("metadata") or {}).get("name"))
    version = s((doc.get("spec") or {}).get("version"))
    entry = platform_for(doc, os_name, arch)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != s(entry.get("sha256")):
        raise KrewError(f"checksum does not match, want: {entry.get('sha256')}, got {digest}")
    staging = root / "tmp" / name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    extract(archive, staging)
    install_dir = root / "store" / name / version
    install_dir.mkdir(parents=True)
    for op in entry.get("files") or [{"from": "*", "to": "."}]:
        source, to = s(op["from"]), s(op["to"])
        if to != posixpath.normpath(to):
            raise KrewError(f"the provided path is not clean, {goq(to)} should be {goq(posixpath.normpath(to))}")
        matches = sorted(glob.glob(str(staging / source)))
        if not matches:
            raise KrewError(f"no files in the plugin archive matched the glob pattern={source}")
        destination = install_dir / to
        destination.mkdir(parents=True, exist_ok=True)
        for match in matches:
            shutil.move(match, destination / os.path.basename(match))
    licensed = [p for p in install_dir.iterdir() if p.is_file() and p.name.lower() in LICENSE_NAMES]
    if not licensed:
        raise KrewError("LICENSE (or alike) file is not extracted from the archive as part of installation")
    executable = install_dir / s(entry["bin"])
    if not executable.is_file() or not os.access(executable, os.X_OK):
        raise KrewError(f"bin {entry['bin']} is not an executable file after installation")
    link = root / "bin" / ("kubectl-" + name.replace("-", "_"))
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(executable)
    return link
