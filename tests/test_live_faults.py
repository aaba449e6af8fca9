"""Faults on the live path, served by the Kubernetes API double over real HTTP: an API server that never
answers, a `continue` token that repeats, 200 answers of the wrong shape, broken kubeconfigs, a hanging
or failing exec credential plugin. Each ends in one `error:` line with exit 3, in bounded time."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import assert_one_line_error, run_cli
from harness.kubeapi import FakeKubeAPI


def _pod(name: str, namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"serviceAccountName": name, "containers": [{"name": "app"}]},
    }


@pytest.fixture()
def api(tmp_path: Path) -> Any:
    with FakeKubeAPI([_pod("web")]) as fake:
        fake.kubeconfig = fake.write_kubeconfig(tmp_path / "config", namespace="shop")
        yield fake


def _run(api: Any, *args: str, timeout: float = 90) -> Any:
    return run_cli(*args, "--kubeconfig", api.kubeconfig, timeout=timeout)


# -- an API server that never answers ---------------------------------------------------------------
def test_request_timeout_ends_a_hanging_request(api: Any) -> None:
    api.never_answer(path="/pods")
    started = time.monotonic()
    proc = _run(api, "certs", "-n", "shop", "--request-timeout", "1s")
    assert time.monotonic() - started < 30
    assert proc.returncode == 3, proc.stderr
    assert_one_line_error(proc)
    assert "timed out" in proc.stderr.lower() or "timeout" in proc.stderr.lower(), proc.stderr


def test_default_request_timeout_is_30_seconds(api: Any) -> None:
    """Without --request-timeout a hung API server still ends the run: after the documented 30 s."""
    api.never_answer(path="/pods")
    started = time.monotonic()
    proc = _run(api, "certs", "-n", "shop")
    elapsed = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    assert_one_line_error(proc)
    assert 29 <= elapsed < 50, elapsed  # one timeout: a timed-out request is not retried
    assert "default 30s" in run_cli("certs", "--help").stdout


# -- paging ---------------------------------------------------------------------------------------------
def test_repeating_continue_token_stops_and_is_reported(api: Any) -> None:
    api.respond({"kind": "PodList", "metadata": {"continue": "again"}, "items": [_pod("web")]}, path="/pods$")
    proc = _run(api, "certs", "-n", "shop")
    assert proc.returncode == 3, proc.stderr
    assert_one_line_error(proc)
    assert "keeps paging" in proc.stderr and "/api/v1/namespaces/shop/pods" in proc.stderr
    assert sum(1 for r in api.requests if r.path.endswith("/pods")) <= 3  # stopped at the first repeat


# -- 200 answers of the wrong shape ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([1, 2, 3], "not a list of objects"),
        ({"kind": "PodList", "items": "web"}, "not a list of objects"),
        ({"kind": "PodList", "items": ["web"]}, "items[0]: must be an object"),
        ({"kind": "PodList", "items": [{**_pod("web"), "spec": {"containers": "app"}}]}, "spec.containers"),
        ({"kind": "PodList", "items": [], "metadata": {"continue": 7}}, "continue must be a string"),
        ({"kind": "PodList", "items": [{"metadata": {"name": "web", "labels": ["a"]}}]}, "metadata.labels"),
    ],
)
def test_wrong_shape_in_a_list_is_one_line(api: Any, body: Any, says: str) -> None:
    api.respond(body, path="/pods$")
    proc = _run(api, "certs", "-n", "shop")
    assert proc.returncode == 3, proc.stderr
    assert_one_line_error(proc)
    assert says in proc.stderr and "/api/v1/namespaces/shop/pods" in proc.stderr, proc.stderr


@pytest.mark.parametrize("body", [[_pod("web")], "web", {"metadata": "web"}, None])
def test_wrong_shape_for_one_pod_is_one_line(api: Any, body: Any) -> None:
    api.respond(body, path="/pods/web$")
    proc = _run(api, "proxy", "web", "-n", "shop")
    assert proc.returncode in (2, 3), proc.stderr
    assert_one_line_error(proc)
    assert "/api/v1/namespaces/shop/pods/web" in proc.stderr, proc.stderr


# -- broken kubeconfigs ----------------------------------------------------------------------------------
def _config(server: Any = "http://127.0.0.1:1", user: Any = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c"}}],
        "users": [{"name": "c", "user": user if user is not None else {"token": "t"}}],
    }


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("clusters: [unclosed\n  - : :\n", "not valid YAML"),
        ("- a\n- list\n", "must be a map, not a list"),
        ("contexts: oops\n", "contexts must be a list"),
        ("clusters: [{name: c, cluster: x}]\n", "clusters[0].cluster must be a map"),
        (yaml.safe_dump(_config(server=5)), "clusters[0].cluster.server must be a string"),
        (yaml.safe_dump(_config(server="http://[::1")), "Invalid IPv6 URL"),
        (yaml.safe_dump(_config(server="http://127.0.0.1:99999")), "Port out of range"),
        (yaml.safe_dump(_config(server="ftp:/x")), "not an http(s) URL"),
        (yaml.safe_dump(_config(user={"exec": {"args": ["x"]}})), "exec needs a string command"),
        ("current-context: [c]\n", "current-context must be a string"),
    ],
)
def test_broken_kubeconfig_is_one_line(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    proc = run_cli("certs", "-n", "shop", "--kubeconfig", str(path))
    assert proc.returncode == 3, proc.stderr
    assert_one_line_error(proc)
    assert says in proc.stderr, proc.stderr


def test_binary_kubeconfig_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_bytes(b"\x00\xff\xfe binary")
    proc = run_cli("certs", "-n", "shop", "--kubeconfig", str(path))
    assert proc.returncode == 3
    assert_one_line_error(proc)
    assert "not UTF-8 text" in proc.stderr


def _plugin(script: str) -> dict[str, Any]:
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": ["-c", script],
        }
    }


def test_hanging_exec_plugin_times_out(api: Any, tmp_path: Path) -> None:
    path = tmp_path / "exec-config"
    path.write_text(yaml.safe_dump(_config(server=api.url, user=_plugin("import time; time.sleep(600)"))))
    started = time.monotonic()
    proc = run_cli("certs", "-n", "shop", "--kubeconfig", str(path), "--request-timeout", "2s", timeout=60)
    assert time.monotonic() - started < 30
    assert proc.returncode == 3, proc.stderr
    assert_one_line_error(proc)
    assert "did not answer within 2s" in proc.stderr


@pytest.mark.parametrize(
    ("script", "says"),
    [
        ("import sys; sys.stderr.write('token expired, run login'); sys.exit(1)", "token expired, run login"),
        ("print('not json')", "failed to decode process output"),
    ],
)
def test_failing_exec_plugin_is_one_line(api: Any, tmp_path: Path, script: str, says: str) -> None:
    path = tmp_path / "exec-config"
    path.write_text(yaml.safe_dump(_config(server=api.url, user=_plugin(script))))
    proc = run_cli("certs", "-n", "shop", "--kubeconfig", str(path))
    assert proc.returncode == 3, proc.stderr
    assert_one_line_error(proc)
    assert says in proc.stderr and "cannot get credentials" in proc.stderr


def test_working_exec_plugin_still_works(api: Any, tmp_path: Path) -> None:
    token = (
        "import json; print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',"
        " 'kind': 'ExecCredential', 'status': {'token': 'from-plugin'}}))"
    )
    path = tmp_path / "exec-config"
    path.write_text(yaml.safe_dump(_config(server=api.url, user=_plugin(token))))
    proc = run_cli("certs", "-n", "shop", "-o", "json", "--kubeconfig", str(path))
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
