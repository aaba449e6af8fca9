"""Output on terminals that are not UTF-8 (LANG=C without coercion, PYTHONIOENCODING=latin-1, Windows
code pages): the marks fall back to ASCII, anything else the encoding lacks is written as a \\u escape,
so a command never fails on the characters it prints and nothing is silently dropped."""

from __future__ import annotations

import codecs
import re
import sys

TYPE_CHECKING = False  # runs before every command: typing is not imported for it
if TYPE_CHECKING:
    from typing import Any

HANDLER = "kubectl-mtls-ascii"
# The marks and symbols the tables use, and what a non-UTF-8 terminal gets instead.
ASCII = {
    "√": "ok",
    "✓": "ok",
    "×": "x",
    "✗": "x",
    "‼": "!!",
    "·": "-",
    "…": "...",
    "→": "->",
    "←": "<-",
    "—": "-",
    "–": "-",
    "µ": "u",
}
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells characters outside the BMP as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    text = exc.object[exc.start : exc.end]
    return "".join(ASCII.get(char) or _escape(char) for char in text), exc.end


def can_encode(stream: Any, sample: str = "".join(ASCII)) -> bool:
    """Can the stream write these characters as they are?"""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        sample.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def json_ascii(text: str) -> str:
    """JSON text with every non-ASCII character as a \\u escape: the same JSON, for any terminal."""
    return _NON_ASCII.sub(lambda match: _escape(match.group()), text)


def fit_streams() -> None:
    """Make stdout and stderr fall back instead of failing where their encoding lacks a character."""
    codecs.register_error(HANDLER, _fallback)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and not can_encode(stream):
            reconfigure(errors=HANDLER)
