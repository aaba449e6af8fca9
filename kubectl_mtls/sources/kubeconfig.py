"""A kubeconfig checked before the kubernetes client reads it.

The client's loader assumes a well-formed file: a list where a map belongs, a number as the server or
a server URL that does not parse ends in a TypeError or ValueError deep inside it. kubectl rejects such
files with a message naming the field; so does this, as a GatherError (exit 3, like every other reason
the cluster could not be reached).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from ..errors import GatherError

MAX_KUBECONFIG_BYTES = 16 * 1024 * 1024

# Each list of the file: its entries' inner map and the fields of it that must be strings.
_SECTIONS = {
    "clusters": ("cluster", ("server", "certificate-authority", "certificate-authority-data", "proxy-url")),
    "contexts": ("context", ("cluster", "user", "namespace")),
    "users": ("user", ("token", "tokenFile", "client-certificate", "client-key", "username", "password")),
}


def _fail(path: str, message: str) -> GatherError:
    return GatherError(f"cannot load Kubernetes configuration: {path}: {message}")


def _read(path: str) -> bytes:
    import stat

    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # a FIFO would hang the read
            raise _fail(path, "not a regular file")
        if info.st_size > MAX_KUBECONFIG_BYTES:
            raise _fail(path, f"larger than {MAX_KUBECONFIG_BYTES // (1024 * 1024)} MiB")
        with open(path, "rb") as handle:
            return handle.read(MAX_KUBECONFIG_BYTES + 1)
    except OSError as exc:
        raise _fail(path, exc.strerror or str(exc)) from None


def check_kubeconfig(paths: str) -> None:
    """Raise GatherError naming the file and field if a kubeconfig (`paths`: one path or a
    KUBECONFIG-style list) is not YAML or has a field of the wrong type. Missing files are skipped,
    as kubectl skips them in KUBECONFIG."""
    import yaml

    for path in (p for p in paths.split(os.pathsep) if p):
        if not os.path.lexists(path):
            continue
        data = _read(path)
        try:
            doc = yaml.safe_load(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise _fail(path, "not UTF-8 text") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise _fail(path, f"not valid YAML: {problem}{where}") from None
        _check_document(path, doc)


def _type(value: Any) -> str:
    return {dict: "a map", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)


def _check_document(path: str, doc: Any) -> None:
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise _fail(path, f"must be a map, not {_type(doc)}")
    current = doc.get("current-context")
    if current is not None and not isinstance(current, str):
        raise _fail(path, f"current-context must be a string, not {_type(current)}")
    for section, (inner, strings) in _SECTIONS.items():
        entries = doc.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise _fail(path, f"{section} must be a list, not {_type(entries)}")
        for index, entry in enumerate(entries):
            where = f"{section}[{index}]"
            if not isinstance(entry, dict):
                raise _fail(path, f"{where} must be a map, not {_type(entry)}")
            if not isinstance(entry.get("name"), str):
                raise _fail(path, f"{where}.name must be a string")
            body = entry.get(inner)
            if body is None:
                continue
            if not isinstance(body, dict):
                raise _fail(path, f"{where}.{inner} must be a map, not {_type(body)}")
            for key in strings:
                if key in body and body[key] is not None and not isinstance(body[key], str):
                    raise _fail(path, f"{where}.{inner}.{key} must be a string, not {_type(body[key])}")
            server = body.get("server") if inner == "cluster" else None
            if isinstance(server, str) and server:
                try:  # the client parses every cluster's URL while loading, and fails with a ValueError
                    urlsplit(server).port  # noqa: B018
                except ValueError as exc:
                    raise _fail(path, f"{where}.cluster.server {server!r}: {exc}") from None
            exec_config = body.get("exec") if inner == "user" else None
            if exec_config is not None and not (
                isinstance(exec_config, dict) and isinstance(exec_config.get("command"), str)
            ):
                raise _fail(path, f"{where}.user.exec needs a string command")


def check_server(host: Any) -> None:
    """The API server URL the client will use: http(s), a host, a valid port."""
    if not isinstance(host, str) or not host:
        raise GatherError("cannot load Kubernetes configuration: the cluster has no server URL")
    try:
        url = urlsplit(host)
        url.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise GatherError(f"cannot load Kubernetes configuration: server URL {host!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise GatherError(f"cannot load Kubernetes configuration: server URL {host!r} is not an http(s) URL")
