"""The live source: the Kubernetes API (official client) and `istioctl proxy-config`.

`kubernetes` is imported here only, on first use: it costs ~300 ms, and --help, version and
--snapshot runs must not pay it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import jsonutil
from ..errors import GatherError, InputError, MissingFileError, NoClusterError, NotFoundError, UsageError, one_line
from . import Document
from . import istioctl as istioctl_cli
from .kinds import KINDS, Kind
from .kubeconfig import check_kubeconfig, check_server
from .names import path_component
from .scrub import scrub_secret
from .shapes import ShapeError, check_object, describe

PAGE = 500
# A request the API server never answers must not hang a diagnosis: kubectl waits forever by default,
# kubectl-mtls gives up after this long (--request-timeout, 0 = no limit; documented in the README).
DEFAULT_REQUEST_TIMEOUT = 30.0
# An exec credential plugin (kubeconfig users.user.exec) gets as long as one request.
MAX_PAGES = 10_000  # 5,000,000 objects of one kind: beyond that, a server that never stops paging
ZTUNNEL_SELECTOR = "app=ztunnel"
ZTUNNEL_METRICS_PORT = 15020
INCLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass
class Connection:
    kubeconfig: str | None = None
    context: str | None = None
    cluster: str | None = None
    user: str | None = None
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT  # seconds; None = no timeout
    istioctl: str | None = None
    istioctl_timeout: float = istioctl_cli.DEFAULT_TIMEOUT
    istio_namespace: str = "istio-system"


class LiveSource:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.description = f"cluster (context {conn.context})" if conn.context else "cluster"
        self._api: Any = None
        self._namespace = "default"
        self.context_name: str | None = conn.context  # the kubeconfig context in use, once connected
        self._versions: dict[str, str] = {}

    # -- connection ---------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._api is None:
            self._api = self._connect()
        return self._api

    def _connect(self) -> Any:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        configuration = client.Configuration()
        if self.conn.kubeconfig and not os.path.exists(os.path.expanduser(self.conn.kubeconfig)):
            raise MissingFileError(f"--kubeconfig {self.conn.kubeconfig}: file not found")
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        if not (self.conn.kubeconfig or self._has_kubeconfig() or in_cluster):
            where = f"KUBECONFIG={os.environ['KUBECONFIG']}" if os.environ.get("KUBECONFIG") else "~/.kube/config"
            raise NoClusterError(f"no Kubernetes cluster configured: no kubeconfig at {where}, and not in a pod")
        try:
            if self.conn.kubeconfig or self._has_kubeconfig():
                with _credential_plugin_limits(self.conn.request_timeout) as plugin_errors:
                    self._load_kubeconfig(configuration)
                if plugin_errors:
                    raise GatherError(f"cannot get credentials from the kubeconfig: {plugin_errors[-1]}")
                check_server(configuration.host)
            else:
                config.load_incluster_config(client_configuration=configuration)
                if os.path.isfile(INCLUSTER_NAMESPACE):
                    with open(INCLUSTER_NAMESPACE) as handle:
                        self._namespace = handle.read().strip() or "default"
        except ConfigException as exc:
            raise NoClusterError(f"cannot load Kubernetes configuration: {exc}") from None
        except OSError as exc:
            raise NoClusterError(f"cannot read kubeconfig: {exc}") from None
        from urllib3.util.retry import Retry

        # Fail fast on an unreachable API server (kubectl retries little too); a request that timed out
        # is not sent again, so a hung API server costs one --request-timeout, not two.
        configuration.retries = Retry(total=1, read=0)
        if not configuration.verify_ssl:  # insecure-skip-tls-verify: kubectl does not warn per request
            from urllib3.exceptions import InsecureRequestWarning

            warnings.simplefilter("ignore", InsecureRequestWarning)
        return client.ApiClient(configuration)

    def _has_kubeconfig(self) -> bool:
        paths = os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config"))
        return any(os.path.isfile(p) for p in paths.split(os.pathsep) if p)

    def _load_kubeconfig(self, configuration: Any) -> None:
        from kubernetes import config
        from kubernetes.config import kube_config
        from kubernetes.config.config_exception import ConfigException

        paths = self.conn.kubeconfig or os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config"))
        check_kubeconfig(paths)  # the client's loader fails on wrong types with a TypeError or worse
        contexts, active = config.list_kube_config_contexts(config_file=paths)
        by_name = {c["name"]: c.get("context") or {} for c in contexts or []}
        name = self.conn.context or (active or {}).get("name")
        if name not in by_name:
            raise ConfigException(f"context {name!r} not found in kubeconfig" if name else "no current context")
        self._namespace = by_name[name].get("namespace") or "default"
        self.context_name = name
        if not (self.conn.cluster or self.conn.user):
            config.load_kube_config(
                config_file=paths, context=name, client_configuration=configuration, persist_config=False
            )
            return
        # --cluster / --user: point the chosen context elsewhere, as kubectl does.
        doc = _plain(kube_config.KubeConfigMerger(paths).config)
        context = dict(by_name[name])
        context["cluster"] = self.conn.cluster or context.get("cluster")
        context["user"] = self.conn.user or context.get("user")
        doc["contexts"] = [{"name": name, "context": context}]
        doc["current-context"] = name
        kube_config.load_kube_config_from_dict(
            doc, context=name, client_configuration=configuration, persist_config=False
        )

    def default_namespace(self) -> str:
        self._client()
        return self._namespace

    # -- API calls ----------------------------------------------------------------------------
    def _get(self, path: str, query: dict[str, str] | None = None) -> Any:
        """GET an API path, returning parsed JSON; every failure becomes a one-line error."""
        return jsonutil.loads(self._request(path, query, "application/json"), f"API response for {path}")

    def _get_text(self, path: str, query: dict[str, str] | None = None) -> str:
        return self._request(path, query, "text/plain").decode(errors="replace")

    def _request(self, path: str, query: dict[str, str] | None, accept: str) -> bytes:
        api = self._client()
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        method, url, headers, _body, _ = api.param_serialize(
            "GET",
            path,
            query_params=list((query or {}).items()),
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
        )
        try:
            response = api.call_api(method, url, header_params=headers, _request_timeout=self.conn.request_timeout)
            data = response.read()
            status = response.status
        except ApiException as exc:
            body_text = exc.body if isinstance(exc.body, (str, bytes)) else b""
            status, data = exc.status or 0, body_text.encode() if isinstance(body_text, str) else body_text
        except HTTPError as exc:
            raise NoClusterError(
                f"cannot reach the Kubernetes API at {api.configuration.host}: {_reason(exc)}"
            ) from None
        if status >= 400:
            raise _api_error(status, data, path)
        return bytes(data)

    def _list(self, path: str, query: dict[str, str]) -> list[dict[str, Any]]:
        """All pages of a list. A server whose `continue` token repeats (or that pages without end)
        would loop forever: that is an error naming the list."""
        items: list[dict[str, Any]] = []
        query = {**query, "limit": str(PAGE)}
        plural = path.rsplit("/", 1)[-1]
        seen: set[str] = set()
        while True:
            page = self._get(path, query)
            if not isinstance(page, dict) or not isinstance(page.get("items") or [], list):
                raise GatherError(f"API response for {path}: not a list of objects")
            for index, item in enumerate(page.get("items") or []):
                self._check(plural, item, path, len(items) + index)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue") if isinstance(meta, dict) else None
            if not token:
                return items
            if not isinstance(token, str):
                raise GatherError(f"API response for {path}: metadata.continue must be a string")
            if token in seen or len(seen) >= MAX_PAGES:
                raise GatherError(
                    f"API response for {path}: the server keeps paging (continue token repeated after "
                    f"{len(seen) + 1} pages, {len(items)} objects); stopped"
                )
            seen.add(token)
            query["continue"] = token

    @staticmethod
    def _check(plural: str, item: Any, path: str, index: int) -> None:
        try:
            check_object(plural, item)
        except ShapeError as exc:
            raise GatherError(f"API response for {path}: {describe(item, index)}: {exc}") from None

    @staticmethod
    def _core_path(plural: str, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" + (f"/namespaces/{path_component(namespace, 'namespace')}" if namespace else "")
        return base + f"/{plural}" + (f"/{path_component(name, 'object')}" if name else "")

    def list_pods(self, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        query = {"labelSelector": selector} if selector else {}
        return self._list(self._core_path("pods", namespace), query)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        path = self._core_path("pods", namespace, name)
        pod = self._get(path)
        self._check("pods", pod, path, 0)
        return dict(pod)

    def list_objects(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        spec = KINDS.get(kind)
        if spec is None:
            raise UsageError(f"unknown kind {kind}")
        ns = namespace if spec.namespaced else None
        if spec.istio_namespace_only:
            ns = self.conn.istio_namespace
        if spec.names:  # read only the named objects (a field selector per name), never whole kinds
            out: list[dict[str, Any]] = []
            for name in spec.names:
                query = {"fieldSelector": f"metadata.name={name}"}
                out.extend(self._list(self._path(spec, spec.versions[0], ns), query))
            if kind == "secrets":  # drop key material the moment it arrives
                out = [scrub_secret(o) for o in out]
            return out
        if not spec.group:
            return self._list(self._core_path(kind, ns), {})
        return self._list_custom(spec, ns)

    def _path(self, spec: Kind, version: str, namespace: str | None) -> str:
        prefix = f"/apis/{spec.group}/{version}" if spec.group else f"/api/{version}"
        scope = f"/namespaces/{path_component(namespace, 'namespace')}" if namespace else ""
        return prefix + scope + f"/{spec.plural}"

    def _list_custom(self, spec: Kind, namespace: str | None) -> list[dict[str, Any]]:
        """Istio CRDs: newest served version first; none served means Istio's CRDs are not installed."""
        versions = [self._versions[spec.plural]] if spec.plural in self._versions else list(spec.versions)
        for version in versions:
            try:
                items = self._list(self._path(spec, version, namespace), {})
            except NotFoundError:
                continue
            self._versions[spec.plural] = version
            return items
        return []

    def pod_log(self, namespace: str, pod: str, container: str, tail: int) -> str:
        path = self._core_path("pods", namespace, pod) + "/log"
        return self._get_text(path, {"container": container, "tailLines": str(tail)})

    def exec(
        self, namespace: str, pod: str, container: str, command: list[str], timeout: float
    ) -> tuple[str, str, int | None]:
        """The exec API over a websocket (`check pair --probe` only); see sources.podexec."""
        from .podexec import run_exec

        return run_exec(self._client(), namespace, pod, container, command, timeout)

    # -- istioctl -----------------------------------------------------------------------------
    def _istioctl(self, *args: str) -> list[str]:
        argv = [istioctl_cli.find(self.conn.istioctl), *args]
        if self.conn.kubeconfig:
            argv += ["--kubeconfig", self.conn.kubeconfig]
        if self.conn.context:
            argv += ["--context", self.conn.context]
        if self.conn.istio_namespace != "istio-system":
            argv += ["--istioNamespace", self.conn.istio_namespace]
        return argv

    def proxy_status(self) -> bytes:
        """Newest format first: `-o json` (1.30+), then per-type columns `-v 1` (1.27+), then the plain
        table (<= 1.26). Only an "unknown flag" failure moves on to the older form."""
        variants = (("-o", "json"), ("-v", "1"), ())
        for index, extra in enumerate(variants):
            try:
                return istioctl_cli.run(self._istioctl("proxy-status", *extra), self.conn.istioctl_timeout)
            except GatherError as exc:
                older_exists = index + 1 < len(variants)
                if not (older_exists and ("unknown" in str(exc) or "invalid" in str(exc))):
                    raise
        raise GatherError("istioctl proxy-status: no supported output format")  # not reached

    def envoy_stats(self, namespace: str, pod: str) -> str:
        argv = self._istioctl("experimental", "envoy-stats", f"{pod}.{namespace}", "--output", "prom")
        return istioctl_cli.run(argv, self.conn.istioctl_timeout).decode(errors="replace")

    def ztunnel_pods(self) -> list[dict[str, Any]]:
        return self.list_pods(self.conn.istio_namespace, ZTUNNEL_SELECTOR)

    def ztunnel_stats(self, namespace: str, pod: str) -> str:
        """Through the API server's pod proxy (`get` on pods/proxy): istioctl has no ztunnel stats command."""
        return self._get_text(
            self._core_path("pods", namespace, f"{pod}:{ZTUNNEL_METRICS_PORT}") + "/proxy/stats/prometheus"
        )

    def ztunnel_config(self, namespace: str, pod: str) -> Document:
        argv = self._istioctl("ztunnel-config", "all", f"{pod}.{namespace}", "-o", "json")
        out = istioctl_cli.run(argv, self.conn.istioctl_timeout)
        return (f"istioctl ztunnel-config all {pod}.{namespace}", out)

    def proxy_documents(self, namespace: str, name: str) -> list[Document]:
        argv = self._istioctl("proxy-config", "all", f"{name}.{namespace}", "-o", "json")
        out = istioctl_cli.run(argv, self.conn.istioctl_timeout)
        return [(f"istioctl proxy-config all {name}.{namespace}", out)]


class _PluginErrors(logging.Handler):
    """The kubernetes client logs an exec plugin's failure (and goes on without credentials): keep
    the message for our one-line error instead of letting logging print it on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(one_line(record.getMessage()))


class _TimedPopen(subprocess.Popen):  # type: ignore[type-arg]
    """Popen for exec credential plugins: `communicate` gives up after the request timeout."""

    limit: float = DEFAULT_REQUEST_TIMEOUT

    def communicate(self, input: Any = None, timeout: float | None = None) -> Any:
        try:
            return super().communicate(input, timeout or self.limit)
        except subprocess.TimeoutExpired:
            self.kill()
            super().communicate()
            command = str(self.args[0] if isinstance(self.args, list) and self.args else self.args)
            raise GatherError(
                f"exec credential plugin {command} did not answer within {self.limit:g}s"
            ) from None


class _PluginSubprocess:
    """What kubernetes.config.exec_provider uses of `subprocess`, with the timed Popen."""

    PIPE = subprocess.PIPE
    Popen = _TimedPopen


_PLUGIN_ERRORS = _PluginErrors()


@contextlib.contextmanager
def _credential_plugin_limits(timeout: float | None) -> Iterator[list[str]]:
    """Exec plugins time out, and their errors are collected, not printed: while the kubeconfig loads
    and later (the client runs the plugin again when its token expires)."""
    from kubernetes.config import exec_provider

    _TimedPopen.limit = timeout or DEFAULT_REQUEST_TIMEOUT
    exec_provider.subprocess = _PluginSubprocess  # type: ignore[attr-defined,assignment]
    root = logging.getLogger()
    if _PLUGIN_ERRORS not in root.handlers:
        root.addHandler(_PLUGIN_ERRORS)
    _PLUGIN_ERRORS.messages.clear()
    yield _PLUGIN_ERRORS.messages


def _plain(node: Any) -> Any:
    """The kubernetes client's merged kubeconfig (ConfigNode wrappers) as plain dicts and lists."""
    value = getattr(node, "value", node)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return one_line(str(reason or exc))


def _api_error(status: int, body: bytes, path: str) -> Exception:
    message = ""
    try:
        parsed = jsonutil.loads(body, path)
        if isinstance(parsed, dict):
            message = str(parsed.get("message") or "")
    except InputError:
        message = one_line(body.decode(errors="replace"))[:200]
    if status == 404:
        return NotFoundError(message or f"{path}: not found")
    if status in (401, 403):
        label = "Forbidden" if status == 403 else "Unauthorized"
        return GatherError(f"{label}: {message or path}")
    return GatherError(f"Kubernetes API error {status} for {path}: {message or 'no message'}")
