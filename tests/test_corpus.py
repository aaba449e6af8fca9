"""Real istioctl/Envoy output that nobody here wrote (../shared/corpus), parsed end to end.

Every expectation is checked independently of our code: fingerprints against openssl, serials and
dates against istioctl's own golden table, counts against the raw JSON.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from conftest import corpus_path, openssl_fingerprint, run_cli

from kubectl_mtls.errors import InputError
from kubectl_mtls.normalize.dump import split
from kubectl_mtls.normalize.proxy import build

ISTIO = "istio/istioctl/pkg/"
SECRET_ISTIO = ISTIO + "writer/envoy/configdump/testdata/secret/istio/"
SECRET_SPIRE = ISTIO + "writer/envoy/configdump/testdata/secret/spire/"
WAYPOINT = ISTIO + "proxyconfig/testdata/config_dump.json"
DESCRIBE = ISTIO + "describe/testdata/describe/http_config.json"
AUTHZ = ISTIO + "authz/testdata/configdump.yaml"
ENDPOINTS = ISTIO + "writer/envoy/configdump/testdata/endpoint/configdump.json"
COMPARE = ISTIO + "writer/compare/testdata/configdump.json"
ALL_DUMPS = [SECRET_ISTIO + "config_dump.json", SECRET_SPIRE + "config_dump.json", WAYPOINT, DESCRIBE, AUTHZ,
             ENDPOINTS, COMPARE, COMPARE.replace("configdump.json", "configdump_diff.json")]


def load(relative: str) -> object:
    return orjson.loads(corpus_path(relative).read_bytes())


def model_of(relative: str, when: str = "2023-05-15T12:00:00+00:00"):
    raw = corpus_path(relative).read_bytes()
    return build("default", "pod", None, split([(relative, raw)]), datetime.fromisoformat(when))


def pems_in(relative: str) -> list[bytes]:
    """Every certificate PEM block found anywhere in a dump's inline_bytes, decoded independently."""
    text = corpus_path(relative).read_text()
    blocks: list[bytes] = []
    for b64 in re.findall(r'"inline_bytes":\s*"([^"]+)"', text):
        raw = base64.b64decode(b64)
        blocks += re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", raw, re.S)
    return blocks


@pytest.mark.parametrize("relative", ALL_DUMPS)
def test_every_corpus_dump_normalizes_without_error(relative: str) -> None:
    proxy = model_of(relative)
    assert proxy.model["pod"] == "pod"
    assert isinstance(proxy.model["incomplete"], list)
    orjson.dumps(proxy.model)  # serializes straight to JSON


@pytest.mark.parametrize("relative", [SECRET_ISTIO + "config_dump.json", SECRET_SPIRE + "config_dump.json", WAYPOINT])
def test_fingerprints_equal_openssl(relative: str) -> None:
    proxy = model_of(relative)
    ours = {c["fingerprint_sha256"] for c in proxy.model["certificates"] + proxy.model["roots"]}
    theirs = {openssl_fingerprint(pem) for pem in pems_in(relative)}
    assert ours == theirs
    assert all(re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fp) for fp in ours)


def test_istio_secret_matches_istioctl_golden_table() -> None:
    """istioctl's own expected `proxy-config secret` output lists serials and validity we must agree with."""
    golden = corpus_path(SECRET_ISTIO + "output").read_text()
    proxy = model_of(SECRET_ISTIO + "config_dump.json")
    leaf, root = proxy.model["certificates"][0], proxy.model["roots"][0]
    for cert in (leaf, root):
        assert cert["serial"] in golden
        assert cert["not_after"] in golden and cert["not_before"] in golden
    assert leaf["sans"]["uri"] == ["spiffe://cluster.local/ns/ambient/sa/namespace-istio-waypoint"]
    assert leaf["subject"] == "" and root["subject"] == "O=cluster.local"
    assert proxy.model["identity"] == "spiffe://cluster.local/ns/ambient/sa/namespace-istio-waypoint"
    assert leaf["chain_verified"] is True
    warming = [s for s in proxy.model["secrets"] if s["status"] == "warming"]
    assert [s["name"] for s in warming] == ["configmap://some/thing"]


def test_spire_federation_roots_from_trust_bundles() -> None:
    golden = corpus_path(SECRET_SPIRE + "output").read_text()
    proxy = model_of(SECRET_SPIRE + "config_dump.json", "2024-10-27T22:00:00+00:00")
    domains = sorted(r.get("trust_domain") for r in proxy.model["roots"])
    assert domains == ["east.local", "west.local"]
    assert all(r["serial"].lstrip("0") in golden for r in proxy.model["roots"])
    chain = proxy.model["certificates"]
    assert [c["is_ca"] for c in chain] == [False, True]  # leaf + SPIFFE intermediate
    assert chain[0]["chain_verified"] is True  # verifies through the intermediate to the east.local root
    assert proxy.model["identity"].startswith("spiffe://east.local/ns/istio-system/sa/")


def test_autom_tls_cluster_and_old_destination_rule_path() -> None:
    proxy = model_of(DESCRIBE)
    (cluster,) = proxy.model["clusters"]
    raw = orjson.dumps(load(DESCRIBE)).decode()
    assert cluster["host"] == "productpage.default.svc.cluster.local" and cluster["port"] == 9080
    assert cluster["subset"] == "v1" and cluster["tls_mode"] == "AUTO"
    assert cluster["sni"] == "outbound_.9080_.v1_.productpage.default.svc.cluster.local" and cluster["sni"] in raw
    assert cluster["expected_sans"] == [
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        "spiffe://cluster.local/ns/default/sa/default",
    ]
    assert cluster["destination_rule"] == {"namespace": "default", "name": "productpage"}


def test_permissive_listener_and_derived_strict_variant() -> None:
    dump = load(AUTHZ)
    proxy = build("default", "httpbin", None, split([("authz", orjson.dumps(dump))]), datetime.now(UTC))
    modes = {i["port"]: i["mode"] for i in proxy.model["inbound"]}
    assert modes == {80: "PERMISSIVE", None: "PERMISSIVE"}
    assert next(i for i in proxy.model["inbound"] if i["port"] == 80)["rbac"] is True

    # What pilot writes for STRICT: no raw_buffer chains, and no TLS chain that passes non-mesh TLS
    # through without terminating it (a `tls` match with no transport socket accepts clients without
    # an Istio certificate, so it is a PERMISSIVE-only chain).
    for listener in dump["configs"][0]["dynamic_listeners"]:
        state = listener.get("active_state", {}).get("listener", {})
        if state.get("name") == "virtualInbound":
            state["filter_chains"] = [
                c for c in state["filter_chains"]
                if c.get("filter_chain_match", {}).get("transport_protocol") != "raw_buffer"
                and (c.get("transport_socket") or c.get("filter_chain_match", {}).get("destination_port"))
            ]
    strict = build("default", "httpbin", None, split([("strict", orjson.dumps(dump))]), datetime.now(UTC))
    assert {i["port"]: i["mode"] for i in strict.model["inbound"]} == {80: "STRICT", None: "STRICT"}


def test_endpoint_metadata_decides_auto_mtls_per_endpoint() -> None:
    sections = split([("endpoints", corpus_path(ENDPOINTS).read_bytes())])
    total = sum(len(v) for v in sections.endpoints.values())
    istio = sum(
        1 for metas in sections.endpoints.values() for m in metas
        if (m.get("envoy.transport_socket_match") or {}).get("tlsMode") == "istio"
    )
    raw = corpus_path(ENDPOINTS).read_text()
    assert istio == raw.count('"tlsMode": "istio"') == 8
    assert total == len(re.findall(r'"endpoint":\s*\{', raw))  # one `endpoint` object per lb_endpoint


def test_waypoint_is_not_mistaken_for_a_sidecar() -> None:
    proxy = model_of(WAYPOINT)
    assert proxy.model["proxy"]["type"] == "waypoint"
    assert proxy.model["proxy"]["istio_version"] == "1.21.0-1226"
    assert proxy.model["clusters"] == []  # its only cluster is inbound-vip, not outbound


def test_non_dump_json_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="not an Envoy config dump"):
        split([("x.json", b'{"kind": "PodList"}')])


def test_cli_reads_corpus_dumps_placed_in_a_snapshot(tmp_path: Path) -> None:
    ns = tmp_path / "proxies" / "default"
    ns.mkdir(parents=True)
    (ns / "waypoint.json").write_bytes(corpus_path(WAYPOINT).read_bytes())
    (ns / "gateway.json").write_bytes(corpus_path(SECRET_SPIRE + "config_dump.json").read_bytes())
    proc = run_cli("rootdiff", "waypoint", "gateway", "--snapshot", str(tmp_path), "-o", "json",
                   env={"KUBECTL_MTLS_NOW": "2023-05-15T12:00:00Z"})
    assert proc.returncode == 1, proc.stderr
    result = orjson.loads(proc.stdout)
    assert result["match"] is False
    assert len(result["only_in_source"]) == 1 and len(result["only_in_destination"]) == 2
    assert result["source_trusted_by_destination"] is False
