"""crossws_sync.server.wsgi: mounted in Flask / a pywsgi server on the same port, and upgrade requests RFC 6455 refuses."""
from __future__ import annotations

import gc
import os
import socket

import pytest
from flask import Flask
from gevent import pywsgi

from crossws_sync import WebSocketCrossServerAdapter
from crossws_sync.server.wsgi import WebSocketHandler
from rawclient import HandshakeRejected, RawClient
from support import http_get, wait_for


def _flask_app():
    app = Flask(__name__)

    @app.route("/hello")
    def hello():
        return "hello from flask"

    return app


def test_standalone_with_an_app_on_the_same_port():
    flask_app = _flask_app()
    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0, "path": "/ws", "app": flask_app})
    adapter.on_websocket_event("say", lambda s, p, cb: cb(p))
    adapter.start()
    try:
        port = adapter.port
        assert http_get(port, "/hello") == (200, "hello from flask")
        client = RawClient(port, "/ws")
        client.send_json({"event": "say", "payload": 7, "callbackId": "1"})
        assert client.recv_json() == {"payload": 7, "callbackId": "1"}
        with pytest.raises(HandshakeRejected) as rejected:
            RawClient(port, "/other")  # Flask has no such route: its 404 comes back, no upgrade
        assert rejected.value.status == 404
    finally:
        adapter.close(timeout=1)


def test_mounted_middleware_in_a_pywsgi_server_keeps_flask_routes():
    flask_app = _flask_app()
    adapter = WebSocketCrossServerAdapter(ws_options={"no_server": True})
    flask_app.wsgi_app = adapter.wsgi_middleware(flask_app.wsgi_app, path="/ws")
    adapter.on_websocket_event("say", lambda s, p, cb: cb({"got": p}))
    server = pywsgi.WSGIServer(("127.0.0.1", 0), flask_app, handler_class=WebSocketHandler, log=None)
    server.start()
    try:
        port = server.server_port
        assert http_get(port, "/hello") == (200, "hello from flask")
        clients = [RawClient(port, "/ws") for _ in range(3)]
        for i, client in enumerate(clients):
            client.send_json({"event": "say", "payload": i, "callbackId": "c%d" % i})
        assert [c.recv_json()["payload"] for c in clients] == [{"got": 0}, {"got": 1}, {"got": 2}]
        assert http_get(port, "/hello")[0] == 200  # HTTP still served while sockets are open
    finally:
        adapter.close(timeout=1)
        server.stop(timeout=1)


@pytest.mark.parametrize("head, why", [
    ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: abc\r\n"
     "Sec-WebSocket-Version: 13\r\n\r\n", "a key that is not 16 bytes"),
    ("GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", "HTTP/1.0"),
    ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", "no Host"),
    ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     "Sec-WebSocket-Version: 13\r\n\r\n", "two keys"),
    ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nno colon here\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", "a line without a colon"),
])
def test_malformed_opening_handshakes_get_400_as_rfc6455_asks(head, why):
    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0})
    adapter.start()
    try:
        sock = socket.create_connection(("127.0.0.1", adapter.port), timeout=5)
        sock.sendall(head.encode())
        status = sock.recv(4096).split(b"\r\n", 1)[0]
        sock.close()
        assert status.startswith(b"HTTP/1.1 400"), (why, status)
    finally:
        adapter.close(timeout=1)


def test_request_headers_reach_the_environ_and_the_access_log_is_formatted_only_at_debug(caplog):
    import logging

    seen = []
    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0})
    adapter.on_websocket_event("connection", lambda socket, request: seen.append(dict(request.headers)))
    adapter.start()
    try:
        head = ("GET /?id=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                "Cookie: a=1\r\nCookie: b=2\r\nX-Folded: one\r\n two\r\nX_Dropped: 1\r\n\r\n")
        for level in (logging.INFO, logging.DEBUG):
            caplog.set_level(level, logger="crossws_sync.access")
            caplog.clear()
            sock = socket.create_connection(("127.0.0.1", adapter.port), timeout=5)
            sock.sendall(head.encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
            sock.close()
            lines = [r.getMessage() for r in caplog.records if r.name == "crossws_sync.access"]
            assert ('"GET /?id=1 HTTP/1.1" 101' in " ".join(lines)) == (level == logging.DEBUG), lines
        headers = seen[0]
        assert headers["cookie"] == "a=1; b=2" and headers["x-folded"] == "one two"
        assert "x-dropped" not in headers and headers["sec-websocket-version"] == "13"
    finally:
        adapter.close(timeout=1)


def test_make_server_listens_with_nodes_backlog_unless_told():
    from crossws_sync.server.wsgi import DEFAULT_BACKLOG, make_server

    app = lambda environ, start_response: []  # noqa: E731
    assert DEFAULT_BACKLOG == 511
    assert make_server("127.0.0.1", 0, app).backlog == 511
    assert make_server("127.0.0.1", 0, app, backlog=64).backlog == 64


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
@pytest.mark.parametrize("served_by", ["accept path", "pywsgi handler"])
def test_an_upgrade_releases_the_request_socket_at_once_not_when_the_cyclic_gc_runs(served_by):
    # The pywsgi handler moves the connection to a socket object of its own. The request's
    # socket used to stay open until the cyclic GC freed the handler (its environ refers back to
    # it, and the request's rfile holds the socket): at 19,500 connections that was hundreds of
    # descriptors (EMFILE). The standalone accept path keeps the accepted socket. Either way: one
    # descriptor per connection, whether the GC runs or not.
    server = None
    if served_by == "accept path":
        adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0})
    else:
        adapter = WebSocketCrossServerAdapter(ws_options={"no_server": True})
        server = pywsgi.WSGIServer(("127.0.0.1", 0), adapter.wsgi_middleware(None, path="/"),
                                   handler_class=WebSocketHandler, log=None)
        server.start()
    adapter.on_websocket_event("say", lambda s, p, cb: cb(p))
    adapter.start()
    port = adapter.port if server is None else server.server_port
    clients = []
    gc.collect()
    gc.disable()
    try:
        before = _open_descriptors()
        for index in range(40):
            clients.append(RawClient(port, "/?n=%d" % index))
        for client in clients:  # every upgrade handler has returned once its client got an ack
            client.send_json({"event": "say", "payload": 1, "callbackId": "1"})
            assert client.recv_json() == {"payload": 1, "callbackId": "1"}
        wait_for(lambda: _open_descriptors() - before == 2 * len(clients), timeout=5.0,
                 message="one descriptor per client and one per server side")
    finally:
        gc.enable()
        for client in clients:
            client.close()
        adapter.close(timeout=1)
        if server is not None:
            server.stop(timeout=1)


def _exchange(port: int, head: str) -> bytes:
    """Send ``head`` and read until the server closes the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(head.encode())
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return answer
            answer += chunk
    finally:
        sock.close()


_UPGRADE = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_the_101_is_the_handshake_headers_in_one_write_and_nothing_else():
    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0})
    adapter.start()
    try:
        sock = socket.create_connection(("127.0.0.1", adapter.port), timeout=5)
        sock.sendall((_UPGRADE % "/").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        sock.close()
        lines = head.split(b"\r\n\r\n")[0].split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 101 Switching Protocols"
        assert sorted(lines[1:]) == [b"Connection: Upgrade", b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                                     b"Upgrade: websocket"]  # RFC 6455 section 1.3's example key
    finally:
        adapter.close(timeout=1)


def test_an_upgrade_request_the_app_answers_itself_gets_its_answer_then_the_connection_closes():
    def plain(environ, start_response):  # no Content-Length: the body ends with the connection
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain ", environ["PATH_INFO"].encode()]

    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0, "path": "/ws", "app": plain})
    adapter.start()
    try:
        answer = _exchange(adapter.port, _UPGRADE % "/hello")  # another path, asked for an upgrade
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"plain /hello"
        assert b"\r\nConnection: close" in head and b"\r\nDate: " in head
        assert b"Transfer-Encoding" not in head
        assert http_get(adapter.port, "/hello") == (200, "plain /hello")  # keep-alive HTTP unchanged
    finally:
        adapter.close(timeout=1)


def test_an_app_that_raises_on_an_upgrade_request_gets_500_logged_and_the_server_goes_on(caplog):
    def broken(environ, start_response):
        raise RuntimeError("boom")

    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0, "path": "/ws", "app": broken})
    adapter.on_websocket_event("say", lambda s, p, cb: cb(p))
    adapter.start()
    try:
        answer = _exchange(adapter.port, _UPGRADE % "/elsewhere")
        assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        assert any("WebSocket upgrade request" in r.getMessage() and r.exc_info for r in caplog.records)
        client = RawClient(adapter.port, "/ws")
        client.send_json({"event": "say", "payload": 2, "callbackId": "1"})
        assert client.recv_json() == {"payload": 2, "callbackId": "1"}
        client.close()
    finally:
        adapter.close(timeout=1)


def test_a_refusal_header_with_a_line_break_is_not_sent_the_client_gets_500():
    from crossws_sync import Reject

    def authenticate(request):
        raise Reject(401, "no", [("X-Why", "a\r\nSet-Cookie: stolen=1")])

    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0}, authenticate=authenticate)
    adapter.start()
    try:
        answer = _exchange(adapter.port, _UPGRADE % "/")
        assert answer.startswith(b"HTTP/1.1 500 ") and b"stolen" not in answer
    finally:
        adapter.close(timeout=1)
