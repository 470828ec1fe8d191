"""Connection state recovery end to end: real node processes, a real Redis, a TCP relay.

A client behind a relay is on node A; the relay drops its connection (no close frame) and the
client comes back through the relay to node B while a third node sends room and direct
messages: every message arrives exactly once, in order, and ``recovered`` is true. Past the
window, after trimming, after a Redis restart: ``recovered`` is false. A node SIGKILLed: its
clients recover on the others.
"""
from __future__ import annotations

import json
import signal
import socket
import time
from typing import Any, Dict, Iterator, List, Tuple

import gevent
import gevent.server
import pytest

from crossws_sync import WebSocketConnector
from faultkit import NodeProcess, record, splice
from support import RedisProcess, wait_for

NS = "chat"
ROOM = "lobby"


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.stop()


class Relay:
    """A TCP relay to one backend port at a time; :meth:`drop` cuts every connection without
    a close frame (as a network change does)."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.sockets: List[socket.socket] = []
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def _handle(self, client: socket.socket, address: Any) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.backend), timeout=1.0)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self.sockets += [client, upstream]
        splice(client, upstream)

    def drop(self) -> None:
        sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.drop()
        self.server.stop(timeout=1)


class Client:
    """A Python client that records what it receives."""

    def __init__(self, port: int, user: str) -> None:
        self.received: List[Any] = []
        self.opens: List[Any] = []
        self.client = WebSocketConnector("ws://127.0.0.1:%d/?id=%s" % (port, user), auto_reconnect=True,
                                         fast_reconnect_interval=0.2, ping_interval=60.0)
        self.client.on("open", self.opens.append)
        self.client.on_server_event("chat", lambda payload: self.received.append(("chat", payload)))
        self.client.on_server_event("dm", lambda payload: self.received.append(("dm", payload)))
        assert self.client.wait_connected(10)
        wait_for(lambda: self.opens, 10)

    def ask(self, event: str, payload: Any) -> Any:
        result = self.client.emit_and_wait(event, payload, callback_timeout=10.0)
        assert result["success"], result
        return result["data"]

    def close(self) -> None:
        self.client.close()


def node(name: str, redis: RedisProcess, *, max_disconnection: float = 30.0, history_size: int = 1000,
         max_replay: int = 5000) -> NodeProcess:
    options = {"max_disconnection": max_disconnection, "history_size": history_size, "max_replay": max_replay}
    return NodeProcess(name, redis_urls=[redis.url], heartbeat=0.3,
                       extra=["--recovery", json.dumps(options)]).wait_ready()


@pytest.fixture
def cleanup() -> Iterator[List[Any]]:
    things: List[Any] = []
    yield things
    for thing in reversed(things):
        thing.close() if hasattr(thing, "close") else thing.stop()


def send_both(sender: Client, start: int, count: int, target: str) -> None:
    for i in range(start, start + count):
        sender.ask("room", {"ns": NS, "room": ROOM, "body": i})
        sender.ask("dm", {"to": target, "body": i})


def alice_then_away(a_port: int, b_port: int, things: List[Any], *, session_wait: float = 15) -> Tuple[Relay, Client, Client]:
    """alice joins the room on node A through a relay, bob on node B sends her 5 room and 5 direct
    messages; then the relay drops her and refuses her (backend 0): she is away. Everything
    opened is appended to ``things``. Returns ``(relay, alice, bob)``."""
    relay = Relay(a_port)
    things.append(relay)
    alice = Client(relay.port, "alice")
    things.append(alice)
    assert alice.ask("join", {"ns": NS, "room": ROOM})["node"] == "A"
    bob = Client(b_port, "bob")
    things.append(bob)
    wait_for(lambda: alice.client._session.session_id is not None, session_wait)
    send_both(bob, 0, 5, "alice")
    wait_for(lambda: len(alice.received) == 10, 10)
    relay.backend = 0
    relay.drop()
    wait_for(lambda: not alice.client.connected, 15)
    return relay, alice, bob


class KeepSending:
    """bob sends alice one room and one direct message every 50 ms from ``start`` on; ``sent``
    lists the numbers both were accepted for (a send refused meanwhile, e.g. during a failover,
    is skipped and not listed)."""

    def __init__(self, bob: Client, start: int = 5) -> None:
        self.sent: List[int] = []
        self._running = True
        self._greenlet = gevent.spawn(self._loop, bob, start)

    def _loop(self, bob: Client, i: int) -> None:
        while self._running:
            try:
                send_both(bob, i, 1, "alice")
                self.sent.append(i)
            except AssertionError:
                pass
            i += 1
            gevent.sleep(0.05)

    def stop(self) -> List[int]:
        self._running = False
        self._greenlet.join(10)
        return self.sent


def back_with_everything(relay: Relay, port: int, alice: Client, sent: List[int]) -> None:
    """alice's relay lets her through to ``port`` again: she must come back recovered and hold
    every room and direct message bob sent (the 5 before she left, then ``sent``), each once and
    in order."""
    relay.backend = port
    wait_for(lambda: len(alice.opens) == 2, 20)
    assert alice.opens[1]["recovered"] is True
    everything = [0, 1, 2, 3, 4] + sent
    wait_for(lambda: len(alice.received) >= 2 * len(everything), 15)
    gevent.sleep(0.5)  # nothing more may arrive
    for kind in ("chat", "dm"):
        got = [body for what, body in alice.received if what == kind]
        assert got == everything, "%s %r %r" % (kind, got, everything)


def expected(start: int, count: int) -> List[Any]:
    out: List[Any] = []
    for i in range(start, start + count):
        out += [("chat", i), ("dm", i)]
    return out


def test_a_dropped_client_resumes_on_another_node_with_every_message_once_in_order(redis_server, cleanup):
    a, b, c = (node(name, redis_server) for name in ("A", "B", "C"))
    cleanup += [a, b, c]
    relay = Relay(a.port)
    cleanup.append(relay)
    alice = Client(relay.port, "alice")
    cleanup.append(alice)
    assert alice.opens[0]["recovered"] is False
    assert alice.ask("join", {"ns": NS, "room": ROOM})["node"] == "A"
    bob = Client(c.port, "bob")
    cleanup.append(bob)
    bob.ask("join", {"ns": NS, "room": ROOM})
    wait_for(lambda: alice.client._session.session_id is not None, 5)

    send_both(bob, 0, 5, "alice")
    wait_for(lambda: len(alice.received) == 10, 10)

    relay.backend = b.port  # the next connection lands on B
    away_since = time.monotonic()
    relay.drop()
    wait_for(lambda: not alice.client.connected, 5)
    send_both(bob, 5, 10, "alice")  # sent while alice is away (or already back: all the same)
    wait_for(lambda: len(alice.opens) == 2, 15)
    resumed = time.monotonic()
    assert alice.opens[1]["recovered"] is True
    assert alice.client.recovered is True
    wait_for(lambda: len(alice.received) >= 30, 10)
    record("recovery_resume", sent_meanwhile=20, received_after_the_drop=len(alice.received) - 10,
           drop_to_recovered_open_ms=round((resumed - away_since) * 1000, 1),
           drop_to_all_received_ms=round((time.monotonic() - away_since) * 1000, 1))
    send_both(bob, 15, 5, "alice")  # live again, now on B
    wait_for(lambda: len(alice.received) >= 40, 15)
    gevent.sleep(0.5)
    assert alice.received == expected(0, 20)
    assert alice.ask("whoami", {})["node"] == "B"


def away_and_back(redis_server: RedisProcess, cleanup: List[Any], meanwhile: Any, *, reconnect_timeout: float = 20,
                  **options: Any) -> Client:
    """alice (on node A, behind a relay) in the room is cut off; ``meanwhile(bob)`` runs while she
    cannot connect (bob is on node B); then she comes back through the relay to B. Returns her
    once her second ``open`` fired."""
    a, b = node("A", redis_server, **options), node("B", redis_server, **options)
    cleanup += [a, b]
    relay = Relay(a.port)
    cleanup.append(relay)
    alice = Client(relay.port, "alice")
    bob = Client(b.port, "bob")
    cleanup += [alice, bob]
    alice.ask("join", {"ns": NS, "room": ROOM})
    wait_for(lambda: alice.client._session.session_id is not None, 5)
    relay.backend = 0  # refused for a while
    relay.drop()
    meanwhile(bob)
    relay.backend = b.port
    wait_for(lambda: len(alice.opens) == 2, reconnect_timeout)
    return alice


def test_past_the_window_the_client_is_not_recovered(redis_server, cleanup):
    alice = away_and_back(redis_server, cleanup, lambda bob: gevent.sleep(3.0), max_disconnection=1.0)
    assert alice.opens[1]["recovered"] is False
    assert alice.client.recovered is False


def test_history_trimmed_past_the_position_is_not_recovered(redis_server, cleanup):
    def send(bob: Client) -> None:
        for i in range(300):  # MAXLEN ~ trims by whole macro nodes: send well past it
            bob.ask("room", {"ns": NS, "room": ROOM, "body": i})

    alice = away_and_back(redis_server, cleanup, send, history_size=5)
    assert alice.opens[1]["recovered"] is False
    assert alice.received == []


def test_after_a_redis_restart_the_client_is_not_recovered(redis_server, cleanup):
    def restart(bob: Client) -> None:
        redis_server.restart()  # no persistence: every stream and session is gone
        wait_for(lambda: bob.client.connected, 10)

    alice = away_and_back(redis_server, cleanup, restart, reconnect_timeout=30)
    assert alice.opens[1]["recovered"] is False


def test_clients_of_a_sigkilled_node_recover_on_another(redis_server, cleanup):
    a, b = node("A", redis_server), node("B", redis_server)
    cleanup += [a, b]
    relay = Relay(a.port)
    cleanup.append(relay)
    alice = Client(relay.port, "alice")
    bob = Client(b.port, "bob")
    cleanup += [alice, bob]
    alice.ask("join", {"ns": NS, "room": ROOM})
    bob.ask("join", {"ns": NS, "room": ROOM})
    wait_for(lambda: alice.client._session.session_id is not None, 5)
    send_both(bob, 0, 3, "alice")
    wait_for(lambda: len(alice.received) == 6, 10)
    relay.backend = b.port
    a.signal(signal.SIGKILL)
    a.wait_exit(10)
    send_both(bob, 3, 3, "alice")
    wait_for(lambda: len(alice.opens) == 2, 20)
    assert alice.opens[1]["recovered"] is True
    wait_for(lambda: len(alice.received) >= 12, 10)
    gevent.sleep(0.3)
    assert alice.received == expected(0, 6)


# In one process: what the application and a hostile client see ------------------------------

from crossws_sync import WebSocketCrossServerAdapter  # noqa: E402
from rawclient import RawClient  # noqa: E402


@pytest.fixture
def adapters(redis_server) -> Iterator[List[WebSocketCrossServerAdapter]]:
    made: List[WebSocketCrossServerAdapter] = []

    def make(name: str) -> WebSocketCrossServerAdapter:
        adapter = WebSocketCrossServerAdapter(
            server_name=name, ws_options={"host": "127.0.0.1", "port": 0}, redis_config=[redis_server.url],
            node_heartbeat_interval=0.3, auto_cleanup=True,
            connection_state_recovery={"max_disconnection": 30.0, "wait_timeout": 1.0})
        seen: List[Any] = []
        adapter.seen = seen  # type: ignore[attr-defined]

        def on_connection(socket: Any, request: Any) -> None:
            seen.append(("recovered", socket.recovered, socket.socket_id))
            user = adapter.parse_ws_request_params(request)["params"].get("id")
            if user and not socket.recovered:
                adapter.set_user_socket(user, socket)
                adapter.join_room(NS, ROOM, user)

        adapter.on_websocket_event("connection", on_connection)
        adapter.start()
        made.append(adapter)
        return adapter

    yield make  # type: ignore[misc]
    for adapter in made:
        adapter.close()


def joined(adapter: WebSocketCrossServerAdapter, user: str) -> RawClient:
    """A raw client mapped to ``user`` and in the room (the handler joins it after mapping)."""
    client = RawClient(adapter.port, "/?id=%s" % user)
    session_of(client)
    # join_room returns once the namespace is subscribed and the session has the room
    stream = "r\x1f%s\x1f%s" % (NS, ROOM)
    wait_for(lambda: stream in getattr(adapter.get_socket_instance(user), "streams").baseline, 5)
    return client


def session_of(client: RawClient) -> Dict[str, Any]:
    message = client.recv_json()
    assert message["event"] == "_crossws.session", message
    return message["payload"]


def test_the_connection_handler_sees_socket_recovered_and_the_restored_user(adapters):
    a, b = adapters("A"), adapters("B")
    first = RawClient(a.port, "/?id=carol")
    session = session_of(first)
    assert session["recovered"] is False
    wait_for(lambda: "r\x1fchat\x1flobby" in a.get_socket_instance("carol").streams.baseline)
    b.broadcast_to_room(NS, ROOM, "chat", "before")
    before = first.recv_json()
    assert before["payload"] == "before" and before["_pos"][0] == "r\x1fchat\x1flobby"
    first.abort()
    wait_for(lambda: a.get_socket_instance("carol") is None)
    b.broadcast_to_room(NS, ROOM, "chat", "missed")
    b.to_socket_id("carol", "dm", "missed dm")
    second = RawClient(b.port, "/?id=carol&_crossws_recover=1")
    stream, offset, epoch = before["_pos"]
    second.send_json({"event": "_crossws.recover", "payload": {"sid": session["sid"], "pos": {stream: [offset, epoch]}}})
    answer = session_of(second)
    assert answer["recovered"] is True and answer["sid"] != session["sid"]
    got = [second.recv_json() for _ in range(2)]
    assert sorted(m["payload"] for m in got) == ["missed", "missed dm"]
    wait_for(lambda: ("recovered", True, "carol") in b.seen)
    assert b.get_socket_instance("carol") is not None
    assert b.is_joined_room("carol", NS, ROOM)
    # the old session id was used up
    third = RawClient(b.port, "/?id=carol&_crossws_recover=1")
    third.send_json({"event": "_crossws.recover", "payload": {"sid": session["sid"], "pos": {}}})
    assert session_of(third)["recovered"] is False
    for client in (second, third):
        client.close()


@pytest.mark.parametrize("request_frame", [
    None,  # says it resumes but never asks: the handler still runs after wait_timeout
    '{"event":"_crossws.recover","payload":"nonsense"}',
    '{"event":"_crossws.recover","payload":{"sid":"%s","pos":{}}}' % ("x" * 22),
    '{"event":"_crossws.recover","payload":{"sid":"%s","pos":{"u\\u001fsomeone":[0,"abcd1234"]}}}' % ("y" * 22),
    'not json at all',
])
def test_hostile_or_missing_recovery_requests_recover_nothing_and_the_node_serves_on(adapters, request_frame):
    a = adapters("A")
    victim = RawClient(a.port, "/?id=victim")
    session_of(victim)
    attacker = RawClient(a.port, "/?id=mallory&_crossws_recover=1")
    if request_frame is not None:
        attacker.send_text(request_frame)
    answer = session_of(attacker)
    assert answer["recovered"] is False
    wait_for(lambda: ("recovered", False, None) in a.seen)
    assert a.get_socket_instance("mallory") is not None  # the application mapped it as usual
    assert a.get_socket_instance("victim") is not None
    a.to_socket_id("victim", "dm", "still here")
    assert victim.recv_json()["payload"] == "still here"
    for client in (victim, attacker):
        client.close()


def test_server_requests_and_the_offline_queue_work_with_recovery_on(adapters):
    a, b = adapters("A"), adapters("B")
    client = WebSocketConnector("ws://127.0.0.1:%d/?id=dave" % a.port, auto_reconnect=True,
                                fast_reconnect_interval=0.2, ping_interval=60.0)
    client.on_server_event("ask", lambda payload, reply: reply({"answer": payload["q"] * 2}))
    try:
        assert client.wait_connected(10)
        wait_for(lambda: client._session.session_id is not None, 5)
        wait_for(lambda: b.find_user_node("dave") == "A", 5)  # B's directory learnt where dave is
        result = b.to_socket_id_and_wait("dave", "ask", {"q": 21}, timeout=5.0)
        assert result["success"], result
        assert result["data"] == {"answer": 42}
    finally:
        client.close()


def test_a_live_client_sees_no_duplicate_and_no_close_when_the_history_redis_restarts(redis_server, adapters):
    a = adapters("A")
    client = joined(a, "erin")
    a.broadcast_to_room(NS, ROOM, "chat", 0)
    assert client.recv_json()["payload"] == 0
    redis_server.restart()  # a new Redis process: a new epoch for every stream
    deadline_ok = wait_for(lambda: a.get_healthy_redis_instances_count() == 1, 15)
    assert deadline_ok
    got = []

    def send_and_collect() -> bool:
        a.broadcast_to_room(NS, ROOM, "chat", len(got) + 1)
        try:
            got.append(client.recv_json(timeout=0.5))
        except Exception:
            pass
        return len(got) >= 3

    wait_for(send_and_collect, 20, interval=0.2)
    payloads = [m["payload"] for m in got]
    assert payloads == sorted(set(payloads))  # in order, never twice
    epochs = {m["_pos"][2] for m in got}
    assert len(epochs) == 1 and got[0]["_pos"][1] >= 1
    client.close()


def _append_unseen(adapter: WebSocketCrossServerAdapter, text: str) -> None:
    """Append a room message to history without node ``adapter`` seeing it live (published on a
    channel nobody reads): to the node, a message that pub/sub lost."""
    recovery = adapter._runtime.recovery
    envelope = {"data": text, "roomNamespace": NS, "roomId": ROOM, "senderServer": "elsewhere", "excludeSocketIds": []}
    raw, index = recovery.codec.encode_positioned(envelope, "ws:nobody-listens")
    recovery.store.append("r\x1f%s\x1f%s" % (NS, ROOM), "ws:nobody-listens", raw, index, lambda error: None)


def test_a_message_pubsub_lost_is_filled_from_history_before_the_next_one(adapters):
    a = adapters("A")
    client = joined(a, "frank")
    a.broadcast_to_room(NS, ROOM, "chat", 1)
    assert client.recv_json()["payload"] == 1
    _append_unseen(a, '{"event":"chat","payload":2}')
    a.broadcast_to_room(NS, ROOM, "chat", 3)
    got = [client.recv_json() for _ in range(2)]
    assert [m["payload"] for m in got] == [2, 3]
    assert [m["_pos"][1] for m in got] == [2, 3]
    assert a._runtime.recovery.stats["gaps_filled"] == 1
    client.close()


def test_a_lost_message_history_no_longer_holds_closes_with_3010_and_the_client_reconnects(adapters, redis_server):
    a = adapters("A")
    client = joined(a, "gina")
    a.broadcast_to_room(NS, ROOM, "chat", 1)
    assert client.recv_json()["payload"] == 1
    _append_unseen(a, '{"event":"chat","payload":2}')
    wait_for(lambda: a._runtime.recovery.store.top("r\x1fchat\x1flobby")[0] == 2)
    redis_server.command("DEL", "ws:_crossws.h:{r\x1fchat\x1flobby}")  # history lost, the offsets stay
    a.broadcast_to_room(NS, ROOM, "chat", 3)
    assert client.recv_close() == (3010, "insufficient state")
    client.close()


def test_more_missed_messages_than_max_replay_is_not_recovered(redis_server, cleanup):
    def send(bob: Client) -> None:
        for i in range(6):
            bob.ask("room", {"ns": NS, "room": ROOM, "body": i})

    alice = away_and_back(redis_server, cleanup, send, max_replay=5)
    assert alice.opens[1]["recovered"] is False
    assert alice.received == []


def test_a_connection_mapped_while_the_history_redis_is_down_gets_its_session_once_it_is_back(adapters, redis_server):
    a = adapters("A")
    redis_server.kill()
    client = RawClient(a.port, "/?id=hana")
    wait_for(lambda: a.get_socket_instance("hana") is not None, 5)
    redis_server.start()
    session = session_of(client)  # sent once the history node answers again
    assert session["recovered"] is False and session["sid"]
    client.close()
