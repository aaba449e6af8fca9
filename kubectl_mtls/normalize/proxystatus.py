"""Parse `istioctl proxy-status` output, in every format istioctl has printed, into per-proxy sync state.

Formats (see ISTIO-RULES.md §1.4; istio/istio istioctl/pkg/writer/pilot/status.go):

* <= 1.26 table ``NAME CLUSTER CDS LDS EDS RDS ECDS ISTIOD VERSION``, cells ``SYNCED``, ``STALE``,
  ``NOT SENT``, ``ERROR``, ``IGNORED``, possibly with an age ``SYNCED (2m)`` or a note
  ``STALE (Never Acknowledged)``;
* 1.27+ default table ``NAME CLUSTER ISTIOD VERSION SUBSCRIBED TYPES`` (no per-type state at all);
* 1.27+ ``-v 1`` table: per-type columns again, sorted by type URL (``CDS ECDS EDS LDS RDS``);
* ``-o json`` (1.30+): one jsonpb ``DiscoveryResponse`` per istiod, printed back to back, and ``-o yaml``.

Pure: text in, dataclasses out. Nothing here runs istioctl or reads files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["ProxySync", "parse"]

# Short names istioctl prints for xDS type URLs (istio/istio pilot/pkg/model GetShortType).
TYPE_NAMES = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": "CDS",
    "type.googleapis.com/envoy.config.listener.v3.Listener": "LDS",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "EDS",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": "RDS",
    "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration": "SRDS",
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig": "ECDS",
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret": "SDS",
    "type.googleapis.com/istio.workload.Address": "WDS",
    "type.googleapis.com/istio.security.Authorization": "WADS",
}

# Legacy ClientConfig.xdsConfig (PerXdsConfig) names the type by which field is set.
_LEGACY_FIELDS = {
    "listenerConfig": "LDS",
    "clusterConfig": "CDS",
    "routeConfig": "RDS",
    "scopedRouteConfig": "SRDS",
    "endpointConfig": "EDS",
}

# envoy.service.status.v3.ConfigStatus -> the word the tables print. UNKNOWN is what istiod reports for
# a type the proxy never subscribed to; istioctl's table shows it as IGNORED.
_STATUS_WORDS = {
    "SYNCED": "SYNCED",
    "STALE": "STALE",
    "NOT_SENT": "NOT SENT",
    "NOT SENT": "NOT SENT",
    "ERROR": "ERROR",
    "UNKNOWN": "IGNORED",
    "IGNORED": "IGNORED",
}

# Worst first wins. IGNORED is deliberately absent: a type the proxy does not use says nothing about sync.
_RANK = {"SYNCED": 0, "NOT SENT": 1, "STALE": 2, "ERROR": 3}

_RESPONSE_KEYS = {"resources", "controlPlane", "versionInfo", "typeUrl", "nonce"}
_CLIENT_CONFIG = "type.googleapis.com/envoy.service.status.v3.ClientConfig"

# Table columns that are not xDS types. PILOT is the pre-1.6 name of ISTIOD.
_NAME_COLUMNS = {"NAME", "CLUSTER", "ISTIOD", "PILOT", "VERSION", "SUBSCRIBED TYPES"}
_TYPE_COLUMN = re.compile(r"^[A-Z]{1,4}DS$")  # CDS, ECDS, WADS...: any future xDS short name
# Go's tabwriter pads columns with >= 1 space (istioctl uses 5); header cells themselves may contain
# one space ("SUBSCRIBED TYPES"), so a header cell is words joined by single spaces.
_HEADER_CELL = re.compile(r"\S+(?: \S+)*")
_SUFFIX = re.compile(r"\s*\(.*\)\s*$")  # " (5m)", " (Never Acknowledged)"
_SUBSCRIBED = re.compile(r"^\d+\s*(?:\((?P<types>[^)]*)\))?$")
# Top-level keys of a DiscoveryResponse in YAML: how `-o yaml` output starts.
_YAML_START = re.compile(r"^(?:versionInfo|resources|typeUrl|controlPlane|nonce|canary)\s*:")
_YAML_TOP_KEY = re.compile(r"^(['\"]?)([A-Za-z@][^:'\"]*)\1\s*:(?:\s|$)")


@dataclass
class ProxySync:
    """Sync state of one proxy as istiod reports it."""

    pod: str
    namespace: str
    istiod: str | None
    version: str | None
    # "CDS"/"LDS"/"EDS"/"RDS"/"ECDS"... -> SYNCED | STALE | NOT SENT | ERROR | IGNORED (age stripped);
    # empty when the format has no per-type state (the 1.27+ default table).
    types: dict[str, str] = field(default_factory=dict)
    subscribed: list[str] = field(default_factory=list)  # 1.27+ SUBSCRIBED TYPES, when shown
    error: str | None = None  # NACK detail (JSON/YAML errorState), "LDS: <details>"

    @property
    def state(self) -> str:
        """Worst per-type state: ERROR > STALE > NOT SENT > SYNCED; UNKNOWN when there is none."""
        worst, rank = "UNKNOWN", -1
        for state in self.types.values():  # the first of the worst, as max() would pick it
            if _RANK.get(state, -1) > rank:
                worst, rank = state, _RANK[state]
        return worst


def parse(text: str) -> dict[tuple[str, str], ProxySync]:
    """Parse any `istioctl proxy-status` output; keys are ``(namespace, pod)``.

    A header-only table means "no proxies" and gives ``{}``. Empty output is *not* taken as "no
    proxies": istioctl prints at least a header, so emptiness means something failed upstream.
    """
    body = text.lstrip("\ufeff").strip()
    first = body.splitlines()[0] if body else ""
    if body.startswith(("{", "[")):
        return _from_documents(_json_documents(body), first)
    if first.startswith("NAME"):
        return _from_table(body, first)
    if first.startswith("---") or _YAML_START.match(first):
        return _from_documents(_yaml_documents(body), first)
    raise _unrecognized(first)


def _unrecognized(first: str) -> ValueError:
    return ValueError(f"unrecognized istioctl proxy-status output: {first.strip()[:120] or '(empty)'}")


# ------------------------------------------------------------------------------------------------
# tables


def _from_table(body: str, header: str) -> dict[tuple[str, str], ProxySync]:
    columns = [(m.group(0), m.start()) for m in _HEADER_CELL.finditer(header)]
    names = [name for name, _ in columns]
    if names[0] != "NAME" or not _NAME_COLUMNS.intersection(names[1:]):
        raise _unrecognized(header)
    starts = [start for _, start in columns]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))  # None: to the end of the line
    # Where each column's cell is (a name given twice: its last cell, as a dict of the row would keep),
    # and which columns are xDS types: the header's business, decided once rather than on every row.
    at = {name: index for index, name in enumerate(names)}
    type_columns = [(name, i) for name, i in at.items() if name not in _NAME_COLUMNS and _TYPE_COLUMN.match(name)]
    subscribed_at = at.get("SUBSCRIBED TYPES")
    words: dict[str, str | None] = {}  # the few cell values of a table, each read once
    out: dict[tuple[str, str], ProxySync] = {}
    for line in body.splitlines()[1:]:
        if not line.strip():
            continue
        cells = _cut(line, bounds, header)
        pod, namespace = _split_name(cells[at["NAME"]], None)
        types: dict[str, str] = {}
        for name, index in type_columns:  # unknown extra columns are ignored, not guessed at
            value = cells[index]
            if value not in words:
                words[value] = _state_word(value)
            word = words[value]
            if word:
                types[name] = word
        subscribed: list[str] = []
        match = _SUBSCRIBED.match(cells[subscribed_at]) if subscribed_at is not None else None
        if match and match.group("types"):
            subscribed = [t.strip() for t in match.group("types").split(",") if t.strip()]
        istiod = cells[at["ISTIOD"]] if "ISTIOD" in at else ""
        pilot = cells[at["PILOT"]] if "PILOT" in at else ""
        version = cells[at["VERSION"]] if "VERSION" in at else ""
        out[(namespace, pod)] = ProxySync(
            pod=pod,
            namespace=namespace,
            istiod=istiod or pilot or None,
            version=version or None,
            types=types,
            subscribed=subscribed,
        )
    return out


def _cut(line: str, bounds: list[tuple[int, int | None]], header: str) -> list[str]:
    """Cells of one tabwriter row, by the header's column offsets (start, and the next column's start).

    Cells may contain spaces ("NOT SENT", "SYNCED (2m)"), so whitespace splitting is wrong. Tabwriter
    aligns every row on the same offsets; if a non-space character sits right before a column start the
    alignment assumption is broken, and we refuse rather than return shifted columns.
    """
    cells: list[str] = []
    size = len(line)
    for start, end in bounds:
        if 0 < start < size and not line[start - 1].isspace():
            raise ValueError(
                f"istioctl proxy-status table is not column-aligned at offset {start} (header {header.strip()!r}): "
                f"{line.strip()[:120]}"
            )
        cells.append(line[start:end].strip())
    return cells


def _state_word(cell: str) -> str | None:
    """Cell -> state word: "SYNCED (2m)" -> "SYNCED", "NOT_SENT" -> "NOT SENT", "" or "-" -> None."""
    word = _SUFFIX.sub("", cell).strip().upper()
    if not word or word == "-":
        return None
    return _STATUS_WORDS.get(word, word)


def _split_name(name: str, namespace: str | None) -> tuple[str, str]:
    """``<pod>.<namespace>`` -> (pod, namespace).

    Namespaces cannot contain dots (DNS labels) but pod names can, so the namespace is the part after the
    *last* dot. A full node id (``sidecar~ip~pod.ns~domain``) is reduced to its third field first. The
    upstream golden files use bare names like ``proxy1``: those get namespace ``""`` unless the node
    metadata names one.
    """
    if "~" in name:
        parts = name.split("~")
        if len(parts) >= 3:
            name = parts[2]
    if namespace:
        suffix = "." + namespace
        return (name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else name), namespace
    if "." in name:
        pod, _, ns = name.rpartition(".")
        if pod and ns:
            return pod, ns
    return name, ""


# ------------------------------------------------------------------------------------------------
# JSON / YAML (DiscoveryResponse documents)


def _json_documents(body: str) -> Iterator[Any]:
    """Every JSON document in ``body``: istioctl prints one per istiod, concatenated without a separator."""
    try:
        yield orjson.loads(body)  # the common case, one istiod: one fast parse
        return
    except orjson.JSONDecodeError:
        pass
    # orjson has no streaming API; the stdlib decoder's raw_decode reports where each document ends.
    decoder = json.JSONDecoder()
    pos, end = 0, len(body)
    while pos < end:
        while pos < end and body[pos].isspace():
            pos += 1
        if pos >= end:
            break
        try:
            doc, pos = decoder.raw_decode(body, pos)
        except json.JSONDecodeError as exc:
            raise ValueError(f"istioctl proxy-status JSON is not valid at offset {exc.pos}: {exc.msg}") from None
        yield doc


def _yaml_documents(body: str) -> Iterator[Any]:
    """YAML documents; split at ``---`` and also where a top-level key repeats.

    Concatenated per-istiod YAML may come without ``---``; PyYAML would then silently keep only the last
    value of each repeated key and lose every istiod but one.
    """
    import yaml  # only this path needs it (~40 ms import)

    chunks: list[list[str]] = [[]]
    seen: set[str] = set()
    for line in body.splitlines():
        if line.startswith("---"):
            chunks.append([])
            seen = set()
            continue
        match = _YAML_TOP_KEY.match(line)
        if match:
            key = match.group(2).strip()
            if key in seen:
                chunks.append([])
                seen = set()
            seen.add(key)
        chunks[-1].append(line)
    for chunk in chunks:
        if not any(line.strip() for line in chunk):
            continue
        try:
            yield yaml.safe_load("\n".join(chunk))
        except yaml.YAMLError as exc:
            raise ValueError(f"istioctl proxy-status YAML is not valid: {exc}") from None


def _from_documents(docs: Iterator[Any], first: str) -> dict[tuple[str, str], ProxySync]:
    out: dict[tuple[str, str], ProxySync] = {}
    for doc in docs:
        responses = doc if isinstance(doc, list) else [doc]
        for response in responses:
            # `{}` is a valid (empty) jsonpb DiscoveryResponse: an istiod without proxies.
            if not isinstance(response, dict) or (response and not _RESPONSE_KEYS & response.keys()):
                raise _unrecognized(first)
            istiod = _istiod_id(response.get("controlPlane"))
            for resource in response.get("resources") or []:
                sync = _client_config(resource, istiod)
                if sync is not None:
                    # A proxy is connected to one istiod; if it shows twice, the later document wins.
                    out[(sync.namespace, sync.pod)] = sync
    return out


def _istiod_id(control_plane: Any) -> str | None:
    """``controlPlane.identifier`` is JSON *inside a string*: ``{"Component":"istiod","ID":"istiod-abc",...}``."""
    if not isinstance(control_plane, dict):
        return None
    ident = control_plane.get("identifier")
    if not isinstance(ident, str) or not ident:
        return None
    try:
        parsed = orjson.loads(ident)
    except orjson.JSONDecodeError:
        return ident  # not JSON: the identifier itself is the best name we have
    value = parsed.get("ID") if isinstance(parsed, dict) else None
    return str(value) if value else None


def _client_config(resource: Any, istiod: str | None) -> ProxySync | None:
    if not isinstance(resource, dict):
        return None
    kind = resource.get("@type")
    if kind is not None and kind != _CLIENT_CONFIG:
        return None
    node = _obj(resource.get("node"))
    node_id = _text(node.get("id"))
    if not node_id:
        return None
    meta = _obj(node.get("metadata"))
    pod, namespace = _split_name(node_id, _text(meta.get("NAMESPACE")) or None)

    types: dict[str, str] = {}
    errors: list[str] = []
    for cfg in resource.get("genericXdsConfigs") or []:
        if not isinstance(cfg, dict):
            continue
        url = _text(cfg.get("typeUrl"))
        short = TYPE_NAMES.get(url) or url.rsplit("/", 1)[-1] or "?"
        # jsonpb omits enum zero values, so a missing configStatus is UNKNOWN (-> IGNORED).
        word = _STATUS_WORDS.get(_text(cfg.get("configStatus")) or "UNKNOWN", "IGNORED")
        if _text(cfg.get("clientStatus")) in ("CLIENT_NACKED", "CLIENT_RECEIVED_ERROR"):
            word = "ERROR"  # the proxy itself says it rejected the config
        types[short] = word
        state = cfg.get("errorState")
        if isinstance(state, dict):
            detail = _text(state.get("details"))
            if detail:
                errors.append(f"{short}: {detail}")
    for cfg in resource.get("xdsConfig") or []:  # pre-genericXdsConfigs istiod
        if not isinstance(cfg, dict):
            continue
        legacy = next((name for key, name in _LEGACY_FIELDS.items() if key in cfg), None)
        if legacy and legacy not in types:
            types[legacy] = _STATUS_WORDS.get(_text(cfg.get("status")) or "UNKNOWN", "IGNORED")

    return ProxySync(
        pod=pod,
        namespace=namespace,
        istiod=istiod,
        version=_text(meta.get("ISTIO_VERSION")) or None,
        types=types,
        subscribed=[],
        error="; ".join(errors) or None,
    )


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    """A scalar as text; YAML may turn an unquoted version like 1.20 into a float."""
    if value is None or isinstance(value, (dict, list)):
        return ""
    return str(value)
