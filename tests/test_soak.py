"""Soak: a 3-node cluster (real processes, one real redis-server) under churning clients.

Waves of clients connect to random nodes, join rooms (fixed and short-lived namespaces), chat in
them across nodes, and disconnect (half with a close handshake, half by dropping TCP). Every
room message is counted at every member. After the last wave the nodes must be back where they
were after the warm-up wave: no client, mapping, room entry, directory entry or dynamic channel
left, greenlets and file descriptors at the baseline, memory within a stated bound.

The test runs ``CROSSWS_SOAK_SECONDS`` seconds (default 30); the longer run in
``docs/reliability.md`` used the same test with a larger value.
"""
from __future__ import annotations

import json
import os
import random
import time
from typing import Any, Dict, List, Tuple

import gevent
import pytest

from faultkit import NodeProcess, ask, mib, record, start_nodes
from rawclient import RawClient
from support import wait_for

SECONDS = float(os.environ.get("CROSSWS_SOAK_SECONDS", "30"))
PER_WAVE = 45
MESSAGES = 3
RSS_BOUND = 16 << 20  # allowed RSS growth per node after the clients left, vs the warm-up baseline


class Member:
    """One client of a wave: joins a room, sends ``MESSAGES`` room messages, counts what arrives."""

    def __init__(self, port: int, user: str, namespace: str, room: str) -> None:
        self.user, self.namespace, self.room = user, namespace, room
        self.client = RawClient(port, "/?id=" + user, timeout=10)
        self.chats: List[Tuple[str, int]] = []
        self.acks: Dict[str, Any] = {}

    def _pump_until(self, done, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            message = json.loads(self.client.recv_text(timeout=max(0.05, deadline - time.monotonic())))
            if message.get("event") == "chat":
                self.chats.append((message["payload"]["from"], message["payload"]["seq"]))
            elif "callbackId" in message:
                self.acks[message["callbackId"]] = message.get("payload")

    def join(self) -> None:
        self.client.send_json({"event": "join", "payload": {"ns": self.namespace, "room": self.room},
                               "callbackId": "join"})
        self._pump_until(lambda: "join" in self.acks)

    def chat(self) -> None:
        for seq in range(MESSAGES):
            self.client.send_json({"event": "room", "callbackId": "m%d" % seq, "payload": {
                "ns": self.namespace, "room": self.room, "body": {"from": self.user, "seq": seq}}})

    def collect(self, expected: int) -> None:
        try:
            self._pump_until(lambda: len(self.chats) >= expected and len(self.acks) > MESSAGES)
        except OSError:
            pass  # counted as lost by the caller

    def leave(self, clean: bool) -> None:
        if clean:
            self.client.close(1000)
        self.client.abort()


def _diag(node: NodeProcess) -> Dict[str, Any]:
    """A node's figures, asked on a connection of its own (an idle one would be reaped as dead)."""
    client = RawClient(node.port, timeout=10)
    try:
        return ask(client, "diag", timeout=10, callback_id="diag")
    finally:
        client.abort()


def _wave(rng: random.Random, nodes: List[NodeProcess], wave: int) -> Tuple[int, int, int]:
    """One wave; return (room messages sent, deliveries expected, deliveries seen)."""
    namespaces = ["chat", "game", "dyn%d" % (wave % 4)]
    members = [Member(rng.choice(nodes).port, "w%d_%d" % (wave, i), rng.choice(namespaces), "r%d" % rng.randrange(3))
               for i in range(PER_WAVE)]
    gevent.joinall([gevent.spawn(m.join) for m in members], raise_error=True)
    rooms: Dict[Tuple[str, str], int] = {}
    for m in members:
        rooms[(m.namespace, m.room)] = rooms.get((m.namespace, m.room), 0) + 1
    for m in members:
        m.chat()
    expected = {m.user: MESSAGES * rooms[(m.namespace, m.room)] for m in members}
    gevent.joinall([gevent.spawn(m.collect, expected[m.user]) for m in members], timeout=30)
    seen = sum(min(len(m.chats), expected[m.user]) for m in members)
    for index, m in enumerate(members):
        m.leave(clean=index % 2 == 0)
    return len(members) * MESSAGES, sum(expected.values()), seen


@pytest.mark.timeout(max(120, int(SECONDS * 3)))
def test_three_nodes_under_churning_clients_return_to_their_baseline(redis_server):
    nodes = start_nodes([dict(name=name, redis_urls=[redis_server.url], heartbeat=0.5) for name in ("s1", "s2", "s3")])
    try:
        wait_for(lambda: all(len(_diag(c)["directory_nodes"]) == 2 for c in nodes), timeout=10,
                 message="three nodes in the cluster")
        rng = random.Random(1234)
        _wave(rng, nodes, -1)  # warm-up: imports, caches, allocator pools

        def settled(node: NodeProcess) -> bool:
            d = _diag(node)
            return d["clients"] == 1 and d["sockets"] == 0 and d["room_entries"] == 0 and d["directory_users"] == 0

        wait_for(lambda: all(settled(c) for c in nodes), timeout=15, message="warm-up clients gone")
        before = [_diag(c) for c in nodes]

        totals = {"waves": 0, "clients": 0, "sent": 0, "expected": 0, "delivered": 0}
        started = time.monotonic()
        while time.monotonic() - started < SECONDS:
            sent, expected, seen = _wave(rng, nodes, totals["waves"])
            totals["waves"] += 1
            totals["clients"] += PER_WAVE
            totals["sent"] += sent
            totals["expected"] += expected
            totals["delivered"] += seen
        elapsed = time.monotonic() - started

        wait_for(lambda: all(settled(c) for c in nodes), timeout=15, message="every churned client gone")
        wait_for(lambda: all(_diag(c)["wanted_channels"] == b["wanted_channels"] for c, b in zip(nodes, before)),
                 timeout=10, message="short-lived room channels unsubscribed")
        after = [_diag(c) for c in nodes]
        per_node = {}
        for node, b, a in zip(nodes, before, after):
            per_node[node.name] = {
                "greenlets": [b["greenlets"], a["greenlets"]], "fds": [b["fds"], a["fds"]],
                "rss_mib": [mib(b["rss"]), mib(a["rss"])], "namespaces": a["namespaces"],
                "pending_callbacks": a["pending_callbacks"], "bad_frames": a["service_stats"]["bad_frames"],
                "handler_errors": a["service_stats"]["handler_errors"]}
        record("soak", seconds=round(elapsed, 1), lost=totals["expected"] - totals["delivered"],
               rss_bound_mib=mib(RSS_BOUND), nodes=per_node, **totals)
        assert totals["delivered"] == totals["expected"], "room messages lost"
        for node, b, a in zip(nodes, before, after):
            assert a["greenlets"] <= b["greenlets"] + 2, (node.name, b["greenlets"], a["greenlets"])  # parked readers apart
            assert a["parked_readers"] <= 64
            assert a["fds"] <= b["fds"] + 2, (node.name, b["fds"], a["fds"])
            assert a["namespaces"] == 0 and a["pending_callbacks"] == 0
            assert a["service_stats"]["handler_errors"] == 0
            assert a["rss"] - b["rss"] <= RSS_BOUND, (node.name, mib(b["rss"]), mib(a["rss"]))
            assert node.alive()
    finally:
        for node in nodes:
            node.stop()
