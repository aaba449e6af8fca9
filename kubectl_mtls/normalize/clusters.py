"""Outbound clusters: which TLS the client sidecar originates, to whom, trusting what."""

from __future__ import annotations

import re
from typing import Any

from .keys import JSON, items, obj, text
from .tls import alpn, certificate_names, socket_tls, transport_tls, validation

# `metadata.filter_metadata.istio.config` names the DestinationRule Istio applied.
# Istio <= 1.5 wrote `/apis/networking/v1alpha3/...` (group without its domain).
DR_PATH = re.compile(
    r"^/apis/networking(?:\.istio\.io)?/[^/]+/namespaces/(?P<ns>[^/]+)/destination-rule/(?P<name>[^/]+)$"
)


ISTIO_CERT_DIR = "/etc/certs/"


def parse_name(name: str) -> tuple[str, int | None, str, str] | None:
    """`outbound|8080|v1|svc.ns.svc.cluster.local` -> (direction, port, subset, host)."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in ("outbound", "inbound", "inbound-vip", "outbound-vip"):
        return None
    # isdigit() alone also takes digits int() refuses (superscripts): only ASCII ones make a port
    port = int(parts[1]) if parts[1].isascii() and parts[1].isdigit() else None
    return parts[0], port, parts[2], parts[3]


def _tls_mode(ctx: JSON) -> str:
    common = obj(ctx, "common_tls_context")
    certs = certificate_names(common)
    if not certs:
        return "SIMPLE"
    # Istio's own mTLS uses the SDS secrets `default` (workload cert) and `ROOTCA`; before 1.6 the
    # files istio-agent mounted at /etc/certs.
    istio = "default" in certs or any(c.startswith(ISTIO_CERT_DIR) for c in certs)
    return "ISTIO_MUTUAL" if istio else "MUTUAL"


def _destination_rule(cluster: JSON) -> dict[str, str] | None:
    istio = obj(cluster, "metadata", "filter_metadata").get("istio")
    config = istio.get("config") if isinstance(istio, dict) else None
    if not isinstance(config, str):
        return None
    match = DR_PATH.match(config)
    if not match:
        return {"namespace": "", "name": "", "path": config}
    return {"namespace": match["ns"], "name": match["name"]}


def _endpoint_counts(name: str, endpoints: dict[str, list[JSON]]) -> tuple[int | None, int | None]:
    """(endpoints, endpoints labelled tlsMode=istio); None when EDS was not in the dump."""
    if name not in endpoints:
        return None, None
    metas = endpoints[name]
    istio = 0
    for meta in metas:
        match = meta.get("envoy.transport_socket_match")
        if isinstance(match, dict) and match.get("tlsMode") == "istio":
            istio += 1
    return len(metas), istio


def normalize_cluster(
    cluster: JSON, endpoints: dict[str, list[JSON]], notes: list[str] | None = None
) -> dict[str, Any] | None:
    """One outbound cluster; a transport socket not understood makes its mode UNKNOWN, with a note."""
    name = text(cluster, "name")
    parsed = parse_name(name)
    if parsed is None or parsed[0] != "outbound":
        return None
    return _outbound_cluster(cluster, name, parsed, endpoints, notes)


def _outbound_cluster(
    cluster: JSON,
    name: str,
    parsed: tuple[str, int | None, str, str],
    endpoints: dict[str, list[JSON]],
    notes: list[str] | None,
) -> dict[str, Any]:
    _, port, subset, host = parsed
    ctx: JSON | None = None
    hbone = False
    matches = items(cluster, "transport_socket_matches")
    if matches:
        mode = "DISABLE"
        for match in matches:
            criteria = obj(match, "match")
            if criteria.get("tunnel") == "http":
                hbone = True
                continue
            found, strange = socket_tls(obj(match, "transport_socket"))
            if strange:
                mode = "UNKNOWN"
                if notes is not None:
                    notes.append(f"cluster {name}: transport socket {strange} not understood: TLS mode unknown")
                break
            if found is not None and ctx is None:
                ctx = found
                # autoMtls: TLS only to endpoints labelled tlsMode=istio, plaintext to the rest
                mode = "AUTO" if criteria.get("tlsMode") == "istio" else _tls_mode(found)
    else:
        ctx, strange = transport_tls(cluster)
        mode = "DISABLE" if ctx is None else _tls_mode(ctx)
        if strange:
            mode = "UNKNOWN"
            if notes is not None:
                notes.append(f"cluster {name}: transport socket {strange} not understood: TLS mode unknown")
    common = obj(ctx, "common_tls_context") if ctx else {}
    validation_name, sans = validation(common) if ctx else (None, [])
    total, istio = _endpoint_counts(name, endpoints)
    return {
        "name": name,
        "host": host,
        "port": port,
        "subset": subset,
        "tls_mode": mode,
        "sni": (text(ctx, "sni") or None) if ctx else None,
        "expected_sans": sans,
        "alpn": alpn(common),
        "client_certificate": next(iter(certificate_names(common)), None) if ctx else None,
        "validation": validation_name,
        "hbone": hbone,
        "destination_rule": _destination_rule(cluster),
        "endpoints": total,
        "mtls_endpoints": istio,
    }


def _static_endpoints(cluster: JSON) -> list[JSON]:
    return [
        obj(lb, "metadata", "filter_metadata")
        for locality in items(obj(cluster, "load_assignment"), "endpoints")
        for lb in items(locality, "lb_endpoints")
    ]


def normalize_clusters(
    clusters: list[JSON], endpoints: dict[str, list[JSON]], notes: list[str] | None = None
) -> list[dict[str, Any]]:
    # Only outbound clusters are modelled, and only they look their endpoints up: each name read once.
    outbound = []
    for cluster in clusters:
        name = text(cluster, "name")
        parsed = parse_name(name)
        if parsed is not None and parsed[0] == "outbound":
            outbound.append((cluster, name, parsed))
    # Without EDS in the dump, a cluster's own load_assignment still says which endpoints get mTLS.
    endpoints = dict(endpoints)
    for cluster, name, _ in outbound:
        if name not in endpoints and obj(cluster, "load_assignment"):
            endpoints[name] = _static_endpoints(cluster)
    out = [_outbound_cluster(cluster, name, parsed, endpoints, notes) for cluster, name, parsed in outbound]
    out.sort(key=lambda c: (c["host"], c["port"] or 0, c["subset"]))
    return out
