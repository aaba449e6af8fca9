"""The normalized model: plain JSON-able dicts, documented field by field in the README.

`ProxyModel` is what `kubectl mtls proxy` prints. `Proxy` pairs it with the parsed certificates
that comparisons (rootdiff, chain checks) need and that never go into the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

if TYPE_CHECKING:
    from cryptography import x509

Sidecar = Literal["present", "native", "absent", "ambient"]
TlsMode = Literal["ISTIO_MUTUAL", "AUTO", "SIMPLE", "MUTUAL", "DISABLE", "UNKNOWN"]
InboundMode = Literal["STRICT", "PERMISSIVE", "DISABLE", "SIMPLE", "UNKNOWN"]


class Certificate(TypedDict, total=False):
    subject: str
    issuer: str
    sans: dict[str, list[str]]  # {"uri": [...], "dns": [...]}
    serial: str  # lowercase hex, zero-padded to 32 digits as istioctl prints it
    not_before: str  # RFC 3339, UTC
    not_after: str
    fingerprint_sha256: str  # AB:CD:... as `openssl x509 -noout -fingerprint -sha256` prints it
    is_ca: bool
    self_signed: bool
    key: str  # "RSA 2048", "EC secp256r1"
    chain_verified: bool | None  # workload chain verifies to one of the pod's roots; null for roots
    trust_domain: str  # only for roots from SPIFFE trust bundles


class ProxyModel(TypedDict):
    pod: str
    namespace: str
    service_account: str | None
    identity: str | None  # SPIFFE ID from the workload certificate's URI SAN
    sidecar: Sidecar
    proxy: dict[str, Any] | None  # {"type", "node_id", "istio_version"} from the bootstrap
    certificates: list[Certificate]
    chain_error: str | None
    roots: list[Certificate]
    secrets: list[dict[str, Any]]
    clusters: list[dict[str, Any]]
    inbound: list[dict[str, Any]]
    gateway: NotRequired[list[dict[str, Any]]]  # gateways (proxy type router): their servers, by port
    rejected: NotRequired[list[dict[str, Any]]]  # sidecars: what Envoy rejected {type, name, error, ..., active}
    incomplete: list[str]
    ambient: NotRequired[dict[str, Any]]  # ambient pods only: their ztunnel view (README "ambient")


@dataclass
class ParsedCert:
    """One certificate: its model dict plus the parsed object for verification (never in the JSON)."""

    info: dict[str, Any]
    cert: x509.Certificate = field(repr=False)
    notes: list[str] = field(default_factory=list)  # what is odd about it (cryptography's warnings)


@dataclass
class Proxy:
    model: ProxyModel
    pod: dict[str, Any] | None = field(default=None, repr=False)  # the Pod object, for fixes
    chain: list[ParsedCert] = field(default_factory=list, repr=False)
    roots: list[ParsedCert] = field(default_factory=list, repr=False)
    # What the dump did not show, by aspect ("certificates", "outbound", "inbound") -> why. Unknown is
    # not absent: checks skip such a proxy for that aspect instead of reporting it missing.
    unknown: dict[str, str] = field(default_factory=dict, repr=False)
    # model["incomplete"] by aspect (the three above, or "other"): commands show only what they need.
    notes: list[tuple[str, str]] = field(default_factory=list, repr=False)
    # The kubeconfig context the pod was read from when a command spans clusters (fixes name it).
    context: str | None = field(default=None, repr=False)

    def knows(self, aspect: str) -> bool:
        return aspect not in self.unknown

    def notes_about(self, *aspects: str) -> list[str]:
        return [text for aspect, text in self.notes if aspect in aspects]

    @property
    def ref(self) -> str:
        return f"{self.model['namespace']}/{self.model['pod']}"

    def root_fingerprints(self) -> list[str]:
        return [r.info["fingerprint_sha256"] for r in self.roots]
