"""Standard output that cannot fail the run: closed (`>&-`), full (`>/dev/full`) or a closed pipe
(`| head`). The command's exit code must still say what it found, and Python must not add its
`Exception ignored ... BrokenPipeError` noise at exit; what could not be written is dropped quietly.
Stdlib only: imported at every start-up."""

from __future__ import annotations

import io
import os
import sys


class _DroppingWriter(io.RawIOBase):
    """fd 1 as a raw stream whose write errors (EPIPE, ENOSPC, EIO, EBADF) drop the output from then on."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.failed: OSError | None = None

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        try:
            return os.isatty(self.fd)
        except OSError:
            return False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.failed is None:
            try:
                written = os.write(self.fd, data)
            except OSError as exc:
                self.failed = exc
            else:
                return written
        return len(data)


def _reopen_if_closed(fd: int, name: str) -> bool:
    """A closed fd 1 or 2 gets /dev/null, so no file opened later becomes our stdout or stderr."""
    try:
        os.fstat(fd)
    except OSError:
        null = os.open(os.devnull, os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "w", closefd=False))  # noqa: SIM115 - lives as long as the process
        return True
    return False


def guard_stdout() -> None:
    """Make sys.stdout safe to write to whatever fd 1 is. Only the process's own stdout is replaced
    (a test harness or an embedding program that swapped sys.stdout keeps its stream)."""
    _reopen_if_closed(2, "stderr")
    if _reopen_if_closed(1, "stdout"):
        return
    current = sys.stdout
    if current is None or current is not sys.__stdout__:
        return
    raw = _DroppingWriter(1)
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=getattr(current, "encoding", None) or "utf-8",
        errors=getattr(current, "errors", None) or "strict",
        line_buffering=bool(getattr(current, "line_buffering", False)),
    )
