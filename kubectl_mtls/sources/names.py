"""Names that become parts of paths (snapshot files, API URLs): never a path of their own."""

from __future__ import annotations

from ..errors import UsageError


def path_component(value: str, what: str) -> str:
    """A namespace, pod or container name used as one path segment: `default/../../x`, `..` or a
    name longer than Kubernetes allows (253) is a usage error, never a way out of a directory."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\0?#%") or len(value) > 253:
        raise UsageError(f"invalid {what} name {value!r}")
    return value
