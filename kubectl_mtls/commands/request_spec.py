"""`check pair --request 'METHOD PATH' [--header 'name: value'] [--host HOST] [--jwt TOKEN|none]`: the one
request the user asks about, parsed into what the authorization evaluator needs.

The JWT is only decoded, never verified and never printed: it stands for a token RequestAuthentication
accepted, and only its claims (iss, sub, aud, azp, ...) reach the evaluation."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token: a method or a header name
MAX_HEADERS = 100


@dataclass(frozen=True)
class RequestSpec:
    method: str
    path: str
    host: str | None
    headers: tuple[tuple[str, str], ...]
    jwt: dict[str, Any] | None
    jwt_known: bool

    def describe(self) -> dict[str, Any]:
        """What the output echoes: never the token, only the claims that name who sent it."""
        jwt: Any = None
        if self.jwt_known:
            jwt = {k: self.jwt[k] for k in ("iss", "sub", "aud", "azp") if k in self.jwt} if self.jwt else "none"
        return {
            "method": self.method,
            "path": self.path,
            "host": self.host,
            "headers": [f"{k}: {v}" for k, v in self.headers if k != "authorization"],
            "jwt": jwt,
        }


def parse_request(args: argparse.Namespace) -> RequestSpec | None:
    """None without --request; a UsageError for a malformed one, or --header/--host/--jwt without it."""
    raw = getattr(args, "request", None)
    extras = [flag for flag, value in (("--header", args.header), ("--host", args.host), ("--jwt", args.jwt)) if value]
    if raw is None:
        if extras:
            raise UsageError(f"{', '.join(extras)} describe a request: give it with --request 'METHOD PATH'")
        return None
    parts = raw.split()
    if len(parts) != 2 or not _TOKEN.match(parts[0]) or not (parts[1].startswith("/") or parts[1] == "*"):
        raise UsageError(
            f"--request must be 'METHOD PATH' with PATH starting with '/', e.g. 'GET /api/items', not {raw!r}"
        )
    method, path = parts
    headers: list[tuple[str, str]] = []
    for item in args.header or []:
        name, sep, value = item.partition(":")
        name = name.strip().lower()
        if not sep or not _TOKEN.match(name):
            raise UsageError(f"--header must be 'name: value', not {item!r}")
        headers.append((name, value.strip()))
    if len(headers) > MAX_HEADERS:
        raise UsageError(f"at most {MAX_HEADERS} --header flags")
    host = args.host
    if host is None:
        host = next((v for k, v in headers if k == "host"), None)
    if host is not None and (not host or any(c.isspace() for c in host)):
        raise UsageError(f"--host must be a host name, optionally with :PORT, not {host!r}")
    headers = [(k, v) for k, v in headers if k != "host"]
    jwt, known = _jwt(args.jwt)
    return RequestSpec(method, path, host, tuple(headers), jwt, known)


def _jwt(value: str | None) -> tuple[dict[str, Any] | None, bool]:
    if value is None:
        return None, False
    if value.strip().lower() == "none":
        return None, True
    text = value.strip()
    if text.startswith("{"):
        claims: Any = _loads(text)
    else:
        parts = text.removeprefix("Bearer ").strip().split(".")
        if len(parts) != 3:
            raise UsageError("--jwt must be a JWT (header.payload.signature), a JSON object of claims, or 'none'")
        try:
            payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        except (binascii.Error, ValueError) as exc:
            raise UsageError("--jwt: the payload is not base64url") from exc
        claims = _loads(payload.decode("utf-8", "replace"))
    if not isinstance(claims, dict):
        raise UsageError("--jwt: the claims are not a JSON object")
    return claims, True


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError("--jwt: the claims are not JSON") from exc
