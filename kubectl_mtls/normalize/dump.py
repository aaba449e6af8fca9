"""Split whatever the user or istioctl gave us into config-dump sections.

Accepted shapes (both key casings):
* `istioctl proxy-config all -o json` / admin `/config_dump`: `{"configs": [{"@type": ...ConfigDump}, ...]}`
* one `*ConfigDump` object (e.g. `istioctl proxy-config secret -o json`)
* `istioctl proxy-config cluster|listener -o json`: a JSON array of Cluster or Listener objects
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import InputError
from .keys import JSON, camel, items, obj, text, type_name
from .keys import field as get

SECRET_KEYS = ("dynamic_active_secrets", "dynamic_warming_secrets", "static_secrets")
# The only Cluster fields the model reads; the rest (circuit breakers, LB, ...) is dropped on arrival
# so thousands of clusters do not stay in memory whole.
CLUSTER_FIELDS = ("name", "transport_socket", "transport_socket_matches", "metadata", "load_assignment", "tls_context")
CLUSTER_KEYS = ("dynamic_active_clusters", "static_clusters", "dynamic_warming_clusters")
# `dynamic_active_listeners`: Envoy < 1.13 (Istio <= 1.4), a list of {version_info, listener, last_updated}
LISTENER_KEYS = ("dynamic_listeners", "static_listeners", "dynamic_active_listeners")


@dataclass
class Sections:
    """The parts of one proxy's config that the model is built from."""

    bootstrap: JSON | None = None
    clusters: list[JSON] = field(default_factory=list)
    warming_clusters: list[str] = field(default_factory=list)
    listeners: list[JSON] = field(default_factory=list)
    listener_errors: list[str] = field(default_factory=list)
    # resources Envoy rejected (`error_state`): {type, name, error, last_update_attempt, version_info, active}
    rejected: list[JSON] = field(default_factory=list)
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
            _add_rejected(out, "cluster", entry, bool(cluster) and key != "dynamic_warming_clusters")
            if not cluster:
                continue
            if key == "dynamic_warming_clusters":
                out.warming_clusters.append(text(cluster, "name"))
            else:
                out.clusters.append(_trim(cluster))


# each of CLUSTER_FIELDS in both casings, in the order _trim keeps them
_CLUSTER_KEYS_KEPT = tuple(key for name in CLUSTER_FIELDS for key in dict.fromkeys((name, camel(name))))


def _trim(cluster: JSON) -> JSON:
    return {key: cluster[key] for key in _CLUSTER_KEYS_KEPT if key in cluster}


def _add_listeners(out: Sections, dump: JSON) -> None:
    out.seen.add("listeners")
    # Every listener of this section is kept here; the fast path below skips a sidecar's outbound ones.
    for entry in items(dump, "static_listeners") + items(dump, "dynamic_active_listeners"):
        listener = obj(entry, "listener")
        if listener:
            out.listeners.append(listener)
    for entry in items(dump, "dynamic_listeners"):
        active = obj(entry, "active_state", "listener")
        if active:
            out.listeners.append(active)
        rejected = _add_rejected(out, "listener", entry, bool(active))
        if rejected is not None:
            out.listener_errors.append(f"listener {rejected['name']}: {rejected['error']}")


def _add_rejected(out: Sections, kind: str, entry: JSON, active: bool) -> JSON | None:
    """A DynamicListener's / DynamicCluster's `error_state` (UpdateFailureState): Envoy rejected the
    resource and says why in `details`. Envoy may list one failure twice, once without a name: the
    name is then the failed configuration's own."""
    error = obj(entry, "error_state")
    if not error:
        return None
    name = text(entry, "name") or text(obj(error, "failed_configuration"), "name")
    detail = " ".join((text(error, "details") or "rejected, no details").split())
    found = {
        "type": kind,
        "name": name,
        "error": detail,
        "last_update_attempt": text(error, "last_update_attempt") or None,
        "version_info": text(error, "version_info") or None,
        "active": active,  # an earlier version of it still serves
    }
    for seen in out.rejected:
        if (seen["type"], seen["name"], seen["error"]) == (kind, name, detail):
            seen["active"] = seen["active"] or active
            seen["last_update_attempt"] = seen["last_update_attempt"] or found["last_update_attempt"]
            return None
    out.rejected.append(found)
    return found


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
    return any(get(item, k) is not None for k in ("address", "filter_chains", "listener_filters", "traffic_direction"))


def _add_document(out: Sections, doc: Any, what: str) -> None:
    if isinstance(doc, list):
        for item in doc:
            if not isinstance(item, dict):
                raise InputError(f"{what}: expected a list of Envoy clusters or listeners, found {type(item).__name__}")
            if _looks_like_listener(item):
                out.seen.add("listeners")
                out.listeners.append(item)
            elif _looks_like_cluster(item):
                out.seen.add("clusters")
                out.clusters.append(_trim(item))
            else:
                raise InputError(f"{what}: list item {text(item, 'name')!r} is neither an Envoy cluster nor a listener")
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
    elif kind == "ClustersConfigDump" or (not kind and any(get(section, k) is not None for k in CLUSTER_KEYS)):
        _add_clusters(out, section)
    elif kind == "ListenersConfigDump" or (not kind and any(get(section, k) is not None for k in LISTENER_KEYS)):
        _add_listeners(out, section)
    elif kind == "SecretsConfigDump" or (not kind and any(get(section, k) is not None for k in SECRET_KEYS)):
        _add_secrets(out, section)
    elif kind == "EndpointsConfigDump":
        _add_endpoints(out, section)
    else:
        # routes, scoped routes, ECDS: known (typed), not needed for mTLS; untyped: not a dump
        return bool(kind)
    return True


def split(documents: list[tuple[str, bytes]]) -> Sections:
    """Merge one or more raw documents (label, JSON bytes) describing the same proxy."""
    out = Sections()
    for what, raw in documents:
        if not _split_pretty(out, raw):
            _add_document(out, _parse(raw, what), what)
    return out


def _parse(raw: bytes | memoryview, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        head = bytes(raw[:60]).decode(errors="replace").strip()
        raise InputError(f"{what}: not valid JSON ({exc}); it starts with {head!r}") from None


# -- fast path ---------------------------------------------------------------------------------------
# Envoy's admin (and so `istioctl proxy-config all`) pretty-prints with one space per level and never
# puts a raw newline inside a string, so every line break is structure. That lets us cut the dump
# into sections and the sections into list items by indentation, and parse only what the model
# reads: outbound listeners and routes, most of a big dump, are never turned into Python objects.
# Anything not in exactly that shape goes through the plain full parse instead.
_SECTION = b'\n  {\n   "@type": "type.googleapis.com/envoy.admin.v3.'
_SECTION_NAME = re.compile(rb'(\w+)"')
# A list of the section and its first item: `\n   "name": [\n    {`. Its items are then found by their
# ends (`\n    }`), each followed by the next (`,\n    {`) or the list's end (`\n   ]`).
_LIST_START = re.compile(rb'\n   "(\w+)": \[\n    \{')
_ITEM_END = b"\n    }"
_NEXT_ITEM = b",\n    {"
_LIST_END = b"\n   ]"
_SKIPPED = (b"RoutesConfigDump", b"ScopedRoutesConfigDump", b"EcdsConfigDump")
# Cut into items only where items are skipped: every cluster and endpoint is read, so those sections are
# parsed whole (cutting them cost more than parsing).
_ITEMIZED = {b"ListenersConfigDump": ("static_listeners", "dynamic_listeners")}


def _router(out: Sections) -> bool:
    """A gateway (node id `router~...`, its bootstrap comes first in the dump): its servers are listeners
    that are not `INBOUND`, so every listener is kept."""
    return text(obj(out.bootstrap or {}, "node"), "id").startswith("router~")


def _inbound_or_failed(raw: bytes, start: int, end: int) -> bool:
    """Would the model read this listener? (cheap byte test before parsing it)"""
    return any(raw.find(marker, start, end) >= 0 for marker in (b'"virtualInbound"', b'"INBOUND"', b'"error_state"'))


def _section_marks(raw: bytes, skipped: tuple[int, int] | None = None) -> list[tuple[int, bytes]]:
    """(offset, type name) of every section: found with bytes.find, as a regex scan of the whole dump
    cost more than parsing the parts that are kept. A remembered catalogue (`skipped`, most of a
    sidecar's dump) is not searched: see _remembered_catalogue."""
    marks = []
    at = raw.find(_SECTION)
    while at >= 0:
        name = _SECTION_NAME.match(raw, at + len(_SECTION))
        if name is not None:
            marks.append((at, name.group(1)))
        if skipped is not None and at + 1 <= skipped[0]:
            at = raw.find(_SECTION, at + 1, skipped[0])
            if at < 0:
                at, skipped = raw.find(_SECTION, skipped[1]), None
        else:
            at = raw.find(_SECTION, at + 1)
    return marks


def _split_pretty(out: Sections, raw: bytes) -> bool:
    if not raw.startswith(b'{\n "configs": [\n  {'):
        return False
    catalogue = _remembered_catalogue(raw)
    marks = _section_marks(raw, catalogue)
    end_of_list = raw.rfind(b"\n ]")
    if not marks or end_of_list < 0:
        return False
    view = memoryview(raw)
    try:
        for index, (at, kind) in enumerate(marks):
            start = at + 1
            stop = marks[index + 1][0] if index + 1 < len(marks) else end_of_list
            if kind in _SKIPPED:
                continue
            if kind == b"BootstrapConfigDump" and _add_bootstrap_node(out, raw, start, stop, catalogue):
                continue
            if kind not in _ITEMIZED:
                body = bytes(view[start:stop]).rstrip().rstrip(b",")
                _add_section(out, orjson.loads(body))
                continue
            _add_itemized(out, raw, view, kind, start, stop)
    except (orjson.JSONDecodeError, ValueError):
        out.__init__()  # type: ignore[misc]  # start over with the full parse
        return False
    return True


_NODE = re.compile(rb'\n    "node": \{\n')
_NODE_END = b"\n    }"
_NODE_EXTENSIONS = b'\n     "extensions": [\n'
_NODE_EXTENSIONS_END = b"\n     ]"
# The node's `extensions` is Envoy's catalogue of its built-in extensions, byte for byte the same in
# every sidecar of one Envoy build. Finding its end is a scan of ~100 KB at about 1 GB/s (spaces, which
# every structural line starts with, defeat bytes.find's skips); the last few catalogues scanned are
# compared instead. Only a catalogue the scan accepted is kept, so a match answers exactly as the scan
# would. Bounded; thread-safe as a whole tuple is swapped in; losing an entry to a race costs one scan.
_CATALOGUES_KEPT = 4
_catalogues: tuple[bytes, ...] = ()


def _add_bootstrap_node(
    out: Sections, raw: bytes, start: int, stop: int, remembered: tuple[int, int] | None = None
) -> bool:
    """The bootstrap's `node`, the only part the model reads, without the node's `extensions` (Envoy's
    catalogue of its built-in extensions): those two are most of a sidecar dump's bytes, and parsing
    them cost more than everything the model does read. The node ends at its first `\n    }` line
    and the catalogue at its first `\n     ]` line; any other order is not Envoy's shape."""
    found = _NODE.search(raw, start, stop)
    if found is None:
        return False
    opened = found.end() - 2  # the node's `{`
    extensions = raw.find(_NODE_EXTENSIONS, found.end() - 1, stop)
    if extensions < 0 or raw.find(_NODE_END, found.end(), extensions) >= 0:  # no catalogue in the node
        close = raw.find(_NODE_END, found.end(), stop)
        if close < 0:
            return False
        text = raw[opened : close + len(_NODE_END)]
    else:
        body = extensions + len(_NODE_EXTENSIONS) - 1  # from the newline after `[`
        end = _catalogue_end(raw, body, stop, remembered)
        if end < 0:
            return False
        close = raw.find(_NODE_END, end + len(_NODE_EXTENSIONS_END), stop)
        if close < 0:
            return False
        # `"extensions": [` ... `]` becomes `"extensions": []`
        text = raw[opened:body] + b"]" + raw[end + len(_NODE_EXTENSIONS_END) : close + len(_NODE_END)]
    node = orjson.loads(text)
    section = {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": {"node": node}}
    return _add_section(out, section)


_CATALOGUE_WITHIN = 64 * 1024  # of a dump's start: the node's own fields come before it
_NODE_END_OR_EXTENSIONS = re.compile(rb'\n    }|\n     "extensions": \[\n')


def _remembered_catalogue(raw: bytes) -> tuple[int, int] | None:
    """(start, end) of a remembered catalogue near the start of a dump, if there is one. Scanning for
    sections may skip it whether or not it is where the node's catalogue belongs: no section begins in
    a remembered catalogue (each was found inside one section), nor runs over its edges (the `": [`
    before it and the `\n     ]` after it are not part of a section's first line). Looked for up to
    the first `\n    }` (in Envoy's layout, the node's end), so a node without one costs little."""
    known = _catalogues
    if not known:
        return None
    found = _NODE_END_OR_EXTENSIONS.search(raw, 0, _CATALOGUE_WITHIN)
    if found is None or found.end() - found.start() != len(_NODE_EXTENSIONS):
        return None
    body = found.end() - 1
    for catalogue in known:
        end = body + len(catalogue)
        if raw.startswith(catalogue, body) and raw.startswith(_NODE_EXTENSIONS_END, end):
            return body, end
    return None


def _catalogue_end(raw: bytes, body: int, stop: int, remembered: tuple[int, int] | None = None) -> int:
    """Where the `\n     ]` closing the catalogue begins, if no `\n    }` (the node's end) comes first;
    else -1. Neither can begin inside the other or straddle the catalogue's end: each has its only
    newline first, where the other has a space or a bracket. `remembered`: what _remembered_catalogue
    found in this dump, so as not to compare it twice."""
    global _catalogues
    if remembered is not None and remembered[0] == body and remembered[1] + len(_NODE_EXTENSIONS_END) <= stop:
        return remembered[1]
    known = _catalogues
    for catalogue in known:
        end = body + len(catalogue)
        if raw.startswith(catalogue, body) and raw.startswith(_NODE_EXTENSIONS_END, end, stop):
            return end
    end = raw.find(_NODE_EXTENSIONS_END, body, stop)
    if end < 0 or raw.find(_NODE_END, body, end) >= 0:
        return -1
    _catalogues = (raw[body:end], *known[: _CATALOGUES_KEPT - 1])
    return end


def _add_itemized(out: Sections, raw: bytes, view: memoryview, kind: bytes, start: int, stop: int) -> None:
    """The items of a section's lists that the model reads. Only the lines that end items and lists
    are looked for (bytes.find, not a regex scan of every line); anything around them not in Envoy's
    layout is a ValueError: the full parse. An item that is kept must parse as one object, so a cut in
    the wrong place is never read as a listener; one that is skipped holds none of the words the model
    reads a listener for."""
    router = _router(out)
    items_by_key: dict[str, list[Any]] = {}
    at = start
    while (found := _LIST_START.search(raw, at, stop)) is not None:
        owner = found.group(1).decode()
        if owner not in _ITEMIZED[kind]:
            raise ValueError(f"unexpected list {owner}")
        opened = found.end() - 1
        while True:
            end = raw.find(_ITEM_END, opened, stop) + len(_ITEM_END)
            if end < len(_ITEM_END):
                raise ValueError("unended item")
            if owner != "dynamic_listeners" or router or _inbound_or_failed(raw, opened, end):
                items_by_key.setdefault(owner, []).append(orjson.loads(view[opened:end]))
            if raw.startswith(_NEXT_ITEM, end, stop):
                opened = end + len(_NEXT_ITEM) - 1
            elif raw.startswith(_LIST_END, end, stop):
                at = end + len(_LIST_END)
                break
            else:
                raise ValueError("not Envoy's layout")
    _add_section(out, {"@type": f"type.googleapis.com/envoy.admin.v3.{kind.decode()}", **items_by_key})
