"""crossws_sync.bus.rpc: requests and replies on the bridge, through real buses on a real
redis-server: who a request reaches, one reply per reply callback, late replies counted, a
listener that raises harms nobody, and a request no node takes fails at once."""
import logging

import gevent
import pytest

from crossws_sync.bus.rpc import UNAVAILABLE_CODE, normalize_targets
from bus_fixtures import collect, make_bus  # noqa: F401 - make_bus is a fixture
from support import wait_for


@pytest.mark.parametrize("given, targets", [
    ("B", ["B"]), ("", []), (None, []), (["B", "", 3, "C"], ["B", "C"]), (("B",), ["B"]), (7, []), ({"B": 1}, []),
])
def test_normalize_targets(given, targets):
    assert normalize_targets(given) == targets


def test_a_reply_callback_sends_each_call_and_extra_replies_are_counted_late(redis_server, make_bus):
    a, b = make_bus("A", [redis_server.config]), make_bus("B", [redis_server.config])
    sent = []

    def twice(data, callback):
        sent.append((callback("first"), callback("second")))

    b.on_cross_server_event("ask", twice)
    result = a.emit_cross_server_and_wait("ask", 1, target_server="B", timeout=2)
    assert result.success is True and result.responses["B"]["payload"] == "first"
    wait_for(lambda: a.stats["late_replies"] == 1)
    assert sent == [(True, True)] and a.stats["replies"] == 1


def test_a_request_without_callback_gives_its_listener_none(redis_server, make_bus):
    a, b = make_bus("A", [redis_server.config]), make_bus("B", [redis_server.config])
    got = []
    b.on_cross_server_event("tell", lambda data, callback: got.append((data["payload"], callback)))
    a.emit_cross_server("tell", {"x": 1}, target_server="B")
    wait_for(lambda: got)
    assert got == [({"x": 1}, None)]


def test_a_listener_that_raises_is_logged_and_the_next_request_is_served(redis_server, make_bus, caplog):
    a, b = make_bus("A", [redis_server.config]), make_bus("B", [redis_server.config])

    def flaky(data, callback):
        if data["payload"] == "boom":
            raise RuntimeError("listener bug")
        callback("ok")

    b.on_cross_server_event("ask", flaky)
    with caplog.at_level(logging.ERROR):
        failed = a.emit_cross_server_and_wait("ask", "boom", target_server="B", timeout=0.5)
        served = a.emit_cross_server_and_wait("ask", "fine", target_server="B", timeout=2)
    assert failed.success is False and failed.unresponded_servers == ["B"]
    assert served.success is True and served.responses["B"]["payload"] == "ok"
    assert any("listener bug" in repr(record.exc_info) for record in caplog.records if record.exc_info)


def test_a_request_no_node_takes_fails_at_once_in_both_shapes(redis_server, make_bus):
    a = make_bus("A", [redis_server.config])
    redis_server.kill()
    wait_for(lambda: not a.healthy, timeout=10)
    results, callback = collect()
    a.emit_cross_server("ask", 1, callback, target_server="B", timeout=30)
    gevent.sleep(0.05)
    assert [(r.success, r.error_code) for r in results] == [(False, UNAVAILABLE_CODE)]
    promise = a.emit_cross_server_with_promise("ask", 1, target_server=["B", "C"], timeout=30).get(timeout=2)
    assert promise.success is False and promise.error_code == UNAVAILABLE_CODE
    assert promise.unresponded_servers == ["B", "C"] and a.pending_callback_count == 0
