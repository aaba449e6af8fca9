"""Istio-like PKI for tests: a self-signed mesh root, optional intermediates, SPIFFE workload certs.

Shapes follow what istiod issues (see ../shared/reference/TEST-HARNESS.md §4):

* root: ``O=<trust domain>`` only, CA:TRUE (critical), keyCertSign+cRLSign+digitalSignature (critical), SKI;
* workload: **empty subject**, critical URI SAN ``spiffe://<td>/ns/<ns>/sa/<sa>``, CA:FALSE (critical),
  digitalSignature+keyEncipherment (critical), EKU serverAuth+clientAuth, AKI, ``notBefore`` backdated 2 min.

EC P-256 keys are the default because they are generated in microseconds; pass ``key_type="rsa"``
for istiod's default RSA-2048.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Issued",
    "PrivateKey",
    "concat_pem",
    "make_intermediate",
    "make_root",
    "make_workload",
    "spiffe_id",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# istiod backdates workload certificates by two minutes to tolerate clock skew.
WORKLOAD_BACKDATE = _dt.timedelta(minutes=2)
# CA certificates are backdated a little more so that a backdated leaf still nests inside them.
CA_BACKDATE = _dt.timedelta(hours=1)


@dataclass(frozen=True)
class Issued:
    """A certificate with its key. ``cert_pem`` may hold a chain (leaf first) for workload certs."""

    cert: x509.Certificate
    key: PrivateKey
    cert_pem: bytes
    key_pem: bytes  # PKCS#8, unencrypted

    @property
    def leaf_pem(self) -> bytes:
        """PEM of ``cert`` alone (``cert_pem`` may carry a chain)."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def uri_sans(self) -> list[str]:
        try:
            ext = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return []
        return list(ext.value.get_values_for_type(x509.UniformResourceIdentifier))

    @property
    def sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def spiffe_id(namespace: str, service_account: str, trust_domain: str = "cluster.local") -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def concat_pem(*items: Issued | bytes) -> bytes:
    """Concatenate leaf PEMs of ``Issued`` objects and/or raw PEM bytes (e.g. several roots for ROOTCA)."""
    out = b""
    for item in items:
        pem = item.leaf_pem if isinstance(item, Issued) else item
        if out and not out.endswith(b"\n"):
            out += b"\n"
        out += pem
    return out


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key_type must be 'ec' or 'rsa', not {key_type!r}")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(issuer: Issued) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())


def _sign(builder: x509.CertificateBuilder, signer: PrivateKey) -> x509.Certificate:
    return builder.sign(signer, hashes.SHA256())


def make_root(
    org: str = "cluster.local",
    not_before: _dt.datetime | None = None,
    days: int = 3650,
    *,
    key_type: str = "ec",
) -> Issued:
    """Self-signed mesh root like istiod's ``istio-ca-secret`` (subject ``O=<org>`` only)."""
    key = _new_key(key_type)
    start = not_before if not_before is not None else _now() - CA_BACKDATE
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = _sign(builder, key)
    return Issued(cert, key, cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_intermediate(
    parent: Issued,
    org: str = "cluster.local",
    days: int = 365,
    *,
    not_before: _dt.datetime | None = None,
    key_type: str = "ec",
    common_name: str = "Intermediate CA",
    path_length: int | None = None,
) -> Issued:
    """Intermediate CA (plug-in CA shape: ``O=<org>, CN=Intermediate CA``) signed by ``parent``;
    ``path_length`` sets basicConstraints pathlen (None: unlimited, as Istio's tooling makes them)."""
    key = _new_key(key_type)
    start = not_before if not_before is not None else _now() - CA_BACKDATE
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(parent.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_aki(parent), critical=False)
    )
    cert = _sign(builder, parent.key)
    return Issued(cert, key, cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_workload(
    issuer: Issued,
    namespace: str,
    service_account: str,
    trust_domain: str = "cluster.local",
    not_before: _dt.datetime | None = None,
    hours: float = 24,
    chain: Sequence[Issued] = (),
    *,
    key_type: str = "ec",
) -> Issued:
    """SPIFFE workload certificate as istiod issues it.

    ``cert_pem`` is the leaf followed by every cert of ``chain`` (intermediates, then the root), which
    is how the ``default`` SDS secret carries it. Pass ``not_before`` in the past with small ``hours``
    for an expired certificate (e.g. ``now - 48 h`` and ``hours=24``).
    """
    key = _new_key(key_type)
    start = not_before if not_before is not None else _now() - WORKLOAD_BACKDATE
    san = x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier(spiffe_id(namespace, service_account, trust_domain))]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _dt.timedelta(hours=hours))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(_aki(issuer), critical=False)
        # An empty subject requires a critical SAN (RFC 5280 §4.2.1.6); istiod does exactly this.
        .add_extension(san, critical=True)
    )
    cert = _sign(builder, issuer.key)
    leaf_pem = cert.public_bytes(serialization.Encoding.PEM)
    return Issued(cert, key, concat_pem(leaf_pem, *chain), _key_pem(key))
