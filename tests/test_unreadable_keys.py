"""Certificates whose public key cannot be read (an EC point off its curve, an algorithm cryptography does
not implement) and ports written with digits `int()` refuses (superscripts): each is read as far as it
can be and said, never an internal error. Run through the installed CLI, as a user runs it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import run_cli
from harness.oddcerts import odd_certificate, spki

FRONTEND, ORDERS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn"
EC_PUBLIC_KEY, P256, GOST_2012_256 = "1.2.840.10045.2.1", "1.2.840.10045.3.1.7", "1.2.643.7.1.1.1.1"
KEYS = {
    "off-curve": spki(EC_PUBLIC_KEY, b"\x04" + b"\x01" * 64, P256),
    "unknown-algorithm": spki(GOST_2012_256, b"\x04\x40" + b"\x02" * 64),
}


def _secrets(snap: Path, pod: str, edit) -> None:  # type: ignore[no-untyped-def]
    path = snap / "proxies" / "shop" / f"{pod}.json"
    doc = json.loads(path.read_text())
    for config in doc["configs"]:
        for secret in config.get("dynamic_active_secrets", []):
            edit(secret["name"], secret["secret"])
    path.write_text(json.dumps(doc))


def _prepend(context: dict, pem: bytes) -> None:  # type: ignore[type-arg]
    context["inline_bytes"] = base64.b64encode(pem + base64.b64decode(context["inline_bytes"])).decode()


def _no_internal_error(*args: str) -> dict:  # type: ignore[type-arg]
    proc = run_cli(*args, "-o", "json")
    assert proc.returncode in (0, 1, 3), proc.stdout + proc.stderr
    assert not proc.stderr and "internal error" not in proc.stdout, proc.stdout + proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_root_whose_key_cannot_be_read(snap: Path, kind: str) -> None:
    pem, _ = odd_certificate(common_name=kind, public_key_info=KEYS[kind])

    def edit(name: str, secret: dict) -> None:  # type: ignore[type-arg]
        if name == "ROOTCA":
            _prepend(secret["validation_context"]["trusted_ca"], pem)

    _secrets(snap, FRONTEND, edit)
    model = _no_internal_error("proxy", FRONTEND, "-n", "shop", "--snapshot", str(snap))
    odd = next(r for r in model["roots"] if r["subject"] == f"CN={kind}")
    assert odd["key"].startswith("unreadable")
    # the mesh root is still there and still closes the workload chain
    assert model["chain_error"] is None and model["certificates"][0]["chain_verified"] is True
    for command in (["certs", "-A"], ["check", "-A"], ["rootdiff", FRONTEND, ORDERS, "-n", "shop"]):
        _no_internal_error(*command, "--snapshot", str(snap))


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_workload_certificate_whose_key_cannot_be_read(snap: Path, kind: str) -> None:
    pem, _ = odd_certificate(common_name=kind, public_key_info=KEYS[kind])

    def edit(name: str, secret: dict) -> None:  # type: ignore[type-arg]
        if name == "default":
            secret["tls_certificate"]["certificate_chain"] = {"inline_bytes": base64.b64encode(pem).decode()}

    _secrets(snap, FRONTEND, edit)
    model = _no_internal_error("proxy", FRONTEND, "-n", "shop", "--snapshot", str(snap))
    leaf = model["certificates"][0]
    assert leaf["subject"] == f"CN={kind}" and leaf["key"].startswith("unreadable")
    assert leaf["chain_verified"] is not True  # no root of the mesh signed it: never a √
    for command in (["certs", "-A"], ["check", "-A"], ["check", "pair", FRONTEND, ORDERS, "-n", "shop"]):
        _no_internal_error(*command, "--snapshot", str(snap))


def test_ports_in_digits_int_refuses(snap: Path) -> None:
    """`'²'.isdigit()` is true but `int('²')` fails: such a port is a name (that matches nothing)."""
    pods = snap / "kubernetes" / "pods.json"
    doc = json.loads(pods.read_text())
    for pod in doc["items"]:
        app = next(c for c in pod["spec"]["containers"] if c["name"] != "istio-proxy")
        app["readinessProbe"] = {"httpGet": {"port": "²", "path": "/ready"}}
        pod["metadata"].setdefault("annotations", {}).update(
            {"prometheus.io/scrape": "true", "prometheus.io/port": "²"}
        )
    pods.write_text(json.dumps(doc))
    services = snap / "kubernetes" / "services.json"
    doc = json.loads(services.read_text())
    for service in doc["items"]:
        for port in service["spec"].get("ports", []):
            port["targetPort"] = "³"
    services.write_text(json.dumps(doc))
    dump = snap / "proxies" / "shop" / f"{FRONTEND}.json"
    dump.write_text(dump.read_text().replace("outbound|8080|", "outbound|⁸⁰⁸⁰|"))
    _no_internal_error("check", "-A", "--snapshot", str(snap))
    _no_internal_error("check", "pair", FRONTEND, ORDERS, "-n", "shop", "--snapshot", str(snap))
    proc = run_cli("check", "-A", "--snapshot", str(snap), "--request-timeout", "²")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
