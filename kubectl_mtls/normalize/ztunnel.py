"""ztunnel's config dump (`istioctl ztunnel-config all <ztunnel-pod>.<ns> -o json`) -> the ambient model.

Pure: bytes in, a `ZtunnelView` out. Shapes differ between ztunnel versions, and both are read:
`workloads`/`services` are maps keyed by UID (current) or lists (older, and some tools);
certificates carry `certChain` plus `rootCerts` (current), `caCert` (older), or only a `certChain`
that ends in the root (oldest). PEMs are parsed and verified here; the dump's own `validFrom` /
`expirationTime` strings are never trusted (hand-edited dumps exist, and the PEM is what TLS uses).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import jsonutil
from ..errors import InputError
from ..model import ParsedCert
from .certs import CertError, parse_bundle, verify_chain

HBONE_PORT = 15008


def spiffe(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass
class ZtunnelCert:
    """One identity's certificate as a ztunnel holds it."""

    identity: str
    state: str  # "Available", "Initializing", "Unavailable: <ztunnel's reason>"
    chain: list[ParsedCert] = field(default_factory=list)
    roots: list[ParsedCert] = field(default_factory=list)
    chain_verified: bool | None = None
    chain_error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.state == "Available"

    @property
    def reason(self) -> str | None:
        """ztunnel's words after `Unavailable: `."""
        return self.state.split(":", 1)[1].strip() if self.state.startswith("Unavailable:") else None

    def summary(self) -> dict[str, Any]:
        leaf = self.chain[0].info if self.chain else None
        return {
            "identity": self.identity,
            "state": self.state,
            "chain_verified": self.chain_verified,
            "chain_error": self.chain_error,
            "not_before": leaf["not_before"] if leaf else None,
            "not_after": leaf["not_after"] if leaf else None,
            "certificates": [c.info for c in self.chain],
            "roots": [r.info for r in self.roots],
        }


@dataclass
class ZtunnelView:
    """What one ztunnel knows: workloads, services, L4 policies and the certificates it holds."""

    namespace: str
    pod: str
    node: str | None
    workloads: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)  # "ns/name" -> policy as printed
    certificates: dict[str, ZtunnelCert] = field(default_factory=dict)  # by identity, Available first
    certificate_entries: list[ZtunnelCert] = field(default_factory=list)  # every entry, as printed
    incomplete: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.pod}"

    def workload(self, namespace: str, name: str) -> dict[str, Any] | None:
        for workload in self.workloads:
            if workload["namespace"] == namespace and workload["name"] == name:
                return workload
        return None

    def root_fingerprints(self) -> frozenset[str]:
        return frozenset(r.info["fingerprint_sha256"] for r in self.root_certs())

    def root_certs(self) -> list[ParsedCert]:
        seen: dict[str, ParsedCert] = {}
        for cert in self.certificates.values():
            for root in cert.roots:
                seen.setdefault(root.info["fingerprint_sha256"], root)
        return list(seen.values())


def _entries(value: Any, what: str, notes: list[str]) -> list[dict[str, Any]]:
    """A list, or a map keyed by UID / `namespace/hostname` (both occur): its objects, in order."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        notes.append(f"'{what}' is neither a list nor a map: ignored")
        return []
    items = [v for v in value if isinstance(v, dict)]
    if len(items) != len(value):
        notes.append(f"{len(value) - len(items)} entries of '{what}' are not objects: ignored")
    return items


def _text(obj: dict[str, Any], key: str, default: str = "") -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else default


def _workload(raw: dict[str, Any]) -> dict[str, Any]:
    namespace = _text(raw, "namespace")
    account = _text(raw, "serviceAccount", "default")
    trust_domain = _text(raw, "trustDomain", "cluster.local")
    waypoint = raw.get("waypoint") if isinstance(raw.get("waypoint"), dict) else None
    policies = raw.get("authorizationPolicies")
    ips = raw.get("workloadIps")
    return {
        "uid": _text(raw, "uid"),
        "name": _text(raw, "name"),
        "namespace": namespace,
        "service_account": account,
        "identity": spiffe(trust_domain, namespace, account),
        "protocol": _text(raw, "protocol", "TCP"),  # ztunnel omits nothing here; TCP is the proto default
        "node": _text(raw, "node") or None,
        "workload_type": _text(raw, "workloadType") or None,
        "workload_name": _text(raw, "workloadName") or None,
        "status": _text(raw, "status") or None,
        "ips": [ip for ip in ips if isinstance(ip, str)] if isinstance(ips, list) else [],
        "waypoint": _gateway(waypoint),
        "authorization_policies": [p for p in policies if isinstance(p, str)] if isinstance(policies, list) else [],
    }


def _gateway(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """`waypoint: {destination: "<network>/<ip>" | {hostname...}, port}` -> {address, hostname, port}."""
    if not raw:
        return None
    destination = raw.get("destination")
    address = hostname = None
    if isinstance(destination, str):
        address = destination.rpartition("/")[2] or None
    elif isinstance(destination, dict):
        host = destination.get("hostname")
        hostname = host if isinstance(host, str) else None
        if isinstance(host, dict):  # {"namespace", "hostname"}
            hostname = _text(host, "hostname") or None
    port = raw.get("hboneMtlsPort", raw.get("port"))
    return {"address": address, "hostname": hostname, "port": port if isinstance(port, int) else HBONE_PORT}


def _service(raw: dict[str, Any]) -> dict[str, Any]:
    vips = raw.get("vips")
    endpoints = raw.get("endpoints")
    uids = []
    for endpoint in _entries(endpoints, "endpoints", []):
        uid = endpoint.get("workloadUid")
        if isinstance(uid, str):
            uids.append(uid)
    ports = raw.get("ports") if isinstance(raw.get("ports"), dict) else {}
    return {
        "name": _text(raw, "name"),
        "namespace": _text(raw, "namespace"),
        "hostname": _text(raw, "hostname"),
        "vips": [v.rpartition("/")[2] for v in vips if isinstance(v, str)] if isinstance(vips, list) else [],
        "ports": {str(k): v for k, v in (ports or {}).items()},
        "waypoint": _gateway(raw.get("waypoint") if isinstance(raw.get("waypoint"), dict) else None),
        "endpoint_uids": uids,
    }


def _policy(raw: dict[str, Any]) -> dict[str, Any]:
    rules = raw.get("rules")
    return {
        "name": _text(raw, "name"),
        "namespace": _text(raw, "namespace"),
        "scope": _text(raw, "scope", "WorkloadSelector"),
        "action": _text(raw, "action", "Allow"),
        "rules": rules if isinstance(rules, list) else [],
        "dry_run": raw.get("dryRun") is True,
    }


def _pems(entries: Any, what: str, notes: list[str]) -> list[ParsedCert]:
    """Each entry's `pem`: PEM text (current ztunnel) or base64 of it (early versions)."""
    out: list[ParsedCert] = []
    if not isinstance(entries, list):
        return out
    for index, entry in enumerate(entries):
        pem = entry.get("pem") if isinstance(entry, dict) else None
        if not isinstance(pem, str) or not pem.strip():
            notes.append(f"{what}[{index}] has no PEM")
            continue
        data = pem.encode()
        if b"-----BEGIN" not in data:
            try:
                data = base64.b64decode(data, validate=False)
            except (binascii.Error, ValueError):
                notes.append(f"{what}[{index}]: neither PEM nor base64 PEM")
                continue
        try:
            # copies: parse_bundle caches, and chain_verified is set per holder
            out.extend(ParsedCert(info=dict(c.info), cert=c.cert) for c in parse_bundle(data))
        except CertError as exc:
            notes.append(f"{what}[{index}]: {exc}")
    return out


def _certificate(raw: dict[str, Any], now: datetime) -> ZtunnelCert:
    identity = _text(raw, "identity")
    state = _text(raw, "state", "unknown")
    notes: list[str] = []
    chain = _pems(raw.get("certChain"), f"certificate {identity} certChain", notes)
    roots = _pems(raw.get("rootCerts", raw.get("caCert")), f"certificate {identity} rootCerts", notes)
    if not roots and chain:
        # The oldest dumps end the chain with the root itself: use the self-signed CAs as roots.
        roots = [c for c in chain[1:] if c.info["self_signed"] and c.info["is_ca"]]
        chain = [chain[0], *[c for c in chain[1:] if c not in roots]]
    cert = ZtunnelCert(identity=identity, state=state, chain=chain, roots=roots, notes=notes)
    if chain:
        ok, error = verify_chain([c.cert for c in chain], [r.cert for r in roots], now)
        cert.chain_verified, cert.chain_error = ok, error
        for item in chain:
            item.info["chain_verified"] = ok
    return cert


def parse_dump(raw: bytes, where: str, namespace: str, pod: str, node: str | None, now: datetime) -> ZtunnelView:
    """One ztunnel's dump. InputError when it is not a JSON object; odd parts become notes."""
    doc = jsonutil.loads(raw, where)
    if not isinstance(doc, dict):
        raise InputError(f"{where}: a ztunnel config dump is a JSON object, not {type(doc).__name__}")
    view = ZtunnelView(namespace=namespace, pod=pod, node=node)
    notes = view.incomplete
    view.workloads = [_workload(w) for w in _entries(doc.get("workloads"), "workloads", notes)]
    view.services = [_service(s) for s in _entries(doc.get("services"), "services", notes)]
    for policy in _entries(doc.get("policies"), "policies", notes):
        parsed = _policy(policy)
        view.policies[f"{parsed['namespace']}/{parsed['name']}"] = parsed
    for entry in _entries(doc.get("certificates"), "certificates", notes):
        cert = _certificate(entry, now)
        if cert.identity:
            view.certificate_entries.append(cert)
            held = view.certificates.get(cert.identity)
            if held is None or (cert.available and not held.available):
                view.certificates[cert.identity] = cert
            notes.extend(cert.notes)
    if view.node is None:  # the ztunnel's own workload entry says where it runs
        own = view.workload(namespace, pod)
        view.node = own["node"] if own else None
    for key in ("workloads", "certificates"):
        if key not in doc:
            notes.append(f"the ztunnel dump has no '{key}' section")
    return view
