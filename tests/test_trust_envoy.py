"""Trust as Envoy (BoringSSL) decides it, with `openssl verify` as the oracle.

Every chain is made here with `cryptography`, in the shapes real CAs produce (Istio 1.5's CA and
some Vault or plug-in chains have no AuthorityKeyIdentifier), and in the shapes BoringSSL refuses
(a CA:FALSE issuer, a path-length violation, an unknown critical extension). For each, the tool's
answer is compared with what `openssl verify -no_check_time` says at the same time: dates are kept
out of trust (expiry is `cert-expired`'s business), so the oracle ignores them too. Where the two
may disagree, the case names the rule.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import openssl, run_cli
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from kubectl_mtls.normalize.certs import verify_chain

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
UNKNOWN_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1")


def _key(kind: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    return ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)


@dataclass
class Made:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Spec:
    """What to put in one certificate; defaults are istiod's shapes minus AKI and SKI."""

    ca: bool | None = None  # None: no basicConstraints at all
    path_length: int | None = None
    san: bool = False
    ski: bool = False
    aki: bool = False
    aki_critical: bool = False
    key_usage: str | None = None  # "ca", "ca-no-certsign", "leaf"
    extra: list[tuple[ObjectIdentifier, bool]] = field(default_factory=list)  # (oid, critical)
    start: dt.datetime | None = None
    hours: float = 24 * 365


def make(
    spec: Spec,
    name: x509.Name,
    issuer: Made | None,
    key_type: str,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
) -> Made:
    key = key or _key(key_type)
    start = spec.start or NOW - dt.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(hours=spec.hours))
    )
    if spec.ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=spec.ca, path_length=spec.path_length), critical=True)
    if spec.key_usage:
        ca_usage = spec.key_usage.startswith("ca")
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca_usage,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=spec.key_usage == "ca",
                crl_sign=ca_usage,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if spec.san:
        uri = x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/app")
        builder = builder.add_extension(x509.SubjectAlternativeName([uri]), critical=True)
    if spec.ski:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if spec.aki and issuer:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())  # type: ignore[arg-type]
        builder = builder.add_extension(aki, critical=spec.aki_critical)
    for oid, critical in spec.extra:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, b"\x05\x00"), critical=critical)
    return Made(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


ROOT_NAME = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
INTER_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Intermediate CA"),
    ]
)
LEAF_NAME = x509.Name([])  # istiod's workload certificates have an empty subject


def root(key_type: str, **kw: object) -> Made:
    return make(Spec(ca=True, key_usage="ca", **kw), ROOT_NAME, None, key_type)  # type: ignore[arg-type]


def leaf(issuer: Made, key_type: str, **kw: object) -> Made:
    kw.setdefault("san", True)
    kw.setdefault("hours", 24)
    kw.setdefault("key_usage", "leaf")
    return make(Spec(ca=False, **kw), LEAF_NAME, issuer, key_type)  # type: ignore[arg-type]


def inter(issuer: Made, key_type: str, **kw: object) -> Made:
    kw.setdefault("ca", True)
    kw.setdefault("key_usage", "ca")
    return make(Spec(**kw), INTER_NAME, issuer, key_type)  # type: ignore[arg-type]


@dataclass
class Case:
    chain: list[Made]  # leaf first, then what the peer sends along
    roots: list[Made]
    # When openssl and the tool may disagree: the rule, and what the tool answers instead.
    differs: str | None = None
    tool_says: bool | None = None


def cases(key_type: str) -> dict[str, Case]:
    r = root(key_type)
    r_ski = root(key_type, ski=True)
    i = inter(r, key_type)
    i_nonca = inter(r, key_type, ca=False, key_usage=None)
    i_nocertsign = inter(r, key_type, key_usage="ca-no-certsign")
    r_pl0 = root(key_type, path_length=0)
    i_under_pl0 = inter(r_pl0, key_type)
    i_crit = inter(r, key_type, extra=[(UNKNOWN_OID, True)])
    other = root(key_type)  # same name, another key: a different CA
    # A root re-issued with the same key and a later notBefore (Istio's self-signed CA rotator),
    # and a leaf of the first one that expired before the new one became valid.
    first = make(
        Spec(ca=True, key_usage="ca", start=NOW - dt.timedelta(days=400), hours=24 * 3650), ROOT_NAME, None, key_type
    )
    reissued = make(
        Spec(ca=True, key_usage="ca", start=NOW - dt.timedelta(days=10), hours=24 * 3650),
        ROOT_NAME,
        None,
        key_type,
        key=first.key,
    )
    old_leaf = leaf(first, key_type, start=NOW - dt.timedelta(days=300), hours=24)
    return {
        "istio-shape with AKI and SKI": Case([leaf(r_ski, key_type, aki=True, ski=True)], [r_ski]),
        "no AKI": Case([leaf(r, key_type)], [r]),
        "no AKI, no SKI, no SAN": Case([leaf(r, key_type, san=False)], [r]),
        "no extensions on the leaf at all": Case([make(Spec(), LEAF_NAME, r, key_type)], [r]),
        "intermediate without AKI": Case([leaf(i, key_type), i], [r]),
        "intermediate not sent": Case([leaf(i, key_type)], [r]),
        "root copy at the end of the chain": Case([leaf(i, key_type), i, r], [r]),
        "CA:FALSE issuer": Case([leaf(i_nonca, key_type), i_nonca], [r]),
        "issuer keyUsage without keyCertSign": Case([leaf(i_nocertsign, key_type), i_nocertsign], [r]),
        "path length violation": Case([leaf(i_under_pl0, key_type), i_under_pl0], [r_pl0]),
        "path length 0 root signing the leaf directly": Case([leaf(r_pl0, key_type)], [r_pl0]),
        "unknown critical extension on the leaf": Case([leaf(r, key_type, extra=[(UNKNOWN_OID, True)])], [r]),
        "unknown non-critical extension on the leaf": Case([leaf(r, key_type, extra=[(UNKNOWN_OID, False)])], [r]),
        "unknown critical extension on the intermediate": Case([leaf(i_crit, key_type), i_crit], [r]),
        "critical AKI": Case([leaf(r, key_type, aki=True, aki_critical=True)], [r]),
        "different root with the same name": Case([leaf(r, key_type)], [other]),
        "different root with the same name, AKI names another key": Case(
            [leaf(r_ski, key_type, aki=True)], [root(key_type, ski=True)]
        ),
        "one of two same-named roots, told apart by AKI and SKI": Case(
            [leaf(r_ski, key_type, aki=True)], [root(key_type, ski=True), r_ski]
        ),
        "one of two same-named roots, the signer first": Case(
            [leaf(r, key_type)],
            [r, other],
            "BoringSSL and openssl pick the first root with the issuer's name; without key identifiers "
            "the answer depends on the store's order, so the tool does not judge",
            None,
        ),
        "one of two same-named roots, the signer second": Case(
            [leaf(r, key_type)],
            [other, r],
            "as above: openssl tries only the first same-named root and fails on its signature",
            None,
        ),
        "expired leaf": Case([leaf(r, key_type, start=NOW - dt.timedelta(days=3), hours=24)], [r]),
        "leaf expired before the re-issued root's notBefore": Case([old_leaf], [reissued]),
        "leaf expired before the re-issued root's notBefore, old root sent along": Case([old_leaf, first], [reissued]),
    }


def openssl_verdict(case: Case, tmp: Path) -> tuple[bool, str]:
    """`openssl verify -no_check_time`: trust with dates left out, as the tool decides it."""
    (tmp / "roots.pem").write_bytes(b"".join(r.pem for r in case.roots))
    (tmp / "leaf.pem").write_bytes(case.chain[0].pem)
    argv = [openssl(), "verify", "-no_check_time", "-CAfile", str(tmp / "roots.pem")]
    if len(case.chain) > 1:
        (tmp / "untrusted.pem").write_bytes(b"".join(c.pem for c in case.chain[1:]))
        argv += ["-untrusted", str(tmp / "untrusted.pem")]
    proc = subprocess.run([*argv, str(tmp / "leaf.pem")], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_trust_matches_openssl_verify(key_type: str, tmp_path: Path) -> None:
    disagreements = []
    for name, case in cases(key_type).items():
        expected, said = openssl_verdict(case, tmp_path)
        ok, why = verify_chain([c.cert for c in case.chain], [r.cert for r in case.roots], NOW)
        if case.differs is not None:
            assert ok is case.tool_says, f"{name}: {case.differs}: tool {ok} ({why})"
            continue
        if ok is not expected:
            disagreements.append(f"{name}: openssl {expected} ({said}), tool {ok} ({why})")
        if not ok:
            assert why, name
    assert not disagreements, "\n".join(disagreements)


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_failure_reasons_use_openssl_words(key_type: str, tmp_path: Path) -> None:
    """Each refusal is explained with the words `openssl verify` (and Envoy's log) use for it."""
    wrong = []
    for name, case in cases(key_type).items():
        expected, said = openssl_verdict(case, tmp_path)
        if expected or case.differs:
            continue
        words = said.split("lookup: ", 1)[-1].splitlines()[0].strip() if "lookup: " in said else said
        ok, why = verify_chain([x.cert for x in case.chain], [r.cert for r in case.roots], NOW)
        if ok is not False or not (why or "").startswith(words):
            wrong.append(f"{name}: openssl says {words!r}, tool {ok} {why!r}")
    assert not wrong, "\n".join(wrong)


def test_dates_never_make_a_chain_untrusted_but_openssl_at_that_time_rejects_it(tmp_path: Path) -> None:
    """The rule that differs from `openssl verify -attime`: at a moment inside the leaf's validity the
    re-issued root is not yet valid, so openssl fails; the tool keeps dates out of trust (the leaf's
    expiry is cert-expired's finding), as `-no_check_time` does."""
    case = cases("ec")["leaf expired before the re-issued root's notBefore"]
    (tmp_path / "roots.pem").write_bytes(case.roots[0].pem)
    (tmp_path / "leaf.pem").write_bytes(case.chain[0].pem)
    inside_leaf = int((case.chain[0].cert.not_valid_before_utc + dt.timedelta(hours=1)).timestamp())
    proc = subprocess.run(
        [
            openssl(),
            "verify",
            "-attime",
            str(inside_leaf),
            "-CAfile",
            str(tmp_path / "roots.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0 and "not yet valid" in proc.stdout + proc.stderr
    assert verify_chain([case.chain[0].cert], [case.roots[0].cert], NOW) == (True, None)


# -- what the user sees -------------------------------------------------------------------------


def _b64(pem: bytes) -> str:
    return base64.b64encode(pem).decode()


def secrets_dump(chain: list[Made], roots: list[Made]) -> dict:
    """What `istioctl proxy-config secret POD -o json` prints (camelCase), key redacted as Envoy does."""
    return {
        "dynamicActiveSecrets": [
            {
                "name": "default",
                "versionInfo": "2026-01-01T00:00:00Z/1",
                "secret": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                    "name": "default",
                    "tlsCertificate": {
                        "certificateChain": {"inlineBytes": _b64(b"".join(c.pem for c in chain))},
                        "privateKey": {"inlineBytes": "W3JlZGFjdGVkXQ=="},
                    },
                },
            },
            {
                "name": "ROOTCA",
                "versionInfo": "2026-01-01T00:00:00Z/1",
                "secret": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                    "name": "ROOTCA",
                    "validationContext": {"trustedCa": {"inlineBytes": _b64(b"".join(r.pem for r in roots))}},
                },
            },
        ]
    }


def write_secrets_snapshot(base: Path, pods: dict[str, tuple[list[Made], list[Made]]]) -> Path:
    for pod, (chain, roots) in pods.items():
        folder = base / "proxies" / "default" / pod
        folder.mkdir(parents=True)
        (folder / "secret.json").write_text(json.dumps(secrets_dump(chain, roots)))
    return base


def test_rootdiff_and_check_accept_chains_without_aki(tmp_path: Path) -> None:
    r = root("rsa")
    snap = write_secrets_snapshot(
        tmp_path / "snap", {"a-0": ([leaf(r, "rsa"), r], [r]), "b-0": ([leaf(r, "rsa")], [r])}
    )
    proc = run_cli("rootdiff", "a-0", "b-0", "-n", "default", "--snapshot", str(snap), "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["match"] is True
    assert result["source_trusted_by_destination"] is True and result["destination_trusted_by_source"] is True
    proc = run_cli("check", "-n", "default", "--snapshot", str(snap), "-o", "json")
    data = json.loads(proc.stdout)
    assert not [f for f in data["findings"] if f["check"] in ("cert-chain-untrusted", "root-mismatch")], data[
        "findings"
    ]
    proc = run_cli("proxy", "a-0", "-n", "default", "--snapshot", str(snap), "-o", "json")
    model = json.loads(proc.stdout)
    assert model["certificates"][0]["chain_verified"] is True and model["chain_error"] is None


def test_expired_leaf_under_reissued_root_is_expired_not_untrusted(tmp_path: Path) -> None:
    c = cases("ec")
    case = c["leaf expired before the re-issued root's notBefore"]
    fresh = leaf(case.roots[0], "ec")
    snap = write_secrets_snapshot(
        tmp_path / "snap", {"old-0": (case.chain, case.roots), "new-0": ([fresh], case.roots)}
    )
    proc = run_cli("check", "-n", "default", "--snapshot", str(snap), "-o", "json")
    data = json.loads(proc.stdout)
    checks = {f["check"] for f in data["findings"] if f["name"] == "old-0"}
    assert "cert-expired" in checks and "cert-chain-untrusted" not in checks, data["findings"]
    assert proc.returncode == 1
    proc = run_cli("rootdiff", "old-0", "new-0", "-n", "default", "--snapshot", str(snap), "-o", "json")
    result = json.loads(proc.stdout)
    assert result["source_trusted_by_destination"] is True, result


def test_chain_envoy_refuses_is_untrusted_in_check(tmp_path: Path) -> None:
    r = root("ec")
    i_nonca = inter(r, "ec", ca=False, key_usage=None)
    snap = write_secrets_snapshot(tmp_path / "snap", {"bad-0": ([leaf(i_nonca, "ec"), i_nonca], [r])})
    proc = run_cli("check", "-n", "default", "--snapshot", str(snap), "-o", "json")
    data = json.loads(proc.stdout)
    untrusted = [f for f in data["findings"] if f["check"] == "cert-chain-untrusted"]
    assert untrusted and "invalid CA certificate" in untrusted[0]["message"], data["findings"]
    assert proc.returncode == 1
