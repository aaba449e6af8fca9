"""An ``istioctl`` test double that prints what a real istioctl prints.

Run it as ``python tests/harness/istioctl_double.py ARGS`` or install an executable named
``istioctl`` with :func:`install` and put its directory first on ``PATH``.

Configuration
-------------
``ISTIOCTL_DOUBLE_MAP``  JSON mapping file (read on every call, so tests may rewrite it):

* ``{"<pod>.<ns>": {"admin": "http://127.0.0.1:PORT"}}`` - ask a live Envoy admin, with the
  same paths istioctl uses (``config_dump?include_eds=true`` for ``all``,
  ``config_dump?mask=dynamic_active_clusters,static_clusters`` for ``cluster``,
  ``?mask=dynamic_listeners,static_listeners`` for ``listener``, ``?mask=dynamic_active_secrets``
  for ``secret``, ``clusters?format=json`` for ``endpoint``).
* ``{"dump": "/path/raw_config_dump.json"}`` - a saved ``/config_dump`` (relative paths are
  resolved against the mapping file's folder). The admin field mask is emulated, so ``pc secret``
  shows only ``dynamicActiveSecrets`` exactly as on a live pod. ``"clusters": "/path"`` optionally
  gives a saved ``/clusters?format=json`` for ``pc endpoint``.
* ``{"fail": "<stderr text>", "exit": 1}`` - print the text on stderr, exit with ``exit`` (default 1).
* ``{"hang": true}`` - log the call, then sleep until killed (timeout tests).
* ``{"garbage": "<text>"}`` - print the text on stdout unchanged and exit 0.
* optional per entry: ``"delay": <seconds>`` before answering; ``"commands": {"secret": {...}}``
  overrides the entry for one ``pc`` subcommand; ``"unknown_any": "error" | "rename"`` (see below);
  ``"unknown_fields": "error" | "discard"`` (default ``error``: a dump field unknown to xds-protos is a
  harness bug; ``discard`` behaves like istioctl, which silently drops unknown fields).
* top-level ``"__proxy_status__": "<text>"`` is printed by ``proxy-status`` (default: the 1.27+
  header-only table), ``"__version__"`` overrides the client version (default ``1.28.0``).

* ``{"ztunnel": "/path/dump.json"}`` - the pod is a ztunnel: ``ztunnel-config all <pod>.<ns> -o json``
  prints that file (a ztunnel ``/config_dump`` in istioctl's shape, see harness/ztunnel.py) unchanged.
  ``fail``/``hang``/``garbage`` work as for proxy-config; a mapped pod without ``ztunnel`` is refused
  as istioctl refuses a non-ztunnel pod.

``ISTIOCTL_DOUBLE_LOG``  if set, every call appends one line ``{"argv": [...]}`` (arguments after the
program name) to this file before doing anything else.

Commands
--------
``proxy-config|pc all|cluster|listener|secret|endpoint <pod>[.<ns>] [-n NS] -o json`` (aliases
``a``, ``clusters/c``, ``listeners/l``, ``secrets/s``, ``endpoints/ep``), ``--file/-f DUMP`` instead of a
pod, cluster filters ``--fqdn --direction --subset --port``, listener filters ``--address --port
--type``, endpoint filters ``--address --port --cluster --status``; ``proxy-status|ps``;
``version`` (prints ``client version: 1.28.0``). Global flags ``--context``, ``--kubeconfig/-c``,
``--istioNamespace/-i``, ``--namespace/-n`` are accepted anywhere (``--flag value`` or
``--flag=value``); only the namespace has an effect. Unknown flags fail like cobra
(``Error: unknown flag: --x``). ``-o short`` (the summary tables) and ``-o yaml`` are not emulated and
fail with exit 2 and a message naming the double.

Output shapes (as istioctl 1.2x prints them)
--------------------------------------------
* ``all``: the admin bytes unchanged plus the newline of Go's ``fmt.Fprintln``.
* ``cluster``/``listener``/``endpoint``: ``json.MarshalIndent`` (4 spaces) of a slice of messages
  each rendered by legacy ``jsonpb`` - camelCase, fields in proto declaration order, map and
  ``Struct`` keys sorted and never renamed, int64 as strings, enums by name, Go float formatting, and
  ``<``, ``>``, ``&`` escaped as ``\\u003c``, ``\\u003e``, ``\\u0026``. Clusters are dynamic-active +
  static (never warming) sorted by (fqdn, subset, port, direction) parsed from ``dir|port|subset|fqdn``
  names; listeners are dynamic-active + static in dump order; ``endpoint`` lists the
  ``ClusterStatus`` entries that have at least one host. Errors: ``no clusters found``,
  ``listener dump: config dump has no configuration type ...``, ``no listeners found``.
* ``secret``: the ``SecretsConfigDump`` through ``jsonpb`` with ``Indent: "    "``, reproducing its
  quirks (empty message ``{`` newline newline ``}``, extra indent inside ``Struct``).

Istio-only Any payloads
-----------------------
xds-protos has no ``stats.PluginConfig``, ``envoy.tcp.metadataexchange.config.MetadataExchange`` or
``istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig``. istioctl links these from
``istio.io/api``, so the double registers hand-written descriptors for them (fields as in istio/api;
ALPN in the ``AlpnOverride`` shape pilot emits). ``TypedStruct`` and Wasm are in xds-protos. Any other
type the double cannot resolve is handled like istioctl: loading the dump substitutes an empty
message (so ``all`` and ``secret`` keep working), and marshalling it fails, giving
``Error: json: error calling MarshalJSON for type proto.MessageSlice: proto: not found`` (cluster) or
``Error: failed to marshal listeners: ...`` (listener), exit 1. With ``"unknown_any": "rename"`` the
payload is printed instead with a generic snake->camel key rename (lossy: map/Struct keys inside it are
renamed too) - never used for the upstream-Envoy dumps our harness produces.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import importlib.util
import json
import math
import os
import re
import struct
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

CLIENT_VERSION = "1.28.0"
ENV_MAP = "ISTIOCTL_DOUBLE_MAP"
ENV_LOG = "ISTIOCTL_DOUBLE_LOG"

TYPE_PREFIX = "type.googleapis.com/"
BOOTSTRAP_DUMP = TYPE_PREFIX + "envoy.admin.v3.BootstrapConfigDump"
CLUSTERS_DUMP = TYPE_PREFIX + "envoy.admin.v3.ClustersConfigDump"
LISTENERS_DUMP = TYPE_PREFIX + "envoy.admin.v3.ListenersConfigDump"
SECRETS_DUMP = TYPE_PREFIX + "envoy.admin.v3.SecretsConfigDump"

# Admin paths istioctl requests (istioctl/pkg/proxyconfig/proxyconfig.go).
ADMIN_PATHS = {
    "all": "config_dump?include_eds=true",
    "cluster": "config_dump?mask=dynamic_active_clusters,static_clusters",
    "listener": "config_dump?mask=dynamic_listeners,static_listeners",
    "secret": "config_dump?mask=dynamic_active_secrets",
    "endpoint": "clusters?format=json",
}
MASKS = {
    "cluster": ("dynamic_active_clusters", "static_clusters"),
    "listener": ("dynamic_listeners", "static_listeners"),
    "secret": ("dynamic_active_secrets",),
}
PC_ALIASES = {
    "all": "all",
    "a": "all",
    "cluster": "cluster",
    "clusters": "cluster",
    "c": "cluster",
    "listener": "listener",
    "listeners": "listener",
    "l": "listener",
    "secret": "secret",
    "secrets": "secret",
    "s": "secret",
    "endpoint": "endpoint",
    "endpoints": "endpoint",
    "ep": "endpoint",
}

PROXY_STATUS_HEADER = ("NAME", "CLUSTER", "ISTIOD", "VERSION", "SUBSCRIBED TYPES")


class CommandError(Exception):
    """Ends the command: ``text`` goes to stderr (as given), exit status ``code``."""

    def __init__(self, text: str, code: int = 1) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


def _istioctl_error(message: str) -> CommandError:
    return CommandError(f"Error: {message}\n", 1)


def _unsupported(message: str) -> CommandError:
    return CommandError(f"istioctl-double: {message}\n", 2)


# --------------------------------------------------------------------------------------------------
# Go encoding helpers
# --------------------------------------------------------------------------------------------------

_GO_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')
_GO_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def go_quote(s: str) -> str:
    """A string as Go's ``encoding/json`` writes it (HTML-safe escaping, Go >= 1.22)."""
    if not _GO_NEEDS_ESCAPE.search(s):
        return '"' + s + '"'
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[ch])
        elif code < 0x20 or ch in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")  # Go replaces invalid UTF-8 with U+FFFD
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _shortest_float32(x: float) -> str:
    for precision in range(1, 10):
        text = f"{x:.{precision}g}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == x:
            return text
    return repr(x)


def go_float(x: float, bits: int = 64) -> str:
    """``json.Marshal`` of a float32/float64 (shortest digits, 'f' format unless tiny or huge)."""
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    text = _shortest_float32(x) if bits == 32 else repr(x)
    sign, digit_tuple, exponent = Decimal(text).as_tuple()
    digits = "".join(str(d) for d in digit_tuple).rstrip("0") or "0"
    exponent = int(exponent) + (len(digit_tuple) - len(digits))
    magnitude = abs(x)
    prefix = "-" if sign else ""
    if magnitude < 1e-6 or magnitude >= 1e21:
        exp10 = exponent + len(digits) - 1
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}".replace("e-0", "e-")
    point = len(digits) + exponent
    if exponent >= 0:
        body = digits + "0" * exponent
    elif point > 0:
        body = digits[:point] + "." + digits[point:]
    else:
        body = "0." + "0" * (-point) + digits
    return prefix + body


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')


def go_indent(src: str, indent: str = "    ", prefix: str = "") -> str:
    """Go's ``json.Indent`` (as used by ``json.MarshalIndent``) applied to valid JSON text."""
    out: list[str] = []
    depth = 0
    need_indent = False
    for token in _JSON_TOKEN.findall(src):
        if need_indent and token not in ("]", "}"):
            need_indent = False
            depth += 1
            out.append("\n" + prefix + indent * depth)
        if token in ("{", "["):
            need_indent = True
            out.append(token)
        elif token == ",":
            out.append(",\n" + prefix + indent * depth)
        elif token == ":":
            out.append(": ")
        elif token in ("}", "]"):
            if need_indent:
                need_indent = False
            else:
                depth -= 1
                out.append("\n" + prefix + indent * depth)
            out.append(token)
        else:
            out.append(token)
    return "".join(out)


def go_tabwriter(rows: list[tuple[str, ...]], padding: int = 5) -> str:
    """``text/tabwriter`` with minwidth 0, padding ``padding``, padchar ' ' (last cell unpadded)."""
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i] + padding) for i, cell in enumerate(row[:-1])]
        lines.append("".join(cells) + (row[-1] if row else "") + "\n")
    return "".join(lines)


def _camel(name: str) -> str:
    """protoc's default JSON name: drop '_' and upper-case the next character."""
    out = []
    upper = False
    for ch in name:
        if ch == "_":
            upper = True
        elif upper:
            out.append(ch.upper())
            upper = False
        else:
            out.append(ch)
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# Protobuf registry (imported lazily: ``pc all`` never needs it)
# --------------------------------------------------------------------------------------------------

PLACEHOLDER_NAME = "istioctl_double.internal.UnknownAny"
_SPECIAL_JSON_WKT = {
    "google.protobuf.Any",
    "google.protobuf.Duration",
    "google.protobuf.Timestamp",
    "google.protobuf.FieldMask",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.BoolValue",
    "google.protobuf.BytesValue",
    "google.protobuf.StringValue",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.FloatValue",
    "google.protobuf.DoubleValue",
}
# golang/protobuf jsonpb wellKnownType()
_JSONPB_WKT = {
    "Empty",
    "Any",
    "BoolValue",
    "BytesValue",
    "StringValue",
    "Int32Value",
    "UInt32Value",
    "FloatValue",
    "Int64Value",
    "UInt64Value",
    "DoubleValue",
    "Duration",
    "Timestamp",
    "NullValue",
    "Struct",
    "Value",
    "ListValue",
}
_WRAPPERS = {
    "BoolValue",
    "BytesValue",
    "StringValue",
    "Int32Value",
    "UInt32Value",
    "FloatValue",
    "Int64Value",
    "UInt64Value",
    "DoubleValue",
}


def _jsonpb_wkt(full_name: str) -> str:
    parent, _, name = full_name.rpartition(".")
    if parent == "google.protobuf" and name in _JSONPB_WKT:
        return name
    return ""


class _Registry:
    """Resolves Any type URLs against xds-protos, importing ``*_pb2`` modules package by package."""

    _instance: _Registry | None = None

    def __init__(self) -> None:
        from google.protobuf import (
            any_pb2,
            descriptor_pb2,
            descriptor_pool,
            duration_pb2,
            empty_pb2,
            json_format,
            message_factory,
            struct_pb2,
            timestamp_pb2,
            wrappers_pb2,
        )

        del any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2, wrappers_pb2  # registered
        self.pool = descriptor_pool.Default()
        self.json_format = json_format
        self.message_factory = message_factory
        self.descriptor_pb2 = descriptor_pb2
        self._tried: set[str] = set()
        self._json_names: dict[str, dict[str, Any]] = {}
        self._register_extra_types()

    @classmethod
    def get(cls) -> _Registry:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    # -- registration of types missing from xds-protos -------------------------------------------
    def _add_file(self, fdp: Any) -> None:
        try:
            self.pool.FindFileByName(fdp.name)
        except KeyError:
            self.pool.AddSerializedFile(fdp.SerializeToString())

    def _field(
        self, msg: Any, name: str, number: int, ftype: str, *, repeated: bool = False, type_name: str = ""
    ) -> None:
        fdp = self.descriptor_pb2.FieldDescriptorProto
        field = msg.field.add()
        field.name = name
        field.number = number
        field.json_name = _camel(name)
        field.type = getattr(fdp, "TYPE_" + ftype)
        field.label = fdp.LABEL_REPEATED if repeated else fdp.LABEL_OPTIONAL
        if type_name:
            field.type_name = type_name

    def _register_extra_types(self) -> None:
        d = self.descriptor_pb2
        # Placeholder for Any payloads of unknown type (keeps the original URL and an index).
        f = d.FileDescriptorProto(
            name="istioctl_double/internal.proto", package="istioctl_double.internal", syntax="proto3"
        )
        m = f.message_type.add(name="UnknownAny")
        self._field(m, "type_url", 1, "STRING")
        self._field(m, "index", 2, "INT32")
        self._add_file(f)

        # istio/api envoy/config/filter/network/metadata_exchange/metadata_exchange.proto
        f = d.FileDescriptorProto(
            name="envoy/config/filter/network/metadata_exchange/metadata_exchange.proto",
            package="envoy.tcp.metadataexchange.config",
            syntax="proto3",
        )
        m = f.message_type.add(name="MetadataExchange")
        self._field(m, "protocol", 1, "STRING")
        self._field(m, "enable_discovery", 2, "BOOL")
        self._add_file(f)

        # istio/api envoy/config/filter/http/alpn/v2alpha1/config.proto (shape pilot emits)
        f = d.FileDescriptorProto(
            name="envoy/config/filter/http/alpn/v2alpha1/config.proto",
            package="istio.envoy.config.filter.http.alpn.v2alpha1",
            syntax="proto3",
        )
        m = f.message_type.add(name="FilterConfig")
        e = m.enum_type.add(name="Protocol")
        for i, value in enumerate(("HTTP10", "HTTP11", "HTTP2")):
            e.value.add(name=value, number=i)
        o = m.nested_type.add(name="AlpnOverride")
        self._field(
            o,
            "upstream_protocol",
            1,
            "ENUM",
            type_name=".istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig.Protocol",
        )
        self._field(o, "alpn_override", 2, "STRING", repeated=True)
        self._field(
            m,
            "alpn_override",
            1,
            "MESSAGE",
            repeated=True,
            type_name=".istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig.AlpnOverride",
        )
        self._add_file(f)

        # istio/api envoy/extensions/stats/config.proto
        f = d.FileDescriptorProto(
            name="envoy/extensions/stats/config.proto",
            package="stats",
            syntax="proto3",
            dependency=["google/protobuf/duration.proto"],
        )
        e = f.enum_type.add(name="MetricType")
        for i, value in enumerate(("COUNTER", "GAUGE", "HISTOGRAM")):
            e.value.add(name=value, number=i)
        e = f.enum_type.add(name="Reporter")
        for i, value in enumerate(("UNSPECIFIED", "SERVER_GATEWAY")):
            e.value.add(name=value, number=i)
        m = f.message_type.add(name="MetricConfig")
        entry = m.nested_type.add(name="DimensionsEntry")
        entry.options.map_entry = True
        self._field(entry, "key", 1, "STRING")
        self._field(entry, "value", 2, "STRING")
        self._field(m, "dimensions", 1, "MESSAGE", repeated=True, type_name=".stats.MetricConfig.DimensionsEntry")
        self._field(m, "name", 2, "STRING")
        self._field(m, "tags_to_remove", 3, "STRING", repeated=True)
        self._field(m, "match", 4, "STRING")
        self._field(m, "drop", 5, "BOOL")
        m = f.message_type.add(name="MetricDefinition")
        self._field(m, "name", 1, "STRING")
        self._field(m, "value", 2, "STRING")
        self._field(m, "type", 3, "ENUM", type_name=".stats.MetricType")
        m = f.message_type.add(name="PluginConfig")
        self._field(m, "debug", 1, "BOOL")
        self._field(m, "max_peer_cache_size", 2, "INT32")
        self._field(m, "stat_prefix", 3, "STRING")
        self._field(m, "field_separator", 4, "STRING")
        self._field(m, "value_separator", 5, "STRING")
        self._field(m, "disable_host_header_fallback", 6, "BOOL")
        self._field(m, "tcp_reporting_duration", 7, "MESSAGE", type_name=".google.protobuf.Duration")
        self._field(m, "metrics", 8, "MESSAGE", repeated=True, type_name=".stats.MetricConfig")
        self._field(m, "definitions", 9, "MESSAGE", repeated=True, type_name=".stats.MetricDefinition")
        self._field(m, "reporter", 10, "ENUM", type_name=".stats.Reporter")
        self._field(m, "rotation_interval", 11, "MESSAGE", type_name=".google.protobuf.Duration")
        self._field(m, "graceful_deletion_interval", 12, "MESSAGE", type_name=".google.protobuf.Duration")
        self._add_file(f)

    # -- lookup ----------------------------------------------------------------------------------
    def _import_package(self, package: str) -> bool:
        if package in self._tried:
            return False
        self._tried.add(package)
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            return False
        if spec is None or not spec.submodule_search_locations:
            return False
        found = False
        for location in spec.submodule_search_locations:
            for path in sorted(Path(location).glob("*_pb2.py")):
                with contextlib.suppress(Exception):  # a broken generated module must not stop the rest
                    importlib.import_module(f"{package}.{path.stem}")
                    found = True
        return found

    def find(self, full_name: str) -> Any | None:
        """Message descriptor for ``full_name`` or None."""
        try:
            return self.pool.FindMessageTypeByName(full_name)
        except KeyError:
            pass
        parts = full_name.split(".")
        for end in range(len(parts) - 1, 0, -1):
            if self._import_package(".".join(parts[:end])):
                try:
                    return self.pool.FindMessageTypeByName(full_name)
                except KeyError:
                    continue
        return None

    def message_class(self, descriptor: Any) -> Any:
        return self.message_factory.GetMessageClass(descriptor)

    def json_names(self, descriptor: Any) -> dict[str, Any]:
        names = self._json_names.get(descriptor.full_name)
        if names is None:
            names = {}
            for fd in descriptor.fields:
                names[fd.json_name] = fd
                names[fd.name] = fd
            self._json_names[descriptor.full_name] = names
        return names


def _is_map(fd: Any) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


# --------------------------------------------------------------------------------------------------
# Loading a config dump the way istioctl's Wrapper.UnmarshalJSON does
# --------------------------------------------------------------------------------------------------


class _Loader:
    """Imports the types a dump needs and replaces unknown Any payloads by a placeholder."""

    def __init__(self, registry: _Registry) -> None:
        self.registry = registry
        self.unknown: list[dict[str, Any]] = []

    def prepare(self, value: Any, descriptor: Any) -> Any:
        name = descriptor.full_name
        if name == "google.protobuf.Any":
            return self._prepare_any(value)
        if name in _SPECIAL_JSON_WKT or not isinstance(value, dict):
            return value
        fields = self.registry.json_names(descriptor)
        out: dict[str, Any] = {}
        for key, item in value.items():
            fd = fields.get(key)
            if fd is None or fd.message_type is None:
                out[key] = item
            elif _is_map(fd):
                value_fd = fd.message_type.fields_by_name["value"]
                if value_fd.message_type is not None and isinstance(item, dict):
                    out[key] = {k: self.prepare(v, value_fd.message_type) for k, v in item.items()}
                else:
                    out[key] = item
            elif fd.is_repeated and isinstance(item, list):
                out[key] = [self.prepare(v, fd.message_type) for v in item]
            else:
                out[key] = self.prepare(item, fd.message_type)
        return out

    def _prepare_any(self, value: Any) -> Any:
        if not isinstance(value, dict) or not isinstance(value.get("@type"), str):
            return value
        url = value["@type"]
        descriptor = self.registry.find(url.rpartition("/")[2])
        if descriptor is None:
            self.unknown.append(value)
            return {"@type": TYPE_PREFIX + PLACEHOLDER_NAME, "type_url": url, "index": len(self.unknown) - 1}
        if descriptor.full_name in _SPECIAL_JSON_WKT:
            if "value" in value:
                return {"@type": url, "value": self.prepare(value["value"], descriptor)}
            return value
        rest = {k: v for k, v in value.items() if k != "@type"}
        return {"@type": url, **self.prepare(rest, descriptor)}


class LoadedDump:
    def __init__(self, message: Any, unknown: list[dict[str, Any]], registry: _Registry) -> None:
        self.message = message
        self.unknown = unknown
        self.registry = registry

    def section(self, type_url: str) -> Any | None:
        """Unpacked dump section (last one wins, like istioctl's getSection)."""
        found = None
        for config in self.message.configs:
            if config.type_url == type_url:
                found = config
        if found is None:
            return None
        return self.unpack(found, type_url)

    def unpack(self, any_msg: Any, type_url: str) -> Any:
        descriptor = self.registry.find(type_url.rpartition("/")[2])
        if descriptor is None:
            raise _istioctl_error("proto: not found")
        message = self.registry.message_class(descriptor)()
        message.ParseFromString(any_msg.value)
        return message


def load_config_dump(raw: bytes, *, unknown_fields: str = "error") -> LoadedDump:
    registry = _Registry.get()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _istioctl_error(f"error unmarshalling config dump response from Envoy: {exc}") from None
    descriptor = registry.find("envoy.admin.v3.ConfigDump")
    if descriptor is None:  # pragma: no cover - xds-protos missing
        raise _unsupported("xds-protos is not installed (envoy.admin.v3.ConfigDump unknown)")
    return _parse_into(data, descriptor, registry, unknown_fields)


def _parse_into(data: Any, descriptor: Any, registry: _Registry, unknown_fields: str) -> LoadedDump:
    loader = _Loader(registry)
    prepared = loader.prepare(data, descriptor)
    message = registry.message_class(descriptor)()
    try:
        registry.json_format.ParseDict(prepared, message, ignore_unknown_fields=unknown_fields == "discard")
    except registry.json_format.ParseError as exc:
        raise _istioctl_error(f"error unmarshalling config dump response from Envoy: {exc}") from None
    return LoadedDump(message, loader.unknown, registry)


def apply_mask(raw: bytes, fields: tuple[str, ...]) -> bytes:
    """Emulate the admin ``?mask=`` (FieldMask trimmed on every top-level dump; none dropped)."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _istioctl_error(f"error unmarshalling config dump response from Envoy: {exc}") from None
    if not isinstance(data, dict):
        return raw
    configs = []
    for config in data.get("configs", []):
        if isinstance(config, dict):
            config = {k: v for k, v in config.items() if k == "@type" or k in fields}
        configs.append(config)
    return json.dumps({"configs": configs}).encode()


# --------------------------------------------------------------------------------------------------
# Legacy jsonpb (github.com/golang/protobuf/jsonpb) marshalling, ported
# --------------------------------------------------------------------------------------------------


class MarshalError(Exception):
    pass


_INT64_TYPES = {"TYPE_INT64", "TYPE_UINT64", "TYPE_SINT64", "TYPE_FIXED64", "TYPE_SFIXED64"}


class Jsonpb:
    def __init__(self, dump: LoadedDump, *, indent: str = "", unknown_any: str = "error") -> None:
        self.dump = dump
        self.registry = dump.registry
        self.indent = indent
        self.unknown_any = unknown_any
        self.buf: list[str] = []
        from google.protobuf import descriptor as _descriptor

        fd_cls = _descriptor.FieldDescriptor
        self._type_names = {getattr(fd_cls, n): n for n in dir(fd_cls) if n.startswith("TYPE_")}

    def marshal(self, message: Any) -> str:
        self.buf = []
        self._message(message, "", "")
        return "".join(self.buf)

    def _w(self, text: str) -> None:
        self.buf.append(text)

    def _comma(self) -> None:
        self._w(",\n" if self.indent else ",")

    @staticmethod
    def _has(message: Any, fd: Any) -> bool:
        if fd.is_repeated:
            return len(getattr(message, fd.name)) > 0
        if fd.message_type is not None or fd.has_presence:
            return message.HasField(fd.name)
        value = getattr(message, fd.name)
        if isinstance(value, float):
            return value != 0 or math.copysign(1.0, value) < 0
        return bool(value)

    def _message(self, m: Any, indent: str, type_url: str) -> None:
        d = m.DESCRIPTOR
        wkt = _jsonpb_wkt(d.full_name)
        if wkt == "Any":
            self._any(m, indent)
            return
        if wkt in _WRAPPERS:
            fd = d.fields_by_number[1]
            self._value(fd, getattr(m, fd.name), indent)
            return
        if wkt == "Duration":
            self._w(f'"{_jsonpb_duration(m.seconds, m.nanos)}s"')
            return
        if wkt == "Timestamp":
            self._w(f'"{_jsonpb_timestamp(m.seconds, m.nanos)}Z"')
            return
        if wkt == "Value":
            which = m.WhichOneof("kind")
            if which is None:
                raise MarshalError("nil Value")
            self._value(d.fields_by_name[which], getattr(m, which), indent)
            return
        if wkt in ("Struct", "ListValue"):
            fd = d.fields_by_number[1]
            self._value(fd, getattr(m, fd.name), indent)
            return

        self._w("{")
        if self.indent:
            self._w("\n")
        first = True
        if type_url:
            self._type_url(indent, type_url)
            first = False
        fields = d.fields
        i = 0
        while i < len(fields):
            fd = fields[i]
            oneof = fd.containing_oneof
            if oneof is not None:
                i += len(oneof.fields)
                which = m.WhichOneof(oneof.name)
                if which is None:
                    continue
                fd = d.fields_by_name[which]
            else:
                i += 1
                if not self._has(m, fd):
                    continue
            if not first:
                self._comma()
            self._field(fd, getattr(m, fd.name), indent)
            first = False
        if self.indent:
            self._w("\n" + indent)
        self._w("}")

    def _any(self, m: Any, indent: str) -> None:
        type_url = m.type_url
        name = type_url.rpartition("/")[2]
        if name == PLACEHOLDER_NAME:
            self._unknown_any(m, indent)
            return
        descriptor = self.registry.find(name)
        if descriptor is None:
            raise MarshalError("proto: not found")
        inner = self.registry.message_class(descriptor)()
        inner.ParseFromString(m.value)
        if not _jsonpb_wkt(descriptor.full_name):
            self._message(inner, indent, type_url)
            return
        self._w("{")
        if self.indent:
            self._w("\n")
        self._type_url(indent, type_url)
        self._comma()
        if self.indent:
            self._w(indent + self.indent + '"value": ')
        else:
            self._w('"value":')
        self._message(inner, indent + self.indent, "")
        if self.indent:
            self._w("\n" + indent)
        self._w("}")

    def _unknown_any(self, m: Any, indent: str) -> None:
        placeholder = self.registry.find(PLACEHOLDER_NAME)
        holder = self.registry.message_class(placeholder)()
        holder.ParseFromString(m.value)
        if self.unknown_any != "rename":
            # istioctl resolved the type to an empty message when loading; marshalling looks the
            # original URL up in the global registry and fails.
            raise MarshalError("proto: not found")
        original = self.dump.unknown[holder.index]
        payload = {_camel(k): _rename_keys(v) for k, v in original.items() if k != "@type"}
        self._plain_message(payload, indent, holder.type_url)

    def _type_url(self, indent: str, type_url: str) -> None:
        if self.indent:
            self._w(indent + self.indent)
        self._w('"@type":')
        if self.indent:
            self._w(" ")
        self._w(go_quote(type_url))

    def _field(self, fd: Any, value: Any, indent: str) -> None:
        if self.indent:
            self._w(indent + self.indent)
        self._w('"' + fd.json_name + '":')
        if self.indent:
            self._w(" ")
        self._value(fd, value, indent)

    def _value(self, fd: Any, value: Any, indent: str) -> None:
        if _is_map(fd):
            key_fd = fd.message_type.fields_by_name["key"]
            value_fd = fd.message_type.fields_by_name["value"]
            entries = sorted(value.items(), key=lambda kv: kv[0])
            self._w("{")
            comma = ""
            for key, item in entries:
                self._w(comma)
                if self.indent:
                    self._w("\n" + indent + self.indent + self.indent)
                is_bool = key_fd.type == key_fd.TYPE_BOOL
                key_text = ("true" if key else "false") if is_bool else str(key)
                self._w(go_quote(key_text) + ":")
                if self.indent:
                    self._w(" ")
                self._singular(value_fd, item, indent + self.indent)
                comma = ","
            if self.indent:
                self._w("\n" + indent + self.indent)
            self._w("}")
        elif fd.is_repeated:
            self._w("[")
            comma = ""
            for item in value:
                self._w(comma)
                if self.indent:
                    self._w("\n" + indent + self.indent + self.indent)
                self._singular(fd, item, indent + self.indent)
                comma = ","
            if self.indent:
                self._w("\n" + indent + self.indent)
            self._w("]")
        else:
            self._singular(fd, value, indent)

    def _singular(self, fd: Any, value: Any, indent: str) -> None:
        if fd.message_type is not None:
            self._message(value, indent + self.indent, "")
            return
        if fd.enum_type is not None:
            if fd.enum_type.full_name == "google.protobuf.NullValue":
                self._w("null")
                return
            enum_value = fd.enum_type.values_by_number.get(value)
            self._w(str(int(value)) if enum_value is None else '"' + enum_value.name + '"')
            return
        type_name = self._type_names.get(fd.type, "")
        if type_name in ("TYPE_FLOAT", "TYPE_DOUBLE"):
            if math.isinf(value):
                self._w('"Infinity"' if value > 0 else '"-Infinity"')
            elif math.isnan(value):
                self._w('"NaN"')
            else:
                self._w(go_float(value, 32 if type_name == "TYPE_FLOAT" else 64))
        elif type_name in _INT64_TYPES:
            self._w(f'"{int(value)}"')
        elif type_name == "TYPE_BOOL":
            self._w("true" if value else "false")
        elif type_name == "TYPE_STRING":
            self._w(go_quote(value))
        elif type_name == "TYPE_BYTES":
            self._w('"' + base64.b64encode(value).decode("ascii") + '"')
        else:
            self._w(str(int(value)))

    # -- generic values (only for renamed unknown Any payloads) ------------------------------------
    def _plain_message(self, obj: dict[str, Any], indent: str, type_url: str) -> None:
        self._w("{")
        if self.indent:
            self._w("\n")
        first = True
        if type_url:
            self._type_url(indent, type_url)
            first = False
        for key, item in obj.items():
            if not first:
                self._comma()
            if self.indent:
                self._w(indent + self.indent)
            self._w(go_quote(key) + ":")
            if self.indent:
                self._w(" ")
            self._plain_value(item, indent)
            first = False
        if self.indent:
            self._w("\n" + indent)
        self._w("}")

    def _plain_value(self, item: Any, indent: str) -> None:
        if isinstance(item, list):
            self._w("[")
            comma = ""
            for element in item:
                self._w(comma)
                if self.indent:
                    self._w("\n" + indent + self.indent + self.indent)
                self._plain_value(element, indent + self.indent)
                comma = ","
            if self.indent:
                self._w("\n" + indent + self.indent)
            self._w("]")
        elif isinstance(item, dict):
            self._plain_message(item, indent + self.indent, "")
        elif item is None:
            self._w("null")
        elif isinstance(item, bool):
            self._w("true" if item else "false")
        elif isinstance(item, int):
            self._w(str(item))
        elif isinstance(item, float):
            self._w(go_float(item))
        else:
            self._w(go_quote(str(item)))


def _rename_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(k): _rename_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_keys(v) for v in value]
    return value


def _trim_fraction(text: str) -> str:
    for suffix in ("000", "000", ".000"):
        text = text.removesuffix(suffix)
    return text


def _jsonpb_duration(seconds: int, nanos: int) -> str:
    sign = ""
    if seconds < 0 or nanos < 0:
        sign, seconds, nanos = "-", -seconds, -nanos
    return _trim_fraction(f"{sign}{seconds}.{nanos:09d}")


def _jsonpb_timestamp(seconds: int, nanos: int) -> str:
    day, rem = divmod(seconds, 86400)
    import datetime as _dt

    date = _dt.date(1970, 1, 1) + _dt.timedelta(days=day)
    hh, rem = divmod(rem, 3600)
    mm, ss = divmod(rem, 60)
    return _trim_fraction(f"{date.isoformat()}T{hh:02d}:{mm:02d}:{ss:02d}.{nanos:09d}")


def marshal_slice(dump: LoadedDump, messages: list[Any], unknown_any: str) -> str:
    """``json.MarshalIndent(protio.MessageSlice{...}, "", "    ")``."""
    writer = Jsonpb(dump, unknown_any=unknown_any)
    parts = [writer.marshal(m) for m in messages]
    return go_indent("[" + ",".join(parts) + "]")


# --------------------------------------------------------------------------------------------------
# proxy-config subcommands
# --------------------------------------------------------------------------------------------------


def _parse_subset_key(name: str) -> tuple[str, str, str, int]:
    """istioctl safelyParseSubsetKey -> (direction, subset, fqdn, port)."""
    parts = name.split("|")
    if len(parts) <= 3:
        return "", "", name, 0
    port_text = parts[1].removesuffix("_")
    port = int(port_text) if re.fullmatch(r"[+-]?\d+", port_text) else 0
    return parts[0].removesuffix("_"), parts[2], parts[3], port


def _cluster_sort_key(cluster: Any) -> tuple[str, str, int, str]:
    direction, subset, fqdn, port = _parse_subset_key(cluster.name)
    return fqdn, subset, port, direction


def cmd_cluster(dump: LoadedDump, opts: dict[str, Any], unknown_any: str) -> str:
    section = dump.section(CLUSTERS_DUMP)
    if section is None:
        raise _istioctl_error(f"config dump has no configuration type {CLUSTERS_DUMP}")
    cluster_type = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
    clusters = []
    for entry in list(section.dynamic_active_clusters) + list(section.static_clusters):
        if entry.HasField("cluster"):
            clusters.append(dump.unpack(entry.cluster, cluster_type))
    if not clusters:
        raise _istioctl_error("no clusters found")
    clusters.sort(key=_cluster_sort_key)
    fqdn, direction, subset, port = opts["fqdn"], opts["direction"], opts["subset"], opts["port"]

    def verify(c: Any) -> bool:
        if not (fqdn or port or subset or direction):
            return True
        if fqdn and fqdn not in c.name:
            return False
        if direction and direction not in c.name:
            return False
        if subset and subset not in c.name:
            return False
        return not (port and f"|{port}|" not in c.name)

    try:
        return marshal_slice(dump, [c for c in clusters if verify(c)], unknown_any) + "\n"
    except MarshalError as exc:
        raise _istioctl_error(f"json: error calling MarshalJSON for type proto.MessageSlice: {exc}") from None


def _listener_type(listener: Any) -> str:
    n_http = n_tcp = 0
    for chain in listener.filter_chains:
        for flt in chain.filters:
            if flt.name == "envoy.filters.network.http_connection_manager":
                n_http += 1
            elif flt.name == "envoy.filters.network.tcp_proxy" and b"BlackHoleCluster" not in flt.typed_config.value:
                n_tcp += 1
    if n_http:
        return "HTTP" if n_tcp == 0 else "HTTP+TCP"
    return "TCP" if n_tcp else "UNKNOWN"


def cmd_listener(dump: LoadedDump, opts: dict[str, Any], unknown_any: str) -> str:
    section = dump.section(LISTENERS_DUMP)
    if section is None:
        raise _istioctl_error(f"listener dump: config dump has no configuration type {LISTENERS_DUMP}")
    listener_type = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
    listeners = []
    for entry in section.dynamic_listeners:
        if entry.HasField("active_state") and entry.active_state.HasField("listener"):
            listeners.append(dump.unpack(entry.active_state.listener, listener_type))
    for entry in section.static_listeners:
        if entry.HasField("listener"):
            listeners.append(dump.unpack(entry.listener, listener_type))
    if not listeners:
        raise _istioctl_error("no listeners found")
    address, port, ltype = opts["address"], opts["port"], opts["type"]

    def verify(listener: Any) -> bool:
        if not (address or port or ltype):
            return True
        sock = listener.address.socket_address
        if address and sock.address.lower() != address.lower():
            return False
        if port and sock.port_value != port:
            return False
        return not (ltype and _listener_type(listener).lower() != ltype.lower())

    try:
        return marshal_slice(dump, [x for x in listeners if verify(x)], unknown_any) + "\n"
    except MarshalError as exc:
        raise _istioctl_error(
            f"failed to marshal listeners: json: error calling MarshalJSON for type proto.MessageSlice: {exc}"
        ) from None


def cmd_secret(dump: LoadedDump, unknown_any: str) -> str:
    section = dump.section(SECRETS_DUMP)
    if section is None:
        raise _istioctl_error(f"sidecar doesn't support secrets: config dump has no configuration type {SECRETS_DUMP}")
    try:
        return Jsonpb(dump, indent="    ", unknown_any=unknown_any).marshal(section) + "\n"
    except MarshalError as exc:
        raise _istioctl_error(f"unable to marshal secrets in Envoy config dump: {exc}") from None


def cmd_endpoint(raw: bytes, opts: dict[str, Any], unknown_fields: str) -> str:
    registry = _Registry.get()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _istioctl_error(f"error unmarshalling config dump response from Envoy: {exc}") from None
    descriptor = registry.find("envoy.admin.v3.Clusters")
    loaded = _parse_into(data, descriptor, registry, unknown_fields)
    address, port, cluster_name, status = opts["address"], opts["port"], opts["cluster"], opts["status"]

    def verify(host: Any, cluster: str) -> bool:
        if not (address or port or cluster_name or status):
            return True
        sock = host.address.socket_address if host.address.HasField("socket_address") else None
        host_address = sock.address if sock is not None else "unix://" + host.address.pipe.path
        if address and host_address.lower() != address.lower():
            return False
        if port and (sock.port_value if sock is not None else 0) != port:
            return False
        if cluster_name and cluster.lower() != cluster_name.lower():
            return False
        eds = host.health_status.DESCRIPTOR.fields_by_name["eds_health_status"].enum_type
        name = eds.values_by_number[host.health_status.eds_health_status].name
        return not (status and name.lower() != status.lower())

    selected = []
    for cluster in loaded.message.cluster_statuses:
        if any(verify(h, cluster.name) for h in cluster.host_statuses):
            selected.append(cluster)
    return marshal_slice(loaded, selected, "error") + "\n"


# --------------------------------------------------------------------------------------------------
# Mapping, fetching and the command line
# --------------------------------------------------------------------------------------------------


def _load_mapping() -> tuple[dict[str, Any], Path | None]:
    path_text = os.environ.get(ENV_MAP)
    if not path_text:
        return {}, None
    path = Path(path_text)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _unsupported(f"cannot read mapping file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise _unsupported(f"mapping file {path} must hold a JSON object")
    return data, path


def _append_log(argv: list[str]) -> None:
    log = os.environ.get(ENV_LOG)
    if not log:
        return
    line = json.dumps({"argv": argv}) + "\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _fetch_admin(base: str, path: str, target: str) -> bytes:
    url = base.rstrip("/") + "/" + path
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace").strip()
        raise _istioctl_error(
            f"failed to execute command on {target} sidecar: received unexpected status {exc.code}: {body}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _istioctl_error(f"failed to execute command on {target} sidecar: {reason}") from None


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _istioctl_error(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None


def _resolve(base: Path | None, value: str) -> Path:
    path = Path(value)
    if not path.is_absolute() and base is not None:
        path = base.parent / path
    return path


class _Flags:
    """Minimal pflag-like parser for the flags the double understands."""

    GLOBAL_VALUE: ClassVar[dict[str, str]] = {
        "--context": "context",
        "--kubeconfig": "kubeconfig",
        "-c": "kubeconfig",
        "--istioNamespace": "istioNamespace",
        "-i": "istioNamespace",
        "--namespace": "namespace",
        "-n": "namespace",
        "--vklog": "vklog",
    }

    def __init__(self, value_flags: dict[str, str], bool_flags: dict[str, str]) -> None:
        self.value_flags = {**self.GLOBAL_VALUE, **value_flags}
        self.bool_flags = bool_flags
        self.values: dict[str, Any] = {}
        self.positional: list[str] = []

    def parse(self, args: list[str]) -> None:
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                self.positional.extend(args[i:])
                return
            if not arg.startswith("-") or arg == "-":
                self.positional.append(arg)
                continue
            name, eq, inline = arg.partition("=")
            if not arg.startswith("--") and len(name) > 2 and not eq:
                name, inline, eq = arg[:2], arg[2:], "="  # -ojson
            if name in self.bool_flags:
                key = self.bool_flags[name]
                if eq and inline.lower() not in ("true", "false", "1", "0", "t", "f"):
                    raise _istioctl_error(
                        f'invalid argument "{inline}" for "{name}" flag: strconv.ParseBool: '
                        f'parsing "{inline}": invalid syntax'
                    )
                self.values[key] = (inline.lower() in ("true", "1", "t")) if eq else True
                continue
            if name not in self.value_flags:
                label = name if name.startswith("--") else f"shorthand flag: '{name[1:]}' in {arg}"
                raise _istioctl_error(f"unknown flag: {label}" if name.startswith("--") else f"unknown {label}")
            if not eq:
                if i >= len(args):
                    raise _istioctl_error(f"flag needs an argument: {name}")
                inline = args[i]
                i += 1
            self.values[self.value_flags[name]] = inline


PC_VALUE_FLAGS = {
    "-o": "output",
    "--output": "output",
    "--proxy-admin-port": "proxyAdminPort",
    "-f": "file",
    "--file": "file",
    "--fqdn": "fqdn",
    "--direction": "direction",
    "--subset": "subset",
    "--port": "port",
    "--address": "address",
    "--type": "type",
    "--cluster": "cluster",
    "--status": "status",
}
PC_BOOL_FLAGS = {"--verbose": "verbose", "--waypoint": "waypoint"}


def _pod_target(name: str, namespace: str | None) -> tuple[str, str]:
    if "/" in name:
        kind, _, rest = name.partition("/")
        if kind.lower() not in ("pod", "pods", "po"):
            raise _unsupported(f"only pod targets are emulated, got {name!r}")
        name = rest
    if "." in name[1:]:
        idx = name.rindex(".")
        return name[:idx], name[idx + 1 :]
    return name, namespace or "default"


def _entry_for(mapping: dict[str, Any], target: str, sub: str) -> dict[str, Any] | None:
    entry = mapping.get(target)
    if not isinstance(entry, dict):
        return None
    overrides = entry.get("commands", {})
    if isinstance(overrides, dict) and isinstance(overrides.get(sub), dict):
        merged = {k: v for k, v in entry.items() if k not in ("admin", "dump", "fail", "hang", "garbage")}
        merged.update(overrides[sub])
        return merged
    return entry


def run_envoy_stats(args: list[str], out: list[str | bytes]) -> int:
    """`istioctl experimental envoy-stats POD[.NS] --output prom`: the sidecar's /stats/prometheus.
    Mapping: an `admin` entry is asked live; `"stats": "<exposition text>"` or `"stats_file": path` answer
    for saved pods; `fail`/`hang` as for proxy-config."""
    flags = _Flags({"-o": "output", "--output": "output", "-n": "namespace", "--namespace": "namespace",
                    "--type": "type"}, {})
    flags.parse(args)
    if len(flags.positional) != 1:
        raise _istioctl_error("envoy-stats requires pod name")
    if flags.values.get("output", "short") != "prom":
        raise _unsupported("envoy-stats output other than prom is not emulated")
    mapping, _ = _load_mapping()
    pod, namespace = _pod_target(flags.positional[0], flags.values.get("namespace"))
    entry = _entry_for(mapping, f"{pod}.{namespace}", "stats")
    if entry is None:
        raise _istioctl_error(f'pods "{pod}" not found')
    if "fail" in entry:
        raise CommandError(str(entry["fail"]).rstrip("\n") + "\n", int(entry.get("exit", 1)))
    if entry.get("hang"):
        time.sleep(3600)
    if isinstance(entry.get("stats"), str):
        out.append(entry["stats"])
    elif isinstance(entry.get("stats_file"), str):
        out.append(_read_file(Path(entry["stats_file"])))
    elif isinstance(entry.get("admin"), str):
        out.append(_fetch_admin(entry["admin"], "stats/prometheus", f"{pod}.{namespace}"))
    else:
        raise _istioctl_error(f"failed to execute command on {pod}.{namespace} sidecar: no stats")
    return 0


def run_proxy_config(args: list[str], out: list[str | bytes]) -> int:
    # cobra lets flags come before the subcommand: the first positional argument names it
    flags = _Flags(PC_VALUE_FLAGS, PC_BOOL_FLAGS)
    flags.parse(args)
    if not flags.positional:
        raise _unsupported("proxy-config needs a subcommand (all|cluster|listener|secret|endpoint)")
    sub_name = flags.positional.pop(0)
    sub = PC_ALIASES.get(sub_name)
    if sub is None:
        raise _unsupported(f"proxy-config subcommand {sub_name!r} is not emulated")
    values = flags.values
    output = values.get("output", "short")
    if output != "json":
        raise _unsupported(f"output format {output!r} is not emulated (use -o json)")
    port_text = values.get("port", "0")
    try:
        port = int(port_text)
    except ValueError:
        raise _istioctl_error(
            f'invalid argument "{port_text}" for "--port" flag: strconv.ParseInt: parsing "{port_text}": invalid syntax'
        ) from None
    opts = {
        "fqdn": values.get("fqdn", ""),
        "direction": values.get("direction", ""),
        "subset": values.get("subset", ""),
        "port": port,
        "address": values.get("address", ""),
        "type": values.get("type", ""),
        "cluster": values.get("cluster", ""),
        "status": values.get("status", ""),
    }
    file_arg = values.get("file")
    if (len(flags.positional) == 1) == bool(file_arg):
        noun = "endpoints" if sub == "endpoint" else sub
        raise _istioctl_error(f"{noun} requires pod name or --file parameter")

    unknown_any = "error"
    unknown_fields = "error"
    if file_arg:
        raw = _read_file(Path(file_arg))
        clusters_raw = raw
    else:
        mapping, mapping_path = _load_mapping()
        pod, namespace = _pod_target(flags.positional[0], values.get("namespace"))
        target = f"{pod}.{namespace}"
        entry = _entry_for(mapping, target, sub)
        if entry is None:
            raise _istioctl_error(f'failed to get config dump: pods "{pod}" not found')
        delay = entry.get("delay")
        if isinstance(delay, int | float) and delay > 0:
            time.sleep(delay)
        if entry.get("hang"):
            while True:
                time.sleep(3600)
        if "fail" in entry:
            text = str(entry["fail"])
            raise CommandError(text if text.endswith("\n") else text + "\n", int(entry.get("exit", 1)))
        if "garbage" in entry:
            out.append(str(entry["garbage"]))
            return 0
        unknown_any = str(entry.get("unknown_any", "error"))
        unknown_fields = str(entry.get("unknown_fields", "error"))
        if "admin" in entry:
            base = str(entry["admin"])
            raw = _fetch_admin(base, ADMIN_PATHS[sub], target)
            clusters_raw = raw
        elif "dump" in entry:
            raw = _read_file(_resolve(mapping_path, str(entry["dump"])))
            if sub in MASKS:
                raw = apply_mask(raw, MASKS[sub])
            clusters_raw = b""
            if sub == "endpoint":
                if "clusters" not in entry:
                    raise _unsupported(f"{target}: 'pc endpoint' needs an 'admin' URL or a 'clusters' file")
                clusters_raw = _read_file(_resolve(mapping_path, str(entry["clusters"])))
        else:
            raise _unsupported(f"mapping entry for {target} has none of admin/dump/fail/hang/garbage")

    if sub == "all":
        out.append(raw + b"\n")
        return 0
    if sub == "endpoint":
        out.append(cmd_endpoint(clusters_raw, opts, unknown_fields))
        return 0
    dump = load_config_dump(raw, unknown_fields=unknown_fields)
    if sub == "cluster":
        out.append(cmd_cluster(dump, opts, unknown_any))
    elif sub == "listener":
        out.append(cmd_listener(dump, opts, unknown_any))
    else:
        out.append(cmd_secret(dump, unknown_any))
    return 0


def run_ztunnel_config(args: list[str], out: list[str | bytes]) -> int:
    """`istioctl ztunnel-config all <pod>[.<ns>] -o json`: the ztunnel's whole config dump."""
    flags = _Flags(
        {"-o": "output", "--output": "output", "--proxy-admin-port": "proxyAdminPort", "-f": "file",
         "--file": "file", "--node": "node"},
        {},
    )
    flags.parse(args)
    if not flags.positional:
        raise _unsupported("ztunnel-config needs a subcommand (only 'all' is emulated)")
    sub = flags.positional.pop(0)
    if sub != "all":
        raise _unsupported(f"ztunnel-config subcommand {sub!r} is not emulated")
    if flags.values.get("output", "short") != "json":
        raise _unsupported("ztunnel-config output other than json is not emulated")
    if len(flags.positional) != 1:
        raise _unsupported("ztunnel-config all without a pod name is not emulated")
    mapping, mapping_path = _load_mapping()
    pod, namespace = _pod_target(flags.positional[0], flags.values.get("namespace") or "istio-system")
    entry = mapping.get(f"{pod}.{namespace}")
    if not isinstance(entry, dict):
        raise _istioctl_error(f'pods "{pod}" not found')
    if entry.get("hang"):
        while True:
            time.sleep(3600)
    if "fail" in entry:
        text = str(entry["fail"])
        raise CommandError(text if text.endswith("\n") else text + "\n", int(entry.get("exit", 1)))
    if "garbage" in entry:
        out.append(str(entry["garbage"]))
        return 0
    if not isinstance(entry.get("ztunnel"), str):
        raise _istioctl_error(f"workloads command is only supported by Ztunnel proxies: {pod}")
    out.append(_read_file(_resolve(mapping_path, entry["ztunnel"])) + b"\n")
    return 0


def run_proxy_status(args: list[str], out: list[str | bytes]) -> int:
    flags = _Flags(
        {
            "-o": "output",
            "--output": "output",
            "-r": "revision",
            "--revision": "revision",
            "--file": "file",
            "-f": "file",
        },
        {"--verbose": "verbose"},
    )
    flags.parse(args)
    mapping, _ = _load_mapping()
    text = mapping.get("__proxy_status__")
    if isinstance(text, str):
        out.append(text)
    else:
        out.append(go_tabwriter([PROXY_STATUS_HEADER]))
    return 0


def run_version(args: list[str], out: list[str | bytes]) -> int:
    flags = _Flags(
        {"-o": "output", "--output": "output", "-r": "revision", "--revision": "revision"},
        {"--remote": "remote", "--short": "short", "-s": "short"},
    )
    flags.parse(args)
    version = CLIENT_VERSION
    with contextlib.suppress(CommandError):
        mapping, _ = _load_mapping()
        if isinstance(mapping.get("__version__"), str):
            version = mapping["__version__"]
    out.append(f"client version: {version}\n")
    return 0


USAGE = """Istio configuration command line utility (test double).

Usage:
  istioctl [command]

Available Commands:
  proxy-config  Retrieve information about proxy configuration from Envoy [kube only]
  proxy-status  Retrieves the synchronization status of each Envoy in the mesh
  version       Prints out build version information
"""


def _split_globals(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split global flags placed before the command from the rest (they are accepted anywhere)."""
    leading: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.partition("=")[0]
        if name in _Flags.GLOBAL_VALUE:
            width = 1 if "=" in arg else 2
        elif not arg.startswith("--") and arg[:2] in _Flags.GLOBAL_VALUE and len(arg) > 2:
            width = 1  # -nshop
        else:
            break
        leading.extend(argv[i : i + width])
        i += width
    return leading, argv[i:]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _append_log(args)
    except OSError as exc:
        sys.stderr.write(f"istioctl-double: cannot write log: {exc}\n")
        return 2
    out: list[str | bytes] = []
    code = 0
    try:
        leading, rest = _split_globals(args)
        # every command parser accepts the global flags, wherever they were written
        command_args = rest[1:] + leading
        if not rest or rest[0] in ("-h", "--help", "help"):
            out.append(USAGE)
        elif rest[0] in ("proxy-config", "pc"):
            code = run_proxy_config(command_args, out)
        elif rest[0] in ("ztunnel-config", "zc"):
            code = run_ztunnel_config(command_args, out)
        elif rest[0] in ("proxy-status", "ps"):
            code = run_proxy_status(command_args, out)
        elif rest[0] == "version":
            code = run_version(command_args, out)
        elif rest[0] in ("experimental", "x") and rest[1:2] == ["envoy-stats"]:
            code = run_envoy_stats(rest[2:] + leading, out)
        elif rest[0].startswith("-"):
            raise _istioctl_error(f"unknown flag: {rest[0].partition('=')[0]}")
        else:
            raise CommandError(
                f'Error: unknown command "{rest[0]}" for "istioctl"\nRun \'istioctl --help\' for usage.\n', 1
            )
    except CommandError as exc:
        _write_out(out)
        sys.stderr.flush()
        sys.stderr.buffer.write(exc.text.encode("utf-8"))
        sys.stderr.flush()
        return exc.code
    _write_out(out)
    return code


def _write_out(chunks: list[str | bytes]) -> None:
    """Write UTF-8 bytes whatever the locale, like a Go binary."""
    sys.stdout.flush()
    for chunk in chunks:
        sys.stdout.buffer.write(chunk if isinstance(chunk, bytes) else chunk.encode("utf-8"))
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------------
# Installing an ``istioctl`` executable
# --------------------------------------------------------------------------------------------------

_SCRIPT = """#!{python}
# Generated by tests/harness/istioctl_double.py install(); runs the istioctl test double.
import importlib.util
import os
import sys

for _key, _value in (({env_map!r}, {map_path!r}), ({env_log!r}, {log_path!r})):
    if _value is not None:
        os.environ[_key] = _value
_spec = importlib.util.spec_from_file_location("istioctl_double", {module!r})
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
sys.exit(_mod.main(sys.argv[1:]))
"""

_SH_SCRIPT = """#!/bin/sh
# Generated by tests/harness/istioctl_double.py install(); runs the istioctl test double.
{exports}exec {python} {module} "$@"
"""


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def install(bin_dir: Path, mapping_file: Path, log_file: Path | None = None) -> Path:
    """Write an executable ``bin_dir/istioctl`` running this double; return its path.

    The mapping and log paths are baked in (they win over ``ISTIOCTL_DOUBLE_MAP``/``_LOG`` in the
    environment); with ``log_file=None`` the environment's ``ISTIOCTL_DOUBLE_LOG`` is used if set.
    """
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / "istioctl"
    module = str(Path(__file__).resolve())
    map_path = str(Path(mapping_file).resolve())
    log_path = str(Path(log_file).resolve()) if log_file is not None else None
    python = sys.executable
    if " " not in python and len(python) < 120 and "\n" not in python:
        content = _SCRIPT.format(
            python=python, env_map=ENV_MAP, map_path=map_path, env_log=ENV_LOG, log_path=log_path, module=module
        )
    else:
        exports = f"{ENV_MAP}={_sh_quote(map_path)}\nexport {ENV_MAP}\n"
        if log_path is not None:
            exports += f"{ENV_LOG}={_sh_quote(log_path)}\nexport {ENV_LOG}\n"
        content = _SH_SCRIPT.format(exports=exports, python=_sh_quote(python), module=_sh_quote(module))
    target.write_text(content, encoding="utf-8")
    target.chmod(0o755)
    return target


if __name__ == "__main__":
    # Running as a script puts tests/harness first on sys.path, where a sibling ``envoy.py`` would
    # shadow the xds-protos ``envoy`` package.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.exit(main())
