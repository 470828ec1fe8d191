"""crossws_sync.server.service: a WebSocketService on its own, served by a real pywsgi server.

Upgrades pass the origin / auth / capacity checks before any connection exists, client events
are dispatched with their ack, ``close_all`` closes every client, and a connection that
gevent-websocket's own handler already upgraded (the ``legacy`` extra) is taken over.
"""
from __future__ import annotations

from typing import Any, Iterator, List, Tuple

import gevent
import pytest
from gevent import pywsgi
from rawclient import HandshakeRejected, RawClient
from support import wait_for

from crossws_sync.errors import ConfigError
from crossws_sync.server.service import (
    SAME_ORIGIN,
    Reject,
    WebSocketService,
    WebSocketSettings,
    origin_allowed,
    parse_allowed_origins,
)
from crossws_sync.server.wsgi import WebSocketHandler, WebSocketMiddleware


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(service, handler_class=...)`` -> port of a pywsgi server running ``service``."""
    running: List[Tuple[pywsgi.WSGIServer, WebSocketService]] = []

    def start(service: WebSocketService, handler_class: Any = WebSocketHandler) -> int:
        server = pywsgi.WSGIServer(("127.0.0.1", 0), WebSocketMiddleware(service, None, "/ws"),
                                   handler_class=handler_class, log=None)
        server.start()
        running.append((server, service))
        return server.server_port

    yield start
    for server, service in running:
        service.close_all(timeout=1)
        service.stop_background()
        server.stop(timeout=1)


def _echo(service: WebSocketService) -> WebSocketService:
    service.client_events.on("echo", lambda conn, payload, callback: callback and callback(payload))
    return service


def test_events_are_acked_and_close_all_closes_every_client(serve):
    service = _echo(WebSocketService(WebSocketSettings()))
    opened: List[Any] = []
    closed: List[int] = []
    service.system_events.on("connection", lambda conn, request: opened.append(request.path))
    service.system_events.on("close", lambda conn, request, code, reason: closed.append(code))
    port = serve(service)
    clients = [RawClient(port, "/ws?n=%d" % i) for i in range(2)]
    clients[0].send_json({"event": "echo", "payload": {"a": 1}, "callbackId": "c1"})
    assert clients[0].recv_json() == {"payload": {"a": 1}, "callbackId": "c1"}
    wait_for(lambda: len(service.clients) == 2)
    assert opened == ["/ws", "/ws"]

    def answer(client: RawClient) -> int:
        code = client.recv_close(timeout=5)[0]
        client.close(code)  # completes the closing handshake
        return code

    answering = gevent.spawn(answer, clients[0])
    service.close_all(code=1001, reason="bye", timeout=1)  # the other client never answers
    assert answering.get(timeout=5) == 1001 and clients[1].recv_close(timeout=5) == (1001, "bye")
    wait_for(lambda: sorted(closed) == [1001, 1006] and not service.clients)
    with pytest.raises(HandshakeRejected) as refused:
        RawClient(port, "/ws")  # no longer accepting
    assert (refused.value.status, refused.value.body) == (503, b"server shutting down")


def test_refusals_are_http_statuses_and_no_connection_is_made(serve):
    def authenticate(request: Any) -> Any:
        token = request.query_string.partition("token=")[2]
        if token == "banned":
            raise Reject(403, "banned", [("X-Why", "list")])
        return token == "good"

    service = _echo(WebSocketService(WebSocketSettings(
        authenticate=authenticate, allowed_origins=parse_allowed_origins(["https://ok.example"]), max_connections=1)))
    port = serve(service)
    statuses = []
    for path, headers in [("/ws?token=banned", None), ("/ws?token=nope", None),
                          ("/ws?token=good", {"Origin": "https://evil.example"})]:
        with pytest.raises(HandshakeRejected) as rejected:
            RawClient(port, path, headers=headers)
        statuses.append((rejected.value.status, rejected.value.body))
    assert statuses == [(403, b"banned"), (401, b"unauthorized"), (403, b"origin not allowed")]
    assert service.stats["rejected_upgrades"] == 3 and not service.clients
    first = RawClient(port, "/ws?token=good", headers={"Origin": "https://ok.example"})
    wait_for(lambda: len(service.clients) == 1)
    with pytest.raises(HandshakeRejected) as full:
        RawClient(port, "/ws?token=good")
    assert full.value.status == 503
    first.send_json({"event": "echo", "payload": 1, "callbackId": "x"})
    assert first.recv_json() == {"payload": 1, "callbackId": "x"}


def test_origin_policies():
    assert parse_allowed_origins(None) is None and parse_allowed_origins("*") is None
    assert parse_allowed_origins(["https://a.example", "*"]) is None
    assert parse_allowed_origins("same-origin") == SAME_ORIGIN
    assert parse_allowed_origins("HTTPS://A.example/") == ("https://a.example",)
    with pytest.raises(ConfigError):
        parse_allowed_origins(["a.example"])
    assert origin_allowed("https://app.example", "app.example:443", SAME_ORIGIN)
    assert origin_allowed("http://app.example:8080", "app.example:8080", SAME_ORIGIN)
    assert not origin_allowed("https://evil.example", "app.example", SAME_ORIGIN)
    assert not origin_allowed("null", "app.example", SAME_ORIGIN)
    assert origin_allowed("https://A.example/", "x", ("https://a.example",))
    assert not origin_allowed("https://b.example", "x", ("https://a.example",))


def test_a_connection_upgraded_by_gevent_websocket_is_served_and_refused_with_4000_plus_status(serve):
    handler = pytest.importorskip("geventwebsocket.handler")

    def authenticate(request: Any) -> Any:
        return "deny" not in request.query_string

    service = _echo(WebSocketService(WebSocketSettings(authenticate=authenticate)))
    port = serve(service, handler_class=handler.WebSocketHandler)
    client = RawClient(port, "/ws")
    client.send_json({"event": "echo", "payload": "legacy", "callbackId": "l1"})
    assert client.recv_json() == {"payload": "legacy", "callbackId": "l1"}
    wait_for(lambda: len(service.clients) == 1)
    refused = RawClient(port, "/ws?deny=1")  # already upgraded: the refusal is a close frame
    assert refused.recv_close(timeout=5)[0] == 4401
    assert service.stats["rejected_upgrades"] == 1


def test_accepted_sockets_have_nagle_off_so_the_first_frame_after_the_101_is_not_held(serve):
    import socket

    service = WebSocketService(WebSocketSettings())
    service.system_events.on("connection", lambda conn, request: conn.send('{"event":"welcome"}'))
    port = serve(service)
    client = RawClient(port, "/ws")
    assert client.recv_json() == {"event": "welcome"}
    wait_for(lambda: len(service.clients) == 1)
    [conn] = service.clients
    assert conn._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


class _SweptClient:
    """What the liveness sweep reads and calls on a connection."""

    enter_background_time = 0

    def __init__(self) -> None:
        self.is_alive = True
        self.pings = 0

    def ping(self) -> None:
        self.pings += 1

    def terminate(self) -> None:
        raise AssertionError("a live client was dropped")


def test_a_liveness_sweep_records_how_long_it_took_and_how_many_clients_it_went_through():
    service = WebSocketService(WebSocketSettings())
    assert (service.sweeps, service.last_sweep_seconds, service.last_sweep_cpu_seconds,
            service.last_sweep_clients) == (0, 0.0, 0.0, 0)
    clients = [_SweptClient() for _ in range(600)]
    service.clients.update(clients)  # type: ignore[arg-type]
    service.sweep_once(now=0.0)
    assert service.sweeps == 1 and service.last_sweep_clients == 600
    assert 0.0 < service.last_sweep_seconds < 5.0 and 0.0 <= service.last_sweep_cpu_seconds < 5.0
    assert all(client.pings == 1 and not client.is_alive for client in clients)
    service.clients.difference_update(clients[:100])  # type: ignore[arg-type]
    for client in clients:
        client.is_alive = True
    service.sweep_once(now=0.0)
    assert service.sweeps == 2 and service.last_sweep_clients == 500
