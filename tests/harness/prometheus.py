"""Run a real Prometheus server scraping a fixture exporter, for tests.

* :class:`Exporter`: a stdlib HTTP server on 127.0.0.1 serving a given exposition text at ``/metrics``;
  :meth:`Exporter.set_text` swaps the text between scrapes (bump counters to create increases) and
  :meth:`Exporter.wait_scraped` waits until a scrape has served it.
* :class:`PrometheusServer`: one ``prometheus`` process on a free 127.0.0.1 port, TSDB in a temp dir,
  ``scrape_interval: 1s`` over the given targets; ready when ``/-/ready`` answers 200. Started with
  ``start_new_session=True`` and stopped by PID (SIGTERM, SIGKILL after 5 s).

The binary: ``$PROMETHEUS_BIN``, ``prometheus`` on PATH, or ``/usr/bin/prometheus`` (Debian package
``prometheus``: ``apt-get install -y --no-install-recommends prometheus``). Tests skip without it::

    PROMETHEUS = find_prometheus()
    pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason=SKIP_REASON)

    with Exporter(text) as exporter, PrometheusServer([exporter.target]) as prom:
        prom.wait_for_series("istio_requests_total")
        exporter.wait_scraped(exporter.set_text(bumped))
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.envoy import free_port
from harness.procs import stop_process

__all__ = [
    "SKIP_REASON",
    "Exporter",
    "PrometheusServer",
    "PrometheusStartError",
    "find_prometheus",
    "prometheus_version",
]

SKIP_REASON = (
    "no Prometheus binary: `apt-get install -y --no-install-recommends prometheus` (Debian) or set $PROMETHEUS_BIN"
)
EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PrometheusStartError(RuntimeError):
    """Prometheus did not become ready (process died, bad config, or deadline passed)."""


def find_prometheus() -> str | None:
    """``$PROMETHEUS_BIN``, ``prometheus`` on PATH, then ``/usr/bin/prometheus``; None if none is executable."""
    candidates = [os.environ.get("PROMETHEUS_BIN") or "", shutil.which("prometheus") or "", "/usr/bin/prometheus"]
    for cand in candidates:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def prometheus_version(binary: str) -> str:
    """First line of ``prometheus --version`` (e.g. ``prometheus, version 2.42.0+ds (branch: ...)``)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    lines = (out.stdout or out.stderr).splitlines()
    return lines[0].strip() if lines else ""


# --------------------------------------------------------------------------------------------------
# fixture exporter


class _ExporterHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "harness-exporter"
    sys_version = ""
    server: _ExporterHTTPServer

    def do_GET(self) -> None:
        generation: int | None = None
        if urllib.parse.urlsplit(self.path).path != "/metrics":
            body = b"404 page not found\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        else:
            generation, text = self.server.exporter._snapshot()
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", EXPOSITION_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if generation is not None:
            self.server.exporter._served(generation)

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass


class _ExporterHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    disable_nagle_algorithm = True
    exporter: Exporter


class Exporter:
    """Serves ``text`` at ``http://127.0.0.1:<port>/metrics`` (any other path: 404). Thread-safe."""

    def __init__(self, text: str = "") -> None:
        self._lock = threading.Condition()
        self._text = text
        self._generation = 0
        self._served_generation = -1
        self.scrapes = 0
        self._server = _ExporterHTTPServer(("127.0.0.1", 0), _ExporterHandler)
        self._server.exporter = self
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="harness-exporter", daemon=True)
        self._started = False

    @property
    def target(self) -> str:
        """``127.0.0.1:<port>``, for a scrape config's ``static_configs``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    def set_text(self, text: str) -> int:
        """Serve ``text`` from now on; returns its generation (for :meth:`wait_scraped`)."""
        with self._lock:
            self._text = text
            self._generation += 1
            return self._generation

    def wait_scraped(self, generation: int | None = None, timeout: float = 10.0) -> None:
        """Block until a scrape has been answered with ``generation`` (default: the current text) or later."""
        deadline = time.monotonic() + timeout
        with self._lock:
            wanted = self._generation if generation is None else generation
            while self._served_generation < wanted:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"exporter {self.target}: generation {wanted} not scraped within {timeout}s")
                self._lock.wait(left)

    def _snapshot(self) -> tuple[int, str]:
        with self._lock:
            return self._generation, self._text

    def _served(self, generation: int) -> None:
        with self._lock:
            self.scrapes += 1
            self._served_generation = max(self._served_generation, generation)
            self._lock.notify_all()

    def start(self) -> Exporter:
        if not self._started:
            self._thread.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._server.shutdown()
            self._thread.join(5)
            self._started = False
        self._server.server_close()

    def __enter__(self) -> Exporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# Prometheus


class PrometheusServer:
    """One real Prometheus scraping ``targets`` (``host:port``, path ``/metrics``) every ``scrape_interval``."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        binary: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        scrape_interval: str = "1s",
        start_timeout: float = 30.0,
        keep: bool = False,
    ) -> None:
        found = binary or find_prometheus()
        if not found:
            raise PrometheusStartError(SKIP_REASON)
        self.binary = found
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.start_timeout = start_timeout
        self.keep = keep
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="mtls-prom-"))
        self.config_path = self.workdir / "prometheus.yml"
        self.log_path = self.workdir / "prometheus.log"
        self.tsdb_path = self.workdir / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log: Any = None

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, attempts: int = 3) -> PrometheusServer:
        """Write the config and start; retry on a fresh port if the chosen one was taken meanwhile."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        last: PrometheusStartError | None = None
        for _ in range(attempts):
            self.port = free_port()
            self._launch()
            try:
                self.wait_ready(self.start_timeout)
                return self
            except PrometheusStartError as exc:
                self.stop(cleanup=False)
                last = exc
                if "address already in use" not in str(exc).lower():
                    raise
        assert last is not None
        raise last

    def _write_config(self) -> None:
        # JSON is YAML: no YAML writer needed.
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "fixture",
                    "honor_labels": True,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def _launch(self) -> None:
        self.tsdb_path.mkdir(parents=True, exist_ok=True)
        argv = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.tsdb_path}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1d",
            f"--web.console.templates={self.workdir}/consoles",
            f"--web.console.libraries={self.workdir}/console_libraries",
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``GET /-/ready`` until 200; PrometheusStartError (with the log tail) if it dies or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise PrometheusStartError(f"prometheus exited ({code}) before ready:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise PrometheusStartError(f"prometheus not ready within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, cleanup: bool = True) -> None:
        """SIGTERM by PID, SIGKILL after 5 s; removes the temp dir unless ``keep``. Idempotent."""
        proc, self.proc = self.proc, None
        stop_process(proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        if cleanup and self._own_dir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<PrometheusServer {self.url} pid={self.pid} targets={self.targets}>"

    # ---- queries -----------------------------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def api(self, path: str, params: dict[str, str] | None = None, timeout: float = 10.0) -> Any:
        """``GET /api/v1/<path>`` -> the ``data`` member; RuntimeError with Prometheus's error otherwise."""
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                raise RuntimeError(f"{url}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from None
        if body.get("status") != "success":
            raise RuntimeError(f"{url}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query -> ``[{"metric": {...}, "value": [ts, "v"]}, ...]``."""
        data = self.api("query", {"query": promql})
        return list(data.get("result") or [])

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 15.0,
    ) -> list[dict[str, Any]]:
        """Poll an instant query until ``predicate(result)`` holds (default: non-empty); returns the result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                targets = self.api("targets").get("activeTargets", [])
                health = [(t.get("scrapeUrl"), t.get("health"), t.get("lastError")) for t in targets]
                raise TimeoutError(f"{promql!r} not satisfied within {timeout}s: {result}; targets {health}")
            time.sleep(0.1)

    def wait_for_series(self, selector: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until ``selector`` (e.g. ``istio_requests_total{reporter="destination"}``) has a sample."""
        return self.wait_for(selector, bool, timeout)

    def wait_for_value(self, selector: str, value: float, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until some series of ``selector`` has exactly ``value`` (a bumped counter was ingested)."""
        return self.wait_for(selector, lambda r: any(float(s["value"][1]) == value for s in r), timeout)
