"""Certificates: PEM -> model dicts, and chain verification with cryptography's verifier.

Fields follow what operators compare by hand: the fingerprint is formatted exactly as
`openssl x509 -noout -fingerprint -sha256` prints it, serials as istioctl prints them (%032x).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
# cryptography warns (on stderr) about certificates it reads but disapproves of (a negative serial);
# those warnings become notes of the certificate. Capturing warnings swaps process-wide state, so
# certificate parsing in concurrent gathers takes turns.
_WARNINGS_LOCK = threading.RLock()


class CertError(ValueError):
    """Certificate material that cannot be decoded; the message says what and why."""


@dataclass
class ParsedCert:
    """One certificate: its model dict plus the parsed object for verification."""

    info: dict[str, Any]
    cert: x509.Certificate = field(repr=False)
    notes: list[str] = field(default_factory=list)  # what is odd about it (cryptography's warnings)


@contextlib.contextmanager
def warnings_as_notes(notes: list[str]) -> Iterator[None]:
    """Warnings raised inside (cryptography's) appended to `notes` instead of printed on stderr."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        text = str(warning.message).split(". ")[0].rstrip(".")
        if text not in notes:
            notes.append(text)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC, the year always four digits (strftime writes year 1 as `1`)."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment
    return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"


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


def load_pem_bundle(data: bytes, notes: list[str] | None = None) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in order. Garbage between blocks is ignored, as Envoy does.
    A damaged block is never dropped silently: it is a CertError, or with `notes` a note naming the
    block while the others are still read."""
    from cryptography import x509

    if PEM_BEGIN not in data:
        raise CertError("no PEM certificate found")
    blocks = _PEM_BLOCK.findall(data)
    total = data.count(PEM_BEGIN)
    damaged: list[str] = []
    if len(blocks) < total:
        damaged.append(f"PEM certificate {len(blocks) + 1} of {total} has no END line (truncated)")
    certs = []
    found: list[str] = []
    with warnings_as_notes(found):
        for index, block in enumerate(blocks, 1):
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError as exc:
                damaged.append(f"PEM certificate {index} of {total} is damaged and was not read ({exc})")
    if damaged and (notes is None or not certs):
        raise CertError("; ".join(damaged))
    if notes is not None:
        notes.extend(damaged + found)
    return certs


_BUNDLES: dict[tuple[bytes, str | None], list[ParsedCert]] = {}
_BUNDLE_CACHE_SIZE = 1024


def parse_bundle(data: bytes, trust_domain: str | None = None) -> list[ParsedCert]:
    """`describe` of every certificate in a PEM bundle, cached: every sidecar of a mesh carries the
    same roots, so a mesh scan parses each root once instead of once per pod."""
    key = (data, trust_domain)
    cached = _BUNDLES.get(key)
    if cached is None:
        notes: list[str] = []
        cached = [describe(c, trust_domain) for c in load_pem_bundle(data, notes)]
        if cached and notes:  # damaged blocks: told with the first certificate of the bundle
            cached[0].notes[:0] = notes
        if len(_BUNDLES) >= _BUNDLE_CACHE_SIZE:
            _BUNDLES.clear()
        _BUNDLES[key] = cached
    # Callers annotate the info dicts (chain_verified): hand out copies.
    return [
        ParsedCert(
            info={**p.info, "sans": {k: list(v) for k, v in p.info["sans"].items()}}, cert=p.cert, notes=list(p.notes)
        )
        for p in cached
    ]


def fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def describe(cert: x509.Certificate, trust_domain: str | None = None) -> ParsedCert:
    notes: list[str] = []
    with warnings_as_notes(notes):
        info = _info(cert)
    if trust_domain is not None:
        info["trust_domain"] = trust_domain
    return ParsedCert(info=info, cert=cert, notes=notes)


def _info(cert: x509.Certificate) -> dict[str, Any]:
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
        "serial": serial_text(cert.serial_number),
        "not_before": rfc3339(cert.not_valid_before_utc),
        "not_after": rfc3339(cert.not_valid_after_utc),
        "fingerprint_sha256": fingerprint(cert),
        "is_ca": is_ca,
        "self_signed": cert.subject == cert.issuer,
        "key": key_desc,
        "chain_verified": None,
    }
    return info


def serial_text(serial: int) -> str:
    """As istioctl prints it (%032x); a negative serial (RFC 5280 forbids them) keeps its sign."""
    return format(serial, "032x") if serial >= 0 else "-" + format(-serial, "032x")


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
    try:
        return min(max(now, start + timedelta(seconds=1)), end - timedelta(seconds=1))
    except OverflowError:  # validity at the very edge of the calendar (year 1 or 9999)
        return min(max(now, start), end)


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
