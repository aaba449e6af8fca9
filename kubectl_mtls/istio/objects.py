"""Readers for Kubernetes objects as plain dicts, shared by the Istio rule engines.

Objects may come from the API (always complete) or from hand-written manifests in a snapshot
(anything may be missing), so every reader tolerates absent or mistyped fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

ZERO_TIME = datetime.min.replace(tzinfo=UTC)  # Go's zero time: older than every real object


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def spec(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, dict) else {}


def namespace(obj: dict[str, Any]) -> str:
    # An API object always has one; a bare manifest lands in "default", as with kubectl and
    # `istioctl analyze`.
    return str(meta(obj).get("namespace") or "default")


def name(obj: dict[str, Any]) -> str:
    return str(meta(obj).get("name") or "")


def created(obj: dict[str, Any]) -> datetime:
    """creationTimestamp; a missing or unreadable one sorts as the oldest, as istiod does."""
    raw = meta(obj).get("creationTimestamp")
    if not isinstance(raw, str) or not raw:
        return ZERO_TIME
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return ZERO_TIME
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
