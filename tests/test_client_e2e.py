"""WebSocketConnector against our real server (WebSocketCrossServerAdapter), over real sockets.

Covers issue 3 item 7: a full session, a server killed and restarted on the same port, a
server that stops echoing heartbeats, many greenlets emitting at once.
"""
import os
import socket
import subprocess
import sys
import textwrap
import time

import gevent
import pytest

from support import free_port, repo_root, terminate_process, wait_for
from test_client import Recorder

pytestmark = pytest.mark.timeout(60)

NO_RECONNECT = (4001, 4010, 4011, 4012)


def _seed_handlers(adapter, log):
    """The original README's server: map ?id=, close 4011 without it, ``say`` and ``joinRoom`` acks."""

    def on_connection(socket_, request):
        params = adapter.parse_ws_request_params(request)["params"]
        log.append(("connection", params))
        if params.get("id"):
            socket_.player_id = params["id"]
            adapter.set_user_socket(params["id"], socket_)
        else:
            socket_.close(4011, "Auth failure")

    def on_close(socket_, request, code, reason):
        log.append(("close", code, reason))
        if getattr(socket_, "player_id", None):
            adapter.remove_user_socket(socket_.player_id, socket_)

    def on_say(socket_, payload, callback):
        log.append(("say", payload))
        if callback:
            callback({"msg": "I am a callback for your say event", "echo": payload})

    def on_join(socket_, payload, callback):
        adapter.join_room("testRoom", "1000", socket_.player_id)
        if callback:
            callback({"msg": "JoinRoom successfully"})

    def on_slow(socket_, payload, callback):
        gevent.sleep(payload["delay"])
        if callback:
            callback("late")

    adapter.on_websocket_event("connection", on_connection)
    adapter.on_websocket_event("close", on_close)
    adapter.on_websocket_event("say", on_say)
    adapter.on_websocket_event("joinRoom", on_join)
    adapter.on_websocket_event("slow", on_slow)
    adapter.on_websocket_event("hang", lambda socket_, payload, callback: log.append(("hang", payload)))


@pytest.fixture
def seeded_adapter(make_adapter):
    """Started adapters (``port`` 0: a free one) running the original README's handlers;
    ``adapter.log`` records what the handlers saw."""

    def make(port=0, **options):
        adapter = make_adapter(ws_options={"port": port}, **options)
        adapter.log = []
        _seed_handlers(adapter, adapter.log)
        return adapter.start()

    return make


def test_full_session(seeded_adapter, make_client):
    adapter = seeded_adapter(heartbeat_str="")
    url = "ws://127.0.0.1:%d" % adapter.port
    client = make_client(url, custom_params={"name": "Sam", "id": 1}, ping_interval=0.05, callback_timeout=3)
    rec = Recorder(client)
    pushed = []
    for name in ("serverSay", "roomSay", "direct"):
        client.on(name, lambda payload, name=name: pushed.append((name, payload)))
    assert client.wait_connected(5)
    wait_for(lambda: adapter.get_socket_instance("1") is not None)
    assert ("connection", {"name": "Sam", "id": "1"}) in adapter.log

    # acks: callback, promise, blocking alias
    replies = []
    client.emit("say", {"msg": "cb"}, lambda err, data: replies.append((err, data)))
    wait_for(lambda: replies)
    assert replies == [(None, {"msg": "I am a callback for your say event", "echo": {"msg": "cb"}})]
    result = client.emit_with_promise("say", {"msg": "promise"}).get(timeout=5)
    assert result.success is True and result.data["echo"] == {"msg": "promise"}
    assert client.emit_and_wait("joinRoom", {"msg": "join"}) == {"success": True, "data": {"msg": "JoinRoom successfully"}}
    client.emit("say", {"msg": "no ack"})
    wait_for(lambda: ("say", {"msg": "no ack"}) in adapter.log)

    # server pushes: unicast, broadcast, room
    adapter.to_socket_id("1", "direct", {"a": 1})
    adapter.broadcast("serverSay", {"msg": "everyone"})
    adapter.broadcast_to_room("testRoom", "1000", "roomSay", {"msg": "room"})
    wait_for(lambda: len(pushed) == 3)
    assert pushed == [("direct", {"a": 1}), ("serverSay", {"msg": "everyone"}), ("roomSay", {"msg": "room"})]

    # pending then reply; timeout for an event nobody answers
    order = []
    result = client.emit_and_wait("slow", {"delay": 0.15}, pending_timeout=0.05, on_pending=lambda: order.append("pending"))
    assert result.data == "late" and order == ["pending"]
    errors = []
    client.emit("nobody", {}, lambda err, data: errors.append(err), callback_timeout=0.1)
    wait_for(lambda: errors)
    assert errors[0].error_code == "CALLBACK_TIMEOUT"
    assert client.emit_and_wait("nobody", {}, callback_timeout=0.1).error_code == "CALLBACK_TIMEOUT"

    # heartbeat against our server
    wait_for(lambda: rec.count("pong") >= 2)
    assert client.latency is not None and client.latency < 1

    # a server event named like a lifecycle event reaches only server-event listeners
    spoofed = []
    client.on_server_event("close", spoofed.append)
    adapter.to_socket_id("1", "close", {"code": 1})
    wait_for(lambda: spoofed == [{"code": 1}])
    assert rec.count("close") == 0 and client.connected

    # manual close: local close 4001, the server sees 4001 'client manual close'
    client.manual_close()
    wait_for(lambda: ("close", 4001, "client manual close") in adapter.log)
    wait_for(lambda: rec.count("close") == 1)
    assert rec.first("close").code == 4001
    assert rec.names() == ["open", "close"]


def test_server_kick_4011_does_not_reconnect(seeded_adapter, make_client):
    adapter = seeded_adapter()
    client = make_client("ws://127.0.0.1:%d" % adapter.port, auto_reconnect=True, ping_interval=0.05,
                         pong_timeout=0.05, fast_reconnect_interval=0.05)  # no id: the server says 4011
    rec = Recorder(client)
    wait_for(lambda: rec.count("close"))
    close = rec.first("close")
    assert (close.code, close.reason) == (4011, "Auth failure")
    gevent.sleep(0.3)
    assert rec.names(exclude=()) == ["open", "close"]


def test_silent_server_gives_pong_timeout_and_close_4002(seeded_adapter, make_client):
    # The server only echoes "hb"; the client's heartbeat "" is never echoed.
    adapter = seeded_adapter(heartbeat_str="hb")
    client = make_client("ws://127.0.0.1:%d/?id=u1" % adapter.port, ping_interval=0.05, pong_timeout=0.15)
    rec = Recorder(client)
    wait_for(lambda: rec.count("close"), timeout=5)
    assert rec.names(exclude=()) == ["open", "ping", "pong-timeout", "close"]
    assert rec.first("close").code == 4002
    wait_for(lambda: ("close", 4002, "pong timeout") in adapter.log)


def test_pending_acks_fail_when_the_server_drops_the_socket(seeded_adapter, make_client):
    adapter = seeded_adapter()
    client = make_client("ws://127.0.0.1:%d/?id=u1" % adapter.port, callback_timeout=20)
    assert client.wait_connected(5)
    promise = client.emit_with_promise("hang", {})
    wait_for(lambda: ("hang", {}) in adapter.log)
    started = time.monotonic()
    adapter.get_socket_instance("u1").terminate()
    result = promise.get(timeout=5)
    assert time.monotonic() - started < 1 and result.error_code == "CONNECTION_CLOSED"


def test_many_greenlets_emitting_at_once(seeded_adapter, make_client):
    adapter = seeded_adapter()
    client = make_client("ws://127.0.0.1:%d/?id=u1" % adapter.port)
    assert client.wait_connected(5)

    def worker(index):
        return [client.emit_and_wait("say", {"w": index, "n": n}, callback_timeout=10) for n in range(10)]

    jobs = [gevent.spawn(worker, i) for i in range(50)]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    for index, job in enumerate(jobs):
        assert [r.data["echo"] for r in job.value] == [{"w": index, "n": n} for n in range(10)]


def test_graceful_server_restart_on_the_same_port(seeded_adapter, make_client):
    adapter = seeded_adapter()
    port = adapter.port
    client = make_client("ws://127.0.0.1:%d/?id=u1" % port, auto_reconnect=True, fast_reconnect_interval=0.05,
                         reconnect_max_interval=0.2)
    rec = Recorder(client)
    assert client.wait_connected(5)
    adapter.close(timeout=1)
    wait_for(lambda: rec.count("error") >= 1, timeout=5)
    seeded_adapter(port=port)
    wait_for(lambda: rec.count("open") == 2, timeout=10)
    names = rec.names()
    assert names[:3] == ["open", "close", "reconnect"] and names[-1] == "open"
    assert rec.events[1][1].code == 1001
    middle = names[3:-1]
    assert middle == ["error", "reconnect"] * (len(middle) // 2)
    assert client.emit_and_wait("say", "back").data["echo"] == "back"


_SERVER_SCRIPT = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import sys
    from crossws_sync import WebSocketCrossServerAdapter
    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
    adapter.on_websocket_event("say", lambda s, payload, cb: cb and cb({"echo": payload, "gen": sys.argv[2]}))
    adapter.serve_forever()
""")


def _spawn_server(port, generation):
    env = dict(os.environ, PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", _SERVER_SCRIPT, str(port), generation], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _accepts(port) or proc.poll() is not None, timeout=20, message="server subprocess")
    assert proc.poll() is None, "server subprocess exited"
    return proc


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_killed_server_restarted_on_the_same_port(make_client):
    port = free_port()
    procs = [_spawn_server(port, "first")]
    try:
        client = make_client("ws://127.0.0.1:%d" % port, fast_reconnect_interval=0.1, fast_reconnect_threshold=3,
                             reconnect_max_interval=0.3, connect_timeout=2)
        rec = Recorder(client)

        def on_close(event):  # the original's documented close handler
            if event.code not in NO_RECONNECT:
                client.reconnect()

        client.on("close", on_close)
        assert client.wait_connected(15)
        assert client.emit_and_wait("say", 1).data == {"echo": 1, "gen": "first"}
        procs[0].kill()  # SIGKILL: no close frame
        procs[0].wait(10)
        wait_for(lambda: rec.count("close") == 1, timeout=5)
        assert rec.first("close").code == 1006 and rec.first("close").was_clean is False
        procs.append(_spawn_server(port, "second"))
        wait_for(lambda: rec.count("open") == 2, timeout=20)
        names = rec.names()
        # the original's schedule: close(1006) -> app reconnect() -> reconnect{1} -> [error -> reconnect{n}]* -> open
        assert names[:3] == ["open", "close", "reconnect"] and names[-1] == "open"
        middle = names[3:-1]
        assert middle == ["error", "reconnect"] * (len(middle) // 2)
        repeats = [arg["repeat"] for name, arg in rec.events if name == "reconnect"]
        assert repeats == list(range(1, len(repeats) + 1))
        assert client.repeat == 0
        assert client.emit_and_wait("say", 2).data == {"echo": 2, "gen": "second"}
    finally:
        for proc in procs:
            terminate_process(proc)


def test_example_client_runs_against_our_server(seeded_adapter):
    adapter = seeded_adapter()
    script = os.path.join(repo_root(), "examples", "single_ws_server", "client.py")
    env = dict(os.environ, PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, script, "--port=%d" % adapter.port, "--id=7", "--duration=9"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = []
        reader = gevent.spawn(lambda: out.append(proc.stdout.read().decode()))
        wait_for(lambda: proc.poll() is not None, timeout=40, interval=0.1, message="example client exit")
        reader.join(5)
    finally:
        terminate_process(proc)
    text = out[0] if out else ""
    assert proc.returncode == 0, text
    for line in ("Connect success", "Received promise response: {'success': True",
                 "Received callback response: {'msg': 'I am a callback for your say event'",
                 "JoinRoom Received callback response: {'msg': 'JoinRoom successfully'}",
                 "Unanswered event: {'success': False", "'error_code': 'CALLBACK_TIMEOUT'",
                 "onClose event: 4001 client manual close"):
        assert line in text, text
    assert ("connection", {"name": "Sam", "id": "7"}) in adapter.log
    assert ("close", 4001, "client manual close") in adapter.log


def test_client_answers_the_server_protocol_pings(seeded_adapter, make_client):
    # The server's sweep terminates (1006) a socket that did not answer the previous ping.
    adapter = seeded_adapter(server_ping_interval=0.05)
    client = make_client("ws://127.0.0.1:%d/?id=u1" % adapter.port)
    rec = Recorder(client)
    assert client.wait_connected(5)
    gevent.sleep(0.4)  # eight sweeps
    assert client.connected and rec.names() == ["open"]
    assert client.emit_and_wait("say", 1).success


def test_big_frames_that_fill_the_socket_and_small_ones_never_interleave(seeded_adapter, make_client):
    # 3 MiB emits from four greenlets overflow the socket buffer: a non-blocking send() takes
    # part of one, the rest is written under the write lock, and meanwhile other greenlets keep
    # emitting small frames; the server must still see every frame whole and each greenlet's
    # frames in order.
    adapter = seeded_adapter(max_message_size=8 << 20)
    seen = []
    adapter.on_websocket_event("big", lambda s, payload, cb: (seen.append(("big", len(payload["blob"]))), cb and cb(True)))
    adapter.on_websocket_event("small", lambda s, payload, cb: (seen.append(("small", payload)), cb and cb(True)))
    client = make_client("ws://127.0.0.1:%d/?id=u1" % adapter.port)
    assert client.wait_connected(5)

    def big(index):
        return [client.emit_and_wait("big", {"i": index, "blob": "x" * (3 << 20)}, callback_timeout=20).success
                for _ in range(3)]

    def small(index):
        return [client.emit_and_wait("small", [index, n], callback_timeout=20).success for n in range(30)]

    jobs = [gevent.spawn(big, i) for i in range(4)] + [gevent.spawn(small, i) for i in range(10)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    assert all(all(job.value) for job in jobs)
    assert sorted(length for kind, length in seen if kind == "big") == [3 << 20] * 12
    for index in range(10):
        assert [payload[1] for kind, payload in seen if kind == "small" and payload[0] == index] == list(range(30))


def test_off_removes_listeners_by_function_by_tag_and_all(seeded_adapter, make_client):
    adapter = seeded_adapter()
    client = make_client("ws://127.0.0.1:%d/?id=u1" % adapter.port)
    seen = []
    by_function = lambda payload: seen.append(("function", payload))  # noqa: E731
    client.on("news", by_function)
    client.on("news", lambda payload: seen.append(("tagged", payload)), tag="t")
    client.on("news", lambda payload: seen.append(("other", payload)))
    client.on("open", lambda *args: seen.append(("open",)))
    wait_for(lambda: adapter.get_socket_instance("u1") is not None)
    adapter.to_socket_id("u1", "news", 1)
    wait_for(lambda: len([s for s in seen if s[0] != "open"]) == 3)
    client.off("news", by_function)
    client.off("news", "t")
    adapter.to_socket_id("u1", "news", 2)
    wait_for(lambda: ("other", 2) in seen)
    assert ("function", 2) not in seen and ("tagged", 2) not in seen
    client.off("news")
    adapter.to_socket_id("u1", "news", 3)
    adapter.to_socket_id("u1", "marker", 0)
    client.on("marker", lambda payload: seen.append(("marker",)))
    gevent.sleep(0.3)
    assert not any(len(s) > 1 and s[1] == 3 for s in seen)


def test_emit_and_wait_right_after_construction_waits_for_the_connection(seeded_adapter, make_client):
    adapter = seeded_adapter()
    client = make_client("ws://127.0.0.1:%d/?id=u1" % adapter.port)
    result = client.emit_and_wait("say", {"msg": "hi"})  # the README's quick start, as written
    assert result.success, result
    client.manual_close()
    started = time.monotonic()
    closed = client.emit_and_wait("say", {"msg": "again"})
    assert closed.error_code == "WS_NOT_OPEN" and time.monotonic() - started < 0.5


def test_emit_and_wait_gives_up_after_callback_timeout_when_nothing_answers(make_client):
    port = free_port()  # nobody listens: every attempt fails, reconnects keep being scheduled
    client = make_client("ws://127.0.0.1:%d/" % port, fast_reconnect_interval=0.1)
    started = time.monotonic()
    result = client.emit_and_wait("say", {"msg": "hi"}, callback_timeout=0.5)  # waits in the offline queue
    assert result.error_code == "CALLBACK_TIMEOUT"
    assert 0.45 < time.monotonic() - started < 2.0
    assert client.queued == 0


def test_the_client_sends_and_receives_raw_text_and_binary_messages(seeded_adapter, make_client):
    adapter = seeded_adapter()
    adapter.on_websocket_event("message", lambda socket_, data: socket_.send(data) if isinstance(data, bytes) else None)
    adapter.on_websocket_event("raw", lambda socket_, payload, callback: socket_.send("raw text back"))
    client = make_client("ws://127.0.0.1:%d/?id=u1" % adapter.port)
    got = []
    client.on("message", got.append)
    assert client.wait_connected(5)
    assert client.send(b"\x00\xff binary")
    wait_for(lambda: b"\x00\xff binary" in got)
    assert client.send('{"event":"raw","payload":1}')  # raw text is just text: here an event
    wait_for(lambda: "raw text back" in got)
    assert [type(x) for x in got if x in (b"\x00\xff binary", "raw text back")] == [bytes, str]
    with pytest.raises(TypeError):
        client.send(42)
    client.manual_close()
    assert client.send("late") is False
