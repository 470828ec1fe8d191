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

import functools
import json
import os
import re
import shutil
import socket
import subprocess
from typing import Any, Callable, Dict, Iterator, List, Optional

import gevent
import pytest

from crossws_sync.adapter import WebSocketCrossServerAdapter
from support import RedisProcess, free_port, repo_root, terminate_process

JS_DIR = os.path.join(repo_root(), "tests", "js")
STATIC_DIR = os.path.join(repo_root(), "crossws_sync", "static")
SCENARIO_TIMEOUT = 30.0


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH: install Node.js 20 (apt-get install nodejs npm) to test the browser client")
    return node


@functools.lru_cache(maxsize=None)
def _node_flags(node: str) -> List[str]:
    """Flags that give Node a global (browser-like) WebSocket: needed on Node 20 and 21 only."""
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    if major < 20:
        raise RuntimeError("node %s is too old for the browser-client tests: install Node.js 20 or newer" % version)
    return ["--experimental-websocket"] if major < 22 else []


@pytest.fixture(scope="module")
def node_ready() -> str:
    """Node on PATH and tests/js/node_modules installed from the committed lock file."""
    node = _node()
    _node_flags(node)
    if not os.path.exists(os.path.join(JS_DIR, "node_modules", "ws", "package.json")):
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not on PATH: install npm to run `npm ci` in tests/js")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=300,
                       stdout=subprocess.DEVNULL)
    return node


# ---------------------------------------------------------------------------------------------
# The server under test: our adapter, with these handlers:
#   say -> ack {"echo": payload}; twice -> ack {"n": 1} then {"n": 2}; slow -> never acks;
#   delay -> ack {"delayed": ms} after payload["ms"] ms; kick -> close(payload code, reason);
#   join -> join_room(payload ns, payload room), ack True;
# a connection with ?id=<id> is mapped to that user id (for the server requests of "ask");
# it records {"type": "connection" | "close" | "message", ...} observations.
# ---------------------------------------------------------------------------------------------


class PythonServer:
    """Our adapter with the test handlers, restartable on the same port."""

    def __init__(self, port: int, redis_url: Optional[str] = None,
                 recovery: Optional[Dict[str, Any]] = None) -> None:
        self.port = port
        self.redis_url = redis_url
        self.recovery = recovery
        self.log: List[Dict[str, Any]] = []
        self.adapter: Optional[WebSocketCrossServerAdapter] = None
        #: with Redis: a second node, always up, that sends while the first one is away
        self.sender: Optional[WebSocketCrossServerAdapter] = None

    @property
    def url(self) -> str:
        return "ws://127.0.0.1:%d" % self.port

    def start(self) -> None:
        adapter = self._adapter(self.port)
        log = self.log

        def on_connection(socket: Any, request: Any) -> None:
            parsed = adapter.parse_ws_request_params(request)
            log.append({"type": "connection", "url": request.url, "params": parsed["params"], "path": parsed["path"]})
            if parsed["params"].get("id"):  # reachable by to_socket_id (the server_request scenario)
                adapter.set_user_socket(parsed["params"]["id"], socket)

        def on_close(socket: Any, request: Any, code: int, reason: str) -> None:
            log.append({"type": "close", "code": code, "reason": reason})

        def on_message(socket: Any, data: Any) -> None:
            if isinstance(data, bytes):  # binary: echoed back as binary
                log.append({"type": "binary", "data": list(data)})
                socket.send(data[::-1])
            else:
                log.append({"type": "message", "data": data})

        def say(socket: Any, payload: Any, callback: Optional[Callable[[Any], None]]) -> None:
            if callback:
                callback({"echo": payload})

        def twice(socket: Any, payload: Any, callback: Optional[Callable[[Any], None]]) -> None:
            if callback:
                callback({"n": 1})
                callback({"n": 2})

        def delay(socket: Any, payload: Any, callback: Optional[Callable[[Any], None]]) -> None:
            if callback:
                gevent.spawn_later(payload["ms"] / 1000.0, callback, {"delayed": payload["ms"]})

        def kick(socket: Any, payload: Any, callback: Optional[Callable[[Any], None]]) -> None:
            socket.close(payload["code"], payload["reason"])

        def join(socket: Any, payload: Any, callback: Optional[Callable[[Any], None]]) -> None:
            adapter.join_room(payload["ns"], payload["room"], socket.socket_id)
            if callback:
                callback(True)

        adapter.on_websocket_event("connection", on_connection)
        adapter.on_websocket_event("close", on_close)
        adapter.on_websocket_event("message", on_message)
        for name, handler in (("say", say), ("twice", twice), ("delay", delay), ("kick", kick), ("join", join),
                              ("slow", lambda socket, payload, callback: None)):
            adapter.on_websocket_event(name, handler)
        adapter.start()
        self.adapter = adapter
        if self.redis_url is not None and self.sender is None:
            self.sender = self._adapter(free_port())
            self.sender.start()

    def _adapter(self, port: int) -> WebSocketCrossServerAdapter:
        if self.redis_url is None:
            return WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": port}, heartbeat_str="")
        return WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": port}, heartbeat_str="",
                                           redis_config=[self.redis_url], connection_state_recovery=self.recovery)

    def stop(self) -> None:
        if self.adapter is not None:
            self.adapter.close()
            self.adapter = None

    def close(self) -> None:
        """Stop the server and the sender node."""
        self.stop()
        if self.sender is not None:
            self.sender.close()
            self.sender = None

    def send_from_sender(self, user: str, ns: str, room: str, start: int, count: int) -> None:
        """From the sender node: "chat" i to the room and "dm" i to the user, for each i."""
        assert self.sender is not None, "only a server with Redis has a sender node"
        for i in range(start, start + count):
            self.sender.broadcast_to_room(ns, room, "chat", i)
            self.sender.to_socket_id(user, "dm", i)

    def broadcast(self, event: str, data: Any) -> None:
        assert self.adapter is not None
        self.adapter.broadcast(event, data)

    def ask(self, socket_id: str, event: str, data: Any, timeout: float) -> Dict[str, Any]:
        """A server request to a user; the client's answer (or the failure) as a plain dict."""
        assert self.adapter is not None
        return dict(self.adapter.to_socket_id_and_wait(socket_id, event, data, timeout=timeout))


@pytest.fixture
def server() -> Iterator[PythonServer]:
    srv = PythonServer(free_port())
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def recovery_server(redis_server: RedisProcess) -> Iterator[PythonServer]:
    """A server with connection state recovery on one Redis, and a sender node on the same Redis;
    stop_server/start_server replace the node behind the port by a new one."""
    srv = PythonServer(free_port(), redis_url=redis_server.url, recovery={"max_disconnection": 30})
    srv.start()
    yield srv
    srv.close()


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


def run_scenario(node: str, name: str, server: PythonServer, blackhole: str, build: str = "js",
                 impl: str = "native") -> None:
    """Run one scenario in Node, answer its control requests, fail with its message if it fails."""
    args = [node] + (_node_flags(node) if impl == "native" else [])
    args += [os.path.join(JS_DIR, "run.js"), name, build, impl, server.url, "ws://127.0.0.1:%d" % free_port(), blackhole]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=JS_DIR, text=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    handlers: Dict[str, Callable[[Dict[str, Any]], Any]] = {
        "server_log": lambda args: list(server.log),
        "stop_server": lambda args: server.stop(),
        "start_server": lambda args: server.start(),
        "broadcast": lambda args: server.broadcast(args["event"], args["data"]),
        "ask": lambda args: server.ask(args["id"], args["event"], args["data"], args["timeout"]),
        "send_from_sender": lambda args: server.send_from_sender(args["user"], args["ns"], args["room"],
                                                                 args["start"], args["count"]),
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
             "listeners", "custom_params", "close_codes", "connect_timeout", "binary",
             "offline_queue", "offline_overflow", "offline_deadline", "offline_gives_up", "server_request",
             "restart_hint", "full_jitter"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_native_websocket(node_ready: str, server: PythonServer, blackhole_url: str, name: str) -> None:
    run_scenario(node_ready, name, server, blackhole_url)


@pytest.mark.parametrize("name", ["ack", "manual_close", "close_while_connecting", "server_restart", "pong_timeout", "binary",
                                  "offline_queue"])
def test_scenario_ws_package(node_ready: str, server: PythonServer, blackhole_url: str, name: str) -> None:
    run_scenario(node_ready, name, server, blackhole_url, impl="ws")


@pytest.mark.parametrize("build,impl", [("js", "native"), ("js", "ws"), ("min", "native")])
def test_recovery_scenario(node_ready: str, recovery_server: PythonServer, blackhole_url: str, build: str,
                           impl: str) -> None:
    run_scenario(node_ready, "recovery", recovery_server, blackhole_url, build=build, impl=impl)


@pytest.mark.parametrize("build", ["mjs", "min"])
def test_other_builds(node_ready: str, server: PythonServer, blackhole_url: str, build: str) -> None:
    run_scenario(node_ready, "ack", server, blackhole_url, build=build)
    run_scenario(node_ready, "spoofing", server, blackhole_url, build=build)
    run_scenario(node_ready, "server_request", server, blackhole_url, build=build)


# ---------------------------------------------------------------------------------------------
# Builds: one source of truth, loadable as a <script>, small.
# ---------------------------------------------------------------------------------------------


def _load_build_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("crossws_static_build", os.path.join(STATIC_DIR, "build.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_match_the_source() -> None:
    build = _load_build_module()
    assert build.stale_files() == [], "run: python crossws_sync/static/build.py"
    source = build.read_source()
    assert set(build.stale_files(source.replace("// @@core-end", "// edited\n// @@core-end"))) == {build.MJS_PATH, build.MIN_PATH}
    with open(build.MJS_PATH, encoding="utf-8") as handle:
        mjs = handle.read()
    assert "export { WebSocketConnector };" in mjs and "export default WebSocketConnector;" in mjs
    assert "require(" not in mjs and "module.exports" not in mjs


def test_classic_script_defines_only_the_global(node_ready: str) -> None:
    done = subprocess.run([node_ready, os.path.join(JS_DIR, "classic-script.js")], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert "classic script: ok" in done.stdout


def test_minified_size_is_small_and_documented() -> None:
    sizes = _load_build_module().sizes()
    assert sizes["min"] < sizes["source"] * 0.7
    assert sizes["min_gzip"] < 6 * 1024
    with open(os.path.join(repo_root(), "docs", "browser-client.md"), encoding="utf-8") as handle:
        docs = handle.read()
    match = re.search(r"minified and gzipped: ([0-9.]+) KB", docs)
    assert match, "docs/browser-client.md must state the minified and gzipped size"
    documented = float(match.group(1)) * 1024
    assert abs(documented - sizes["min_gzip"]) <= 0.1 * sizes["min_gzip"], (documented, sizes)
