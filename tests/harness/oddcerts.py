"""Certificates cryptography's builder refuses to make: dates before 1950 or far in the future (year 1,
year 9999), negative serial numbers. They occur in the wild (hand-made test CAs, buggy issuers) and must
not crash a diagnosis.

A normal certificate is built with cryptography, then its TBSCertificate is re-encoded with the odd
serial or validity and signed again with the same key, so the result is a well-formed, correctly signed
X.509 certificate that only differs in the chosen field.
"""

from __future__ import annotations

import datetime as _dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["odd_certificate", "spki"]


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _length(len(body)) + body


def _children(der: bytes) -> list[bytes]:
    """The encoded (tag, length, value) children of a constructed DER value's body."""
    out, i = [], 0
    while i < len(der):
        start = i
        i += 1
        first = der[i]
        i += 1
        if first & 0x80:
            count = first & 0x7F
            size = int.from_bytes(der[i : i + count], "big")
            i += count
        else:
            size = first
        i += size
        out.append(der[start:i])
    return out


def _body(tlv: bytes) -> bytes:
    first = tlv[1]
    skip = 2 + (first & 0x7F if first & 0x80 else 0)
    return tlv[skip:]


def _time(moment: _dt.datetime) -> bytes:
    """RFC 5280: UTCTime for 1950..2049, GeneralizedTime otherwise."""
    if 1950 <= moment.year < 2050:
        return _tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())
    return _tlv(0x18, f"{moment.year:04d}".encode() + moment.strftime("%m%d%H%M%SZ").encode())


def _integer(value: int) -> bytes:
    size = (value + (value < 0)).bit_length() // 8 + 1
    return _tlv(0x02, value.to_bytes(size, "big", signed=True))


def spki(algorithm_oid: str, key_bits: bytes, parameters_oid: str | None = None) -> bytes:
    """DER of a SubjectPublicKeyInfo: any algorithm (even one nobody implements) and any key bytes
    (an EC point off its curve)."""

    def oid(dotted: str) -> bytes:
        first, second, *rest = (int(part) for part in dotted.split("."))
        body = bytearray([40 * first + second])
        for arc in rest:
            chunk = [arc & 0x7F]
            while arc > 0x7F:
                arc >>= 7
                chunk.append(0x80 | (arc & 0x7F))
            body.extend(reversed(chunk))
        return _tlv(0x06, bytes(body))

    algorithm = oid(algorithm_oid) + (oid(parameters_oid) if parameters_oid else b"")
    return _tlv(0x30, _tlv(0x30, algorithm) + _tlv(0x03, b"\x00" + key_bits))


def odd_certificate(
    serial: int = 1,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    common_name: str = "odd",
    public_key_info: bytes | None = None,
) -> tuple[bytes, bytes]:
    """(certificate PEM, PKCS#8 key PEM) of a self-signed CA certificate with the given odd fields.
    Dates may be anything from year 1 to 9999; the serial may be negative or zero; `public_key_info`
    (DER of a SubjectPublicKeyInfo, see `spki`) replaces the certificate's key, which still signs it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    base = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_dt.datetime(2020, 1, 1, tzinfo=_dt.UTC))
        .not_valid_after(_dt.datetime(2040, 1, 1, tzinfo=_dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_parts = _children(_body(base.public_bytes(serialization.Encoding.DER)))
    tbs, signature_algorithm = cert_parts[0], cert_parts[1]
    fields = _children(_body(tbs))
    # fields: [0] version, serial, signature, issuer, validity, subject, spki, [3] extensions
    fields[1] = _integer(serial)
    start = not_before or _dt.datetime(2020, 1, 1, tzinfo=_dt.UTC)
    end = not_after or _dt.datetime(2040, 1, 1, tzinfo=_dt.UTC)
    fields[4] = _tlv(0x30, _time(start) + _time(end))
    if public_key_info is not None:
        fields[6] = public_key_info
    new_tbs = _tlv(0x30, b"".join(fields))
    signature = key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    der = _tlv(0x30, new_tbs + signature_algorithm + _tlv(0x03, b"\x00" + signature))
    import base64

    lines = base64.b64encode(der).decode()
    pem = "-----BEGIN CERTIFICATE-----\n"
    pem += "\n".join(lines[i : i + 64] for i in range(0, len(lines), 64))
    pem += "\n-----END CERTIFICATE-----\n"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.encode(), key_pem
