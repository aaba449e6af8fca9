"""Output: table (per command), json or yaml of the documented JSON, after an optional --query."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import InputError, UsageError

FORMATS = ("table", "wide", "json", "yaml")


def apply_query(data: Any, expression: str | None) -> Any:
    if not expression:
        return data
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.search(expression, data)
    except JMESPathError as exc:
        raise UsageError(f"--query {expression!r}: {query_error(exc)}") from None
    except RecursionError:  # `((((...))))` thousands deep: the parser recurses per level
        raise UsageError(f"--query {expression[:80]!r}...: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # `items[::0]`, a 5,000-digit literal
        raise UsageError(f"--query {expression!r}: cannot be evaluated: {str(exc).splitlines()[0]}") from None


def query_error(exc: Exception) -> str:
    """JMESPath's message on one line, with the column where the expression goes wrong (counted from 0,
    as JMESPath's own parse errors count it)."""
    first = str(exc).splitlines()[0].rstrip(":").removesuffix(", for expression")
    position = getattr(exc, "lex_position", None)
    if isinstance(position, int) and "column" not in first:
        first += f" at column {position}"
    return first


def to_yaml(data: Any, allow_unicode: bool = True) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    # Keep multi-line strings readable and key order as documented; without unicode (a terminal that is
    # not UTF-8), YAML's own escapes keep the document exact.
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=allow_unicode, default_flow_style=False)


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    from . import jsonutil

    return jsonutil.dumps(value).decode()


def emit(
    data: Any,
    output: str,
    query: str | None,
    table: Callable[[Any, bool], str],
    out: Any = None,
) -> None:
    stream = out or sys.stdout
    if query:
        data = apply_query(data, query)
        try:  # what a query builds may not print: beyond JSON's nesting, a lone surrogate, a huge number
            _emit(data, output, query, table, stream)
        except (TypeError, ValueError, RecursionError) as exc:
            message = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
            raise UsageError(f"--query {query[:200]!r}: the result cannot be printed: {message}") from None
        return
    _emit(data, output, query, table, stream)


def _write(stream: Any, text: str) -> None:
    try:
        data = text.encode("utf-8")  # fails only on a lone surrogate: cheaper than searching for one
    except UnicodeEncodeError:  # from a --query literal: shown escaped, never an encoding crash
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        data = text.encode("utf-8", "replace")
    from .keymaterial import key_material

    # A key pasted into the input where a name or a note belongs would be printed with it: never.
    found = key_material(data)
    if found:
        raise InputError(
            f"output withheld: it would show {found} found in the input; remove the key from the input"
        )
    stream.write(text)


def _emit(data: Any, output: str, query: str | None, table: Callable[[Any, bool], str], stream: Any) -> None:
    if query and output in ("table", "wide"):
        if data is None or data == []:
            # stdout stays empty for scripts; a person is told why there is nothing (JSON: null / []).
            sys.stderr.write(f"--query {query!r} selected nothing\n")
            return
        # A query picks values: print scalars bare, a list of scalars one per line, else JSON.
        if isinstance(data, list) and all(not isinstance(v, (dict, list)) for v in data):
            text = "\n".join(_plain(v) for v in data)
        else:
            text = _plain(data)
        _write(stream, text + ("\n" if text else ""))
        return
    if output == "json":
        from . import jsonutil  # orjson: imported when JSON is printed, not for `version`
        from .terminal import can_encode, json_ascii

        text = jsonutil.dumps(data).decode()
        _write(stream, (text if can_encode(stream, "\u00e9\u221a") else json_ascii(text)) + "\n")
    elif output == "yaml":
        from .terminal import can_encode

        _write(stream, to_yaml(data, allow_unicode=can_encode(stream, "\u00e9\u221a")))
    else:
        _write(stream, table(data, output == "wide"))


_ANSI = re.compile(r"\033\[[0-9;]*m")


def _width(cell: str) -> int:
    return len(_ANSI.sub("", cell))


def columns(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """kubectl-style columns: upper-case headers, three spaces between columns, no borders."""
    cells = [[str(h) for h in headers]] + [[_plain(c) for c in row] for row in rows]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["   ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


class Style:
    """Marks and colours; colour only on a terminal, never with --no-color or NO_COLOR."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def detect(cls, no_color: bool, stream: Any = None) -> Style:
        stream = stream or sys.stdout
        tty = hasattr(stream, "isatty") and stream.isatty()
        return cls(tty and not no_color and not os.environ.get("NO_COLOR"))

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def ok(self, text: str) -> str:
        return self._wrap("32", text)

    def warn(self, text: str) -> str:
        return self._wrap("33", text)

    def error(self, text: str) -> str:
        return self._wrap("31", text)

    def bold(self, text: str) -> str:
        return self._wrap("1", text)


def duration(seconds: float) -> str:
    """Time left, kubectl AGE-style: 45s, 12m, 5h12m, 3d4h, 2y110d; negative = expired ago."""
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    if s < 120:
        text = f"{s}s"
    elif s < 3600 * 2:
        text = f"{s // 60}m"
    elif s < 86400 * 2:
        text = f"{s // 3600}h{(s % 3600) // 60}m" if (s % 3600) // 60 else f"{s // 3600}h"
    elif s < 86400 * 365:
        text = f"{s // 86400}d{(s % 86400) // 3600}h" if (s % 86400) // 3600 else f"{s // 86400}d"
    else:
        text = f"{s // (86400 * 365)}y{(s % (86400 * 365)) // 86400}d"
    return sign + text
