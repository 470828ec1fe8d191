"""WebSocketConnector against a tiny raw WebSocket server written here (and pure helpers).

The raw server lets each test choose a misbehaviour: no heartbeat echo, no close answer, a
refused upgrade, a dropped TCP connection, events named like lifecycle events. End-to-end
tests against the real adapter live in ``test_client_e2e.py``.
"""
import json
import socket
import time

import gevent
import gevent.server
import gevent.ssl
import psutil
import pytest

from crossws_sync.wire import frames
from crossws_sync.client.connector import LIFECYCLE_EVENTS, WebSocketConnector
from crossws_sync.errors import ConfigError, ConnectTimeoutError, HandshakeError
from support import free_port, wait_for

pytestmark = pytest.mark.timeout(60)


# A raw WebSocket server -----------------------------------------------------------------


class RawConn:
    """One server-side connection of :class:`RawServer`."""

    def __init__(self, server, sock, path, headers):
        self.server = server
        self.sock = sock
        self.path = path
        self.headers = headers
        self.texts = []  # every text frame received
        self.close_frame = None  # (code, reason) received from the client
        self.closed = False

    def send_text(self, text):
        self.sock.sendall(frames.encode_text(text))

    def push(self, event, payload):
        self.send_text(json.dumps({"event": event, "payload": payload}))

    def close(self, code, reason=""):
        self.sock.sendall(frames.encode_close(code, reason))

    def drop(self):
        """Cut TCP without a close frame (a crash)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def events(self):
        return [json.loads(t) for t in self.texts if t.startswith("{")]


class RawServer:
    """A WebSocket server on 127.0.0.1 with switchable behaviour.

    Client events: ``say`` -> ack ``{"echo": payload}``; ``slow`` -> ack after
    ``payload["delay"]`` seconds; ``noack`` -> nothing. Heartbeat frames are echoed while
    ``echo_heartbeat`` is true; close frames are answered while ``answer_close`` is true.
    """

    def __init__(self, port=0, *, heartbeat="", echo_heartbeat=True, answer_close=True, status=101,
                 ssl_files=None):
        self.heartbeat = heartbeat
        self.echo_heartbeat = echo_heartbeat
        self.answer_close = answer_close
        self.status = status
        self.conns = []
        kwargs = {}
        if ssl_files:
            context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*ssl_files)
            kwargs = {"ssl_context": context}
        self.server = gevent.server.StreamServer(("127.0.0.1", port), self._handle, **kwargs)

    def start(self):
        self.server.start()
        self.port = self.server.server_port
        return self

    def stop(self):
        for conn in self.conns:
            conn.drop()
        self.server.stop(timeout=1)

    @property
    def url(self):
        return "ws://127.0.0.1:%d" % self.port

    @property
    def last(self):
        return self.conns[-1]

    def _handle(self, sock, address):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if self.status != 101:
            sock.sendall(b"HTTP/1.1 %d Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % self.status)
            sock.close()
            return
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n\r\n" % frames.accept_key(headers["sec-websocket-key"])).encode())
        conn = RawConn(self, sock, path, headers)
        self.conns.append(conn)
        parser = frames.FrameParser(expect_masked=True)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for opcode, payload in parser.feed(data):
                    if opcode == frames.OP_CLOSE:
                        conn.close_frame = frames.parse_close_payload(payload)
                        if self.answer_close:
                            sock.sendall(frames.encode_close(conn.close_frame[0], conn.close_frame[1]))
                            return
                    elif opcode == frames.OP_PING:
                        sock.sendall(frames.encode_frame(frames.OP_PONG, payload))
                    elif opcode == frames.OP_TEXT:
                        self._on_text(conn, payload.decode("utf-8"))
        except OSError:
            pass
        finally:
            conn.closed = True
            sock.close()

    def _on_text(self, conn, text):
        conn.texts.append(text)
        if text == self.heartbeat:
            if self.echo_heartbeat:
                conn.send_text(self.heartbeat)
            return
        message = json.loads(text)
        callback_id = message.get("callbackId")
        if callback_id is None:
            return
        if message["event"] == "say":
            conn.send_text(json.dumps({"payload": {"echo": message["payload"]}, "callbackId": callback_id}))
        elif message["event"] == "slow":
            gevent.sleep(message["payload"]["delay"])
            conn.send_text(json.dumps({"payload": "late", "callbackId": callback_id}))


class Recorder:
    """Records lifecycle events of a client as ``(name, argument)``."""

    def __init__(self, client, names=LIFECYCLE_EVENTS - {"message"}):
        self.events = []
        for name in names:
            client.on(name, self._listener(name))

    def _listener(self, name):
        def record(*args):
            self.events.append((name, args[0] if args else None))
        return record

    def names(self, exclude=("ping", "pong")):
        return [name for name, _ in self.events if name not in exclude]

    def first(self, name):
        return next(arg for n, arg in self.events if n == name)

    def count(self, name):
        return sum(1 for n, _ in self.events if n == name)


@pytest.fixture
def raw_server():
    servers = []

    def start(**kwargs):
        server = RawServer(**kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _server_conn(server, index=0):
    wait_for(lambda: len(server.conns) > index, message="server connection %d" % index)
    return server.conns[index]


# Options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["", "http://127.0.0.1:1", "ws://", "ws://h:99999", "ws://h/#frag", 5])
def test_unusable_url_is_a_config_error(url):
    with pytest.raises(ConfigError):
        WebSocketConnector(url, autoconnect=False)


def test_default_url_is_a_clear_error():
    with pytest.raises(ConfigError, match="url is required"):
        WebSocketConnector()


@pytest.mark.parametrize("kwargs", [
    {"ping_interval": 0}, {"pong_timeout": -1}, {"callback_timeout": float("nan")}, {"pending_timeout": "1"},
    {"connect_timeout": True}, {"fast_reconnect_threshold": -1}, {"repeat_limit": 1.5},
    {"custom_params": [1, 2]}, {"headers": {"Upgrade": "x"}}, {"headers": {"X-A": "b\r\nc"}},
    {"ping_msg": None}, {"no_reconnect_codes": ["x"]},
])
def test_invalid_options(kwargs):
    with pytest.raises(ConfigError):
        WebSocketConnector("ws://127.0.0.1:1", autoconnect=False, **kwargs)


# Connecting ----------------------------------------------------------------------------------


def test_connect_sends_params_and_headers(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url + "/chat", custom_params={"id": "u1", "token": "t k", "arr": [1, 2]},
                         headers={"Authorization": "Bearer x"})
    rec = Recorder(client)
    assert client.wait_connected(5)
    conn = _server_conn(server)
    assert conn.path == "/chat?id=u1&token=t+k&arr=1%2C2"
    assert conn.headers["authorization"] == "Bearer x"
    assert conn.headers["host"] == "127.0.0.1:%d" % server.port
    wait_for(lambda: rec.names() == ["open"])
    assert rec.first("open").url == client.url
    assert client.connected and client.repeat == 0 and not client.reconnecting()


def test_autoconnect_false_and_wait_connected_timeout(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url, autoconnect=False)
    assert not client.wait_connected(0.05)
    assert server.conns == []
    client.connect()
    assert client.wait_connected(5)
    client.connect()  # no-op while open
    gevent.sleep(0.05)
    assert len(server.conns) == 1


# Events and acks ---------------------------------------------------------------------------


def test_events_acks_promises_pending_and_timeouts(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url, callback_timeout=0.3)
    got = []
    client.on("hello", lambda payload: got.append(("hello", payload)))
    assert client.wait_connected(5)
    conn = _server_conn(server)

    conn.push("hello", {"a": 1})
    wait_for(lambda: got == [("hello", {"a": 1})])

    # fire and forget: exact original frame shape
    assert client.emit("note", {"msg": "hi"}) is True
    wait_for(lambda: '{"event":"note","payload":{"msg":"hi"}}' in conn.texts)

    # callback style
    replies = []
    pending = []
    client.emit("say", {"n": 1}, lambda err, data: replies.append((err, data)), on_pending=lambda: pending.append(1))
    wait_for(lambda: replies == [(None, {"echo": {"n": 1}})])
    request = conn.events()[-1]
    assert list(request) == ["event", "payload", "callbackId"]
    assert request["callbackId"].count("-") == 2
    gevent.sleep(0.15)
    assert pending == []  # never after the reply

    # promise style and the blocking alias
    result = client.emit_with_promise("say", [1, 2]).get(timeout=5)
    assert result == {"success": True, "data": {"echo": [1, 2]}} and result.success and result.data == {"echo": [1, 2]}
    assert client.emit_and_wait("say", "x") == {"success": True, "data": {"echo": "x"}}

    # pending fires once for a slow reply, before the reply
    order = []
    result = client.emit_and_wait("slow", {"delay": 0.2}, callback_timeout=2, pending_timeout=0.05,
                                  on_pending=lambda: order.append("pending"))
    order.append("reply")
    assert result.data == "late"
    wait_for(lambda: order == ["pending", "reply"])

    # timeouts: callback, then promise (the original's texts and codes)
    errors = []
    client.emit("noack", {}, lambda err, data: errors.append((err, data)))
    wait_for(lambda: errors, timeout=3)
    err, data = errors[0]
    assert data is None and err.error_code == "CALLBACK_TIMEOUT" and err.error.startswith("Is callback timeout: ")
    started = time.monotonic()
    result = client.emit_and_wait("noack", {}, callback_timeout=0.1)
    assert 0.09 <= time.monotonic() - started < 1.0
    assert result.success is False and result.error_code == "CALLBACK_TIMEOUT"
    assert result.error.startswith("Is promise callback timeout: ")

    # a late reply after the timeout is ignored
    late = []
    client.emit("slow", {"delay": 0.15}, lambda err, data: late.append((err, data)), callback_timeout=0.05)
    gevent.sleep(0.3)
    assert len(late) == 1 and late[0][0].error_code == "CALLBACK_TIMEOUT"


def test_argument_errors(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url)
    assert client.wait_connected(5)
    with pytest.raises(TypeError):
        client.emit("", {})
    with pytest.raises(TypeError):
        client.emit(5, {})
    with pytest.raises(ConfigError):
        client.emit("say", None)
    with pytest.raises(TypeError):
        client.emit("say", {}, callback="nope")
    for bad in (0, -1, float("inf"), "1"):
        with pytest.raises(ConfigError):
            client.emit("say", {}, lambda e, d: None, callback_timeout=bad)
        with pytest.raises(ConfigError):
            client.emit("say", {}, lambda e, d: None, pending_timeout=bad)
        result = client.emit_with_promise("say", {}, callback_timeout=bad).get(timeout=1)
        assert result.success is False and result.error_code == "INVALID_ARGUMENT"
    assert client.emit_and_wait("", {}).error == "No event provided in emitWithPromise"
    assert client.emit_and_wait("say", None).error == "Data cannot be null or undefined"
    assert client.emit_and_wait("say", {"x": object()}).error_code == "INVALID_ARGUMENT"
    with pytest.raises(TypeError):
        client.on("", lambda: None)
    with pytest.raises(TypeError):
        client.on("x", None)
    with pytest.raises(ConfigError):
        client.set_ping_interval(0)


def test_not_open_errors(make_client):
    client = make_client("ws://127.0.0.1:%d" % free_port(), autoconnect=False)
    calls = []
    assert client.emit("say", {}, lambda err, data: calls.append((err, data))) is False
    assert calls == [({"error": "WebSocket is not open", "error_code": "WS_NOT_OPEN"}, None)]
    assert client.emit("say", {}) is False  # silently dropped, like the original
    assert client.emit_and_wait("say", {}) == {"success": False, "error": "WebSocket is not open",
                                              "error_code": "WS_NOT_OPEN"}


def test_server_events_named_like_lifecycle_events(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url)
    rec = Recorder(client)
    server_side = []
    client.on_server_event("open", lambda payload: server_side.append(("open", payload)))
    client.on_server_event("close", lambda payload: server_side.append(("close", payload)))
    client.once("hello", lambda payload: server_side.append(("hello", payload)))
    assert client.wait_connected(5)
    conn = _server_conn(server)
    for name in ("open", "close", "pong", "reconnect", "error", "constructor", "__proto__", "hello", "hello"):
        conn.push(name, {"spoof": name})
    conn.send_text('{"event": 5}')
    conn.send_text("not json")
    conn.send_text("[1,2]")
    wait_for(lambda: ("hello", {"spoof": "hello"}) in server_side)
    gevent.sleep(0.05)
    assert server_side == [("open", {"spoof": "open"}), ("close", {"spoof": "close"}), ("hello", {"spoof": "hello"})]
    assert rec.names() == ["open"] and client.connected
    client.off_server_event("open")
    conn.push("open", 1)
    conn.push("close", 2)
    wait_for(lambda: len(server_side) == 4)
    assert server_side[-1] == ("close", 2)


def test_message_event_and_binary_frames(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url)
    raw, got = [], []
    client.on("message", raw.append)
    client.on("bin", got.append)
    assert client.wait_connected(5)
    conn = _server_conn(server)
    conn.sock.sendall(frames.encode_frame(frames.OP_BINARY, b'{"event":"bin","payload":[1]}'))
    wait_for(lambda: got == [[1]])
    assert raw == [b'{"event":"bin","payload":[1]}']  # the message event gets the bytes; the event still works


def test_listener_may_block_in_emit_and_wait(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url)
    results = []
    client.on("open", lambda event: results.append(client.emit_and_wait("say", "from open", callback_timeout=2)))
    wait_for(lambda: results, timeout=5)
    assert results == [{"success": True, "data": {"echo": "from open"}}]


def test_many_greenlets_emitting_at_once(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url)
    assert client.wait_connected(5)
    big = "x" * 70000  # 64-bit length frames interleave with small ones

    def worker(index):
        out = []
        for n in range(10):
            payload = {"w": index, "n": n, "pad": big if n % 5 == 0 else ""}
            out.append(client.emit_and_wait("say", payload, callback_timeout=10))
        return out

    jobs = [gevent.spawn(worker, i) for i in range(40)]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    for index, job in enumerate(jobs):
        assert [r.success for r in job.value] == [True] * 10
        assert [r.data["echo"]["n"] for r in job.value] == list(range(10))
        assert all(r.data["echo"]["w"] == index for r in job.value)
    assert len(_server_conn(server).texts) == 400


# Heartbeat ---------------------------------------------------------------------------------


def test_heartbeat_ping_pong_latency(raw_server, make_client):
    server = raw_server(heartbeat="hb")
    client = make_client(server.url, ping_interval=0.05, pong_timeout=1, ping_msg="hb")
    rec = Recorder(client)
    assert client.latency is None
    wait_for(lambda: rec.count("pong") >= 3, timeout=5)
    beats = [(n, a) for n, a in rec.events if n in ("ping", "pong")]
    assert [n for n, _ in beats[:6]] == ["ping", "pong"] * 3
    assert all(isinstance(a, float) and 0 <= a < 1 for n, a in beats if n == "pong")
    assert client.latency is not None and 0 <= client.latency < 1
    assert _server_conn(server).texts.count("hb") >= 3
    assert client.get_ping_interval() == 0.05
    # unsolicited heartbeat text is not a pong
    client.set_ping_interval(30, immediate=True)
    pongs = rec.count("pong")
    server.last.send_text("hb")
    gevent.sleep(0.1)
    assert rec.count("pong") == pongs and client.connected
    assert client.get_ping_interval() == 30


def test_set_ping_interval_immediate(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url, ping_interval=30)
    rec = Recorder(client)
    assert client.wait_connected(5)
    client.set_ping_interval(0.05)  # takes effect at the next cycle (30 s away)
    gevent.sleep(0.25)
    assert rec.count("ping") == 0
    client.set_ping_interval(0.05, immediate=True)
    wait_for(lambda: rec.count("pong") >= 2)
    client.manual_close()
    wait_for(lambda: rec.count("close"))
    client.set_ping_interval(0.01, immediate=True)  # closed: no heartbeat
    count = len(rec.events)
    gevent.sleep(0.2)
    assert len(rec.events) == count


def test_silent_server_gives_pong_timeout_and_close_4002(raw_server, make_client):
    server = raw_server(echo_heartbeat=False)
    client = make_client(server.url, ping_interval=0.05, pong_timeout=0.1)
    rec = Recorder(client)
    wait_for(lambda: rec.count("close"), timeout=5)
    assert rec.names(exclude=()) == ["open", "ping", "pong-timeout", "close"]
    close = rec.first("close")
    assert (close.code, close.reason, close.was_clean) == (4002, "pong timeout", True)
    wait_for(lambda: server.last.close_frame == (4002, "pong timeout"))
    gevent.sleep(0.3)  # heartbeat timers stopped with the connection
    assert rec.names(exclude=()) == ["open", "ping", "pong-timeout", "close"]
    assert not client.connected


def test_dead_link_pong_timeout_does_not_wait_30s(raw_server, make_client):
    server = raw_server(echo_heartbeat=False, answer_close=False)
    client = make_client(server.url, ping_interval=0.05, pong_timeout=0.1)
    rec = Recorder(client)
    started = time.monotonic()
    wait_for(lambda: rec.count("close"), timeout=5)
    assert time.monotonic() - started < 2
    close = rec.first("close")
    assert (close.code, close.was_clean) == (4002, False)


def test_server_kick_stops_heartbeat(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url, ping_interval=0.05, pong_timeout=0.05)
    rec = Recorder(client)
    assert client.wait_connected(5)
    _server_conn(server).close(4011, "Auth failure")
    wait_for(lambda: rec.count("close"))
    close = rec.first("close")
    assert (close.code, close.reason, close.was_clean) == (4011, "Auth failure", True)
    n = len(rec.events)
    gevent.sleep(0.3)
    assert len(rec.events) == n  # no spurious ping / pong-timeout (original bug)
    wait_for(lambda: server.last.closed)


# Closing and reconnecting ------------------------------------------------------------------


def test_pending_acks_fail_immediately_when_the_connection_drops(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url, callback_timeout=20)
    assert client.wait_connected(5)
    order = []
    client.on("close", lambda event: order.append("close"))
    client.emit("noack", {}, lambda err, data: order.append(err.error_code))
    promise = client.emit_with_promise("noack", {})
    wait_for(lambda: len(_server_conn(server).texts) == 2)
    started = time.monotonic()
    server.last.drop()
    result = promise.get(timeout=5)
    assert time.monotonic() - started < 1
    assert result.success is False and result.error_code == "CONNECTION_CLOSED"
    wait_for(lambda: order == ["CONNECTION_CLOSED", "close"])


def test_manual_close_fires_close_4001_and_connect_reopens(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url, ping_interval=0.05)
    rec = Recorder(client)
    assert client.wait_connected(5)
    pending = client.emit_with_promise("noack", {}, callback_timeout=20)
    wait_for(lambda: _server_conn(server).texts)
    client.manual_close()
    assert pending.get(timeout=1).error_code == "CONNECTION_CLOSED"
    wait_for(lambda: rec.count("close"))
    close = rec.first("close")
    assert (close.code, close.reason) == (4001, "client manual close")
    wait_for(lambda: server.conns[0].close_frame == (4001, "client manual close"))
    client.manual_close()  # idempotent, no second close event
    client.reconnect()  # forbidden after manual_close
    gevent.sleep(0.2)
    assert rec.names() == ["open", "close"] and not client.connected
    assert client.emit_and_wait("say", 1).error_code == "WS_NOT_OPEN"
    client.connect()  # reusable client
    assert client.wait_connected(5)
    assert client.emit_and_wait("say", 2).data == {"echo": 2}
    assert rec.names() == ["open", "close", "open"]
    client.close()  # alias
    wait_for(lambda: rec.names() == ["open", "close", "open", "close"])


def test_close_listener_calling_manual_close_does_not_loop(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url)
    rec = Recorder(client)
    client.on("close", lambda event: client.manual_close())
    assert client.wait_connected(5)
    client.manual_close()
    wait_for(lambda: rec.count("close"))
    gevent.sleep(0.05)
    assert rec.names() == ["open", "close"]


def _black_hole():
    """A listening socket that never accepts: TCP connects, the upgrade is never answered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_connect_timeout_on_a_black_hole(make_client):
    hole = _black_hole()
    try:
        client = make_client("ws://127.0.0.1:%d" % hole.getsockname()[1], connect_timeout=0.2,
                             fast_reconnect_interval=5, reconnect_jitter="original")
        rec = Recorder(client)
        started = time.monotonic()
        wait_for(lambda: rec.count("reconnect"), timeout=5)
        assert 0.15 < time.monotonic() - started < 2
        assert rec.names() == ["error", "reconnect"]
        error = rec.first("error")
        assert isinstance(error.error, ConnectTimeoutError) and isinstance(error.error, TimeoutError)
        assert rec.first("reconnect") == {"repeat": 1, "timeout": 5.0}
        assert client.reconnecting() and client.repeat == 1
    finally:
        hole.close()


def _open_sockets_to(port):
    return [c for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED]


def test_closing_or_reconnecting_while_connecting_is_safe(make_client):
    hole = _black_hole()
    port = hole.getsockname()[1]
    try:
        client = make_client("ws://127.0.0.1:%d" % port, connect_timeout=30, fast_reconnect_interval=0.05)
        rec = Recorder(client)
        wait_for(lambda: len(_open_sockets_to(port)) == 1)  # the attempt waits for its 101
        client.manual_close()
        wait_for(lambda: not _open_sockets_to(port))  # the attempt's socket is closed
        client.connect()
        wait_for(lambda: len(_open_sockets_to(port)) == 1)
        client.reconnect()  # drops the attempt, schedules a new one
        wait_for(lambda: rec.count("reconnect") == 1)
        client.manual_close()
        wait_for(lambda: not _open_sockets_to(port))
        gevent.sleep(0.2)
        assert rec.names() == ["reconnect"]  # no error, no close, no crash
        assert not _open_sockets_to(port) and not client.connected
    finally:
        hole.close()


def test_refused_upgrade_is_an_error_then_a_retry(raw_server, make_client):
    server = raw_server(status=401)
    client = make_client(server.url, fast_reconnect_interval=5)
    rec = Recorder(client)
    wait_for(lambda: rec.count("reconnect"))
    error = rec.first("error")
    assert isinstance(error.error, HandshakeError) and error.status == 401
    assert rec.names() == ["error", "reconnect"]


def test_server_down_at_startup_sequence(make_client):
    port = free_port()
    client = make_client("ws://127.0.0.1:%d" % port, fast_reconnect_interval=0.02, fast_reconnect_threshold=1,
                         reconnect_max_interval=0.05, repeat_limit=3, reconnect_jitter="original")
    rec = Recorder(client)
    wait_for(lambda: rec.count("close"), timeout=5)
    gevent.sleep(0.1)
    # the original's schedule: error -> reconnect{1} -> ... -> error -> repeat-limit -> close(1006)
    assert rec.names() == ["error", "reconnect", "error", "reconnect", "error", "reconnect", "error",
                           "repeat-limit", "close"]
    assert [arg["repeat"] for n, arg in rec.events if n == "reconnect"] == [1, 2, 3]
    timeouts = [arg["timeout"] for n, arg in rec.events if n == "reconnect"]
    assert timeouts[0] == 0.02 and all(0.02 <= t <= 0.05 for t in timeouts)
    assert rec.first("repeat-limit") == 3
    assert rec.first("close").code == 1006
    assert isinstance(rec.first("error").error, ConnectionRefusedError)


def test_reconnect_while_open_closes_with_4001_silently(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url, fast_reconnect_interval=0.05, reconnect_jitter="original")
    rec = Recorder(client)
    assert client.wait_connected(5)
    client.reconnect()
    wait_for(lambda: len(server.conns) == 2 and client.connected)
    assert server.conns[0].close_frame == (4001, "client manual close")
    wait_for(lambda: rec.names() == ["open", "reconnect", "open"])
    assert rec.events[1][1] == {"repeat": 1, "timeout": 0.05}
    assert client.repeat == 0 and not client.reconnecting()
    client.reconnect(repeat_reset=True)
    wait_for(lambda: rec.names() == ["open", "reconnect", "open", "reconnect", "open"])
    assert rec.events[-2][1]["repeat"] == 1


def test_server_restart_on_the_same_port_reconnects(raw_server, make_client):
    server = raw_server()
    port = server.port
    client = make_client(server.url, fast_reconnect_interval=0.05, fast_reconnect_threshold=2,
                         reconnect_max_interval=0.2)
    rec = Recorder(client)
    client.on("close", lambda event: client.reconnect())  # the original's documented pattern
    assert client.wait_connected(5)
    server.stop()
    wait_for(lambda: rec.count("error") >= 2, timeout=5)
    raw_server(port=port)
    wait_for(lambda: rec.count("open") == 2, timeout=5)
    names = rec.names()
    assert names[:3] == ["open", "close", "reconnect"]
    assert rec.events[1][1].code == 1006
    assert names[-1] == "open"
    middle = names[3:-1]
    assert middle and middle == ["error", "reconnect"] * (len(middle) // 2)
    assert client.emit_and_wait("say", "back").data == {"echo": "back"}
    assert client.repeat == 0


def test_auto_reconnect_except_for_no_reconnect_codes(raw_server, make_client):
    server = raw_server()
    client = make_client(server.url, auto_reconnect=True, fast_reconnect_interval=0.05)
    rec = Recorder(client)
    assert client.wait_connected(5)
    server.last.close(1001, "going away")
    wait_for(lambda: rec.count("open") == 2)
    assert rec.names() == ["open", "close", "reconnect", "open"]
    _server_conn(server, 1).close(4011, "Auth failure")
    wait_for(lambda: rec.count("close") == 2)
    gevent.sleep(0.2)
    assert rec.names() == ["open", "close", "reconnect", "open", "close"]
    assert len(server.conns) == 2


def test_auto_reconnect_after_pong_timeout(raw_server, make_client):
    server = raw_server(echo_heartbeat=False)
    client = make_client(server.url, auto_reconnect=True, ping_interval=0.05, pong_timeout=0.1,
                         fast_reconnect_interval=0.05)
    rec = Recorder(client)
    wait_for(lambda: rec.count("open") == 2, timeout=5)
    assert rec.names(exclude=()) [:6] == ["open", "ping", "pong-timeout", "close", "reconnect", "open"]
    client.manual_close()


def test_repeat_limit_stops_reconnect(raw_server, make_client):
    client = make_client("ws://127.0.0.1:%d" % free_port(), repeat_limit=0)
    rec = Recorder(client)
    wait_for(lambda: rec.count("close"))
    assert rec.names() == ["error", "repeat-limit", "close"]
    assert rec.first("repeat-limit") == 0


# The offline queue ---------------------------------------------------------------------------


def _down(raw_server, make_client, **kwargs):
    """A client whose server went away: reconnect attempts keep failing (the queue is on)."""
    server = raw_server()
    client = make_client(server.url, auto_reconnect=True, fast_reconnect_interval=0.05, fast_reconnect_threshold=100,
                         **kwargs)
    rec = Recorder(client)
    assert client.wait_connected(5)
    server.stop()
    wait_for(lambda: rec.count("reconnect") >= 2, message="reconnect attempts")
    assert not client.connected
    return server.port, client, rec


def _texts_of(conn):
    return [t for t in conn.texts if t.startswith("{")]


def test_emits_while_the_server_is_down_are_sent_in_order_once_it_is_back(raw_server, make_client):
    port, client, rec = _down(raw_server, make_client)
    replies = []
    assert client.emit("note", 1) is False  # queued, not handed to the socket
    assert client.emit("say", 2, lambda err, data: replies.append((err, data))) is False
    promise = client.emit_with_promise("say", 3)
    assert client.emit("note", 4) is False
    assert client.queued == 4 and replies == [] and not promise.ready()
    client.on("open", lambda event: client.emit("note", "after open"))  # emitted after the open
    server = raw_server(port=port)
    assert promise.get(timeout=5) == {"success": True, "data": {"echo": 3}}
    wait_for(lambda: replies == [(None, {"echo": 2})])
    conn = server.last
    wait_for(lambda: len(_texts_of(conn)) == 5)
    assert [(m["event"], m["payload"]) for m in conn.events()] == [
        ("note", 1), ("say", 2), ("say", 3), ("note", 4), ("note", "after open")]
    assert client.queued == 0 and client.emit("note", 5) is True
    assert len(server.conns) == 1  # one connection sent everything


def test_a_full_offline_queue_fails_the_new_call(raw_server, make_client, caplog):
    port, client, rec = _down(raw_server, make_client, offline_queue_size=2)
    kept = []
    client.emit("say", "kept 1", lambda err, data: kept.append(data))
    client.emit("note", "kept 2")
    errors = []
    assert client.emit("say", "over", lambda err, data: errors.append((err, data))) is False
    assert [(err.error_code, data) for err, data in errors] == [("OFFLINE_QUEUE_FULL", None)]  # before emit returned
    over = client.emit_with_promise("say", "over").get(timeout=0)
    assert over.success is False and over.error_code == "OFFLINE_QUEUE_FULL"
    with caplog.at_level("WARNING", logger="crossws_sync.client"):
        assert client.emit("note", "over") is False and client.emit("note", "over") is False
    assert len([r for r in caplog.records if "offline queue full" in r.getMessage()]) == 1  # rate-limited
    assert client.queued == 2
    server = raw_server(port=port)
    wait_for(lambda: kept == [{"echo": "kept 1"}])
    wait_for(lambda: len(_texts_of(server.last)) == 2)
    client.emit_and_wait("say", "sync")
    assert [m["payload"] for m in server.last.events()] == ["kept 1", "kept 2", "sync"]


def test_a_queued_call_past_its_deadline_times_out_and_is_never_sent(raw_server, make_client):
    port, client, rec = _down(raw_server, make_client, callback_timeout=0.3)
    errors = []
    started = time.monotonic()
    client.emit("say", "expires", lambda err, data: errors.append((err, data, time.monotonic() - started)),
                callback_timeout=0.15)
    client.emit("note", "expires too")  # fire-and-forget: the client's callback_timeout (0.3 s)
    promise = client.emit_with_promise("say", "kept", callback_timeout=10)
    assert client.queued == 3
    wait_for(lambda: errors, message="the queued call's timeout")
    err, data, elapsed = errors[0]
    assert err.error_code == "CALLBACK_TIMEOUT" and data is None and 0.14 <= elapsed < 1.0  # server still down
    wait_for(lambda: client.queued == 1, message="the fire-and-forget emit expiring")
    server = raw_server(port=port)
    assert promise.get(timeout=5).data == {"echo": "kept"}
    client.emit_and_wait("say", "sync")
    assert [m["payload"] for m in server.last.events()] == ["kept", "sync"]  # the expired ones never arrived
    assert len(errors) == 1


def test_manual_close_fails_the_queued_calls(raw_server, make_client):
    port, client, rec = _down(raw_server, make_client)
    errors = []
    client.emit("say", "queued", lambda err, data: errors.append(err))
    promise = client.emit_with_promise("say", "queued")
    client.emit("note", "queued")
    client.manual_close()
    result = promise.get(timeout=0)  # at once
    assert result.success is False and result.error_code == "OFFLINE_QUEUE_DROPPED"
    assert result.error.startswith("Not sent, the offline queue was dropped (manual close): ")
    wait_for(lambda: errors)
    assert [e.error_code for e in errors] == ["OFFLINE_QUEUE_DROPPED"] and client.queued == 0
    # After manual_close nothing is coming: WS_NOT_OPEN at once, as before the queue existed.
    assert client.emit_and_wait("say", "after").error_code == "WS_NOT_OPEN"
    server = raw_server(port=port)
    client.connect()
    assert client.emit_and_wait("say", "reopened").data == {"echo": "reopened"}
    assert [m["payload"] for m in server.last.events()] == ["reopened"]


def test_repeat_limit_fails_the_queued_calls(make_client):
    client = make_client("ws://127.0.0.1:%d" % free_port(), repeat_limit=1, fast_reconnect_interval=0.1)
    rec = Recorder(client)
    result = client.emit_and_wait("say", "never")  # queued while the attempts run
    assert result.error_code == "OFFLINE_QUEUE_DROPPED" and "repeat limit" in result.error
    assert rec.names() == ["error", "reconnect", "error", "repeat-limit", "close"]
    assert client.emit_and_wait("say", "late").error_code == "WS_NOT_OPEN"


def test_offline_queue_size_zero_fails_at_once_with_ws_not_open(raw_server, make_client):
    port, client, rec = _down(raw_server, make_client, offline_queue_size=0)
    calls = []
    assert client.emit("say", 1, lambda err, data: calls.append((err, data))) is False
    assert calls == [({"error": "WebSocket is not open", "error_code": "WS_NOT_OPEN"}, None)]
    started = time.monotonic()
    assert client.emit_and_wait("say", 2).error_code == "WS_NOT_OPEN" and time.monotonic() - started < 0.1
    assert client.emit("note", 3) is False and client.queued == 0
    server = raw_server(port=port)
    assert client.wait_connected(5)
    client.emit_and_wait("say", "sync")
    assert [m["payload"] for m in server.last.events()] == ["sync"]


# TLS ---------------------------------------------------------------------------------------


def test_wss(raw_server, make_client, tls_files):
    server = raw_server(ssl_files=tls_files)
    context = gevent.ssl.create_default_context(cafile=tls_files[0])
    client = make_client("wss://127.0.0.1:%d/secure" % server.port, ssl_context=context, custom_params={"id": "t"})
    assert client.wait_connected(5)
    assert client.emit_and_wait("say", {"tls": True}).data == {"echo": {"tls": True}}
    assert server.last.path == "/secure?id=t"


def test_wss_rejects_an_unknown_certificate(raw_server, make_client, tls_files):
    server = raw_server(ssl_files=tls_files)
    client = make_client("wss://127.0.0.1:%d" % server.port, fast_reconnect_interval=5)
    rec = Recorder(client)
    wait_for(lambda: rec.count("error"))
    assert "CERTIFICATE_VERIFY_FAILED" in rec.first("error").message
    assert not client.connected
