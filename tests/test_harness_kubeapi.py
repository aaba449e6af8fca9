"""The fake API server works with the official Python client and a real kubectl."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from harness.kubeapi import FakeKubeAPI, Request, label_selector_matches
from kubernetes import client, config
from kubernetes.client.rest import ApiException

KUBECTL = os.environ.get("KUBECTL_BIN") or str(Path(sys.executable).with_name("kubectl"))


def pod(name: str, ns: str, phase: str = "Running", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}, "status": {"phase": phase}}


def peer_auth(name: str, ns: str, mode: str) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": ns}, "spec": {"mtls": {"mode": mode}}}


OBJECTS = [
    pod("web-1", "shop", app="web", version="v1"),
    pod("web-2", "shop", app="web", version="v2"),
    pod("db-0", "shop", "Pending", app="db"),
    pod("old", "legacy", app="web"),
    {"apiVersion": "v1", "kind": "Namespace",
     "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}},
    peer_auth("default", "istio-system", "STRICT"),
    peer_auth("legacy-permissive", "legacy", "PERMISSIVE"),
    {"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
     "metadata": {"name": "db", "namespace": "shop"}, "spec": {"host": "db", "trafficPolicy": {}}},
]


@pytest.fixture
def fake() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(OBJECTS) as api:
        yield api


@pytest.fixture
def api_client(fake: FakeKubeAPI, tmp_path: Path) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=fake.write_kubeconfig(tmp_path / "kubeconfig"),
                            client_configuration=cfg, persist_config=False)
    assert cfg.host == fake.url
    return client.ApiClient(cfg)


def names(items: list[Any]) -> list[str]:
    return [f"{i.metadata.namespace}/{i.metadata.name}" for i in items]


# ---- official Python client --------------------------------------------------------------------

def test_list_pods_namespaced_and_cluster_wide(fake: FakeKubeAPI, api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    assert names(core.list_namespaced_pod("shop").items) == ["shop/db-0", "shop/web-1", "shop/web-2"]
    web = core.list_namespaced_pod("shop", label_selector="app=web,version!=v2")
    assert names(web.items) == ["shop/web-1"]
    assert web.kind == "PodList" and web.metadata.resource_version
    everywhere = core.list_pod_for_all_namespaces(label_selector="app in (web)")
    assert names(everywhere.items) == ["legacy/old", "shop/web-1", "shop/web-2"]
    pending = core.list_pod_for_all_namespaces(field_selector="status.phase!=Running")
    assert names(pending.items) == ["shop/db-0"]
    assert fake.requests[0] == Request("GET", "/api/v1/namespaces/shop/pods", {}, None)
    assert fake.requests[1].query == {"labelSelector": "app=web,version!=v2"}
    assert fake.requests[2].path == "/api/v1/pods"


def test_get_pod_and_defaults(api_client: client.ApiClient) -> None:
    p = client.CoreV1Api(api_client).read_namespaced_pod("web-1", "shop")
    assert p.status.phase == "Running" and p.metadata.labels == {"app": "web", "version": "v1"}
    assert p.metadata.uid and p.metadata.resource_version and p.metadata.creation_timestamp


def test_cluster_scoped_namespace(api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    assert core.read_namespace("shop").metadata.labels == {"istio-injection": "enabled"}
    assert [n.metadata.name for n in core.list_namespace(label_selector="istio-injection").items] == ["shop"]


def test_custom_objects(api_client: client.ApiClient) -> None:
    co = client.CustomObjectsApi(api_client)
    pas = co.list_cluster_custom_object("security.istio.io", "v1", "peerauthentications")
    assert pas["kind"] == "PeerAuthenticationList" and pas["apiVersion"] == "security.istio.io/v1"
    assert [i["metadata"]["name"] for i in pas["items"]] == ["default", "legacy-permissive"]
    beta = co.list_namespaced_custom_object("security.istio.io", "v1beta1", "legacy", "peerauthentications")
    assert [i["apiVersion"] for i in beta["items"]] == ["security.istio.io/v1beta1"]
    dr = co.get_namespaced_custom_object("networking.istio.io", "v1", "shop", "destinationrules", "db")
    assert dr["spec"]["host"] == "db"


def test_forbidden_and_not_found(fake: FakeKubeAPI, api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    fake.fail(403, path=r"/namespaces/legacy/pods$")
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod("legacy")
    assert e.value.status == 403
    assert json.loads(e.value.body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods is forbidden: User "system:serviceaccount:default:tester" cannot list resource '
                   '"pods" in API group "" in the namespace "legacy"',
        "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403}

    fake.fail(403, path=r"^/api/v1/pods$", times=1)
    with pytest.raises(ApiException) as e:
        core.list_pod_for_all_namespaces()
    assert json.loads(e.value.body)["message"].endswith('in API group "" at the cluster scope')
    assert len(core.list_pod_for_all_namespaces().items) == 4  # times=1 is used up

    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("x", "shop")
    assert e.value.status == 404 and json.loads(e.value.body)["message"] == 'pods "x" not found'
    with pytest.raises(ApiException) as e:
        client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            "security.istio.io", "v1", "shop", "peerauthentications", "x")
    body = json.loads(e.value.body)
    assert body["message"] == 'peerauthentications.security.istio.io "x" not found'
    assert body["details"] == {"name": "x", "group": "security.istio.io", "kind": "peerauthentications"}


def test_injected_errors_and_delay(fake: FakeKubeAPI, api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    fake.fail(403, path=r"/pods/web-1$", times=1)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("web-1", "shop")
    assert json.loads(e.value.body)["message"] == (
        'pods "web-1" is forbidden: User "system:serviceaccount:default:tester" cannot get resource "pods" '
        'in API group "" in the namespace "shop"')
    fake.fail(500, path="/services", times=2, message="etcd down")
    for _ in range(2):
        with pytest.raises(ApiException) as e:
            core.list_namespaced_service("shop")
        assert e.value.status == 500 and json.loads(e.value.body)["reason"] == "InternalError"
    assert core.list_namespaced_service("shop").items == []

    fake.clear_requests()
    fake.delay(3, path="/configmaps")
    start = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):  # MaxRetryError caused by ReadTimeoutError
        core.list_namespaced_config_map("shop", _request_timeout=0.1)
    assert time.monotonic() - start < 2
    assert len(fake.requests) == 4  # urllib3's default of 3 retries, each one timed out


def test_ssar_rules(fake: FakeKubeAPI, api_client: client.ApiClient) -> None:
    fake.allow("list", "pods", namespace="legacy", allowed=False)
    fake.allow("get", "peerauthentications", group="security.istio.io", allowed=False)
    authz = client.AuthorizationV1Api(api_client)

    def can(verb: str, resource: str, ns: str | None = None, group: str = "") -> bool:
        body = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(verb=verb, resource=resource, namespace=ns,
                                                            group=group)))
        return bool(authz.create_self_subject_access_review(body).status.allowed)

    assert not can("list", "pods", "legacy")
    assert can("list", "pods", "shop")
    assert not can("get", "peerauthentications", "shop", "security.istio.io")
    assert can("get", "peerauthentications", "shop")  # the rule is for group security.istio.io only
    post = fake.requests[-1]
    assert post.method == "POST" and post.path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    assert post.body and post.body["spec"]["resourceAttributes"]["resource"] == "peerauthentications"


def test_ssar_raw_bodies(fake: FakeKubeAPI) -> None:
    """With or without Content-Type, chunked or not; other writes get 405 but are recorded."""
    fake.allow("*", "secrets", allowed=False)
    url = fake.url + "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": "a"}}}
    data = json.dumps(review).encode()
    for body, headers in [(data, {}), (iter([data[:10], data[10:]]), {"Transfer-Encoding": "chunked"})]:
        req = urllib.request.Request(url, data=body, method="POST", headers=headers)  # type: ignore[arg-type]
        with urllib.request.urlopen(req) as resp:
            out = json.loads(resp.read())
        assert resp.status == 201 and out["status"]["allowed"] is False and out["spec"] == review["spec"]
    assert fake.requests[-1].body == review

    req = urllib.request.Request(fake.url + "/api/v1/namespaces/shop/pods/web-1", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 405 and json.loads(e.value.read())["reason"] == "MethodNotAllowed"
    assert fake.requests[-1].method == "DELETE"
    fake.clear_requests()
    assert fake.requests == []


def test_version_and_discovery(api_client: client.ApiClient) -> None:
    v = client.VersionApi(api_client).get_code()
    assert (v.major, v.minor, v.git_version) == ("1", "37", "v1.37.0")
    group_list = client.ApisApi(api_client).get_api_versions()
    groups = {g.name: g.preferred_version.version for g in group_list.groups}
    assert groups["networking.istio.io"] == "v1" and "authorization.k8s.io" in groups
    core = client.CoreV1Api(api_client).get_api_resources()
    assert core.group_version == "v1"
    assert {r.name: r.namespaced for r in core.resources}["nodes"] is False


def test_label_selector_grammar() -> None:
    labels = {"app": "web", "tier": "front"}
    for selector, expected in [
        ("app=web", True), ("app==web", True), ("app!=web", False), ("missing!=x", True),
        ("app in (db, web)", True), ("app notin (db,web)", False), ("missing notin (x)", True),
        ("tier", True), ("!tier", False), ("!missing,app=web", True), ("app=web,tier in (back)", False),
        ("", True),
    ]:
        assert label_selector_matches(selector, labels) is expected, selector
    with pytest.raises(ValueError):
        label_selector_matches("app=(", labels)


def test_unknown_kind_rejected() -> None:
    with pytest.raises(ValueError):
        FakeKubeAPI([{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}])


# ---- real kubectl -----------------------------------------------------------------------------

@pytest.fixture
def kubectl(fake: FakeKubeAPI, tmp_path: Path) -> Any:
    if not shutil.which(KUBECTL):
        pytest.skip("kubectl not installed")
    env = {**os.environ, "KUBECONFIG": fake.write_kubeconfig(tmp_path / "kubeconfig"),
           "KUBECACHEDIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KUBECTL, *args], env=env, capture_output=True, text=True, timeout=30)

    return run


def test_kubectl_get_pods_json(fake: FakeKubeAPI, kubectl: Any) -> None:
    out = kubectl("get", "pods", "-n", "shop", "-l", "app=web", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert [i["metadata"]["name"] for i in json.loads(out.stdout)["items"]] == ["web-1", "web-2"]
    lists = [r for r in fake.requests if r.path == "/api/v1/namespaces/shop/pods"]
    assert lists and lists[0].query["labelSelector"] == "app=web"
    assert {r.method for r in fake.requests} == {"GET"}


def test_kubectl_short_name_all_namespaces(kubectl: Any) -> None:
    out = kubectl("get", "pa", "-A", "-o", "name")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["peerauthentication.security.istio.io/default",
                                  "peerauthentication.security.istio.io/legacy-permissive"]


def test_kubectl_errors(fake: FakeKubeAPI, kubectl: Any) -> None:
    fake.fail(403, path=r"/namespaces/legacy/pods$")
    out = kubectl("get", "pods", "-n", "legacy")
    assert out.returncode == 1
    assert 'Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:default:tester"' \
        in out.stderr
    out = kubectl("get", "dr", "nope", "-n", "shop")
    assert 'Error from server (NotFound): destinationrules.networking.istio.io "nope" not found' in out.stderr


def test_kubectl_auth_can_i(fake: FakeKubeAPI, kubectl: Any) -> None:
    fake.allow("list", "pods", namespace="legacy", allowed=False)
    out = kubectl("auth", "can-i", "list", "pods", "-n", "legacy")
    assert (out.returncode, out.stdout.strip()) == (1, "no"), out.stderr
    out = kubectl("auth", "can-i", "list", "pods", "-n", "shop")
    assert (out.returncode, out.stdout.strip()) == (0, "yes"), out.stderr
    ssar = [r for r in fake.requests if r.method == "POST"]
    assert ssar[0].body and ssar[0].body["spec"]["resourceAttributes"]["namespace"] == "legacy"
