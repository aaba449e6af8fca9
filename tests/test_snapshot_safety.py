"""`kubectl mtls snapshot` against the API and istioctl doubles: private keys never reach the written
snapshot in any form or encoding, and an interrupted run (SIGTERM, SIGHUP, Ctrl-C) leaves no temporary
directory behind."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, cli_argv, run_cli
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from harness.cluster import FakeCluster

EXAMPLE = REPO / "examples" / "rotation"
NS = "shop"
FRONTEND, ORDERS, PAYMENTS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn", "payments-5d8c7b9f6-h3m9t"


def _keys() -> list[tuple[str, bytes, bytes]]:
    """(name, PEM, DER) of private keys in the formats a leak takes."""
    ec_key, rsa_key = ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)
    out = []
    for name, key, fmt in (
        ("PKCS#8 EC", ec_key, ser.PrivateFormat.PKCS8),
        ("SEC1 EC", ec_key, ser.PrivateFormat.TraditionalOpenSSL),
        ("PKCS#1 RSA", rsa_key, ser.PrivateFormat.TraditionalOpenSSL),
        ("PKCS#8 RSA", rsa_key, ser.PrivateFormat.PKCS8),
    ):
        pem = key.private_bytes(ser.Encoding.PEM, fmt, ser.NoEncryption())
        der = key.private_bytes(ser.Encoding.DER, fmt, ser.NoEncryption())
        out.append((name, pem, der))
    return out


KEYS = _keys()


def _needles(pem: bytes, der: bytes) -> list[bytes]:
    """Substrings any copy of the key would contain, in each encoding it could be stored in."""
    body = pem.splitlines()[1]
    return [body[:40], base64.b64encode(pem)[24:64], base64.b64encode(der)[24:64], der[16:40]]


def _leaks(directory: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in directory.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            unescaped = data.replace(b"\\/", b"/").replace(b"\\n", b"\n")
            found += [f"{path.relative_to(directory)}" for n in needles if n in data or n in unescaped]
    return found


@pytest.fixture()
def cluster(tmp_path: Path) -> Any:
    pods = json.loads((EXAMPLE / "kubernetes" / "pods.json").read_text())["items"]
    with FakeCluster(tmp_path / "cluster", [p for p in pods if p["metadata"]["name"] != "reports-29384750-xk2lp"]) as c:
        for pod in (FRONTEND, ORDERS, PAYMENTS):
            c.set_proxy(NS, pod, {"dump": str(EXAMPLE / "proxies" / NS / f"{pod}.json")})
        c.set_proxy_status((EXAMPLE / "istio" / "proxy-status.txt").read_text())
        yield c


def _run(cluster: FakeCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=cluster.env())


def _plant(cluster: FakeCluster, tmp_path: Path, pod: str, edit: Any, raw: Any = None) -> None:
    doc = json.loads((EXAMPLE / "proxies" / NS / f"{pod}.json").read_text())
    edit(doc)
    text = json.dumps(doc)
    if raw is not None:
        text = raw(text)
    path = tmp_path / f"{pod}-planted.json"
    path.write_text(text)
    cluster.set_proxy(NS, pod, {"dump": str(path)})


def _default_secret(doc: dict[str, Any]) -> dict[str, Any]:
    for config in doc["configs"]:
        for secret in config.get("dynamic_active_secrets", []):
            if secret["name"] == "default":
                return secret["secret"]  # type: ignore[no-any-return]
    raise AssertionError("no default secret")


@pytest.mark.parametrize(("name", "pem", "der"), KEYS, ids=[k[0] for k in KEYS])
@pytest.mark.parametrize(
    "form",
    ["inline_string", "inline_bytes", "escaped key name", "camelCase", "bare string", "generic_secret", "session_keys"],
)
def test_sensitive_fields_are_redacted_by_structure(
    cluster: FakeCluster, tmp_path: Path, name: str, pem: bytes, der: bytes, form: str
) -> None:
    def edit(doc: dict[str, Any]) -> None:
        tls = _default_secret(doc)["tls_certificate"]
        if form == "inline_string":
            tls["private_key"] = {"inline_string": pem.decode(), "watched_directory": {"path": "/etc/certs"}}
        elif form in ("inline_bytes", "escaped key name"):
            tls["private_key"] = {"inline_bytes": base64.b64encode(pem).decode()}
        elif form == "camelCase":
            tls["privateKey"] = {"inlineBytes": base64.b64encode(der).decode()}
            del tls["private_key"]
        elif form == "bare string":
            tls["private_key"] = pem.decode()
        elif form == "generic_secret":
            _default_secret(doc)["generic_secret"] = {"secret": {"inline_bytes": base64.b64encode(der).decode()}}
        else:
            _default_secret(doc)["session_ticket_keys"] = {"keys": [{"inline_bytes": base64.b64encode(der).decode()}]}

    raw = (lambda text: text.replace('"private_key"', '"private\\u005fkey"')) if form == "escaped key name" else None
    _plant(cluster, tmp_path, ORDERS, edit, raw)
    out = tmp_path / "snap"
    proc = _run(cluster, "snapshot", "-n", NS, "-d", str(out), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["incomplete"] == []  # redacted, so written
    assert not _leaks(out, _needles(pem, der))
    replay = run_cli("proxy", ORDERS, "-n", NS, "-o", "json", "--snapshot", str(out))
    assert replay.returncode == 0 and json.loads(replay.stdout)["certificates"]  # still a working dump


@pytest.mark.parametrize(("name", "pem", "der"), KEYS, ids=[k[0] for k in KEYS])
@pytest.mark.parametrize("encoding", ["PEM", "JSON-escaped PEM", "base64 of PEM", "base64 of DER", "base64url of DER"])
def test_key_material_elsewhere_is_never_written(
    cluster: FakeCluster, tmp_path: Path, name: str, pem: bytes, der: bytes, encoding: str
) -> None:
    """Outside the fields Envoy marks sensitive (here: a cluster's metadata) the dump is refused: the pod
    is listed as incomplete and its file is not written."""
    value = {
        "PEM": pem.decode(),
        "JSON-escaped PEM": "PLACEHOLDER",
        "base64 of PEM": base64.b64encode(pem).decode(),
        "base64 of DER": base64.b64encode(der).decode(),
        "base64url of DER": base64.urlsafe_b64encode(der).decode(),
    }[encoding]

    def edit(doc: dict[str, Any]) -> None:
        for config in doc["configs"]:
            for cluster_entry in config.get("dynamic_active_clusters", [])[:1]:
                cluster_entry["cluster"]["metadata"] = {"filter_metadata": {"note": {"value": value}}}

    escaped = json.dumps(pem.decode()).replace("-", "\\u002d").replace(" ", "\\u0020")
    raw = (lambda text: text.replace('"PLACEHOLDER"', escaped)) if encoding == "JSON-escaped PEM" else None
    _plant(cluster, tmp_path, ORDERS, edit, raw)
    out = tmp_path / "snap"
    proc = _run(cluster, "snapshot", "-n", NS, "-d", str(out), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    incomplete = json.loads(proc.stdout)["incomplete"]
    assert [e["pod"] for e in incomplete if "refusing to write" in e.get("error", "")] == [ORDERS], incomplete
    assert not (out / "proxies" / NS / f"{ORDERS}.json").exists()
    assert (out / "proxies" / NS / f"{FRONTEND}.json").exists()
    assert not _leaks(out, _needles(pem, der))


def test_key_in_a_pod_annotation_is_redacted(cluster: FakeCluster, tmp_path: Path) -> None:
    _, pem, der = KEYS[0]
    pods = json.loads((EXAMPLE / "kubernetes" / "pods.json").read_text())["items"]
    pod = next(p for p in pods if p["metadata"]["name"] == FRONTEND)
    pod["metadata"].setdefault("annotations", {})["example.com/debug-key"] = base64.b64encode(pem).decode()
    cluster.api.add(pod)
    out = tmp_path / "snap"
    proc = _run(cluster, "snapshot", "-n", NS, "-d", str(out))
    assert proc.returncode == 0, proc.stderr
    assert not _leaks(out, _needles(pem, der))
    saved = json.loads((out / "kubernetes" / "pods.json").read_text())["items"]
    annotations = next(p for p in saved if p["metadata"]["name"] == FRONTEND)["metadata"]["annotations"]
    assert annotations["example.com/debug-key"] == "[redacted]"


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)], ids=["TERM", "HUP", "INT"]
)
def test_interrupted_snapshot_leaves_no_temporary_directory(
    cluster: FakeCluster, tmp_path: Path, sig: int, code: int
) -> None:
    cluster.set_proxy(NS, PAYMENTS, {"hang": True})  # the run waits here until interrupted
    out = tmp_path / "out" / "snap"
    env = {**os.environ, **cluster.env(), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [*cli_argv(), "snapshot", "-n", NS, "-d", str(out), "--istioctl-timeout", "5m"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(cluster.istioctl_calls()) or not list(out.parent.glob(".snap.*")):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        while not any(PAYMENTS in " ".join(a) for a in cluster.istioctl_calls()):
            assert time.monotonic() < deadline, "the hanging istioctl call never started"
            time.sleep(0.1)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert not list(out.parent.iterdir()), list(out.parent.iterdir())  # neither .snap.* nor a half snap
