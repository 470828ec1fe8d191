"""crossws_sync.cluster.outage: messages no Redis node can take are held (bounded, for a while)
and published in their order once a node is settled again."""
import gevent
import pytest

from crossws_sync.cluster.outage import OutageBuffer
from crossws_sync.errors import RedisUnavailableError
from support import wait_for


class Bus:
    """The two things the buffer uses of a CrossServerBus: ``settled`` and ``publish``."""

    def __init__(self):
        self.up = True
        self.settled = True
        self.published = []
        self.lost = []

    def publish(self, channel, message, *, wait, on_lost):
        assert wait is False
        if not self.up:
            raise RedisUnavailableError("No healthy Redis node available")
        self.published.append((channel, message["n"]))
        self.lost.append(on_lost)


def make(bus, size=100, age=30.0):
    stats = {"outage_buffered": 0, "outage_flushed": 0, "outage_dropped": 0}
    stopped = []
    buffer = OutageBuffer(size=size, age=age, stats=stats, bus=lambda: bus, stopped=lambda: bool(stopped))
    return buffer, stats, stopped


def test_publishes_at_once_while_a_node_takes_messages():
    bus = Bus()
    buffer, stats, _ = make(bus)
    buffer.publish("c", {"n": 1})
    assert bus.published == [("c", 1)] and len(buffer) == 0 and stats["outage_buffered"] == 0


def test_held_during_an_outage_then_sent_in_order_once_a_node_is_settled():
    bus = Bus()
    buffer, stats, _ = make(bus)
    bus.up = False
    buffer.publish("a", {"n": 1})
    bus.up = True  # a node is back but not settled yet: newer messages queue behind the held one
    bus.settled = False
    buffer.publish("b", {"n": 2})
    buffer.publish("a", {"n": 3})
    gevent.sleep(0.2)
    assert bus.published == [] and len(buffer) == 3
    bus.settled = True
    wait_for(lambda: len(buffer) == 0)
    assert bus.published == [("a", 1), ("b", 2), ("a", 3)]
    assert stats == {"outage_buffered": 3, "outage_flushed": 3, "outage_dropped": 0}
    buffer.publish("c", {"n": 4})  # over: straight through again
    assert bus.published[-1] == ("c", 4) and stats["outage_buffered"] == 3


def test_a_full_buffer_drops_the_oldest_and_old_messages_expire():
    bus = Bus()
    buffer, stats, _ = make(bus, size=2, age=0.2)
    bus.up = False
    for n in (1, 2, 3):
        buffer.publish("c", {"n": n})
    assert len(buffer) == 2 and stats["outage_dropped"] == 1
    gevent.sleep(0.3)  # both remaining ones are now too old
    buffer.publish("c", {"n": 4})
    bus.up = True
    wait_for(lambda: len(buffer) == 0)
    assert bus.published == [("c", 4)]
    assert stats["outage_dropped"] == 3 and stats["outage_flushed"] == 1


def test_a_write_that_reached_no_node_is_held_again():
    bus = Bus()
    buffer, stats, _ = make(bus)
    buffer.publish("c", {"n": 1})
    bus.settled = False
    bus.lost[0](ConnectionError("pipeline lost"))  # what the bus reports for a lost write
    assert len(buffer) == 1 and stats["outage_buffered"] == 1
    bus.settled = True
    wait_for(lambda: len(buffer) == 0)
    assert bus.published == [("c", 1), ("c", 1)]


@pytest.mark.parametrize("how", ["stop", "stopped"])
def test_the_drain_ends_when_the_router_stops(how):
    bus = Bus()
    buffer, stats, stopped = make(bus)
    bus.up = False
    buffer.publish("c", {"n": 1})
    if how == "stop":
        buffer.stop()
    else:
        stopped.append(True)
    bus.up = True
    gevent.sleep(0.2)
    assert bus.published == [] and stats["outage_flushed"] == 0


def test_without_a_bus_nothing_is_published_or_held():
    buffer = OutageBuffer(size=10, age=1.0, stats={"outage_buffered": 0}, bus=lambda: None, stopped=lambda: False)
    buffer.publish("c", {"n": 1})
    assert len(buffer) == 0
