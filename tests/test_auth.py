"""Authentication and secrets: upgrades refused before any connection exists, the identify
deadline, the origin check, and Redis credentials (password, TLS through a real TLS endpoint)
that work and never appear in logs, reprs or health reports.
"""
from __future__ import annotations

import gc
import logging
import socket
import time
from typing import Any, Dict, List

import gevent
import gevent.ssl
import greenlet
import pytest
from gevent.server import StreamServer

from crossws_sync import Reject, WebSocketCrossServerAdapter

from crossws_sync.wire import frames

from crossws_sync.server import service as wsserver
from faultkit import ask, record, splice
from rawclient import HandshakeRejected, RawClient
from support import make_certificate, wait_for

SECRET = "s3cr3t-Pa55-do-not-log"


def _echoing(adapter: WebSocketCrossServerAdapter) -> WebSocketCrossServerAdapter:
    """``adapter`` with an ``echo`` event that acknowledges with its payload."""
    adapter.on_websocket_event("echo", lambda s, payload, callback: callback and callback(payload))
    return adapter


def _live_greenlets() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet.greenlet) and not obj.dead)


def _status(port: int, path: str = "/", headers: Dict[str, str] = None) -> int:
    try:
        client = RawClient(port, path, headers=headers)
    except HandshakeRejected as exc:
        return exc.status
    client.abort()
    return 101


def _raw_upgrade_without_version(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: %s\r\n\r\n" % frames.new_client_key()).encode())
        return int(sock.recv(4096).split(b" ", 2)[1])


def test_rejected_upgrades_never_allocate_a_connection(make_adapter, monkeypatch):
    built: List[Any] = []

    class CountingConnection(wsserver.WebSocketConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(wsserver, "WebSocketConnection", CountingConnection)
    calls: List[str] = []

    def authenticate(request):
        token = WebSocketCrossServerAdapter.parse_ws_request_params(request)["params"].get("token")
        calls.append(token)
        if token == "banned":
            raise Reject(403, "banned")
        if token == "boom":
            raise RuntimeError("auth backend down")
        return {"user": "alice"} if token == "good" else False

    adapter = _echoing(make_adapter(authenticate=authenticate, allowed_origins=["https://good.example"]))
    connections: List[Any] = []
    adapter.on_websocket_event("connection", lambda s, request: connections.append(s))
    adapter.start()
    port = adapter.port
    greenlets_before = _live_greenlets()
    statuses: Dict[int, int] = {}
    for path, headers, count in (("/?token=bad", None, 100), ("/?token=banned", None, 50), ("/?token=boom", None, 50),
                                 ("/?token=good", {"Origin": "https://evil.example"}, 50)):
        for _ in range(count):
            status = _status(port, path, headers)
            statuses[status] = statuses.get(status, 0) + 1
    for _ in range(20):
        status = _raw_upgrade_without_version(port)
        statuses[status] = statuses.get(status, 0) + 1
    assert statuses == {401: 100, 403: 100, 500: 50, 426: 20}
    assert built == [] and connections == [] and not adapter.get_wss().clients
    assert len(calls) == 200, "the origin check runs before the hook"
    wait_for(lambda: _live_greenlets() <= greenlets_before + 1, timeout=5, message="handler greenlets gone")
    client = RawClient(port, "/?token=good", headers={"Origin": "https://good.example"})
    assert ask(client, "echo", "hi") == "hi"
    assert built == [1] and len(connections) == 1 and connections[0].identity == {"user": "alice"}
    assert adapter.get_wss().stats["rejected_upgrades"] == 250
    record("auth_rejections", attempts=sum(statuses.values()), statuses=statuses, connections_built=0,
           greenlets_before=greenlets_before, greenlets_after=_live_greenlets())


def test_identify_deadline_closes_only_anonymous_connections(make_adapter):
    adapter = _echoing(make_adapter(identify_timeout=0.5))

    def on_connection(socket_, request):
        user = adapter.parse_ws_request_params(request)["params"].get("id")
        if user:
            adapter.set_user_socket(user, socket_)

    adapter.on_websocket_event("connection", on_connection)
    adapter.start()
    started = time.monotonic()
    anonymous = [RawClient(adapter.port) for _ in range(10)]
    known = RawClient(adapter.port, "/?id=alice")
    closes = [client.recv_close(timeout=5) for client in anonymous]
    closed_after = time.monotonic() - started
    assert closes == [(4011, "identify timeout")] * 10
    assert 0.5 <= closed_after <= 0.5 + 0.25 + 0.5
    wait_for(lambda: time.monotonic() - started > 1.5, timeout=5)
    assert ask(known, "echo", "still here") == "still here"
    record("identify_deadline", identify_timeout_s=0.5, anonymous=10, closed_within_s=round(closed_after, 3))


def test_origin_check(make_adapter):
    adapter = _echoing(make_adapter(allowed_origins=["https://good.example"])).start()
    assert _status(adapter.port, "/", {"Origin": "https://good.example"}) == 101
    assert _status(adapter.port, "/", {"Origin": "https://evil.example"}) == 403
    assert _status(adapter.port, "/", {"Origin": "null"}) == 403
    # no Origin header: not a browser (browsers always send one), accepted
    assert _status(adapter.port, "/") == 101


# Redis credentials -----------------------------------------------------------------------------

class TlsTerminator:
    """A real TLS endpoint in front of a plain redis-server (redis-server here has no TLS built in)."""

    def __init__(self, backend_port: int, certfile: str, keyfile: str) -> None:
        self.backend_port = backend_port
        self.handshakes = 0
        self.failed_handshakes = 0
        self.context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def _handle(self, raw: Any, address: Any) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (OSError, gevent.ssl.SSLError):
            self.failed_handshakes += 1
            raw.close()
            return
        self.handshakes += 1
        upstream = socket.create_connection(("127.0.0.1", self.backend_port))

        splice(client, upstream)

    def close(self) -> None:
        self.server.stop(timeout=1)


@pytest.fixture
def redis_tls_files(tls_files, tmp_path):
    """``(cert, key, other_cert)``: the shared certificate and one nobody trusts."""
    other_cert, _ = make_certificate(str(tmp_path), "other", common_name="someone-else")
    return tls_files[0], tls_files[1], other_cert


@pytest.mark.timeout(60)
def test_redis_password_and_tls_pass_through_and_are_never_logged(redis_factory, redis_tls_files, caplog):
    caplog.set_level(logging.DEBUG)
    cert, key, other_cert = redis_tls_files
    redis = redis_factory()
    # (support.RedisProcess checks readiness with an unauthenticated PING: set the password after)
    assert redis.command("CONFIG", "SET", "requirepass", SECRET).startswith("+OK")
    tls = TlsTerminator(redis.port, cert, key)
    health: List[Any] = []
    adapters: List[WebSocketCrossServerAdapter] = []

    def node(name: str, config: Any) -> WebSocketCrossServerAdapter:
        adapter = WebSocketCrossServerAdapter(
            server_name=name, redis_config=[config], redis_ping_interval=0.3, redis_ping_timeout=0.3,
            on_redis_health_change=lambda healthy, info: health.append((name, healthy, dict(info))))
        adapter.on_cross_server_event("who", lambda data, callback: callback and callback(name))
        adapters.append(adapter)
        return adapter.start()

    try:
        a = node("a", {"host": "127.0.0.1", "port": tls.port, "password": SECRET, "ssl": True,
                       "ssl_ca_certs": cert})
        b = node("b", "rediss://:%s@127.0.0.1:%d/0?ssl_ca_certs=%s" % (SECRET, tls.port, cert))
        wrong_password = node("c", {"host": "127.0.0.1", "port": redis.port, "password": SECRET + "-wrong"})
        wrong_ca = node("d", {"host": "127.0.0.1", "port": tls.port, "password": SECRET, "ssl": True,
                              "ssl_ca_certs": other_cert})
        assert a.bus.wait_healthy(5) and b.bus.wait_healthy(5)
        result = a.emit_cross_server_and_wait("who", {}, target_server="b", timeout=3)
        assert result.success and result.responses["b"]["payload"] == "b"
        assert tls.handshakes >= 4  # publisher + subscriber of a and b, all over TLS
        assert tls.failed_handshakes >= 1  # d refused our certificate
        assert not wrong_password.bus.healthy and not wrong_ca.bus.healthy
        failed = wrong_password.emit_cross_server_and_wait("who", {}, target_server="a", timeout=1)
        assert failed.error_code == "REDIS_UNAVAILABLE"
        texts = [caplog.text]
        for adapter in adapters:
            texts += [repr(adapter), repr(adapter.bus)] + [repr(n) + n.label for n in adapter.bus.redis_nodes]
            texts.append(repr(adapter.get_cluster_nodes()))
        texts += [repr(entry) for entry in health]
        leaked = [t for t in texts if SECRET in t]
        assert not leaked, leaked[0][:500]
        # why c and d cannot connect is logged (only without the secret)
        assert "cannot connect" in caplog.text and "invalid username-password pair" in caplog.text
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    finally:
        for adapter in adapters:
            adapter.close(timeout=1)
        tls.close()
    record("redis_credentials", tls_handshakes=tls.handshakes, refused_handshakes=tls.failed_handshakes,
           log_records=len(caplog.records),
           secret_occurrences=0, wrong_password_healthy=False, wrong_ca_healthy=False)
