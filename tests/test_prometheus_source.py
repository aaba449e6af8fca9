"""PrometheusSource against a REAL Prometheus (Debian package `prometheus`) scraping a fixture exporter.

The exporter serves Istio-shaped ``istio_requests_total`` / ``istio_tcp_connections_opened_total`` series as a
server sidecar reports them; the counters are bumped between scrapes so ``increase()`` has something to see.
One module-scoped Prometheus (~6 s: the scrape manager picks up static targets after 5 s).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from harness.envoy import free_port
from harness.pki import spiffe_id
from harness.prometheus import SKIP_REASON, Exporter, PrometheusServer, find_prometheus

from kubectl_mtls.errors import GatherError, UsageError
from kubectl_mtls.normalize.promstats import PlaintextCaller, parse_exposition, seen_destinations
from kubectl_mtls.sources.prometheus import PrometheusSource, check_window, increase_query

PROMETHEUS = find_prometheus()
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason=SKIP_REASON)

REQ = "istio_requests_total"
TCP = "istio_tcp_connections_opened_total"
LEGACY = ("legacy", "batch", "unknown")  # plaintext, from a sidecar with a DestinationRule DISABLE
FRONTEND = ("frontend", "app", spiffe_id("app", "frontend"))  # mutual TLS only
WORKER_PLAIN = ("worker", "batch", "unknown")  # partly migrated workload: plaintext ...
WORKER_MTLS = ("worker", "batch", spiffe_id("batch", "worker"))  # ... and mTLS
CRON = ("cron", "ops", "unknown")  # plaintext to another namespace's workload


def _line(
    name: str, caller: tuple[str, str, str], policy: str, value: int, dst: tuple[str, str] = ("web", "app")
) -> str:
    src, src_ns, principal = caller
    labels = {
        "reporter": "destination",
        "source_workload": src,
        "source_workload_namespace": src_ns,
        "source_principal": principal,
        "source_app": src,
        "destination_workload": dst[0],
        "destination_workload_namespace": dst[1],
        "destination_service": f"{dst[0]}.{dst[1]}.svc.cluster.local",
        "request_protocol": "tcp" if name == TCP else "http",
        "response_code": "0" if name == TCP else "200",
        "response_flags": "-",
        "connection_security_policy": policy,
    }
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" + f" {value}"


def exposition(step: int) -> str:
    """Counters at scrape generation ``step`` (0, then bumped)."""
    k = step
    return "\n".join(
        [
            f"# TYPE {REQ} counter",
            _line(REQ, LEGACY, "none", 10 + 15 * k),
            _line(REQ, FRONTEND, "mutual_tls", 100 + 60 * k),
            _line(REQ, WORKER_PLAIN, "none", 2 + 3 * k),
            _line(REQ, WORKER_MTLS, "mutual_tls", 50 + 40 * k),
            _line(REQ, CRON, "none", 1 + 1 * k, dst=("db", "data")),
            # the source side of some call: policy "unknown", must be ignored
            _line(REQ, LEGACY, "unknown", 500 + 100 * k).replace('reporter="destination"', 'reporter="source"'),
            f"# TYPE {TCP} counter",
            _line(TCP, LEGACY, "none", 3 + 2 * k),
            _line(TCP, FRONTEND, "mutual_tls", 7 + 7 * k),
            # a quiet plaintext series: present, but it does not move within the window
            _line(TCP, ("idle", "batch", "unknown"), "none", 9),
            # Prometheus must store these label values as the parser reads them
            'escape_check{path="C:\\\\DIR\\\\F.TXT",msg="say \\"hi\\"\\nbye",odd="}{,=#"} 1',
            "",
        ]
    )


@dataclass
class World:
    prom: PrometheusServer
    exporter: Exporter
    source: PrometheusSource


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    if PROMETHEUS is None:
        pytest.skip(SKIP_REASON)
    with Exporter(exposition(0)) as exporter, PrometheusServer([exporter.target], binary=PROMETHEUS) as prom:
        prom.wait_for_series(f'{REQ}{{source_workload="legacy"}}', timeout=20)
        exporter.wait_scraped(exporter.set_text(exposition(1)))
        prom.wait_for_value(f'{REQ}{{source_workload="legacy",reporter="destination"}}', 25)
        yield World(prom, exporter, PrometheusSource(prom.url, timeout=5))


def _by_source(callers: list[PlaintextCaller]) -> dict[str, PlaintextCaller]:
    return {c.source_workload: c for c in callers}


# ------------------------------------------------------------------------------------------------
# real Prometheus


@needs_prometheus
def test_plaintext_callers_in_namespace(world: World) -> None:
    callers = world.source.plaintext_callers("app", "5m")
    by_source = _by_source(callers)
    assert set(by_source) == {"legacy", "worker"}  # frontend is mTLS-only; cron calls another namespace
    legacy = by_source["legacy"]
    assert (legacy.destination_workload, legacy.destination_namespace) == ("web", "app")
    assert (legacy.source_namespace, legacy.source_principal) == ("batch", "unknown")
    assert legacy.requests > 0 and legacy.connections > 0
    assert legacy.mtls_requests == 0 and legacy.mtls_connections == 0
    worker = by_source["worker"]
    assert worker.source_principal == "unknown"
    assert worker.requests > 0 and worker.connections == 0
    assert worker.mtls_requests > 0  # its mTLS pods are seen too (under their SPIFFE principal)
    # "idle" never moved inside the window: not a caller
    assert "idle" not in by_source


@needs_prometheus
def test_plaintext_callers_all_namespaces_and_none(world: World) -> None:
    everywhere = world.source.plaintext_callers(None, "5m")
    assert {(c.destination_namespace, c.source_workload) for c in everywhere} == {
        ("app", "legacy"),
        ("app", "worker"),
        ("data", "cron"),
    }
    assert world.source.plaintext_callers("nothere", "1h") == []
    assert seen_destinations(world.source.traffic(None, "5m")) == {("app", "web"), ("data", "db")}


@needs_prometheus
def test_increase_matches_the_bump(world: World) -> None:
    # increase() extrapolates, so compare against a direct query rather than the raw delta of 15
    [legacy] = [c for c in world.source.plaintext_callers("app", "5m") if c.source_workload == "legacy"]
    direct = world.prom.query(
        f'sum(increase({REQ}{{reporter="destination",source_workload="legacy",connection_security_policy="none"}}[5m]))'
    )
    assert legacy.requests == pytest.approx(float(direct[0]["value"][1]), rel=0.5)
    assert legacy.requests >= 15


@needs_prometheus
def test_prometheus_keeps_label_values_as_the_parser_reads_them(world: World) -> None:
    [stored] = world.prom.query("escape_check")
    [(_, parsed, _)] = [s for s in parse_exposition(exposition(1)) if s[0] == "escape_check"]
    assert {k: v for k, v in stored["metric"].items() if k not in ("__name__", "job", "instance")} == parsed
    assert parsed["msg"] == 'say "hi"\nbye'


@needs_prometheus
def test_promql_error_is_one_line_with_prometheus_text(world: World) -> None:
    with pytest.raises(GatherError) as err:
        world.source.query("sum(")
    message = str(err.value)
    assert world.prom.url in message and "\n" not in message
    assert "HTTP 400" in message and "bad_data" in message and "parse error" in message
    assert err.value.exit_code == 3


@needs_prometheus
def test_not_prometheus_http_error(world: World) -> None:
    # The exporter answers 404 for /api/v1/query, like a wrong base URL would.
    source = PrometheusSource(f"http://{world.exporter.target}", timeout=5)
    with pytest.raises(GatherError) as err:
        source.plaintext_callers("app")
    assert str(err.value) == f"Prometheus at http://{world.exporter.target} answered HTTP 404: 404 page not found"


@needs_prometheus
def test_base_url_with_path_and_credentials(world: World) -> None:
    # Prometheus ignores Basic auth when not configured; the password never appears in messages.
    source = PrometheusSource(world.prom.url.replace("http://", "http://me:s3cret@") + "/")
    assert source.url == world.prom.url
    assert "s3cret" not in source.description
    assert _by_source(source.plaintext_callers("app", "5m")).keys() == {"legacy", "worker"}


# ------------------------------------------------------------------------------------------------
# no Prometheus needed


def test_connection_refused_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(GatherError) as err:
        PrometheusSource(url, timeout=2).plaintext_callers("app")
    assert str(err.value) == f"cannot reach Prometheus at {url}: Connection refused"


def test_timeout_is_one_line() -> None:
    with socket.socket() as listener:  # accepts connections (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(GatherError) as err:
            PrometheusSource(url, timeout=0.3).plaintext_callers("app")
    assert url in str(err.value) and "timed out after 0.3s" in str(err.value)


@pytest.mark.parametrize("window", ["30m", "7d", "1w", "12h", "1h30m", "90s", "500ms", "1y", "2w3d"])
def test_valid_windows(window: str) -> None:
    assert check_window(window) == window


@pytest.mark.parametrize("window", ["", "7", "7x", "1.5h", "30m1h", "0s", "0", "-5m", "7 d", "d", "1d;drop", "5m]"])
def test_bad_window_is_usage_error_before_any_request(window: str) -> None:
    source = PrometheusSource(f"http://127.0.0.1:{free_port()}")  # nothing listens: no request is made
    with pytest.raises(UsageError) as err:
        source.plaintext_callers("app", window)
    assert str(err.value) == f"window {window!r} is not a Prometheus duration (e.g. 30m, 12h, 7d, 1w)"
    assert err.value.exit_code == 2


@pytest.mark.parametrize("url", ["localhost:9090", "ftp://host", "http://", "prometheus"])
def test_bad_url_is_usage_error(url: str) -> None:
    with pytest.raises(UsageError):
        PrometheusSource(url)


def test_query_shape() -> None:
    assert increase_query(REQ, "app", "7d") == (
        "sum by (destination_workload, destination_workload_namespace, source_workload, "
        "source_workload_namespace, source_principal, connection_security_policy) "
        '(increase(istio_requests_total{reporter="destination",destination_workload_namespace="app"}[7d]))'
    )
    assert '{reporter="destination"}[30m]' in increase_query(TCP, None, "30m")
    assert 'namespace="a\\"b\\\\c"' in increase_query(REQ, 'a"b\\c', "1h")
