"""Split whatever the user or istioctl gave us into config-dump sections.

Accepted shapes (both key casings):
* `istioctl proxy-config all -o json` / admin `/config_dump`: `{"configs": [{"@type": ...ConfigDump}, ...]}`
* one `*ConfigDump` object (e.g. `istioctl proxy-config secret -o json`)
* `istioctl proxy-config cluster|listener -o json`: a JSON array of Cluster or Listener objects
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .keys import JSON, items, obj, text, type_name
from .keys import field as get

SECRET_KEYS = ("dynamic_active_secrets", "dynamic_warming_secrets", "static_secrets")
CLUSTER_KEYS = ("dynamic_active_clusters", "static_clusters", "dynamic_warming_clusters")
LISTENER_KEYS = ("dynamic_listeners", "static_listeners")


@dataclass
class Sections:
    """The parts of one proxy's config that the model is built from."""

    bootstrap: JSON | None = None
    clusters: list[JSON] = field(default_factory=list)
    warming_clusters: list[str] = field(default_factory=list)
    listeners: list[JSON] = field(default_factory=list)
    listener_errors: list[str] = field(default_factory=list)
    secrets: list[JSON] = field(default_factory=list)  # {name, status, version_info, last_updated, secret}
    # cluster name -> endpoint `filter_metadata` maps, from EDS (`include_eds`)
    endpoints: dict[str, list[JSON]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # which of bootstrap/clusters/listeners/secrets were present


def _add_secrets(out: Sections, dump: JSON) -> None:
    out.seen.add("secrets")
    for key in SECRET_KEYS:
        status = "warming" if "warming" in key else "active"
        for entry in items(dump, key):
            if not isinstance(entry, dict):
                continue
            out.secrets.append(
                {
                    "name": text(entry, "name") or text(obj(entry, "secret"), "name"),
                    "status": status,
                    "version_info": text(entry, "version_info") or None,
                    "last_updated": text(entry, "last_updated") or None,
                    "secret": obj(entry, "secret"),
                }
            )


def _add_clusters(out: Sections, dump: JSON) -> None:
    out.seen.add("clusters")
    for key in CLUSTER_KEYS:
        for entry in items(dump, key):
            cluster = obj(entry, "cluster")
            if not cluster:
                continue
            if key == "dynamic_warming_clusters":
                out.warming_clusters.append(text(cluster, "name"))
            else:
                out.clusters.append(cluster)


def _add_listeners(out: Sections, dump: JSON) -> None:
    out.seen.add("listeners")
    for entry in items(dump, "static_listeners"):
        listener = obj(entry, "listener")
        if listener:
            out.listeners.append(listener)
    for entry in items(dump, "dynamic_listeners"):
        name = text(entry, "name")
        active = obj(entry, "active_state", "listener")
        if active:
            out.listeners.append(active)
        error = obj(entry, "error_state")
        if error:
            detail = text(error, "details") or "rejected"
            out.listener_errors.append(f"listener {name}: {detail}")


def _add_endpoints(out: Sections, dump: JSON) -> None:
    for key in ("static_endpoint_configs", "dynamic_endpoint_configs"):
        for entry in items(dump, key):
            config = obj(entry, "endpoint_config")
            name = text(config, "cluster_name")
            if not name:
                continue
            metas: list[JSON] = []
            for locality in items(config, "endpoints"):
                for lb in items(locality, "lb_endpoints"):
                    metas.append(obj(lb, "metadata", "filter_metadata"))
            out.endpoints[name] = metas


def _looks_like_cluster(item: JSON) -> bool:
    name = text(item, "name")
    if name.startswith(("outbound|", "inbound|")):
        return True
    return any(
        get(item, k) is not None
        for k in (
            "connect_timeout",
            "eds_cluster_config",
            "load_assignment",
            "transport_socket_matches",
            "lb_policy",
        )
    )


def _looks_like_listener(item: JSON) -> bool:
    return any(
        get(item, k) is not None
        for k in ("address", "filter_chains", "listener_filters", "traffic_direction")
    )


def _add_document(out: Sections, doc: Any, what: str) -> None:
    if isinstance(doc, list):
        for item in doc:
            if not isinstance(item, dict):
                raise InputError(
                    f"{what}: expected a list of Envoy clusters or listeners, found {type(item).__name__}"
                )
            if _looks_like_listener(item):
                out.seen.add("listeners")
                out.listeners.append(item)
            elif _looks_like_cluster(item):
                out.seen.add("clusters")
                out.clusters.append(item)
            else:
                raise InputError(
                    f"{what}: list item {text(item, 'name')!r} is neither an Envoy cluster nor a listener"
                )
        return
    if not isinstance(doc, dict):
        raise InputError(f"{what}: expected a JSON object or array, found {type(doc).__name__}")
    configs = doc.get("configs")
    if isinstance(configs, dict):  # very old admin API: a map keyed by section name
        configs = list(configs.values())
    if isinstance(configs, list):
        for section in configs:
            _add_section(out, section)
        return
    if not _add_section(out, doc):
        raise InputError(
            f"{what}: not an Envoy config dump (expected 'configs', a *ConfigDump object, "
            "or the JSON array printed by 'istioctl proxy-config cluster|listener -o json')"
        )


def _add_section(out: Sections, section: Any) -> bool:
    if not isinstance(section, dict):
        return False
    kind = type_name(section)
    if kind == "BootstrapConfigDump" or (not kind and get(section, "bootstrap") is not None):
        out.bootstrap = obj(section, "bootstrap")
        out.seen.add("bootstrap")
    elif kind == "ClustersConfigDump" or (
        not kind and any(get(section, k) is not None for k in CLUSTER_KEYS)
    ):
        _add_clusters(out, section)
    elif kind == "ListenersConfigDump" or (
        not kind and any(get(section, k) is not None for k in LISTENER_KEYS)
    ):
        _add_listeners(out, section)
    elif kind == "SecretsConfigDump" or (not kind and any(get(section, k) is not None for k in SECRET_KEYS)):
        _add_secrets(out, section)
    elif kind == "EndpointsConfigDump":
        _add_endpoints(out, section)
    else:
        # routes, scoped routes, ECDS: known (typed), not needed for mTLS; untyped: not a dump
        return bool(kind)
    return True


def split(documents: list[tuple[str, Any]]) -> Sections:
    """Merge one or more parsed documents (label, JSON) describing the same proxy."""
    out = Sections()
    for what, doc in documents:
        _add_document(out, doc, what)
    return out
