"""Headless Chromium (Debian's ``chromium``) against our servers, driven over the DevTools protocol.

(a) The demo page opened as two users on two different nodes: they pick a name and a room,
    see each other in the online list with their node, exchange a room message and a direct
    message, and see their node and latency.
(b) The browser client (``/ws-connector.js`` served by the adapter, loaded by a test page the
    adapter serves too) against the Python server: acks, ack timeouts, pending feedback, server
    pushes, a server request answered through ``reply``, heartbeat latency, and reconnection
    after the server restarts on the same port (a call made while it is down is queued and delivered).
(c) Connection state recovery: the browser client on node A of a Redis cluster; A stops, another
    node sends to its room and to its user, node B starts on the same port: the client resumes
    its session and gets every missed message once, in order.

No browser is downloaded: the driver (tests/cdp.py) starts the system's chromium. In CI
(``CI=true``) a missing chromium is an error; locally the tests are skipped with the reason.
``CROSSWS_SKIP_BROWSER=1`` skips them on purpose (the same switch makes .ci/run not install it).
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest

from cdp import Browser, Page
from crossws_sync import WebSocketCrossServerAdapter
from demo_process import DemoProcess
from support import RedisProcess, wait_for


def _no_page_errors(*pages: Page, expected: str = "\x00") -> None:
    for page in pages:
        errors = [error for error in page.errors if expected not in error]
        assert not errors, "errors in the page:\n" + "\n".join(page.log)


# (a) The demo page, two users on two nodes -------------------------------------------------------


@pytest.mark.timeout(60)
def test_demo_page_two_users_on_two_nodes(browser, redis_server):
    demo = DemoProcess(["--nodes", "2", "--port", "0", "--redis", redis_server.url, "--quiet"])
    try:
        urls = demo.wait_ready()
        alice = browser.new_page(urls["node1"])
        bob = browser.new_page(urls["node2"])
        for page, name in ((alice, "alice"), (bob, "bob")):
            page.type("#name", name)
            page.type("#room", "lobby")
            page.click("#join")
        alice.wait_for("!document.getElementById('chat').hidden", message="alice's chat view")
        bob.wait_for("!document.getElementById('chat').hidden", message="bob's chat view")
        assert alice.text("#node-name") == "node1" and bob.text("#node-name") == "node2"
        assert alice.text("#room-name") == "#lobby" and alice.text("#status") == "connected"

        # The online list shows both users, each with the node it is on.
        for page, other, node in ((alice, "bob", "node2"), (bob, "alice", "node1")):
            page.wait_for("!!document.querySelector('#online-list li[data-name=%s][data-node=%s]')" % (other, node),
                          message="%s in the online list on %s" % (other, node))
            line = page.text("#online-list li[data-name=%s]" % other)
            assert other in line and node in line and "#lobby" in line

        # A room message typed on node1 appears on node2's page.
        alice.type("#message-input", "hello from alice on node1")
        alice.click("#send")
        bob.wait_for("Array.from(document.querySelectorAll('#messages li.room'))"
                     ".some(li => li.dataset.from === 'alice' && li.textContent.includes('hello from alice on node1'))",
                     message="alice's room message on bob's page")
        assert any("@node1" in line for line in bob.texts("#messages li.room"))

        # A direct message: bob picks alice in the online list and writes to her.
        bob.click("#online-list li[data-name=alice] button.dm")
        assert bob.evaluate("document.getElementById('dm-to').value") == "alice"
        bob.type("#dm-text", "a secret for alice")
        bob.click("#dm-send")
        alice.wait_for("Array.from(document.querySelectorAll('#messages li.direct'))"
                       ".some(li => li.textContent.includes('bob \u2192 you') && li.textContent.includes('a secret for alice'))",
                       message="bob's direct message on alice's page")
        bob.wait_for("Array.from(document.querySelectorAll('#messages li.direct.mine'))"
                     ".some(li => li.textContent.includes('you \u2192 alice') && li.textContent.includes('@node1'))",
                     message="bob's copy of the direct message")
        assert not any("a secret for alice" in line for line in bob.texts("#messages li.room"))

        # The heartbeat latency and the node list (with a link to the other node).
        alice.wait_for("/^\\d+(\\.\\d+)? ms$/.test(document.getElementById('latency').textContent)",
                       message="a latency on alice's page")
        alice.wait_for("document.querySelectorAll('#nodes-list li').length === 2", message="two nodes listed")
        assert "you are here" in alice.text("#nodes-list li[data-node=node1]")
        link = alice.evaluate("document.querySelector('#nodes-list li[data-node=node2] a').href")
        assert link.startswith(urls["node2"])
        _no_page_errors(alice, bob)
    finally:
        demo.cleanup()


# (b) The browser client against the Python server -------------------------------------------------

TEST_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>ws-connector test</title></head>
<body>
<script src="/ws-connector.js"></script>
<script>
window.events = [];
window.frames = [];
window.start = function (options) {
  window.conn = new WebSocketConnector(Object.assign({ url: '/ws', customParams: { id: 'b1' } }, options));
  ['open', 'close', 'error', 'reconnect', 'pong'].forEach(function (name) {
    conn.on(name, function (arg) {
      events.push({ type: name, code: arg && arg.code, repeat: arg && arg.repeat, recovered: arg && arg.recovered,
                    latency: typeof arg === 'number' ? arg : null, at: performance.now() });
    });
  });
  ['pushed', 'chat', 'dm'].forEach(function (name) {
    conn.on(name, function (payload) { events.push({ type: name, payload: payload }); });
  });
  conn.on('message', function (data) { if (typeof data === 'string') frames.push(data); });
  return true;
};
window.count = function (type) { return events.filter(function (e) { return e.type === type; }).length; };
</script>
</body></html>"""


def _test_page(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
    if environ.get("PATH_INFO") != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"Not Found"]
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(TEST_PAGE)))])
    return [TEST_PAGE]


class EchoServer:
    """An adapter on a fixed port with the handlers the page talks to; restartable on the same port."""

    def __init__(self, redis_url: Optional[str] = None, recovery: Optional[Dict[str, Any]] = None) -> None:
        self.port = 0
        self.redis_url = redis_url
        self.recovery = recovery
        self.connections: List[str] = []
        self.urls: List[str] = []
        self.received: List[Any] = []
        self.adapter: Any = None

    def start(self) -> "EchoServer":
        adapter = WebSocketCrossServerAdapter(
            ws_options={"host": "127.0.0.1", "port": self.port, "path": "/ws", "app": _test_page},
            client_js_path="/ws-connector.js", auto_cleanup=True,
            redis_config=[self.redis_url] if self.redis_url else None, connection_state_recovery=self.recovery)

        def on_connection(socket, request):
            user_id = adapter.parse_ws_request_params(request)["params"].get("id")
            self.connections.append(user_id)
            self.urls.append(request.url)
            adapter.set_user_socket(user_id, socket)

        def join(socket: Any, payload: Any, callback: Any) -> None:
            adapter.join_room(payload["ns"], payload["room"], socket.socket_id)
            callback(True)

        def echo(socket, payload, callback):
            self.received.append(("echo", payload))
            if callback:
                callback({"echo": payload})

        def silent(socket, payload, callback):
            self.received.append(("silent", payload))

        def slow(socket, payload, callback):
            self.received.append(("slow", payload))
            import gevent

            gevent.spawn_later(0.3, callback, "late")

        adapter.on_websocket_event("connection", on_connection)
        for name, handler in (("echo", echo), ("silent", silent), ("slow", slow), ("join", join)):
            adapter.on_websocket_event(name, handler)
        adapter.start()
        self.port = adapter.port
        self.adapter = adapter
        return self

    def stop(self) -> None:
        if self.adapter is not None:
            self.adapter.close(timeout=1)
            self.adapter = None


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_browser_client_acks_timeouts_and_reconnection(browser, echo_server):
    page = browser.new_page("http://127.0.0.1:%d/" % echo_server.port)
    options = {"autoReconnect": True, "fastReconnectInterval": 200, "fastReconnectThreshold": 50,
               "callbackTimeout": 2000, "pingInterval": 300, "pongTimeout": 1000}
    assert page.evaluate("start(%s)" % json.dumps(options))
    page.wait_for("count('open') === 1", message="the first open")
    wait_for(lambda: echo_server.connections == ["b1"])

    # Acks: promise and callback styles.
    assert page.evaluate("conn.emitWithPromise('echo', {n: 1})") == {"success": True, "data": {"echo": {"n": 1}}}
    assert page.evaluate("new Promise(r => conn.emit('echo', 'cb', (err, data) => r({err, data})))") == {
        "err": None, "data": {"echo": "cb"}}

    # Ack timeouts: the server got the event but never answers.
    timed = page.evaluate("(async () => { const t0 = performance.now();"
                          " const r = await conn.emitWithPromise('silent', 1, {callbackTimeout: 300});"
                          " return {r, elapsed: performance.now() - t0}; })()")
    assert timed["r"]["success"] is False and timed["r"]["errorCode"] == "CALLBACK_TIMEOUT"
    assert timed["r"]["error"].startswith("Is promise callback timeout: ") and 280 <= timed["elapsed"] < 1500
    late = page.evaluate("new Promise(r => conn.emit('silent', 2, (err, data) => r({err, data}), {callbackTimeout: 200}))")
    assert late["data"] is None and late["err"]["errorCode"] == "CALLBACK_TIMEOUT"
    assert ("silent", 1) in echo_server.received and ("silent", 2) in echo_server.received

    # Pending feedback: onPending fires once before a slow ack, which still arrives.
    slow = page.evaluate("(async () => { let pending = 0;"
                         " const r = await conn.emitWithPromise('slow', 0, {pendingTimeout: 50, onPending: () => pending++});"
                         " return {r, pending}; })()")
    assert slow == {"r": {"success": True, "data": "late"}, "pending": 1}

    # Server pushes and the heartbeat latency.
    echo_server.adapter.to_socket_id("b1", "pushed", {"x": 1})
    page.wait_for("events.some(e => e.type === 'pushed' && e.payload.x === 1)", message="the server push")
    page.wait_for("events.some(e => e.type === 'pong' && e.latency >= 0)", message="a heartbeat pong")

    # A server request: the page's listener answers through its second argument, reply.
    page.evaluate("conn.on('confirm', function (payload, reply) { reply({doubled: payload.x * 2}); }); true")
    assert echo_server.adapter.to_socket_id_and_wait("b1", "confirm", {"x": 21}, timeout=3) == {
        "success": True, "data": {"doubled": 42}}

    # The server goes away: a pending ack fails at once, the client closes and retries...
    page.evaluate("window.pendingAtClose = conn.emitWithPromise('silent', 3, {callbackTimeout: 20000}); true")
    wait_for(lambda: ("silent", 3) in echo_server.received)
    port = echo_server.port
    started = time.monotonic()
    echo_server.stop()
    page.wait_for("events.some(e => e.type === 'close' && e.code === 1001)", message="close 1001 on shutdown")
    failed = page.evaluate("pendingAtClose")
    assert failed["success"] is False and failed["errorCode"] == "CONNECTION_CLOSED"
    assert time.monotonic() - started < 5
    page.wait_for("count('reconnect') >= 2 && conn.reconnecting()", message="reconnection attempts")
    # A call made while the server is down waits in the offline queue...
    page.evaluate("window.whileDown = conn.emitWithPromise('echo', 'while down', {callbackTimeout: 20000}); true")
    assert page.evaluate("conn.queued") == 1

    # ... and comes back on the same port: the client reconnects by itself and works again.
    echo_server.port = port
    echo_server.start()
    page.wait_for("count('open') === 2", timeout=10, message="the reconnection")
    assert page.evaluate("conn.reconnecting()") is False
    wait_for(lambda: echo_server.connections == ["b1", "b1"])
    # ... and is delivered once it is back (its ack fires), before anything sent after the open.
    assert page.evaluate("whileDown") == {"success": True, "data": {"echo": "while down"}}
    assert page.evaluate("conn.queued") == 0
    assert echo_server.received[-1] == ("echo", "while down")
    assert page.evaluate("conn.emitWithPromise('echo', 'again')") == {"success": True, "data": {"echo": "again"}}
    page.evaluate("conn.manualClose(); true")
    _no_page_errors(page, expected="WebSocket connection to")  # the attempts while the server was down


# (c) Connection state recovery ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_browser_client_resumes_its_session_on_another_node(browser: Browser, redis_server: RedisProcess) -> None:
    recovery = {"max_disconnection": 30}
    server = EchoServer(redis_url=redis_server.url, recovery=recovery).start()
    sender = WebSocketCrossServerAdapter(redis_config=[redis_server.url], connection_state_recovery=recovery)
    sender.start()

    def send(start: int, count: int) -> None:
        for i in range(start, start + count):
            sender.broadcast_to_room("chat", "lobby", "chat", i)
            sender.to_socket_id("b1", "dm", i)

    def received(kind: str) -> List[Any]:
        payloads: List[Any] = page.evaluate("events.filter(e => e.type === %s).map(e => e.payload)" % json.dumps(kind))
        return payloads

    try:
        page = browser.new_page("http://127.0.0.1:%d/" % server.port)
        options = {"autoReconnect": True, "fastReconnectInterval": 200, "fastReconnectThreshold": 50, "pingInterval": 60000}
        assert page.evaluate("start(%s)" % json.dumps(options))
        page.wait_for("count('open') === 1", message="the first open")
        assert page.evaluate("[events.find(e => e.type === 'open').recovered, conn.recovered]") == [False, False]
        assert page.evaluate("conn.emitWithPromise('join', {ns: 'chat', room: 'lobby'})") == {"success": True, "data": True}
        page.wait_for("frames.some(f => f.includes('\"_crossws.session\"'))", message="the session frame")
        send(0, 3)
        page.wait_for("count('chat') === 3 && count('dm') === 3", message="live messages")

        # Node A goes away; messages are sent while the client is away; node B takes the port.
        port = server.port
        server.stop()
        page.wait_for("count('close') === 1 && count('reconnect') >= 1", message="close and reconnection attempts")
        send(3, 4)
        server.adapter = None
        server.port = port
        server.start()
        page.wait_for("count('open') === 2", timeout=10, message="the reconnection")
        assert page.evaluate("[events.filter(e => e.type === 'open')[1].recovered, conn.recovered]") == [True, True]
        assert "_crossws_recover=1" in server.urls[-1] and "_crossws_recover" not in server.urls[0]
        send(7, 1)
        page.wait_for("count('chat') === 8 && count('dm') === 8", message="the missed messages, then a live one")
        assert received("chat") == list(range(8))
        assert received("dm") == list(range(8))
        assert page.evaluate("events.filter(e => e.type.startsWith('_crossws')).length") == 0
        page.evaluate("conn.manualClose(); true")
        _no_page_errors(page, expected="WebSocket connection to")
    finally:
        sender.close()
        server.stop()
