"""Assemble one pod's model from its Pod object and its config dump sections."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..model import Proxy, ProxyModel
from . import pod as podinfo
from .certs import spiffe_id, verify_chain
from .clusters import normalize_clusters
from .dump import Sections
from .gateway import normalize_gateway
from .keys import obj, text
from .listeners import normalize_inbound
from .secrets import read_secrets
from .tls import file_certificates


def _bootstrap(sections: Sections) -> dict[str, Any] | None:
    if sections.bootstrap is None:
        return None
    node = obj(sections.bootstrap, "node")
    node_id = text(node, "id")
    metadata = obj(node, "metadata")
    version = metadata.get("ISTIO_VERSION")
    return {
        "type": node_id.split("~", 1)[0] if "~" in node_id else None,  # sidecar / router / waypoint
        "node_id": node_id or None,
        "istio_version": version if isinstance(version, str) else None,
    }


def _pod_from_node(node_id: str | None) -> tuple[str, str] | None:
    """`sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local` -> (ns, pod)."""
    parts = (node_id or "").split("~")
    if len(parts) >= 3 and "." in parts[2]:
        name, _, namespace = parts[2].rpartition(".")
        return namespace, name
    return None


def build(
    namespace: str,
    name: str,
    pod: dict[str, Any] | None,
    sections: Sections | None,
    now: datetime,
    notes: list[str] | None = None,
) -> Proxy:
    """The model of one pod. Without a dump (no sidecar, or unreadable) the Envoy parts stay empty."""
    incomplete = list(notes or [])
    sidecar = podinfo.sidecar_kind(pod) if pod is not None else "present"
    model: ProxyModel = {
        "pod": name,
        "namespace": namespace,
        "service_account": podinfo.service_account(pod) if pod is not None else None,
        "identity": None,
        "sidecar": sidecar,  # type: ignore[typeddict-item]  # values come from sidecar_kind
        "proxy": None,
        "certificates": [],
        "chain_error": None,
        "roots": [],
        "secrets": [],
        "clusters": [],
        "inbound": [],
        "rejected": [],
        "incomplete": incomplete,
    }
    proxy = Proxy(model=model, pod=pod)
    if sections is None:
        return proxy

    model["proxy"] = _bootstrap(sections)
    if pod is None and model["proxy"] and model["proxy"]["type"] not in (None, "sidecar"):
        model["sidecar"] = "present"

    def note(aspect: str, text: str) -> None:
        proxy.notes.append((aspect, text))
        incomplete.append(text)

    def unknown(aspect: str, text: str) -> None:
        proxy.unknown.setdefault(aspect, text)
        note(aspect, text)

    material = read_secrets(sections.secrets)
    for said in material.notes:
        note("certificates", said)
    proxy.chain, proxy.roots = material.chain, material.roots
    model["secrets"] = material.summary
    # Only asked without a workload secret: a walk over every TLS context that a sidecar with one skips.
    file_certs = "" if material.has_workload_secret else file_certificates(sections)
    if file_certs:
        # Istio < 1.6 mounted the workload certificate from a Secret; the dump shows only the path.
        unknown("certificates", f"certificates are files ({file_certs}, Istio < 1.6): not in the dump, unknown")
    elif "secrets" in sections.seen:
        if not material.has_workload_secret:
            note("certificates", "no active secret 'default' (workload certificate)")
        if not material.has_root_secret:
            note("certificates", "no active secret 'ROOTCA' (trusted roots)")
    else:
        unknown("certificates", "the dump has no secrets section: certificates and roots unknown")
    if material.chain:
        ok, error = verify_chain([c.cert for c in material.chain], [r.cert for r in material.roots], now)
        for cert in material.chain:
            cert.info["chain_verified"] = ok
        if ok is None:  # cannot tell: said, never reported as untrusted
            note("certificates", f"workload chain trust {error}")
        else:
            model["chain_error"] = error
        model["identity"] = spiffe_id(material.chain[0])
    model["certificates"] = [c.info for c in material.chain]  # type: ignore[misc]
    model["roots"] = [r.info for r in material.roots]  # type: ignore[misc]
    if model["service_account"] is None and model["identity"] and "/sa/" in model["identity"]:
        model["service_account"] = model["identity"].rsplit("/sa/", 1)[1]

    if "clusters" in sections.seen:
        strange: list[str] = []
        model["clusters"] = normalize_clusters(sections.clusters, sections.endpoints, strange)
        for said in strange:
            note("outbound", said)
        for name in sections.warming_clusters:
            note("outbound", f"cluster {name} is warming (not yet accepted)")
    else:
        unknown("outbound", "the dump has no clusters section: outbound TLS unknown")
    model["rejected"] = list(sections.rejected)
    if "listeners" in sections.seen:
        strange_chains: list[str] = []
        model["inbound"] = normalize_inbound(sections.listeners, strange_chains)
        for said in strange_chains:
            note("inbound", said)
        if (model["proxy"] or {}).get("type") == "router":
            model["gateway"] = normalize_gateway(sections.listeners)
        for said in sections.listener_errors:
            note("inbound", said)
    else:
        unknown("inbound", "the dump has no listeners section: inbound mode unknown")
    return proxy


def identify(sections: Sections) -> tuple[str, str] | None:
    """(namespace, pod) named by a dump's bootstrap node id, when there is one."""
    boot = _bootstrap(sections)
    return _pod_from_node(boot["node_id"] if boot else None)
