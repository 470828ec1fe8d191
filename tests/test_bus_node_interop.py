"""A mixed cluster: original Node.js nodes (websocket-cross-server-adapter v1.0.7) and our buses.

Needs Node.js, the original's checkout in ``ORIGINAL_ADAPTER_DIR`` (as the benchmark suite) and
its dependencies in ``bench/node/node_modules`` (``bench/setup.sh`` installs them). Without
them the module is skipped with the reason; the wire format itself is also covered, without
Node, by the golden vectors of test_envelope.py and the wire tests of test_bus.py.
"""
import json
import os
import shutil
import subprocess

import gevent
import pytest

from bus_fixtures import make_bus  # noqa: F401 - fixture
from support import repo_root, terminate_process, wait_for

ORIGINAL_DIR = os.environ.get("ORIGINAL_ADAPTER_DIR", "")
NODE_MODULES = os.path.join(repo_root(), "bench", "node", "node_modules")
SCRIPT = os.path.join(repo_root(), "tests", "node_interop", "original_node.js")

pytestmark = [pytest.mark.interop_original, pytest.mark.skipif(
    not (shutil.which("node") and ORIGINAL_DIR and os.path.isfile(os.path.join(ORIGINAL_DIR, "index.js"))
         and os.path.isdir(os.path.join(NODE_MODULES, "ioredis"))),
    reason="needs node, ORIGINAL_ADAPTER_DIR (checkout of websocket-cross-server-adapter) and bench/node/node_modules")]


class OriginalNode:
    """An original Node.js node driven over stdin/stdout."""

    def __init__(self, name, port, msgpack):
        # msgpack: True / False sets enableRedisDataCompression, None leaves it at the default
        self.name = name
        env = dict(os.environ, NODE_PATH=NODE_MODULES, ORIGINAL_ADAPTER_DIR=ORIGINAL_DIR)
        self.proc = subprocess.Popen(["node", SCRIPT, name, str(port), {True: "1", False: "0", None: "default"}[msgpack]],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.lines = []
        self._reader = gevent.spawn(self._read)
        wait_for(lambda: {"ready": True} in self.lines, timeout=15, message="original node %s ready" % name)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def send(self, **command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def items(self, key):
        return [line[key] for line in self.lines if key in line]

    def stop(self):
        self.proc.stdin.close()
        terminate_process(self.proc)
        self._reader.kill()


@pytest.fixture
def original_nodes():
    nodes = []

    def start(name, port, msgpack):
        node = OriginalNode(name, port, msgpack)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


def numsub(redis_server, channel):
    reply = redis_server.command("PUBSUB", "NUMSUB", channel)
    return int(reply.strip().split("\r\n")[-1].lstrip(":"))


@pytest.mark.parametrize("msgpack", [False, True, None], ids=["json", "msgpack", "defaults"])
def test_mixed_cluster_events_and_callbacks_both_ways(redis_server, make_bus, original_nodes, msgpack):
    if msgpack is None:  # both libraries at their defaults, no codec option on either side
        py1 = make_bus("py1", [redis_server.config])
        py2 = make_bus("py2", [redis_server.config])
    else:
        py1 = make_bus("py1", [redis_server.config], enable_redis_data_compression=msgpack)
        py2 = make_bus("py2", [redis_server.config], redis_codec="msgpack" if msgpack else "json",
                       redis_compress_threshold=None)
    for bus in (py1, py2):
        bus.on_cross_server_event("ask", lambda data, cb, name=bus.server_name: cb({"from": name, "echo": data["payload"]}))
    js1 = original_nodes("js1", redis_server.port, msgpack)
    js2 = original_nodes("js2", redis_server.port, msgpack)
    wait_for(lambda: numsub(redis_server, "csbp:server_bridge") == 4)

    # Python -> Node, targeted promise and broadcast callback
    result = py1.emit_cross_server_and_wait("ask", {"q": "py->js"}, target_server=["js1"], timeout=3)
    assert result.success, result
    assert result.responses["js1"]["payload"] == {"from": "js1", "echo": {"q": "py->js"}}
    everyone = py1.emit_cross_server_and_wait("ask", {"q": "all"}, expected_responses=4, timeout=3)
    assert everyone.success and sorted(everyone.responses) == ["js1", "js2", "py1", "py2"], everyone
    got = js2.items("got")
    assert {"event": "ask", "senderServer": "py1", "payload": {"q": "all"}, "targetServer": []}.items() <= got[-1].items()

    # Node -> Python, promise (targeted) and callback (broadcast, one reply each)
    js1.send(op="emit", target=["py2"], expected=1, payload={"q": "js->py"})
    wait_for(lambda: js1.items("result"))
    [node_result] = js1.items("result")
    assert node_result["success"] is True
    assert node_result["responses"]["py2"]["payload"] == {"from": "py2", "echo": {"q": "js->py"}}
    js2.send(op="emitcb", target=[], expected=4, payload={"q": "js-all"})
    wait_for(lambda: len(js2.items("callback")) == 4)
    callbacks = js2.items("callback")
    assert all(c["success"] for c in callbacks)
    assert sorted(c["data"]["senderServer"] for c in callbacks) == ["js1", "js2", "py1", "py2"]
    assert [c["remainingResponses"] for c in callbacks] == [3, 2, 1, 0]

    # Custom channel both ways
    seen = []
    py2.manual_subscribe("interop:custom")
    py2.set_custom_channel_handler(lambda channel, message: seen.append((channel, message)))
    js1.send(op="publish", channel="interop:custom", message={"hello": "from js"})
    wait_for(lambda: seen == [("interop:custom", {"hello": "from js"})])
    assert py1.publish_redis_message("interop:custom", {"hello": "from py"})
    wait_for(lambda: ["interop:custom", {"hello": "from py", "senderServer": "py1"}] in js1.items("custom"))
    assert py1.stats["decode_errors"] == py2.stats["decode_errors"] == 0
    assert py1.stats["foreign_codec"] == py2.stats["foreign_codec"] == 0


def test_mixed_cluster_of_listener_only_adapters_nobody_started_at_both_defaults(redis_server, original_nodes):
    """The original's cross-server example, written the original's way on our side: adapters built
    with redis_config and server_name, a listener registered, no start(), every option at its default."""
    from crossws_sync import WebSocketCrossServerAdapter

    adapters = [WebSocketCrossServerAdapter(server_name=name, redis_config=[redis_server.url]) for name in ("py1", "py2")]
    try:
        for adapter in adapters:
            adapter.on_cross_server_event("ask", lambda data, cb, name=adapter.get_server_name():
                                          cb and cb({"from": name, "echo": data["payload"]}))
        js1 = original_nodes("js1", redis_server.port, None)
        wait_for(lambda: numsub(redis_server, "csbp:server_bridge") == 3, timeout=10)
        js1.send(op="emitcb", target=[], expected=3, payload={"q": "js-all"})
        wait_for(lambda: len(js1.items("callback")) == 3, timeout=10)
        assert sorted(c["data"]["senderServer"] for c in js1.items("callback")) == ["js1", "py1", "py2"]
        assert all(a._bus.stats["decode_errors"] == 0 and a._bus.stats["foreign_codec"] == 0 for a in adapters)
    finally:
        for adapter in adapters:
            adapter.close(timeout=1)
