"""metrics-scrape-strict: Prometheus without a sidecar scraping a STRICT application port, live against
the API double; not with Istio's merged metrics, not on PERMISSIVE, and named by strict-ready before
the switch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import run_cli
from harness.cluster import FakeCluster
from harness.scenarios import pod_object


def pa(ns: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"mtls": {"mode": mode}},
    }


def scraped(ns: str, name: str, port: str) -> dict[str, Any]:
    return pod_object(
        ns,
        name,
        name.split("-")[0],
        "default",
        annotations={"prometheus.io/scrape": "true", "prometheus.io/port": port},
    )


def objects(mode: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("istio-system", "shop")] + [
        *([pa("shop", mode)] if mode else []),
        scraped("shop", "orders-7f5b9c6d8-wq4zn", "8080"),  # metrics merging off: the app port
        scraped("shop", "carts-6c9f7d8b4-k2x7p", "15020"),  # Istio's merged metrics: never captured
    ]


def found(proc: Any) -> list[dict[str, Any]]:
    return [f for f in json.loads(proc.stdout)["findings"] if f["check"] == "metrics-scrape-strict"]


def test_fires_on_strict_app_port_only(tmp_path: Path) -> None:
    with FakeCluster(tmp_path / "strict", objects("STRICT")) as fake:
        strict = run_cli("check", "-n", "shop", "-o", "json", env=fake.env())
    with FakeCluster(tmp_path / "lax", objects("PERMISSIVE")) as fake:
        lax = run_cli("check", "-n", "shop", "-o", "json", env=fake.env())
    (finding,) = found(strict)
    assert (finding["namespace"], finding["name"], finding["evidence"]["port"]) == (
        "shop",
        "orders-7f5b9c6d8-wq4zn",
        8080,
    )
    assert finding["message"].startswith("Prometheus scrapes port 8080 (prometheus.io/port) in plaintext")
    assert found(lax) == []


def test_strict_ready_names_the_scrape_before_the_switch(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, objects("")) as fake:
        proc = run_cli("strict-ready", "-n", "shop", "-o", "json", env=fake.env())
    after = [f for f in json.loads(proc.stdout)["findings"] if f["check"] == "metrics-scrape-strict"]
    assert [f["name"] for f in after] == ["orders-7f5b9c6d8-wq4zn"]
    assert after[0]["message"].startswith("after the switch: Prometheus scrapes port 8080")
