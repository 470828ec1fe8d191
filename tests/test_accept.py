"""crossws_sync.server.accept: the standalone server's accept path (no greenlet while a head is
awaited, the upgrade served from one read, the general handler for everything else)."""
from __future__ import annotations

import gc
import socket
import time

import greenlet
import pytest

from crossws_sync import WebSocketCrossServerAdapter
from crossws_sync.server.accept import UpgradeResponse, upgrade_environ
from crossws_sync.wire.headers import parse_upgrade_head
from rawclient import RawClient
from support import counting_sends, wait_for

HEAD = ("GET /a%20b/%C3%A9?x=1&y=%20 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Cookie: a=1\r\nCookie: b=2\r\nX-Dup: 1\r\nX-Dup: 2\r\nX_Sneaky: 1\r\n\r\n").encode()


def test_the_environ_is_what_pywsgi_would_build_for_the_same_request():
    head = parse_upgrade_head(HEAD, 32768)
    environ = upgrade_environ({"SERVER_NAME": "s", "wsgi.version": (1, 0)}, head, ("10.0.0.9", 5555))
    assert environ["REQUEST_METHOD"] == "GET" and environ["SCRIPT_NAME"] == ""
    assert environ["PATH_INFO"] == "/a b/\xc3\xa9"  # PEP 3333: the bytes, decoded as ISO-8859-1
    assert environ["QUERY_STRING"] == "x=1&y=%20" and environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("10.0.0.9", "5555")
    assert environ["HTTP_COOKIE"] == "a=1; b=2" and environ["HTTP_X_DUP"] == "1,2"
    assert "HTTP_X_SNEAKY" not in environ  # a name with "_" could pose as another header: dropped
    assert environ["HTTP_SEC_WEBSOCKET_KEY"] == "dGhlIHNhbXBsZSBub25jZQ=="
    assert environ["SERVER_NAME"] == "s" and environ["wsgi.input"].read() == b""


class _Sink:
    def __init__(self):
        self.data = b""

    def sendall(self, data):
        self.data += data


def test_a_101_is_the_status_line_and_the_headers_as_given():
    sink = _Sink()
    response = UpgradeResponse(sink)
    response.run(lambda environ, start: (start("101 Switching Protocols", [("Upgrade", "websocket")]), [])[1], {})
    assert sink.data == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    assert (response.code, response.length) == (101, len(sink.data))


def test_any_other_answer_gets_date_and_connection_close_and_its_body():
    sink = _Sink()

    def app(environ, start):
        start("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"no", b"", b"pe"]

    UpgradeResponse(sink).run(app, {})
    head, _, body = sink.data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nDate: ")
    assert head.endswith(b"\r\nConnection: close") and body == b"nope"


def test_an_app_error_or_a_header_with_a_line_break_is_a_500_and_is_logged(caplog):
    for app in (lambda environ, start: 1 / 0,
                lambda environ, start: (start("200 OK", [("X-A", "1\r\nSet-Cookie: x=1")]), [])[1]):
        sink = _Sink()
        caplog.clear()
        UpgradeResponse(sink).run(app, {"PATH_INFO": "/p"})
        assert sink.data.startswith(b"HTTP/1.1 500 ") and b"Set-Cookie" not in sink.data
        assert [r.exc_info is not None for r in caplog.records] == [True]


def test_the_101_hand_over_counts_it_as_sent_and_writes_nothing():
    sink = _Sink()
    response = UpgradeResponse(sink)
    response.start_response("101 Switching Protocols", [("Upgrade", "websocket")])
    assert response.hand_over_head() == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    assert response.headers_sent and sink.data == b""


@pytest.fixture
def adapter():
    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0, "path": "/ws"})
    adapter.on_websocket_event("echo", lambda s, p, cb: cb(p))
    adapter.start()
    yield adapter
    adapter.close(timeout=1)


def _status(port: int, path: str) -> int:
    """The status of a plain HTTP GET (any status, no exception)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        return int(sock.recv(4096).split(b" ", 2)[1])


def _greenlets() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


def test_silent_connections_hold_no_greenlet_and_are_counted_as_pending_heads(adapter):
    before = _greenlets()
    silent = [socket.create_connection(("127.0.0.1", adapter.port)) for _ in range(200)]
    try:
        guard = adapter._life.head_guard
        wait_for(lambda: len(guard.pending) == 200, message="every silent socket pending")
        assert _greenlets() - before < 10  # the old path: one greenlet each
        client = RawClient(adapter.port, "/ws")  # served meanwhile
        client.send_json({"event": "echo", "payload": 1, "callbackId": "1"})
        assert client.recv_json() == {"payload": 1, "callbackId": "1"}
        client.close()
    finally:
        for sock in silent:
            sock.close()
    wait_for(lambda: not adapter._life.head_guard.pending, message="closed sockets leave the guard")


def test_the_101_and_the_frames_the_connection_handler_sends_leave_in_one_write(adapter):
    sizes = []

    def on_connection(conn, request):
        conn._raw_send = counting_sends(conn._raw_send, sizes)
        conn.send_event("welcome", {"n": 1})

    adapter.on_websocket_event("connection", on_connection)
    client = RawClient(adapter.port, "/ws")
    assert client.recv_json() == {"event": "welcome", "payload": {"n": 1}}
    client.close()
    frame = len(b'{"event":"welcome","payload":{"n":1}}') + 2
    assert len(sizes) == 1 and sizes[0] > frame + len(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"), sizes


def test_a_head_in_two_segments_or_plain_http_takes_the_general_handler(adapter):
    sock = socket.create_connection(("127.0.0.1", adapter.port), timeout=5)
    request = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    sock.sendall(request[:20])
    time.sleep(0.05)
    sock.sendall(request[20:])
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    sock.close()
    assert _status(adapter.port, "/ws") == 426  # plain HTTP on the WebSocket path
    assert _status(adapter.port, "/elsewhere") == 404


def test_a_refused_upgrade_is_answered_and_closed():
    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0},
                                          authenticate=lambda request: False)
    adapter.start()
    try:
        sock = socket.create_connection(("127.0.0.1", adapter.port), timeout=5)
        sock.sendall(HEAD)
        answer = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 401 ")
    finally:
        adapter.close(timeout=1)


def test_a_client_gone_before_its_head_costs_nothing(adapter):
    for _ in range(50):
        socket.create_connection(("127.0.0.1", adapter.port)).close()
    wait_for(lambda: not adapter._life.head_guard.pending, message="closed sockets leave the guard")
    assert _status(adapter.port, "/elsewhere") == 404


def test_the_head_deadline_runs_from_the_accept_also_when_the_head_comes_in_parts():
    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0}, handshake_timeout=1.0)
    adapter.start()
    try:
        sock = socket.create_connection(("127.0.0.1", adapter.port), timeout=5)
        started = time.monotonic()
        time.sleep(0.7)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # then nothing more: a slow head
        answer = sock.recv(4096)
        took = time.monotonic() - started
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert 0.9 <= took < 1.5, took  # not 0.7 + a fresh 1.0
    finally:
        adapter.close(timeout=1)
