"""The fast paths of a scan's main thread answer exactly as the slow paths they stand in front of.

* `sources.shapes.check_object`: the compiled shapes against the field-by-field walk (the same error
  message, the same nulls dropped), on every field of every checked kind set to every JSON type;
* `keymaterial.key_material`: the skip of text without a base64-sized run against the full scan, on
  keys in every encoding it knows and on text that only looks like one;
* `istio.destinationrule._Pool.best_host` and `Index.namespaces_of_note`: the wildcard lengths a pool
  holds against a try of every suffix of the name;
* `normalize.proxystatus._from_table`: the header read once against the per-row reading before it,
  and `ProxySync.state` as max() picked it;
* `istio.peerauthn.Index.effective`: answers kept per set of matching policies against a scan;
* `checks.traffic.ports_in_mode`: the Service port modes worked out once against a scan;
* `commands.check`: the cyclic collector, paused for a scan, is given back as it was found.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from cryptography.hazmat.primitives import serialization
from harness.istioctl_double import go_tabwriter
from harness.pki import make_root

from kubectl_mtls import keymaterial, render
from kubectl_mtls.istio import destinationrule, peerauthn
from kubectl_mtls.normalize import proxystatus
from kubectl_mtls.sources import shapes


# -- shapes -------------------------------------------------------------------------------------------
class Text(str):
    """A str subclass: the walk accepts it (isinstance), the compiled shapes hand it to the walk."""


ODD_VALUES: list[Any] = [None, "text", 7, True, 1.5, [], {}, [None], ["x"], [7], {"k": None}, {"k": 7}, Text("t")]


def _full(shape: shapes.Shape) -> Any:
    """A value that fits `shape` with every optional field present."""
    if shape is str:
        return "x"
    if shape is int:
        return 1
    if shape is bool:
        return True
    if shape is dict:
        return {"any": ["thing"]}
    if shape == "intstr":
        return "http"
    if isinstance(shape, list):
        return [_full(shape[0])]
    assert isinstance(shape, dict)
    if "*" in shape:
        return {"a": _full(shape["*"]), "b": None}
    return {name.rstrip("!"): _full(sub) for name, sub in shape.items()}


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data (deepcopy is several times slower, and this test makes thousands)."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _variants(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`obj` as is, then with each field (not the object itself) replaced by each odd value or removed."""
    yield _copy(obj)
    for path in list(_paths(obj))[1:]:
        for odd in [*ODD_VALUES, "remove"]:
            variant = _copy(obj)
            parent = variant
            for step in path[:-1]:
                parent = parent[step]
            if odd == "remove":
                if isinstance(parent, dict):
                    del parent[path[-1]]
                else:
                    parent.pop(path[-1])
            else:
                parent[path[-1]] = _copy(odd)
            yield variant


def _outcome(kind: str, obj: Any) -> tuple[str, str]:
    """(the error or "ok", the object as it is left)"""
    try:
        shapes.check_object(kind, obj)
        verdict = "ok"
    except shapes.ShapeError as exc:
        verdict = f"error: {exc}"
    return verdict, repr(obj)


def _examples(kind: str) -> list[Any]:
    path = REPO / "examples" / "rotation" / "kubernetes" / f"{kind}.json"
    return list(json.loads(path.read_text())["items"]) if path.exists() else []


KINDS = [*shapes.SHAPES, "peerauthentications"]


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_shapes_answer_as_the_walk(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shape = shapes.SHAPES.get(kind, shapes.GENERIC)
    full = _full(shape)
    full["metadata"].update(name="a-name", namespace="a-namespace")
    objects = [*_variants(full), *_examples(kind), None, [], "a pod", {}]
    fast = [_outcome(kind, _copy(obj)) for obj in objects]
    with monkeypatch.context() as patch:  # every object through the walk alone, as before the compiled shapes
        patch.setattr(shapes, "_COMPILED", {})
        patch.setattr(shapes, "_COMPILED_GENERIC", lambda value: False)
        slow = [_outcome(kind, _copy(obj)) for obj in objects]
    assert fast == slow
    # Both paths taken: objects the compiled shape passes, and ones it hands to the walk.
    compiled = shapes._COMPILED.get(kind, shapes._COMPILED_GENERIC)
    passed = [compiled(_copy(obj)) for obj in objects if isinstance(obj, dict)]
    assert any(passed) and not all(passed)
    assert any(verdict == "ok" for verdict, _ in fast) and any(verdict != "ok" for verdict, _ in fast)


def test_walk_runs_for_subclasses_and_still_passes() -> None:
    pod = {"metadata": {"name": Text("web"), "labels": {"app": Text("web")}}, "spec": {"containers": []}}
    assert not shapes._COMPILED["pods"](_copy(pod))
    shapes.check_object("pods", pod)  # no error: the walk decides, and accepts a str subclass


def test_nulls_dropped_as_the_walk_drops_them() -> None:
    pod = {
        "metadata": {"name": "web", "labels": None, "annotations": {"a": None}},
        "spec": {"containers": [{"name": "app", "ports": None}], "nodeName": None},
        "status": None,
    }
    shapes.check_object("pods", pod)
    assert pod == {"metadata": {"name": "web", "annotations": {"a": None}}, "spec": {"containers": [{"name": "app"}]}}


# -- key material --------------------------------------------------------------------------------------
def _key_texts() -> list[bytes]:
    root = make_root()
    pem = root.key_pem
    der = root.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    b64_pem = base64.b64encode(pem)
    filler = b'{"name": "frontend-5d8c7b9f6", "note": "' + b"word " * 400 + b'"}'
    hexes = b"ab" * 30  # 60 characters of the alphabet that decode to nothing
    texts = [
        pem,
        der,
        b64_pem,
        base64.b64encode(der),
        base64.urlsafe_b64encode(der),
        base64.b64encode(b64_pem),
        b64_pem[:59],
        b64_pem[:60],
        b64_pem[:61] + b"=",
        b"x" + base64.b64encode(der),  # starts mid-quantum
        json.dumps(b64_pem.decode()[:40] + "\n" + b64_pem.decode()[40:]).encode(),  # escaped newline inside
        b64_pem[:30] + b"\n" + b64_pem[30:],
        hexes,
        hexes[:-1],
        hexes + b"==" + b64_pem,
        b"",
        filler,
    ]
    return texts + [filler + text + filler for text in texts]


def test_key_material_skip_answers_as_the_full_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _key_texts()
    fast = [keymaterial.key_material(text) for text in texts]
    with monkeypatch.context() as patch:  # find(b"") is 0: every text scanned from its start, as before
        patch.setattr(keymaterial, "_RUN_START", b"")
        slow = [keymaterial.key_material(text) for text in texts]
    assert fast == slow
    assert any(found and "base64" in found for found in fast) and None in fast
    assert "a PKCS#8 private key (DER)" in fast


@pytest.mark.parametrize("text", ["plain", "caf\u00e9 \u221a", "a \ud800 lone surrogate", "\udfff", "x\ud83d\ude00y"])
def test_written_text_as_before_the_surrogate_search_went(text: str) -> None:
    written = io.StringIO()
    render._write(written, text)
    old = text.encode("utf-8", "backslashreplace").decode("utf-8") if re.search("[\ud800-\udfff]", text) else text
    assert written.getvalue() == old


# -- DestinationRule hosts -------------------------------------------------------------------------------
def _best_host_by_every_suffix(pool: destinationrule._Pool, fqdn: str) -> str | None:
    """MostSpecificHostMatch as a try of every suffix of the name, longest first (before the lengths index)."""
    if fqdn in pool.by_host:
        return fqdn
    name = fqdn[1:] if fqdn.startswith("*") else fqdn
    for start in range(len(name) + 1):
        if "*" + name[start:] in pool.by_host:
            return "*" + name[start:]
    return None


@pytest.mark.parametrize(
    "hosts",
    [
        [],
        ["web.shop.svc.cluster.local"],
        ["*", "*.local", "*.cluster.local", "*.shop.svc.cluster.local", "web.shop.svc.cluster.local"],
        ["*.svc.cluster.local", "*b.shop.svc.cluster.local", "*eb.shop.svc.cluster.local"],
        ["*.shop.svc.cluster.local", "*", "*hop.svc.cluster.local"],
    ],
)
def test_best_host_by_wildcard_lengths_answers_as_every_suffix(hosts: list[str]) -> None:
    rules = [{"metadata": {"name": f"dr{i}", "namespace": "shop"}, "spec": {"host": h}} for i, h in enumerate(hosts)]
    pool = destinationrule._Pool(rules, {id(dr): dr["spec"]["host"] for dr in rules})
    asked = [
        "web.shop.svc.cluster.local",
        "eb.shop.svc.cluster.local",
        "b.shop.svc.cluster.local",
        "api.other.svc.cluster.local",
        "*.shop.svc.cluster.local",
        "*",
        "",
        "local",
        *hosts,
    ]
    for fqdn in asked:
        assert pool.best_host(fqdn) == _best_host_by_every_suffix(pool, fqdn), fqdn
    index = destinationrule.Index(rules, "istio-system")
    for fqdn in asked:
        name = fqdn[1:] if fqdn.startswith("*") else fqdn
        every = [fqdn, *("*" + name[start:] for start in range(len(name) + 1))]
        expected = {"shop"} if any(p in index._all.by_host for p in every) else set()
        assert index.namespaces_of_note(fqdn) == expected, fqdn


# -- proxy-status tables -----------------------------------------------------------------------------------
def _old_from_table(body: str, header: str) -> dict[tuple[str, str], proxystatus.ProxySync]:
    """The table reader before the header was read once: a dict per row, every cell's state by regex."""
    ps = proxystatus
    columns = [(m.group(0), m.start()) for m in ps._HEADER_CELL.finditer(header)]
    names = [name for name, _ in columns]
    if names[0] != "NAME" or not ps._NAME_COLUMNS.intersection(names[1:]):
        raise ps._unrecognized(header)
    starts = [start for _, start in columns]
    out: dict[tuple[str, str], proxystatus.ProxySync] = {}
    for line in body.splitlines()[1:]:
        if not line.strip():
            continue
        cells: list[str] = []
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(line)
            if 0 < start < len(line) and not line[start - 1].isspace():
                raise ValueError(
                    f"istioctl proxy-status table is not column-aligned at offset {start} (header "
                    f"{header.strip()!r}): {line.strip()[:120]}"
                )
            cells.append(line[start:end].strip())
        row = dict(zip(names, cells, strict=True))
        pod, namespace = ps._split_name(row["NAME"], None)
        types: dict[str, str] = {}
        for name, value in row.items():
            if name in ps._NAME_COLUMNS or not ps._TYPE_COLUMN.match(name):
                continue
            word = ps._state_word(value)
            if word:
                types[name] = word
        subscribed: list[str] = []
        match = ps._SUBSCRIBED.match(row.get("SUBSCRIBED TYPES", ""))
        if match and match.group("types"):
            subscribed = [t.strip() for t in match.group("types").split(",") if t.strip()]
        out[(namespace, pod)] = ps.ProxySync(
            pod=pod,
            namespace=namespace,
            istiod=row.get("ISTIOD") or row.get("PILOT") or None,
            version=row.get("VERSION") or None,
            types=types,
            subscribed=subscribed,
        )
    return out


def _tables() -> Iterator[str]:
    cells = ["SYNCED", "SYNCED (2m)", "STALE (Never Acknowledged)", "NOT SENT", "NOT_SENT", "ERROR", "-", "", "odd"]
    headers = [
        ("NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"),
        ("NAME", "CLUSTER", "ISTIOD", "VERSION", "SUBSCRIBED TYPES"),
        ("NAME", "CDS", "LDS", "EDS", "RDS", "PILOT", "VERSION"),
        ("NAME", "CLUSTER", "CDS", "XTRA", "CDS", "WADS", "ISTIOD"),  # a type twice, an unknown column
        ("NAME", "ISTIOD", "CDS"),
    ]
    for number, header in enumerate(headers):
        rows = [header]
        for index in range(12):
            row: list[str] = []
            for column in header:
                if column == "NAME":
                    name = f"web-{index}.ns-{index % 3}"
                    row.append(name if index % 5 else f"sidecar~10.0.0.{index}~{name}~cluster.local")
                elif column == "SUBSCRIBED TYPES":
                    row.append(["3 (CDS,LDS,EDS)", "0", "2 (CDS, RDS)", "-"][index % 4])
                elif column in ("ISTIOD", "PILOT", "VERSION", "CLUSTER"):
                    row.append("" if index % 4 == 3 else f"{column.lower()}-{index}")
                else:
                    row.append(cells[(index + number + len(row)) % len(cells)])
            rows.append(tuple(row))
        table = go_tabwriter(rows)
        yield table
        yield table.replace("\n", "\n\n", 3)  # blank lines
        lines = table.splitlines()
        second = lines[0].index(header[1])
        shifted = lines[4][: second - 1] + "x" + lines[4][second:]
        yield "\n".join([*lines[:4], shifted, *lines[5:]])  # not aligned: refused


def _parsed(reader: Any, text: str) -> Any:
    try:
        return {key: vars(value) for key, value in reader(text.strip(), text.strip().splitlines()[0]).items()}
    except ValueError as exc:
        return f"error: {exc}"


def test_table_read_once_per_header_answers_as_per_row() -> None:
    outcomes = [(_parsed(proxystatus._from_table, t), _parsed(_old_from_table, t)) for t in _tables()]
    assert all(new == old for new, old in outcomes)
    assert any(isinstance(new, str) for new, _ in outcomes) and any(isinstance(new, dict) for new, _ in outcomes)


# -- PeerAuthentication answers shared by pods with the same policies ----------------------------------------
def test_shared_effective_answers_equal_a_scan() -> None:
    from test_scale_indexes import NAMESPACES, ROOT, _refs, labels, random_pa, reference_effective

    rng = random.Random(6)
    shared = 0
    for case in range(150):
        policies = [random_pa(rng) for _ in range(rng.randint(0, 25))]
        index = peerauthn.Index(policies, ROOT)
        asked = [(rng.choice(NAMESPACES), labels(rng)) for _ in range(12)]
        for ns, pod_labels in asked + asked[:4]:  # the first ones twice: answered from the index's memory
            first = index.effective(ns, pod_labels)
            assert _refs(first) == _refs(reference_effective(ns, pod_labels, policies, ROOT)), (case, ns, pod_labels)
            assert index.effective(ns, dict(pod_labels)) is first
            extra = {**pod_labels, "pod-template-hash": "5d8c7b9f6"}  # a label no policy selects on
            if all(isinstance(v, str) for v in pod_labels.values()):
                shared += index.effective(ns, extra) is first
    assert shared  # answers were shared between label sets that select the same policies


# -- the collector paused for a scan, and given back -----------------------------------------------------
@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("snapshot", ["examples/rotation", "no/such/snapshot"])
def test_scan_gives_the_collector_back_as_it_found_it(
    enabled: bool, snapshot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import gc

    from kubectl_mtls import cli

    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        code = cli.main(["check", "-A", "--snapshot", str(REPO / snapshot), "-o", "json"])
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    out, err = capsys.readouterr()
    if snapshot == "examples/rotation":
        assert json.loads(out)["findings"] and code in (0, 1)
    else:
        assert code == 2 and err.startswith("error: snapshot")


# -- Service port modes worked out once for three checks -----------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_ports_in_mode_from_the_shared_table_equal_a_scan(tmp_path: Path, seed: int) -> None:
    from test_scale_indexes import context_of, random_pa, random_pod, random_service

    from kubectl_mtls.checks.context import Scope, key_of, target_port
    from kubectl_mtls.checks.traffic import ports_in_mode
    from kubectl_mtls.normalize import pod as podinfo

    rng = random.Random(70 + seed)
    services = [random_service(rng, i) for i in range(25)]
    for svc in services:  # named and numbered target ports
        svc["spec"]["ports"] = [{"port": 80, "targetPort": rng.choice([8080, "http", "8080"])}, {"port": 81}]
    objects = {
        "pods": [random_pod(rng, i) for i in range(60)],
        "services": services,
        "peerauthentications": [random_pa(rng) for _ in range(25)],
    }
    ctx = context_of(tmp_path, objects, Scope(None))

    def scan(svc: dict[str, Any], mode: str) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        pods = [p for p in ctx.pods_of(svc) if podinfo.has_envoy(p) and ctx.running(p) and not podinfo.is_gateway(p)]
        for port in svc["spec"]["ports"]:
            if isinstance(port.get("port"), int):
                for pod in pods:
                    if ctx.effective(pod).mode_for(target_port(port, pod)) == mode:
                        out.setdefault(port["port"], []).append("/".join(key_of(pod)))
        return out

    for mode in ("STRICT", "DISABLE", "PERMISSIVE", "STRICT"):  # the second STRICT: from the table
        for svc in ctx.objects("services"):
            assert ports_in_mode(ctx, svc, mode) == scan(svc, mode)
            stranger = _copy(svc)  # not one of the listed Services: worked out for itself
            stranger["spec"]["ports"] = [{"port": 443, "targetPort": 8080}]
            assert ports_in_mode(ctx, stranger, mode) == scan(stranger, mode)


def test_worst_state_as_max_picked_it() -> None:
    import itertools

    words = ["SYNCED", "NOT SENT", "STALE", "ERROR", "IGNORED", "odd"]
    for size in range(4):
        for states in itertools.product(words, repeat=size):
            sync = proxystatus.ProxySync("p", "ns", None, None, types={f"T{i}DS": s for i, s in enumerate(states)})
            ranked = [s for s in sync.types.values() if s in proxystatus._RANK]
            assert sync.state == (max(ranked, key=lambda s: proxystatus._RANK[s]) if ranked else "UNKNOWN")
