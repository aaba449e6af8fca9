"""The server side of the Kubernetes exec websocket, for FakeKubeAPI. Stdlib only.

RFC 6455 framing as far as the exec API needs it: the 101 handshake answer, unmasked binary frames from
the server (first payload byte = channel: 1 stdout, 2 stderr, 3 the Status that ends the command), a
close frame, and reading (masked) frames the client sends back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
from typing import Any, Protocol

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
# What a current API server speaks, in its order of preference; it picks the first the client offers.
SUBPROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
STDOUT, STDERR, STATUS = 1, 2, 3


class Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def choose_subprotocol(offered: str) -> str | None:
    wanted = [p.strip() for p in offered.split(",") if p.strip()]
    return next((p for p in wanted if p in SUBPROTOCOLS), None)


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One unmasked frame, as a server sends it."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([size])
    elif size < 1 << 16:
        head += bytes([126]) + struct.pack("!H", size)
    else:
        head += bytes([127]) + struct.pack("!Q", size)
    return head + payload


def channel_frame(channel: int, data: bytes) -> bytes:
    return frame(OP_BINARY, bytes([channel]) + data)


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + reason.encode())


def exec_status(exit_code: int) -> dict[str, Any]:
    """The Status the API server writes on channel 3 when the command ends (kubelet remotecommand)."""
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command [...], exit code {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def status_frame(exit_code: int) -> bytes:
    return channel_frame(STATUS, json.dumps(exec_status(exit_code), separators=(",", ":")).encode())


def read_frame(stream: Reader) -> tuple[int, bytes] | None:
    """(opcode, payload) of one client frame (clients must mask); None at end of stream."""
    head = stream.read(2)
    if len(head) < 2:
        return None
    opcode, size, masked = head[0] & 0x0F, head[1] & 0x7F, bool(head[1] & 0x80)
    if size == 126:
        size = struct.unpack("!H", stream.read(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", stream.read(8))[0]
    mask = stream.read(4) if masked else b""
    payload = stream.read(size)
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def await_close(sock: socket.socket, stream: Reader, seconds: float = 2.0) -> None:
    """Wait (briefly) for the client's close frame answering ours, so it never sees a reset."""
    sock.settimeout(seconds)
    try:
        while (got := read_frame(stream)) is not None and got[0] != OP_CLOSE:
            pass
    except (OSError, struct.error):
        pass
