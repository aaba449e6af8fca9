"""Run istioctl: argv lists only (never a shell), a timeout per call, killed on timeout."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading

from ..errors import GatherError, one_line

DEFAULT_TIMEOUT = 30.0

# istioctl calls still running, so an interrupted run can stop them: they run in sessions of their own
# (no terminal signal reaches them) and worker threads wait on them.
_RUNNING: set[subprocess.Popen[bytes]] = set()
_RUNNING_LOCK = threading.Lock()
_stopping = threading.Event()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop_all() -> None:
    """Kill every running istioctl (and what it started), and any started from now on: the run was
    interrupted, and the threads waiting on them must return."""
    _stopping.set()
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for proc in running:
        _kill(proc)


def find(explicit: str | None) -> str:
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise GatherError(f"--istioctl {explicit}: not an executable file")
    found = shutil.which("istioctl")
    if not found:
        raise GatherError("istioctl not found on PATH: install it, pass --istioctl PATH, or use --snapshot DIR")
    return found


def run(argv: list[str], timeout: float) -> bytes:
    """stdout of a successful call; GatherError with istioctl's own error line otherwise."""
    shown = " ".join(argv[1:])
    try:
        # A new session lets us kill istioctl and anything it started (port-forwards) together.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise GatherError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    with _RUNNING_LOCK:
        _RUNNING.add(proc)
    if _stopping.is_set():
        _kill(proc)
    try:
        return _finish(proc, shown, timeout)
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(proc)


def _finish(proc: subprocess.Popen[bytes], shown: str, timeout: float) -> bytes:
    try:
        out, err = proc.communicate(timeout=timeout if timeout > 0 else None)
    except KeyboardInterrupt:  # its own session does not get the terminal's Ctrl-C: stop it ourselves
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise GatherError(f"istioctl {shown}: timed out after {timeout:g}s (killed)") from None
    if proc.returncode != 0:
        message = one_line(err.decode(errors="replace")) or f"exit status {proc.returncode}"
        raise GatherError(f"istioctl {shown}: {message}")
    return out
