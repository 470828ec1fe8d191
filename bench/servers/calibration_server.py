"""Calibration: a bare WebSocket server on gevent with no WebSocket library at all.

What the machine itself carries: a minimal RFC 6455 handshake, one reader greenlet per
connection (needed anyway to answer heartbeats), frames encoded once and written with
``sock.sendall``. It speaks the same bench protocol (original's JSON frames) as the crossws
server for the single-node workloads W1, W5 and W7:

* ``echo`` with ``callbackId`` -> ack with the same payload;
* ``trigger`` ``{"action": "broadcast", "count": N, "pad": s}`` -> N pushes of ``bench`` to
  every connection, then the ack;
* ``trigger`` ``{"action": "gc"}`` -> ``gc.collect()``, then the ack;
* an empty text frame (the original's heartbeat) is echoed.

Writes (``--mode raw``, the default) go straight to the C socket under gevent's wrapper with one
non-blocking ``send()`` per frame, falling back to gevent's ``sendall`` for the rest of a partial
write: that is the cheapest way a gevent process can put a frame on the wire. ``--mode sendall``
uses gevent's ``sendall`` for every frame, about 1 us more per frame (system
``calibration_sendall``).
"""
from gevent import monkey

monkey.patch_all()

import base64  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

from gevent.server import StreamServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_payload, collect_garbage, parse_args  # noqa: E402

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is installed here
    import json

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 1 << 20
_pack_h = struct.Struct("!H").pack
_pack_q = struct.Struct("!Q").pack


def encode(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame."""
    length = len(payload)
    if length < 126:
        return bytes((0x80 | opcode, length)) + payload
    if length < 65536:
        return bytes((0x80 | opcode, 126)) + _pack_h(length) + payload
    return bytes((0x80 | opcode, 127)) + _pack_q(length) + payload


EMPTY_TEXT = encode(0x1, b"")


#: "raw" (default): try one non-blocking send() on the C socket object under gevent's wrapper and
#: fall back to gevent's sendall only for the unsent rest; "sendall": gevent's sendall for every
#: frame (the stack probe's "raw" mode). Set with --mode.
MODE = "raw"


class Conn:
    """One connection: a socket plus a minimal single-writer guard (no lock object)."""

    __slots__ = ("sock", "raw", "writing", "backlog", "closed")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.raw = sock._sock if MODE == "raw" else None  # gevent's socket wraps a non-blocking C socket
        self.writing = False
        self.backlog: List[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        # gevent sockets must not be written by two greenlets at once: a second writer queues
        # its bytes and the current writer flushes them after its own.
        if self.closed:
            return
        if self.writing:
            self.backlog.append(data)
            return
        self.writing = True
        try:
            if self.raw is not None:
                try:
                    sent = self.raw.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    self.sock.sendall(data[sent:])  # blocks this greenlet only, until the peer reads
            else:
                self.sock.sendall(data)
            while self.backlog:
                pending, self.backlog = self.backlog, []
                self.sock.sendall(b"".join(pending))
        except OSError:
            self.closed = True
        finally:
            self.writing = False


CONNS: Dict[int, Conn] = {}


def handshake(sock: Any) -> Optional[bytes]:
    """Read the upgrade request, answer 101; return any bytes read past the request."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > 16384:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    key = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    if key is None:
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        return None
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return rest


def on_text(conn: Conn, text: bytes) -> None:
    if not text:
        conn.send(EMPTY_TEXT)
        return
    try:
        msg = loads(text)
        event = msg["event"]
    except (ValueError, KeyError, TypeError):
        return
    payload = msg.get("payload")
    callback_id = msg.get("callbackId")
    if event == "trigger" and isinstance(payload, dict):
        action = payload.get("action")
        if action == "broadcast":
            count = int(payload.get("count", 0))
            pad = "x" * int(payload.get("pad", 48))
            for seq in range(count):
                frame = encode(0x1, dumps({"event": "bench", "payload": bench_payload(seq, pad)}))
                for member in list(CONNS.values()):
                    member.send(frame)
            reply: Any = {"sent": count}
        elif action == "gc":
            reply = collect_garbage()
        else:
            reply = {"error": "unsupported action %r" % action}
    elif event == "echo":
        reply = payload
    else:
        return
    if callback_id is not None:
        conn.send(encode(0x1, dumps({"payload": reply, "callbackId": callback_id})))


def handle(sock: Any, address: Any) -> None:
    rest = handshake(sock)
    if rest is None:
        return
    conn = Conn(sock)
    CONNS[id(conn)] = conn
    buf = bytearray(rest)
    try:
        while True:
            # parse every complete frame in buf
            while len(buf) >= 2:
                b0, b1 = buf[0], buf[1]
                length = b1 & 0x7F
                pos = 2
                if length == 126:
                    if len(buf) < 4:
                        break
                    length = int.from_bytes(buf[2:4], "big")
                    pos = 4
                elif length == 127:
                    if len(buf) < 10:
                        break
                    length = int.from_bytes(buf[2:10], "big")
                    pos = 10
                if length > MAX_MESSAGE or not b1 & 0x80 or not b0 & 0x80:
                    return  # oversized, unmasked or fragmented: not part of the bench protocol
                end = pos + 4 + length
                if len(buf) < end:
                    break
                mask = bytes(buf[pos:pos + 4])
                raw = bytes(buf[pos + 4:end])
                del buf[:end]
                full_mask = (mask * ((length >> 2) + 1))[:length]
                payload = (int.from_bytes(raw, "big") ^ int.from_bytes(full_mask, "big")).to_bytes(length, "big") \
                    if length else b""
                opcode = b0 & 0x0F
                if opcode == 0x1 or opcode == 0x2:
                    on_text(conn, payload)
                elif opcode == 0x9:
                    conn.send(encode(0xA, payload))
                elif opcode == 0x8:
                    conn.send(encode(0x8, payload[:2]))
                    return
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
    except OSError:
        return
    finally:
        conn.closed = True
        CONNS.pop(id(conn), None)
        try:
            sock.close()
        except OSError:
            pass


def main() -> None:
    global MODE
    mode = "raw"
    if "--mode" in sys.argv:
        at = sys.argv.index("--mode")
        mode = sys.argv[at + 1]
        del sys.argv[at:at + 2]
    if mode not in ("raw", "sendall"):
        sys.exit("--mode must be raw or sendall")
    MODE = mode
    args = parse_args()
    server = StreamServer((args.host, args.port), handle, backlog=4096)
    server.serve_forever()


if __name__ == "__main__":
    main()
