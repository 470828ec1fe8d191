"""The browser client (crossws_sync/static/ws-connector.js) against a live server, driven from Node 20.

Each scenario in tests/js/scenarios.js is one Node process that loads a build of the connector
(classic script through require, the ES module, or the minified file) with a WebSocket
implementation (Node's WHATWG WebSocket, as in browsers, or the "ws" package) and asserts what the
application sees. The process asks this driver, over stdin/stdout, to stop/start the server, to
broadcast, or for what the server observed (connections, frames, close codes).

Node and npm are required: the tests fail loudly when they are missing. ``npm ci`` in tests/js
installs the "ws" package (and terser, used by crossws_sync/static/build.py).
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional

import gevent
import pytest

from support import free_port, repo_root, terminate_process, wait_for

JS_DIR = os.path.join(repo_root(), "tests", "js")
STATIC_DIR = os.path.join(repo_root(), "crossws_sync", "static")
SCENARIO_TIMEOUT = 30.0


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH: install Node.js 20 (apt-get install nodejs npm) to test the browser client")
    return node


@pytest.fixture(scope="module")
def node_ready() -> str:
    """Node on PATH and tests/js/node_modules installed from the committed lock file."""
    node = _node()
    if not os.path.exists(os.path.join(JS_DIR, "node_modules", "ws", "package.json")):
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not on PATH: install npm to run `npm ci` in tests/js")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=300,
                       stdout=subprocess.DEVNULL)
    return node


# ---------------------------------------------------------------------------------------------
# Servers under test. Both implement the same handlers:
#   say -> ack {"echo": payload}; twice -> ack {"n": 1} then {"n": 2}; slow -> never acks;
#   delay -> ack {"delayed": ms} after payload["ms"] ms; kick -> close(payload code, reason).
# and record {"type": "connection" | "close" | "message", ...} observations.
# ---------------------------------------------------------------------------------------------


class NodeWsServer:
    """tests/js/test-server.js: a stand-in server on the "ws" package."""

    def __init__(self, node: str, port: int) -> None:
        self.node = node
        self.port = port
        self.log: List[Dict[str, Any]] = []
        self.proc: Optional[subprocess.Popen] = None
        self.reader: Optional[gevent.Greenlet] = None

    @property
    def url(self) -> str:
        return "ws://127.0.0.1:%d" % self.port

    def start(self) -> None:
        self.proc = subprocess.Popen([self.node, os.path.join(JS_DIR, "test-server.js"), str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=JS_DIR, text=True)
        proc = self.proc
        listening: List[bool] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                entry = json.loads(line)
                if entry["type"] == "listening":
                    listening.append(True)
                else:
                    self.log.append(entry)

        self.reader = gevent.spawn(read)
        wait_for(lambda: listening, timeout=10, message="test-server.js listening")

    def stop(self) -> None:
        if self.proc is not None:
            terminate_process(self.proc)
            self.proc = None
        if self.reader is not None:
            self.reader.join(5)
            self.reader = None

    def broadcast(self, event: str, data: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        before = sum(1 for entry in self.log if entry["type"] == "broadcasted")
        self.proc.stdin.write(json.dumps({"cmd": "broadcast", "event": event, "data": data}) + "\n")
        self.proc.stdin.flush()
        wait_for(lambda: sum(1 for entry in self.log if entry["type"] == "broadcasted") > before, timeout=5,
                 message="broadcast of %s" % event)


@pytest.fixture
def server(node_ready: str) -> Iterator[NodeWsServer]:
    srv = NodeWsServer(node_ready, free_port())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def blackhole_url() -> Iterator[str]:
    """A port that completes the TCP handshake but never answers the HTTP upgrade."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield "ws://127.0.0.1:%d" % sock.getsockname()[1]
    sock.close()


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def run_scenario(node: str, name: str, server: NodeWsServer, blackhole: str, build: str = "js",
                 impl: str = "native") -> None:
    """Run one scenario in Node, answer its control requests, fail with its message if it fails."""
    args = [node]
    if impl == "native":
        args.append("--experimental-websocket")
    args += [os.path.join(JS_DIR, "run.js"), name, build, impl, server.url, "ws://127.0.0.1:%d" % free_port(), blackhole]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=JS_DIR, text=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    handlers: Dict[str, Callable[[Dict[str, Any]], Any]] = {
        "server_log": lambda args: list(server.log),
        "stop_server": lambda args: server.stop(),
        "start_server": lambda args: server.start(),
        "broadcast": lambda args: server.broadcast(args["event"], args["data"]),
    }
    result: Dict[str, Any] = {}
    output: List[str] = []
    try:
        with gevent.Timeout(SCENARIO_TIMEOUT, AssertionError("scenario %s did not finish in %ss" % (name, SCENARIO_TIMEOUT))):
            stderr = gevent.spawn(proc.stderr.read)
            for line in proc.stdout:
                output.append(line)
                if line.startswith("CONTROL "):
                    request = json.loads(line[len("CONTROL "):])
                    try:
                        reply = {"id": request["id"], "result": handlers[request["cmd"]](request["args"])}
                    except Exception as exc:  # reported to the scenario, which fails with it
                        reply = {"id": request["id"], "error": "%s: %s" % (type(exc).__name__, exc)}
                    proc.stdin.write(json.dumps(reply) + "\n")
                    proc.stdin.flush()
                elif line.startswith("RESULT "):
                    result = json.loads(line[len("RESULT "):])
            proc.wait()
            stderr.join()
    finally:
        terminate_process(proc)
    if not result.get("ok"):
        raise AssertionError("scenario %s (%s, %s) failed: %s\nnode stderr:\n%s\nserver log tail: %s" % (
            name, build, impl, result.get("error", "no RESULT line"), stderr.value, server.log[-10:]))
    assert proc.returncode == 0, "".join(output)


SCENARIOS = ["ack", "ack_timeout", "pending", "arguments_and_not_open", "heartbeat", "pong_timeout",
             "server_restart", "repeat_limit", "manual_close", "close_while_connecting", "spoofing",
             "listeners", "custom_params", "close_codes", "connect_timeout"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_native_websocket(node_ready: str, server: NodeWsServer, blackhole_url: str, name: str) -> None:
    run_scenario(node_ready, name, server, blackhole_url)


@pytest.mark.parametrize("name", ["ack", "manual_close", "close_while_connecting", "server_restart", "pong_timeout"])
def test_scenario_ws_package(node_ready: str, server: NodeWsServer, blackhole_url: str, name: str) -> None:
    run_scenario(node_ready, name, server, blackhole_url, impl="ws")


@pytest.mark.parametrize("build", ["mjs", "min"])
def test_other_builds(node_ready: str, server: NodeWsServer, blackhole_url: str, build: str) -> None:
    run_scenario(node_ready, "ack", server, blackhole_url, build=build)
    run_scenario(node_ready, "spoofing", server, blackhole_url, build=build)
