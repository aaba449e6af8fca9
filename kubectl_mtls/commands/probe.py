"""`kubectl mtls check pair SRC DST --probe`: one real request from SRC, through its sidecar, to DST.

The request is `curl` run through the Kubernetes exec API in SRC's application container, with a unique
`x-request-id`. Istio's access-log format carries %REQ(X-REQUEST-ID)%, so SRC's sidecar log then says
what happened to exactly this request: response code, response flags (UF, UC, NR...), response code
details and the upstream transport failure reason. The rules (../shared/reference/ERROR-SIGNATURES.md
section 2): UF with a transport failure reason = SRC's sidecar rejected the server (root, SAN, expiry,
not TLS); UC without one = the server closed the connection (it rejected SRC's certificate, or had no
filter chain: plaintext to STRICT); NR = no route; a 403 whose server-side line says
`rbac_access_denied...` = an AuthorizationPolicy. Access logs are off by default; then only the HTTP code
is known, and the step says how to turn them on.

Why the application container and not istio-proxy: Istio's iptables rules RETURN every packet sent by
the proxy's own UID (1337), so a curl run in the istio-proxy container bypasses Envoy and leaves the pod
in plaintext; it would test a path no application call takes.

Nothing else is written or run: without --probe, `check pair` never executes anything in a pod.
"""

from __future__ import annotations

import re
import shlex
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .. import jsonutil
from ..checks.context import Context, key_of
from ..errors import InputError, MtlsError, UsageError, one_line
from ..normalize.logs import LogFinding, classify_proxy_log
from ..sources import Source
from ..sources.snapshot import SnapshotSource
from .pair_steps import Destination, service_fqdn, step

PROXY = "istio-proxy"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
CURL_SECONDS = 5
EXEC_TIMEOUT = 20.0  # curl's own -m 5, plus the exec round trip
LOG_TAIL = 200
LOG_WAIT = 3.0  # seconds to wait for the access-log line: Envoy flushes access logs about once a second
LOG_POLL = 0.5
REQUEST_ID_PREFIX = "kubectl-mtls-probe-"
CURL_MISSING_EXIT = (126, 127)
TLS_KINDS = ("unknown-ca", "expired", "san-mismatch", "verify-failed", "tls-to-plaintext", "no-client-cert")
ENABLE_ACCESS_LOGS = (
    "turn on access logs (meshConfig.accessLogFile: /dev/stdout, or a Telemetry resource with accessLogging "
    "providers [envoy]) and probe again"
)

# Istio's text format: [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
# %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
# "%UPSTREAM_TRANSPORT_FAILURE_REASON%" ... "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
# %UPSTREAM_CLUSTER_RAW% ... Searched, not anchored: `kubectl logs --timestamps` prefixes do not matter.
_TEXT = re.compile(
    r'\] "(?P<request>[^"]*)" (?P<code>\d{1,3}) (?P<flags>\S+) (?P<details>\S+) (?P<termination>\S+) '
    r'"(?P<reason>[^"]*)"'
)
_AFTER_ID = re.compile(r'"(?P<authority>[^"]*)" "(?P<upstream_host>[^"]*)" (?P<cluster>\S+)')


@dataclass
class AccessEntry:
    """The fields of one access-log line that tell what happened to the request."""

    line: str
    code: int
    flags: str  # "-", "UF", "URX,UF", ...
    details: str  # %RESPONSE_CODE_DETAILS%: via_upstream, upstream_reset_before_response_started{...}
    reason: str  # %UPSTREAM_TRANSPORT_FAILURE_REASON%, "" when "-"
    upstream_host: str = ""
    cluster: str = ""

    @property
    def flag_set(self) -> set[str]:
        return {f for f in self.flags.split(",") if f and f != "-"}


def parse_entry(line: str, request_id: str) -> AccessEntry | None:
    """The Istio text or JSON access-log line `line`, or None when it is not one."""
    start = line.find("{")
    if start >= 0 and line.rstrip().endswith("}"):
        try:
            entry = jsonutil.loads(line[start:].encode(), "access log")
        except InputError:
            entry = None
        if isinstance(entry, dict) and "response_code" in entry:
            return AccessEntry(
                line=line.strip(),
                code=_int(entry.get("response_code")),
                flags=str(entry.get("response_flags") or "-"),
                details=str(entry.get("response_code_details") or "-"),
                reason=_dash(entry.get("upstream_transport_failure_reason")),
                upstream_host=_dash(entry.get("upstream_host")),
                cluster=_dash(entry.get("upstream_cluster")),
            )
    match = _TEXT.search(line)
    if match is None:
        return None
    after = line.find(f'"{request_id}"', match.end())
    rest = _AFTER_ID.match(line, after + len(request_id) + 3) if after >= 0 else None
    return AccessEntry(
        line=line.strip(),
        code=int(match.group("code")),
        flags=match.group("flags"),
        details=match.group("details"),
        reason=_dash(match.group("reason")),
        upstream_host=_dash(rest.group("upstream_host")) if rest else "",
        cluster=_dash(rest.group("cluster")) if rest else "",
    )


def _dash(value: Any) -> str:
    text = "" if value is None else str(value)
    return "" if text == "-" else text


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def looks_like_access_log(text: str) -> bool:
    """Does a log show any access-log line at all (if not, access logs are most likely off)?"""
    for line in text.splitlines():
        if _TEXT.search(line) or ('"response_code"' in line and line.rstrip().endswith("}")):
            return True
    return False


def app_container(pod: dict[str, Any]) -> str | None:
    """The container whose traffic the sidecar captures: kubectl's default container, else the first
    regular container that is not the proxy."""
    spec = pod.get("spec") or {}
    names = [str(c.get("name")) for c in spec.get("containers") or [] if c.get("name") and c.get("name") != PROXY]
    preferred = ((pod.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CONTAINER)
    if preferred in names:
        return str(preferred)
    return names[0] if names else None


def curl_command(url: str, request_id: str) -> list[str]:
    return [
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        str(CURL_SECONDS),
        "-H",
        f"x-request-id: {request_id}",
        url,
    ]


@dataclass
class Outcome:
    ok: bool | None
    cause: str
    detail: str
    hint: str | None = None


class Prober:
    """Called by `pair.walk` after every static step passed: probe(src_pod, dst, port) -> a `probe` step."""

    def __init__(self, source: Source, ctx: Context, log_wait: float = LOG_WAIT) -> None:
        if isinstance(source, SnapshotSource):  # say so before the walk starts, not after it
            raise UsageError("--probe needs a live cluster, not a snapshot")
        self.source = source
        self.ctx = ctx
        self.log_wait = log_wait

    def __call__(self, src_pod: dict[str, Any], dst: Destination, port: int) -> dict[str, Any]:
        src_ns, src_name = key_of(src_pod)
        src_ref = f"{src_ns}/{src_name}"
        if dst.service is None:
            return step("probe", None, f"{dst.label} has no Service to call")
        svc_ns, svc_name = key_of(dst.service)
        url = f"http://{service_fqdn(svc_ns, svc_name)}:{port}/"
        container = app_container(src_pod)
        if container is None:
            return step(
                "probe",
                None,
                f"{src_ref} has no application container to send the request from (a curl "
                "in istio-proxy would bypass the sidecar)",
                None,
                url=url,
            )
        request_id = REQUEST_ID_PREFIX + str(uuid.uuid4())
        command = curl_command(url, request_id)
        evidence: dict[str, Any] = {
            "url": url,
            "container": container,
            "request_id": request_id,
            "command": shlex.join(command),
        }
        try:
            stdout, stderr, exit_code = self.source.exec(src_ns, src_name, container, command, EXEC_TIMEOUT)
        except UsageError:
            raise
        except MtlsError as exc:
            return step(
                "probe",
                None,
                f"could not run the probe in {src_ref}: {exc}",
                f"run it yourself: kubectl exec -n {src_ns} {src_name} -c {container} -- {shlex.join(command)}",
                **evidence,
            )
        http_code = stdout.strip()[-3:] if stdout.strip()[-3:].isdigit() else ""
        evidence.update(http_code=http_code or None, curl_exit=exit_code, curl_stderr=one_line(stderr)[:300] or None)
        if exit_code is None:
            return step("probe", None, f"the probe did not finish within {EXEC_TIMEOUT:.0f}s", None, **evidence)
        if exit_code in CURL_MISSING_EXIT or "executable file not found" in stderr:
            return step(
                "probe",
                None,
                f"curl is not in {src_ref}'s {container} container (a distroless or minimal "
                "image?), so the probe cannot run there",
                f"kubectl debug -n {src_ns} {src_name} -it --image=curlimages/curl -- {shlex.join(command)}",
                **evidence,
            )
        entry, log_state = self._access_entry(src_ns, src_name, request_id)
        evidence["access_log"] = log_state
        if entry is not None:
            evidence.update(
                access_log_line=entry.line[:600],
                response_code=entry.code,
                response_flags=entry.flags,
                response_code_details=entry.details,
                upstream_transport_failure_reason=entry.reason or None,
                upstream_host=entry.upstream_host or None,
            )
            outcome = self._from_entry(entry, src_ref, dst, request_id, evidence)
        else:
            outcome = self._from_code(http_code, exit_code, stderr, src_ref, log_state)
        evidence["cause"] = outcome.cause
        return step("probe", outcome.ok, outcome.detail, outcome.hint, **evidence)

    # -- reading logs -------------------------------------------------------------------------------
    def _access_entry(self, namespace: str, pod: str, request_id: str) -> tuple[AccessEntry | None, str]:
        """SRC's access-log line for the request, and what the log said: "found", "off", "no line",
        or "unreadable: <why>"."""
        deadline = time.monotonic() + self.log_wait
        text = ""
        while True:
            try:
                text = self.source.pod_log(namespace, pod, PROXY, LOG_TAIL)
            except MtlsError as exc:
                return None, f"unreadable: {exc}"
            line = next((li for li in reversed(text.splitlines()) if request_id in li), None)
            if line is not None:
                entry = parse_entry(line, request_id)
                if entry is not None:
                    return entry, "found"
            if time.monotonic() >= deadline:
                return None, "no line" if looks_like_access_log(text) else "off"
            time.sleep(LOG_POLL)

    def _server_lines(self, dst: Destination, entry: AccessEntry, request_id: str) -> tuple[list[str], list[str]]:
        """(lines carrying the request id, the whole log tails) of the destination pods' sidecars, the
        pod that served the request first (matched by %UPSTREAM_HOST%)."""
        host_ip = entry.upstream_host.rpartition(":")[0].strip("[]")
        pods = sorted(dst.pods, key=lambda p: (p.get("status") or {}).get("podIP") != host_ip)[:3]
        ours: list[str] = []
        tails: list[str] = []
        for pod in pods:
            ns, name = key_of(pod)
            try:
                text = self.source.pod_log(ns, name, PROXY, LOG_TAIL)
            except MtlsError:
                continue
            tails.append(text)
            ours += [li for li in text.splitlines() if request_id in li]
        return ours, tails

    # -- classifying ----------------------------------------------------------------------------------
    def _from_entry(
        self, entry: AccessEntry, src_ref: str, dst: Destination, request_id: str, evidence: dict[str, Any]
    ) -> Outcome:
        flags = entry.flag_set
        code = entry.code
        dst_ref = "/".join(key_of(dst.pods[0])) if dst.pods else dst.label
        said = f"HTTP {code} {entry.flags} {_short(entry.details)}"
        if "UF" in flags:
            finding = _tls_finding(classify_proxy_log(entry.line), "client")
            if finding is not None or entry.reason:
                return _client_rejected(finding, said, src_ref, dst_ref, entry)
            return Outcome(
                False,
                "connect-failure",
                f"{said}: {src_ref}'s sidecar could not connect to "
                f"{entry.upstream_host or dst.label} (refused or unreachable; no TLS error)",
                f"kubectl get endpoints -n {dst.namespace}",
            )
        if "UC" in flags:
            detail = (
                f"{said}: the server closed the connection with no TLS error on {src_ref}'s side: "
                f"{dst.label}'s sidecar rejected {src_ref}'s certificate (unknown root, expired, none) or "
                "had no filter chain for it (plaintext to STRICT)"
            )
            _, tails = self._server_lines(dst, entry, request_id)
            server = _server_finding(tails)
            if server is not None:
                evidence["server_log"] = server.line
                detail += f"; {dst_ref}'s sidecar log shows: {server.summary}"
            return Outcome(False, "server-closed", detail, f"kubectl mtls rootdiff {src_ref} {dst_ref}")
        if "NR" in flags:
            return Outcome(
                False,
                "no-route",
                f"{said}: {src_ref}'s sidecar has no route for this request",
                f"istioctl proxy-config route {src_ref.split('/')[1]}.{src_ref.split('/')[0]}",
            )
        if "UH" in flags:
            return Outcome(
                False,
                "no-healthy-upstream",
                f"{said}: no healthy endpoint of {dst.label}",
                f"kubectl get endpoints -n {dst.namespace}",
            )
        if code == 403:
            ours, _ = self._server_lines(dst, entry, request_id)
            denial = next((f for line in ours for f in classify_proxy_log(line) if f.kind == "rbac-denied"), None)
            if denial is not None:
                evidence["server_log"] = denial.line
                policy = f"policy {denial.policy}" if denial.policy and denial.policy != "none" else "no ALLOW rule"
                return Outcome(
                    False,
                    "authorization",
                    f"{said}: the destination's sidecar denied it ({denial.summary}); mTLS itself works",
                    f"kubectl get authorizationpolicy -n {dst.namespace}   # {policy}",
                )
            if ours:  # the server's line for this request, without an RBAC denial: the application said 403
                return Outcome(True, "app-status", f"{said}: mTLS works; the 403 is the application's own")
            return Outcome(
                False,
                "forbidden",
                f"{said}: an AuthorizationPolicy denial (RBAC: access denied) or "
                f"the application's own 403; {dst_ref}'s access log would say which "
                "(rbac_access_denied_matched_policy[...])",
                f"kubectl get authorizationpolicy -n {dst.namespace}",
            )
        return _by_code(code, said, entry.details)

    def _from_code(self, http_code: str, exit_code: int, stderr: str, src_ref: str, log_state: str) -> Outcome:
        """No access-log line: decide from curl's result alone."""
        if log_state == "off":
            why = (
                f"{src_ref}'s sidecar writes no access log (off by default), so its response flags are "
                f"unknown; {ENABLE_ACCESS_LOGS}"
            )
        elif log_state == "no line":
            why = (
                f"{src_ref}'s access log has no line for this request (did it bypass the sidecar, e.g. "
                "traffic.sidecar.istio.io/excludeOutboundPorts, or is the log late?)"
            )
        else:
            why = f"{src_ref}'s access log could not be read ({log_state.removeprefix('unreadable: ')})"
        if not http_code or http_code == "000":
            return Outcome(
                False,
                "no-response",
                f"no HTTP response (curl exit {exit_code}: {one_line(stderr) or 'no message'}); {why}",
                None,
            )
        code = int(http_code)
        if code == 403:
            return Outcome(
                False,
                "forbidden",
                f"HTTP 403: an AuthorizationPolicy denial (RBAC: access denied) or the application's own 403; {why}",
                None,
            )
        if code == 503:
            return Outcome(
                False,
                "unavailable",
                f"HTTP 503: the sidecar could not complete the call; without the "
                "response flags UF (SRC rejected the server's certificate) and UC (the server rejected "
                f"SRC's) cannot be told apart; {why}",
                ENABLE_ACCESS_LOGS,
            )
        outcome = _by_code(code, f"HTTP {code}", "")
        outcome.detail += f" ({why})"
        return outcome


def _by_code(code: int, said: str, details: str) -> Outcome:
    if 200 <= code < 400 or code == 404:
        return Outcome(True, "ok", f"{said}: the call went through both sidecars; the mTLS path works")
    if code < 500:
        return Outcome(
            True,
            "app-status",
            f"{said}: the destination answered, so the mTLS path works; the {code} is the application's",
        )
    if details == "via_upstream":
        return Outcome(
            False,
            "upstream-error",
            f"{said}: the destination's sidecar accepted the mTLS connection "
            "but the call failed behind it (its application or its own upstream)",
            None,
        )
    return Outcome(False, "failed", f"{said}: the call failed", None)


def _tls_finding(findings: list[LogFinding], side: str) -> LogFinding | None:
    return next((f for f in findings if f.kind in TLS_KINDS and f.side in (side, "unknown")), None)


def _server_finding(tails: list[str]) -> LogFinding | None:
    """The newest server-side refusal in the destination's log: a TLS rejection or a plaintext caller."""
    for text in tails:
        found = [
            f
            for f in classify_proxy_log(text)
            if (f.kind in TLS_KINDS and f.side == "server") or f.kind == "plaintext-to-strict"
        ]
        if found:
            return found[-1]
    return None


def _client_rejected(finding: LogFinding | None, said: str, src_ref: str, dst_ref: str, entry: AccessEntry) -> Outcome:
    """UF with a TLS error: SRC's sidecar refused the server (ERROR-SIGNATURES section 2)."""
    reason = entry.reason or entry.details
    kind = finding.kind if finding is not None else "verify-failed"
    if kind == "unknown-ca":
        return Outcome(
            False,
            "client-rejected-server-root",
            f"{said}: {src_ref}'s sidecar rejected the server's certificate: it lacks the root that "
            f"signed it (roots differ; {_symbol(reason)})",
            f"kubectl mtls rootdiff {src_ref} {dst_ref}",
        )
    if kind == "san-mismatch":
        return Outcome(
            False,
            "client-rejected-server-san",
            f"{said}: {src_ref}'s sidecar rejected the server's identity (SAN mismatch: "
            f"{finding.summary if finding else _symbol(reason)})",
            "check the DestinationRule's subjectAltNames and the destination's service account",
        )
    if kind == "expired":
        return Outcome(
            False,
            "client-rejected-server-expired",
            f"{said}: {src_ref}'s sidecar rejected the server's certificate: it has expired",
            f"kubectl mtls certs {dst_ref.split('/')[1]} -n {dst_ref.split('/')[0]}",
        )
    if kind == "tls-to-plaintext":
        return Outcome(
            False,
            "server-not-tls",
            f"{said}: the server answered TLS with plaintext (WRONG_VERSION_NUMBER): no sidecar or no TLS on that port",
            f"kubectl mtls check pod {dst_ref.split('/')[1]} -n {dst_ref.split('/')[0]}",
        )
    return Outcome(
        False,
        "client-rejected-server",
        f"{said}: {src_ref}'s sidecar rejected the server's certificate ({_symbol(reason)})",
        f"kubectl mtls rootdiff {src_ref} {dst_ref}",
    )


def _short(details: str) -> str:
    """`upstream_reset_before_response_started{remote_connection_failure|TLS_error:...}` ->
    `upstream_reset_before_response_started{remote_connection_failure}`: the TLS error is shown apart."""
    head, brace, rest = details.partition("{")
    return head + brace + rest.split("|", 1)[0].rstrip("}") + "}" if brace else details


def _symbol(reason: str) -> str:
    """`...:CERTIFICATE_VERIFY_FAILED:...:_unable_to_get_local_issuer_certificate:TLS_error_end` ->
    `CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate`."""
    parts = [p.strip("_ ") for p in reason.replace("|", ":").split(":")]
    symbol = next((p for p in parts if p.isupper() and "_" in p and p != "SSL_ROUTINES"), "")
    noise = (
        "",
        "tls error",
        "tls error end",
        "ssl routines",
        "openssl internal",
        "verify cert failed",
        "x509 verify cert",
    )
    words = [
        w
        for p in parts
        if not p.isupper() and not p.isdigit() and (w := p.replace("_", " ").strip()).lower() not in noise
    ]
    last = words[-1] if words else ""
    return ": ".join(x for x in (symbol, last) if x) or one_line(reason)[:160]
