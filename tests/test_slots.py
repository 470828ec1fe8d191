"""Pure tests of Redis Cluster key slots (crossws_sync.wire.slots), against recorded Redis answers."""
import pytest

from crossws_sync.wire import slots

#: ``redis-cli CLUSTER KEYSLOT <key>`` answers of redis-server 7.0.15, recorded.
KEYSLOT = {
    "123456789": 12739, "foo": 12182, "bar": 5061, "{user1000}.following": 3443, "foo{}{bar}": 8363,
    "foo{{bar}}zap": 4015, "foo{bar}{zap}": 5061, "ws:broadcast": 2556, "ws:private_socket": 2265,
    "csbp:server_bridge": 10855, "ws:_crossws.cluster": 13626, "": 0, "h\u00e9llo": 11061,
}


def test_crc16_of_the_spec_example():
    assert slots.crc16(b"123456789") == 0x31C3


@pytest.mark.parametrize("key,slot", sorted(KEYSLOT.items()))
def test_key_slot_matches_redis(key, slot):
    assert slots.key_slot(key) == slot
    assert slots.key_slot(key.encode("utf-8")) == slot


def test_hash_tags_put_history_keys_in_one_slot():
    stream = "r\x1fchat\x1froom-1"
    assert slots.key_slot("ws:_crossws.h:{%s}" % stream) == slots.key_slot("ws:_crossws.m:{%s}" % stream)
    assert slots.hash_part(b"a{}b") == b"a{}b"
    assert slots.hash_part(b"a{b") == b"a{b"


def test_group_by_slot_never_mixes_slots():
    names = ["foo", "{foo}x", "bar", "{bar}y", "baz"]
    groups = slots.group_by_slot(names)
    assert groups[slots.key_slot("foo")] == ["foo", "{foo}x"]
    assert groups[slots.key_slot("bar")] == ["bar", "{bar}y"]
    assert sum(len(g) for g in groups.values()) == len(names)
    for slot, group in groups.items():
        assert {slots.key_slot(n) for n in group} == {slot}


def test_parse_cluster_slots():
    reply = [
        [5461, 10922, [b"127.0.0.1", 7001, b"id2"], [b"127.0.0.1", 7004, b"id5"]],
        [0, 5460, [b"", 7000, b"id1"], [b"127.0.0.1", 7003, b"id4"]],
        [10923, 16383, [b"127.0.0.1", 7002, b"id3"]],
    ]
    ranges = slots.parse_cluster_slots(reply, default_host="10.0.0.1")
    assert [r.start for r in ranges] == [0, 5461, 10923]
    assert ranges[0].primary == ("10.0.0.1", 7000)
    assert ranges[1].replicas == (("127.0.0.1", 7004),)
    owners = slots.slot_owners(ranges)
    assert owners[0] == ("10.0.0.1", 7000) and owners[5461] == ("127.0.0.1", 7001)
    assert owners[16383] == ("127.0.0.1", 7002) and len(owners) == slots.SLOT_COUNT
    assert slots.slot_owners(ranges[:1])[6000] is None


@pytest.mark.parametrize("reply", [b"x", [[1]], [[0, 20000, [b"h", 1]]], [[0, 1, [b"h"]]]])
def test_parse_cluster_slots_refuses_garbage(reply):
    with pytest.raises(ValueError):
        slots.parse_cluster_slots(reply)


def test_parse_redirect():
    assert slots.parse_redirect("MOVED 3999 127.0.0.1:6381") == ("MOVED", 3999, ("127.0.0.1", 6381))
    assert slots.parse_redirect("ASK 1 :7000", default_host="h") == ("ASK", 1, ("h", 7000))
    assert slots.parse_redirect("CROSSSLOT Keys in request don't hash to the same slot") is None
    assert slots.parse_redirect("MOVED x y:z") is None


def test_topology_change_tells_a_failover_from_a_migration():
    a, b, c, d = ("h", 1), ("h", 2), ("h", 3), ("h", 4)
    old = [a] * 5 + [b] * 5 + [c] * 6
    assert slots.topology_change([], old) == ({}, 0) and not slots.topology_change([], old).changed
    assert not slots.topology_change(old, list(old)).changed
    failover = [d] * 5 + [b] * 5 + [c] * 6  # a's replica d promoted
    change = slots.topology_change(old, failover)
    assert change.replaced == {a: (d,)} and change.moved == 0 and change.changed
    migration = [a] * 5 + [b] * 4 + [c] * 7  # one slot from b to c
    assert slots.topology_change(old, migration) == ({}, 1)
    lost = [None] * 5 + [b] * 5 + [c] * 6  # a died, nobody serves its slots yet
    assert slots.topology_change(old, lost) == ({a: ()}, 0)
