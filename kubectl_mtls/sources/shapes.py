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


# What the API server accepts as an object's name (DNS-1123 subdomain) and namespace (DNS-1123 label).
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_object(kind: str, obj: Any) -> None:
    """Raise ShapeError if `obj` (one item of a `kind` list) has a field of the wrong type or a name
    the API server would refuse (anything else printed as a name could be anything, a key included);
    nulls in optional fields are removed in place. Pods must have a name (every command names them)."""
    if not isinstance(obj, dict):
        raise ShapeError(f"must be an object, not {json_type(obj)}")
    _check(obj, SHAPES.get(kind, GENERIC), "")
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
