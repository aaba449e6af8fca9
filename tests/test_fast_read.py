"""The fast paths of reading a sidecar dump answer exactly as the slow ones: every input here is made to
take one path or the other, and both are compared with the plain full parse."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import REPO

from kubectl_mtls.errors import InputError, NotFoundError, UsageError
from kubectl_mtls.normalize import dump, keys
from kubectl_mtls.normalize.proxy import build
from kubectl_mtls.sources import snapshot
from kubectl_mtls.sources.names import path_component

EXAMPLE = REPO / "examples" / "rotation" / "proxies" / "shop"
NOW = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def no_catalogues(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with no catalogue remembered, whatever ran before it."""
    monkeypatch.setattr(dump, "_catalogues", ())


def example() -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(next(EXAMPLE.glob("frontend-*.json")).read_bytes())
    return loaded


def pretty(doc: Any) -> bytes:
    """Envoy's own layout (one space per level, `": "`), which the fast path expects."""
    return json.dumps(doc, indent=1, ensure_ascii=False).encode() + b"\n\n"


def node_of(doc: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = doc["configs"][0]["bootstrap"]["node"]
    return node


def with_catalogue(extensions: list[Any] | None, **node_fields: Any) -> dict[str, Any]:
    doc = example()
    node = node_of(doc)
    if extensions is None:
        node.pop("extensions", None)
    else:
        node["extensions"] = extensions
    node.update(node_fields)
    return doc


def catalogue(build_tag: str, count: int = 40) -> list[dict[str, Any]]:
    return [
        {"name": f"envoy.{build_tag}.ext{i}", "category": "envoy.filters", "type_urls": [f"type.{build_tag}.{i}"]}
        for i in range(count)
    ]


def model(raw: bytes) -> Any:
    return build("shop", "pod", None, dump.split([("test", raw)]), NOW).model


def fast_node(raw: bytes) -> Any:
    out = dump.Sections()
    assert dump._split_pretty(out, raw) is True
    assert out.bootstrap is not None
    return out.bootstrap["node"]


def expected_node(doc: dict[str, Any]) -> dict[str, Any]:
    """The full parse's node, with the catalogue the model never reads emptied."""
    node = copy.deepcopy(node_of(doc))
    if "extensions" in node:
        node["extensions"] = []
    return node


def bootstrap_span(raw: bytes) -> tuple[int, int]:
    marks = dump._section_marks(raw)
    assert marks[0][1] == b"BootstrapConfigDump"
    return marks[0][0] + 1, marks[1][0]


# -- the node's extension catalogue -------------------------------------------------------------------
def test_a_catalogue_is_scanned_once_then_recognised_with_the_same_answer() -> None:
    doc = with_catalogue(catalogue("a"))
    raw = pretty(doc)
    first = fast_node(raw)  # scanned: nothing remembered yet
    assert len(dump._catalogues) == 1
    second = fast_node(raw)  # recognised
    assert first == second == expected_node(doc)
    assert model(raw) == model(orjson.dumps(doc))


def test_another_pod_with_the_same_build_is_recognised() -> None:
    """Only the catalogue is shared: the node's own fields around it come from each dump."""
    one = with_catalogue(catalogue("a"), id="sidecar~10.0.0.1~one.shop~shop.svc.cluster.local")
    two = with_catalogue(catalogue("a"), id="router~10.0.0.2~two.shop~shop.svc.cluster.local", cluster="gw")
    assert fast_node(pretty(one)) == expected_node(one)
    remembered = dump._catalogues
    assert fast_node(pretty(two)) == expected_node(two)
    assert dump._catalogues is remembered  # a hit remembers nothing new
    assert model(pretty(two)) == model(orjson.dumps(two))


@pytest.mark.parametrize(
    "other",
    [
        catalogue("b"),  # another build
        catalogue("a", 41),  # the remembered one plus more: it starts the same
        catalogue("a", 39),  # shorter: the remembered one runs past its end
        [],  # empty, printed `[]` on the key's line: not the catalogue's shape at all
    ],
    ids=["other-build", "longer", "shorter", "empty"],
)
def test_a_different_catalogue_is_scanned_not_mistaken(other: list[Any]) -> None:
    fast_node(pretty(with_catalogue(catalogue("a"))))
    doc = with_catalogue(other)
    assert fast_node(pretty(doc)) == expected_node(doc)
    assert model(pretty(doc)) == model(orjson.dumps(doc))


def test_only_a_few_catalogues_are_kept() -> None:
    for tag in "abcdefg":
        fast_node(pretty(with_catalogue(catalogue(tag))))
    assert len(dump._catalogues) == dump._CATALOGUES_KEPT
    assert dump._catalogues[0].count(b"envoy.g.ext0") == 1  # the most recent first


def test_a_node_without_a_catalogue() -> None:
    doc = with_catalogue(None)
    assert fast_node(pretty(doc)) == expected_node(doc)
    assert dump._catalogues == ()


def test_a_catalogue_outside_the_node_is_left_alone() -> None:
    """`extensions` one level up (the node ended before it) is not the node's."""
    doc = with_catalogue(None)
    bootstrap = doc["configs"][0]["bootstrap"]
    doc["configs"][0]["bootstrap"] = {"node": bootstrap["node"], "x": {"extensions": catalogue("a")}}
    assert fast_node(pretty(doc)) == expected_node(doc)


def _hostile(raw: bytes, find: bytes, replace: bytes) -> bytes:
    assert raw.count(find) >= 1
    changed = raw.replace(find, replace, 1)
    orjson.loads(changed)  # still valid JSON, only not in Envoy's layout
    return changed


@pytest.mark.parametrize("remembered", [False, True], ids=["scanned", "after-a-remembered-one"])
def test_a_node_end_inside_the_catalogue_takes_the_full_parse_of_the_bootstrap(remembered: bool) -> None:
    doc = with_catalogue(catalogue("a"))
    if remembered:
        fast_node(pretty(doc))
    raw = _hostile(pretty(doc), b'"type.a.3"\n       ]\n      }', b'"type.a.3"\n       ]\n    }')
    start, stop = bootstrap_span(raw)
    assert dump._add_bootstrap_node(dump.Sections(), raw, start, stop) is False
    out = dump.Sections()
    assert dump._split_pretty(out, raw) is True  # the bootstrap section alone is parsed whole
    assert out.bootstrap is not None and out.bootstrap["node"] == node_of(doc)
    assert model(raw) == model(orjson.dumps(doc))


@pytest.mark.parametrize("remembered", [False, True], ids=["scanned", "after-a-remembered-one"])
def test_a_list_end_inside_the_catalogue_takes_the_full_parse(remembered: bool) -> None:
    doc = with_catalogue(catalogue("a"))
    if remembered:
        fast_node(pretty(doc))
    raw = _hostile(pretty(doc), b'"type.a.3"\n       ]', b'"type.a.3"\n     ]')
    start, stop = bootstrap_span(raw)
    with pytest.raises(orjson.JSONDecodeError):  # cut at the wrong `]`: what is left is not JSON
        dump._add_bootstrap_node(dump.Sections(), raw, start, stop)
    assert dump._split_pretty(dump.Sections(), raw) is False
    assert model(raw) == model(orjson.dumps(doc))


def test_a_node_that_never_ends_takes_the_full_parse() -> None:
    raw = pretty(with_catalogue(catalogue("a")))
    start, stop = bootstrap_span(raw)
    cut = raw.find(b"\n    }", raw.find(b'"extensions"'))
    assert dump._add_bootstrap_node(dump.Sections(), raw, start, cut) is False
    assert dump._add_bootstrap_node(dump.Sections(), raw, start, cut + 3) is False  # catalogue remembered now
    assert dump._add_bootstrap_node(dump.Sections(), raw, start, stop) is True


@pytest.mark.parametrize("path", sorted(EXAMPLE.glob("*.json")), ids=lambda p: p.name)
def test_real_dumps_scanned_and_recognised(path: Path) -> None:
    raw = path.read_bytes()
    doc = orjson.loads(raw)
    assert fast_node(raw) == expected_node(doc)
    assert fast_node(raw) == expected_node(doc)
    assert len(dump._catalogues) == 1
    assert model(raw) == model(orjson.dumps(doc))


# -- reading a dump file from a snapshot ------------------------------------------------------------------
class _Spy:
    """Counts the calls of the slow, fully resolving reader."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        slow = snapshot.read_regular_file

        def counted(path: Path, root: Path, limit: int = snapshot.MAX_FILE_BYTES) -> bytes:
            self.calls += 1
            return slow(path, root, limit)

        monkeypatch.setattr(snapshot, "read_regular_file", counted)


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    root = tmp_path / "snap"
    (root / "proxies" / "shop").mkdir(parents=True)
    (root / "proxies" / "shop" / "a.json").write_bytes(b'{"configs": []}')
    (root / "proxies" / "shop" / "b.json").write_bytes(b'{"configs": [{}]}')
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "c.json").write_bytes(b'{"configs": [{}, {}]}')
    return root


def documents(root: Path, pod: str, namespace: str = "shop") -> list[tuple[str, bytes]]:
    return snapshot.SnapshotSource(str(root)).proxy_documents(namespace, pod)


def test_a_regular_file_is_read_directly_with_the_same_bytes_and_label(
    snap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(monkeypatch)
    source = snapshot.SnapshotSource(str(snap))
    for pod in ("a", "b", "a"):
        path = snap / "proxies" / "shop" / f"{pod}.json"
        assert source.proxy_documents("shop", pod) == [(str(path), path.read_bytes())]
    assert spy.calls == 0
    assert snapshot.read_regular_file(path, snap) == path.read_bytes()


def test_a_link_inside_the_snapshot_is_read_by_the_full_resolution(snap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (snap / "proxies" / "shop" / "c.json").symlink_to(snap / "elsewhere" / "c.json")
    spy = _Spy(monkeypatch)
    assert documents(snap, "c")[0][1] == (snap / "elsewhere" / "c.json").read_bytes()
    assert spy.calls == 1


def test_a_namespace_directory_linked_inside_the_snapshot(snap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (snap / "proxies" / "linked").symlink_to(snap / "elsewhere")
    spy = _Spy(monkeypatch)
    assert documents(snap, "c", "linked") == [
        (str(snap / "proxies" / "linked" / "c.json"), (snap / "elsewhere" / "c.json").read_bytes())
    ]
    assert spy.calls == 0


@pytest.mark.parametrize("what", ["file", "directory"])
def test_links_out_of_the_snapshot_are_refused(snap: Path, tmp_path: Path, what: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "c.json").write_bytes(b"{}")
    if what == "file":
        (snap / "proxies" / "shop" / "c.json").symlink_to(outside / "c.json")
        namespace = "shop"
    else:
        (snap / "proxies" / "out").symlink_to(outside)
        namespace = "out"
    with pytest.raises(InputError, match="links outside the snapshot directory are not followed"):
        documents(snap, "c", namespace)


def test_a_directory_swapped_for_a_link_out_after_a_first_read_is_refused(snap: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.json").write_bytes(b"{}")
    source = snapshot.SnapshotSource(str(snap))
    assert source.proxy_documents("shop", "a")[0][1] == b'{"configs": []}'
    (snap / "proxies" / "shop").rename(snap / "proxies" / "old")
    (snap / "proxies" / "shop").symlink_to(outside)
    with pytest.raises(InputError, match="links outside the snapshot directory are not followed"):
        source.proxy_documents("shop", "b")


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("fifo", "not a regular file"),
        ("directory", "a directory"),
        ("dangling link", "No such file or directory"),
        ("link loop", "too many levels of symbolic links"),
        ("too big", "larger than the 256 MiB limit"),
    ],
)
def test_what_is_not_a_plain_file_is_named_as_before(snap: Path, fault: str, message: str) -> None:
    path = snap / "proxies" / "shop" / "c.json"
    if fault == "fifo":
        os.mkfifo(path)
    elif fault == "directory":
        path.mkdir()
    elif fault == "dangling link":
        path.symlink_to(snap / "missing.json")
    elif fault == "link loop":
        path.symlink_to(path)
    else:
        with open(path, "wb") as handle:
            handle.truncate(snapshot.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(InputError, match=message):
        documents(snap, "c")
    with pytest.raises(InputError, match=message):
        snapshot.read_regular_file(path, snap)


def test_no_file_is_not_found(snap: Path) -> None:
    with pytest.raises(NotFoundError):
        documents(snap, "missing")
    with pytest.raises(NotFoundError):
        documents(snap, "a", "no-such-namespace")


# -- sections: listeners cut into items, the rest parsed whole --------------------------------------------
def section(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in doc["configs"] if c["@type"].endswith(f".{kind}"))
    return found


def both(doc: dict[str, Any]) -> tuple[dump.Sections, dump.Sections]:
    """(fast path, full parse) of one dump; the fast path must have been taken."""
    fast = dump.Sections()
    assert dump._split_pretty(fast, pretty(doc)) is True
    return fast, dump.split([("test", orjson.dumps(doc))])


def listener(name: str, direction: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 9000}},
        "traffic_direction": direction,
    }


def listeners_doc(router: bool = False) -> dict[str, Any]:
    doc = example()
    if router:
        node_of(doc)["id"] = "router~10.0.0.9~gw.istio-system~istio-system.svc.cluster.local"
    part = section(doc, "ListenersConfigDump")
    part["static_listeners"] = [{"listener": listener("static-out", "OUTBOUND")}]
    part["dynamic_listeners"] += [
        {"name": "virtualInbound", "active_state": {"listener": listener("virtualInbound", "INBOUND")}},
        {"name": "0.0.0.0_9000", "active_state": {"listener": listener("0.0.0.0_9000", "OUTBOUND")}},
        {
            "name": "0.0.0.0_9001",
            "error_state": {"details": "bad filter", "failed_configuration": listener("0.0.0.0_9001", "OUTBOUND")},
        },
    ]
    return doc


@pytest.mark.parametrize("router", [False, True], ids=["sidecar", "gateway"])
def test_listener_items_kept_are_the_ones_the_model_reads(router: bool) -> None:
    doc = listeners_doc(router)
    fast, full = both(doc)
    names = [item.get("name") for item in fast.listeners]
    if router:
        assert fast.listeners == full.listeners  # a gateway's servers are not INBOUND: all are kept
    else:
        assert names == ["static-out", "virtualInbound"]  # outbound dynamic listeners are skipped
        assert fast.listeners == [item for item in full.listeners if item["name"] in names]
    assert fast.listener_errors == full.listener_errors == ["listener 0.0.0.0_9001: bad filter"]
    assert fast.rejected == full.rejected
    assert model(pretty(doc)) == model(orjson.dumps(doc))


def test_a_list_of_listeners_not_known_takes_the_full_parse() -> None:
    doc = listeners_doc()
    section(doc, "ListenersConfigDump")["other_listeners"] = [{"listener": listener("x", "INBOUND")}]
    assert dump._split_pretty(dump.Sections(), pretty(doc)) is False
    assert model(pretty(doc)) == model(orjson.dumps(doc))


@pytest.mark.parametrize(
    "edit",
    [
        lambda part: None,
        lambda part: part.update(dynamicActiveClusters=part.pop("dynamic_active_clusters")),  # camelCase list
        lambda part: part.update(dynamic_warming_clusters=[{"cluster": {"name": "warming"}}], other=[{"x": 1}]),
    ],
    ids=["as-is", "camel-list", "warming-and-unknown-lists"],
)
def test_clusters_and_endpoints_parsed_whole_read_as_the_full_parse(edit: Any) -> None:
    doc = example()
    edit(section(doc, "ClustersConfigDump"))
    section(doc, "EndpointsConfigDump")["dynamic_endpoint_configs"].append({"endpoint_config": {"cluster_name": ""}})
    fast, full = both(doc)
    assert fast.clusters == full.clusters and fast.clusters
    assert fast.warming_clusters == full.warming_clusters
    assert fast.endpoints == full.endpoints and fast.endpoints
    assert fast.secrets == full.secrets and fast.rejected == full.rejected
    assert fast.seen == full.seen
    assert model(pretty(doc)) == model(orjson.dumps(doc))


# -- field names in either casing ---------------------------------------------------------------------------
def _reference_field(parent: Any, name: str, default: Any = None) -> Any:
    """What keys.field means, spelt out plainly."""
    if not isinstance(parent, dict):
        return default
    if name in parent:
        return parent[name]
    head, *rest = name.split("_")
    return parent.get(head + "".join(part[:1].upper() + part[1:] for part in rest), default)


KEY_INPUTS: list[Any] = [
    None,
    "text",
    ["list"],
    {},
    {"error_state": {"details": "x"}},
    {"errorState": {"details": "y"}},
    {"error_state": None, "errorState": {"details": "camel not used: snake present"}},
    {"error_state": "not an object", "name": 7},
    {"name": "n", "static_clusters": [{"cluster": {}}], "staticClusters": "ignored"},
    {"staticClusters": [1], "lastUpdated": "t"},
]


@pytest.mark.parametrize("parent", KEY_INPUTS)
@pytest.mark.parametrize("name", ["error_state", "name", "static_clusters", "last_updated", "x"])
def test_keys_read_either_casing_as_spelt_out(parent: Any, name: str) -> None:
    value = _reference_field(parent, name)
    assert keys.field(parent, name) == value
    assert keys.field(parent, name, "default") == _reference_field(parent, name, "default")
    assert keys.items(parent, name) == (value if isinstance(value, list) else [])
    assert keys.text(parent, name) == (value if isinstance(value, str) else "")
    assert keys.obj(parent, name) == (value if isinstance(value, dict) else {})
    assert keys.obj(parent) == (parent if isinstance(parent, dict) else {})
    nested = {"outer_part": {"otherCase": parent}}
    assert keys.obj(nested, "outer_part", "other_case", name) == (value if isinstance(value, dict) else {})


def test_camel_names_are_remembered_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "_CAMEL", {})
    assert keys.camel("transport_socket_matches") == "transportSocketMatches"
    assert keys.camel("name") == "name" and keys.camel("a__b") == "aB"
    for index in range(keys._CAMEL_KEPT + 10):
        assert keys.camel(f"made_up_{index}") == f"madeUp{index}"
    assert len(keys._CAMEL) == keys._CAMEL_KEPT


# -- sections found without searching a remembered catalogue -----------------------------------------------
def test_sections_found_past_a_remembered_catalogue_are_the_same() -> None:
    raw = pretty(with_catalogue(catalogue("a")))
    everything = dump._section_marks(raw)
    assert dump._remembered_catalogue(raw) is None  # nothing remembered yet
    fast_node(raw)
    skipped = dump._remembered_catalogue(raw)
    assert skipped is not None and raw[skipped[0] : skipped[1]] == dump._catalogues[0]
    assert dump._section_marks(raw, skipped) == everything
    assert len(everything) == 7


def test_a_section_start_inside_a_catalogue_is_never_skipped() -> None:
    """A catalogue holding a line that starts a section (not Envoy's layout) is cut there, so it is never
    remembered; one holding a look-alike that is not a section start may be, and changes nothing."""
    doc = with_catalogue(catalogue("a"))
    fake = b'"type.a.3"\n       ]\n      },\n  {\n   "@type": "type.googleapis.com/envoy.admin.v3.Fake", "x": 1}'
    raw = _hostile(pretty(doc), b'"type.a.3"\n       ]\n      }', fake)
    assert [kind for _, kind in dump._section_marks(raw)].count(b"Fake") == 1
    assert dump._split_pretty(dump.Sections(), raw) is False
    assert dump._catalogues == ()
    assert model(raw) == model(orjson.dumps(orjson.loads(raw)))
    look_alike = fake.replace(b"v3.Fake", b"v3.!Fake")
    raw = _hostile(pretty(doc), b'"type.a.3"\n       ]\n      }', look_alike)
    everything = dump._section_marks(raw)
    fast_node(raw)
    skipped = dump._remembered_catalogue(raw)
    assert skipped is not None and dump._section_marks(raw, skipped) == everything


def test_a_catalogue_far_from_the_start_is_searched_as_before() -> None:
    doc = with_catalogue(catalogue("a"))
    node_of(doc)["metadata"]["BIG"] = "x" * dump._CATALOGUE_WITHIN
    raw = pretty(doc)
    fast_node(raw)
    assert dump._catalogues and dump._remembered_catalogue(raw) is None
    assert fast_node(raw) == expected_node(doc)
    assert model(raw) == model(orjson.dumps(doc))


@pytest.mark.parametrize(
    ("find", "replace"),
    [
        (b"\n    },\n    {\n", b"\n    },\n\n    {\n"),  # a blank line between two listeners
        # the end of the listener before the inbound one, one space out: cut together, they do not parse
        (b'\n    },\n    {\n     "name": "virtualInbound"', b'\n   },\n    {\n     "name": "virtualInbound"'),
        (b"\n    }\n   ]", b"\n    }\n    ]"),  # the list's end one space out
    ],
    ids=["blank-line", "item-end-indent", "list-end-indent"],
)
def test_listeners_not_in_envoys_layout_take_the_full_parse(find: bytes, replace: bytes) -> None:
    doc = listeners_doc()
    start = pretty(doc).find(b'"dynamic_listeners"')
    raw = pretty(doc)
    at = raw.find(find, start)
    assert at > 0
    raw = raw[:at] + replace + raw[at + len(find) :]
    assert orjson.loads(raw) == doc
    assert dump._split_pretty(dump.Sections(), raw) is False
    assert model(raw) == model(orjson.dumps(doc))


def test_an_empty_list_of_listeners_is_read_as_the_full_parse() -> None:
    doc = listeners_doc()
    section(doc, "ListenersConfigDump")["static_listeners"] = []
    fast, full = both(doc)
    assert [item["name"] for item in fast.listeners] == ["virtualInbound"]
    assert fast.listener_errors == full.listener_errors
    assert model(pretty(doc)) == model(orjson.dumps(doc))


def test_outbound_listeners_cut_together_are_still_skipped() -> None:
    """Two outbound listeners taken as one (the first one's end not in Envoy's layout) hold nothing the
    model reads either: skipped, as each would be."""
    doc = listeners_doc()
    raw = pretty(doc)
    first = raw.find(b"\n    },\n    {\n", raw.find(b'"dynamic_listeners"'))
    changed = raw[:first] + b"\n   },\n    {\n" + raw[first + len(b"\n    },\n    {\n") :]
    assert orjson.loads(changed) == doc
    fast = dump.Sections()
    assert dump._split_pretty(fast, changed) is True
    assert fast == both(doc)[0]


@pytest.mark.parametrize(
    "name",
    ["app-1", "a", ".", "..", "...", "", "a/b", "a\\b", "a\0", "a?b", "a#b", "a%b", "ns.x", "x" * 253, "x" * 254, "ü"],
)
def test_path_components_refused_as_spelt_out(name: str) -> None:
    refused = not name or name in (".", "..") or any(c in name for c in "/\\\0?#%") or len(name) > 253
    if refused:
        with pytest.raises(UsageError, match="invalid pod name"):
            path_component(name, "pod")
    else:
        assert path_component(name, "pod") == name
