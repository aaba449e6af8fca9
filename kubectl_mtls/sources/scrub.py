"""Keep secrets out of snapshots: no private keys, no Secret data, no env values.

Envoy already redacts private keys in its dump; this is a second guard for dumps from other
tools or older proxies, and for Pod specs that may carry credentials in plain env values.
"""

from __future__ import annotations

import re
from typing import Any

from ..keymaterial import key_material

REDACTED_B64 = "W3JlZGFjdGVkXQ=="  # base64("[redacted]"), what Envoy writes
PRIVATE_KEY_PEM = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
# Env values the diagnosis reads (probe rewriting, proxy metadata); every other value is dropped.
KEPT_ENV = re.compile(
    r"^(ISTIO_KUBE_APP_PROBERS|ISTIO_META_[A-Z_]+|PROXY_CONFIG"
    # which CA signs (trust): istiod's CA switch and the address sidecars send CSRs to; never credentials
    r"|ENABLE_CA_SERVER|EXTERNAL_CA|CA_ADDR|PILOT_CERT_PROVIDER)$"
)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
CERTIFICATE_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", re.S)


# Fields Envoy marks sensitive (udpa.annotations.sensitive) and redacts in its own config dump: a dump
# from another tool or an older proxy may still carry them. Keys as parsed, so JSON escapes in the
# name (`private\u005fkey`) change nothing. Anywhere in a dump:
SENSITIVE = frozenset({"private_key", "privateKey", "pkcs12", "private_key_provider", "privateKeyProvider"})
# and inside the message that holds them:
SENSITIVE_IN = {
    "tls_certificate": frozenset({"password"}),
    "tlsCertificate": frozenset({"password"}),
    "generic_secret": frozenset({"secret"}),
    "genericSecret": frozenset({"secret"}),
    "session_ticket_keys": frozenset({"keys"}),
    "sessionTicketKeys": frozenset({"keys"}),
}
REDACTED_SOURCE = {"inline_bytes": REDACTED_B64}


def scrub_dump(doc: Any, sensitive: frozenset[str] = frozenset()) -> Any:
    """Every sensitive field, whatever its form (inline_bytes, inline_string, filename, a bare string,
    a list), replaced by Envoy's own redaction marker; recursively."""
    if isinstance(doc, dict):
        out = {}
        for key, value in doc.items():
            if key in SENSITIVE or key in sensitive:
                out[key] = [REDACTED_SOURCE for _ in value] if isinstance(value, list) else REDACTED_SOURCE
            else:
                out[key] = scrub_dump(value, SENSITIVE_IN.get(key, frozenset()))
        return out
    if isinstance(doc, list):
        return [scrub_dump(v) for v in doc]
    return doc


def has_private_key(data: bytes) -> bool:
    return key_material(data) is not None


def redact_key_strings(value: Any) -> Any:
    """Kubernetes objects with every string that holds key material (an annotation, a ConfigMap
    value) replaced by "[redacted]". Only walked when the serialized whole holds some."""
    import orjson

    if key_material(orjson.dumps(value)) is None:
        return value
    return _redact_strings(value)


def _redact_strings(value: Any) -> Any:
    if isinstance(value, str):
        return "[redacted]" if key_material(value.encode()) else value
    if isinstance(value, dict):
        return {key: _redact_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_strings(item) for item in value]
    return value


def scrub_pod(pod: dict[str, Any]) -> dict[str, Any]:
    spec = dict(pod.get("spec") or {})
    for key in ("containers", "initContainers", "ephemeralContainers"):
        if key in spec:
            spec[key] = [_scrub_container(c) for c in spec[key] or []]
    # metadata as for any object: last-applied-configuration would repeat the unredacted spec
    return {**scrub_object(pod), "spec": spec}


def _scrub_container(container: dict[str, Any]) -> dict[str, Any]:
    """Env values and the command line of application containers can carry credentials: redacted.
    istio-proxy's own arguments are Istio's and stay (they show how the sidecar was started)."""
    out = dict(container)
    if container.get("name") != "istio-proxy":
        for key in ("command", "args"):
            if isinstance(container.get(key), list):
                out[key] = ["[redacted]"] * len(container[key])
    container = out
    env = []
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        if KEPT_ENV.match(name) or "valueFrom" in var:
            env.append(var)  # valueFrom names a reference, never the secret value itself
        else:
            env.append({"name": name, "value": "[redacted]"} if "value" in var else {"name": name})
    return {**container, "env": env} if "env" in container else container


def scrub_object(obj: dict[str, Any]) -> dict[str, Any]:
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    # last-applied-configuration repeats the whole object, secrets included for some kinds
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    if annotations or "annotations" in meta:
        meta["annotations"] = annotations
    return {**obj, "metadata": meta}


# Keys of the CA Secrets (`cacerts`, `istio-ca-secret`) that hold certificates; keys are never kept.
CA_CERT_KEYS = ("root-cert.pem", "ca-cert.pem", "cert-chain.pem", "ca.crt", "tls.crt")


def scrub_secret(secret: dict[str, Any]) -> dict[str, Any]:
    """A Secret reduced to its CA certificates: no key material, no other data, no annotations."""
    meta = secret.get("metadata") or {}
    data = secret.get("data") or {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {k: meta[k] for k in ("name", "namespace", "creationTimestamp", "uid") if k in meta},
        "type": secret.get("type"),
        "data": {k: kept for k, v in data.items() if k in CA_CERT_KEYS and (kept := _certificates_only(v))},
    }


def _certificates_only(value: Any) -> str | None:
    """Only the CERTIFICATE blocks of a base64 Secret value: a bundle may also carry its private key."""
    import base64
    import binascii

    if not isinstance(value, str):
        return None
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    blocks = CERTIFICATE_PEM.findall(decoded)
    return base64.b64encode(b"".join(blocks)).decode() if blocks else None


def scrub_crd(crd: dict[str, Any]) -> dict[str, Any]:
    """A CustomResourceDefinition reduced to what names its conversion webhook: schemas are large
    and say nothing about mTLS."""
    spec = crd.get("spec") or {}
    kept = {k: spec[k] for k in ("group", "conversion") if k in spec}
    return {**scrub_object({k: crd[k] for k in ("apiVersion", "kind", "metadata") if k in crd}), "spec": kept}
