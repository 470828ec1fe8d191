"""crossws_sync.client.replies: the Python client answers server requests through the ``reply``
argument of its server-event listeners (a real server, real sockets)."""
from __future__ import annotations

import gevent
import pytest

from crossws_sync import WebSocketConnector
from support import wait_for


@pytest.fixture
def server(make_adapter):
    adapter = make_adapter()
    adapter.on_websocket_event("connection", lambda socket_, request: adapter.set_user_socket("u1", socket_))
    adapter.start()
    return adapter


@pytest.fixture
def client(server):
    connector = WebSocketConnector("ws://127.0.0.1:%d/" % server.port, ping_interval=60)
    assert connector.wait_connected(5)
    wait_for(lambda: server.get_socket_instance("u1") is not None)
    yield connector
    connector.close()


def test_a_one_argument_listener_still_works_and_a_two_argument_listener_replies(server, client):
    seen, replies = [], []
    client.on("confirm", lambda payload: seen.append(payload))

    def answer(payload, reply):
        replies.append(reply({"ok": payload}))
        replies.append(reply("second"))  # ignored: one answer per request

    client.on("confirm", answer)
    result = server.to_socket_id_and_wait("u1", "confirm", 7, timeout=3)
    assert result == {"success": True, "data": {"ok": 7}}
    assert seen == [7] and replies == [True, False]
    # A plain push (no ackId) is called with the payload only, as before: a listener meant for
    # both declares ``reply=None``.
    both = []
    client.on("confirm", lambda payload, reply=None: both.append((payload, reply)))
    server.to_socket_id("u1", "confirm", 8)
    wait_for(lambda: seen == [7, 8] and both == [(8, None)])


def test_without_a_listener_that_takes_reply_nothing_is_answered(server, client):
    seen = []
    client.on("confirm", seen.append)
    result = server.to_socket_id_and_wait("u1", "confirm", 1, timeout=0.3)
    assert seen == [1] and result["error_code"] == "ACK_TIMEOUT"


def test_reply_without_data_and_reply_after_the_connection_closed(server, client):
    kept = []
    client.on("confirm", lambda payload, reply: kept.append(reply))
    promise = server.to_socket_id_with_promise("u1", "confirm", None, timeout=3)
    wait_for(lambda: kept)
    assert kept[0]() is True
    assert promise.get(timeout=3) == {"success": True, "data": None}
    later = server.to_socket_id_with_promise("u1", "confirm", 2, timeout=3)
    wait_for(lambda: len(kept) == 2)
    with pytest.raises(TypeError):
        kept[1](object())  # not JSON: raises, the reply is not used up
    client.close()
    assert later.get(timeout=3)["error_code"] == "USER_DISCONNECTED"
    assert kept[1]("too late") is False
    gevent.sleep(0)
