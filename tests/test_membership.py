"""crossws_sync.cluster.membership: the cluster registry of a node, with two or three nodes wired
through an in-process channel map (the messages are exactly what the bus would carry; the bus
itself is tested with real Redis in test_bus.py and end to end in test_routing.py)."""
import gevent
import pytest

from crossws_sync.cluster.contracts import RouterSettings
from crossws_sync.cluster.local import LocalNode, LocalSettings
from crossws_sync.cluster.membership import Membership
from crossws_sync.cluster.runtime import Runtime
from support import wait_for

CLUSTER = "ws:_crossws.cluster"


class Wire:
    """Channel -> subscribed memberships; publish delivers on the next hub turn, like Redis."""

    def __init__(self):
        self.nodes = {}
        self.sent = []

    def channel_of(self, name):
        return "ws:_crossws.node:" + name

    def publisher(self):
        def publish(channel, message):
            self.sent.append((channel, dict(message)))
            for name, node in list(self.nodes.items()):
                if channel == CLUSTER or channel == self.channel_of(name):
                    gevent.spawn(self._deliver, node, dict(message))
            return True
        return publish

    @staticmethod
    def _deliver(node, message):
        handler = node.handlers.get(message.get("t"))
        if handler is not None:
            handler(message)


@pytest.fixture
def wire():
    w = Wire()
    yield w
    for node in w.nodes.values():
        node.stop()


def join(wire, name, *, interval=0.1, duplicate_login=None):
    local = LocalNode(None, Runtime(lambda: None, redis_config=["redis://127.0.0.1:6379"]), LocalSettings())
    settings = RouterSettings(server_name=name, ws_prefix="ws:", websocket=True, heartbeat_interval=interval,
                              duplicate_login=duplicate_login)
    node = Membership(local, settings, cluster_channel=CLUSTER, publish=wire.publisher(),
                      node_channel_of=wire.channel_of, stats={"snapshots_sent": 0, "snapshots_received": 0})
    wire.nodes[name] = node
    node.start()
    return node, local


def test_a_user_mapped_on_one_node_is_found_from_the_others(wire):
    a, local_a = join(wire, "a")
    b, _ = join(wire, "b")
    a.user_mapped("alice")
    local_a.rooms.join("chat", "r1", "alice")  # what LocalNode.join_room does before telling the cluster
    a.room_joined("chat", "r1", "alice")
    wait_for(lambda: b.find_user_node("alice") == "a", timeout=5, message="the delta reached b")
    assert b.room_members("chat", "r1") == {"alice"} and b.room_ids("chat") == {"r1"}
    assert a.find_user_node("alice") == "a" and b.duplicate_owner("alice") == {"a"}
    local_a.rooms.leave("chat", "r1", "alice")
    a.room_left("chat", "r1", "alice")
    a.user_unmapped("alice")
    wait_for(lambda: b.find_user_node("alice") is None, timeout=5, message="the unmapping reached b")


def test_a_node_that_joins_late_gets_a_snapshot(wire):
    a, _ = join(wire, "a")
    for index in range(50):
        a.user_mapped("u%d" % index)
    a.flush()
    c, _ = join(wire, "c")  # its hello makes a send its snapshot
    wait_for(lambda: len(c.directory.users()) == 50, timeout=5, message="the snapshot reached c")
    assert c.stats["snapshots_received"] >= 1 and a.stats["snapshots_sent"] >= 1
    assert {node["server_name"] for node in c.live_nodes()} == {"a", "c"}
    assert c.cluster_stats()["online_users"] == 50


def test_a_silent_node_expires_and_a_goodbye_removes_one_at_once(wire):
    a, _ = join(wire, "a")
    b, _ = join(wire, "b")
    c, _ = join(wire, "c")
    wait_for(lambda: {n["server_name"] for n in a.live_nodes()} == {"a", "b", "c"}, timeout=5, message="all met")
    b.stop()  # silent from now on
    wait_for(lambda: "b" not in {n["server_name"] for n in a.live_nodes()}, timeout=5, message="b expired")
    c.leave(lambda bye: wire.publisher()(CLUSTER, bye))
    wait_for(lambda: "c" not in {n["server_name"] for n in a.live_nodes()}, timeout=0.3 * 3,
             message="c's goodbye removed it before any expiry")
    sent_after = len(wire.sent)
    gevent.sleep(0.3)
    assert not [m for ch, m in wire.sent[sent_after:] if m.get("node") == "c"], "c announced itself after its goodbye"


def test_what_a_node_sent_before_its_goodbye_and_arrives_after_it_does_not_register_it_again(wire):
    """A heartbeat, delta or snapshot part written before the goodbye on another path (a snapshot
    greenlet, another connection) reaches the peer after it: ignored until the node says hello."""
    a, _ = join(wire, "a", interval=5)
    c, _ = join(wire, "c", interval=5)
    wait_for(lambda: "c" in a.directory.nodes, timeout=5, message="a met c")
    a.handlers["bye"]({"t": "bye", "node": "c", "senderServer": "c"})
    late = [{"t": "hb", "seq": 9, "ws": True, "users": 0},
            {"t": "delta", "seq": 10, "ops": [["u+", "alice", 1.0]]},
            {"t": "snap", "seq": 10, "users": {"alice": 1.0}, "rooms": {}, "ws": True}]
    for message in late:
        a.handlers[message["t"]](dict(message, node="c", senderServer="c"))
    assert "c" not in {n["server_name"] for n in a.live_nodes()} and a.find_user_node("alice") is None
    a.handlers["hello"]({"t": "hello", "v": 1, "node": "c", "senderServer": "c"})  # back under the same name
    a.handlers["hb"]({"t": "hb", "seq": 0, "ws": True, "users": 0, "node": "c", "senderServer": "c"})
    assert "c" in {n["server_name"] for n in a.live_nodes()}


def test_a_node_that_left_sends_no_snapshot_part_nor_node_message(wire):
    a, _ = join(wire, "a", interval=5)
    for index in range(3):
        a.user_mapped("u%d" % index)
    a.handlers["sync"]({"t": "sync", "node": "z", "senderServer": "z"})  # its parts go from a greenlet
    goodbyes = []
    a.leave(goodbyes.append)  # before that greenlet ran
    sent = len(wire.sent)
    a.handlers["sync"]({"t": "sync", "node": "y", "senderServer": "y"})
    gevent.sleep(0.1)
    assert len(goodbyes) == 1 and wire.sent[sent:] == []


def test_an_older_login_elsewhere_is_kicked_with_close_old():
    wire = Wire()
    try:
        a, local_a = join(wire, "a", duplicate_login="close_old")
        b, _ = join(wire, "b", duplicate_login="close_old")

        class Conn:
            open = True
            closed_with = None

            def close(self, code, reason):
                self.closed_with = (code, reason)
                self.open = False

        old = Conn()
        local_a.sockets["bob"] = old
        a.user_mapped("bob")
        gevent.sleep(0.05)
        b.user_mapped("bob")  # a newer login on b: a's older one must go
        wait_for(lambda: old.closed_with is not None, timeout=5, message="the old login closed")
        assert old.closed_with == (4012, "logged in elsewhere")
    finally:
        for node in wire.nodes.values():
            node.stop()
