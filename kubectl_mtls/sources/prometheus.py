"""Prometheus as evidence: who sent plaintext to which workload over a window (Istio standard metrics).

Instant queries over ``GET <url>/api/v1/query`` with the stdlib only. ``url`` is Prometheus's base URL and
may carry a path prefix (a reverse proxy, or ``kubectl proxy``'s
``http://127.0.0.1:8001/api/v1/namespaces/istio-system/services/prometheus:9090/proxy``). Every failure is a
one-line :class:`GatherError` naming the URL and Prometheus's own error text.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..errors import GatherError, UsageError, one_line
from ..normalize.promstats import REQUESTS, TCP_OPENED, PlaintextCaller, Sample, plaintext_callers

DEFAULT_TIMEOUT = 10.0

# The caller's identity plus the policy: everything strict-ready needs, nothing per response code.
GROUP_LABELS = (
    "destination_workload",
    "destination_workload_namespace",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "connection_security_policy",
)

# Prometheus durations (model.ParseDuration): units in descending order, each at most once, integers only.
_DURATION = re.compile(r"(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?")


def check_url(url: str) -> urllib.parse.SplitResult:
    """`url` as a Prometheus base URL, or a UsageError saying what is wrong with it."""
    expected = "expected http://HOST:PORT or https://HOST[:PORT][/PATH]"
    text = url.strip()
    url = re.sub(r"(//[^/@:]*):[^/]*@", r"\1:***@", url)[:200]  # as shown in errors: never the password
    if any(ord(c) < 0x20 or c == "\x7f" for c in text) or " " in text:
        raise UsageError(f"Prometheus URL {url!r}: control characters or spaces; {expected}")
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is out of range or not a number
    except ValueError as exc:
        raise UsageError(f"Prometheus URL {url!r}: {exc}; {expected}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"Prometheus URL {url!r}: {expected}")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise UsageError(f"Prometheus URL {url!r}: {parts.hostname[:60]!r} is not a valid host name") from None
    return parts


class PrometheusSource:
    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        parts = check_url(url)
        self._auth: str | None = None
        netloc = parts.netloc
        if "@" in netloc:  # http://user:pass@host: send Basic auth, never show the password
            userinfo, _, netloc = netloc.rpartition("@")
            user, _, password = userinfo.partition(":")
            token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
            self._auth = "Basic " + base64.b64encode(token).decode("ascii")
        self.url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.timeout = timeout
        self.description = f"Prometheus {self.url}"

    # -- public -------------------------------------------------------------------------------
    def plaintext_callers(self, namespace: str | None, window: str = "7d") -> list[PlaintextCaller]:
        """Callers that reached workloads of ``namespace`` (None: all) without mTLS during ``window``.

        Two instant queries, ``sum by (...) (increase(<metric>{reporter="destination",...}[window]))`` for
        ``istio_requests_total`` and ``istio_tcp_connections_opened_total``; counts are increases, so a
        caller whose plaintext counter did not move inside the window is not returned.
        """
        return plaintext_callers(self.traffic(namespace, window))

    def traffic(self, namespace: str | None, window: str = "7d") -> list[Sample]:
        """The two queries' results as samples (``reporter="destination"`` added), for
        :func:`~kubectl_mtls.normalize.promstats.plaintext_callers` and ``seen_destinations`` alike."""
        check_window(window)
        samples: list[Sample] = []
        for metric in (REQUESTS, TCP_OPENED):
            for labels, value in self.query(increase_query(metric, namespace, window)):
                samples.append((metric, {**labels, "reporter": "destination"}, value))
        return samples

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """One instant query; an instant vector as ``(labels, value)`` pairs (NaN samples dropped)."""
        body = self._get("/api/v1/query", {"query": promql, "timeout": _server_timeout(self.timeout)})
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "vector":
            kind = data.get("resultType") if isinstance(data, dict) else None
            raise GatherError(f"Prometheus at {self.url}: expected an instant vector, got {kind or 'no data'}")
        out: list[tuple[dict[str, str], float]] = []
        for item in data.get("result") or []:
            try:
                labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
                value = float(item["value"][1])
            except (AttributeError, KeyError, IndexError, TypeError, ValueError):
                raise GatherError(f"Prometheus at {self.url}: malformed sample {one_line(str(item))[:200]}") from None
            if not math.isnan(value):
                out.append((labels, value))
        return out

    # -- HTTP ---------------------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}{path}?{urllib.parse.urlencode(params)}",
            headers={"Accept": "application/json", "User-Agent": "kubectl-mtls"},
        )
        if self._auth:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raw = _read_quietly(exc)
            detail = _api_error(raw) or one_line(raw.decode(errors="replace"))[:200] or str(exc.reason)
            raise GatherError(f"Prometheus at {self.url} answered HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise GatherError(f"cannot reach Prometheus at {self.url}: {self._reason(exc.reason)}") from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise GatherError(f"cannot read from Prometheus at {self.url}: {self._reason(exc)}") from None
        try:
            body = json.loads(raw)
        except ValueError:
            start = one_line(raw.decode(errors="replace"))[:80]
            raise GatherError(
                f"Prometheus at {self.url} did not answer JSON (is this Prometheus's base URL?): {start}"
            ) from None
        if not isinstance(body, dict):
            raise GatherError(f"Prometheus at {self.url} did not answer a JSON object")
        if body.get("status") != "success":
            detail = _api_error(raw) or f"status {body.get('status')!r}"
            raise GatherError(f"Prometheus at {self.url}: {detail}")
        return body

    def _reason(self, reason: object) -> str:
        if isinstance(reason, TimeoutError):
            return f"timed out after {self.timeout:g}s"
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror
        return one_line(str(reason)) or type(reason).__name__


# --------------------------------------------------------------------------------------------------
# helpers


def check_window(window: str) -> str:
    """``window`` if it is a Prometheus duration greater than zero (``30m``, ``12h``, ``7d``, ``1w``, ``1h30m``)."""
    if not window or not _DURATION.fullmatch(window) or not any(ch in "123456789" for ch in window):
        raise UsageError(f"window {window!r} is not a Prometheus duration (e.g. 30m, 12h, 7d, 1w)")
    return window


def increase_query(metric: str, namespace: str | None, window: str) -> str:
    matchers = ['reporter="destination"']
    if namespace is not None:
        matchers.append(f"destination_workload_namespace={promql_string(namespace)}")
    by = ", ".join(GROUP_LABELS)
    return f"sum by ({by}) (increase({metric}{{{','.join(matchers)}}}[{check_window(window)}]))"


def promql_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _server_timeout(timeout: float) -> str:
    """Ask Prometheus to give up a little before we do, so its own "query timed out" reaches the user."""
    return f"{max(timeout * 0.9, 0.5):g}"  # plain seconds: the API parses a float before a duration


def _read_quietly(exc: urllib.error.HTTPError) -> bytes:
    try:
        return bytes(exc.read())
    except (OSError, http.client.HTTPException):
        return b""


def _api_error(raw: bytes) -> str:
    """``<errorType>: <error>`` from a Prometheus API error body, else ''."""
    try:
        body = json.loads(raw)
    except ValueError:
        return ""
    if not isinstance(body, dict) or not body.get("error"):
        return ""
    kind = body.get("errorType")
    text = one_line(str(body["error"]))
    return f"{kind}: {text}" if kind else text
