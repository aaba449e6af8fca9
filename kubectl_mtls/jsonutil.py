"""JSON in and out through orjson (fast), with one error type for bad input."""

from __future__ import annotations

from typing import Any

import orjson

from .errors import InputError


def loads(data: bytes | str, what: str) -> Any:
    """Parse JSON; `what` names the source in the error (a file, a pod)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{what}: not valid JSON ({exc})") from None


def dumps(value: Any, indent: bool = True) -> bytes:
    option = orjson.OPT_INDENT_2 if indent else 0
    try:
        return orjson.dumps(value, option=option | orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        # What orjson refuses and JSON allows (what a --query builds): integers beyond 64 bits, lone
        # surrogates (written as \u escapes), nesting deeper than 255.
        import json

        return json.dumps(value, indent=2 if indent else None, ensure_ascii=True).encode()
