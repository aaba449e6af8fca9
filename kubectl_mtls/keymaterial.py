"""Private key material in any encoding: PEM, PEM or DER in base64 (twice at most), JSON-escaped PEM,
raw DER of PKCS#8 / PKCS#1 / SEC1 keys. Used where data leaves the tool: files a snapshot writes, and
what a command prints."""

from __future__ import annotations

import re

_PEM_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{60,}={0,2}")
# The run's alphabet, and the escaped or real newlines a run is joined across, as one byte and everything
# else as another: whether a run of 60 can exist is then a plain substring search, where the regex tries
# (and fails) at every position of every shorter word.
_RUN_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-\\\n"
_RUN_MASK = bytes(ord("a") if byte in _RUN_ALPHABET else ord(" ") for byte in range(256))
_RUN_START = b"a" * 60
_JSON_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})")
# A DER private key starts with a SEQUENCE, then a small version INTEGER: 0 (PKCS#8, PKCS#1) or 1 (SEC1).
_DER_START = re.compile(rb"0(?:[\x00-\x7f]|\x81[\x00-\xff]|\x82[\x00-\xff]{2})\x02\x01[\x00\x01]", re.S)
_KEY_ALGORITHMS = (  # OIDs (DER bodies) of PKCS#8 key algorithms and of PKCS#8 encryption (PBES2)
    bytes.fromhex("2a864886f70d010101"),  # rsaEncryption
    bytes.fromhex("2a864886f70d01010a"),  # RSASSA-PSS
    bytes.fromhex("2a8648ce3d0201"),  # id-ecPublicKey
    bytes.fromhex("2a8648ce380401"),  # DSA
    bytes.fromhex("2b6570"),  # Ed25519
    bytes.fromhex("2b6571"),  # Ed448
    bytes.fromhex("2b656e"),  # X25519
    bytes.fromhex("2b656f"),  # X448
    bytes.fromhex("2a864886f70d01050d"),  # PBES2 (an encrypted PKCS#8 key is still a key)
)


def _der_item(data: bytes, at: int) -> tuple[int, int, int] | None:
    """(tag, start of value, end of value) of the DER item at `at`, or None."""
    if at + 2 > len(data):
        return None
    tag, first = data[at], data[at + 1]
    at += 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 3 or at + count > len(data):
            return None
        size = int.from_bytes(data[at : at + count], "big")
        at += count
    else:
        size = first
    return (tag, at, at + size) if at + size <= len(data) + 4096 else None


def _der_key_at(data: bytes, at: int) -> str | None:
    """The kind of DER private key starting at `at` (PKCS#8, PKCS#1 RSA, SEC1 EC), else None."""
    outer = _der_item(data, at)
    if not outer or outer[0] != 0x30:
        return None
    version = _der_item(data, outer[1])
    if not version or version[0] != 0x02:
        return None
    nxt = _der_item(data, version[2])
    if not nxt:
        return None
    value = data[version[1] : version[2]]
    if value == b"\x00" and nxt[0] == 0x30:  # PKCS#8: version 0, AlgorithmIdentifier
        oid = _der_item(data, nxt[1])
        if oid and oid[0] == 0x06 and data[oid[1] : oid[2]] in _KEY_ALGORITHMS:
            return "a PKCS#8 private key (DER)"
    if value == b"\x00" and nxt[0] == 0x02 and nxt[2] - nxt[1] >= 64:  # PKCS#1: version 0, modulus
        return "an RSA private key (PKCS#1 DER)"
    if value == b"\x01" and nxt[0] == 0x04 and 20 <= nxt[2] - nxt[1] <= 66:  # SEC1: version 1, key octets
        return "an EC private key (SEC1 DER)"
    return None


def _in_bytes(data: bytes, depth: int) -> str | None:
    if _PEM_KEY.search(data):
        return "a PEM private key"
    if b"\\u" in data:
        unescaped = _JSON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)).encode("utf-8", "replace"), data)
        if _PEM_KEY.search(unescaped.replace(b"\\n", b"\n")):
            return "a PEM private key (JSON-escaped)"
    if b"\x02" in data:  # every DER key start holds the version INTEGER's tag, 0x02
        for match in _DER_START.finditer(data):
            found = _der_key_at(data, match.start())
            if found:
                return found
    if depth == 0:
        return None
    import base64
    import binascii

    if _RUN_START not in data.translate(_RUN_MASK):
        return None
    for match in _BASE64_RUN.finditer(data.replace(b"\\n", b"").replace(b"\n", b"")):
        run = match.group().replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
        for shift in range(4):  # the run may start mid-quantum inside a longer string
            body = run[shift:]
            body = body[: len(body) - len(body) % 4]
            try:
                decoded = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                continue
            found = _in_bytes(decoded, depth - 1)
            if found:
                return f"{found} in base64"
    return None


def key_material(data: bytes) -> str | None:
    """What private key material `data` holds in any encoding: PEM, PEM or DER in base64 (twice at
    most), JSON-escaped PEM, raw DER of PKCS#8 / PKCS#1 / SEC1 keys. None when there is none."""
    return _in_bytes(data, 2)


