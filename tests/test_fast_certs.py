"""The fast paths of certificate reading and chain verification answer exactly as the slow paths.

`parse_bundle` reads a bundle whose every block loads cleanly block by block, through a cache of
described blocks; anything else (damaged, truncated, a block cryptography warns about) goes through
`load_pem_bundle` as before. `verify_chain` reuses a verifier per (root, moment). Each test builds
inputs that take each path and compares with the slow path, or with a cold cache.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from harness.oddcerts import odd_certificate
from harness.pki import concat_pem, make_intermediate, make_root, make_workload
from test_trust_envoy import NOW, ROOT_NAME, Case, Spec, cases, leaf, make

from kubectl_mtls.model import ParsedCert
from kubectl_mtls.normalize import certs

# What `load_pem_bundle` cut bundles with before `pem_blocks`.
OLD_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)


def _clear() -> None:
    for cache in (certs._BUNDLES, certs._BLOCKS, certs._DESCRIBED, certs._VERIFIERS):
        cache.clear()


@pytest.fixture(autouse=True)
def cold_caches() -> Iterator[None]:
    _clear()
    yield
    _clear()


def slow_parse(data: bytes, trust_domain: str | None = None) -> list[ParsedCert]:
    """`parse_bundle` as it was before the block cache: the whole bundle through `load_pem_bundle`."""
    notes: list[str] = []
    out = [certs.describe(c, trust_domain) for c in certs.load_pem_bundle(data, notes)]
    if out and notes:
        out[0].notes[:0] = notes
    return out


def seen(parsed: list[ParsedCert]) -> list[tuple[dict[str, Any], list[str], bytes]]:
    from cryptography.hazmat.primitives import serialization

    return [(p.info, p.notes, p.cert.public_bytes(serialization.Encoding.DER)) for p in parsed]


def outcome(read: Any, data: bytes, trust_domain: str | None = None) -> Any:
    try:
        return seen(read(data, trust_domain))
    except certs.CertError as exc:
        return f"CertError: {exc}"


# -- cutting bundles into blocks ----------------------------------------------------------------


def test_pem_blocks_cut_as_the_regex_did() -> None:
    begin, end = certs.PEM_BEGIN, certs.PEM_END
    crafted = [
        b"",
        b"garbage",
        begin,
        end,
        begin + b"\nAAAA\n" + end,
        b"x" + begin + b"A" + end + b"\n\n" + begin + b"B" + end + b"tail",
        begin + b"A" + begin + b"B" + end,  # a BEGIN inside a block: one block, up to the first END
        begin + b"A" + end + begin + b"truncated",
        begin + end,
        begin[:-5] + end,  # BEGIN's last dashes cannot start an END
        begin + b"END CERTIFICATE-----" + end,
        end + begin + b"A" + end + end,
    ]
    pieces = [begin, end, b"-----", b"\n", b"A", b"-----BEGIN", b"CERTIFICATE-----", b"END CERTIFICATE"]
    rng = random.Random(1)
    generated = [b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 14))) for _ in range(3000)]
    for data in crafted + generated:
        assert certs.pem_blocks(data) == OLD_PEM_BLOCK.findall(data), data


# -- parse_bundle: the block path and the whole-bundle path -------------------------------------


def _bundles() -> dict[str, tuple[bytes, bool]]:
    """name -> (bundle, whether the block path reads it)."""
    root = make_root()
    inter = make_intermediate(root)
    work = make_workload(inter, "shop", "cart", chain=[inter, root])
    other = make_workload(root, "shop", "web", chain=[root])
    negative, _ = odd_certificate(serial=-0x1234, common_name="negative")
    zero, _ = odd_certificate(serial=0, common_name="zero")
    year1, _ = odd_certificate(not_before=dt.datetime(1, 1, 1, tzinfo=dt.UTC), common_name="year1")
    lines = root.leaf_pem.decode().splitlines()
    lines[3] = lines[3][:10] + "!!!!" + lines[3][14:]
    damaged = ("\n".join(lines) + "\n").encode()
    return {
        "workload chain with intermediate and root": (work.cert_pem, True),
        "another workload under the same root": (other.cert_pem, True),
        "roots with garbage between them": (b"# roots\n" + concat_pem(root, b"junk\n", inter) + b"tail", True),
        "a year-1 certificate": (year1, True),
        "a negative serial": (negative, False),
        "a zero serial among good ones": (concat_pem(root, zero, inter), False),
        "a damaged block among good ones": (concat_pem(inter, damaged, root), False),
        "a truncated last block": (concat_pem(root) + certs.PEM_BEGIN + b"\nMIIB", False),
        "only a damaged block": (damaged, False),
        "no PEM at all": (b"not a certificate", False),
    }


@pytest.mark.parametrize("trust_domain", [None, "example.org"])
def test_parse_bundle_answers_as_the_whole_bundle_path(trust_domain: str | None) -> None:
    bundles = _bundles()
    for name, (data, fast) in bundles.items():
        assert (certs._parse_clean_bundle(data, trust_domain) is not None) == fast, name
        _clear()
        expected = outcome(slow_parse, data, trust_domain)
        _clear()
        assert outcome(certs.parse_bundle, data, trust_domain) == expected, name
        # warm: every block already known
        assert outcome(certs.parse_bundle, data, trust_domain) == expected, name
        certs._BUNDLES.clear()
        assert outcome(certs.parse_bundle, data, trust_domain) == expected, name
    # all of them through the same caches, in another order
    _clear()
    expected = {name: outcome(slow_parse, data, trust_domain) for name, (data, _) in bundles.items()}
    _clear()
    for name in reversed(bundles):
        assert outcome(certs.parse_bundle, bundles[name][0], trust_domain) == expected[name], name


def test_the_root_copy_of_each_chain_is_read_once() -> None:
    root = make_root()
    first = certs.parse_bundle(make_workload(root, "shop", "a", chain=[root]).cert_pem)
    second = certs.parse_bundle(make_workload(root, "shop", "b", chain=[root]).cert_pem)
    assert first[1].cert is second[1].cert  # the same parsed root, not parsed again
    assert first[0].cert is not second[0].cert
    # what callers get is theirs to annotate
    first[1].info["chain_verified"] = True
    first[1].info["sans"]["uri"].append("spiffe://x")
    first[1].notes.append("mine")
    again = certs.parse_bundle(make_workload(root, "shop", "c", chain=[root]).cert_pem)[1]
    assert again.info["chain_verified"] is None and again.info["sans"]["uri"] == [] and again.notes == []


def test_a_warning_while_describing_is_a_note_of_that_certificate_on_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = make_root()
    data = make_workload(root, "shop", "cart", chain=[root]).cert_pem
    real = certs._info

    def warning_info(cert: x509.Certificate, digest: bytes | None = None) -> dict[str, Any]:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            warnings.warn("Odd leaf. More words", UserWarning, stacklevel=1)
            warnings.warn("Odd leaf. Said twice", UserWarning, stacklevel=1)
        return real(cert, digest)

    monkeypatch.setattr(certs, "_info", warning_info)
    expected = seen(slow_parse(data))
    assert expected[0][1] == ["Odd leaf"] and expected[1][1] == []
    _clear()
    assert certs._parse_clean_bundle(data, None) is not None
    _clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may reach stderr
        assert seen(certs.parse_bundle(data)) == expected


def test_a_leaf_is_kept_nowhere_and_its_chain_is_read_again() -> None:
    root = make_root()
    data = make_workload(root, "shop", "cart", chain=[root]).cert_pem
    first = certs.parse_bundle(data)
    assert [p.info["is_ca"] for p in first] == [False, True]
    assert not certs._BUNDLES and len(certs._BLOCKS) == 1 and len(certs._DESCRIBED) == 1  # the root only
    second = certs.parse_bundle(data)
    assert second[0].cert is not first[0].cert and second[1].cert is first[1].cert
    assert seen(second) == seen(first)
    assert second[0].info is not first[0].info and second[0].notes is not first[0].notes
    _clear()
    # as a trust bundle (all CAs) it is kept whole
    roots = concat_pem(root, make_intermediate(root))
    assert seen(certs.parse_bundle(roots, "td")) == seen(slow_parse(roots, "td"))
    assert list(certs._BUNDLES) == [(roots, "td")]


def test_caches_stay_bounded() -> None:
    root = make_root()
    for index in range(certs._BUNDLE_CACHE_SIZE + 5):
        certs.parse_bundle(make_workload(root, "shop", f"sa{index}", chain=[root]).cert_pem)
        certs.parse_bundle(make_intermediate(root, common_name=f"ca{index}").cert_pem)
        assert len(certs._BUNDLES) <= certs._BUNDLE_CACHE_SIZE
        assert len(certs._BLOCKS) <= certs._BUNDLE_CACHE_SIZE
        assert len(certs._DESCRIBED) <= certs._BUNDLE_CACHE_SIZE


def test_inline_bytes_of_a_bundle_read_the_same_on_both_paths() -> None:
    root = make_root()
    data = make_workload(root, "shop", "cart", chain=[root]).cert_pem
    decoded = certs.decode_inline({"inline_bytes": base64.b64encode(data).decode()})
    assert seen(certs.parse_bundle(decoded)) == seen(slow_parse(data))


# -- _info: one pass over the extensions -------------------------------------------------------


def old_info(cert: x509.Certificate) -> dict[str, Any]:
    """`_info` as it was: each extension looked up by its class."""
    import contextlib

    from cryptography.hazmat.primitives.asymmetric import ec

    uris: list[str] = []
    dns: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        dns = [str(d) for d in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    except ValueError:
        pass
    is_ca = False
    with contextlib.suppress(x509.ExtensionNotFound, ValueError):
        is_ca = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_desc = f"RSA {key.key_size}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_desc = f"EC {key.curve.name}"
    else:
        key_desc = type(key).__name__.removeprefix("_")
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "sans": {"uri": uris, "dns": dns},
        "serial": certs.serial_text(cert.serial_number),
        "not_before": certs.rfc3339(cert.not_valid_before_utc),
        "not_after": certs.rfc3339(cert.not_valid_after_utc),
        "fingerprint_sha256": certs.fingerprint(cert),
        "is_ca": is_ca,
        "self_signed": cert.subject == cert.issuer,
        "key": key_desc,
        "chain_verified": None,
    }


def test_info_reads_extensions_as_before() -> None:
    import ipaddress

    from cryptography.x509.oid import ExtensionOID

    root = make_root()
    mixed_san = x509.SubjectAlternativeName(
        [
            x509.DNSName("b.example"),
            x509.UniformResourceIdentifier("spiffe://td/ns/a/sa/b"),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            x509.RFC822Name("a@example.org"),
            x509.DNSName("a.example"),
            x509.UniformResourceIdentifier("https://example.org/"),
        ]
    )
    broken_san = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x05\x00")

    def with_extensions(*extensions: Any) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(ROOT_NAME)
            .issuer_name(ROOT_NAME)
            .public_key(root.key.public_key())
            .serial_number(7)
            .not_valid_before(NOW)
            .not_valid_after(NOW + dt.timedelta(days=1))
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(root.key, hashes.SHA256())

    unreadable = with_extensions(broken_san, x509.BasicConstraints(ca=True, path_length=None))
    with pytest.raises(ValueError):
        unreadable.extensions  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the zero serial
        odd = [x509.load_pem_x509_certificate(odd_certificate(**kw)[0]) for kw in ({}, {"serial": 0})]
    made = [
        root.cert,
        make_intermediate(root).cert,
        make_workload(root, "shop", "cart").cert,
        with_extensions(),
        with_extensions(mixed_san),
        with_extensions(mixed_san, x509.BasicConstraints(ca=True, path_length=1)),
        with_extensions(x509.BasicConstraints(ca=False, path_length=None)),
        unreadable,
        *odd,
        *(made.cert for case in cases("ec").values() for made in (*case.chain, *case.roots)),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cert in made:
            assert certs._info(cert) == old_info(cert)
            assert certs._info(cert, cert.fingerprint(hashes.SHA256())) == old_info(cert)


# -- verify_chain: a verifier per (root, moment) ------------------------------------------------


def _verdict(case: Case, now: dt.datetime) -> tuple[bool | None, str | None]:
    return certs.verify_chain([c.cert for c in case.chain], [r.cert for r in case.roots], now)


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_verify_chain_with_warm_verifiers_answers_as_with_cold(key_type: str) -> None:
    all_cases = cases(key_type)
    weak_key = rsa.generate_private_key(65537, 1024)
    weak_root = make(Spec(ca=True, key_usage="ca"), ROOT_NAME, None, "rsa", key=weak_key)
    all_cases["root with a key the Web PKI calls too weak"] = Case([leaf(weak_root, key_type)], [weak_root])
    moments = [NOW, NOW + dt.timedelta(days=2), NOW - dt.timedelta(days=200)]
    cold: dict[tuple[str, dt.datetime], tuple[bool | None, str | None]] = {}
    for name, case in all_cases.items():
        for now in moments:
            certs._VERIFIERS.clear()
            cold[name, now] = _verdict(case, now)
    assert cold["root with a key the Web PKI calls too weak", NOW][0] is None  # "cannot tell" stays
    assert any(verdict[0] is False for verdict in cold.values())
    certs._VERIFIERS.clear()
    order = [(name, now) for name in all_cases for now in moments]
    random.Random(2).shuffle(order)
    for name, now in order + order:
        assert _verdict(all_cases[name], now) == cold[name, now], (name, now)
    assert 0 < len(certs._VERIFIERS) <= certs._VERIFIER_CACHE_SIZE


# -- clusters: each name parsed once, static endpoints only for outbound clusters ---------------


def old_normalize_clusters(clusters: list[Any], endpoints: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """`normalize_clusters` as it was: static endpoints of every cluster, every cluster normalized."""
    from kubectl_mtls.normalize.clusters import _static_endpoints, normalize_cluster
    from kubectl_mtls.normalize.keys import obj, text

    endpoints = dict(endpoints)
    for cluster in clusters:
        name = text(cluster, "name")
        if name not in endpoints and obj(cluster, "load_assignment"):
            endpoints[name] = _static_endpoints(cluster)
    out = [c for c in (normalize_cluster(cluster, endpoints, notes) for cluster in clusters) if c is not None]
    out.sort(key=lambda c: (c["host"], c["port"] or 0, c["subset"]))
    return out


def _random_cluster(rng: random.Random) -> dict[str, Any]:
    name = rng.choice(
        [
            "outbound|80||a.shop.svc.cluster.local",
            "outbound|80|v1|a.shop.svc.cluster.local",
            "outbound|9090||b.shop.svc.cluster.local",
            "outbound|x||c.shop.svc.cluster.local",
            "inbound|80||",
            "inbound-vip|80|http|a.shop.svc.cluster.local",
            "BlackHoleCluster",
            "outbound|80|",
            "",
        ]
    )
    key = rng.choice(["name", "name", "Name"])
    cluster: dict[str, Any] = {key: name} if rng.random() < 0.95 else {}
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "outbound_.80_._.a.shop.svc.cluster.local",
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [{"name": rng.choice(["default", "other"])}],
                "alpn_protocols": ["istio"],
            },
        },
    }
    sockets = [tls, {"name": "envoy.transport_sockets.raw_buffer"}, {"name": "envoy.transport_sockets.odd"}, {}]
    if rng.random() < 0.4:
        cluster["transport_socket_matches"] = [
            {
                "match": rng.choice([{"tlsMode": "istio"}, {}, {"tunnel": "http"}]),
                "transport_socket": rng.choice(sockets),
            }
            for _ in range(rng.randrange(1, 4))
        ]
    elif rng.random() < 0.7:
        cluster["transport_socket"] = rng.choice(sockets)
    if rng.random() < 0.6:
        cluster["load_assignment"] = {
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"metadata": {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": mode}}}}
                        for mode in rng.sample(["istio", "disabled", "istio"], rng.randrange(0, 3))
                    ]
                }
            ]
        }
    if rng.random() < 0.3:
        cluster["metadata"] = {
            "filter_metadata": {"istio": {"config": "/apis/networking.istio.io/v1/namespaces/shop/destination-rule/a"}}
        }
    return cluster


def test_clusters_normalize_as_before() -> None:
    from kubectl_mtls.normalize.clusters import normalize_clusters

    rng = random.Random(3)
    modelled = noted = 0
    for _ in range(1500):
        clusters = [_random_cluster(rng) for _ in range(rng.randrange(0, 7))]
        names = [c.get("name", "") for c in clusters]
        endpoints = {n: [{"envoy.transport_socket_match": {"tlsMode": "istio"}}] for n in names if rng.random() < 0.3}
        old_notes: list[str] = []
        new_notes: list[str] = []
        assert normalize_clusters(clusters, endpoints, new_notes) == old_normalize_clusters(
            clusters, endpoints, old_notes
        )
        assert new_notes == old_notes
        modelled += bool(old_normalize_clusters(clusters, endpoints, []))
        noted += bool(old_notes)
    assert modelled > 500 and noted > 100  # the inputs take every path


# -- TLS context and unknown socket in one walk -------------------------------------------------


def _random_socket(rng: random.Random, depth: int = 0) -> Any:
    if rng.random() < 0.08:
        return rng.choice([None, "socket", [], {}])
    socket: dict[str, Any] = {}
    if rng.random() < 0.8:
        socket[rng.choice(["name", "name", "Name"])] = rng.choice(
            [
                "envoy.transport_sockets.tls",
                "envoy.transport_sockets.raw_buffer",
                "envoy.transport_sockets.internal_upstream",
                "envoy.transport_sockets.tap",
                "",
                7,
            ]
        )
    if rng.random() < 0.85:
        kind = rng.choice(
            [
                "UpstreamTlsContext",
                "DownstreamTlsContext",
                "RawBuffer",
                "InternalUpstreamTransport",
                "Tap",
                "TcpStats",
                "",
            ]
        )
        config: Any = {"@type": f"type.googleapis.com/envoy.extensions.transport_sockets.x.v3.{kind}"}
        if rng.random() < 0.1:
            config["@type"] = rng.choice([None, 3, ""])
        if depth < 3 and rng.random() < 0.5:
            config[rng.choice(["transport_socket", "transportSocket"])] = _random_socket(rng, depth + 1)
        if rng.random() < 0.3:
            config["common_tls_context"] = {"alpn_protocols": ["istio"]}
        socket[rng.choice(["typed_config", "typed_config", "typedConfig"])] = config if rng.random() < 0.95 else "x"
    return socket


def test_one_walk_answers_as_tls_context_and_unknown_socket() -> None:
    from kubectl_mtls.normalize import tls
    from kubectl_mtls.normalize.keys import obj

    rng = random.Random(4)
    told = understood = found = 0
    for _ in range(5000):
        socket = _random_socket(rng)
        expected = (tls.tls_context(socket), tls.unknown_socket(socket))
        assert tls.socket_tls(socket) == expected, socket
        holder: dict[str, Any] = {}
        if rng.random() < 0.8:
            holder[rng.choice(["transport_socket", "transportSocket"])] = socket
        if rng.random() < 0.3:
            holder[rng.choice(["tls_context", "tlsContext"])] = rng.choice([{"sni": "a"}, {}, "x"])
        either = (tls.cluster_tls_context(holder), tls.unknown_socket(obj(holder, "transport_socket")))
        assert tls.chain_tls_context(holder) == either[0]
        assert tls.transport_tls(holder) == either, holder
        told += expected[1] is not None
        understood += expected[1] is None
        found += expected[0] is not None
    assert told > 500 and understood > 500 and found > 500  # the inputs take every path
