"""Nodes that nobody starts: the Redis side starts by itself, as the original connects in its
constructor; a gunicorn master never starts it, its workers do."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import gevent
import redis

import crossws_sync.cluster.lifecycle as lifecycle_module
from crossws_sync import WebSocketCrossServerAdapter
from support import free_port, repo_root, terminate_process, wait_for


def _node(redis_server, name, made, **options):
    adapter = WebSocketCrossServerAdapter(server_name=name, redis_config=[redis_server.url], **options)
    made.append(adapter)
    return adapter


def test_two_listener_only_nodes_answer_each_other_without_start(redis_server):
    made = []
    try:
        a, b = _node(redis_server, "a", made), _node(redis_server, "b", made)
        a.on_cross_server_event("ping", lambda data, reply: reply and reply("pong from a"))
        b.on_cross_server_event("ping", lambda data, reply: reply and reply("pong from b"))
        wait_for(lambda: b._bus is not None and a._bus is not None and b._bus.healthy,
                 timeout=2, message="both nodes live within a second or two")
        for asker, other in ((a, "b"), (b, "a")):
            result = asker.emit_cross_server_and_wait("ping", {}, target_server=other, timeout=3)
            assert result["success"], result
            assert list(result["responses"]) == [other]
    finally:
        for adapter in made:
            adapter.close(timeout=1)


def test_a_custom_channel_handler_receives_without_start(redis_server):
    made = []
    seen = []
    try:
        node = _node(redis_server, "listener", made, custom_channels=["app:events"])
        node.set_custom_channel_handler(lambda channel, message: seen.append((channel, message)))
        client = redis.Redis(port=redis_server.port)
        wait_for(lambda: client.pubsub_numsub("app:events")[0][1] == 1, timeout=3)
        client.publish("app:events", '{"hello": 1}')
        wait_for(lambda: seen == [("app:events", {"hello": 1})], timeout=3)
    finally:
        for adapter in made:
            adapter.close(timeout=1)


def test_autostart_false_stays_lazy_and_warns_with_the_fix(redis_server, monkeypatch, caplog):
    monkeypatch.setattr(lifecycle_module, "NOT_STARTED_WARNING_DELAY", 0.2)
    made = []
    try:
        node = _node(redis_server, "lazy", made, autostart=False)
        with caplog.at_level(logging.WARNING, logger="crossws_sync.server"):
            node.on_cross_server_event("ping", lambda data, reply: None)
            gevent.sleep(0.5)
        assert node._bus is None
        assert any("adapter.start()" in record.getMessage() for record in caplog.records)
        client = redis.Redis(port=redis_server.port)
        assert client.pubsub_numsub("csbp:server_bridge")[0][1] == 0
        node.start()
        wait_for(lambda: client.pubsub_numsub("csbp:server_bridge")[0][1] == 1, timeout=3)
    finally:
        for adapter in made:
            adapter.close(timeout=1)


def test_gunicorn_preload_with_a_patched_master_starts_only_the_workers(redis_server):
    port = free_port()
    env = dict(os.environ, CROSSWS_REDIS_URL=redis_server.url,
               PYTHONPATH=os.pathsep.join([repo_root(), os.path.join(repo_root(), "tests"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", "crossws_sync.gunicorn.GeventWebSocketWorker",
                             "-w", "2", "-b", "127.0.0.1:%d" % port, "--preload", "apps.patched_preload_app:app"],
                            cwd=repo_root(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    asker = WebSocketCrossServerAdapter(server_name="asker", redis_config=[redis_server.url])
    try:
        def answers():
            result = asker.emit_cross_server_and_wait("who", {}, expected_responses=None, timeout=1)
            return result.get("responses") or {}

        wait_for(lambda: len(answers()) >= 2, timeout=30, interval=0.3, message="both workers answering")
        gevent.sleep(1.0)  # a master that had started would answer too, as a third node
        responses = answers()
        pids = {response["payload"]["pid"] for response in responses.values()}
        assert len(responses) == 2 and len(pids) == 2 and proc.pid not in pids
        assert all(name == "preload-%d" % response["payload"]["pid"] for name, response in responses.items())
    finally:
        asker.close(timeout=1)
        terminate_process(proc)
