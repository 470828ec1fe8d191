"""crossws_sync.server.gunicorn: real gunicorn with several GeventWebSocketWorker workers.

Workers serve WebSockets and HTTP on one port, close their clients with 1012 and a retry hint on SIGTERM, and each
worker is a cluster node (also with ``--preload``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import gevent
import pytest

from rawclient import RawClient
from support import free_port, http_get, repo_root, terminate_process, wait_for


def _start_gunicorn(port, workers, extra_env=None, extra_args=()):
    env = dict(os.environ)
    env.update(extra_env or {})
    env["PYTHONPATH"] = repo_root() + os.pathsep + env.get("PYTHONPATH", "")
    args = [sys.executable, "-m", "gunicorn", "-k", "crossws_sync.gunicorn.GeventWebSocketWorker",
            "-w", str(workers), "-b", "127.0.0.1:%d" % port, "--no-control-socket", "--graceful-timeout", "10",
            "--access-logfile", "-", *extra_args, "examples.flask_gunicorn.app:app"]
    proc = subprocess.Popen(args, cwd=repo_root(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def ready():
        try:
            return http_get(port, "/")[0] == 200
        except OSError:
            return False

    wait_for(ready, timeout=30, message="gunicorn to serve")
    return proc


def test_gunicorn_two_workers_serve_websockets_and_http_and_close_1012_on_sigterm():
    port = free_port()
    proc = _start_gunicorn(port, 2)
    try:
        pids = set()
        clients = []

        def connect(i):
            client = RawClient(port, "/ws?id=u%d" % i)
            client.send_json({"event": "whoami", "payload": {}, "callbackId": "w"})
            pids.add(client.recv_json(timeout=10)["payload"]["pid"])
            clients.append(client)

        for batch in range(5):  # connect in concurrent batches until both workers took some
            gevent.joinall([gevent.spawn(connect, batch * 20 + i) for i in range(20)], timeout=20, raise_error=True)
            if len(pids) == 2:
                break
            gevent.sleep(0.5)
        assert len(pids) == 2, "connections should land on both workers"
        proc.send_signal(signal.SIGTERM)
        closes = [c.recv_close(timeout=15) for c in clients]
        assert {code for code, _ in closes} == {1012} and len(closes) == len(clients)
        assert all(reason.startswith("service restart retry=") for _, reason in closes)
        proc.wait(20)
        output = proc.stdout.read().decode(errors="replace")
        # gunicorn's access log records each upgrade (its default format: "request line" status)
        assert '"GET /ws?id=u0 HTTP/1.1" 101 ' in output, output[-2000:]
        assert "MonkeyPatchWarning" not in output  # importing crossws_sync imports neither redis nor ssl
    finally:
        terminate_process(proc)


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_gunicorn_workers_are_cluster_nodes(redis_server, preload):
    port = free_port()
    proc = _start_gunicorn(port, 3, extra_env={"CROSSWS_REDIS_URL": redis_server.url, "CROSSWS_NODE_HEARTBEAT": "0.3"},
                           extra_args=("--preload",) if preload else ())
    try:
        by_pid = {}
        clients = []

        def connect(i):
            client = RawClient(port, "/ws?id=user%d" % i)
            client.send_json({"event": "whoami", "payload": {}, "callbackId": "w"})
            reply = client.recv_json(timeout=10)["payload"]
            clients.append(client)
            by_pid.setdefault(reply["pid"], (client, "user%d" % i, reply["node"]))

        for batch in range(10):
            gevent.joinall([gevent.spawn(connect, batch * 15 + i) for i in range(15)], timeout=20, raise_error=True)
            if len(by_pid) >= 2:
                break
            gevent.sleep(0.3)
        assert len(by_pid) >= 2, "clients should land on several workers"
        (x, x_id, x_node), (y, y_id, y_node) = list(by_pid.values())[:2]
        assert x_node != y_node and x_node.startswith("worker-")

        def nodes_seen():
            x.send_json({"event": "nodes", "payload": {}, "callbackId": "n"})
            return len(_skip_pushes(x)["payload"]) == 3

        wait_for(nodes_seen, timeout=15, interval=0.2, message="3 workers in the cluster registry")
        # cross-server listeners registered at import time (before the fork with --preload) answer
        x.send_json({"event": "askAll", "payload": {}, "callbackId": "a"})
        answered = _skip_pushes(x)["payload"]
        assert len(answered) == 3 and all(name.startswith("worker-") for name in answered)
        x.send_json({"event": "direct", "payload": {"to": y_id, "text": "psst"}, "callbackId": "d"})
        assert _next_event(y, "direct")["payload"] == {"from": x_id, "text": "psst"}
        y.send_json({"event": "join", "payload": {"room": "r1"}, "callbackId": "j"})
        _skip_pushes(y)
        x.send_json({"event": "sayRoom", "payload": {"room": "r1", "text": "to the room"}, "callbackId": "s"})
        assert _next_event(y, "room")["payload"] == {"from": x_id, "text": "to the room"}
        y.send_json({"event": "shout", "payload": {"text": "all"}, "callbackId": "b"})
        assert _next_event(x, "shout")["payload"] == {"from": y_id, "text": "all"}
    finally:
        terminate_process(proc)


def _skip_pushes(client):
    """Next ack frame (skipping pushed events)."""
    while True:
        message = client.recv_json(timeout=10)
        if "callbackId" in message:
            return message


def _next_event(client, name):
    while True:
        message = client.recv_json(timeout=10)
        if message.get("event") == name:
            return message
