"""Every shape of dump a user or istioctl gives, and every way it can be broken."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import orjson
import pytest
from conftest import CORPUS, REPO, assert_one_line_error, run_cli

from kubectl_mtls.errors import InputError
from kubectl_mtls.normalize import dump
from kubectl_mtls.normalize.proxy import build

EXAMPLE = REPO / "examples" / "rotation" / "proxies" / "shop"
NOW = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def model(raw: bytes) -> dict:
    return build("shop", "pod", None, dump.split([("test", raw)]), NOW).model  # type: ignore[return-value]


def dumps() -> list[Path]:
    found = sorted(EXAMPLE.glob("*.json"))
    if CORPUS.is_dir():
        found += sorted((CORPUS / "istio").rglob("config*.json"))
    return found


@pytest.mark.parametrize("path", dumps(), ids=lambda p: p.name)
def test_fast_path_gives_the_same_model_as_a_full_parse(path: Path) -> None:
    """Envoy's own pretty JSON takes the sectioned fast path; any re-formatting takes the full parse."""
    raw = path.read_bytes()
    reformatted = orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2)
    compact = orjson.dumps(orjson.loads(raw))
    assert model(raw) == model(reformatted) == model(compact)


def test_the_bundled_dumps_really_take_the_fast_path() -> None:
    raw = next(EXAMPLE.glob("frontend-*.json")).read_bytes()
    assert dump._split_pretty(dump.Sections(), raw) is True
    assert dump._split_pretty(dump.Sections(), orjson.dumps(orjson.loads(raw))) is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not valid JSON"),
        (
            b'{\n "configs": [\n  {\n   "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"',
            "not valid JSON",
        ),
        (b'Error: no running Istio pods in "istio-system"', "not valid JSON"),
        (b'{"kind": "PodList", "items": []}', "not an Envoy config dump"),
        (b"[1, 2]", "expected a list of Envoy clusters or listeners"),
        (b'"just a string"', "expected a JSON object or array"),
    ],
)
def test_malformed_dumps_are_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        dump.split([("x.json", content)])
    folder = tmp_path / "proxies" / "ns"
    folder.mkdir(parents=True)
    (folder / "pod.json").write_bytes(content)
    proc = run_cli("proxy", "ns/pod", "--snapshot", str(tmp_path))
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert message in proc.stderr


def _secrets_dump(chain_b64: str, roots_b64: str) -> bytes:
    return json.dumps(
        {
            "configs": [
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
                    "dynamic_active_secrets": [
                        {
                            "name": "default",
                            "secret": {
                                "name": "default",
                                "tls_certificate": {
                                    "certificate_chain": {"inline_bytes": chain_b64},
                                    "private_key": {"inline_bytes": "W3JlZGFjdGVkXQ=="},
                                },
                            },
                        },
                        {
                            "name": "ROOTCA",
                            "secret": {
                                "name": "ROOTCA",
                                "validation_context": {"trusted_ca": {"inline_bytes": roots_b64}},
                            },
                        },
                    ],
                }
            ]
        }
    ).encode()


def test_odd_certificates_become_incomplete_notes_not_crashes() -> None:
    junk_pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    m = model(_secrets_dump("%%% not base64 %%%", junk_pem.decode()))
    assert m["certificates"] == [] and m["roots"] == []
    notes = " ".join(m["incomplete"])
    assert "secret default" in notes and "secret ROOTCA" in notes
    assert "no clusters section" in notes
    m = model(_secrets_dump(base64.b64encode(b"hello").decode(), ""))
    assert "no PEM certificate found" in " ".join(m["incomplete"])


def test_missing_and_warming_secrets_are_named() -> None:
    raw = json.dumps(
        {
            "configs": [
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
                    "dynamic_warming_secrets": [{"name": "default", "version_info": "uninitialized"}],
                }
            ]
        }
    ).encode()
    notes = model(raw)["incomplete"]
    assert "secret default is still warming (istiod has not delivered it)" in notes
    assert "no active secret 'ROOTCA' (trusted roots)" in notes


def test_listener_rejected_by_envoy_is_reported() -> None:
    raw = json.dumps(
        {
            "configs": [
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                    "dynamic_listeners": [
                        {
                            "name": "virtualInbound",
                            "error_state": {
                                "details": "Error adding/updating listener(s) virtualInbound: bad filter chain"
                            },
                        }
                    ],
                }
            ]
        }
    ).encode()
    notes = model(raw)["incomplete"]
    assert any("virtualInbound: Error adding/updating listener(s)" in n for n in notes)


def test_broken_snapshot_manifest(tmp_path: Path) -> None:
    (tmp_path / "snapshot.json").write_text("{not json")
    proc = run_cli("certs", "-A", "--snapshot", str(tmp_path))
    assert proc.returncode == 2
    assert_one_line_error(proc)
    proc = run_cli("certs", "-A", "--snapshot", str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert "no such directory" in proc.stderr


def test_bad_query_is_a_usage_error() -> None:
    proc = run_cli("certs", "-A", "--snapshot", str(REPO / "examples" / "rotation"), "--query", "items[?")
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert "--query" in proc.stderr


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"snapshot.json": '{"format": "kubectl-mtls-snapshot", "version": "abc"}'}, "'version' must be an integer"),
        (
            {"snapshot.json": '{"format": "kubectl-mtls-snapshot", "version": 1, "incomplete": 5}'},
            "'incomplete' must be a list",
        ),
        (
            {"kubernetes/pods.json": '{"items": [{"metadata": {"name": 5, "namespace": ["x"]}}]}'},
            "metadata.name must be a string",
        ),
    ],
)
def test_malformed_snapshots_are_one_line_errors(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "kubernetes").mkdir(exist_ok=True)
    for command in (["certs", "-A"], ["check", "-A"], ["strict-ready", "-A"]):
        proc = run_cli(*command, "--snapshot", str(tmp_path))
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert_one_line_error(proc)
        assert message in proc.stderr


def test_bad_flag_values_are_usage_errors(tmp_path: Path) -> None:
    example = str(REPO / "examples" / "rotation")
    for args, text in (
        (["strict-ready", "-n", "shop", "--window", "abc"], "is not a Prometheus duration"),
        (["check", "-n", "shop", "--ignore", "root-mismatch:"], "name the object"),
        (["check", "-n", "shop", "--tail", "-1"], "not a positive integer"),
        (["check", "-n", "shop", "--expiring-within", "1y"], "use e.g. 72h, 30d or 2w"),
    ):
        proc = run_cli(*args, "--snapshot", example)
        assert proc.returncode == 2, (args, proc.stderr)
        assert text in proc.stderr
    ok = run_cli("check", "-n", "shop", "--expiring-within", "30d", "--snapshot", example)
    assert ok.returncode == 1 and "Traceback" not in ok.stderr
