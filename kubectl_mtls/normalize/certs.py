"""Certificates: PEM -> model dicts, and chain verification with cryptography's verifier.

Fields follow what operators compare by hand: the fingerprint is formatted exactly as
`openssl x509 -noout -fingerprint -sha256` prints it, serials as istioctl prints them (%032x).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


class CertError(ValueError):
    """Certificate material that cannot be decoded; the message says what and why."""


@dataclass
class ParsedCert:
    """One certificate: its model dict plus the parsed object for verification."""

    info: dict[str, Any]
    cert: x509.Certificate = field(repr=False)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """The model's timestamps (`not_before`, `not_after`) back to datetimes."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def decode_inline(value: Any) -> bytes:
    """`inline_bytes` is base64 of the PEM text; `inline_string` is the PEM text itself."""
    if not isinstance(value, dict):
        return b""
    raw = value.get("inline_bytes", value.get("inlineBytes"))
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise CertError(f"inline_bytes is not base64 ({exc})") from None
    string = value.get("inline_string", value.get("inlineString"))
    return string.encode() if isinstance(string, str) else b""


def load_pem_bundle(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in order. Garbage between blocks is ignored, as Envoy does."""
    from cryptography import x509

    if PEM_BEGIN not in data:
        raise CertError("no PEM certificate found")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertError(f"unreadable PEM certificate ({exc})") from None


_BUNDLES: dict[tuple[bytes, str | None], list[ParsedCert]] = {}
_BUNDLE_CACHE_SIZE = 1024


def parse_bundle(data: bytes, trust_domain: str | None = None) -> list[ParsedCert]:
    """`describe` of every certificate in a PEM bundle, cached: every sidecar of a mesh carries the
    same roots, so a mesh scan parses each root once instead of once per pod."""
    key = (data, trust_domain)
    cached = _BUNDLES.get(key)
    if cached is None:
        cached = [describe(c, trust_domain) for c in load_pem_bundle(data)]
        if len(_BUNDLES) >= _BUNDLE_CACHE_SIZE:
            _BUNDLES.clear()
        _BUNDLES[key] = cached
    # Callers annotate the info dicts (chain_verified): hand out copies.
    return [
        ParsedCert(info={**p.info, "sans": {k: list(v) for k, v in p.info["sans"].items()}}, cert=p.cert)
        for p in cached
    ]


def fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def describe(cert: x509.Certificate, trust_domain: str | None = None) -> ParsedCert:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    uris: list[str] = []
    dns: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        dns = [str(d) for d in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    except ValueError:  # a malformed extension must not hide the rest of the certificate
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
    info: dict[str, Any] = {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "sans": {"uri": uris, "dns": dns},
        "serial": format(cert.serial_number, "032x"),
        "not_before": rfc3339(cert.not_valid_before_utc),
        "not_after": rfc3339(cert.not_valid_after_utc),
        "fingerprint_sha256": fingerprint(cert),
        "is_ca": is_ca,
        "self_signed": cert.subject == cert.issuer,
        "key": key_desc,
        "chain_verified": None,
    }
    if trust_domain is not None:
        info["trust_domain"] = trust_domain
    return ParsedCert(info=info, cert=cert)


def spiffe_id(cert: ParsedCert) -> str | None:
    for uri in cert.info["sans"]["uri"]:
        if uri.startswith("spiffe://"):
            return str(uri)
    return None


def _verification_time(chain: list[x509.Certificate], now: datetime) -> datetime:
    """A moment inside every chain certificate's validity, as close to `now` as possible.

    Trust and validity are separate questions here: expiry is reported from the dates, so the
    verifier is asked only whether the signatures lead to a trusted root.
    """
    start = max(c.not_valid_before_utc for c in chain)
    end = min(c.not_valid_after_utc for c in chain)
    if start > end:
        return now
    return min(max(now, start + timedelta(seconds=1)), end - timedelta(seconds=1))


def _explain(message: str) -> str:
    """cryptography's path-building wording, restated as the TLS error operators search for."""
    if "candidates exhausted" in message or "exceeds max depth" in message:
        return "unable to get local issuer certificate: no trusted root signed this chain"
    return message


def verify_chain(
    chain: list[x509.Certificate], roots: list[x509.Certificate], now: datetime
) -> tuple[bool, str | None]:
    """Does the leaf (with the chain's other certs as intermediates) verify up to one of `roots`?"""
    from cryptography.x509 import verification

    if not chain:
        return False, "no workload certificate"
    if not roots:
        return False, "no root certificates to verify against"
    leaf, *rest = chain
    try:
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(roots))
            .time(_verification_time(chain, now))
            .build_client_verifier()
        )
        verifier.verify(leaf, rest)
    except verification.VerificationError as exc:
        return False, _explain(str(exc))
    except ValueError as exc:
        return False, f"cannot verify: {exc}"
    return True, None
