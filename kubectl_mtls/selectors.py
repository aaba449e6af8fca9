"""Kubernetes label selectors (`-l`), evaluated locally for snapshots as the API server does."""

from __future__ import annotations

import re

from .errors import UsageError

_SET = re.compile(r"^\s*(!?)\s*([\w./-]+)\s*(?:(notin|in)\s*\(([^)]*)\)|(==|=|!=)\s*([\w.-]*))?\s*$")


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside `in (...)` parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def matches(selector: str, labels: dict[str, str]) -> bool:
    for requirement in _split(selector):
        found = _SET.match(requirement)
        if not found:
            raise UsageError(f"unable to parse label selector requirement: {requirement.strip()!r}")
        negate, key, set_op, values, op, value = found.groups()
        if negate:
            if set_op or op:
                raise UsageError(f"unable to parse label selector requirement: {requirement.strip()!r}")
            if key in labels:
                return False
        elif set_op:
            options = {v.strip() for v in values.split(",") if v.strip()}
            inside = labels.get(key) in options
            if (set_op == "in") != inside:
                return False
        elif op in ("=", "=="):
            if labels.get(key) != value:
                return False
        elif op == "!=":
            if labels.get(key) == value:
                return False
        elif key not in labels:
            return False
    return True
