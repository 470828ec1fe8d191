"""The one-command demo (``python -m crossws_sync demo``), run as a real process tree.

The launcher is started as a child process against redis-server processes from the fixtures (or
against the Redis it starts itself); users talk to the node processes with the Python client, as
the chat page does, and the launcher is then stopped with a signal: every process it started
must be gone, and only those.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from typing import Any, Dict, List, Optional

import psutil
import pytest

from crossws_sync import WebSocketConnector
from crossws_sync.demo import launcher
from crossws_sync.demo.node import clean_name, clean_room, clean_text
from crossws_sync.errors import RedisUnavailableError
from demo_process import DemoProcess
from support import free_port, repo_root, wait_for


@pytest.fixture
def run_demo():
    started: List[DemoProcess] = []

    def run(*args: str, env: Optional[Dict[str, str]] = None) -> DemoProcess:
        demo = DemoProcess(list(args), env)
        started.append(demo)
        return demo

    yield run
    for demo in started:
        demo.cleanup()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return response.read()


def _ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://").rstrip("/") + "/ws"


class ChatUser:
    """A Python client in the role of a page: it records every server push it gets."""

    def __init__(self, http_url: str, name: str, room: str = "lobby") -> None:
        self.name = name
        self.events: List[Any] = []
        self.closes: List[Any] = []
        self.client = WebSocketConnector(_ws_url(http_url), custom_params={"name": name, "room": room},
                                         ping_interval=30.0)
        for event in ("welcome", "chat", "direct", "presence"):
            self.client.on(event, lambda payload, event=event: self.events.append((event, payload)))
        self.client.on("close", self.closes.append)
        assert self.client.wait_connected(10), "%s could not connect to %s" % (name, http_url)

    def got(self, event: str, **fields: Any) -> Optional[Dict[str, Any]]:
        for name, payload in self.events:
            if name == event and all(payload.get(k) == v for k, v in fields.items()):
                return payload
        return None

    def wait(self, event: str, **fields: Any) -> Dict[str, Any]:
        return wait_for(lambda: self.got(event, **fields), timeout=10,  # type: ignore[return-value]
                        message="%s to receive %s %s (got %s)" % (self.name, event, fields, self.events))

    def sees_online(self, name: str, node: str) -> bool:
        result = self.client.emit_and_wait("who", {})
        return result.success and {"name": name, "node": node, "room": "lobby"} in result.data["users"]


# Unit checks of the node's input rules ------------------------------------------------------------


def test_names_rooms_and_texts_are_checked():
    assert clean_name("  alice ") == "alice" and clean_name("Zoë B.") == "Zoë B."
    assert clean_name("") is None and clean_name("x" * 25) is None and clean_name("<b>") is None
    assert clean_name(["alice"]) is None and clean_name(" -x") is None
    assert clean_room("lobby") == "lobby" and clean_room("dev.ops-2") == "dev.ops-2"
    assert clean_room("two words") is None and clean_room("") is None and clean_room(None) is None
    assert clean_text("  hi  ") == "hi" and clean_text("   ") is None and len(clean_text("y" * 5000)) == 2000


# Finding Redis --------------------------------------------------------------------------------------


def _nothing_there() -> Dict[str, str]:
    return {launcher.ENV_DEFAULT_REDIS: "redis://127.0.0.1:%d" % free_port()}


def test_find_redis_uses_the_given_url_and_starts_nothing(redis_server):
    choice = launcher.find_redis(redis_server.url, env={})
    assert choice.url == redis_server.url and not choice.started_here
    assert "--redis" in choice.description and redis_server.url in choice.description
    from_env = launcher.find_redis(None, env={launcher.ENV_REDIS_URL: redis_server.url})
    assert from_env.url == redis_server.url and "CROSSWS_REDIS_URL" in from_env.description
    probed = launcher.find_redis(None, env={launcher.ENV_DEFAULT_REDIS: redis_server.url})
    assert probed.url == redis_server.url and "found a running Redis" in probed.description


def test_find_redis_refuses_a_given_url_that_does_not_answer():
    dead = "redis://127.0.0.1:%d" % free_port()
    with pytest.raises(RedisUnavailableError, match=r"--redis \(%s\) does not answer PING" % re.escape(dead)):
        launcher.find_redis(dead, env={})


def test_find_redis_starts_redis_server_from_path_and_stops_it():
    choice = launcher.find_redis(None, env=_nothing_there())
    try:
        assert choice.started_here and "started its own" in choice.description
        assert "redis-server on PATH" in choice.description
        assert launcher.redis_problem(choice.url) is None
    finally:
        choice.stop()
    assert choice.process is not None and choice.process.poll() is not None
    assert launcher.redis_problem(choice.url, timeout=0.3) is not None


def test_find_redis_explains_what_to_install_when_there_is_no_redis():
    with pytest.raises(RedisUnavailableError) as caught:
        launcher.find_redis(None, env=_nothing_there(), which=lambda name: None)
    message = str(caught.value)
    assert "apt-get install redis-server" in message and "--redis" in message
    assert "pip install" not in message  # the package is on no index


# The demo as a process tree ------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_three_nodes_users_on_different_nodes_chat_and_ctrl_c_stops_every_child(run_demo, redis_server):
    demo = run_demo("--nodes", "3", "--port", "0", "--redis", redis_server.url)
    urls = demo.wait_ready()
    assert sorted(urls) == ["node1", "node2", "node3"], demo.output
    assert "using the Redis given by --redis" in demo.output
    nodes = [p for p in demo.known_children if "crossws_sync.demo.node" in " ".join(p.cmdline())]
    assert len(nodes) == 3

    # Each node serves the page, the browser client and says who it is.
    page = _get(urls["node1"]).decode()
    assert 'id="login-form"' in page and '<script src="/ws-connector.js">' in page
    assert all(ref.startswith("/") for ref in re.findall(r'(?:src|href)="([^"]*)"', page))  # nothing external
    assert b"WebSocketConnector" in _get(urls["node2"] + "ws-connector.js")
    assert b"emitWithPromise" in _get(urls["node3"] + "chat.js")
    assert json.loads(_get(urls["node2"] + "api/info")) == {"node": "node2"}

    alice = ChatUser(urls["node1"], "alice")
    bob = ChatUser(urls["node2"], "bob")
    assert alice.wait("welcome")["node"] == "node1" and bob.wait("welcome")["node"] == "node2"
    wait_for(lambda: alice.sees_online("bob", "node2") and bob.sees_online("alice", "node1"), timeout=10,
             message="alice and bob to see each other online on their nodes")
    alice.wait("presence", name="bob", node="node2", online=True)

    # A room message from node1 reaches the room on node2 (and its sender).
    ack = alice.client.emit_and_wait("say", {"text": "hello from node1"})
    assert ack.success and ack.data == {"ok": True, "room": "lobby"}
    message = bob.wait("chat", text="hello from node1")
    assert message["from"] == "alice" and message["node"] == "node1" and message["room"] == "lobby"
    alice.wait("chat", text="hello from node1")

    # A direct message from node2 reaches alice on node1, and the ack says where she is.
    ack = bob.client.emit_and_wait("dm", {"to": "alice", "text": "psst"})
    assert ack.success and ack.data["ok"] and ack.data["node"] == "node1"
    direct = alice.wait("direct", text="psst")
    assert direct["from"] == "bob" and direct["node"] == "node2" and direct["to"] == "alice"
    assert bob.got("direct") is None
    refused = bob.client.emit_and_wait("dm", {"to": "nobody", "text": "?"})
    assert refused.data == {"ok": False, "error": "nobody is not online"}

    # The node list comes from every node over the bus, with the ports the launcher printed.
    listed = alice.client.emit_and_wait("nodes", {})
    assert listed.success
    assert {n["name"]: "http://127.0.0.1:%d/" % n["port"] for n in listed.data} == urls

    # Leaving is seen on the other node.
    bob.client.manual_close()
    alice.wait("presence", name="bob", node="node2", online=False)

    assert demo.stop_with(signal.SIGINT) == 0
    assert "stopped 3 nodes." in demo.output
    assert "Redis server it started" not in demo.output
    for node in nodes:
        assert not node.is_running() or node.status() == psutil.STATUS_ZOMBIE, "%s still running" % node
    wait_for(lambda: alice.closes, message="alice's connection to end")
    assert alice.closes[0].code == 1012  # service restart, with a retry hint
    assert "PONG" in redis_server.command("PING"), "the demo must not stop a Redis it did not start"
    alice.client.manual_close()


@pytest.mark.timeout(60)
def test_started_redis_is_stopped_with_the_demo_on_sigterm(run_demo):
    demo = run_demo("--nodes", "1", "--port", "0", "--quiet", env=_nothing_there())
    urls = demo.wait_ready()
    assert list(urls) == ["node1"]
    match = re.search(r"started its own: (\S+) \(redis-server on PATH\) at (redis://\S+), pid (\d+)", demo.output)
    assert match, demo.output
    redis_pid = int(match.group(3))
    assert redis_pid in [p.pid for p in demo.known_children]
    assert launcher.redis_problem(match.group(2)) is None
    user = ChatUser(urls["node1"], "solo")
    user.wait("welcome", node="node1")
    user.client.manual_close()

    assert demo.stop_with(signal.SIGTERM) == 0
    assert "stopped 1 node and the Redis server it started (pid %d)." % redis_pid in demo.output
    for child in demo.known_children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child
    assert launcher.redis_problem(match.group(2), timeout=0.3) is not None


@pytest.mark.timeout(60)
def test_a_node_that_dies_is_reported_and_the_others_go_on(run_demo, redis_server):
    demo = run_demo("--nodes", "2", "--port", "0", "--redis", redis_server.url, "--quiet")
    urls = demo.wait_ready()
    user = ChatUser(urls["node1"], "survivor")
    node2 = next(p for p in demo.known_children if "node2" in p.cmdline())
    node2.kill()
    wait_for(lambda: "node2 exited with code -9; 1 node still running" in demo.output, timeout=10)
    # The cluster forgets the dead node (no heartbeat), node1 keeps serving.
    wait_for(lambda: [n["name"] for n in user.client.emit_and_wait("who", {}).data["nodes"]] == ["node1"], timeout=10,
             message="node1 to drop node2 from the cluster")
    assert b"login-form" in _get(urls["node1"])
    assert demo.proc.poll() is None
    user.client.manual_close()
    assert demo.stop_with(signal.SIGINT) == 0
    assert "stopped 1 node." in demo.output
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in demo.known_children)


def test_a_busy_port_is_reported_before_anything_starts(run_demo):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        demo = run_demo("--nodes", "2", "--port", str(port), "--redis", "redis://127.0.0.1:1")
        assert demo.proc.wait(30) == 2
    demo.reader.join(timeout=5)
    assert "port %d is in use" % port in demo.output


def test_usage():
    proc = subprocess.run([sys.executable, "-m", "crossws_sync"], capture_output=True, text=True, timeout=60,
                          cwd=repo_root())
    assert proc.returncode == 2 and "demo" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "crossws_sync", "demo", "--nodes", "0"], capture_output=True,
                          text=True, timeout=60, cwd=repo_root())
    assert proc.returncode == 2 and "--nodes must be between 1" in proc.stderr
