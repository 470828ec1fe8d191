"""crossws_sync.adapter (the facade) in single-server mode over real sockets: wire frames, handlers, rooms, auth, limits, bad input."""
from __future__ import annotations

import json
import socket
import struct

import gevent
import pytest
import websocket  # websocket-client: an independent, real client implementation

from crossws_sync import Reject

from crossws_sync.wire import frames
from rawclient import HandshakeRejected, RawClient
from support import counting_sends, wait_for


def _identify(adapter):
    """The original README's connection handler: map ?id=, else close 4011."""

    def on_connection(socket_, request):
        params = adapter.parse_ws_request_params(request)["params"]
        if params.get("id"):
            socket_.player_id = params["id"]
            adapter.set_user_socket(params["id"], socket_)
        else:
            socket_.close(4011, "Auth failure")

    adapter.on_websocket_event("connection", on_connection)


def test_ack_push_and_heartbeat_frames_are_the_originals(make_adapter):
    adapter = make_adapter()
    _identify(adapter)
    seen = []
    adapter.on_websocket_event("say", lambda s, payload, cb: (seen.append(payload), cb and cb({"ok": True, "echo": payload})))
    adapter.start()
    client = RawClient(adapter.port, "/?id=u1")
    client.send_text('{"event":"say","payload":{"msg":"with cb"},"callbackId":"mwwqqd9p-zx2w-1"}')
    assert client.recv_text() == '{"payload":{"ok":true,"echo":{"msg":"with cb"}},"callbackId":"mwwqqd9p-zx2w-1"}'
    client.send_text('{"event":"say","payload":{"msg":"hi"}}')
    wait_for(lambda: len(seen) == 2)
    client.send_text("")
    assert client.recv_text() == ""
    adapter.to_socket_id("u1", "hello", {"a": 1})
    assert client.recv_text() == '{"event":"hello","payload":{"a":1}}'


def test_callback_without_data_omits_payload_and_callback_is_none_without_id(make_adapter):
    adapter = make_adapter()
    callbacks = []

    def on_ping(socket_, payload, callback):
        callbacks.append(callback)
        if callback:
            callback()

    adapter.on_websocket_event("ping2", on_ping)
    adapter.start()
    client = RawClient(adapter.port)
    client.send_json({"event": "ping2", "payload": 1})
    client.send_json({"event": "ping2", "payload": 1, "callbackId": "x" * 65})  # too long: no ack
    client.send_json({"event": "ping2", "payload": 1, "callbackId": "c1"})
    assert client.recv_text() == '{"callbackId":"c1"}'
    assert callbacks[0] is None and callbacks[1] is None and callbacks[2] is not None


def test_heartbeat_str_client_ping_and_message_events(make_adapter):
    adapter = make_adapter(heartbeat_str="hb")
    events = []
    adapter.on_websocket_event("client-ping", lambda s: events.append("client-ping"))
    adapter.on_websocket_event("message", lambda s, text: events.append(("message", text)))
    adapter.start()
    client = RawClient(adapter.port)
    client.send_text("hb")
    assert client.recv_text() == "hb"
    wait_for(lambda: events == ["client-ping", ("message", "hb")])


def test_close_code_and_reason_reach_a_real_client_exactly(make_adapter):
    adapter = make_adapter()
    _identify(adapter)
    closes = []
    adapter.on_websocket_event("close", lambda s, req, code, reason: closes.append(code))
    adapter.start()
    client = RawClient(adapter.port, "/")  # no id: the handler closes with 4011
    assert client.recv_close() == (4011, "Auth failure")
    client.close(4011)
    wait_for(lambda: closes == [4011])
    # and websocket-client, an independent implementation, sees the same
    ws = websocket.WebSocket()
    ws.connect("ws://127.0.0.1:%d/" % adapter.port)
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert struct.unpack("!H", frame.data[:2])[0] == 4011 and frame.data[2:] == b"Auth failure"


def test_system_events_cannot_be_spoofed_and_proto_names_are_harmless(make_adapter):
    adapter = make_adapter()
    connections, closes, said = [], [], []
    adapter.on_websocket_event("connection", lambda s, req: connections.append(s))
    adapter.on_websocket_event("close", lambda s, req, code, reason: closes.append(s))
    adapter.on_websocket_event("say", lambda s, payload, cb: said.append(payload))
    adapter.start()
    client = RawClient(adapter.port)
    for name in ("connection", "close", "error", "pong", "message", "client-ping", "listening",
                 "constructor", "__proto__", "toString", "hasOwnProperty", "__class__"):
        client.send_json({"event": name, "payload": {"url": "/?id=victim", "headers": {}}})
    client.send_json({"event": "say", "payload": "still alive"})
    wait_for(lambda: said == ["still alive"])
    assert len(connections) == 1 and closes == []


def test_bad_input_keeps_the_connection_and_others_working(make_adapter):
    adapter = make_adapter()
    errors, said = [], []
    adapter.on_websocket_event("error", lambda s, req, err: errors.append(err))

    def say(socket_, payload, callback):
        if payload == "boom":
            raise RuntimeError("handler bug")
        said.append(payload)
        if callback:
            callback(payload)

    adapter.on_websocket_event("say", say)
    adapter.start()
    bad, good = RawClient(adapter.port), RawClient(adapter.port)
    for text in ("not json", "[1,2]", "42", '"str"', "null", "{}", '{"event":""}', '{"event":5}',
                 '{"event":"nope","callbackId":"u1"}', '{"event":"say","payload":"boom","callbackId":"b1"}'):
        bad.send_text(text)
    bad.send_frame(frames.OP_BINARY, b'{"event":"say","payload":"from binary"}')
    bad.send_frame(frames.OP_BINARY, b"\xff\xfe not text: only the message event gets it")
    bad.send_json({"event": "say", "payload": "after", "callbackId": "a1"})
    assert bad.recv_json() == {"payload": "after", "callbackId": "a1"}
    bad.send_frame(frames.OP_TEXT, b"\xff\xfe invalid utf-8")  # RFC 6455 §8.1: fails the connection
    assert bad.recv_close()[0] == 1007
    good.send_json({"event": "say", "payload": "other", "callbackId": "g1"})
    assert good.recv_json() == {"payload": "other", "callbackId": "g1"}
    assert said == ["from binary", "after", "other"]
    stats = adapter.get_wss().stats
    assert stats["bad_frames"] >= 7 and stats["unknown_events"] == 1 and stats["handler_errors"] == 1
    assert any("UTF-8" in str(err) for err in errors)


def test_unknown_event_ack_option_answers_with_an_error(make_adapter):
    adapter = make_adapter(unknown_event_ack=True)
    adapter.start()
    client = RawClient(adapter.port)
    client.send_json({"event": "nope", "payload": 1, "callbackId": "q1"})
    assert client.recv_json() == {"payload": {"error": "unknown event", "errorCode": "UNKNOWN_EVENT"}, "callbackId": "q1"}


def test_oversized_message_closes_1009_without_waiting_for_the_payload(make_adapter):
    adapter = make_adapter(max_message_size=1024)
    adapter.start()
    client = RawClient(adapter.port)
    # announce 2 MiB and send only the header: the server must refuse at once
    client.send_raw(bytes((0x81, 0x80 | 127)) + struct.pack("!Q", 2 << 20) + b"mask")
    assert client.recv_close(timeout=3)[0] == 1009
    # fragments adding up past the limit are refused too
    other = RawClient(adapter.port)
    other.send_frame(frames.OP_TEXT, b"a" * 600, fin=False)
    other.send_frame(frames.OP_CONT, b"a" * 600, fin=True)
    assert other.recv_close(timeout=3)[0] == 1009


def test_fragmented_message_with_interleaved_ping_is_reassembled(make_adapter):
    adapter = make_adapter()
    adapter.on_websocket_event("say", lambda s, p, cb: cb(p))
    adapter.start()
    client = RawClient(adapter.port)
    text = json.dumps({"event": "say", "payload": "x" * 300, "callbackId": "f1"}).encode()
    client.send_frame(frames.OP_TEXT, text[:100], fin=False)
    client.send_frame(frames.OP_PING, b"hi")
    client.send_frame(frames.OP_CONT, text[100:200], fin=False)
    client.send_frame(frames.OP_CONT, text[200:], fin=True)
    assert client.recv_frame() == (frames.OP_PONG, b"hi")
    assert client.recv_json()["payload"] == "x" * 300


def test_client_close_codes_1012_to_1014_are_accepted_and_echoed(make_adapter):
    adapter = make_adapter()
    closes = []
    adapter.on_websocket_event("close", lambda s, req, code, reason: closes.append((code, reason)))
    adapter.start()
    for code in (1012, 1013, 1014, 4000):
        client = RawClient(adapter.port)
        client.close(code, "bye")
        assert client.recv_close()[0] == code
    wait_for(lambda: [c for c, _ in closes] == [1012, 1013, 1014, 4000])


def test_many_greenlets_sending_to_one_connection_never_corrupt_the_stream(make_adapter):
    adapter = make_adapter(max_outbox_bytes=64 << 20)
    _identify(adapter)
    adapter.start()
    client = RawClient(adapter.port, "/?id=u1")
    wait_for(lambda: adapter.get_socket_instance("u1"))
    big = "y" * 200_000

    def sender(index):
        for n in range(4):
            adapter.to_socket_id("u1", "big", {"i": index, "n": n, "blob": big})

    gevent.joinall([gevent.spawn(sender, i) for i in range(8)], timeout=20)
    received = [client.recv_json(timeout=10) for _ in range(32)]
    assert sorted((m["payload"]["i"], m["payload"]["n"]) for m in received) == [(i, n) for i in range(8) for n in range(4)]
    assert all(m["payload"]["blob"] == big for m in received)


def test_slow_consumer_is_dropped_and_broadcast_reaches_the_others(make_adapter):
    adapter = make_adapter(max_outbox_bytes=256 * 1024)
    _identify(adapter)
    closes = []
    adapter.on_websocket_event("close", lambda s, req, code, reason: closes.append((s.player_id, code)))
    adapter.start()
    slow = RawClient(adapter.port, "/?id=slow")
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    fast = [RawClient(adapter.port, "/?id=f%d" % i) for i in range(5)]
    wait_for(lambda: adapter.get_socket_client_count() == 6)
    payload = {"blob": "z" * 20000}  # 400 x 20 kB = 8 MB: more than any kernel buffer holds
    received = {i: 0 for i in range(5)}

    def reader(i):
        while received[i] < 400:
            fast[i].recv_text(timeout=10)
            received[i] += 1

    readers = [gevent.spawn(reader, i) for i in range(5)]
    for n in range(400):
        adapter.broadcast("tick", payload)
        gevent.sleep(0.002)  # readers that read keep up; the one that stopped reading cannot
    gevent.joinall(readers, timeout=30)
    assert all(count == 400 for count in received.values())
    wait_for(lambda: ("slow", 1008) in closes, timeout=10)
    assert adapter.get_wss().clients and all(c.open for c in adapter.get_wss().clients)


def test_auth_hook_rejects_before_upgrade_and_attaches_identity(make_adapter):
    def authenticate(request):
        token = request.headers.get("x-token") or adapter.parse_ws_request_params(request)["params"].get("token")
        if token == "good":
            return {"user": "alice"}
        if token == "banned":
            raise Reject(403, "banned")
        return False

    adapter = make_adapter(authenticate=authenticate)
    identities = []
    adapter.on_websocket_event("connection", lambda s, req: identities.append(s.identity))
    adapter.start()
    with pytest.raises(HandshakeRejected) as rejected:
        RawClient(adapter.port, "/?token=bad")
    assert rejected.value.status == 401
    with pytest.raises(HandshakeRejected) as rejected:
        RawClient(adapter.port, "/", headers={"X-Token": "banned"})
    assert rejected.value.status == 403 and rejected.value.body == b"banned"
    accepted = RawClient(adapter.port, "/?token=good")
    wait_for(lambda: identities == [{"user": "alice"}])
    assert adapter.get_wss().stats["rejected_upgrades"] == 2


def test_origin_check_and_max_connections(make_adapter):
    adapter = make_adapter(allowed_origins=["http://good.example"], max_connections=2)
    adapter.start()
    with pytest.raises(HandshakeRejected) as rejected:
        RawClient(adapter.port, headers={"Origin": "http://evil.example"})
    assert rejected.value.status == 403
    kept = [RawClient(adapter.port, headers={"Origin": "http://good.example"}), RawClient(adapter.port)]
    wait_for(lambda: len(adapter.get_wss().clients) == 2)
    with pytest.raises(HandshakeRejected) as rejected:
        RawClient(adapter.port)
    assert rejected.value.status == 503
    assert len(kept) == 2


def test_identify_timeout_closes_anonymous_connections(make_adapter):
    adapter = make_adapter(identify_timeout=0.3)
    _identify(adapter)
    adapter.start()
    named = RawClient(adapter.port, "/?id=n1")
    anonymous = RawClient(adapter.port, "/?x=1")
    # the handler closes id-less sockets itself; use one that identifies late instead
    assert anonymous.recv_close()[0] == 4011
    adapter.off_websocket_event("connection")
    late = RawClient(adapter.port, "/?id=late")
    assert late.recv_close(timeout=3) == (4011, "identify timeout")
    named.send_text("")
    assert named.recv_text() == ""


def test_rate_limit_drops_excess_messages(make_adapter):
    adapter = make_adapter(max_messages_per_second=5, rate_limit_burst=5)
    said = []
    adapter.on_websocket_event("say", lambda s, p, cb: said.append(p))
    adapter.start()
    client = RawClient(adapter.port)
    for i in range(50):
        client.send_json({"event": "say", "payload": i})
    wait_for(lambda: adapter.get_wss().stats["rate_limited"] >= 40)
    assert 5 <= len(said) <= 7


def test_server_ping_sweep_terminates_silent_peers(make_adapter):
    adapter = make_adapter(server_ping_interval=0.2)
    closes, pongs = [], []
    adapter.on_websocket_event("close", lambda s, req, code, reason: closes.append(code))
    adapter.on_websocket_event("pong", lambda s, req, data: pongs.append(data))
    adapter.start()
    silent = RawClient(adapter.port)  # never answers pings
    polite = RawClient(adapter.port)

    def answer():
        while True:
            opcode, payload = polite.recv_frame(timeout=5)
            if opcode == frames.OP_PING:
                polite.send_frame(frames.OP_PONG, payload)

    responder = gevent.spawn(answer)
    wait_for(lambda: closes == [1006], timeout=3)
    gevent.sleep(0.5)
    assert len(adapter.get_wss().clients) == 1 and pongs
    responder.kill()
    del silent


def test_enter_background_time_closes_the_socket(make_adapter):
    adapter = make_adapter(server_ping_interval=0.1, enter_background_close_time=0.2)
    adapter.on_websocket_event("bg", lambda s, p, cb: setattr(s, "enter_background_time", __import__("time").time()))
    adapter.start()
    client = RawClient(adapter.port)
    client.send_json({"event": "bg", "payload": 1})
    wait_for(lambda: not adapter.get_wss().clients, timeout=3)


def test_rooms_and_broadcasts_reach_exactly_the_members(make_adapter):
    adapter = make_adapter()
    _identify(adapter)
    adapter.start()
    clients = {uid: RawClient(adapter.port, "/?id=" + uid) for uid in ("a", "b", "c")}
    wait_for(lambda: adapter.get_socket_client_count() == 3)
    adapter.join_room("chat", "r1", "a")
    adapter.join_room("chat", "r1", "b")
    adapter.join_room("chat", "r10", "c")
    assert adapter.get_socket_count_in_room("chat", "r1") == 2
    assert adapter.get_socket_count_in_room("chat", "r1", exact_match=False) == 3
    assert adapter.get_room_ids("chat") == ["r1", "r10"]
    assert adapter.broadcast_to_room("chat", "r1", "roomSay", {"c": 3}, exclude_socket_ids=["b"]) == 1
    assert clients["a"].recv_json() == {"event": "roomSay", "payload": {"c": 3}}
    assert adapter.to_socket_ids(["b", "c", "zzz"], "multi", 1) == 2
    assert clients["b"].recv_json() == {"event": "multi", "payload": 1}
    assert clients["c"].recv_json() == {"event": "multi", "payload": 1}
    adapter.broadcast_to_room("chat", "r1", "bye", None, roomDstroy=True)
    assert adapter.get_room_ids("chat") == ["r10"]
    joined = adapter.get_joined_rooms("c")
    joined["chat"].add("tampered")
    assert adapter.get_joined_rooms("c") == {"chat": {"r10"}}


def test_late_close_of_an_old_socket_keeps_the_new_mapping(make_adapter):
    adapter = make_adapter()
    _identify(adapter)
    adapter.on_websocket_event("close", lambda s, req, code, reason: adapter.remove_user_socket(s.player_id))
    adapter.start()
    old = RawClient(adapter.port, "/?id=u1")
    wait_for(lambda: adapter.get_socket_instance("u1"))
    old_conn = adapter.get_socket_instance("u1")
    new = RawClient(adapter.port, "/?id=u1")
    wait_for(lambda: adapter.get_socket_instance("u1") is not old_conn)
    adapter.join_room("g", "1", "u1")
    old.abort()
    wait_for(lambda: old_conn.closed)
    gevent.sleep(0.05)
    assert adapter.get_socket_instance("u1") is not None and adapter.is_joined_room("u1", "g", "1")
    adapter.to_socket_id("u1", "hi", 1)
    assert new.recv_json() == {"event": "hi", "payload": 1}


def test_auto_cleanup_removes_mapping_and_rooms(make_adapter):
    adapter = make_adapter(auto_cleanup=True)
    _identify(adapter)
    adapter.start()
    client = RawClient(adapter.port, "/?id=u9")
    wait_for(lambda: adapter.get_socket_instance("u9"))
    adapter.join_room("g", "1", "u9")
    client.close()
    wait_for(lambda: adapter.get_socket_instance("u9") is None)
    assert adapter.get_room_ids("g") == []


def test_duplicate_login_close_old_policy(make_adapter):
    adapter = make_adapter(duplicate_login="close_old")
    _identify(adapter)
    adapter.start()
    first = RawClient(adapter.port, "/?id=dup")
    wait_for(lambda: adapter.get_socket_instance("dup"))
    second = RawClient(adapter.port, "/?id=dup")
    assert first.recv_close() == (4012, "logged in elsewhere")
    second.send_text("")
    assert second.recv_text() == ""


def test_once_listener_does_not_remove_persistent_registration(make_adapter):
    adapter = make_adapter()
    calls = []

    def listener(s, p, cb):
        calls.append(p)

    adapter.on_websocket_event("e", listener)
    adapter.once_websocket_event("e", listener)
    adapter.start()
    client = RawClient(adapter.port)
    client.send_json({"event": "e", "payload": 1})
    client.send_json({"event": "e", "payload": 2})
    wait_for(lambda: calls == [1, 1, 2])


def test_graceful_close_sends_1001_to_every_client(make_adapter):
    adapter = make_adapter()
    events = []
    adapter.on_websocket_event("ws-server-close", lambda: events.append("ws-server-close"))
    adapter.start()
    clients = [RawClient(adapter.port) for _ in range(5)]
    wait_for(lambda: len(adapter.get_wss().clients) == 5)
    closer = gevent.spawn(adapter.close)
    assert [c.recv_close()[0] for c in clients] == [1001] * 5
    for c in clients:
        c.close(1001)
    closer.join(5)
    assert events == ["ws-server-close"]


def test_listening_and_server_error_events(make_adapter):
    first = make_adapter()
    listening = []
    first.on_websocket_event("listening", lambda *args: listening.append(args))
    first.start()
    assert listening == [()]
    clash = make_adapter(ws_options={"port": first.port})
    errors = []
    clash.on_websocket_event("server-error", lambda *args: errors.append(args))
    from crossws_sync import ConfigError

    with pytest.raises(ConfigError, match="Failed to start WebSocket server"):
        clash.start()
    assert len(errors) == 1 and len(errors[0]) == 1 and isinstance(errors[0][0], OSError)


def test_bad_frames_are_logged_rate_limited_per_connection(make_adapter, caplog):
    adapter = make_adapter()
    adapter.start()
    client = RawClient(adapter.port)
    caplog.set_level("WARNING", logger="crossws_sync.server")
    for _ in range(150):
        client.send_text("not json")
    client.send_text("")
    assert client.recv_text() == ""
    wait_for(lambda: adapter.get_wss().stats["bad_frames"] == 150)
    logged = [r for r in caplog.records if "bad frame" in r.getMessage()]
    assert len(logged) == 3  # the 1st, 10th and 100th


def _client_with_counted_sends(adapter):
    """Start ``adapter``, connect user u1; return (client, its connection, the sizes of its send() calls)."""
    _identify(adapter)
    adapter.start()
    client = RawClient(adapter.port, "/?id=u1")
    wait_for(lambda: adapter.get_socket_instance("u1"))
    conn = adapter.get_socket_instance("u1")
    calls = []
    conn._raw_send = counting_sends(conn._raw_send, calls)
    return client, conn, calls


def test_frames_to_one_client_in_one_loop_iteration_share_one_send(make_adapter):
    adapter = make_adapter()
    client, _conn, calls = _client_with_counted_sends(adapter)
    for n in range(200):  # no yield in between: one loop iteration
        adapter.broadcast("tick", n)
    assert [client.recv_json()["payload"] for _ in range(200)] == list(range(200))
    assert len(calls) == 1, calls  # all 200 frames coalesced into one send()


def test_acks_of_requests_read_together_leave_in_one_send_and_in_order(make_adapter):
    adapter = make_adapter()
    adapter.on_websocket_event("echo", lambda socket_, payload, callback: callback(payload))
    client, conn, calls = _client_with_counted_sends(adapter)
    requests = [frames.encode_text(json.dumps({"event": "echo", "payload": n, "callbackId": "c%d" % n}), mask=True)
                for n in range(5)]
    client.send_raw(b"".join(requests))  # one TCP write: one read, one loop iteration
    assert [client.recv_json() for _ in range(5)] == [{"payload": n, "callbackId": "c%d" % n} for n in range(5)]
    assert len(calls) == 1, calls
    assert conn.buffered_amount == 0


# TLS (wss://) served by the adapter itself ----------------------------------------------------


def test_wss_served_by_the_adapter_carries_acks_pushes_and_bursts(make_adapter, make_client, tls_files):
    import gevent.ssl

    cert, key = tls_files
    adapter = make_adapter(ws_options={"certfile": cert, "keyfile": key})
    _identify(adapter)
    adapter.on_websocket_event("say", lambda s, payload, cb: cb and cb({"echo": payload}))
    adapter.start()
    context = gevent.ssl.create_default_context(cafile=cert)
    client = make_client("wss://127.0.0.1:%d/?id=tls-user" % adapter.port, ssl_context=context)
    pushed = []
    client.on("news", lambda payload: pushed.append(payload))
    assert client.wait_connected(5)
    assert client.emit_and_wait("say", {"tls": True}).data == {"echo": {"tls": True}}
    wait_for(lambda: adapter.get_socket_instance("tls-user") is not None, message="user mapped")
    for index in range(300):  # one handler burst: coalesced, written through TLS by the flusher
        adapter.to_socket_id("tls-user", "news", {"i": index})
    wait_for(lambda: len(pushed) == 300, message="every push over TLS")
    assert pushed == [{"i": index} for index in range(300)]
    assert client.emit_and_wait("say", "after").data == {"echo": "after"}


def test_binary_messages_reach_the_message_event_as_bytes_and_handlers_can_send_bytes(make_adapter):
    adapter = make_adapter()
    got = []

    def on_message(socket_, data):
        got.append(data)
        if isinstance(data, bytes) and data.startswith(b"\x00echo"):
            socket_.send(data[::-1])  # a binary frame back

    adapter.on_websocket_event("message", on_message)
    adapter.on_websocket_event("say", lambda s, payload, callback: callback and callback(payload))
    adapter.start()
    client = RawClient(adapter.port)
    client.send_frame(frames.OP_BINARY, b"\x00echo\xff\xfe")
    assert client.recv_frame() == (frames.OP_BINARY, b"\xfe\xffohce\x00")
    client.send_frame(frames.OP_BINARY, b'{"event":"say","payload":"json in binary","callbackId":"b1"}')
    assert client.recv_json() == {"payload": "json in binary", "callbackId": "b1"}  # the original's toString()
    client.send_text('{"event":"say","payload":"text","callbackId":"t1"}')
    assert client.recv_json() == {"payload": "text", "callbackId": "t1"}
    wait_for(lambda: len(got) == 3)
    assert got == [b"\x00echo\xff\xfe", b'{"event":"say","payload":"json in binary","callbackId":"b1"}',
                   '{"event":"say","payload":"text","callbackId":"t1"}']
    assert [type(x) for x in got] == [bytes, bytes, str]


def test_a_fragmented_text_message_with_invalid_utf8_fails_the_connection_early(make_adapter):
    adapter = make_adapter()
    adapter.start()
    client = RawClient(adapter.port)
    client.send_frame(frames.OP_TEXT, b'{"event":"say","payload":"', fin=False)
    client.send_frame(frames.OP_CONT, b"\xc3\x28", fin=False)  # invalid, and the message is not over
    assert client.recv_close()[0] == 1007
