"""Confirmations (crossws_sync/bus/replication.py): appends published only once WAIT confirmed
them, in order, one WAIT in flight; nothing published when WAIT falls short; appends answered
on a broken connection handed back, oldest first. A fake connection stands in for Redis."""
from __future__ import annotations

from typing import Any, List, Tuple

import gevent
import redis

from crossws_sync.bus.replication import Confirmations, wait_timeout


class FakeConnection:
    def __init__(self) -> None:
        self.commands: List[Any] = []
        self.generation = 1

    def submit(self, command: Any) -> None:
        self.commands.append(command)

    def waits(self) -> List[Any]:
        return [c for c in self.commands if c.args[0] == "WAIT"]


def make() -> Tuple[FakeConnection, Confirmations, List[Tuple[str, bytes]], dict]:
    conn = FakeConnection()
    published: List[Tuple[str, bytes]] = []
    stats: dict = {}
    confirm = Confirmations(conn.submit, lambda: conn.generation, lambda ch, body: published.append((ch, body)),
                            replicas=1, timeout=0.2, label="fake", stats=stats)
    return conn, confirm, published, stats


def test_one_wait_covers_the_appends_of_one_turn_and_publishes_them_in_order():
    conn, confirm, published, stats = make()
    lost: List[BaseException] = []
    records = [confirm.track("c", lost.append) for _ in range(3)]
    gevent.sleep(0)
    assert len(conn.waits()) == 1 and conn.waits()[0].args == ("WAIT", 1, 200)
    for i, record in enumerate(records):
        confirm.appended(record, b"m%d" % i)
    assert published == []  # not before the replicas confirmed
    conn.waits()[0].succeed(1)
    assert published == [("c", b"m0"), ("c", b"m1"), ("c", b"m2")] and stats["confirmed"] == 3 and not lost


def test_a_short_wait_publishes_nothing_and_a_later_one_confirms_everything():
    conn, confirm, published, stats = make()
    first = confirm.track("c", lambda error: None)
    gevent.sleep(0)
    confirm.appended(first, b"m0")
    second = confirm.track("c", lambda error: None)  # while a WAIT is in flight: waits for the next
    confirm.appended(second, b"m1")
    gevent.sleep(0)
    assert len(conn.waits()) == 1
    conn.waits()[0].succeed(0)
    assert published == [] and stats["unconfirmed_waits"] == 1 and confirm.waiting == 2
    gevent.sleep(0.15)  # tried again after RETRY_DELAY
    assert len(conn.waits()) == 2
    conn.waits()[1].succeed(1)
    assert published == [("c", b"m0"), ("c", b"m1")]


def test_a_broken_connection_hands_the_answered_appends_back_oldest_first():
    conn, confirm, published, stats = make()
    lost: List[str] = []
    old = confirm.track("c", lambda error: lost.append("old"))
    gevent.sleep(0)
    confirm.appended(old, b"m0")
    newer = confirm.track("c", lambda error: lost.append("newer"))
    # the connection breaks: the newer append fails first (it was in flight), then the WAIT
    confirm.failed(newer, redis.ConnectionError("reset"))
    lost.append("newer")  # what the store does after failed()
    conn.waits()[0].fail(redis.ConnectionError("reset"))
    assert lost == ["old", "newer"] and published == [] and stats["lost_before_confirmation"] == 1


def test_an_append_answered_on_another_connection_is_never_confirmed_by_this_wait():
    conn, confirm, published, _ = make()
    lost: List[BaseException] = []
    record = confirm.track("c", lost.append)
    gevent.sleep(0)
    confirm.appended(record, b"m0")
    conn.generation = 2  # reconnected (maybe to another server) before the WAIT was written
    conn.waits()[0].succeed(1)
    assert published == [] and len(lost) == 1


def test_a_refused_append_is_not_published_and_its_neighbours_are():
    conn, confirm, published, _ = make()
    a, b = confirm.track("c", lambda error: None), confirm.track("c", lambda error: None)
    gevent.sleep(0)
    confirm.failed(a, redis.ResponseError("NOSCRIPT"))
    confirm.appended(b, b"m1")
    conn.waits()[0].succeed(1)
    assert published == [("c", b"m1")]


def test_the_wait_timeout_stays_below_half_the_command_timeout():
    assert wait_timeout(0.5, 2.0) == 0.5
    assert wait_timeout(0.9, 1.0) == 0.5
