"""The ordinary mistakes against a cluster: no kubeconfig, a --kubeconfig that does not exist, an API
server that is not there, a typo'd namespace or pod. Each is one `error:` line with the README's exit
code, the same in every command; typos get "did you mean". Workloads are accepted by name. Run as a
user runs it, against the Kubernetes API double (real HTTP) and the istioctl double."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, assert_one_line_error, cli_argv, run_cli
from harness.cluster import FakeCluster
from harness.scenarios import pod_object

EXAMPLE = REPO / "examples" / "rotation"
NS = "shop"
ORDERS, FRONTEND = "orders-7f5b9c6d8-wq4zn", "frontend-6c9f7d8b4-k2x7p"
CLUSTER_COMMANDS = [
    ["check"],
    ["check", "-n", NS],
    ["check", "pod", ORDERS, "-n", NS],
    ["check", "pair", FRONTEND, "svc/orders", "-n", NS],
    ["certs", "-n", NS],
    ["proxy", ORDERS, "-n", NS],
    ["rootdiff", FRONTEND, ORDERS, "-n", NS],
    ["strict-ready", "-n", NS],
]


def bare_env(tmp: Path, **extra: str) -> dict[str, str]:
    """No kubeconfig anywhere, not in a pod: HOME is empty, KUBECONFIG and the in-cluster variables unset."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("KUBERNETES_")}
    return {**env, "HOME": str(tmp), "NO_COLOR": "1", **extra}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli_argv(), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("args", [*CLUSTER_COMMANDS, ["snapshot", "-d", "out", "-n", NS]])
def test_no_kubeconfig_is_one_line_saying_how_to_point_at_a_cluster(tmp_path: Path, args: list[str]) -> None:
    proc = run(bare_env(tmp_path), *args)
    assert proc.returncode == 3, proc.stderr
    assert_one_line_error(proc)
    assert "no Kubernetes cluster configured" in proc.stderr
    for way in ("--kubeconfig", "KUBECONFIG", "--context"):
        assert way in proc.stderr
    assert proc.stdout == ""  # not a `?` per check


@pytest.mark.parametrize("args", CLUSTER_COMMANDS)
def test_a_missing_kubeconfig_file_is_not_found(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "nowhere.yaml"
    proc = run(bare_env(tmp_path), *args, "--kubeconfig", str(missing))
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert f"--kubeconfig {missing}: file not found" in proc.stderr


def test_an_unreachable_api_server_is_one_line_in_check_too(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
        f"clusters: [{{name: gone, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: gone, context: {cluster: gone, user: u}}]\n"
    )
    for args in (["check", "-n", NS], ["check", "-A"], ["certs", "-A"], ["strict-ready", "-n", NS]):
        proc = run(bare_env(tmp_path, KUBECONFIG=str(kubeconfig)), *args)
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        assert_one_line_error(proc)
        assert f"cannot reach the Kubernetes API at http://127.0.0.1:{port}" in proc.stderr
        assert "--context" in proc.stderr and proc.stdout == ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    """The example's shop namespace, served by the API double; istioctl answers with its real dumps."""
    objects = []
    for kind in ("namespaces", "services", "serviceaccounts", "configmaps", "peerauthentications"):
        objects += json.loads((EXAMPLE / "kubernetes" / f"{kind}.json").read_text())["items"]
    objects += json.loads((EXAMPLE / "kubernetes" / "pods.json").read_text())["items"]
    second = pod_object(NS, "orders-7f5b9c6d8-zz9zz", "orders", "orders", owner=("ReplicaSet", "orders-7f5b9c6d8"))
    second["status"]["phase"] = "Failed"  # never picked: not running
    objects.append(second)
    db = pod_object(NS, "ledger-0", "ledger", "orders", owner=("StatefulSet", "ledger"))
    objects.append(db)
    with FakeCluster(tmp_path_factory.mktemp("typos"), objects) as fake:
        for dump in (EXAMPLE / "proxies" / NS).glob("*.json"):
            fake.set_proxy(NS, dump.stem, {"dump": str(dump)})
        fake.set_proxy(NS, "ledger-0", {"dump": str(EXAMPLE / "proxies" / NS / f"{ORDERS}.json")})
        yield fake


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["certs", "-n", "shpo"], 'namespace "shpo" not found; did you mean shop?'),
        (["check", "-n", "shpo"], 'namespace "shpo" not found; did you mean shop?'),
        (["strict-ready", "-n", "shpo"], 'namespace "shpo" not found; did you mean shop?'),
        (["proxy", "ordrs", "-n", NS], 'pod "ordrs" not found in namespace "shop"; did you mean deploy/orders?'),
        (["proxy", "orders", "-n", NS], "did you mean orders-7f5b9c6d8-wq4zn, orders-7f5b9c6d8-zz9zz, deploy/orders?"),
        (["check", "pod", "frontnd", "-n", NS], 'pod "frontnd" not found in namespace "shop"; did you mean'),
        (["rootdiff", FRONTEND, "ordrs", "-n", NS], 'pod "ordrs" not found'),
        (["certs", "ordrs", "-n", NS], 'pod "ordrs" not found'),
        (["check", "pair", "frontnd", "svc/orders", "-n", NS], 'pod "frontnd" not found'),
        (["check", "pair", FRONTEND, "svc/ordrs", "-n", NS], 'service "ordrs" not found in namespace "shop"; did'),
        (["check", "pair", FRONTEND, "svc/orders", "-n", NS, "--port", "99"], "its ports: 8080 (http)"),
        (["proxy", "deploy/ordrs", "-n", NS], "no pod of deploy/ordrs in namespace 'shop'; did you mean orders?"),
        (["proxy", "sts/ledgr", "-n", NS], "did you mean ledger?"),
        (["proxy", "-l", "app=nothing", "-n", NS], "no pod matches -l app=nothing"),
    ],
)
def test_a_typo_is_exit_2_with_did_you_mean(cluster: FakeCluster, args: list[str], says: str) -> None:
    proc = run_cli(*args, env=cluster.env())
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    assert_one_line_error(proc)
    assert says in proc.stderr


def test_snapshot_of_a_typod_namespace_writes_nothing(cluster: FakeCluster, tmp_path: Path) -> None:
    proc = run_cli("snapshot", "-d", str(tmp_path / "snap"), "-n", "shpo", env=cluster.env())
    assert proc.returncode == 2 and "did you mean shop?" in proc.stderr
    assert not (tmp_path / "snap").exists()


@pytest.mark.parametrize(
    ("ref", "extra"),
    [("deploy/orders", ["-n", NS]), ("deployment/orders", ["-n", NS]), ("shop/deployments/orders", []),
     ("sts/ledger", ["-n", NS]), ("statefulset/ledger", ["-n", NS])],
)
def test_a_workload_by_name_picks_a_running_pod_and_says_which(
    cluster: FakeCluster, ref: str, extra: list[str]
) -> None:
    proc = run_cli("proxy", ref, *extra, "-o", "json", env=cluster.env())
    assert proc.returncode == 0, proc.stderr
    chosen = json.loads(proc.stdout)["pod"]
    assert chosen == (ORDERS if "orders" in ref else "ledger-0")  # the Pending one is never picked
    kind = "deploy" if "orders" in ref else "sts"
    assert proc.stderr == f"using pod shop/{chosen} of {kind}/{ref.rsplit('/', 1)[1]}\n"


def test_a_selector_picks_one_pod_where_one_is_asked_for(cluster: FakeCluster) -> None:
    proc = run_cli("proxy", "-l", "app=frontend", "-n", NS, "-o", "json", env=cluster.env())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pod"] == FRONTEND
    assert f"using pod shop/{FRONTEND} of -l app=frontend" in proc.stderr


def test_workloads_by_name_in_rootdiff_certs_check_and_pair(cluster: FakeCluster) -> None:
    diff = run_cli("rootdiff", "deploy/frontend", "deploy/orders", "-n", NS, "-o", "json", env=cluster.env())
    assert diff.returncode == 1
    assert json.loads(diff.stdout)["fix"] == f"kubectl rollout restart deployment/orders -n {NS}"
    certs = run_cli("certs", "deploy/orders", "-n", NS, "-o", "json", env=cluster.env())
    assert certs.returncode == 0 and {i["pod"] for i in json.loads(certs.stdout)["items"]} == {ORDERS}
    check = run_cli("check", "pod", "deploy/orders", "-n", NS, "-o", "json", env=cluster.env())
    assert check.returncode == 1
    assert any(f["check"] == "root-mismatch" and f["name"] == ORDERS for f in json.loads(check.stdout)["findings"])
    pair = run_cli("check", "pair", "deploy/frontend", "svc/orders", "-n", NS, env=cluster.env())
    assert pair.returncode == 1
    assert f"PAIR   {NS}/{FRONTEND} → svc/orders -n {NS}" in pair.stdout


def test_deploy_name_on_the_snapshot() -> None:
    proc = run_cli("rootdiff", "deploy/frontend", "deploy/orders", "-n", NS, "--snapshot", str(EXAMPLE))
    assert proc.returncode == 1
    assert "fix: kubectl rollout restart deployment/orders -n shop" in proc.stdout
    assert proc.stderr.splitlines() == [f"using pod shop/{FRONTEND} of deploy/frontend",
                                        f"using pod shop/{ORDERS} of deploy/orders"]
