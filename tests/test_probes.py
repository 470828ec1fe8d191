"""crossws_sync.cluster.probes: /healthz and /readyz on real nodes, and the readiness rules.

/readyz answers 200, then 503 when the only Redis is killed, 200 again once it is back, and 503
while the node shuts down; /healthz answers 200 while the process serves; health off serves
neither path.
"""
from __future__ import annotations

import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Tuple

import gevent
import pytest
from gevent import pywsgi
from rawclient import RawClient
from support import wait_for

from crossws_sync.cluster.probes import node_readiness
from crossws_sync.errors import ConfigError
from crossws_sync import WebSocketCrossServerAdapter
from crossws_sync.server.wsgi import WebSocketHandler

pytestmark = pytest.mark.timeout(60)

PING = 0.3


def get(port: int, path: str) -> Tuple[int, str]:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_readyz_follows_redis_down_and_back(make_adapter, redis_server):
    adapter = make_adapter(health=True, redis_config=[redis_server.config], redis_ping_interval=PING,
                           redis_ping_timeout=PING, node_heartbeat_interval=0.2).start()
    port = adapter.port
    wait_for(lambda: get(port, "/readyz") == (200, "ready\n"), timeout=10, message="ready")
    assert get(port, "/healthz") == (200, "ok\n")
    redis_server.kill()
    wait_for(lambda: get(port, "/readyz") == (503, "redis unreachable\n"), timeout=10, message="503 with Redis down")
    assert get(port, "/healthz") == (200, "ok\n")  # alive all the same
    redis_server.start()
    wait_for(lambda: get(port, "/readyz") == (200, "ready\n"), timeout=15, message="200 with Redis back")


def test_readyz_is_503_during_shutdown_and_healthz_still_200(make_adapter):
    adapter = make_adapter(health=True, ws_options={"no_server": True})
    server = pywsgi.WSGIServer(("127.0.0.1", 0), adapter.wsgi_middleware(None, path="/ws"),
                               handler_class=WebSocketHandler, log=None)
    server.start()
    try:
        port = server.server_port
        assert get(port, "/readyz") == (200, "ready\n")
        lingering = RawClient(port, "/ws")  # never answers the close frame: the shutdown waits for it
        stopping = gevent.spawn(adapter.shutdown, timeout=3)
        wait_for(lambda: get(port, "/readyz") == (503, "shutting down\n"), message="503 while shutting down")
        assert not stopping.ready()
        assert get(port, "/healthz") == (200, "ok\n")
        stopping.join(10)
        assert get(port, "/readyz") == (503, "shutting down\n")
        lingering.abort()
    finally:
        server.stop(timeout=1)


def test_health_off_serves_neither_path_and_head_works(make_adapter):
    off = make_adapter(ws_options={"path": "/ws"}).start()
    assert get(off.port, "/healthz")[0] == 404
    assert get(off.port, "/readyz")[0] == 404
    on = make_adapter(health={"liveness_path": "/live", "readiness_path": "/ready"}, ws_options={"path": "/ws"}).start()
    assert get(on.port, "/live") == (200, "ok\n")
    assert get(on.port, "/ready") == (200, "ready\n")
    assert get(on.port, "/healthz")[0] == 404
    request = urllib.request.Request("http://127.0.0.1:%d/ready" % on.port, method="HEAD")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200 and response.read() == b""


def test_bad_health_options_are_refused():
    for value in ({"liveness": "/x"}, {"liveness_path": "x"}, {"liveness_path": "/a", "readiness_path": "/a"}, "yes"):
        with pytest.raises(ConfigError):
            WebSocketCrossServerAdapter(ws_options={"no_server": True}, health=value)


def test_readiness_rules():
    membership = SimpleNamespace(registered=False)
    bus = SimpleNamespace(healthy=False)
    runtime = SimpleNamespace(redis_enabled=True, bus=None, router=None)
    state = {"closed": False, "started": False}
    readiness = node_readiness(runtime=runtime, closed=lambda: state["closed"],  # type: ignore[arg-type]
                               started=lambda: state["started"])
    assert readiness() == (False, "not started")
    state["started"] = True
    runtime.bus, runtime.router = bus, SimpleNamespace(membership=membership)
    assert readiness() == (False, "redis unreachable")
    bus.healthy = True
    assert readiness() == (False, "not registered")
    membership.registered = True
    assert readiness() == (True, "ready")
    state["closed"] = True
    assert readiness() == (False, "shutting down")
    no_redis = node_readiness(runtime=SimpleNamespace(redis_enabled=False), closed=lambda: False,  # type: ignore[arg-type]
                              started=lambda: False)
    assert no_redis() == (True, "ready")
