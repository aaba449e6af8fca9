"""SDS secrets: the workload chain (`default`) and the trust anchors (`ROOTCA`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model import ParsedCert
from .certs import CertError, decode_inline, parse_bundle
from .keys import JSON, items, obj, text

WORKLOAD = "default"
ROOTS = "ROOTCA"


@dataclass
class SecretMaterial:
    chain: list[ParsedCert] = field(default_factory=list)
    roots: list[ParsedCert] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)  # every secret, no material
    notes: list[str] = field(default_factory=list)  # what could not be read, and why
    has_workload_secret: bool = False
    has_root_secret: bool = False


def _roots_of(secret: JSON) -> list[tuple[bytes, str | None]]:
    """PEM bundles with their trust domain: `trusted_ca`, or SPIFFE trust bundles (SPIRE, federation)."""
    context = obj(secret, "validation_context")
    bundles: list[tuple[bytes, str | None]] = []
    trusted = obj(context, "trusted_ca")
    if trusted:
        bundles.append((decode_inline(trusted), None))
    custom = obj(context, "custom_validator_config", "typed_config")
    for domain in items(custom, "trust_domains"):
        bundles.append((decode_inline(obj(domain, "trust_bundle")), text(domain, "name") or None))
    return bundles


def _kind(secret: JSON) -> str:
    if obj(secret, "tls_certificate"):
        return "certificate"
    if obj(secret, "validation_context"):
        return "validation"
    return "unknown"


def _notes_of(secret: str, certs: list[ParsedCert]) -> list[str]:
    """Odd certificates and damaged PEM blocks, said where the user reads what could not be read."""
    out = []
    for index, cert in enumerate(certs, 1):
        for note in cert.notes:
            about = "" if note.startswith("PEM ") else f"certificate {index} ({cert.info['subject']}): "
            out.append(f"secret {secret}: {about}{note}")
    return out


def read_secrets(entries: list[JSON]) -> SecretMaterial:
    out = SecretMaterial()
    for entry in entries:
        name = entry["name"]
        secret = entry["secret"]
        out.summary.append(
            {
                "name": name,
                "status": entry["status"],
                "type": _kind(secret) if secret else "unknown",
                "version_info": entry["version_info"],
                "last_updated": entry["last_updated"],
            }
        )
        if entry["status"] != "active":
            if name in (WORKLOAD, ROOTS):
                out.notes.append(f"secret {name} is still warming (istiod has not delivered it)")
            continue
        if name == WORKLOAD:
            out.has_workload_secret = True
            try:
                pem = decode_inline(obj(secret, "tls_certificate", "certificate_chain"))
                if not pem:
                    out.notes.append("secret default: no certificate_chain")
                    continue
                out.chain = parse_bundle(pem)
                out.notes.extend(_notes_of("default", out.chain))
            except CertError as exc:
                out.notes.append(f"secret default: {exc}")
        elif name == ROOTS:
            out.has_root_secret = True
            try:
                bundles = _roots_of(secret)
            except CertError as exc:
                out.notes.append(f"secret ROOTCA: {exc}")
                bundles = []
            for pem, domain in bundles:
                if not pem:
                    continue
                try:
                    parsed = parse_bundle(pem, domain)
                    out.roots.extend(parsed)
                    out.notes.extend(_notes_of("ROOTCA", parsed))
                except CertError as exc:
                    out.notes.append(f"secret ROOTCA: {exc}")
            if not out.roots and not any(n.startswith("secret ROOTCA") for n in out.notes):
                out.notes.append("secret ROOTCA: no root certificate in trusted_ca or SPIFFE trust bundles")
    # The same root can arrive twice (trusted_ca and a trust bundle): keep one of each.
    seen: set[str] = set()
    unique = []
    for root in out.roots:
        if root.info["fingerprint_sha256"] not in seen:
            seen.add(root.info["fingerprint_sha256"])
            unique.append(root)
    out.roots = unique
    return out
