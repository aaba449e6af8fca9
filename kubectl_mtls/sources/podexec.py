"""Run one command in a container through the Kubernetes exec API (a websocket), for `check pair --probe`.

The official client's `kubernetes.stream.stream` opens the websocket; we read its channels (1 stdout,
2 stderr, 3 the Status that ends the command) until the server closes it or the deadline passes. The
exit code comes from that Status: `Success` -> 0, `NonZeroExitCode` -> its `ExitCode` cause.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

from .. import jsonutil
from ..errors import GatherError, InputError, NotFoundError, one_line

STDOUT, STDERR, STATUS = 1, 2, 3
_HANDSHAKE = re.compile(r"Handshake status (\d{3})")
NOT_FOUND_EXIT = 127  # what a shell answers for a missing executable


def run_exec(
    api_client: Any, namespace: str, pod: str, container: str, command: list[str], timeout: float
) -> tuple[str, str, int | None]:
    """(stdout, stderr, exit code) of `command`; exit code None when it did not end within `timeout`."""
    import websocket
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import stream

    where = f"{namespace}/{pod} container {container}"
    previous = websocket.getdefaulttimeout()
    websocket.setdefaulttimeout(timeout)  # the handshake and each blocking read; restored below
    try:
        ws = stream(
            client.CoreV1Api(api_client).connect_get_namespaced_pod_exec,
            pod,
            namespace,
            command=command,
            container=container,
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            _preload_content=False,
        )
    except ApiException as exc:
        raise exec_error(exc.status or 0, str(exc.reason or exc), namespace, pod) from None
    except (OSError, websocket.WebSocketException) as exc:
        raise GatherError(f"exec in {where}: {one_line(str(exc))}") from None
    finally:
        websocket.setdefaulttimeout(previous)
    try:
        return _collect(ws, where, timeout)
    finally:
        with contextlib.suppress(Exception):  # closing a broken websocket must not hide the result
            ws.close(timeout=0.5)  # not websocket's 3 s wait for an answer from a command still running


def _collect(ws: Any, where: str, timeout: float) -> tuple[str, str, int | None]:
    import websocket

    deadline = time.monotonic() + timeout
    lost: str | None = None
    while ws.is_open():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            ws.update(timeout=left)
        except (OSError, websocket.WebSocketException) as exc:
            lost = one_line(str(exc)) or type(exc).__name__
            break
    stdout, stderr, status = (_read(ws, channel) for channel in (STDOUT, STDERR, STATUS))
    if not status.strip():
        if lost is not None:
            raise GatherError(f"exec in {where}: the connection broke before the command ended: {lost}")
        return stdout, stderr, None  # still running at the deadline
    code, message = exit_code(status)
    if message:
        stderr = (stderr + ("\n" if stderr and not stderr.endswith("\n") else "") + message).lstrip("\n")
    return stdout, stderr, code


def _read(ws: Any, channel: int) -> str:
    """What arrived on a channel (the client buffers it); nothing if the socket fails on the way."""
    import websocket

    try:
        data = ws.read_channel(channel, timeout=0)
    except (OSError, websocket.WebSocketException):
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data or "")


def exit_code(status_text: str) -> tuple[int, str | None]:
    """The exit code a channel-3 Status stands for, and its message when it is not a plain exit code.

    A Failure that is not `NonZeroExitCode` (the runtime could not start the command: `exec: "curl":
    executable file not found in $PATH`) maps to 127 when the executable is missing, else 1."""
    try:
        status = jsonutil.loads(status_text.encode(), "exec status")
    except InputError:
        return 1, one_line(status_text)
    if not isinstance(status, dict):
        return 1, one_line(status_text)
    if status.get("status") == "Success":
        return 0, None
    causes = ((status.get("details") or {}).get("causes")) or []
    if status.get("reason") == "NonZeroExitCode":
        for cause in causes:
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                try:
                    return int(str(cause.get("message"))), None
                except ValueError:
                    break
    message = one_line(str(status.get("message") or status_text))
    missing = "executable file not found" in message or "no such file or directory" in message.lower()
    return (NOT_FOUND_EXIT if missing else 1), message


def exec_error(status: int, reason: str, namespace: str, pod: str) -> Exception:
    """One line for a refused exec. The client reports a failed websocket handshake as status 0 with
    websocket's `Handshake status 403 Forbidden -+-+- {headers} -+-+- {body}` as the reason."""
    match = _HANDSHAKE.search(reason)
    if match:
        status = int(match.group(1))
    message = ""
    body = reason.rsplit(" -+-+- ", 1)[-1] if " -+-+- " in reason else ""
    if body.strip().startswith("{"):
        try:
            parsed = jsonutil.loads(body.encode(), "exec response")
            if isinstance(parsed, dict):
                message = str(parsed.get("message") or "")
        except InputError:
            message = ""
    if status in (401, 403):
        label = "Forbidden" if status == 403 else "Unauthorized"
        need = f'--probe needs "create" on pods/exec in namespace {namespace}'
        return GatherError(f"{label}: {message or f'exec into {namespace}/{pod} refused'} ({need})")
    if status == 404:
        return NotFoundError(message or f'pods "{pod}" not found in namespace "{namespace}"')
    if status:
        return GatherError(f"exec into {namespace}/{pod}: API error {status}: {message or one_line(reason)[:200]}")
    return GatherError(f"exec into {namespace}/{pod}: {one_line(reason)[:300]}")
