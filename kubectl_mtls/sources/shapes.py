"""The JSON shapes of the Kubernetes objects kubectl-mtls reads, checked where the data enters.

A snapshot file may be hand-made or damaged, and an API server (or something posing as one) may answer
200 with the wrong shape. Rather than let a string where a list belongs surface later as an internal
error deep in a check, every object is checked once, here, against the types of the fields kubectl-mtls
reads; anything it does not read is left alone. `null` is accepted wherever a field may be absent and is
dropped, as Go's JSON decoding treats it (an absent field); any other wrong type is a `ShapeError` naming
the object and the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeAlias

# A field's expected shape: a Python type (str, int, bool, dict = any object), "intstr" (Kubernetes
# IntOrString), a one-element list [item shape], {"*": value shape} for a map, or a dict of fields
# (a name ending in "!" is required, as the API server requires it).
Shape: TypeAlias = type | str | list["Shape"] | dict[str, "Shape"]

STRING_MAP: Shape = {"*": str}

_OWNER: Shape = {"kind": str, "name": str, "uid": str, "apiVersion": str, "controller": bool}
METADATA: Shape = {
    "name": str,
    "namespace": str,
    "generateName": str,
    "uid": str,
    "creationTimestamp": str,
    "labels": STRING_MAP,
    "annotations": STRING_MAP,
    "ownerReferences": [_OWNER],
}

_PROBE: Shape = {
    "httpGet": {
        "port": "intstr",
        "path": str,
        "scheme": str,
        "host": str,
        "httpHeaders": [{"name": str, "value": str}],
    },
    "tcpSocket": {"port": "intstr", "host": str},
    "grpc": {"port": int, "service": str},
    "exec": {"command": [str]},
}
_CONTAINER: Shape = {
    "name!": str,
    "image": str,
    "restartPolicy": str,
    "command": [str],
    "args": [str],
    "ports": [{"containerPort": int, "name": str, "protocol": str}],
    "env": [{"name": str, "value": str, "valueFrom": dict}],
    "readinessProbe": _PROBE,
    "livenessProbe": _PROBE,
    "startupProbe": _PROBE,
}
POD: Shape = {
    "metadata": METADATA,
    "spec": {
        "containers": [_CONTAINER],
        "initContainers": [_CONTAINER],
        "ephemeralContainers": [_CONTAINER],
        "serviceAccountName": str,
        "serviceAccount": str,
        "hostNetwork": bool,
        "nodeName": str,
    },
    "status": {
        "phase": str,
        "podIP": str,
        "podIPs": [{"ip": str}],
        "containerStatuses": [{"name": str, "ready": bool}],
        "initContainerStatuses": [{"name": str, "ready": bool}],
    },
}
SERVICE: Shape = {
    "metadata": METADATA,
    "spec": {
        "selector": STRING_MAP,
        "type": str,
        "clusterIP": str,
        "ports": [{"port!": int, "targetPort": "intstr", "name": str, "protocol": str, "appProtocol": str}],
    },
}
# Istio's custom resources are read by tolerant readers (istio/objects.py): only the envelope is fixed.
GENERIC: Shape = {"metadata": METADATA, "spec": dict}

SHAPES: dict[str, Shape] = {
    "pods": POD,
    "services": SERVICE,
    "namespaces": {"metadata": METADATA},
    "serviceaccounts": {"metadata": METADATA},
    "configmaps": {"metadata": METADATA, "data": STRING_MAP},
    "secrets": {"metadata": METADATA, "type": str, "data": STRING_MAP},
}


class ShapeError(ValueError):
    """An object whose field has the wrong JSON type; the message names the field."""


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _expected(shape: Shape) -> str:
    if shape is str:
        return "a string"
    if shape is int:
        return "an integer"
    if shape is bool:
        return "a boolean"
    if shape == "intstr":
        return "an integer or a string"
    if isinstance(shape, list):
        return "a list"
    return "an object"


def _fits(value: Any, shape: Shape) -> bool:
    if shape is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if shape == "intstr":
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    if isinstance(shape, type):
        return isinstance(value, shape) and not (shape is int and isinstance(value, bool))
    if isinstance(shape, list):
        return isinstance(value, list)
    return isinstance(value, dict)


def _check(value: Any, shape: Shape, path: str) -> None:
    if not _fits(value, shape):
        raise ShapeError(f"{path} must be {_expected(shape)}, not {json_type(value)}")
    if isinstance(shape, list):
        for index, item in enumerate(value):
            _check(item, shape[0], f"{path}[{index}]")
    elif isinstance(shape, dict):
        if "*" in shape:
            for key, item in value.items():
                if item is not None:
                    _check(item, shape["*"], f"{path}.{key}" if path else key)
            return
        for name, sub in shape.items():
            key = name.rstrip("!")
            if key not in value or value[key] is None:
                if name.endswith("!"):
                    raise ShapeError(f"{path}.{key} is missing" if path else f"{key} is missing")
                value.pop(key, None)
                continue
            _check(value[key], sub, f"{path}.{key}" if path else key)


# -- the fast check: every shape compiled once into a function that only answers "fits" ---------------
# The walk above builds a path string for every field of every object and costs about 0.03 ms a pod.
# A compiled shape answers True only when the walk would pass, dropping the same nulls; on anything
# else (a wrong type, a missing required field, a subclass of a JSON type) it answers False and the
# walk runs from the start, so every error keeps its exact message.
Fits: TypeAlias = Callable[[Any], bool]
# Leaf shapes tested by exact type: JSON decoders make exact str/int/bool/dict/list; bool is not an int
# here, as in _fits.
_EXACT: dict[Any, type] = {str: str, int: int, bool: bool, dict: dict}


def _intstr(value: Any) -> bool:
    kind = type(value)
    return kind is str or kind is int


def _compile(shape: Shape) -> Fits:
    if isinstance(shape, type):
        exact = _EXACT[shape]
        return lambda value: type(value) is exact
    if shape == "intstr":
        return _intstr
    if isinstance(shape, list):
        return _compile_list(shape[0])
    if isinstance(shape, dict) and "*" in shape:
        return _compile_map(shape["*"])
    if isinstance(shape, dict):
        return _compile_fields(shape)
    raise ValueError(f"unknown shape {shape!r}")


def _compile_list(item_shape: Shape) -> Fits:
    if isinstance(item_shape, type):
        exact = _EXACT[item_shape]

        def fits_leaves(value: Any) -> bool:
            if type(value) is not list:
                return False
            for item in value:  # noqa: SIM110 - a loop: all() over a generator costs twice as much here
                if type(item) is not exact:
                    return False
            return True

        return fits_leaves
    item_fits = _compile(item_shape)

    def fits(value: Any) -> bool:
        if type(value) is not list:
            return False
        for item in value:  # noqa: SIM110 - as above
            if not item_fits(item):
                return False
        return True

    return fits


def _compile_map(value_shape: Shape) -> Fits:
    # A map's null values stay (the walk skips them without dropping them).
    if isinstance(value_shape, type):
        exact = _EXACT[value_shape]

        def fits_leaves(value: Any) -> bool:
            if type(value) is not dict:
                return False
            for item in value.values():  # noqa: SIM110 - as above
                if type(item) is not exact and item is not None:
                    return False
            return True

        return fits_leaves
    item_fits = _compile(value_shape)

    def fits(value: Any) -> bool:
        if type(value) is not dict:
            return False
        for item in value.values():  # noqa: SIM110 - as above
            if item is not None and not item_fits(item):
                return False
        return True

    return fits


def _compile_fields(shape: dict[str, Shape]) -> Fits:
    # Whether the walk passes does not depend on the order the fields are looked at: leaves first.
    required = [name.rstrip("!") for name in shape if name.endswith("!")]
    leaves = [(name.rstrip("!"), _EXACT[sub]) for name, sub in shape.items() if isinstance(sub, type)]
    nested = [(name.rstrip("!"), _compile(sub)) for name, sub in shape.items() if not isinstance(sub, type)]

    def fits(value: Any) -> bool:
        if type(value) is not dict:
            return False
        for key in required:
            if value.get(key) is None:
                return False
        for key, exact in leaves:
            item = value.get(key)
            if type(item) is not exact:
                if item is not None:
                    return False
                if key in value:  # null reads as absent, as in Go: dropped
                    del value[key]
        for key, sub in nested:
            item = value.get(key)
            if item is None:
                if key in value:
                    del value[key]
            elif not sub(item):
                return False
        return True

    return fits


_COMPILED: dict[str, Fits] = {kind: _compile(shape) for kind, shape in SHAPES.items()}
_COMPILED_GENERIC = _compile(GENERIC)


# What the API server accepts as an object's name (DNS-1123 subdomain) and namespace (DNS-1123 label).
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_object(kind: str, obj: Any) -> None:
    """Raise ShapeError if `obj` (one item of a `kind` list) has a field of the wrong type or a name
    the API server would refuse (anything else printed as a name could be anything, a key included);
    nulls in optional fields are removed in place. Pods must have a name (every command names them)."""
    if not isinstance(obj, dict):
        raise ShapeError(f"must be an object, not {json_type(obj)}")
    if not _COMPILED.get(kind, _COMPILED_GENERIC)(obj):
        _check(obj, SHAPES.get(kind, GENERIC), "")  # raises with the field's path, or passes a subclass
    meta = obj.get("metadata") or {}
    if kind == "pods" and not meta.get("name"):
        raise ShapeError("metadata.name is missing")
    # Never echoed: what is not a name may be anything, a private key included.
    name, namespace = meta.get("name"), meta.get("namespace")
    if name and not _NAME.fullmatch(name):
        raise ShapeError("metadata.name is not a valid Kubernetes name (lower-case letters, digits, '-', '.')")
    if namespace and not _NAMESPACE.fullmatch(namespace):
        raise ShapeError("metadata.namespace is not a valid Kubernetes namespace (lower-case letters, digits, '-')")


def describe(obj: Any, index: int) -> str:
    """How to name an object in an error: `ns/name (items[3])`, or only its index if it has no name."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    if isinstance(name, str) and _NAME.fullmatch(name):
        namespace = meta.get("namespace") if isinstance(meta, dict) else None
        prefix = f"{namespace}/" if isinstance(namespace, str) and _NAMESPACE.fullmatch(namespace) else ""
        return f"{prefix}{name} (items[{index}])"
    return f"items[{index}]"
