"""Certificates: PEM -> model dicts, and chain verification with cryptography's verifier.

Fields follow what operators compare by hand: the fingerprint is formatted exactly as
`openssl x509 -noout -fingerprint -sha256` prints it, serials as istioctl prints them (%032x).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..model import ParsedCert

if TYPE_CHECKING:
    from cryptography import x509

PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PEM_END = b"-----END CERTIFICATE-----"
# cryptography warns (on stderr) about certificates it reads but disapproves of (a negative serial);
# those warnings become notes of the certificate. Capturing warnings swaps process-wide state, so
# certificate parsing in concurrent gathers takes turns.
_WARNINGS_LOCK = threading.RLock()


class CertError(ValueError):
    """Certificate material that cannot be decoded; the message says what and why."""


@contextlib.contextmanager
def _recording() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised inside, recorded instead of printed."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _as_notes(caught: list[warnings.WarningMessage], notes: list[str]) -> list[str]:
    """Each warning's first sentence appended to `notes`, once."""
    for warning in caught:
        text = str(warning.message).split(". ")[0].rstrip(".")
        if text not in notes:
            notes.append(text)
    return notes


@contextlib.contextmanager
def warnings_as_notes(notes: list[str]) -> Iterator[None]:
    """Warnings raised inside (cryptography's) appended to `notes` instead of printed on stderr."""
    with _recording() as caught:
        yield
    _as_notes(caught, notes)


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


def pem_blocks(data: bytes) -> list[bytes]:
    """Each BEGIN..END block, in order: from a BEGIN line to the first END after it (a BEGIN without
    an END ends the search). Plain `find`s: a lazy regex over the whole bundle costs several times more."""
    blocks = []
    start = 0
    while True:
        begin = data.find(PEM_BEGIN, start)
        if begin < 0:
            break
        end = data.find(PEM_END, begin + len(PEM_BEGIN))
        if end < 0:
            break
        start = end + len(PEM_END)
        blocks.append(data[begin:start])
    return blocks


def load_pem_bundle(data: bytes, notes: list[str] | None = None) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in order. Garbage between blocks is ignored, as Envoy does.
    A damaged block is never dropped silently: it is a CertError, or with `notes` a note naming the
    block while the others are still read."""
    from cryptography import x509

    if PEM_BEGIN not in data:
        raise CertError("no PEM certificate found")
    blocks = pem_blocks(data)
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
# One described certificate per PEM block text: the root copy that ends every workload chain is
# then neither parsed nor described again, pod after pod.
_BLOCKS: dict[tuple[bytes, str | None], ParsedCert] = {}
_BUNDLE_CACHE_SIZE = 1024


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Bounded: a mesh scan of unique workload certificates refills the cache, never grows it."""
    if len(cache) >= _BUNDLE_CACHE_SIZE:
        cache.clear()
    cache[key] = value


def _copy(parsed: ParsedCert) -> ParsedCert:
    # Callers annotate the info dicts (chain_verified) and the notes: hand out copies.
    sans = {k: list(v) for k, v in parsed.info["sans"].items()}
    return ParsedCert(info={**parsed.info, "sans": sans}, cert=parsed.cert, notes=list(parsed.notes))


def parse_bundle(data: bytes, trust_domain: str | None = None) -> list[ParsedCert]:
    """`describe` of every certificate in a PEM bundle, cached: every sidecar of a mesh carries the
    same roots, so a mesh scan parses each root once instead of once per pod."""
    key = (data, trust_domain)
    cached = _BUNDLES.get(key)
    if cached is None:
        clean = _parse_clean_bundle(data, trust_domain)
        if clean is None:
            notes: list[str] = []
            cached = [describe(c, trust_domain) for c in load_pem_bundle(data, notes)]
            if cached and notes:  # damaged blocks: told with the first certificate of the bundle
                cached[0].notes[:0] = notes
        elif all(shared for _, shared in clean):
            cached = [parsed for parsed, _ in clean]
        else:  # a workload chain: its leaf is new in every pod, so the bundle is not kept
            return [_copy(parsed) if shared else parsed for parsed, shared in clean]
        _remember(_BUNDLES, key, cached)
    return [_copy(p) for p in cached]


def _parse_clean_bundle(data: bytes, trust_domain: str | None) -> list[tuple[ParsedCert, bool]] | None:
    """`parse_bundle` of a bundle whose every block loads without a word from cryptography (what
    sidecars carry), block by block: CA certificates (the same in every pod) through `_BLOCKS`, a
    new block loaded and described under one warnings capture. Each with whether it is shared with
    a cache (hand out a copy) or new (handed out as is). None (read it with `load_pem_bundle`, which
    says what is wrong) when a block is truncated or damaged, or warns while loading: those warnings
    are notes of the bundle, not of a block."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    blocks = pem_blocks(data)
    if not blocks or len(blocks) != data.count(PEM_BEGIN):
        return None
    out = []
    for block in blocks:
        key = (block, trust_domain)
        parsed = _BLOCKS.get(key)
        if parsed is not None:
            out.append((parsed, True))
            continue
        with _recording() as caught:
            try:
                cert = x509.load_pem_x509_certificate(block)
            except ValueError:
                return None
            if caught:
                return None
            digest = cert.fingerprint(hashes.SHA256())
            described = _DESCRIBED.get((digest, trust_domain))
            if described is None:  # what warns from here on is about this certificate
                info = _info(cert, digest)
                notes = _as_notes(caught, [])
        if described is None and not info["is_ca"]:  # a leaf: new in every pod, kept nowhere
            if trust_domain is not None:
                info["trust_domain"] = trust_domain
            out.append((ParsedCert(info=info, cert=cert, notes=notes), False))
            continue
        if described is None:
            described = _described((digest, trust_domain), info, notes, trust_domain)
        parsed = ParsedCert(info=described[0], cert=cert, notes=described[1])
        if described[0]["is_ca"]:
            _remember(_BLOCKS, key, parsed)
        out.append((parsed, True))
    return out


def fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


_DESCRIBED: dict[tuple[bytes, str | None], tuple[dict[str, Any], list[str]]] = {}


def _described(
    key: tuple[bytes, str | None], info: dict[str, Any], notes: list[str], trust_domain: str | None
) -> tuple[dict[str, Any], list[str]]:
    if trust_domain is not None:
        info["trust_domain"] = trust_domain
    _remember(_DESCRIBED, key, (info, notes))
    return info, notes


def describe(cert: x509.Certificate, trust_domain: str | None = None) -> ParsedCert:
    """The model dict of one certificate. Cached by content: the root (and intermediates) that close
    every sidecar's workload chain are described once per run, not once per pod."""
    from cryptography.hazmat.primitives import hashes

    digest = cert.fingerprint(hashes.SHA256())
    key = (digest, trust_domain)
    cached = _DESCRIBED.get(key)
    if cached is None:
        notes: list[str] = []
        with warnings_as_notes(notes):
            info = _info(cert, digest)
        cached = _described(key, info, notes, trust_domain)
    info, notes = cached
    return _copy(ParsedCert(info=info, cert=cert, notes=notes))


def _info(cert: x509.Certificate, digest: bytes | None = None) -> dict[str, Any]:
    """`digest`: the certificate's SHA-256, when the caller has it already."""
    from cryptography import x509

    uris: list[str] = []
    dns: list[str] = []
    is_ca: bool | None = None
    try:
        extensions = list(cert.extensions)
    except ValueError:  # a malformed extension must not hide the rest of the certificate
        extensions = []
    # One pass over the extensions, the first of each kind counting (as get_extension_for_class).
    seen_san = False
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.SubjectAlternativeName) and not seen_san:
            seen_san = True
            for name in value:  # both kinds, each in its order
                if isinstance(name, x509.UniformResourceIdentifier):
                    uris.append(str(name.value))
                elif isinstance(name, x509.DNSName):
                    dns.append(str(name.value))
        elif isinstance(value, x509.BasicConstraints) and is_ca is None:
            is_ca = bool(value.ca)
    info: dict[str, Any] = {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "sans": {"uri": uris, "dns": dns},
        "serial": serial_text(cert.serial_number),
        "not_before": rfc3339(cert.not_valid_before_utc),
        "not_after": rfc3339(cert.not_valid_after_utc),
        "fingerprint_sha256": fingerprint(cert) if digest is None else digest.hex(":").upper(),
        "is_ca": bool(is_ca),
        "self_signed": cert.subject == cert.issuer,
        "key": _key_text(cert),
        "chain_verified": None,
    }
    return info


def _key_text(cert: x509.Certificate) -> str:
    """`RSA 2048`, `EC secp256r1`, ...; a key cryptography cannot load (a point off its curve, an
    algorithm it does not implement) is named so, not fatal: the certificate is still listed and
    compared, and it never verifies."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"unreadable ({exc})"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.removeprefix("_")


def serial_text(serial: int) -> str:
    """As istioctl prints it (%032x); a negative serial (RFC 5280 forbids them) keeps its sign."""
    return format(serial, "032x") if serial >= 0 else "-" + format(-serial, "032x")


def spiffe_id(cert: ParsedCert) -> str | None:
    for uri in cert.info["sans"]["uri"]:
        if uri.startswith("spiffe://"):
            return str(uri)
    return None


# -- trust as Envoy decides it ------------------------------------------------------------------
# Envoy verifies peers with BoringSSL: signature and issuer name per link, basicConstraints CA:TRUE
# and path length on issuers, keyCertSign when a keyUsage is present, no unknown critical extension.
# It does not want an AuthorityKeyIdentifier (Istio 1.5's CA and some Vault or plug-in chains omit it)
# nor a SAN on CAs, and applies no Web-PKI profile. cryptography's verifier gets exactly those
# extension rules; its remaining Web-PKI-only rules (key sizes, algorithms, serial and date encoding)
# make the answer "cannot tell", never "untrusted". Dates are kept out of trust altogether: expiry
# and clock skew are reported from the dates (cert-expired, cert-not-yet-valid).

_UNJUDGED = (  # cryptography's Web-PKI rules BoringSSL does not apply: fail there means "cannot tell"
    "RSA key is too weak",
    "Forbidden public key algorithm",
    "Forbidden signature algorithm",
    "must be an X509v3 certificate",
    "serial",
    "non-empty Issuer",
    "must be UtcTime",
    "mismatch between signatureAlgorithm",
)
# Extensions BoringSSL understands; any other one marked critical makes the chain fail.
_KNOWN_CRITICAL = {
    "2.5.29.15",  # keyUsage
    "2.5.29.17",  # subjectAltName
    "2.5.29.19",  # basicConstraints
    "2.5.29.30",  # nameConstraints
    "2.5.29.32",  # certificatePolicies
    "2.5.29.36",  # policyConstraints
    "2.5.29.37",  # extendedKeyUsage
    "2.5.29.33",  # policyMappings
    "2.5.29.54",  # inhibitAnyPolicy
}


def _ca_key_usage(_policy: Any, _cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("keyUsage of an issuing CA lacks keyCertSign")


@functools.cache
def _envoy_policies() -> tuple[Any, Any]:
    """(CA policy, leaf policy): extensions may be absent; AKI/SKI, when present, must not be critical
    (BoringSSL does not process them, so a critical one is an unhandled critical extension)."""
    from cryptography import x509
    from cryptography.x509.verification import Criticality, ExtensionPolicy

    def relaxed(policy: Any) -> Any:
        return policy.may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None).may_be_present(
            x509.SubjectKeyIdentifier, Criticality.NON_CRITICAL, None
        )

    ca = relaxed(ExtensionPolicy.permit_all()).require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
    ca = ca.may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage)
    return ca, relaxed(ExtensionPolicy.permit_all())


# Verifiers by (root, moment): a mesh scan verifies every pod against the same root at the same
# moment, and a verifier is immutable. Bounded like the parse caches.
_VERIFIERS: dict[tuple[x509.Certificate, datetime], Any] = {}
_VERIFIER_CACHE_SIZE = 64


def _verifier(root: x509.Certificate, moment: datetime) -> Any:
    """A client verifier trusting only `root`, at `moment`, with Envoy's extension rules."""
    from cryptography.x509 import verification

    key = (root, moment)
    verifier = _VERIFIERS.get(key)
    if verifier is None:
        ca_policy, ee_policy = _envoy_policies()
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store([root]))
            .time(moment)
            .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
            .build_client_verifier()
        )
        if len(_VERIFIERS) >= _VERIFIER_CACHE_SIZE:
            _VERIFIERS.clear()
        _VERIFIERS[key] = verifier
    return verifier


def _moment(certs: list[x509.Certificate], now: datetime) -> datetime | None:
    """A moment inside every certificate's validity, as close to `now` as possible; None if there is none."""
    start = max(c.not_valid_before_utc for c in certs)
    end = min(c.not_valid_after_utc for c in certs)
    if start > end:
        return None
    return min(max(now, start), end)


def _explain(message: str) -> str:
    """cryptography's path-building wording, restated as the TLS error operators search for."""
    reason = message.removeprefix("validation failed: ").split(" (encountered processing")[0]
    for needle, said in (
        ("path length constraint", "path length constraint exceeded"),
        ("basicConstraints.cA must be asserted", "invalid CA certificate: an issuer is not a CA (CA:FALSE)"),
        ("CA certificate has no basicConstraints", "invalid CA certificate: an issuer has no basicConstraints"),
        ("lacks keyCertSign", "invalid CA certificate: an issuer's keyUsage lacks keyCertSign"),
        ("critical", f"unhandled critical extension ({reason})"),
        ("signature does not match", "certificate signature failure: the root with the issuer's name did not sign it"),
    ):
        if needle in reason:
            return said
    if "candidates exhausted" in reason or "exceeds max depth" in reason:
        return "unable to get local issuer certificate: no trusted root signed this chain"
    return reason


def _critical_unknown(cert: x509.Certificate) -> str | None:
    for ext in cert.extensions:
        if ext.critical and ext.oid.dotted_string not in _KNOWN_CRITICAL:
            return str(ext.oid.dotted_string)
    return None


def _issues(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Name and signature of one link, as BoringSSL checks them."""
    from cryptography.exceptions import InvalidSignature

    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _key_ids_differ(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """The child's AuthorityKeyIdentifier names another key than the issuer's SubjectKeyIdentifier."""
    from cryptography import x509

    try:
        aki = child.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return False
    return aki is not None and aki != ski


def _ambiguous(child: x509.Certificate, signer: x509.Certificate, roots: list[x509.Certificate]) -> str | None:
    """BoringSSL picks a trusted issuer by name (and key identifiers when both sides carry them) and
    checks the signature only afterwards, against that one candidate. When another root has the same
    name, cannot be told apart and did not sign, whether Envoy accepts depends on the store's order."""
    for other in roots:
        if other is signer or other == signer or other.subject != signer.subject or _key_ids_differ(child, other):
            continue
        if not _issues(child, other):
            return (
                f"several trusted roots are named {signer.subject.rfc4514_string() or '(empty)'!r} and the "
                "certificate has no AuthorityKeyIdentifier to choose between them; BoringSSL checks only the "
                "first it finds, so Envoy may accept or reject it"
            )
    return None


def _path_without_dates(
    leaf: x509.Certificate, intermediates: list[x509.Certificate], root: x509.Certificate
) -> tuple[bool, str | None, x509.Certificate | None]:
    """Only when no moment lies inside every certificate's validity (a leaf that expired before a
    root re-issued with the same key became valid): the same path rules as above, dates left out."""
    from cryptography import x509

    def ca_ok(cert: x509.Certificate, below: int) -> str | None:
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            return "invalid CA certificate: an issuer has no basicConstraints"
        if not constraints.ca:
            return "invalid CA certificate: an issuer is not a CA (CA:FALSE)"
        if constraints.path_length is not None and below > constraints.path_length:
            return "path length constraint exceeded"
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return None
        return None if usage.key_cert_sign else "invalid CA certificate: an issuer's keyUsage lacks keyCertSign"

    unknown = _critical_unknown(leaf)
    if unknown:
        return False, f"unhandled critical extension ({unknown})", None
    error: str | None = None
    signed: list[x509.Certificate] = []  # the certificate the root signed, once a path is found

    def walk(cert: x509.Certificate, used: list[x509.Certificate]) -> bool:
        nonlocal error
        below = len(used)  # CA certificates between this issuer and the leaf
        if _issues(cert, root):
            error = ca_ok(root, below) or (_critical_unknown(root) and "unhandled critical extension")
            if error is None:
                signed.append(cert)
                return True
        if below >= 8:
            return False
        for candidate in intermediates:
            if candidate in used or not _issues(cert, candidate):
                continue
            problem = ca_ok(candidate, below) or (_critical_unknown(candidate) and "unhandled critical extension")
            if problem:
                error = problem
                continue
            if walk(candidate, [*used, candidate]):
                return True
        return False

    if walk(leaf, []):
        return True, None, signed[0]
    return False, error or "unable to get local issuer certificate: no trusted root signed this chain", None


def verify_chain(
    chain: list[x509.Certificate], roots: list[x509.Certificate], now: datetime
) -> tuple[bool | None, str | None]:
    """Would Envoy accept the leaf (with the chain's other certs as intermediates) against `roots`,
    dates aside? (True, None); (False, why); or (None, why) when only a Web-PKI-only rule of the
    verifier objected, which says nothing about Envoy."""
    from cryptography.x509 import verification

    if not chain:
        return False, "no workload certificate"
    if not roots:
        return False, "no root certificates to verify against"
    leaf, *rest = chain
    # A root copy at the end of the chain is no intermediate; leaving it out keeps its dates out of the way.
    intermediates = [c for c in rest if c.subject != c.issuer]
    errors: list[tuple[int, bool | None, str]] = []
    for root in roots:
        moment = _moment([leaf, *intermediates, root], now)
        if moment is None:
            ok, why, signed = _path_without_dates(leaf, intermediates, root)
            if ok and signed is not None:
                doubt = _ambiguous(signed, root, roots)
                return (None, f"not judged: {doubt}") if doubt else (True, None)
            errors.append((0 if leaf.issuer == root.subject else 1, False, why or ""))
            continue
        try:
            path = _verifier(root, moment).verify(leaf, intermediates).chain
            # (a leaf that is itself the trusted root makes a path of one: nothing to choose)
            doubt = _ambiguous(path[-2], root, roots) if len(path) > 1 else None
            return (None, f"not judged: {doubt}") if doubt else (True, None)
        except verification.VerificationError as exc:
            message = str(exc)
            verdict: bool | None = None if any(rule in message for rule in _UNJUDGED) else False
            rank = 0 if "all candidates exhausted with no interior errors" not in message else 1
            named = [c for c in (leaf, *intermediates) if c.issuer == root.subject]
            if named and all(_key_ids_differ(c, root) for c in named):
                # BoringSSL never takes a root whose key identifier the AKI rules out as the issuer.
                message, rank = "candidates exhausted", 1
            errors.append((rank, verdict, _explain(message)))
        except ValueError as exc:
            errors.append((0, None, f"cannot verify: {exc}"))
    # The most telling failure: a root that at least had the issuer's name beats "no issuer at all";
    # "cannot tell" from any root beats "untrusted".
    errors.sort(key=lambda e: (e[1] is not None, e[0]))
    _, verdict, why = errors[0]
    if verdict is None:
        return None, f"not judged: {why} (a Web-PKI rule of the verifier that Envoy does not apply)"
    return False, why
