"""Which shard holds each wanted channel (crossws_sync.bus.placement), with fake shards: placing,
re-homing without SUNSUBSCRIBE, unsubscribing with it, refusals, statuses and waits."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Set, Tuple

from crossws_sync.bus.placement import ChannelPlacement
from crossws_sync.wire.slots import key_slot

A, B = ("10.0.0.1", 7000), ("10.0.0.2", 7001)


class FakeSubscriber:
    def __init__(self) -> None:
        self.assigned: Set[str] = set()
        self.confirmed: Set[str] = set()
        self.connected = True
        self.log: List[Tuple[str, Tuple[str, ...], Optional[bool]]] = []

    def assign(self, channels: List[str]) -> None:
        self.assigned.update(channels)
        self.log.append(("assign", tuple(channels), None))

    def release(self, channels: List[str], *, unsubscribe: bool) -> None:
        self.assigned.difference_update(channels)
        self.confirmed.difference_update(channels)
        self.log.append(("release", tuple(channels), unsubscribe))

    def is_subscribed(self, channel: str) -> bool:
        return self.connected and channel in self.confirmed


class FakeShard:
    def __init__(self) -> None:
        self.subscriber = FakeSubscriber()


def make(owners: Dict[int, Any]) -> Tuple[ChannelPlacement, Dict[Any, FakeShard], Dict[str, int]]:
    shards: Dict[Any, FakeShard] = {}
    stats = {"rehomed": 0}

    def shard_at(address: Any) -> FakeShard:
        return shards.setdefault(address, FakeShard())

    placement = ChannelPlacement(owner=lambda slot: owners.get(slot, owners.get("default")), shard_at=shard_at,
                                 shard=shards.get, stats=stats)
    return placement, shards, stats


def test_channels_go_to_their_slot_owner_and_move_without_sunsubscribe():
    owners: Dict[Any, Any] = {"default": A}
    placement, shards, stats = make(owners)
    placement.place(placement.want(["ws:chat", "csbp:server_bridge"]))
    assert shards[A].subscriber.assigned == {"ws:chat", "csbp:server_bridge"}
    assert placement.home == {"ws:chat": A, "csbp:server_bridge": A}
    placement.place(["ws:chat"])  # already home: nothing sent
    assert len(shards[A].subscriber.log) == 1
    owners[key_slot("ws:chat")] = B  # its slot moved
    placement.place_slot(key_slot("ws:chat"))
    assert placement.home["ws:chat"] == B and stats["rehomed"] == 1
    assert shards[A].subscriber.log[-1] == ("release", ("ws:chat",), False)  # the old owner already dropped it
    assert shards[B].subscriber.assigned == {"ws:chat"}
    assert placement.slot("ws:chat") == key_slot("ws:chat")


def test_unknown_owner_leaves_a_channel_homeless_until_placed_again():
    owners: Dict[Any, Any] = {}
    placement, shards, _ = make(owners)
    placement.place(placement.want(["ws:a"]))
    assert placement.homeless == 1 and placement.missing == {"ws:a": "no owner"} and not shards
    owners["default"] = A
    placement.place(placement.wanted)
    assert placement.homeless == 0
    placement.moved(A, ["ws:a"])
    assert placement.homeless == 1


def test_unsubscribe_sends_sunsubscribe_and_refusals_are_kept():
    placement, shards, _ = make({"default": A})
    placement.place(placement.want(["ws:a", "ws:b"]))
    placement.unsubscribe(["ws:a", "ws:unknown"])
    assert shards[A].subscriber.log[-1] == ("release", ("ws:a",), True)
    assert placement.wanted == {"ws:b"}
    placement.refused(A, ["ws:b"], "NOPERM no permissions")
    assert placement.wanted == set() and placement.status("ws:b", False) == "failed: NOPERM no permissions"
    assert placement.missing == {"ws:b": "refused: NOPERM no permissions"}
    placement.want(["ws:b"])  # asked again: the refusal is forgotten
    assert "ws:b" not in placement.failed


def test_statuses_and_wait():
    placement, shards, _ = make({"default": A})
    placement.place(placement.want(["ws:a"]))
    assert placement.status("ws:a", False) == "pending"
    assert placement.status("ws:a", True) == "down"
    assert placement.status("ws:gone", False) == "failed: unsubscribed meanwhile"
    started = time.monotonic()
    assert placement.wait(["ws:a"], time.monotonic() + 0.2, lambda: False) == {"ws:a": "timeout"}
    assert time.monotonic() - started >= 0.2
    shards[A].subscriber.confirmed.add("ws:a")
    assert placement.is_subscribed("ws:a")
    assert placement.wait(["ws:a"], time.monotonic() + 1, lambda: False) == {"ws:a": "ok"}
    shards[A].subscriber.connected = False
    assert placement.status("ws:a", False) == "down" and not placement.is_subscribed("ws:a")
