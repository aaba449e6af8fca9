"""Everything the checks read, gathered once per run: objects listed once per kind, sidecars
fetched concurrently, and what could not be read recorded in `incomplete` instead of stopping."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from ..errors import GatherError, InputError, MtlsError, NoClusterError, NotFoundError
from ..gather.ambient import AmbientMesh
from ..istio import destinationrule, peerauthn
from ..labelindex import LabeledIndex, SelectorIndex, string_labels
from ..model import Proxy
from ..normalize import pod as podinfo
from ..sources import Source

T = TypeVar("T")
EXEMPT_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
# Kubernetes kinds a check may read (listed once per run), then the other inputs a check may name.
OBJECT_INPUTS = (
    "namespaces",
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
    "apiservices",
    "customresourcedefinitions",
    "services",
    "serviceaccounts",
    "peerauthentications",
    "destinationrules",
    "authorizationpolicies",
    "configmaps",
    "secrets",
    "networkpolicies",
    "gateways",
)
# What a sidecar's dump may leave unknown (Proxy.unknown): a check reading one of these skips the
# proxies that lack it, and does not run at all when no proxy has it.
PROXY_ASPECTS = ("certificates", "outbound", "inbound")
# `logs` = any log was read; `proxy-logs` / `istiod-logs` = that kind was.
LOG_INPUTS = ("logs", "proxy-logs", "istiod-logs")
INPUTS = ("pods", *OBJECT_INPUTS, "proxies", *PROXY_ASPECTS, "proxy-status", *LOG_INPUTS, "ztunnels", "ztunnel-logs")


@dataclass
class Options:
    istio_namespace: str = "istio-system"
    expiring_within: float | None = None  # seconds
    logs: bool = False
    tail: int = 500
    concurrency: int = 8
    progress: bool = False


@dataclass
class Scope:
    namespace: str | None  # None = every namespace
    pod: str | None = None  # one pod of `namespace`
    selector: str | None = None  # -l: only pods with these labels are checked (all are still read)


@dataclass
class Mesh:
    root_namespace: str = "istio-system"
    trust_domain: str = "cluster.local"
    trust_domain_aliases: list[str] = field(default_factory=list)
    auto_mtls: bool = True
    rewrite_probes: bool = True  # injector default sidecarInjectorWebhook.rewriteAppHTTPProbe
    # Names in meshConfig.extensionProviders (CUSTOM AuthorizationPolicy providers); None when the
    # ConfigMaps could not be read, so a provider's presence is not known.
    extension_providers: list[str] | None = None


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    return meta(obj).get("labels") or {}


def key_of(obj: dict[str, Any]) -> tuple[str, str]:
    # Called for every pod by nearly every check: one metadata lookup, not two.
    m = obj.get("metadata")
    if not isinstance(m, dict):
        return "", ""
    return str(m.get("namespace") or ""), str(m.get("name") or "")


class Context:
    def __init__(self, source: Source, scope: Scope, now: datetime, options: Options) -> None:
        self.source = source
        self.scope = scope
        self.now = now
        self.options = options
        self.incomplete: list[dict[str, str]] = []
        self.unavailable: dict[str, str] = {}
        self.pods: list[dict[str, Any]] = []
        self.targets: list[dict[str, Any]] = []
        self.proxies: dict[tuple[str, str], Proxy] = {}
        self.proxy_status: dict[tuple[str, str], Any] = {}
        self.proxy_logs: dict[tuple[str, str], str] = {}
        self.istiod_logs: dict[str, str] = {}
        self._objects: dict[str, list[dict[str, Any]]] = {}
        self.ambient = AmbientMesh(source, now, options.concurrency)
        self._effective: dict[tuple[str, str], peerauthn.Effective] = {}
        self._indexes: dict[str, Any] = {}  # built on first use from the listed objects; see _index

    # -- loading --------------------------------------------------------------------------------
    def note(self, what: str, why: str) -> None:
        self.incomplete.append({"what": what, "why": why})

    def load(self, needed: Iterable[str]) -> None:
        """Pods first (they say which sidecars to read); then the sidecars, fetched in the background
        while the other kinds are listed, since istioctl calls take far longer than API lists."""
        from concurrent.futures import ThreadPoolExecutor

        needed = set(needed) | {"pods", "namespaces", "configmaps", "peerauthentications"}
        self._load_pods()
        with ThreadPoolExecutor(max_workers=1) as background:
            wants_proxies = "proxies" in needed or bool(needed & set(PROXY_ASPECTS))
            proxies = background.submit(self._load_proxies) if wants_proxies else None
            for kind in OBJECT_INPUTS:
                if kind in needed:
                    self._load_kind(kind)
            if "proxy-status" in needed:
                self._load_proxy_status()
            if needed & set(LOG_INPUTS):
                self._load_logs()
            if "ztunnels" in needed or "ztunnel-logs" in needed:
                self._load_ambient("ztunnel-logs" in needed)
            if proxies is not None:
                proxies.result()

    def _load_pods(self) -> None:
        try:
            self.pods = self.source.list_pods(self.scope.namespace)
        except (NotFoundError, InputError, NoClusterError):
            raise  # a wrong name, a broken snapshot or no cluster at all: one line, not a partial result
        except MtlsError as exc:
            self.unavailable["pods"] = str(exc)
            self.note("pods", str(exc))
            return
        if self.scope.pod is not None:
            self.targets = [p for p in self.pods if meta(p).get("name") == self.scope.pod]
            if not self.targets:
                raise NotFoundError(f'pods "{self.scope.pod}" not found in namespace "{self.scope.namespace}"')
        elif self.scope.selector:
            from ..selectors import matches

            self.targets = [p for p in self.pods if matches(self.scope.selector, labels_of(p))]
        else:
            self.targets = list(self.pods)

    def load_kind(self, kind: str) -> None:
        """One more kind after load() (check pair reads NetworkPolicies only for ambient pairs)."""
        self._load_kind(kind)

    def _load_kind(self, kind: str) -> None:
        """All namespaces in one list where RBAC allows, else the scope's namespace and the root namespace."""
        try:
            self._objects[kind] = self.source.list_objects(kind, None)
            return
        except InputError:
            raise
        except MtlsError as exc:
            first_error = str(exc)
        namespaces = [ns for ns in {self.scope.namespace, self.options.istio_namespace} if ns]
        items: list[dict[str, Any]] = []
        try:
            for ns in namespaces:
                items.extend(self.source.list_objects(kind, ns))
        except MtlsError as exc:
            self.unavailable[kind] = str(exc)
            self.note(kind, str(exc))
            return
        if self.scope.namespace is None:  # a mesh-wide scan that could not list cluster-wide
            self.note(kind, f"listed only in {', '.join(namespaces)}: {first_error}")
        self._objects[kind] = items

    def _load_proxies(self) -> None:
        from ..gather.proxies import load_many

        with_envoy = [p for p in self.targets if podinfo.has_envoy(p)]
        proxies, failures = load_many(
            self.source, with_envoy, self.now, self.options.concurrency, progress=self.options.progress
        )
        for proxy in proxies:
            self.proxies[(proxy.model["namespace"], proxy.model["pod"])] = proxy
            for note in proxy.model["incomplete"]:
                self.note(f"pod {proxy.ref}", note)
        for failure in failures:
            self.note(f"pod {failure['namespace']}/{failure['pod']}", failure["error"])
        if with_envoy and not proxies:
            self.unavailable["proxies"] = "no sidecar config could be read"
        sidecars = [p for p in proxies if p.model["sidecar"] in ("present", "native")]
        for aspect in PROXY_ASPECTS:
            if sidecars and all(not p.knows(aspect) for p in sidecars):
                self.unavailable[aspect] = sidecars[0].unknown[aspect]

    def _load_proxy_status(self) -> None:
        from ..normalize import proxystatus

        try:
            raw = self.source.proxy_status()
            self.proxy_status = dict(proxystatus.parse(raw.decode(errors="replace")))
        except (MtlsError, ValueError) as exc:
            self.unavailable["proxy-status"] = str(exc)
            self.note("istioctl proxy-status", str(exc))

    def _load_logs(self) -> None:
        with_envoy = [p for p in self.targets if podinfo.has_envoy(p)]
        for pod in with_envoy:
            ns, name = key_of(pod)
            try:
                self.proxy_logs[(ns, name)] = self.source.pod_log(ns, name, "istio-proxy", self.options.tail)
            except MtlsError as exc:
                self.note(f"istio-proxy log of {ns}/{name}", str(exc))
        try:
            istiods = self.source.list_pods(self.options.istio_namespace, "app=istiod")
        except MtlsError as exc:
            self.note("istiod pods", str(exc))
            istiods = []
        for pod in istiods:
            ns, name = key_of(pod)
            try:
                self.istiod_logs[name] = self.source.pod_log(ns, name, "discovery", self.options.tail)
            except MtlsError as exc:
                self.note(f"istiod log of {ns}/{name}", str(exc))
        if not self.proxy_logs:
            self.unavailable["proxy-logs"] = "no istio-proxy log could be read"
        if not self.istiod_logs:
            where = self.options.istio_namespace
            self.unavailable["istiod-logs"] = (
                "no istiod log could be read" if istiods else f"no istiod pod (app=istiod) in {where}"
            )
        if not self.proxy_logs and not self.istiod_logs:
            self.unavailable["logs"] = "no log could be read"

    def _load_ambient(self, logs: bool) -> None:
        """The ztunnels, only when some pod of the scope is ambient (see gather.ambient)."""
        labels = {name: labels_of(ns) for name, ns in self.namespaces.items()}
        self.ambient.load(self.pods, self.targets, labels, logs, self.options.tail)
        for what, why in self.ambient.notes:
            self.note(what, why)
        for proxy in self.ambient.proxies.values():
            for note in proxy.model["incomplete"]:
                self.note(f"pod {proxy.ref}", note)
        if self.ambient.unavailable:
            self.unavailable["ztunnels"] = self.ambient.unavailable
        if logs and self.ambient.enrolment and not self.ambient.logs:
            self.unavailable["ztunnel-logs"] = "no ztunnel log could be read"

    # -- lookups ----------------------------------------------------------------------------------
    def available(self, name: str) -> bool:
        return name not in self.unavailable

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return self._objects.get(kind, [])

    @cached_property
    def pods_by_key(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {key_of(p): p for p in self.pods}

    def is_target(self, pod: dict[str, Any]) -> bool:
        """Whether a pod (one of `pods`) is one the scope checks."""
        ids = self._index("targets", lambda: {id(p) for p in self.targets})
        return id(pod) in ids

    @cached_property
    def pods_by_namespace(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for pod in self.pods:
            out.setdefault(key_of(pod)[0], []).append(pod)
        return out

    def proxy(self, pod: dict[str, Any]) -> Proxy | None:
        return self.proxies.get(key_of(pod))

    @cached_property
    def namespaces(self) -> dict[str, dict[str, Any]]:
        return {key_of(ns)[1]: ns for ns in self.objects("namespaces")}

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._index("configmaps", lambda: _first_by_key(self.objects("configmaps"))).get((namespace, name))

    @cached_property
    def ca_setup(self) -> Any:
        """Which CA signs workload certificates (istio.trust.CaSetup): SPIRE, istio-csr, another signer or
        istiod, from the mesh config, istiod's pods, the CA Secrets and the pods' own spec."""
        from ..istio import trust

        ns = self.options.istio_namespace
        cm = self.configmap(ns, "istio")
        mesh = trust.parse_mesh(((cm or {}).get("data") or {}).get("mesh"))
        istiods = [p for p in self.pods if key_of(p)[0] == ns and labels_of(p).get("app") == "istiod"]
        if not istiods:
            try:
                istiods = self.source.list_pods(ns, "app=istiod")
            except MtlsError:
                istiods = []
        held = {key_of(s)[1] for s in self.objects("secrets") if key_of(s)[0] == ns}
        sidecars = [p for p in self.targets if podinfo.has_envoy(p)]
        return trust.detect_ca(mesh, istiods, sidecars, "cacerts" in held, "istio-ca-secret" in held)

    @cached_property
    def mesh(self) -> Mesh:
        """meshConfig from the `istio` ConfigMap (key `mesh`), injector defaults from its values."""
        mesh = Mesh(root_namespace=self.options.istio_namespace)
        cm = self.configmap(self.options.istio_namespace, "istio")
        text = ((cm or {}).get("data") or {}).get("mesh")
        if self.available("configmaps"):
            mesh.extension_providers = []  # Istio's default mesh config has none
        if isinstance(text, str):
            import yaml

            try:
                config = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                self.note(f"ConfigMap {self.options.istio_namespace}/istio", f"mesh config is not YAML: {exc}")
                config = {}
                mesh.extension_providers = None  # unreadable: whether a provider exists is not known
            if isinstance(config, dict):
                mesh.root_namespace = str(config.get("rootNamespace") or mesh.root_namespace)
                mesh.trust_domain = str(config.get("trustDomain") or mesh.trust_domain)
                mesh.trust_domain_aliases = [str(a) for a in config.get("trustDomainAliases") or []]
                mesh.auto_mtls = config.get("enableAutoMtls", True) is not False
                providers = config.get("extensionProviders")
                mesh.extension_providers = (
                    [str(p["name"]) for p in providers if isinstance(p, dict) and isinstance(p.get("name"), str)]
                    if isinstance(providers, list)
                    else mesh.extension_providers
                )
        injector = self.configmap(self.options.istio_namespace, "istio-sidecar-injector")
        values = ((injector or {}).get("data") or {}).get("values")
        if isinstance(values, str):
            import json

            try:
                webhook = json.loads(values).get("sidecarInjectorWebhook") or {}
                mesh.rewrite_probes = webhook.get("rewriteAppHTTPProbe", True) is not False
            except (ValueError, AttributeError):
                pass
        return mesh

    def assume(self, kind: str, obj: dict[str, Any]) -> None:
        """Reason as if `obj` existed (strict-ready's simulated policy); derived answers are recomputed."""
        self._objects[kind] = [obj, *self.objects(kind)]
        self._effective.clear()
        self._indexes.clear()

    # -- indexes: every lookup below costs what its answer costs, not the size of the mesh ----------
    def _index(self, name: str, build: Callable[[], T]) -> T:
        if name not in self._indexes:
            self._indexes[name] = build()
        return self._indexes[name]  # type: ignore[no-any-return]

    def derived(self, name: str, build: Callable[[], T]) -> T:
        """An answer worked out from the listed objects that several checks share, built on first use
        and dropped with the indexes when `assume` changes the objects."""
        return self._index(name, build)

    @property
    def peer_authentications(self) -> peerauthn.Index:
        return self._index(
            "peerauthentications",
            lambda: peerauthn.Index(self.objects("peerauthentications"), self.mesh.root_namespace),
        )

    @property
    def destination_rules(self) -> destinationrule.Index:
        return self._index(
            "destinationrules",
            lambda: destinationrule.Index(self.objects("destinationrules"), self.mesh.root_namespace),
        )

    def effective(self, pod: dict[str, Any]) -> peerauthn.Effective:
        key = key_of(pod)
        if key not in self._effective:
            self._effective[key] = self.peer_authentications.effective(key[0], labels_of(pod))
        return self._effective[key]

    def exempt(self, namespace: str) -> bool:
        """Namespaces Istio never injects into."""
        return namespace in EXEMPT_NAMESPACES or namespace == self.options.istio_namespace

    def select_pods(self, namespace: str | None, selector: Any) -> list[dict[str, Any]]:
        """Pods of `namespace` (None: every namespace) whose labels hold every pair of the equality
        selector, in listing order; a None selector selects them all. (An empty selector means
        different things to different kinds: callers decide before asking.)"""
        index = self._index("pods", lambda: LabeledIndex((key_of(p)[0], meta(p).get("labels"), p) for p in self.pods))
        if selector is None:
            return index.in_scope(namespace)
        if not isinstance(selector, dict):
            return []

        def matches(labels: Any) -> bool:
            return isinstance(labels, dict) and all(labels.get(k) == v for k, v in selector.items())

        if selector and string_labels(selector) is not None:
            return index.select(namespace, selector, matches)
        return [p for p in index.in_scope(namespace) if matches(meta(p).get("labels") or {})]

    def services_of(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        """Services of the pod's namespace whose (non-empty) selector its labels satisfy, in listing order."""
        ns, _ = key_of(pod)
        labels = labels_of(pod)
        if not isinstance(labels, dict):
            return []
        indexed, odd = self._index("services", self._service_index)
        clean = {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}
        found = indexed.matching(ns, clean)
        # Selectors with values that are not strings: compared as written, the slow way (hostile input only).
        found += [(order, svc) for order, selector, svc in odd.get(ns, ()) if _selects(selector, labels)]
        found.sort(key=lambda entry: entry[0])
        return [svc for _, svc in found]

    def _service_index(self) -> tuple[SelectorIndex[tuple[int, dict[str, Any]]], dict[str, list[Any]]]:
        entries: list[tuple[str, dict[str, str], tuple[int, dict[str, Any]]]] = []
        odd: dict[str, list[Any]] = {}
        for order, svc in enumerate(self.objects("services")):
            selector = _service_selector(svc)
            if not selector:
                continue  # a Service without selector selects no pod (its endpoints are managed by hand)
            if string_labels(selector) is None:
                odd.setdefault(key_of(svc)[0], []).append((order, selector, svc))
            else:
                entries.append((key_of(svc)[0], selector, (order, svc)))
        return SelectorIndex(entries), odd

    def pods_of(self, service: dict[str, Any]) -> list[dict[str, Any]]:
        selector = _service_selector(service)
        if not selector:
            return []
        return self.select_pods(key_of(service)[0], selector)

    def service_by_host(self, host: str) -> dict[str, Any] | None:
        """`name.ns.svc.<domain>` -> the Service."""
        parts = host.split(".")
        if len(parts) < 3 or parts[2] != "svc":
            return None
        by_key = self._index("services-by-key", lambda: _first_by_key(self.objects("services")))
        return by_key.get((parts[1], parts[0]))

    def running(self, pod: dict[str, Any]) -> bool:
        phase = (pod.get("status") or {}).get("phase")
        return phase not in ("Succeeded", "Failed")


def _first_by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, name) -> the first object listed with that key, as a scan in listing order finds it."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in objects:
        out.setdefault(key_of(obj), obj)
    return out


def _service_selector(service: dict[str, Any]) -> dict[str, Any]:
    spec = service.get("spec")
    selector = spec.get("selector") if isinstance(spec, dict) else None
    return selector if isinstance(selector, dict) else {}


def _selects(selector: dict[str, Any], labels: dict[str, Any]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def target_port(service_port: dict[str, Any], pod: dict[str, Any]) -> int | None:
    """A Service port's targetPort on one pod (named ports resolve through the pod's containers)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isascii() and target.isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    return None


def progress(message: str) -> None:
    sys.stderr.write(f"\r{message}\033[K")
    sys.stderr.flush()


__all__ = ["Context", "GatherError", "Options", "Scope", "target_port"]
