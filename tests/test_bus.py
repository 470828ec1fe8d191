"""CrossServerBus against real redis-server processes: events, RPC, codecs, channels, nodes."""
import gc
import logging
import os
import subprocess
import sys
import textwrap

import gevent
import gevent.event
import msgpack
import pytest

from bus_fixtures import Spy, collect, make_bus  # noqa: F401 - make_bus is a fixture
from crossws_sync.wire import envelope as env
from crossws_sync.bus.bus import CrossServerBus
from crossws_sync.errors import ConfigError, RedisUnavailableError
from support import repo_root, terminate_process, wait_for


def answer_with_name(bus):
    """Register an 'ask' listener that replies with the bus's name and the payload."""
    bus.on_cross_server_event("ask", lambda data, cb: cb({"from": bus.server_name, "echo": data["payload"]}))


# Events ------------------------------------------------------------------------------------------

def test_broadcast_reaches_every_server_once_and_listener_gets_the_envelope(redis_server, make_bus):
    buses = [make_bus(name, [redis_server.config]) for name in ("A", "B", "C")]
    seen = {bus.server_name: [] for bus in buses}
    for bus in buses:
        bus.on_cross_server_event("news", lambda data, cb, name=bus.server_name: seen[name].append((data, cb)))
    assert buses[0].emit_cross_server("news", {"n": 1}) is None
    wait_for(lambda: all(seen.values()), message="every server got the broadcast")
    gevent.sleep(0.1)
    assert {name: len(items) for name, items in seen.items()} == {"A": 1, "B": 1, "C": 1}
    data, callback = seen["B"][0]
    assert data == {"event": "news", "senderServer": "A", "payload": {"n": 1}, "targetServer": []}
    assert callback is None


def test_targeted_event_reaches_only_its_targets(redis_server, make_bus):
    buses = {name: make_bus(name, [redis_server.config]) for name in ("A", "B", "C", "D")}
    seen = []
    for bus in buses.values():
        bus.on_cross_server_event("hi", lambda data, cb, name=bus.server_name: seen.append(name))
    buses["A"].emit_cross_server("hi", "x", target_server=["B", "D"])
    buses["A"].emit_cross_server("hi", "y", target_server="C")
    wait_for(lambda: len(seen) >= 3)
    gevent.sleep(0.1)
    assert sorted(seen) == ["B", "C", "D"]


def test_except_self_skips_the_sender(redis_server, make_bus):
    a, b = make_bus("A", [redis_server.config]), make_bus("B", [redis_server.config])
    seen = []
    for bus in (a, b):
        bus.on_cross_server_event("e", lambda data, cb, name=bus.server_name: seen.append(name))
    a.emit_cross_server("e", 1, except_self=True)
    wait_for(lambda: seen == ["B"])
    gevent.sleep(0.1)
    assert seen == ["B"]


def test_local_first_runs_synchronously_and_self_only_publishes_nothing(redis_server, make_bus):
    a = make_bus("A", [redis_server.config])
    spy = Spy(redis_server.port, a.bridge_channel)
    try:
        seen = []
        a.on_cross_server_event("self", lambda data, cb: (seen.append(data["payload"]), cb("pong")))
        results, callback = collect()
        a.emit_cross_server("self", "ping", callback, target_server="A")
        assert seen == ["ping"]  # before emit returned
        assert [r.success for r in results] == [True]
        assert results[0].data["payload"] == "pong" and results[0].remaining_responses == 0
        assert a.emit_cross_server_and_wait("self", "p2", target_server=["A"]).responses["A"]["payload"] == "pong"
        gevent.sleep(0.2)
        assert spy.on(a.bridge_channel) == [] and a.stats["published"] == 0
    finally:
        spy.close()


def test_once_and_off_by_function_and_tag(redis_server, make_bus):
    a = make_bus("A", [redis_server.config])
    seen = []
    a.once_cross_server_event("e", lambda data, cb: seen.append("once"))
    a.on_cross_server_event("e", lambda data, cb: seen.append("tagged"), tag="t")

    def keep(data, cb):
        seen.append("keep")

    a.on_cross_server_event("e", keep)
    a.emit_cross_server("e", 1, target_server="A")
    a.emit_cross_server("e", 2, target_server="A")
    assert seen == ["once", "tagged", "keep", "tagged", "keep"]
    a.off_cross_server_event("e", "t")
    a.emit_cross_server("e", 3, target_server="A")
    a.off_cross_server_event("e", keep)
    a.emit_cross_server("e", 4, target_server="A")
    assert seen[5:] == ["keep"]
    with pytest.raises(TypeError):
        a.on_cross_server_event("", keep)
    with pytest.raises(TypeError):
        a.on_cross_server_event("e", "not callable")


def test_emit_validates_its_arguments(redis_server, make_bus):
    a = make_bus("A", [redis_server.config])
    with pytest.raises(TypeError):
        a.emit_cross_server("", 1)
    with pytest.raises(ConfigError, match="cannot be null"):
        a.emit_cross_server("e", None)
    assert a.emit_cross_server_and_wait("", 1) == {"success": False, "message": "event must be a non-empty string"}
    result = a.emit_cross_server_and_wait("e", None)
    assert result.success is False and "cannot be null" in result.message


# RPC ---------------------------------------------------------------------------------------------

def test_callback_with_one_targeted_reply(redis_server, make_bus):
    a, b = make_bus("A", [redis_server.config]), make_bus("B", [redis_server.config])
    answer_with_name(b)
    results, callback = collect()
    callback_id = a.emit_cross_server("ask", {"q": 1}, callback, target_server="B", timeout=1)
    assert callback_id.startswith("A-")
    wait_for(lambda: results)
    gevent.sleep(0.2)
    assert len(results) == 1
    result = results[0]
    assert result.success is True and result.remaining_responses == 0
    assert result.data == {"event": "_Cs_Cb_", "senderServer": "B", "targetServer": [], "callbackId": callback_id,
                           "isCallback": True, "payload": {"from": "B", "echo": {"q": 1}}}
    assert a.pending_callback_count == 0


def test_callback_with_three_expected_responses_and_partial_timeout(redis_server, make_bus):
    buses = [make_bus(name, [redis_server.config]) for name in ("A", "B", "C", "D")]
    for bus in buses[1:3]:
        answer_with_name(bus)  # D stays silent
    results, callback = collect()
    buses[0].emit_cross_server("ask", 1, callback, expected_responses=3, except_self=True, timeout=0.6)
    wait_for(lambda: len(results) == 3, timeout=3)
    assert [r.success for r in results] == [True, True, False]
    assert sorted(r.data["senderServer"] for r in results[:2]) == ["B", "C"]
    assert [r.remaining_responses for r in results[:2]] == [2, 1]
    timeout = results[2]
    assert timeout.error == "Cross-server callback timed out." and timeout.unresponded_count == 1
    assert timeout.callback_id == results[0].data["callbackId"]


def test_promise_with_one_and_three_responses(redis_server, make_bus):
    buses = [make_bus(name, [redis_server.config]) for name in ("A", "B", "C", "D")]
    for bus in buses:
        answer_with_name(bus)
    one = buses[0].emit_cross_server_with_promise("ask", "x", target_server="C").get(timeout=5)
    assert one.success is True and list(one.responses) == ["C"]
    assert one.responses["C"]["payload"] == {"from": "C", "echo": "x"}
    three = buses[0].emit_cross_server_and_wait("ask", "y", expected_responses=3, except_self=True)
    assert three.success is True and sorted(three.responses) == ["B", "C", "D"]


def test_promise_timeout_keeps_partial_responses_and_names_the_silent(redis_server, make_bus):
    a, b, _ = (make_bus(name, [redis_server.config]) for name in ("A", "B", "C"))
    answer_with_name(b)
    result = a.emit_cross_server_and_wait("ask", 1, target_server=["B", "C"], timeout=0.5)
    assert result.success is False and result.message == "Cross-server callback timed out."
    assert list(result.responses) == ["B"] and result.unresponded_count == 1
    assert result.unresponded_servers == ["C"]


def test_listener_may_block_on_a_nested_rpc(redis_server, make_bus):
    a, b = make_bus("A", [redis_server.config]), make_bus("B", [redis_server.config])
    a.on_cross_server_event("inner", lambda data, cb: cb("inner-ok"))

    def outer(data, cb):
        nested = b.emit_cross_server_and_wait("inner", 1, target_server="A", timeout=2)
        cb(nested.responses["A"]["payload"] if nested.success else "nested failed")

    b.on_cross_server_event("outer", outer)
    result = a.emit_cross_server_and_wait("outer", 1, target_server="B", timeout=3)
    assert result.success and result.responses["B"]["payload"] == "inner-ok"


def test_delete_callback_stops_replies_and_the_timer(redis_server, make_bus):
    a, b = make_bus("A", [redis_server.config]), make_bus("B", [redis_server.config])
    release = gevent.event.Event()
    b.on_cross_server_event("slow", lambda data, cb: (release.wait(3), cb("late")))
    results, callback = collect()
    callback_id = a.emit_cross_server("slow", 1, callback, target_server="B", timeout=0.3)
    assert a.delete_cross_server_callback(callback_id) is True
    assert a.delete_cross_server_callback(callback_id) is False
    gevent.sleep(0.5)  # past the timeout: nothing may fire
    release.set()
    wait_for(lambda: a.stats["late_replies"] == 1)
    assert results == []
    promise = a.emit_cross_server_with_promise("slow", 2, target_server="B", timeout=5)
    wait_for(lambda: a.pending_callback_count == 1)
    [pending_id] = list(a._rpc.calls)
    a.delete_cross_server_callback(pending_id)
    assert promise.get(timeout=1).message == "Cross-server callback deleted."


def test_replies_between_our_nodes_go_to_the_requester_only(redis_server, make_bus):
    a, b, c = (make_bus(name, [redis_server.config]) for name in ("A", "B", "C"))
    answer_with_name(b)
    spy = Spy(redis_server.port, a.bridge_channel, a.node_channel, c.node_channel)
    try:
        assert a.emit_cross_server_and_wait("ask", 1, target_server="B").success
        wait_for(lambda: spy.on(a.node_channel))
        [request] = [a.codec.decode(raw) for raw in spy.on(a.bridge_channel)]
        assert request["data"]["replyTo"] == "csbp:node:A"
        [reply] = [a.codec.decode(raw) for raw in spy.on(a.node_channel)]
        assert reply["data"]["senderServer"] == "B" and reply["data"]["isCallback"] is True
        assert spy.on(c.node_channel) == [] and c.stats["replies"] == c.stats["late_replies"] == 0
    finally:
        spy.close()


# Interoperability with original nodes (wire level) ------------------------------------------------

def test_original_style_request_gets_an_original_style_reply_on_the_bridge(redis_server, make_bus):
    for codec in (env.EnvelopeCodec("json", compress_threshold=None), env.EnvelopeCodec("msgpack", compress_threshold=None)):
        py = make_bus("py-%s" % codec.codec, [redis_server.config], enable_redis_data_compression=codec.codec == "msgpack")
        answer_with_name(py)
        spy = Spy(redis_server.port, "csbp:server_bridge")
        try:
            request = env.bridge_request("ask", "nodeJS", {"q": 1}, [py.server_name], "nodeJS-mwwqqdvs-2sq4-1")
            spy.client.publish("csbp:server_bridge", codec.encode(request))
            wait_for(lambda: len(spy.on("csbp:server_bridge")) == 2)
            raw = spy.on("csbp:server_bridge")[1]
            expected = env.bridge_reply(py.server_name, "nodeJS-mwwqqdvs-2sq4-1", {"from": py.server_name, "echo": {"q": 1}})
            assert raw == codec.encode(expected)  # byte for byte what an original node sends
        finally:
            spy.close()


def test_original_style_reply_resolves_our_callback(redis_server, make_bus):
    py = make_bus("py", [redis_server.config], enable_redis_data_compression=True)
    spy = Spy(redis_server.port, "csbp:server_bridge")
    msgpack_codec = env.EnvelopeCodec("msgpack", compress_threshold=None)
    try:
        promise = py.emit_cross_server_with_promise("ask", {"q": 2}, target_server="nodeJS", timeout=3)
        wait_for(lambda: spy.on("csbp:server_bridge"))
        request = msgpack_codec.decode(spy.on("csbp:server_bridge")[0])
        assert list(request["data"])[:5] == ["payload", "event", "senderServer", "targetServer", "callbackId"]
        reply = env.bridge_reply("nodeJS", request["data"]["callbackId"], {"ok": True})
        spy.client.publish("csbp:server_bridge", msgpack_codec.encode(reply))
        result = promise.get(timeout=3)
        assert result.success and result.responses["nodeJS"]["payload"] == {"ok": True}
    finally:
        spy.close()


def test_json_msgpack_and_zstd_nodes_understand_each_other(redis_server, make_bus):
    json_zstd = make_bus("J", [redis_server.config], redis_codec="json", redis_compress_threshold=256)
    packer = make_bus("M", [redis_server.config], redis_codec="msgpack", redis_compress_threshold=256)
    original_like = make_bus("O", [redis_server.config], enable_redis_data_compression=True)
    for bus in (json_zstd, packer, original_like):
        answer_with_name(bus)
    big = {"blob": "z" * 5000}
    for sender in (json_zstd, packer, original_like):
        result = sender.emit_cross_server_and_wait("ask", big, expected_responses=3, timeout=3)
        assert result.success, result
        assert {r["payload"]["echo"]["blob"] for r in result.responses.values()} == {"z" * 5000}
    assert json_zstd.stats["decode_errors"] == packer.stats["decode_errors"] == original_like.stats["decode_errors"] == 0


def test_signed_buses_talk_and_drop_unsigned_messages(redis_server, make_bus):
    a = make_bus("A", [redis_server.config], signing_key=b"shared")
    b = make_bus("B", [redis_server.config], signing_key=b"shared")
    answer_with_name(b)
    assert a.emit_cross_server_and_wait("ask", 1, target_server="B").success
    intruder = make_bus("X", [redis_server.config])
    assert not intruder.emit_cross_server_and_wait("ask", 1, target_server="B", timeout=0.3).success
    wait_for(lambda: b.stats["decode_errors"] >= 1)


def test_a_captured_signed_message_published_again_is_dropped(redis_server, make_bus):
    a = make_bus("A", [redis_server.config], signing_key=b"shared")
    b = make_bus("B", [redis_server.config], signing_key=b"shared")
    got = []
    b.on_cross_server_event("pay", lambda data, callback: got.append(data["payload"]))
    spy = Spy(redis_server.port, a.bridge_channel)
    try:
        a.emit_cross_server("pay", {"amount": 10}, target_server="B")
        wait_for(lambda: got == [{"amount": 10}] and spy.on(a.bridge_channel), message="the genuine message")
        captured = spy.on(a.bridge_channel)[0]
        errors = b.stats["decode_errors"]
        for _ in range(3):  # an attacker who can publish replays the signed bytes
            spy.client.publish(a.bridge_channel, captured)
        wait_for(lambda: b.stats["decode_errors"] == errors + 3, message="the replays refused")
        a.emit_cross_server("pay", {"amount": 20}, target_server="B")
        wait_for(lambda: len(got) == 2)
        assert got == [{"amount": 10}, {"amount": 20}]
    finally:
        spy.close()


# Custom channels ---------------------------------------------------------------------------------

def test_custom_channels_and_handler(redis_server, make_bus):
    a = make_bus("A", [redis_server.config], custom_channels="news")
    b = make_bus("B", [redis_server.config], custom_channels=["news"])
    got = {"A": [], "B": []}
    a.set_custom_channel_handler(lambda channel, message: got["A"].append((channel, message)))
    b.set_custom_channel_handler(lambda channel, message: got["B"].append((channel, message)))
    assert a.publish_redis_message("news", {"hello": "x"}) is True
    wait_for(lambda: got["B"])
    assert got["B"] == [("news", {"hello": "x", "senderServer": "A"})]
    assert b.manual_subscribe("extra") is True and a.manual_subscribe("extra") is True
    a.publish_redis_message("extra", {"n": 1}, tag_sender=False)  # untagged: comes back, as the original
    wait_for(lambda: len(got["B"]) == 2 and len(got["A"]) == 1)
    assert got["A"] == [("extra", {"n": 1})]
    assert got["B"][1] == ("extra", {"n": 1})
    b.manual_unsubscribe("extra")
    b.remove_custom_channel_handler()
    a.publish_redis_message("extra", {"n": 2})
    a.publish_redis_message("news", {"n": 3})
    wait_for(lambda: b.stats["dropped"] >= 1)
    assert len(got["B"]) == 2
    assert a.publish_redis_message("news", ["not", "a", "dict"]) is False
    with pytest.raises(TypeError):
        a.publish_redis_message("", {})
    with pytest.raises(TypeError):
        a.set_custom_channel_handler(None)
    with pytest.raises(ConfigError):
        a.manual_unsubscribe(a.bridge_channel)


def test_custom_channel_with_ws_prefix_goes_to_custom_handler_ws_channel_to_ws_handler(redis_server, make_bus):
    ws_seen = []
    a = make_bus("A", [redis_server.config], ws_message_handler=lambda channel, message: ws_seen.append((channel, message)))
    b = make_bus("B", [redis_server.config])
    custom_seen = []
    a.set_custom_channel_handler(lambda channel, message: custom_seen.append(channel))
    a.manual_subscribe("ws:custom")
    a.subscribe("ws:lobby")
    assert a.subscribe("ws:lobby") is True  # idempotent
    b.publish("ws:custom", {"x": 1})
    room = env.ws_room('{"event":"e","payload":1}', "lobby", "r1", "B")
    b.publish("ws:lobby", room)
    wait_for(lambda: custom_seen and ws_seen)
    assert custom_seen == ["ws:custom"] and ws_seen == [("ws:lobby", room)]
    a.unsubscribe("ws:lobby")
    b.publish("ws:lobby", room)
    gevent.sleep(0.2)
    assert len(ws_seen) == 1


def test_subscription_error_is_reported(redis_server, make_bus):
    redis_server.command("ACL", "SETUSER", "limited", "on", ">pw", "resetchannels", "&csbp:*", "&ok", "~*", "+@all")
    errors = []
    a = make_bus("A", [dict(redis_server.config, username="limited", password="pw")],
                 on_redis_subscription_error=errors.append)
    assert a.manual_subscribe("ok") is True
    assert a.manual_subscribe("forbidden", timeout=2) is False
    [info] = errors
    assert info.channel == "forbidden" and info.event == "subscribe" and "permission" in info.error.lower()
    assert (info.host, info.port, info.server_name) == ("127.0.0.1", redis_server.port, "A")
    assert a.get_healthy_redis_instances_count("subscriber") == 1  # the node itself is fine
    assert "pw" not in repr(a)


# Health, strategies, Redis nodes -------------------------------------------------------------------

def test_health_hook_reports_startup_with_spec_fields(redis_factory, make_bus):
    servers = [redis_factory(), redis_factory()]
    events = []
    a = make_bus("A", [s.config for s in servers], on_redis_health_change=lambda ok, info: events.append((ok, info)))
    wait_for(lambda: len(events) == 4)
    assert all(ok for ok, _ in events)
    assert sorted((info.port, info.type) for _, info in events) == sorted(
        (s.port, t) for s in servers for t in ("publisher", "subscriber"))
    last = events[-1][1]
    assert set(last) == {"host", "port", "server_name", "event", "is_healthy", "error", "healthy_subscriber_count",
                         "healthy_publisher_count", "total_node_count", "type"}
    assert (last.healthy_publisher_count, last.healthy_subscriber_count, last.total_node_count) == (2, 2, 2)
    assert {info.event for _, info in events} == {"connect", "ready"}
    assert a.get_healthy_redis_instances_count("publisher") == 2 and a.get_redis_instances_count() == 2
    with pytest.raises(TypeError):
        a.get_healthy_redis_instances_count("both")
    assert a.healthy


def _published_per_node(servers, bus, count):
    spies = [Spy(s.port, bus.bridge_channel) for s in servers]
    try:
        for i in range(count):
            bus.emit_cross_server("tick", i)
        wait_for(lambda: sum(len(s.messages) for s in spies) == count)
        return [len(s.messages) for s in spies]
    finally:
        for spy in spies:
            spy.close()


def test_strategies_spread_or_pick_publish_nodes(redis_factory, make_bus):
    servers = [redis_factory(), redis_factory(), redis_factory()]
    configs = [s.config for s in servers]
    assert _published_per_node(servers, make_bus("RR", configs, selection_strategy="round-robin"), 30) == [10, 10, 10]
    assert min(_published_per_node(servers, make_bus("RND", configs), 60)) > 0
    fastest = make_bus("F", configs, selection_strategy="fastest", redis_force_ping=False)
    wait_for(lambda: all(node.latency > 0 for node in fastest.redis_nodes))  # measured at connect
    for node, latency in zip(fastest.redis_nodes, (0.03, 0.001, 0.02)):
        node.latency = latency  # no periodic PING will overwrite these
    counts = _published_per_node(servers, fastest, 10)
    assert counts[1] == 10


def test_each_message_is_delivered_once_with_three_redis_nodes(redis_factory, make_bus):
    configs = [redis_factory().config for _ in range(3)]
    a, b, c = (make_bus(name, configs, selection_strategy="round-robin") for name in ("A", "B", "C"))
    seen = []
    for bus in (b, c):
        bus.on_cross_server_event("n", lambda data, cb, name=bus.server_name: seen.append((name, data["payload"])))
    for i in range(30):
        a.emit_cross_server("n", i)
    wait_for(lambda: len(seen) == 60)
    gevent.sleep(0.2)
    assert sorted(seen) == sorted((name, i) for name in ("B", "C") for i in range(30))


def test_duplicate_server_name_is_reported(redis_server, make_bus):
    make_bus("twin", [redis_server.config])
    conflicts = []
    second = make_bus("twin", [redis_server.config], on_server_name_conflict=conflicts.append)
    wait_for(lambda: conflicts)
    assert second.server_name_conflict and conflicts[0].server_name == "twin" and conflicts[0].subscribers == 2
    alone = make_bus("single", [redis_server.config])
    gevent.sleep(0.3)
    assert not alone.server_name_conflict


def test_options_are_validated():
    with pytest.raises(ConfigError, match="server_name"):
        CrossServerBus(server_name="", redis_config=[])
    with pytest.raises(ConfigError, match="different"):
        CrossServerBus(server_name="a", redis_config=[], bridge_prefix="x:", ws_prefix="x:")
    with pytest.raises(ConfigError, match="different"):
        CrossServerBus(server_name="a", redis_config=[], bridge_prefix="ws:b", ws_prefix="ws:")
    with pytest.raises(ConfigError, match="selection_strategy"):
        CrossServerBus(server_name="a", redis_config=[], selection_strategy="fast")
    with pytest.raises(ConfigError, match="redis_codec"):
        CrossServerBus(server_name="a", redis_config=[], redis_codec="pickle")
    with pytest.raises(ConfigError, match="invalid redis_config"):
        CrossServerBus(server_name="a", redis_config=[{"hots": "127.0.0.1"}])
    with pytest.raises(ConfigError):
        CrossServerBus(server_name="a", redis_config=["http://127.0.0.1"])
    with pytest.raises(ConfigError, match="positive"):
        CrossServerBus(server_name="a", redis_config=[], redis_ping_interval=0)


def test_without_redis_nodes_emits_fail_at_once(make_bus):
    a = make_bus("A", [])
    results, callback = collect()
    a.emit_cross_server("e", 1, callback, target_server="B")
    assert [(r.success, r.error_code, r.error) for r in results] == [(False, "REDIS_UNAVAILABLE", "No healthy Redis node available")]
    promise = a.emit_cross_server_with_promise("e", 1, expected_responses=2).get(timeout=1)
    assert promise.success is False and promise.error_code == "REDIS_UNAVAILABLE" and promise.unresponded_count == 2
    assert a.publish_redis_message("c", {"a": 1}) is False
    with pytest.raises(RedisUnavailableError):
        a.publish("c", {"a": 1})
    assert not a.healthy and a.get_redis_instances_count() == 0


def test_close_stops_every_greenlet_and_connection(redis_server):
    def live_greenlets():  # gevent.Greenlet: what we spawn (not gevent's own threadpool/hub greenlets)
        return {g for g in gc.get_objects() if isinstance(g, gevent.Greenlet) and not g.dead}

    def clients():
        return redis_server.command("CLIENT", "LIST").count("id=") - 1  # minus our own CLIENT LIST

    gc.collect()
    before_greenlets, before_clients = live_greenlets(), clients()
    a = CrossServerBus(server_name="A", redis_config=[redis_server.config], redis_ping_interval=0.2)
    b = CrossServerBus(server_name="B", redis_config=[redis_server.config], redis_ping_interval=0.2)
    answer_with_name(b)
    results, callback = collect()
    a.emit_cross_server("ask", 1, callback, target_server=["B", "nobody"], timeout=30)
    wait_for(lambda: results)
    assert clients() == before_clients + 4
    a.close()
    b.close()
    a.close()  # idempotent
    assert results[-1].error == "Cross-server bus closed." and results[-1].error_code == "BUS_CLOSED"
    gc.collect()
    assert live_greenlets() - before_greenlets == set()
    wait_for(lambda: clients() == before_clients, message="redis connections closed")


CHILD = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import sys, gevent
    sys.path.insert(0, {root!r})
    from crossws_sync.bus.bus import CrossServerBus
    bus = CrossServerBus(server_name=sys.argv[1], redis_config=[{{"host": "127.0.0.1", "port": int(sys.argv[2])}}],
                         redis_codec=sys.argv[3])
    bus.on_cross_server_event("ask", lambda data, cb: cb({{"from": bus.server_name, "pid": __import__("os").getpid()}}))
    print("ready", flush=True)
    gevent.get_hub().threadpool.apply(sys.stdin.read)  # block this greenlet only, until stdin closes
    bus.close()
""")


def test_buses_in_separate_processes(redis_server, make_bus):
    script = CHILD.format(root=repo_root())
    children = [subprocess.Popen([sys.executable, "-c", script, name, str(redis_server.port), codec],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for name, codec in (("P1", "json"), ("P2", "msgpack"))]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        main = make_bus("main", [redis_server.config])
        result = main.emit_cross_server_and_wait("ask", 1, expected_responses=2, except_self=True, timeout=5)
        assert result.success, result
        assert {name: r["payload"]["pid"] for name, r in result.responses.items()} == {
            "P1": children[0].pid, "P2": children[1].pid}
        assert os.getpid() not in {r["payload"]["pid"] for r in result.responses.values()}
    finally:
        for child in children:
            child.stdin.close()
            terminate_process(child)


def test_redis_without_monkey_patching_is_refused(redis_server):
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, {root!r})
        from crossws_sync.bus.bus import CrossServerBus
        from crossws_sync.errors import MonkeyPatchError
        try:
            CrossServerBus(server_name="a", redis_config=[{{"host": "127.0.0.1", "port": {port}}}])
        except MonkeyPatchError as exc:
            print("refused:", exc)
    """).format(root=repo_root(), port=redis_server.port)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "refused:" in out.stdout and "monkey.patch_all()" in out.stdout, out.stdout + out.stderr


def test_close_from_inside_a_listener(redis_server, make_bus):
    a, b = make_bus("A", [redis_server.config]), make_bus("B", [redis_server.config])
    done = []
    b.on_cross_server_event("stop", lambda data, cb: (b.close(), done.append(b.closed)))
    a.emit_cross_server("stop", 1, target_server="B")
    wait_for(lambda: done == [True])
    assert b.get_redis_instances_count() == 0 and not b.healthy


def test_own_echoes_are_dropped_without_being_decoded(redis_server, make_bus):
    a = make_bus("a", redis_server.config)
    b = make_bus("b", redis_server.config)
    got = []
    b.on_cross_server_event("e", lambda data, callback: got.append(data["payload"]))
    decoded = []
    real_decode = a._codec.decode

    def counting_decode(raw, channel):
        message = real_decode(raw, channel)
        decoded.append(env.sender_of(message))
        return message

    a._codec.decode = counting_decode
    echoes = a.stats["self_echoes"]
    for index in range(20):
        a.emit_cross_server("e", {"i": index})
    wait_for(lambda: len(got) == 20 and a.stats["self_echoes"] >= echoes + 20, message="deliveries and echoes")
    assert got == [{"i": index} for index in range(20)]
    assert "a" not in decoded  # a's 20 echoes (and its heartbeats' echoes) came back undecoded


def test_defaults_speak_the_originals_messagepack(redis_server, make_bus):
    # The original's default is enableRedisDataCompression: true (notepack.io MessagePack).
    a = make_bus("A", [redis_server.config])
    assert a.codec.codec == "msgpack"
    spy = Spy(redis_server.port, "custom:x")
    try:
        assert a.publish_redis_message("custom:x", {"n": 1})
        wait_for(lambda: spy.on("custom:x"))
        assert spy.on("custom:x") == [msgpack.packb({"n": 1, "senderServer": "A"}, use_bin_type=True)]
    finally:
        spy.close()


def test_a_peer_in_the_other_codec_is_warned_about_once(redis_server, make_bus, caplog):
    packer = make_bus("M", [redis_server.config])
    texter = make_bus("J", [redis_server.config], redis_codec="json")
    answer_with_name(packer)
    with caplog.at_level(logging.WARNING, logger="crossws_sync.bus"):
        for _ in range(3):
            assert texter.emit_cross_server_and_wait("ask", 1, target_server="M", timeout=3).success
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("server 'J' publishes json")]
    assert len(warnings) == 1 and "enableRedisDataCompression" in warnings[0]
    assert packer.stats["foreign_codec"] == 3
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("server 'M' publishes msgpack")]
    assert len(warned) == 1  # the JSON node hears the replies in MessagePack
