"""crossws_sync.bus.topology: the slot table of a Redis Cluster node, one shard per primary, and
commands routed by key with MOVED / ASK followed, with fake shards (the real ones are exercised
against a real cluster in tests/test_bus_cluster.py)."""
import pytest
import redis

from crossws_sync.bus.connection import RedisSettings
from crossws_sync.bus.topology import MAX_REDIRECTS, ClusterTopology, address_label
from crossws_sync.errors import RedisUnavailableError
from crossws_sync.wire.slots import SLOT_COUNT, SlotRange, key_slot

A, B, C = ("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 7002)


class FakePublisher:
    def __init__(self):
        self.submitted = []

    def submit(self, command):
        self.submitted.append(command)


class FakeShard:
    def __init__(self, address, replies):
        self.address, self.label = address, address_label(address)
        self.publisher = FakePublisher()
        self.publisher_up = True
        self.replies = replies  # a list of replies or exceptions, popped in order
        self.commands = []

    def command(self, args, timeout):
        self.commands.append(args)
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply


def make(replies=None):
    events = {"stale": 0, "moved": []}
    replies = replies if replies is not None else {}
    topology = ClusterTopology(
        label="cluster(test)", seeds=[A, C], settings=RedisSettings(host="seed", port=1), command_timeout=1.0,
        make_shard=lambda address, settings: FakeShard(address, replies.setdefault(address, [])),
        on_stale=lambda: events.__setitem__("stale", events["stale"] + 1),
        on_slot_moved=events["moved"].append, closed=lambda: False, stats={"moved": 0, "ask": 0})
    return topology, events


def halves():
    middle = SLOT_COUNT // 2
    return [SlotRange(0, middle - 1, A, (C,)), SlotRange(middle, SLOT_COUNT - 1, B, ())]


def test_update_makes_a_shard_per_primary_and_the_table_names_each_slot_owner():
    topology, _ = make()
    assert topology.update(halves()) == []
    assert set(topology.shards) == {A, B}
    assert topology.owner(0) == A and topology.owner(SLOT_COUNT - 1) == B
    assert topology.layout == {"10.0.0.1:7000": [(0, SLOT_COUNT // 2 - 1)], "10.0.0.2:7001": [(SLOT_COUNT // 2, SLOT_COUNT - 1)]}
    assert topology.owner_of("x") == address_label(topology.owner(key_slot("x")))
    dropped = topology.drop_shards(keep={A})
    assert [shard.address for shard in dropped] == [B] and set(topology.shards) == {A}


def test_candidates_are_live_primaries_then_replicas_then_down_primaries_then_seeds():
    topology, _ = make()
    topology.update(halves())
    topology.shards[A].publisher_up = False
    assert topology.candidates() == [B, C, A]


def test_no_owner_known_refuses_and_asks_for_a_refresh():
    topology, events = make()
    with pytest.raises(RedisUnavailableError, match="no primary known"):
        topology.shard_for("x")
    assert events["stale"] == 1


def routed():
    """A topology of two halves; the slot of key ``k`` and its owner; the fake shards' replies."""
    replies = {}
    topology, events = make(replies)
    topology.update(halves())
    slot = key_slot("k")
    return topology, events, replies, slot, topology.owner(slot)


def test_moved_is_taken_into_the_table_and_the_command_retried_on_the_new_owner():
    topology, events, replies, slot, first = routed()
    other = B if first == A else A
    replies[first].append(redis.ResponseError("MOVED %d %s:%d" % ((slot,) + other)))
    replies[other].append(b"OK")
    assert topology.command_for_key("k", "GET", "k", timeout=1.0) == b"OK"
    assert topology.owner(slot) == other and events["moved"] == [slot] and events["stale"] == 1
    assert topology.stats["moved"] == 1


def test_ask_sends_asking_once_to_the_target_and_leaves_the_table():
    topology, events, replies, slot, first = routed()
    replies[first].append(redis.ResponseError("ASK %d %s:%d" % ((slot,) + C)))
    replies.setdefault(C, []).append(b"OK")
    assert topology.command_for_key("k", "GET", "k", timeout=1.0) == b"OK"
    assert [c.args for c in topology.shards[C].publisher.submitted] == [("ASKING",)]
    assert topology.owner(slot) == first and events["moved"] == [] and topology.stats["ask"] == 1


def test_redirections_are_bounded_and_other_errors_pass_through():
    topology, _, replies, slot, first = routed()
    replies[first].extend([redis.ResponseError("ASK %d %s:%d" % ((slot,) + first))] * (MAX_REDIRECTS + 1))
    with pytest.raises(RedisUnavailableError, match="too many redirections"):
        topology.command_for_key("k", "GET", "k", timeout=1.0)
    replies[first].append(redis.ResponseError("WRONGTYPE"))
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        topology.command_for_key("k", "GET", "k", timeout=1.0)
