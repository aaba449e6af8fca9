"""Names that become parts of paths (snapshot files, API URLs): never a path of their own."""

from __future__ import annotations

from ..errors import UsageError

# Characters no path segment may hold: separators, NUL, and what a URL reads specially. A set: this runs
# twice for every pod read, and a generator over the string cost twice as much.
_NOT_IN_A_SEGMENT = frozenset("/\\\0?#%")


def path_component(value: str, what: str) -> str:
    """A namespace, pod or container name used as one path segment: `default/../../x`, `..` or a
    name longer than Kubernetes allows (253) is a usage error, never a way out of a directory."""
    if not value or value in (".", "..") or not _NOT_IN_A_SEGMENT.isdisjoint(value) or len(value) > 253:
        raise UsageError(f"invalid {what} name {value!r}")
    return value
