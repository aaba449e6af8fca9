"""Broken and hostile snapshot directories: each ends in a one-line `error:` (exit 2) naming the file,
object or argument, or in an `incomplete` entry of a multi-pod scan; never a traceback, a hang, a read
outside the snapshot or a warning on stderr. Run through the installed CLI, as a user runs it."""

from __future__ import annotations

import base64
import ctypes
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from harness.oddcerts import odd_certificate

FRONTEND, ORDERS, PAYMENTS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn", "payments-5d8c7b9f6-h3m9t"
UTC = dt.UTC


def _edit_items(snap: Path, plural: str, edit) -> None:  # type: ignore[no-untyped-def]
    path = snap / "kubernetes" / f"{plural}.json"
    doc = json.loads(path.read_text())
    edit(doc["items"])
    path.write_text(json.dumps(doc))


# -- wrong JSON shapes --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("plural", "edit", "named"),
    [
        ("pods", lambda items: items[0]["metadata"].__setitem__("labels", "app=frontend"), "metadata.labels"),
        ("pods", lambda items: items[0]["spec"].__setitem__("containers", "istio-proxy"), "spec.containers"),
        ("pods", lambda items: items[0]["spec"]["containers"][0].__setitem__("ports", ["8080"]), "ports[0]"),
        ("pods", lambda items: items[0]["spec"]["containers"].__setitem__(0, None), "spec.containers[0]"),
        ("pods", lambda items: items[0]["metadata"]["labels"].__setitem__("app", 7), "metadata.labels.app"),
        ("services", lambda items: items[0]["spec"].__setitem__("selector", ["app"]), "spec.selector"),
        ("services", lambda items: items[0]["spec"]["ports"][0].__setitem__("port", "80"), "ports[0].port"),
        ("namespaces", lambda items: items[0]["metadata"].__setitem__("labels", []), "metadata.labels"),
        ("peerauthentications", lambda items: items[0].__setitem__("spec", "STRICT"), "spec"),
        ("pods", lambda items: items.__setitem__(0, "a pod"), "items[0]"),
        ("services", lambda items: items[0]["spec"]["ports"][0].pop("port"), "spec.ports[0].port is missing"),
        ("pods", lambda items: items[0]["spec"]["containers"][0].pop("name"), "containers[0].name is missing"),
        ("pods", lambda items: items[1]["metadata"].__setitem__("name", "LS0tLS1CRUdJTi"), "valid Kubernetes name"),
        ("pods", lambda items: items[1]["metadata"].__setitem__("namespace", "../x"), "valid Kubernetes namespace"),
    ],
)
@pytest.mark.parametrize("command", [["check", "-A"], ["check", "pair", FRONTEND, ORDERS, "-n", "shop"]])
def test_wrong_shape_is_one_line_naming_object_and_field(
    snap: Path,
    plural: str,
    edit,
    named: str,
    command: list[str],  # type: ignore[no-untyped-def]
) -> None:
    _edit_items(snap, plural, edit)
    proc = run_cli(*command, "--snapshot", str(snap))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_line_error(proc)
    assert f"kubernetes/{plural}.json" in proc.stderr and named in proc.stderr, proc.stderr


def test_null_fields_read_as_absent(snap: Path) -> None:
    """Go's JSON decoding (kubectl's) reads null as an absent field: so does a snapshot."""

    def nulls(items: list[dict]) -> None:  # type: ignore[type-arg]
        items[0]["metadata"]["labels"] = None
        items[0]["spec"]["initContainers"] = None
        items[0]["status"] = None

    _edit_items(snap, "pods", nulls)
    proc = run_cli("check", "-A", "-o", "json", "--snapshot", str(snap))
    assert proc.returncode in (0, 1) and not proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["findings"]


# -- files that are not regular files -------------------------------------------------------------
def _replace(path: Path, fault: str, outside: Path) -> None:
    path.unlink()
    if fault == "directory":
        path.mkdir()
    elif fault == "dangling link":
        path.symlink_to(path.parent / "missing.json")
    elif fault == "link loop":
        path.symlink_to(path)
    elif fault == "fifo":
        os.mkfifo(path)
    elif fault == "socket":  # bound at a short path (AF_UNIX paths are short), then moved into place
        short = Path(tempfile.mkdtemp(dir="/tmp")) / "s"
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(short))
        sock.close()
        os.rename(short, path)
        short.parent.rmdir()
    elif fault == "/dev/zero":
        path.symlink_to("/dev/zero")
    elif fault == "link outside":
        path.symlink_to(outside)


FAULTS = {
    "directory": "a directory",
    "dangling link": "No such file or directory",
    "link loop": "too many levels of symbolic links",
    "fifo": "not a regular file",
    "socket": "not a regular file",
    "/dev/zero": "links outside the snapshot directory are not followed",
    "link outside": "links outside the snapshot directory are not followed",
}


@pytest.mark.parametrize("fault", FAULTS)
def test_kubernetes_file_fault_is_one_line(snap: Path, tmp_path: Path, fault: str) -> None:
    outside = tmp_path / "private.json"
    outside.write_text('{"items": []}')
    _replace(snap / "kubernetes" / "pods.json", fault, outside)
    proc = run_cli("check", "-A", "--snapshot", str(snap), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_line_error(proc)
    assert "pods.json" in proc.stderr and FAULTS[fault] in proc.stderr, proc.stderr


@pytest.mark.parametrize("fault", FAULTS)
def test_dump_file_fault_is_incomplete_in_a_scan(snap: Path, tmp_path: Path, fault: str) -> None:
    outside = tmp_path / "private.json"
    outside.write_text("{}")
    _replace(snap / "proxies" / "shop" / f"{ORDERS}.json", fault, outside)
    proc = run_cli("certs", "-A", "-o", "json", "--snapshot", str(snap), timeout=60)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    incomplete = json.loads(proc.stdout)["incomplete"]
    entry = next(e for e in incomplete if e["pod"] == ORDERS)
    assert FAULTS[fault] in entry["error"] or fault == "directory", entry
    single = run_cli("proxy", ORDERS, "-n", "shop", "--snapshot", str(snap), timeout=60)
    assert single.returncode == 2
    assert_one_line_error(single)


def test_file_over_the_size_limit_is_refused_unread(snap: Path) -> None:
    path = snap / "proxies" / "shop" / f"{ORDERS}.json"
    with open(path, "r+b") as handle:
        handle.truncate(257 * 1024 * 1024)  # sparse: costs no disk
    proc = run_cli("proxy", ORDERS, "-n", "shop", "--snapshot", str(snap))
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert "larger than the 256 MiB limit for snapshot files" in proc.stderr


_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _as_a_user_would_read() -> None:
    """Run in the child before exec: drop the two capabilities that let root read any file. Root's
    capabilities are recomputed from the bounding set at exec, so the CLI then meets the file's mode."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _mode_applies(path: Path) -> Callable[[], None] | None:
    """How to run a command that a mode-0 file stops, as root too (CI runs as root); skip if impossible."""
    if os.geteuid() != 0:
        return None
    try:
        probe = subprocess.run(
            [sys.executable, "-c", f"open({str(path)!r}).read()"],
            capture_output=True,
            preexec_fn=_as_a_user_would_read,
            timeout=60,
        )
    except subprocess.SubprocessError:
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE (no CAP_SETPCAP): the file's mode is moot")
    if b"PermissionError" not in probe.stderr:
        pytest.skip("running as root and the file's mode does not stop reads even without CAP_DAC_OVERRIDE")
    return _as_a_user_would_read


def test_unreadable_file_is_one_line(snap: Path) -> None:
    (snap / "kubernetes" / "services.json").chmod(0)
    proc = run_cli(
        "check", "-A", "--snapshot", str(snap), preexec_fn=_mode_applies(snap / "kubernetes" / "services.json")
    )
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert "services.json: Permission denied" in proc.stderr


# -- names that would leave the snapshot ---------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["proxy", "default/../../x"],
        ["proxy", "../../etc/passwd", "-n", "shop"],
        ["proxy", FRONTEND, "-n", ".."],
        ["proxy", "x" * 300, "-n", "shop"],
        ["rootdiff", FRONTEND, "shop/..", "-n", "shop"],
    ],
)
def test_names_never_escape_the_snapshot(snap: Path, args: list[str]) -> None:
    (snap.parent / "x.json").write_text("{}")
    proc = run_cli(*args, "--snapshot", str(snap))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_line_error(proc)


# -- odd certificates ------------------------------------------------------------------------------
def _prepend_root(snap: Path, pod: str, pem: bytes) -> None:
    path = snap / "proxies" / "shop" / f"{pod}.json"
    doc = json.loads(path.read_text())
    for config in doc["configs"]:
        for secret in config.get("dynamic_active_secrets", []):
            if secret["name"] == "ROOTCA":
                ca = secret["secret"]["validation_context"]["trusted_ca"]
                ca["inline_bytes"] = base64.b64encode(pem + base64.b64decode(ca["inline_bytes"])).decode()
    path.write_text(json.dumps(doc))


def _roots(snap: Path, pod: str) -> tuple[list[dict], list[str], str]:  # type: ignore[type-arg]
    proc = run_cli("proxy", pod, "-n", "shop", "-o", "json", "--snapshot", str(snap))
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    model = json.loads(proc.stdout)
    return model["roots"], model["incomplete"], proc.stderr


def test_certificate_dates_at_the_ends_of_the_calendar(snap: Path) -> None:
    early, _ = odd_certificate(not_before=dt.datetime(1, 1, 1, tzinfo=UTC), common_name="early")
    late, _ = odd_certificate(not_after=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), common_name="late")
    _prepend_root(snap, FRONTEND, early + late)
    roots, _, _ = _roots(snap, FRONTEND)
    by_subject = {r["subject"]: r for r in roots}
    assert by_subject["CN=early"]["not_before"] == "0001-01-01T00:00:00Z"
    assert by_subject["CN=late"]["not_after"] == "9999-12-31T23:59:59Z"
    for command in (["certs", "-A"], ["check", "-A"], ["rootdiff", FRONTEND, ORDERS, "-n", "shop"]):
        proc = run_cli(*command, "--snapshot", str(snap))
        assert proc.returncode in (0, 1) and not proc.stderr, proc.stderr


def test_negative_serial_is_printed_signed_and_noted(snap: Path) -> None:
    pem, _ = odd_certificate(serial=-0x1234, common_name="negative")
    _prepend_root(snap, FRONTEND, pem)
    roots, incomplete, stderr = _roots(snap, FRONTEND)
    negative = next(r for r in roots if r["subject"] == "CN=negative")
    assert negative["serial"] == "-" + format(0x1234, "032x")
    assert any("serial number which wasn't positive" in note for note in incomplete), incomplete
    assert not stderr  # cryptography's warning became the note above


def test_damaged_pem_block_is_reported_and_the_rest_read(snap: Path) -> None:
    good, _ = odd_certificate(common_name="good")
    broken, _ = odd_certificate(common_name="broken")
    lines = broken.decode().splitlines()
    lines[3] = "!!" + lines[3][2:]
    _prepend_root(snap, FRONTEND, good + ("\n".join(lines) + "\n").encode())
    roots, incomplete, _ = _roots(snap, FRONTEND)
    assert "CN=good" in [r["subject"] for r in roots]
    assert "O=cluster.local" in [r["subject"] for r in roots]  # the original root after the damaged block
    assert any("PEM certificate 2 of 3 is damaged and was not read" in note for note in incomplete), incomplete


def test_headless_service_without_ports_is_walked_on_the_pods_ports(snap: Path) -> None:
    """A headless Service may list no ports (the API allows it): the pair is walked on the pods' ports."""

    def headless(items: list[dict]) -> None:  # type: ignore[type-arg]
        orders = next(i for i in items if i["metadata"]["name"] == "orders")
        orders["spec"]["ports"] = []
        orders["spec"]["clusterIP"] = "None"

    _edit_items(snap, "services", headless)
    proc = run_cli("check", "pair", FRONTEND, ORDERS, "-n", "shop", "-o", "json", "--snapshot", str(snap))
    assert proc.returncode in (0, 1, 3) and not proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["verdict"] in ("ok", "fail", "unknown", "depends")


def test_a_name_that_is_no_kubernetes_name_is_never_echoed(snap: Path) -> None:
    """What is not a name may be anything (a private key pasted by mistake): the error does not print it."""
    planted = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"
    _edit_items(snap, "namespaces", lambda items: items[0]["metadata"].__setitem__("name", planted))
    proc = run_cli("check", "-A", "--snapshot", str(snap))
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert "not a valid Kubernetes name" in proc.stderr and planted not in proc.stderr


def test_a_key_pasted_where_a_name_belongs_is_never_printed(snap: Path) -> None:
    """An SDS secret named with a private key (found by the fuzz test): the output is withheld."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec

    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption()
    )
    planted = base64.b64encode(der).decode()
    path = snap / "proxies" / "shop" / f"{FRONTEND}.json"
    doc = json.loads(path.read_text())
    for config in doc["configs"]:
        for secret in config.get("dynamic_active_secrets", []):
            if secret["name"] == "default":
                secret["name"] = planted
    path.write_text(json.dumps(doc))
    for command in (["check", "-n", "shop"], ["proxy", FRONTEND, "-n", "shop", "-o", "json"]):
        proc = run_cli(*command, "--snapshot", str(snap))
        assert planted[20:60] not in proc.stdout + proc.stderr
        assert proc.returncode == 2, proc.stdout
        assert_one_line_error(proc)
        assert "output withheld" in proc.stderr
