"""Callers without a mesh identity that the kubelet's neighbours run: Prometheus scraping a STRICT port."""

from __future__ import annotations

from collections.abc import Iterator

from ..normalize import pod as podinfo
from .apiserver import intercepted
from .base import Finding, check, finding
from .context import Context, key_of, meta

SLUG = "metrics-scrape-strict"
# pilot-agent's merged metrics, Envoy's own stats, the health port: Istio never captures them inbound
AGENT_PORTS = {15020, 15021, 15090}


@check(
    SLUG,
    area="probes",
    severity="error",
    title="Prometheus scrapes sidecar pods through Istio's merged metrics, not a STRICT application port",
    reads=("pods", "peerauthentications"),
    explain="""
What it looks at: pods with a sidecar annotated `prometheus.io/scrape: "true"` whose `prometheus.io/port`
is an application port (not pilot-agent's merged-metrics port 15020 or Envoy's 15090), captured by the
sidecar, where the effective PeerAuthentication is STRICT.

Why it breaks mTLS: Prometheus usually runs without a sidecar and scrapes in plaintext, like the kubelet's
probes; on a STRICT port the sidecar rejects it, so the targets go down (`connection reset by peer`). With
Istio's metrics merging the injector points the annotations at 15020, which Istio never captures; they
still name the application port when merging is off (`enablePrometheusMerge: false`, or the pod's
`prometheus.istio.io/merge-metrics: "false"`) or the annotations were set after injection.

How to fix: turn metrics merging back on for the pod (remove `prometheus.istio.io/merge-metrics: "false"`,
or set `meshConfig.enablePrometheusMerge: true`) and restart it, or a port-level PERMISSIVE exception on
the metrics port (workload PeerAuthentication `portLevelMtls`), or give Prometheus a sidecar that
scrapes with Istio certificates.
""",
)
def metrics_scrape_strict(ctx: Context) -> Iterator[Finding]:
    for pod in ctx.targets:
        if not podinfo.has_envoy(pod) or not ctx.running(pod):
            continue
        annotations = meta(pod).get("annotations") or {}
        if str(annotations.get("prometheus.io/scrape", "")).lower() != "true":
            continue
        value = str(annotations.get("prometheus.io/port", ""))
        if not (value.isascii() and value.isdigit()) or int(value) in AGENT_PORTS:
            continue
        port = int(value)
        if not intercepted(pod, port) or ctx.effective(pod).mode_for(port) != "STRICT":
            continue
        ns, name = key_of(pod)
        yield finding(
            SLUG,
            "error",
            "Pod",
            ns,
            name,
            f"Prometheus scrapes port {port} (prometheus.io/port) in plaintext, without a mesh certificate, and "
            f"the port is STRICT: the scrape is rejected",
            f"kubectl get pod {name} -n {ns} -o jsonpath='{{.metadata.annotations}}'   # turn metrics merging on in "
            f'the workload\'s pod template (no prometheus.istio.io/merge-metrics: "false") and restart it, or a '
            f"port-level PERMISSIVE exception on port {port}",
            pods=[f"{ns}/{name}"],
            port=port,
            caller="Prometheus (no sidecar)",
        )
