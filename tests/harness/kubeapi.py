"""A small in-process Kubernetes API server double for tests.

Serves discovery, GET list/get with label and field selectors, SelfSubjectAccessReview
and Kubernetes-shaped Status errors, so both the official Python client and a real
kubectl can run against it.  Stdlib only (plus PyYAML for the kubeconfig).
Facts behind the details: ../shared/reference/TEST-HARNESS.md sections 7 and 9.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from harness import wsframes

USER = "system:serviceaccount:default:tester"
# The verbs a real API server advertises for an ordinary resource; we only ever serve GET.
_CRUD = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# on_exec: (namespace, pod, container, command) -> (stdout, stderr, exit code)
ExecHandler = Callable[[str, str, str, list[str]], tuple[bytes, bytes, int]]


@dataclass(frozen=True)
class Resource:
    group: str
    versions: tuple[str, ...]  # first = preferred
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = tuple(_CRUD)

    @property
    def qualified(self) -> str:  # "pods" / "peerauthentications.security.istio.io", as in API messages
        return f"{self.plural}.{self.group}" if self.group else self.plural


_SEC, _NET = ("v1", "v1beta1"), ("v1", "v1beta1", "v1alpha3")
RESOURCES: list[Resource] = [
    Resource("", ("v1",), "pods", "Pod", True, ("po",)),
    Resource("", ("v1",), "namespaces", "Namespace", False, ("ns",)),
    Resource("", ("v1",), "services", "Service", True, ("svc",)),
    Resource("", ("v1",), "serviceaccounts", "ServiceAccount", True, ("sa",)),
    Resource("", ("v1",), "configmaps", "ConfigMap", True, ("cm",)),
    Resource("", ("v1",), "secrets", "Secret", True),
    Resource("", ("v1",), "endpoints", "Endpoints", True, ("ep",)),
    Resource("", ("v1",), "nodes", "Node", False, ("no",)),
    Resource("security.istio.io", _SEC, "peerauthentications", "PeerAuthentication", True, ("pa",)),
    Resource("security.istio.io", _SEC, "authorizationpolicies", "AuthorizationPolicy", True, ("ap",)),
    Resource("security.istio.io", _SEC, "requestauthentications", "RequestAuthentication", True),
    Resource("networking.istio.io", _NET, "destinationrules", "DestinationRule", True, ("dr",)),
    Resource("networking.istio.io", _NET, "virtualservices", "VirtualService", True, ("vs",)),
    Resource("networking.istio.io", _NET, "serviceentries", "ServiceEntry", True, ("se",)),
    Resource("networking.istio.io", _NET, "sidecars", "Sidecar", True),
    Resource("networking.k8s.io", ("v1",), "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    Resource("gateway.networking.k8s.io", ("v1", "v1beta1"), "gateways", "Gateway", True, ("gtw",)),
    Resource(
        "authorization.k8s.io", ("v1",), "selfsubjectaccessreviews", "SelfSubjectAccessReview", False, verbs=("create",)
    ),
    Resource(
        "admissionregistration.k8s.io", ("v1",), "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False
    ),
    Resource(
        "admissionregistration.k8s.io",
        ("v1",),
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        False,
    ),
    Resource("apiregistration.k8s.io", ("v1",), "apiservices", "APIService", False),
    Resource("apiextensions.k8s.io", ("v1",), "customresourcedefinitions", "CustomResourceDefinition", False, ("crd",)),
]
_GROUPS: dict[str, tuple[str, ...]] = {r.group: r.versions for r in RESOURCES}


@dataclass
class Request:
    method: str
    path: str  # as sent, without the query string (discovery paths may end in "/")
    query: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class _Rule:  # an injected failure or delay
    method: str
    path: re.Pattern[str]
    status: int = 0
    seconds: float = 0.0
    times: int | None = None
    message: str | None = None
    body: Any = None  # respond(): the document served instead of the real answer

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and bool(self.path.search(path))


@dataclass
class _Target:  # a parsed resource path
    res: Resource
    version: str
    namespace: str | None
    name: str | None


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


def _split_outside_parens(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in [*parts, cur] if p.strip()]


_LABEL_REQ = re.compile(
    r"^(?:!\s*(?P<absent>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|!=|=)\s*(?P<val>[\w.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<vals>[^()]*)\))?)$"
)


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes equality- and set-based selector semantics (`!=` and `notin` match absent keys)."""
    for req in _split_outside_parens(selector):
        m = _LABEL_REQ.match(req)
        if not m:
            raise ValueError(f"unable to parse requirement: {req!r}")
        if m["absent"]:
            ok = m["absent"] not in labels
        elif m["op"]:
            ok = (labels.get(m["key"]) == m["val"]) != (m["op"] == "!=")
        elif m["setop"]:
            values = {v.strip() for v in m["vals"].split(",")}
            ok = (labels.get(m["key"]) in values) == (m["setop"] == "in")
        else:
            ok = m["key"] in labels
        if not ok:
            return False
    return True


def field_selector_matches(selector: str, obj: dict[str, Any]) -> bool:
    """`path=value`, `path==value`, `path!=value` on any dotted path; a missing field reads as ""."""
    for req in _split_outside_parens(selector):
        m = re.fullmatch(r"([\w.]+)\s*(==|!=|=)\s*(.*)", req)
        if not m:
            raise ValueError(f"invalid field selector: {req!r}")
        value: Any = obj
        for part in m[1].split("."):
            value = value.get(part, "") if isinstance(value, dict) else ""
        if (str(value) == m[3]) == (m[2] == "!="):
            return False
    return True


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        value, shift, i = value | (byte & 0x7F) << shift, shift + 7, i + 1
        if byte < 0x80:
            return value, i


def _pb_fields(buf: bytes) -> dict[int, bytes]:
    """One level of a protobuf message: field number -> bytes (length-delimited) or varint as bytes."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        if key & 7 == 0:
            value, i = _varint(buf, i)
            out[key >> 3] = str(value).encode()
        elif key & 7 == 2:
            n, i = _varint(buf, i)
            out[key >> 3], i = buf[i : i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {key & 7}")
    return out


def ssar_from_protobuf(data: bytes) -> dict[str, Any] | None:
    """kubectl 1.37 posts SSARs as application/vnd.kubernetes.protobuf: b"k8s" NUL + runtime.Unknown
    {1: TypeMeta{1: apiVersion, 2: kind}, 2: raw object}.  Field numbers from authorization/v1
    generated.proto; only the string attributes are decoded."""
    if not data.startswith(b"k8s\x00"):
        return None
    envelope = _pb_fields(data[4:])
    type_meta = _pb_fields(envelope.get(1, b""))
    if type_meta.get(2) != b"SelfSubjectAccessReview":
        return None
    spec = _pb_fields(_pb_fields(envelope.get(2, b"")).get(2, b""))
    names = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource", 6: "subresource", 7: "name"}
    out_spec: dict[str, Any] = {}
    if 1 in spec:
        attrs = _pb_fields(spec[1])
        out_spec["resourceAttributes"] = {names[k]: v.decode() for k, v in attrs.items() if k in names and v}
    if 2 in spec:
        attrs = _pb_fields(spec[2])
        out_spec["nonResourceAttributes"] = {
            n: attrs[k].decode() for k, n in ((1, "path"), (2, "verb")) if attrs.get(k)
        }
    return {
        "apiVersion": type_meta.get(1, b"").decode(),
        "kind": "SelfSubjectAccessReview",
        "metadata": {},
        "spec": out_spec,
    }


class FakeKubeAPI:
    def __init__(self, objects: list[dict[str, Any]] | None = None) -> None:
        self.user = USER  # the identity named in 403 messages
        self.url = ""
        self.requests: list[Request] = []
        self._store: dict[Resource, dict[tuple[str, str], dict[str, Any]]] = {r: {} for r in RESOURCES}
        self._failures: list[_Rule] = []
        self._delays: list[_Rule] = []
        self._responses: list[_Rule] = []
        self._allow: list[tuple[str, str, str | None, str, bool]] = []
        self._rv = itertools.count(1000)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.logs: dict[tuple[str, str, str], str | Callable[[], str]] = {}  # (ns, pod, container) -> text
        self.execs: list[tuple[str, str, str, list[str]]] = []  # (ns, pod, container, command) that ran
        self._exec_handler: ExecHandler | None = None
        for obj in objects or []:
            self.add(obj)

    # ---- configuration -------------------------------------------------------------------------
    def add(self, obj: dict[str, Any]) -> None:
        """Store (or replace) an object; fill the metadata a real server would have set."""
        obj = copy.deepcopy(obj)
        group = obj.get("apiVersion", "").rpartition("/")[0]
        res = next((r for r in RESOURCES if r.group == group and r.kind == obj.get("kind")), None)
        if res is None:
            raise ValueError(f"FakeKubeAPI does not serve {obj.get('apiVersion')} {obj.get('kind')}")
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        # Deterministic uid so tests can assert on it; creation time "now" so ages look sane.
        key = f"{res.qualified}/{meta.get('namespace', '')}/{meta['name']}"
        meta.setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_URL, key)))
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        with self._lock:
            meta.setdefault("resourceVersion", str(next(self._rv)))
            self._store[res][(meta.get("namespace", ""), meta["name"])] = obj

    def fail(
        self, status: int, method: str = "GET", path: str = ".*", times: int | None = None, message: str | None = None
    ) -> None:
        with self._lock:
            self._failures.append(_Rule(method.upper(), re.compile(path), status=status, times=times, message=message))

    def delay(self, seconds: float, method: str = "GET", path: str = ".*") -> None:
        with self._lock:
            self._delays.append(_Rule(method.upper(), re.compile(path), seconds=seconds))

    def respond(self, body: Any, status: int = 200, method: str = "GET", path: str = ".*") -> None:
        """Serve `body` (any JSON value) for matching requests instead of the real answer: a faulty or
        hostile API server (a list where an object belongs, `items` that is not a list of objects, a
        `continue` token that repeats forever)."""
        with self._lock:
            self._responses.append(_Rule(method.upper(), re.compile(path), status=status, body=body))

    def never_answer(self, method: str = "GET", path: str = ".*") -> None:
        """Accept matching requests and never answer them (an API server that hangs)."""
        self.delay(24 * 3600, method, path)

    def allow(
        self, verb: str, resource: str, namespace: str | None = None, group: str = "", allowed: bool = True
    ) -> None:
        """SSAR rule; "*" matches any verb/resource, namespace None any namespace.  Among matching
        rules a namespaced one beats a wildcard one, then the latest added wins."""
        with self._lock:
            self._allow.append((verb, resource, namespace, group, allowed))

    def set_log(self, namespace: str, pod: str, container: str, text: str | Callable[[], str]) -> None:
        """Serve `text` at /api/v1/namespaces/NS/pods/POD/log?container=CONTAINER (tailLines honoured).
        A callable is called on each request for the current text (e.g. a real Envoy's access log)."""
        with self._lock:
            self.logs[(namespace, pod, container)] = text

    def on_exec(self, handler: ExecHandler) -> None:
        """Answer `GET .../pods/POD/exec?command=..&container=..` websocket upgrades by running
        handler(namespace, pod, container, command) -> (stdout, stderr, exit code). Without a handler
        every exec is refused with 403, as RBAC refuses a read-only user."""
        with self._lock:
            self._exec_handler = handler

    def exec_target(self, req: Request, command: list[str]) -> tuple[str, str, str] | tuple[int, dict[str, Any]]:
        """Record an exec request; (namespace, pod, container) to run it in, or the (code, Status) refusing it."""
        path = req.path.rstrip("/")
        with self._lock:
            self.requests.append(req)
            delays = [r.seconds for r in self._delays if r.matches(req.method, path)]
        for seconds in delays:
            time.sleep(seconds)
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec", path)
        if match is None:
            return 404, status_body(404, "NotFound", "the server could not find the requested resource")
        namespace, pod = match[1], match[2]
        failure = self._take_failure(req.method, path)
        with self._lock:
            handler = self._exec_handler
            obj = self._store[next(r for r in RESOURCES if r.plural == "pods")].get((namespace, pod))
        if (failure is not None and failure.status == 403) or (failure is None and handler is None):
            message = (failure.message if failure else None) or (
                f'pods "{pod}" is forbidden: User "{self.user}" cannot create resource "pods/exec" '
                f'in API group "" in the namespace "{namespace}"'
            )
            return 403, status_body(403, "Forbidden", message, {"name": pod, "kind": "pods"})
        if failure is not None:
            return self._injected(failure, req, None)
        if obj is None:
            return 404, status_body(404, "NotFound", f'pods "{pod}" not found', {"name": pod, "kind": "pods"})
        spec = obj.get("spec") or {}
        names = [c.get("name") for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])]
        container = req.query.get("container", "")
        if not container and len(spec.get("containers") or []) == 1:
            container = str(names[0])
        if not container:
            return 400, status_body(
                400, "BadRequest", f"a container name must be specified for pod {pod}, choose one of: {names}"
            )
        if container not in names:
            return 400, status_body(400, "BadRequest", f"container {container} is not valid for pod {pod}")
        if not command:
            return 400, status_body(400, "BadRequest", "you must specify at least 1 command")
        return namespace, pod, container

    def run_exec(self, namespace: str, pod: str, container: str, command: list[str]) -> tuple[bytes, bytes, int]:
        with self._lock:
            handler = self._exec_handler
            self.execs.append((namespace, pod, container, list(command)))
        assert handler is not None
        return handler(namespace, pod, container, list(command))

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def write_kubeconfig(self, path: str | PathLike[str], context: str = "fake", namespace: str | None = None) -> str:
        ctx: dict[str, Any] = {"cluster": context, "user": context}
        if namespace:
            ctx["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": context,
            "preferences": {},
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "contexts": [{"name": context, "context": ctx}],
            "users": [{"name": context, "user": {"token": "fake-token"}}],
        }
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        return str(path)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeKubeAPI:
        api = self

        class Handler(_Handler):
            fake = api

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True  # keep-alive connections must not block stop()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval makes stop() (shutdown) return in ~20 ms instead of up to 0.5 s.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- request handling (called from handler threads) ---------------------------------------
    def handle(self, req: Request) -> tuple[int, Any]:
        path = req.path.rstrip("/") or "/"  # clients ask for "/api/", "/version/"; rules see it stripped
        with self._lock:
            self.requests.append(req)
            delays = [r.seconds for r in self._delays if r.matches(req.method, path)]
        for seconds in delays:  # sleep outside the lock so other requests proceed
            time.sleep(seconds)
        target = self._parse(path)
        with self._lock:
            served = next((r for r in self._responses if r.matches(req.method, path)), None)
        if served is not None:
            return served.status, served.body
        if (failure := self._take_failure(req.method, path)) is not None:
            return self._injected(failure, req, target)
        log = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", path)
        if log and req.method == "GET":
            return self._log(log[1], log[2], req.query)
        if req.method == "POST" and target and target.res.plural == "selfsubjectaccessreviews":
            return 201, self._review(req.body or {})
        if req.method != "GET" or req.query.get("watch") in ("true", "1"):
            # Tests assert the tool only reads; watches are not streamed by this double.
            return 405, status_body(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if (doc := self._discovery(path)) is not None:
            return 200, doc
        if target is None or "get" not in target.res.verbs:
            return 404, status_body(404, "NotFound", "the server could not find the requested resource")
        try:
            return self._read(target, req.query)
        except ValueError as e:
            return 400, status_body(400, "BadRequest", str(e))

    def _take_failure(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._failures:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._failures.remove(rule)
                    return rule
        return None

    def _parse(self, path: str) -> _Target | None:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:  # /namespaces/NS/RESOURCE[/NAME]
            ns, rest = rest[1], rest[2:]
        if len(rest) > 2:  # subresources (log, status, ...) are not served
            return None
        res = next((r for r in RESOURCES if r.group == group and r.plural == rest[0]), None)
        if res is None or version not in res.versions or (ns is not None and not res.namespaced):
            return None
        name = rest[1] if len(rest) == 2 else None
        if name is not None and res.namespaced and ns is None:
            return None
        return _Target(res, version, ns, name)

    def _discovery(self, path: str) -> dict[str, Any] | None:
        if path == "/version":
            return {
                "major": "1",
                "minor": "37",
                "gitVersion": "v1.37.0",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.25.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.removeprefix("http://")}
                ],
            }
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group_doc(g) for g in _GROUPS if g]}
        m = re.fullmatch(r"/apis/([^/]+)", path)
        if m and m[1] in _GROUPS:
            return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(m[1])}
        m = re.fullmatch(r"/api/(v1)|/apis/([^/]+)/([^/]+)", path)
        if not m:
            return None
        group, version = (m[2], m[3]) if m[2] else ("", "v1")
        if version not in _GROUPS.get(group, ()):
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,  # core must say "v1"
            "resources": [
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": list(r.verbs),
                    "shortNames": list(r.short_names),
                }
                for r in RESOURCES
                if r.group == group
            ],
        }

    @staticmethod
    def _group_doc(group: str) -> dict[str, Any]:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in _GROUPS[group]]
        return {"name": group, "versions": versions, "preferredVersion": versions[0]}

    def _read(self, t: _Target, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        api_version = f"{t.res.group}/{t.version}" if t.res.group else t.version
        with self._lock:
            objs = [
                copy.deepcopy(o)
                for (ns, name), o in self._store[t.res].items()
                if t.namespace in (None, ns) and t.name in (None, name)
            ]
        for obj in objs:  # a real server converts to the requested version
            obj["apiVersion"] = api_version
        if t.name is not None:
            if not objs:
                return 404, status_body(404, "NotFound", f'{t.res.qualified} "{t.name}" not found', self._details(t))
            return 200, objs[0]
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        items = [
            o
            for o in objs
            if label_selector_matches(labels, o["metadata"].get("labels") or {}) and field_selector_matches(fields, o)
        ]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        with self._lock:
            rv = str(next(self._rv))
        return 200, {
            "kind": f"{t.res.kind}List",
            "apiVersion": api_version,
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    def _log(self, namespace: str, pod: str, query: dict[str, str]) -> tuple[int, Any]:
        """Pod logs are plain text; an unknown pod or container gets the API server's Status."""
        container = query.get("container", "")
        with self._lock:
            pods = self._store[next(r for r in RESOURCES if r.plural == "pods")]
            known = (namespace, pod) in pods
            text = self.logs.get((namespace, pod, container))
        if callable(text):
            text = text()
        if not known:
            return 404, status_body(404, "NotFound", f'pods "{pod}" not found', {"name": pod, "kind": "pods"})
        if text is None:
            return 400, status_body(400, "BadRequest", f"container {container} is not valid for pod {pod}")
        lines = text.splitlines(keepends=True)
        tail = query.get("tailLines")
        if tail and tail.isdigit():
            lines = lines[-int(tail) :] if int(tail) else []
        return 200, "".join(lines)

    @staticmethod
    def _details(t: _Target) -> dict[str, Any]:
        details = {"name": t.name, "group": t.res.group, "kind": t.res.plural}
        return {k: v for k, v in details.items() if v}  # Go omits empty fields

    def _injected(self, rule: _Rule, req: Request, t: _Target | None) -> tuple[int, dict[str, Any]]:
        code = rule.status
        if code == 403:
            verb = {
                "GET": "list" if t and t.name is None else "get",
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete",
            }.get(req.method, req.method.lower())
            if t is None:
                msg = f'forbidden: User "{self.user}" cannot {verb} path "{req.path}"'
            else:
                who = f'{t.res.qualified} "{t.name}"' if t.name else t.res.qualified
                where = f'in the namespace "{t.namespace}"' if t.namespace else "at the cluster scope"
                msg = (
                    f'{who} is forbidden: User "{self.user}" cannot {verb} resource "{t.res.plural}" '
                    f'in API group "{t.res.group}" {where}'
                )
            return 403, status_body(403, "Forbidden", rule.message or msg, self._details(t) if t else {})
        if code == 404:
            if t and t.name:
                msg = f'{t.res.qualified} "{t.name}" not found'
                return 404, status_body(404, "NotFound", rule.message or msg, self._details(t))
            return 404, status_body(404, "NotFound", rule.message or "the server could not find the requested resource")
        if code == 500:
            cause = rule.message or "injected failure"
            return 500, status_body(
                500, "InternalError", f"Internal error occurred: {cause}", {"causes": [{"message": cause}]}
            )
        reason = {
            400: "BadRequest",
            401: "Unauthorized",
            409: "Conflict",
            410: "Expired",
            429: "TooManyRequests",
            503: "ServiceUnavailable",
            504: "Timeout",
        }.get(code, "Unknown")
        return code, status_body(code, reason, rule.message or reason)

    def _review(self, body: dict[str, Any]) -> dict[str, Any]:
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        verb, resource = attrs.get("verb", ""), attrs.get("resource", "")
        namespace, group = attrs.get("namespace") or None, attrs.get("group", "")
        with self._lock:
            ranked = [
                ((ns is not None, i), ok)
                for i, (v, r, ns, g, ok) in enumerate(self._allow)
                if v in ("*", verb) and r in ("*", resource) and g in ("*", group) and ns in (None, namespace)
            ]
        allowed = max(ranked)[1] if ranked else True
        review = copy.deepcopy(body)
        review.setdefault("apiVersion", "authorization.k8s.io/v1")
        review.setdefault("kind", "SelfSubjectAccessReview")
        review.setdefault("metadata", {})["creationTimestamp"] = None
        # RBAC gives no reason for a denial, so kubectl prints a bare "no" as against a real cluster.
        review["status"] = {"allowed": allowed, "reason": "allowed by FakeKubeAPI" if allowed else ""}
        return review


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKubeAPI
    # HTTP/1.1 keep-alive with Nagle off: otherwise each request costs ~40 ms (delayed ACK).
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        url = urlsplit(self.path)
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket(url.path, url.query)
            return
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self._read_body()
        body: dict[str, Any] | None = None
        if raw.startswith(b"k8s\x00"):
            body = ssar_from_protobuf(raw)
        elif raw:
            # The Python client posts JSON without a Content-Type, so try JSON whatever the header says.
            try:
                parsed = json.loads(raw)
                body = parsed if isinstance(parsed, dict) else None
            except ValueError:
                body = None
        code, doc = self.fake.handle(Request(self.command, url.path, query, body))
        text = isinstance(doc, str)  # pod logs
        data = doc.encode() if text else json.dumps(doc, separators=(",", ":")).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (delay() + timeout tests)
            self.close_connection = True

    def _websocket(self, path: str, raw_query: str) -> None:
        """The exec API: 101 Switching Protocols, the command's output as channel frames (1 stdout,
        2 stderr), its Status on channel 3, then a close frame. Refusals are ordinary HTTP answers."""
        lists = parse_qs(raw_query, keep_blank_values=True)
        req = Request(self.command, path, {k: v[-1] for k, v in lists.items()}, None)
        target = self.fake.exec_target(req, lists.get("command", []))
        protocol = wsframes.choose_subprotocol(self.headers.get("Sec-WebSocket-Protocol", ""))
        key = self.headers.get("Sec-WebSocket-Key", "")
        if len(target) == 3 and (protocol is None or not key):
            target = 400, status_body(400, "BadRequest", "missing Sec-WebSocket-Key or a supported channel protocol")
        self.close_connection = True
        if len(target) == 2:
            code, doc = target
            data = json.dumps(doc, separators=(",", ":")).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        namespace, pod, container = target
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", wsframes.accept_key(key))
        self.send_header("Sec-WebSocket-Protocol", str(protocol))
        self.end_headers()
        stdout, stderr, exit_code = self.fake.run_exec(namespace, pod, container, lists.get("command", []))
        frames = b""
        if stdout:
            frames += wsframes.channel_frame(wsframes.STDOUT, stdout)
        if stderr:
            frames += wsframes.channel_frame(wsframes.STDERR, stderr)
        frames += wsframes.status_frame(exit_code) + wsframes.close_frame()
        try:
            self.wfile.write(frames)
            wsframes.await_close(self.connection, self.rfile)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers up to the blank line
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass
