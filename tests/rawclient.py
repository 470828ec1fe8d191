"""A deliberately minimal WebSocket client for tests: full control over every byte it sends."""
from __future__ import annotations

import json
import socket
from typing import Any, Dict, List, Optional, Tuple

from crossws_sync.wire import frames


class HandshakeRejected(Exception):
    def __init__(self, status: int, body: bytes, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        #: the refusal's header fields, names lower-cased
        self.headers = dict(headers or {})


class RawClient:
    """Connects, upgrades, sends masked frames and reads frames one by one."""

    def __init__(self, port: int, path: str = "/", headers: Optional[Dict[str, str]] = None, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = frames.new_client_key()
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: %s" % key, "Sec-WebSocket-Version: 13"]
        for name, value in (headers or {}).items():
            lines.append("%s: %s" % (name, value))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            response += chunk
        head, _, rest = response.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head else 0
        if status != 101:
            body = rest
            try:
                while True:
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        break
                    body += chunk
            except OSError:
                pass
            self.sock.close()
            fields = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    fields[name.strip().lower()] = value.strip()
            raise HandshakeRejected(status, body, fields)
        assert frames.accept_key(key).encode() in head
        self.parser = frames.FrameParser(None, expect_masked=False)
        self.pending: List[Tuple[int, bytes]] = []
        self.parser_buffer = rest
        if rest:
            self.pending.extend(self.parser.feed(rest))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.sock.sendall(frames.encode_frame(opcode, payload, mask=True, fin=fin))

    def send_text(self, text: str) -> None:
        self.send_frame(frames.OP_TEXT, text.encode("utf-8"))

    def send_json(self, obj: Any) -> None:
        self.send_text(json.dumps(obj))

    def recv_frame(self, timeout: float = 5.0) -> Tuple[int, bytes]:
        self.sock.settimeout(timeout)
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by server")
            self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

    def recv_text(self, timeout: float = 5.0, skip_pings: bool = True) -> str:
        while True:
            opcode, payload = self.recv_frame(timeout)
            if opcode == frames.OP_PING and skip_pings:
                self.send_frame(frames.OP_PONG, payload)
                continue
            if opcode == frames.OP_CLOSE:
                raise ConnectionError("close frame: %r" % (frames.parse_close_payload(payload),))
            return payload.decode("utf-8")

    def recv_json(self, timeout: float = 5.0) -> Any:
        return json.loads(self.recv_text(timeout))

    def recv_close(self, timeout: float = 5.0) -> Tuple[int, str]:
        """Read until a close frame; return its (code, reason)."""
        while True:
            opcode, payload = self.recv_frame(timeout)
            if opcode == frames.OP_CLOSE:
                return frames.parse_close_payload(payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            self.sock.sendall(frames.encode_close(code, reason, mask=True))
        except OSError:
            pass

    def abort(self) -> None:
        self.sock.close()
