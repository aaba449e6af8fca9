"""What every `check pair` walk shares: the destination, the context limited to the two ends, one step,
the server side of a port, the verdict and the table. Sidecar walks (pair.py), cross-cluster walks
(pair_clusters.py) and the probe (probe.py) build on it, and it imports none of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..checks.context import Context, key_of, target_port
from ..normalize import pod as podinfo
from ..render import Style

STEPS = ("sidecar", "client-tls", "identity", "server-mode", "trust", "authz", "probe")
HTTP_PREFIXES = ("http", "grpc")


@dataclass
class Destination:
    kind: str  # "service" | "pod"
    namespace: str
    name: str
    service: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "NS/POD (Succeeded)": selected but not running

    @property
    def label(self) -> str:
        """As kubectl takes it back: `svc/NAME -n NS`, or the pod as `NS/POD`."""
        return f"svc/{self.name} -n {self.namespace}" if self.kind == "service" else f"{self.namespace}/{self.name}"


class PairContext(Context):
    """A Context whose sidecar reads are limited to the two ends of the call: the named pods, and for a
    Service destination every pod of its namespace (the Service's own selector is only known later)."""

    def __init__(self, *args: Any, pods: set[tuple[str, str]], namespaces: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wanted_pods = pods
        self.wanted_namespaces = namespaces

    def _load_pods(self) -> None:
        super()._load_pods()
        self.targets = [p for p in self.pods if key_of(p) in self.wanted_pods or key_of(p)[0] in self.wanted_namespaces]


def step(slug: str, ok: bool | None, detail: str, hint: str | None = None, **evidence: Any) -> dict[str, Any]:
    return {"step": slug, "ok": ok, "detail": detail, "hint": hint, "evidence": evidence}


def service_fqdn(ns: str, name: str) -> str:
    return f"{name}.{ns}.svc.cluster.local"


def protocol_of(service_port: dict[str, Any] | None) -> str:
    if not service_port:
        return "tcp"
    app = str(service_port.get("appProtocol") or "").lower()
    name = str(service_port.get("name") or "").lower()
    return "http" if app.startswith(HTTP_PREFIXES) or name.startswith(HTTP_PREFIXES) else "tcp"


def matches_san(patterns: list[str], identity: str) -> bool:
    """Against the model's SAN patterns: exact, `x*` prefix, `*x` suffix, `regex:` (see normalize.tls)."""
    import re

    for pattern in patterns:
        if pattern.startswith("regex:"):
            if re.fullmatch(pattern.removeprefix("regex:"), identity):
                return True
        elif (
            pattern == identity
            or (pattern.endswith("*") and identity.startswith(pattern[:-1]))
            or (pattern.startswith("*") and identity.endswith(pattern[1:]))
        ):
            return True
    return False


def server_side(
    ctx: Context, pod: dict[str, Any], service_port: dict[str, Any] | None, port: int
) -> tuple[int | None, str | None, str | None]:
    """(target port, what the pod enforces there, what its policies say). What it enforces is its
    sidecar's inbound chains for the port (else the catch-all), "NO_SIDECAR" for a pod without one,
    None when its config was not read or holds nothing for the port."""
    tport = target_port(service_port, pod) if service_port else port
    # PeerAuthentications not read: say so, never a guessed default (what the sidecar enforces decides)
    policy = ctx.effective(pod).mode_for(tport) if ctx.available("peerauthentications") else "not read"
    if podinfo.sidecar_kind(pod) == "absent":
        return tport, "NO_SIDECAR", policy
    proxy = ctx.proxy(pod)
    if proxy is None:
        return tport, None, policy
    if (proxy.model["proxy"] or {}).get("type") == "router" or podinfo.is_gateway(pod):
        return tport, gateway_mode(proxy.model.get("gateway") or [], tport), None  # no PeerAuthentication there
    inbound = proxy.model["inbound"]
    entry = next((e for e in inbound if e["port"] == tport), None) or next(
        (e for e in inbound if e["port"] is None), None
    )
    if entry is None and rejected_inbound(ctx, pod):
        return tport, "REJECTED", policy
    return tport, entry["mode"] if entry else None, policy


def policy_note(policy: str | None) -> str:
    return f" (policy {policy})" if policy else ""


def gateway_mode(servers: list[dict[str, Any]], port: int | None) -> str:
    """What a gateway's servers on one port take, as automtls.accepts reads it: GW_PLAINTEXT, GW_ISTIO_MUTUAL,
    GW_TLS (the gateway terminates or passes through the caller's own TLS), GW_NONE (no server there)."""
    modes = {s["mode"] for s in servers if s["port"] == port}
    if not modes:
        return "GW_NONE"
    if modes == {"PLAINTEXT"}:
        return "GW_PLAINTEXT"
    if modes == {"ISTIO_MUTUAL"}:
        return "GW_ISTIO_MUTUAL"
    return "GW_TLS"


def gateway_servers(ctx: Context, pod: dict[str, Any], port: int | None) -> str:
    proxy = ctx.proxy(pod)
    servers = [s for s in (proxy.model.get("gateway") or []) if s["port"] == port] if proxy else []
    words = []
    for server in servers:
        what = server["mode"] + (f" for {', '.join(server['server_names'])}" if server["server_names"] else "")
        if server["credential"]:
            what += f" with {server['credential']}"
        if server["client_certificate_required"]:
            what += f", client certificate required ({server['ca_credential'] or 'CA unknown'})"
        words.append(what)
    return "; ".join(words) or "none"


def rejected_inbound(ctx: Context, pod: dict[str, Any]) -> str | None:
    """Envoy's error text when it rejected the pod's `virtualInbound` and no earlier version serves."""
    proxy = ctx.proxy(pod)
    for item in (proxy.model.get("rejected") or []) if proxy else []:
        if item["type"] == "listener" and item["name"] == "virtualInbound" and not item["active"]:
            return str(item["error"])
    return None


def enforced_text(ctx: Context, pod: dict[str, Any], enforced: str | None, port: int | None = None) -> str:
    if enforced == "NO_SIDECAR":
        return "has no sidecar"
    if enforced == "GW_NONE":
        return "is a gateway with no server on that port"
    if enforced and enforced.startswith("GW_"):
        return f"is a gateway, its servers there: {gateway_servers(ctx, pod, port)}"
    if enforced == "REJECTED":
        return (
            "has no inbound listener, so it refuses every connection (Envoy rejected virtualInbound: "
            f"{rejected_inbound(ctx, pod)})"
        )
    return f"sidecar enforces {enforced}"


def gather_error(ctx: Context) -> Exception:
    from ..errors import GatherError

    return GatherError(ctx.unavailable.get("pods", "could not list pods"))


def verdict_of(steps: list[dict[str, Any]]) -> tuple[str, str | None, str | None]:
    for item in steps:
        if item["ok"] is False:
            return "fail", item["step"], item["hint"]
        if item["ok"] is None and (item.get("evidence") or {}).get("outcome") == "depends":
            return "depends", item["step"], item["hint"]
        if item["ok"] is None:
            return "unknown", item["step"], item["hint"]
    return "ok", None, None


def evidence_line(evidence: dict[str, Any]) -> str:
    """-o wide: a step's evidence on one line."""
    parts = [
        f"{key.replace('_', ' ')}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
        for key, value in evidence.items()
        if value not in (None, [], {}, "") and not isinstance(value, dict)
    ]
    return "; ".join(parts)


def table(data: dict[str, Any], style: Style, wide: bool = False) -> str:
    marks = {True: style.ok("√"), False: style.error("×"), None: style.warn("?")}
    lines = [f"PAIR   {data['source']} → {data['destination']}"]
    for walk_ in data["ports"]:
        lines.append("")
        lines.append(style.bold(f"port {walk_['port']}"))
        walked = [item["step"] for item in walk_["steps"]]
        for index, item in enumerate(walk_["steps"], 1):
            steps_ = tuple(walk_.get("plan") or STEPS)
            number = steps_.index(item["step"]) + 1 if item["step"] in steps_ else index
            lines.append(f"  {number}. {item['step']:<12} {marks[item['ok']]} {item['detail']}")
            evidence = item.get("evidence") or {}
            if evidence.get("outcome") == "depends":
                lines += [f"     allowed when: {c}" for c in evidence.get("allowed_when") or []]
                lines += [f"     denied when:  {c}" for c in evidence.get("denied_when") or []]
            if item["ok"] is not True and item["hint"]:
                lines.append(f"     fix: {item['hint']}")
            if wide and evidence_line(evidence):
                lines.append(f"     evidence: {evidence_line(evidence)}")
        plan = tuple(walk_.get("plan") or STEPS)  # ambient walks have their own steps
        last = max((plan.index(s) for s in walked if s in plan), default=-1)
        unused = [s for s in plan[:last] if s not in walked]
        if unused:
            lines.append(f"     ({', '.join(unused)}: not part of a plaintext call)")
        skipped = [s for s in plan[last + 1 :] if s != "probe"]
        if walk_["verdict"] != "ok" and walk_["first_failure"] != "require-mtls" and skipped:
            lines.append(f"     (not checked after the first broken link: {', '.join(skipped)})")
        if walk_["mtls"] is False:
            lines.append(style.warn(f"  ‼ plaintext, not mTLS: {walk_['plaintext_reason']}"))
            if walk_["first_failure"] == "require-mtls" and walk_["hint"]:
                lines.append(f"     fix: {walk_['hint']}")
    for entry in data["incomplete"]:
        lines.append(style.warn(f"incomplete: {entry['what']}: {entry['why']}"))
    if data["verdict"] == "ok" and data["mtls"] is False:
        verdict = style.warn("OK: this call works, in plaintext (no mTLS)")
    elif data["first_failure"] == "require-mtls":
        verdict = style.error("FAIL: the call works only in plaintext, and --require-mtls was given")
    else:
        verdict = {
            "ok": style.ok("OK: this call works (mTLS)"),
            "fail": style.error(f"FAIL at {data['first_failure']}"),
            "unknown": style.warn(f"UNKNOWN at {data['first_failure']}: data missing"),
            "depends": style.warn(f"DEPENDS at {data['first_failure']}: on the request (see the conditions above)"),
        }[data["verdict"]]
    lines += ["", f"verdict: {verdict}"]
    return "\n".join(lines) + "\n"
