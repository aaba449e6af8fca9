"""`istioctl proxy-status` in every format istioctl prints (ISTIO-RULES.md §1.4).

Upstream golden files come from ../shared/corpus (skipped when absent); the other inputs are built here
in the shapes istioctl prints: Go tabwriter tables (padding 5) and jsonpb DiscoveryResponse documents.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CORPUS, corpus_path
from harness.istioctl_double import go_tabwriter

from kubectl_mtls.normalize.proxystatus import ProxySync, parse

PILOT = "istio/istioctl/pkg/writer/pilot/testdata/"
GOLDEN = [
    "multiXdsStatusMultiPilot.txt",
    "multiXdsStatusMultiPilot_verbose.txt",
    "multiXdsStatusSingleNamespace.yaml",
    "multiXdsStatusSinglePilot.json",
    "multiXdsStatusSinglePilot.txt",
    "multiXdsStatusSinglePilot.yaml",
]
ALL_FIVE = ["CDS", "LDS", "EDS", "RDS", "ECDS"]
CLIENT_CONFIG = "type.googleapis.com/envoy.service.status.v3.ClientConfig"
URL = {
    "CDS": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "LDS": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "EDS": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "RDS": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "ECDS": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
}


def golden(name: str) -> str:
    return corpus_path(PILOT + name).read_text()


# ------------------------------------------------------------------------------------------------
# upstream golden files


def test_every_golden_file_is_covered() -> None:
    folder = corpus_path(PILOT)
    assert sorted(p.name for p in Path(folder).glob("multiXdsStatus*")) == sorted(GOLDEN)


def test_golden_default_table_multi_pilot() -> None:
    status = parse(golden("multiXdsStatusMultiPilot.txt"))
    # The goldens use bare names ("proxy1"), not "<pod>.<ns>": no namespace to split off.
    assert list(status) == [("", "proxy1"), ("", "proxy2"), ("", "proxy3"), ("", "proxy4")]
    assert [(s.istiod, s.version) for s in status.values()] == [
        ("istiod1", "1.20"),
        ("istiod2", "1.19"),
        ("istiod3", "1.20"),
        ("istiod4", "1.20"),
    ]
    for name in ("proxy1", "proxy2", "proxy3"):
        assert status[("", name)].subscribed == ALL_FIVE
    assert status[("", "proxy4")].subscribed == []  # "0": subscribed to nothing
    # The 1.27+ default table has no per-type state.
    assert all(s.types == {} and s.state == "UNKNOWN" and s.error is None for s in status.values())


def test_golden_default_table_single_pilot() -> None:
    status = parse(golden("multiXdsStatusSinglePilot.txt"))
    assert status == {
        ("", "proxy1"): ProxySync("proxy1", "", "istiod1", "1.20", {}, ALL_FIVE, None),
        ("", "proxy2"): ProxySync("proxy2", "", "istiod1", "1.20", {}, ALL_FIVE, None),
    }


def test_golden_verbose_table() -> None:
    status = parse(golden("multiXdsStatusMultiPilot_verbose.txt"))
    proxy = status[("", "proxy1")]
    assert list(status) == [("", "proxy1")]
    # header order CDS ECDS EDS LDS RDS; "NOT SENT" is one cell with a space
    assert proxy.types == {"CDS": "STALE", "ECDS": "SYNCED", "EDS": "SYNCED", "LDS": "SYNCED", "RDS": "NOT SENT"}
    assert proxy.state == "STALE"
    assert (proxy.istiod, proxy.version, proxy.subscribed) == ("istiod1", "1.20", [])


@pytest.mark.parametrize("name", ["multiXdsStatusSinglePilot.json", "multiXdsStatusSinglePilot.yaml"])
def test_golden_json_and_yaml(name: str) -> None:
    status = parse(golden(name))
    proxy = status[("", "proxy1")]
    assert list(status) == [("", "proxy1")]
    assert proxy.types == {"CDS": "STALE", "LDS": "SYNCED", "RDS": "NOT SENT", "EDS": "SYNCED", "ECDS": "SYNCED"}
    assert proxy.state == "STALE"
    assert proxy.istiod == "istiod1"  # from controlPlane.identifier, JSON inside a string
    assert proxy.version == "1.20"  # node.metadata.ISTIO_VERSION, kept as text
    assert proxy.error is None and proxy.subscribed == []


def test_golden_yaml_single_namespace_uses_metadata_namespace() -> None:
    status = parse(golden("multiXdsStatusSingleNamespace.yaml"))
    assert list(status) == [("foo", "proxy1")]
    assert status[("foo", "proxy1")].types["RDS"] == "NOT SENT"


# ------------------------------------------------------------------------------------------------
# tables built here


def test_pre_127_table_with_ages() -> None:
    text = go_tabwriter(
        [
            ("NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"),
            (
                "details-v1-79f774bdb9-x2l4d.bookinfo",
                "Kubernetes",
                "SYNCED (2m)",
                "SYNCED (2m)",
                "SYNCED (2m)",
                "SYNCED (2m)",
                "IGNORED",
                "istiod-5d7d8c9f4-abcde",
                "1.26.2",
            ),
            (
                "istio-ingressgateway-7b9c8d-q7x.istio-system",
                "Kubernetes",
                "STALE (Never Acknowledged)",
                "SYNCED (5m)",
                "SYNCED (5m)",
                "NOT SENT",
                "IGNORED",
                "istiod-5d7d8c9f4-abcde",
                "1.26.2",
            ),
            (
                "reviews-v2.0-6c9c7-zz.prod",  # a dot inside the pod name: namespace is after the last dot
                "Kubernetes",
                "SYNCED (1m)",
                "ERROR (1m)",
                "SYNCED (1m)",
                "STALE (1m)",
                "IGNORED",
                "istiod-5d7d8c9f4-fghij",
                "1.25.0",
            ),
        ]
    )
    status = parse(text)
    assert list(status) == [
        ("bookinfo", "details-v1-79f774bdb9-x2l4d"),
        ("istio-system", "istio-ingressgateway-7b9c8d-q7x"),
        ("prod", "reviews-v2.0-6c9c7-zz"),
    ]
    details = status[("bookinfo", "details-v1-79f774bdb9-x2l4d")]
    assert details.types == {"CDS": "SYNCED", "LDS": "SYNCED", "EDS": "SYNCED", "RDS": "SYNCED", "ECDS": "IGNORED"}
    assert details.state == "SYNCED"  # IGNORED does not count
    assert (details.istiod, details.version) == ("istiod-5d7d8c9f4-abcde", "1.26.2")
    gateway = status[("istio-system", "istio-ingressgateway-7b9c8d-q7x")]
    assert gateway.types["CDS"] == "STALE" and gateway.types["RDS"] == "NOT SENT"
    assert gateway.state == "STALE"
    reviews = status[("prod", "reviews-v2.0-6c9c7-zz")]
    assert reviews.types["LDS"] == "ERROR" and reviews.state == "ERROR"
    assert reviews.error is None  # tables carry no NACK detail


def test_oldest_table_without_cluster_column() -> None:
    text = go_tabwriter(
        [
            ("NAME", "CDS", "LDS", "EDS", "RDS", "ISTIOD", "VERSION"),
            ("sleep-7b9f8c-abc.default", "SYNCED", "SYNCED", "SYNCED", "NOT SENT", "istiod-1", "1.8.0"),
        ]
    )
    proxy = parse(text)[("default", "sleep-7b9f8c-abc")]
    assert proxy.state == "NOT SENT" and proxy.istiod == "istiod-1"


def test_127_default_table_real_names() -> None:
    text = go_tabwriter(
        [
            ("NAME", "CLUSTER", "ISTIOD", "VERSION", "SUBSCRIBED TYPES"),
            (
                "productpage-v1-5fb5d4c744-w5nxx.bookinfo",
                "Kubernetes",
                "istiod-7d4f74889d-mb5dh",
                "1.27.1",
                "4 (CDS,LDS,EDS,RDS)",
            ),
            ("ztunnel-abcde.istio-system", "Kubernetes", "istiod-7d4f74889d-mb5dh", "1.27.1", "2 (WADS,WDS)"),
        ]
    )
    status = parse(text)
    assert status[("bookinfo", "productpage-v1-5fb5d4c744-w5nxx")].subscribed == ["CDS", "LDS", "EDS", "RDS"]
    assert status[("istio-system", "ztunnel-abcde")].subscribed == ["WADS", "WDS"]
    assert all(s.state == "UNKNOWN" for s in status.values())


def test_verbose_table_any_column_order() -> None:
    text = go_tabwriter(
        [
            ("NAME", "CLUSTER", "ISTIOD", "VERSION", "RDS", "LDS", "EDS", "ECDS", "CDS"),
            ("a-1.ns1", "c1", "istiod-x", "1.28.0", "SYNCED", "SYNCED", "STALE", "NOT SENT", "SYNCED"),
        ]
    )
    proxy = parse(text)[("ns1", "a-1")]
    assert proxy.types == {"RDS": "SYNCED", "LDS": "SYNCED", "EDS": "STALE", "ECDS": "NOT SENT", "CDS": "SYNCED"}
    assert proxy.state == "STALE" and proxy.istiod == "istiod-x" and proxy.version == "1.28.0"


@pytest.mark.parametrize(
    "header",
    [
        "NAME     CLUSTER     ISTIOD     VERSION     SUBSCRIBED TYPES\n",
        "NAME     CLUSTER     CDS     LDS     EDS     RDS     ECDS     ISTIOD     VERSION\n",
        "NAME     CLUSTER     CDS     ECDS     EDS     LDS     RDS     ISTIOD     VERSION\n\n",
    ],
)
def test_header_only_table_means_no_proxies(header: str) -> None:
    assert parse(header) == {}


def test_misaligned_table_is_refused_not_misread() -> None:
    text = "NAME     CLUSTER     ISTIOD     VERSION\nsleep-abc.default Kubernetes istiod-1 1.28\n"
    with pytest.raises(ValueError, match="not column-aligned"):
        parse(text)


# ------------------------------------------------------------------------------------------------
# JSON / YAML built here


def client_config(pod: str, ns: str, states: dict[str, str], **extra: dict[str, object]) -> dict[str, object]:
    configs: list[dict[str, object]] = []
    for short, state in states.items():
        cfg: dict[str, object] = {"typeUrl": URL[short]}
        if state != "UNKNOWN":  # jsonpb omits enum zero values
            cfg["configStatus"] = state
        cfg.update(extra.get(short, {}))
        configs.append(cfg)
    return {
        "@type": CLIENT_CONFIG,
        "node": {
            "id": f"{pod}.{ns}",
            "metadata": {"CLUSTER_ID": "Kubernetes", "NAMESPACE": ns, "ISTIO_VERSION": "1.30.0"},
        },
        "genericXdsConfigs": configs,
    }


def response(istiod: str, *resources: dict[str, object]) -> dict[str, object]:
    ident = {"Component": "istiod", "ID": istiod, "Info": {"version": "1.30.0", "revision": "default"}}
    return {
        "versionInfo": "1.30.0",
        "resources": list(resources),
        "typeUrl": CLIENT_CONFIG,
        "controlPlane": {"identifier": json.dumps(ident, separators=(",", ":"))},
    }


SYNCED = dict.fromkeys(ALL_FIVE, "SYNCED")


def test_concatenated_json_from_two_istiods() -> None:
    one = response("istiod-aaa", client_config("sleep-1", "default", SYNCED))
    two = response(
        "istiod-bbb",
        client_config("httpbin-2", "prod", {**SYNCED, "EDS": "STALE"}),
        client_config("legacy-3", "prod", {**SYNCED, "RDS": "NOT_SENT", "ECDS": "UNKNOWN"}),
    )
    # istioctl prints one indented document per istiod, back to back
    text = json.dumps(one, indent=4) + "\n" + json.dumps(two, indent=4) + "\n"
    status = parse(text)
    assert list(status) == [("default", "sleep-1"), ("prod", "httpbin-2"), ("prod", "legacy-3")]
    assert status[("default", "sleep-1")].istiod == "istiod-aaa"
    assert status[("default", "sleep-1")].state == "SYNCED"
    assert status[("prod", "httpbin-2")].istiod == "istiod-bbb"
    assert status[("prod", "httpbin-2")].state == "STALE"
    legacy = status[("prod", "legacy-3")]
    assert legacy.types["RDS"] == "NOT SENT" and legacy.types["ECDS"] == "IGNORED"
    assert legacy.state == "NOT SENT"
    assert legacy.version == "1.30.0"

    # no whitespace between documents at all
    compact = json.dumps(one) + json.dumps(two)
    assert parse(compact) == status


def test_json_nack_is_error_with_detail() -> None:
    detail = "Error adding/updating listener(s) virtualInbound: Invalid path: /etc/certs/missing.pem"
    doc = response(
        "istiod-aaa",
        client_config(
            "ratings-v1-abc",
            "bookinfo",
            {**SYNCED, "LDS": "ERROR"},
            LDS={"errorState": {"details": detail, "lastUpdateAttempt": "2026-01-01T00:00:00Z"}},
        ),
    )
    proxy = parse(json.dumps(doc, indent=4))[("bookinfo", "ratings-v1-abc")]
    assert proxy.state == "ERROR"
    assert proxy.types["LDS"] == "ERROR" and proxy.types["CDS"] == "SYNCED"
    assert proxy.error == f"LDS: {detail}"


def test_json_client_nacked_counts_as_error() -> None:
    doc = response(
        "istiod-aaa",
        client_config("a", "ns", {**SYNCED, "CDS": "SYNCED"}, CDS={"clientStatus": "CLIENT_NACKED"}),
    )
    assert parse(json.dumps(doc))[("ns", "a")].state == "ERROR"


def test_json_without_proxies() -> None:
    assert parse(json.dumps(response("istiod-aaa"))) == {}
    assert parse("{}") == {}


def test_yaml_concatenated_without_separator() -> None:
    yaml = pytest.importorskip("yaml")
    one = yaml.safe_dump(response("istiod-aaa", client_config("sleep-1", "default", SYNCED)))
    two = yaml.safe_dump(response("istiod-bbb", client_config("httpbin-2", "prod", {**SYNCED, "CDS": "ERROR"})))
    for text in (one + two, one + "---\n" + two):
        status = parse(text)
        assert set(status) == {("default", "sleep-1"), ("prod", "httpbin-2")}
        assert status[("prod", "httpbin-2")].istiod == "istiod-bbb"
        assert status[("prod", "httpbin-2")].state == "ERROR"


def test_state_order() -> None:
    def state(*values: str) -> str:
        return ProxySync("p", "n", None, None, {str(i): v for i, v in enumerate(values)}).state

    assert state("SYNCED", "NOT SENT", "STALE", "ERROR") == "ERROR"
    assert state("SYNCED", "NOT SENT", "STALE") == "STALE"
    assert state("SYNCED", "NOT SENT") == "NOT SENT"
    assert state("SYNCED", "IGNORED") == "SYNCED"
    assert state("IGNORED") == "UNKNOWN"
    assert state() == "UNKNOWN"


# ------------------------------------------------------------------------------------------------
# garbage


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("", "(empty)"),
        ("   \n\n", "(empty)"),
        ('Error: no running Istio pods in "istio-system"\n', 'Error: no running Istio pods in "istio-system"'),
        (
            "NAME                 READY   STATUS    RESTARTS   AGE\nsleep-1   2/2   Running   0   1d\n",
            "NAME                 READY   STATUS    RESTARTS   AGE",
        ),
        ('{"kind": "Pod", "apiVersion": "v1"}', '{"kind": "Pod", "apiVersion": "v1"}'),
        ("[1, 2, 3]", "[1, 2, 3]"),
        ("\x00\x01binary", "\x00\x01binary"),
    ],
)
def test_garbage_is_refused(text: str, first: str) -> None:
    with pytest.raises(ValueError) as err:
        parse(text)
    assert str(err.value) == f"unrecognized istioctl proxy-status output: {first}"


def test_broken_json_stream_is_refused() -> None:
    with pytest.raises(ValueError, match="JSON is not valid"):
        parse(json.dumps(response("istiod-aaa")) + '{"resources": [')


def test_corpus_location_is_the_shared_folder() -> None:
    # The golden files are read in place, never copied into tests/.
    assert CORPUS.name == "corpus" and CORPUS.parent.name == "shared"
    assert not list(Path(__file__).parent.rglob("multiXdsStatus*"))
