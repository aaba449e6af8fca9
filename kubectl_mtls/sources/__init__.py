"""Where data comes from: a live cluster (Kubernetes API + istioctl) or a snapshot directory.

This package is the only code that does I/O against a cluster. Both sources answer the same
small interface, so every command runs unchanged on either.
"""

from __future__ import annotations

from typing import Any, Protocol

Document = tuple[str, bytes]  # (where it came from, raw JSON bytes as istioctl or a file gave them)


class Source(Protocol):
    description: str  # "cluster (context X)" or "snapshot DIR", for messages

    def default_namespace(self) -> str:
        """-n's default: the kubeconfig context's namespace, else `default`."""
        ...

    def list_pods(self, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        """Pods of one namespace, or of all (namespace None), as Kubernetes JSON objects."""
        ...

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """One Pod; NotFoundError if it does not exist."""
        ...

    def proxy_documents(self, namespace: str, name: str) -> list[Document]:
        """The pod's Envoy config: one raw dump, or istioctl's cluster/listener/secret pieces."""
        ...

    def list_objects(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        """Objects of a kind from `sources.kinds.KINDS` (namespace None = all namespaces)."""
        ...

    def proxy_status(self) -> bytes:
        """What `istioctl proxy-status` printed (JSON where istioctl supports it, else a table)."""
        ...

    def pod_log(self, namespace: str, pod: str, container: str, tail: int) -> str:
        """The last `tail` lines of a container's log."""
        ...

    def exec(
        self, namespace: str, pod: str, container: str, command: list[str], timeout: float
    ) -> tuple[str, str, int | None]:
        """Run a command in a container (only `check pair --probe` does): (stdout, stderr, exit code;
        None when it did not finish within `timeout` seconds)."""
        ...

    def envoy_stats(self, namespace: str, pod: str) -> str:
        """The sidecar's stats in Prometheus text format (`istioctl x envoy-stats POD --output prom`)."""
        ...

    def ztunnel_pods(self) -> list[dict[str, Any]]:
        """The ztunnel pods (DaemonSet `ztunnel`, label app=ztunnel) of the Istio namespace."""
        ...

    def ztunnel_stats(self, namespace: str, pod: str) -> str:
        """A ztunnel's Istio metrics in Prometheus text format (its port 15020, `/stats/prometheus`)."""
        ...

    def ztunnel_config(self, namespace: str, pod: str) -> Document:
        """One ztunnel's config: `istioctl ztunnel-config all <pod>.<ns> -o json`, as printed."""
        ...


def parse_pod_ref(ref: str, default_namespace: str) -> tuple[str, str]:
    """`pod`, `ns/pod` or `pod.ns` -> (namespace, pod). Namespaces never contain dots; pods may."""
    if "/" in ref:
        namespace, _, name = ref.partition("/")
        if name.startswith("pod/") or namespace in ("pod", "pods", "po"):  # kubectl's `pod/NAME` form
            return default_namespace, name.removeprefix("pod/")
        return namespace, name
    if "." in ref:
        name, _, namespace = ref.rpartition(".")
        return namespace, name
    return default_namespace, ref
