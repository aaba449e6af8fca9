"""The fast paths of a scan's main thread answer exactly as the slow paths they stand in front of.

* `sources.shapes.check_object`: the compiled shapes against the field-by-field walk (the same error
  message, the same nulls dropped), on every field of every checked kind set to every JSON type;
* `keymaterial.key_material`: the skip of text without a base64-sized run against the full scan, on
  keys in every encoding it knows and on text that only looks like one;
* `istio.destinationrule._Pool.best_host` and `Index.namespaces_of_note`: the wildcard lengths a pool
  holds against a try of every suffix of the name.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import REPO
from cryptography.hazmat.primitives import serialization
from harness.pki import make_root

from kubectl_mtls import keymaterial
from kubectl_mtls.istio import destinationrule
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
