"""crossws_sync.cluster.metrics: /metrics served by a real node, read by real scrapes.

Real servers, raw WebSocket clients and real redis-server processes; every count is checked
exactly (25 clients open: the gauge says 25), the bus metrics per Redis node, the metrics under
the WSGI middleware, the auth hook, metrics off, and the multiprocess directory of gunicorn
workers (two exports merged).
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Tuple

import gevent
import pytest
from gevent import pywsgi
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from rawclient import HandshakeRejected, RawClient
from support import wait_for

from crossws_sync import Reject, WebSocketCrossServerAdapter
from crossws_sync.cluster.metrics import STALE_AFTER, MultiprocessExport
from crossws_sync.errors import ConfigError
from crossws_sync.server.wsgi import WebSocketHandler
from crossws_sync.wire import frames

pytestmark = pytest.mark.timeout(60)

PING = 0.3


def get(port: int, path: str, headers: Optional[Dict[str, str]] = None) -> Tuple[int, str]:
    """``(status, body)`` of a GET, 4xx and 5xx included."""
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(port: int) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: ``(name, sorted labels) -> value``."""
    status, text = get(port, "/metrics")
    assert status == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(port: int, name: str, **labels: str) -> Optional[float]:
    return scrape(port).get((name, tuple(sorted(labels.items()))))


def masked_size(payload: bytes) -> int:
    """Bytes on the wire of one masked client frame carrying ``payload``."""
    return len(frames.encode_frame(frames.OP_TEXT, payload, mask=True))


def test_25_clients_make_the_gauge_25_and_5_closes_are_counted_by_code(make_adapter):
    adapter = make_adapter(server_name="m1", metrics=True).start()
    port = adapter.port
    assert value(port, "crossws_connections", node="m1") == 0
    clients = [RawClient(port, "/?n=%d" % i) for i in range(25)]
    wait_for(lambda: value(port, "crossws_connections", node="m1") == 25, message="the gauge to say 25")
    assert value(port, "crossws_connections_accepted_total", node="m1") == 25
    for client in clients[:5]:
        client.close(1000, "bye")
    for client in clients[:5]:
        assert client.recv_close()[0] == 1000
    wait_for(lambda: value(port, "crossws_connections", node="m1") == 20, message="the gauge to say 20")
    samples = scrape(port)
    assert samples[("crossws_connections_closed_total", (("code", "1000"), ("node", "m1")))] == 5
    assert samples[("crossws_connections_accepted_total", (("node", "m1"),))] == 25
    clients[5].abort()  # no close frame: 1006
    wait_for(lambda: value(port, "crossws_connections_closed_total", node="m1", code="1006") == 1)
    assert value(port, "crossws_connections", node="m1") == 19
    for client in clients[6:]:
        client.abort()


def test_a_slow_consumer_close_is_counted_and_the_outbox_gauge_returns_to_0(make_adapter):
    import socket

    adapter = make_adapter(server_name="m5", metrics=True, max_outbox_bytes=256 * 1024).start()
    port = adapter.port
    slow = RawClient(port, "/?id=slow")
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    wait_for(lambda: value(port, "crossws_connections", node="m5") == 1)
    assert value(port, "crossws_slow_consumer_closes_total", node="m5") == 0
    payload = {"blob": "z" * 20000}
    for _ in range(400):  # 8 MB: more than the kernel's buffers and the 256 kB outbox
        adapter.broadcast("tick", payload)
        gevent.sleep(0.001)
    wait_for(lambda: value(port, "crossws_slow_consumer_closes_total", node="m5") == 1, timeout=10,
             message="the slow consumer closed and counted")
    samples = scrape(port)
    assert samples[("crossws_connections_closed_total", (("code", "1008"), ("node", "m5")))] == 1
    assert samples[("crossws_outbox_bytes", (("node", "m5"),))] == 0
    assert samples[("crossws_connections", (("node", "m5"),))] == 0
    slow.abort()


def test_messages_and_bytes_in_and_out_increase_by_exact_amounts(make_adapter):
    adapter = make_adapter(server_name="m2", metrics=True)
    adapter.on_websocket_event("echo", lambda socket, payload, callback: callback and callback(payload))
    adapter.start()
    port = adapter.port
    clients = [RawClient(port, "/") for _ in range(3)]
    wait_for(lambda: value(port, "crossws_connections", node="m2") == 3)
    before = scrape(port)

    def delta(after: Any, name: str) -> float:
        key = (name, (("node", "m2"),))
        return after[key] - before[key]

    sent_bytes = 0
    received_bytes = 0
    for index, client in enumerate(clients):
        for n in range(4):
            text = json.dumps({"event": "echo", "payload": {"n": n}, "callbackId": "c%d%d" % (index, n)})
            client.send_text(text)
            sent_bytes += masked_size(text.encode())
            opcode, payload = client.recv_frame()
            assert opcode == frames.OP_TEXT
            received_bytes += len(frames.encode_frame(frames.OP_TEXT, payload, mask=False))
    assert adapter.broadcast("news", {"x": 1}) == 3
    for client in clients:
        opcode, payload = client.recv_frame()
        received_bytes += len(frames.encode_frame(frames.OP_TEXT, payload, mask=False))
    after = scrape(port)
    assert delta(after, "crossws_messages_received_total") == 12
    assert delta(after, "crossws_messages_sent_total") == 12 + 3
    assert delta(after, "crossws_received_bytes_total") == sent_bytes
    assert delta(after, "crossws_sent_bytes_total") == received_bytes
    assert delta(after, "crossws_broadcast_fanout_seconds_count") == 1
    assert after[("crossws_broadcast_fanout_seconds_sum", (("node", "m2"),))] > 0
    # Counts of closed connections stay in the totals.
    for client in clients:
        client.close()
        client.recv_close()
    wait_for(lambda: value(port, "crossws_connections", node="m2") == 0)
    final = scrape(port)
    assert delta(final, "crossws_messages_received_total") == 12
    assert final[("crossws_sent_bytes_total", (("node", "m2"),))] == after[("crossws_sent_bytes_total", (("node", "m2"),))]


def test_refused_upgrades_are_counted_by_reason(make_adapter):
    def authenticate(request):
        if "deny" in request.query_string:
            return False
        if "reject" in request.query_string:
            raise Reject(429, "slow down")
        if "boom" in request.query_string:
            raise RuntimeError("hook bug")
        return True

    adapter = make_adapter(server_name="m3", metrics=True, authenticate=authenticate).start()
    port = adapter.port
    attempts = [("/", {"Origin": "http://evil.example"}, 403), ("/?deny=1", {}, 401), ("/?reject=1", {}, 429),
                ("/?boom=1", {}, 500), ("/?deny=2", {}, 401)]
    for path, headers, status in attempts:
        with pytest.raises(HandshakeRejected) as refused:
            RawClient(port, path, headers=headers)
        assert refused.value.status == status
    RawClient(port, "/").close()
    samples = scrape(port)

    def rejected(reason: str) -> float:
        return samples[("crossws_connections_rejected_total", (("node", "m3"), ("reason", reason)))]

    assert rejected("origin") == 1
    assert rejected("auth_refused") == 3
    assert rejected("auth_error") == 1
    assert rejected("too_many_connections") == 0
    assert samples[("crossws_connections_accepted_total", (("node", "m3"),))] == 1


def test_bus_metrics_per_redis_node_and_health_drops_to_0_when_that_redis_is_killed(make_adapter, redis_factory):
    first, second = redis_factory(), redis_factory()
    adapter = make_adapter(server_name="m4", metrics=True, redis_config=[first.config, second.config],
                           redis_ping_interval=PING, redis_ping_timeout=PING, node_heartbeat_interval=0.2).start()
    port = adapter.port
    labels = ["127.0.0.1:%d" % first.port, "127.0.0.1:%d" % second.port]
    wait_for(lambda: all(value(port, "crossws_redis_up", node="m4", redis=label) == 1 for label in labels),
             timeout=10, message="both Redis nodes up")
    for _ in range(100):
        adapter.broadcast("tick", 1)

    def lag_count():
        samples = scrape(port)
        return sum(samples.get(("crossws_bus_delivery_lag_seconds_count", (("node", "m4"), ("redis", label))), 0)
                   for label in labels)

    wait_for(lambda: lag_count() >= 100 // 16, timeout=10, message="one timed echo in 16")
    samples = scrape(port)
    for label in labels:
        key = (("le", "+Inf"), ("node", "m4"), ("redis", label))
        if ("crossws_bus_delivery_lag_seconds_bucket", key) in samples:
            count = samples[("crossws_bus_delivery_lag_seconds_count", key[1:])]
            assert samples[("crossws_bus_delivery_lag_seconds_bucket", key)] == count
            assert 0 < samples[("crossws_bus_delivery_lag_seconds_sum", key[1:])] < count * 5.0
    published = sum(samples[("crossws_bus_published_total", (("node", "m4"), ("redis", label)))] for label in labels)
    received = sum(samples[("crossws_bus_received_total", (("node", "m4"), ("redis", label)))] for label in labels)
    assert published >= 100  # the broadcasts, plus heartbeats
    assert received > 0  # our own heartbeats come back (echoes)
    for name in ("crossws_bus_decode_errors_total", "crossws_bus_failovers_total"):
        assert all((name, (("node", "m4"), ("redis", label))) in samples for label in labels)
    assert samples[("crossws_cluster_nodes", (("node", "m4"),))] == 1
    assert samples[("crossws_signature_failures_total", (("node", "m4"),))] == 0
    assert samples[("crossws_outage_buffer_messages", (("node", "m4"),))] == 0
    second.kill()
    wait_for(lambda: value(port, "crossws_redis_up", node="m4", redis=labels[1]) == 0, timeout=10,
             message="the killed node to report 0")
    assert value(port, "crossws_redis_up", node="m4", redis=labels[0]) == 1
    assert value(port, "crossws_ready", node="m4") == 1  # one healthy Redis node is enough
    second.start()
    wait_for(lambda: value(port, "crossws_redis_up", node="m4", redis=labels[1]) == 1, timeout=15,
             message="the restarted node to report 1")


def test_rpc_duration_and_timeouts(cluster):
    nodes = cluster(2, metrics=True)
    nodes[1].on_cross_server_event("ask", lambda message, reply: reply({"ok": True}))
    port = nodes[0].port
    result = nodes[0].emit_cross_server_with_promise("ask", {}, target_server="node1", timeout=5,
                                                     expected_responses=1).get(timeout=10)
    assert result.success
    nodes[0].emit_cross_server_with_promise("silence", {}, target_server="node1", timeout=0.2,
                                            expected_responses=1).get(timeout=10)
    samples = scrape(port)
    assert samples[("crossws_rpc_duration_seconds_count", (("node", "node0"),))] == 1
    assert samples[("crossws_rpc_duration_seconds_sum", (("node", "node0"),))] > 0
    assert samples[("crossws_rpc_timeouts_total", (("node", "node0"),))] == 1
    assert samples[("crossws_cluster_nodes", (("node", "node0"),))] == 2


def test_metrics_are_served_by_the_wsgi_middleware_on_the_apps_port(make_adapter):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app:" + environ["PATH_INFO"].encode()]

    adapter = make_adapter(server_name="m5", metrics=True, health=True, ws_options={"no_server": True})
    server = pywsgi.WSGIServer(("127.0.0.1", 0), adapter.wsgi_middleware(app, path="/ws"),
                               handler_class=WebSocketHandler, log=None)
    server.start()
    try:
        port = server.server_port
        assert get(port, "/page") == (200, "app:/page")
        assert get(port, "/metrics/extra") == (200, "app:/metrics/extra")  # exact paths only
        clients = [RawClient(port, "/ws") for _ in range(4)]
        wait_for(lambda: value(port, "crossws_connections", node="m5") == 4)
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (200, "ready\n")
        for client in clients:
            client.abort()
    finally:
        server.stop(timeout=1)


def test_metrics_off_means_the_path_is_not_served(make_adapter):
    adapter = make_adapter(ws_options={"path": "/ws"}).start()
    assert get(adapter.port, "/metrics")[0] == 404

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the app's own /metrics"]

    mounted = make_adapter(ws_options={"no_server": True})
    server = pywsgi.WSGIServer(("127.0.0.1", 0), mounted.wsgi_middleware(app), handler_class=WebSocketHandler, log=None)
    server.start()
    try:
        assert get(server.server_port, "/metrics") == (200, "the app's own /metrics")
    finally:
        server.stop(timeout=1)


def test_auth_hook_and_custom_path(make_adapter):
    adapter = make_adapter(metrics={"path": "/internal/metrics",
                                    "auth": lambda request: request.headers.get("authorization") == "Bearer t"}).start()
    port = adapter.port
    assert get(port, "/internal/metrics")[0] == 403
    status, text = get(port, "/internal/metrics", headers={"Authorization": "Bearer t"})
    assert status == 200 and "crossws_connections" in text
    assert get(port, "/metrics")[0] == 426  # no ws path: every path is the WebSocket endpoint


def test_bad_options_are_refused():
    with pytest.raises(ConfigError):
        WebSocketCrossServerAdapter(ws_options={"no_server": True}, metrics={"pth": "/m"})
    with pytest.raises(ConfigError):
        WebSocketCrossServerAdapter(ws_options={"no_server": True}, metrics={"path": "metrics"})
    with pytest.raises(ConfigError):
        WebSocketCrossServerAdapter(ws_options={"no_server": True}, metrics={"auth": "yes"})
    with pytest.raises(ConfigError):
        WebSocketCrossServerAdapter(metrics=True)  # nothing would serve it
    with pytest.raises(ConfigError):
        WebSocketCrossServerAdapter(ws_options={"no_server": True}, metrics={"path": "/readyz"}, health=True)


def test_multiprocess_directory_merges_every_live_workers_file(tmp_path):
    """Two workers' exports: a scrape of either answers for both; a stale file is dropped."""
    directory = str(tmp_path)
    other = ('# HELP crossws_connections Open WebSocket connections\n# TYPE crossws_connections gauge\n'
             'crossws_connections{node="worker-b"} 7.0\n'
             '# HELP crossws_messages_received_total x\n# TYPE crossws_messages_received_total counter\n'
             'crossws_messages_received_total{node="worker-b"} 3.0\n')
    with open(os.path.join(directory, "crossws-999999.prom"), "w") as stream:
        stream.write(other)
    stale = os.path.join(directory, "crossws-999998.prom")
    with open(stale, "w") as stream:
        stream.write(other.replace("worker-b", "gone"))
    old = time.time() - STALE_AFTER - 5
    os.utime(stale, (old, old))
    export = MultiprocessExport(directory, CollectorRegistry())
    own = ('# HELP crossws_connections Open WebSocket connections\n# TYPE crossws_connections gauge\n'
           'crossws_connections{node="worker-a"} 2.0\n').encode()
    text = export.merged(own).decode()
    samples = {(s.name, s.labels["node"]): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples == {("crossws_connections", "worker-a"): 2, ("crossws_connections", "worker-b"): 7,
                       ("crossws_messages_received_total", "worker-b"): 3}
    assert text.count("# TYPE crossws_connections gauge") == 1  # one family, two samples
    assert not os.path.exists(stale)
    assert os.path.exists(export.own_file)
    export.stop()
    assert not os.path.exists(export.own_file)


def test_multiprocess_export_writes_by_itself_once_started(make_adapter, tmp_path):
    adapter = make_adapter(server_name="w1", metrics={"multiprocess_dir": str(tmp_path)}).start()
    own = os.path.join(str(tmp_path), "crossws-%d.prom" % os.getpid())
    wait_for(lambda: os.path.exists(own), message="the worker's file")
    with open(own) as stream:
        assert 'crossws_connections{node="w1"} 0.0' in stream.read()
    adapter.close(timeout=1)
    assert not os.path.exists(own)


def test_gunicorn_two_workers_one_scrape_answers_for_both(tmp_path):
    """Real gunicorn, two workers behind one port: whichever worker a scrape reaches, the sum of
    ``crossws_connections`` over ``node`` is the number of clients open on both."""
    import subprocess
    import sys

    from support import free_port, repo_root, terminate_process

    port = free_port()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    env["PYTHONPATH"] = repo_root() + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", "crossws_sync.server.gunicorn.GeventWebSocketWorker",
                             "-w", "2", "-b", "127.0.0.1:%d" % port, "--no-control-socket", "--graceful-timeout", "5",
                             "examples.flask_gunicorn.app:app"], cwd=repo_root(), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _serves(port), timeout=30, message="gunicorn to serve")
        pids = set()
        clients = []
        for batch in range(10):  # connect in concurrent batches until both workers took some
            def connect(i: int) -> None:
                client = RawClient(port, "/ws?id=u%d" % i)
                client.send_json({"event": "whoami", "payload": {}, "callbackId": "w"})
                pids.add(client.recv_json(timeout=10)["payload"]["pid"])
                clients.append(client)

            gevent.joinall([gevent.spawn(connect, batch * 20 + i) for i in range(20)], timeout=20, raise_error=True)
            if len(pids) == 2:
                break
            gevent.sleep(0.5)  # the other worker may still be starting
        assert len(pids) == 2, "connections should land on both workers"

        def open_connections() -> Dict[str, float]:
            status, text = get(port, "/metrics")
            assert status == 200
            return {sample.labels["node"]: sample.value for family in text_string_to_metric_families(text)
                    if family.name == "crossws_connections" for sample in family.samples}

        wait_for(lambda: sum(open_connections().values()) == len(clients) and len(open_connections()) == 2,
                 timeout=20, message="one scrape to count %d clients on two workers" % len(clients))
        for _ in range(6):  # whichever worker answers
            assert sum(open_connections().values()) == len(clients)
        assert get(port, "/healthz") == (200, "ok\n")
        for client in clients:
            client.abort()
    finally:
        terminate_process(proc)


def _serves(port: int) -> bool:
    try:
        return get(port, "/")[0] == 200
    except OSError:
        return False
