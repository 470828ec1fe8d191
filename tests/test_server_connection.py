"""crossws_sync.server.connection: one server-side WebSocket over a real socket pair, the peer
written and read frame by frame: events in order, automatic pongs, writes that keep their order,
the close handshake and its timeout, the slow-consumer and size limits, and on_close once.

Every test runs twice: with the connection read by a greenlet of its own (``run()``, TLS) and
served from the event loop (``start_reading()``, no greenlet while idle)."""
import socket

import gevent
import gevent.event
import gevent.socket
import pytest

from crossws_sync.server.connection import SLOW_CONSUMER_CODE, ConnectionHandler, WebSocketConnection
from crossws_sync.wire import frames
from crossws_sync.wire.request import Request
from support import wait_for


class Recorder(ConnectionHandler):
    def __init__(self):
        self.events = []
        self.ended = gevent.event.Event()

    def on_text(self, conn, text):
        self.events.append(("text", text))

    def on_binary(self, conn, data):
        self.events.append(("binary", data))

    def on_pong(self, conn, data):
        self.events.append(("pong", data))

    def on_error(self, conn, error):
        self.events.append(("error", type(error).__name__))

    def on_close(self, conn, code, reason):
        self.events.append(("close", code, reason))
        self.ended.set()


class Peer:
    """The client end: masked frames out, parsed messages in."""

    def __init__(self, sock):
        self.sock = sock
        self.parser = frames.FrameParser(None, expect_masked=False)
        self.messages = []

    def send(self, opcode, payload=b""):
        self.sock.sendall(frames.encode_frame(opcode, payload, mask=True))

    def recv(self, count=1, timeout=5.0):
        with gevent.Timeout(timeout):
            while len(self.messages) < count:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.parser.feed(data, self.messages)
        taken, self.messages = self.messages[:count], self.messages[count:]
        return taken


@pytest.fixture(params=["greenlet", "event loop"])
def make_pair(request):
    made = []

    def make(**options):
        server, client = gevent.socket.socketpair()
        handler = Recorder()
        conn = WebSocketConnection(server, Request({"PATH_INFO": "/ws", "QUERY_STRING": "id=1"}), handler, **options)
        if request.param == "greenlet":
            reader = gevent.spawn(conn.run)
        else:
            assert conn.start_reading()
            reader = gevent.spawn(handler.ended.wait)  # joins once on_close has run
        made.append((conn, reader, client))
        return conn, handler, Peer(client), reader

    yield make
    for conn, reader, client in made:
        conn.terminate()
        reader.join(timeout=2)
        client.close()


def test_messages_arrive_in_order_and_a_ping_is_answered(make_pair):
    conn, handler, peer, _ = make_pair()
    peer.send(frames.OP_TEXT, "héllo".encode())
    peer.send(frames.OP_BINARY, b"\x00\xff")
    peer.send(frames.OP_PING, b"p1")
    peer.send(frames.OP_PONG, b"q")
    assert peer.recv() == [(frames.OP_PONG, b"p1")]
    wait_for(lambda: len(handler.events) == 3)
    assert handler.events == [("text", "héllo"), ("binary", b"\x00\xff"), ("pong", b"q")]
    assert conn.open and conn.ready_state == WebSocketConnection.OPEN and conn.request.path == "/ws"


def test_writes_keep_their_order_and_fail_once_not_open(make_pair):
    conn, handler, peer, _ = make_pair()
    assert conn.send("a") and conn.send(b"b") and conn.send_event("e", {"x": 1}) and conn.ping(b"hb")
    assert peer.recv(4) == [(frames.OP_TEXT, b"a"), (frames.OP_BINARY, b"b"),
                            (frames.OP_TEXT, b'{"event":"e","payload":{"x":1}}'), (frames.OP_PING, b"hb")]
    with pytest.raises(TypeError):
        conn.send(123)
    conn.close(4000, "bye")
    assert not conn.open and conn.send("late") is False and conn.ping() is False
    assert conn.send_event("late") is False


def test_the_close_handshake_started_here_ends_with_the_peers_answer(make_pair):
    conn, handler, peer, reader = make_pair()
    conn.close(4001, "kicked")
    (opcode, payload), = peer.recv()
    assert opcode == frames.OP_CLOSE and frames.parse_close_payload(payload) == (4001, "kicked")
    peer.sock.sendall(frames.encode_close(4001, "kicked", mask=True))
    reader.join(timeout=5)
    assert conn.closed and handler.events == [("close", 4001, "kicked")]


@pytest.mark.parametrize("code", [1005, 1006, 1015, 999, 5000])
def test_a_code_no_endpoint_may_send_is_refused_and_the_connection_stays_usable(make_pair, code):
    conn, handler, peer, _ = make_pair()
    with pytest.raises(ValueError, match="cannot be sent"):
        conn.close(code)
    assert conn.open and conn.send("still here")
    assert peer.recv() == [(frames.OP_TEXT, b"still here")]  # no close frame went out
    conn.close(1000)
    with pytest.raises(ValueError):
        conn.close(code)  # refused once closing too


def test_a_peer_that_never_answers_the_close_is_dropped_after_close_timeout(make_pair):
    conn, handler, peer, reader = make_pair(close_timeout=0.2)
    conn.close(1000)
    reader.join(timeout=5)
    assert conn.closed and [e[0] for e in handler.events] == ["close"]


def test_a_close_from_the_peer_is_answered_and_reported_once(make_pair):
    conn, handler, peer, reader = make_pair()
    peer.sock.sendall(frames.encode_close(1000, "done", mask=True))
    assert peer.recv()[0][0] == frames.OP_CLOSE
    reader.join(timeout=5)
    conn.close(1000)  # already closed: nothing happens
    conn.terminate()
    assert handler.events == [("close", 1000, "done")] and conn.close_code == 1000


def test_a_vanished_peer_and_terminate_close_with_1006(make_pair):
    conn, handler, peer, reader = make_pair()
    peer.sock.close()
    reader.join(timeout=5)
    other, other_handler, _, other_reader = make_pair()
    other.terminate()
    other_reader.join(timeout=5)
    assert handler.events == [("close", 1006, "")] and other_handler.events == [("close", 1006, "")]


def test_a_message_over_the_size_limit_closes_with_1009(make_pair):
    conn, handler, peer, reader = make_pair(max_message_size=10)
    peer.send(frames.OP_TEXT, b"x" * 11)
    (opcode, payload), = peer.recv()
    assert frames.parse_close_payload(payload)[0] == 1009
    reader.join(timeout=5)
    assert ("error", "MessageTooBig") in handler.events and handler.events[-1][:2] == ("close", 1009)


def test_a_slow_consumer_is_dropped_and_nobody_waits_for_it(make_pair):
    conn, handler, peer, reader = make_pair(max_outbox_bytes=256 * 1024)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = "x" * 65536
    sent = 0
    with gevent.Timeout(5):
        while conn.send(chunk):  # never blocks: the peer reads nothing
            sent += 1
            gevent.sleep(0)
    reader.join(timeout=5)
    assert sent > 4 and conn.closed
    assert (conn.close_code, conn.close_reason) == (SLOW_CONSUMER_CODE, "slow consumer")
    assert handler.events == [("close", SLOW_CONSUMER_CODE, "slow consumer")]


def test_served_from_the_event_loop_an_idle_connection_holds_no_greenlet():
    server, client = gevent.socket.socketpair()
    blocked = gevent.event.Event()

    class Blocking(Recorder):
        def on_text(self, conn, text):
            super().on_text(conn, text)
            if text == "block":
                blocked.wait(5)  # a handler that blocks holds its connection's next read only

    handler = Blocking()
    conn = WebSocketConnection(server, Request({"PATH_INFO": "/ws"}), handler)
    other_server, other_client = gevent.socket.socketpair()
    other_handler = Recorder()
    other = WebSocketConnection(other_server, Request({"PATH_INFO": "/ws"}), other_handler)
    assert conn.start_reading() and other.start_reading()
    peer, other_peer = Peer(client), Peer(other_client)
    peer.send(frames.OP_TEXT, b"block")
    peer.send(frames.OP_TEXT, b"after")
    other_peer.send(frames.OP_TEXT, b"meanwhile")
    wait_for(lambda: other_handler.events == [("text", "meanwhile")])
    assert handler.events == [("text", "block")]  # "after" waits for the blocked handler
    blocked.set()
    wait_for(lambda: handler.events == [("text", "block"), ("text", "after")])
    other_client.close()
    assert other_handler.ended.wait(5) and other_handler.events[-1] == ("close", 1006, "")
    conn.terminate()
    assert handler.ended.wait(5)
    client.close()



def test_applications_may_set_their_own_attributes_on_a_connection():
    server, client = gevent.socket.socketpair()
    conn = WebSocketConnection(server, Request({"PATH_INFO": "/ws"}), Recorder())
    assert not hasattr(conn, "player_id")
    conn.player_id = 7  # as in the original: socket.playerId = ...
    assert conn.player_id == 7 and vars(conn) == {"player_id": 7}
    server.close()
    client.close()
