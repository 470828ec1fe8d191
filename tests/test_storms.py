"""Surviving reconnect storms (issue 19): the accept-rate limit answers 503 with Retry-After before
the upgrade, a restart closes with 1012 and a jittered retry hint, and the Python client honours
both hints. Real server, real sockets."""
from __future__ import annotations

import time

import gevent
import pytest

from crossws_sync.errors import ConfigError, HandshakeError
from crossws_sync.wire.retry import retry_hint
from rawclient import HandshakeRejected, RawClient
from support import wait_for

pytestmark = pytest.mark.timeout(60)


def _attempt(port):
    try:
        return RawClient(port)
    except HandshakeRejected as refused:
        return refused


def test_a_storm_gets_exactly_the_bucket_and_the_rest_503_with_retry_after(make_adapter):
    calls = []
    adapter = make_adapter(max_accept_rate=0.1, accept_burst=5,
                           authenticate=lambda request: calls.append(1) or True)
    adapter.start()
    attempts = [gevent.spawn(_attempt, adapter.port) for _ in range(20)]
    gevent.joinall(attempts, timeout=20, raise_error=True)
    results = [g.value for g in attempts]
    accepted = [r for r in results if isinstance(r, RawClient)]
    refused = [r for r in results if isinstance(r, HandshakeRejected)]
    assert len(accepted) == 5 and len(refused) == 15
    assert {r.status for r in refused} == {503}
    retry_after = [r.headers["retry-after"] for r in refused]
    assert all(value.isdigit() and int(value) >= 1 for value in retry_after)
    # one token every 10 s, a refill window of 50 s: the refused clients are told different times
    assert all(10 <= int(value) <= 61 for value in retry_after) and len(set(retry_after)) > 1
    stats = adapter.get_wss().stats
    assert stats["rate_limited_upgrades"] == 15 and stats["rejected_upgrades"] == 15
    assert len(calls) == 5  # refused before the authenticate hook
    for client in accepted:  # the accepted ones work
        client.send_text("")
        assert client.recv_text() == ""


def test_accept_rate_options_are_checked(make_adapter):
    for bad in (dict(max_accept_rate=0), dict(max_accept_rate=-1), dict(max_accept_rate=float("inf")),
                dict(max_accept_rate="5"), dict(max_accept_rate=5, accept_burst=0),
                dict(max_accept_rate=5, accept_burst=2.5), dict(shutdown_code=1006), dict(shutdown_code=999),
                dict(shutdown_code=True), dict(restart_retry_window=-1)):
        with pytest.raises(ConfigError):
            make_adapter(**bad)


def test_restart_closes_every_client_with_1012_and_a_spread_retry_hint(make_adapter):
    adapter = make_adapter(shutdown_code=1012, restart_retry_window=4.0)
    adapter.start()
    clients = [RawClient(adapter.port) for _ in range(20)]
    wait_for(lambda: len(adapter.get_wss().clients) == 20)
    closer = gevent.spawn(adapter.shutdown)
    closes = [c.recv_close() for c in clients]
    for c in clients:
        c.close(1012)
    closer.join(5)
    assert {code for code, _ in closes} == {1012}
    hints = [retry_hint(reason) for _, reason in closes]
    assert all(reason.startswith("service restart retry=") for _, reason in closes)
    assert all(hint is not None and 0.0 <= hint <= 4.0 for hint in hints)
    assert len(set(hints)) > 10  # spread, not all equal


def test_shutdown_code_per_call_and_close_keeps_1001(make_adapter):
    restarted = make_adapter()  # the default shutdown_code: 1012
    restarted.start()
    client = RawClient(restarted.port)
    wait_for(lambda: len(restarted.get_wss().clients) == 1)
    gevent.spawn(restarted.shutdown, reason="deploy")
    code, reason = client.recv_close()
    assert code == 1012 and reason.startswith("deploy retry=") and retry_hint(reason) <= 10.0
    going = make_adapter(shutdown_code=1001)
    going.start()
    client = RawClient(going.port)
    wait_for(lambda: len(going.get_wss().clients) == 1)
    gevent.spawn(going.shutdown)
    assert client.recv_close() == (1001, "server shutdown")  # the former default: no hint
    closed = make_adapter()
    closed.start()
    client = RawClient(closed.port)
    wait_for(lambda: len(closed.get_wss().clients) == 1)
    gevent.spawn(closed.close)
    assert client.recv_close() == (1001, "server shutdown")  # close() is "going away", no hint


def _reconnect_timeouts(client):
    events = []
    client.on("reconnect", lambda arg: events.append((time.monotonic(), arg["timeout"])))
    opens = []
    client.on("open", lambda arg: opens.append(time.monotonic()))
    return events, opens


def _restarting_once(make_adapter, reason):
    """A started adapter that closes its first connection with 1012 and ``reason``."""
    adapter = make_adapter()
    first = []

    def on_connection(socket, request):
        if not first:
            first.append(socket)
            socket.close(1012, reason)

    adapter.on_websocket_event("connection", on_connection)
    return adapter.start()


def test_the_python_client_waits_for_the_1012_hint(make_adapter, make_client):
    adapter = _restarting_once(make_adapter, "service restart retry=0.800s")
    client = make_client("ws://127.0.0.1:%d/" % adapter.port, auto_reconnect=True, fast_reconnect_interval=0.05,
                         reconnect_jitter="original")
    closes = []
    client.on("close", lambda event: closes.append(time.monotonic()))
    reconnects, opens = _reconnect_timeouts(client)
    wait_for(lambda: len(opens) == 2, timeout=10)
    assert reconnects[0][1] == 0.8  # the hint, not the schedule's 0.05
    assert opens[1] - closes[0] >= 0.8


def test_the_python_client_waits_for_the_retry_after_of_a_503(make_adapter, make_client):
    adapter = make_adapter(max_accept_rate=1.0, accept_burst=1)
    adapter.get_wss().random = lambda: 0.0  # Retry-After: ceil(time to the next token) = 1
    adapter.start()
    holder = RawClient(adapter.port)  # takes the only token
    client = make_client("ws://127.0.0.1:%d/" % adapter.port, fast_reconnect_interval=0.05,
                         reconnect_jitter="original")
    errors = []
    client.on("error", lambda event: errors.append((time.monotonic(), event)))
    reconnects, opens = _reconnect_timeouts(client)
    wait_for(lambda: opens, timeout=10)
    error = errors[0][1]
    assert isinstance(error.error, HandshakeError) and error.status == 503 and error.error.retry_after == 1.0
    assert reconnects[0][1] == 1.0
    assert opens[0] - errors[0][0] >= 1.0
    holder.close()


def test_a_hint_is_capped_at_reconnect_max_interval(make_adapter, make_client):
    adapter = _restarting_once(make_adapter, "service restart retry=300.000s")
    client = make_client("ws://127.0.0.1:%d/" % adapter.port, auto_reconnect=True, reconnect_max_interval=0.3)
    reconnects, opens = _reconnect_timeouts(client)
    wait_for(lambda: len(opens) == 2, timeout=10)
    assert reconnects[0][1] == 0.3
