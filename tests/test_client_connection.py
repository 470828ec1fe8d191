"""crossws_sync.client.connection: one connection (connect, handshake, read, write, close) against
a scripted server, reporting to a recording owner."""
import socket

import gevent
import gevent.server
import pytest

from crossws_sync.client.connection import MAX_MESSAGE_SIZE, Connection
from crossws_sync.client.options import client_options
from crossws_sync.errors import ConnectTimeoutError, HandshakeError
from crossws_sync.wire import frames
from crossws_sync.wire.websocket import CLOSED, CONNECTING, OPEN
from support import free_port, wait_for
from test_client_options import DEFAULTS

pytestmark = pytest.mark.timeout(30)


class Owner:
    """Records what a connection reports, and in which greenlet."""

    def __init__(self):
        self.reports = []
        self.greenlets = set()

    def _record(self, *report):
        self.reports.append(report)
        self.greenlets.add(gevent.getcurrent())

    def conn_open(self, conn):
        self._record("open")

    def conn_failed(self, conn, error):
        self._record("failed", error)

    def conn_text(self, conn, text):
        self._record("text", text)

    def conn_binary(self, conn, data):
        self._record("binary", data)

    def conn_closed(self, conn, code, reason, was_clean, error):
        self._record("closed", code, reason, was_clean, error)

    def kinds(self):
        return [r[0] for r in self.reports]


def read_head(sock):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}


def upgrade(sock, first=b""):
    """Answer the upgrade (``first`` in the same write); return the client's masked frame parser."""
    headers = read_head(sock)
    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + frames.accept_key(headers["sec-websocket-key"]).encode() + b"\r\n\r\n"
                 + first)
    return frames.FrameParser(None)


def read_messages(sock, parser, count):
    out = []
    while len(out) < count:
        data = sock.recv(65536)
        if not data:
            break
        parser.feed(data, out)
    return out


@pytest.fixture
def serve():
    servers = []

    def start(handler):
        server = gevent.server.StreamServer(("127.0.0.1", 0), handler)
        server.start()
        servers.append(server)
        return "ws://127.0.0.1:%d/path" % server.server_port

    yield start
    for server in servers:
        server.stop(timeout=1)


def connect(url, **changes):
    owner = Owner()
    conn = Connection(owner, client_options(url, **{**DEFAULTS, **changes}))
    conn.greenlet = gevent.spawn(conn.run)
    return owner, conn


def test_open_read_write_and_close_from_the_server(serve):
    got = []

    def handler(sock, address):
        parser = upgrade(sock, first=frames.encode_text("hello"))  # a frame right behind the 101
        sock.sendall(frames.encode_frame(frames.OP_BINARY, b"\x00\xff") + frames.encode_frame(frames.OP_PING, b"p"))
        got.extend(read_messages(sock, parser, 2))  # the pong, then the client's text
        sock.sendall(frames.encode_close(4010, "bye"))
        got.extend(read_messages(sock, parser, 1))  # the close answer

    owner, conn = connect(serve(handler))
    assert conn.state == CONNECTING and not conn.send(b"x")
    wait_for(lambda: ("binary", b"\x00\xff") in owner.reports)
    assert conn.state == OPEN and owner.reports[:2] == [("open",), ("text", "hello")]
    assert conn.send(frames.encode_text("from client", mask=True))
    wait_for(lambda: owner.kinds()[-1] == "closed")
    assert owner.reports[-1] == ("closed", 4010, "bye", True, None)
    assert owner.greenlets == {conn.greenlet}  # every report from the connection's greenlet
    assert got[:2] == [(frames.OP_PONG, b"p"), (frames.OP_TEXT, b"from client")]
    assert got[2][0] == frames.OP_CLOSE and frames.parse_close_payload(got[2][1])[0] == 4010
    assert conn.state == CLOSED and conn.sock is None and not conn.send(b"x")


def test_start_close_waits_for_the_answer(serve):
    def handler(sock, address):
        parser = upgrade(sock)
        (opcode, payload), = read_messages(sock, parser, 1)
        sock.sendall(frames.encode_close(*frames.parse_close_payload(payload)))

    owner, conn = connect(serve(handler))
    wait_for(lambda: owner.reports)
    conn.start_close(4001, "client manual close")
    wait_for(lambda: owner.kinds()[-1] == "closed")
    assert owner.reports[-1] == ("closed", 4001, "client manual close", True, None)


def test_start_close_drops_a_silent_server_after_pong_timeout(serve):
    def handler(sock, address):
        upgrade(sock)
        gevent.sleep(5)

    owner, conn = connect(serve(handler), pong_timeout=0.1)
    wait_for(lambda: owner.reports)
    conn.start_close(4001, "client manual close")
    wait_for(lambda: owner.kinds()[-1] == "closed", timeout=2)
    _, code, _, was_clean, _ = owner.reports[-1]
    assert code == 4001 and was_clean is False  # the code it sent, never answered


def test_refused_upgrade_is_a_failed_attempt(serve):
    def handler(sock, address):
        read_head(sock)
        sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    owner, conn = connect(serve(handler))
    wait_for(lambda: owner.reports)
    (kind, error), = owner.reports
    assert kind == "failed" and isinstance(error, HandshakeError) and conn.state == CLOSED


def test_closed_port_is_a_failed_attempt():
    owner, conn = connect("ws://127.0.0.1:%d" % free_port())
    wait_for(lambda: owner.reports)
    assert owner.reports[0][0] == "failed" and isinstance(owner.reports[0][1], OSError)


def test_connect_timeout_bounds_the_upgrade(serve):
    def handler(sock, address):
        gevent.sleep(5)  # accepts, never answers

    owner, conn = connect(serve(handler), connect_timeout=0.1)
    wait_for(lambda: owner.reports, timeout=2)
    assert owner.reports[0][0] == "failed" and isinstance(owner.reports[0][1], ConnectTimeoutError)


def test_cancel_attempt_reports_nothing(serve):
    def handler(sock, address):
        gevent.sleep(5)

    owner, conn = connect(serve(handler))
    gevent.sleep(0.05)
    conn.cancel_attempt()
    gevent.sleep(0.05)
    assert conn.greenlet.dead and owner.reports == [] and conn.sock is None


def test_a_protocol_violation_closes_with_1002(serve):
    def handler(sock, address):
        upgrade(sock)
        sock.sendall(frames.encode_text("ok") + frames.encode_text("masked", mask=True))  # servers must not mask
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass

    owner, conn = connect(serve(handler), pong_timeout=0.2)
    wait_for(lambda: owner.kinds()[-1:] == ["closed"], timeout=3)
    assert owner.reports[1] == ("text", "ok")
    _, code, _, _, error = owner.reports[-1]
    assert code == 1002 and error is not None


def test_a_crash_is_a_close_1006(serve):
    def handler(sock, address):
        upgrade(sock)
        sock.shutdown(socket.SHUT_RDWR)

    owner, conn = connect(serve(handler))
    wait_for(lambda: owner.kinds()[-1:] == ["closed"])
    assert owner.reports[-1][1] == 1006 and owner.reports[-1][3] is False


def test_max_message_size():
    assert MAX_MESSAGE_SIZE == 64 << 20
