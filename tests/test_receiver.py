"""Receiver: own echoes dropped undecoded, decoding, sequence gaps, routing by channel."""
import gevent

from crossws_sync.bus.bus import STAT_KEYS
from crossws_sync.bus.channels import Subscriptions
from crossws_sync.bus.node import NODE_COUNTS
from crossws_sync.bus.receiver import MAX_PENDING_ECHOES, Receiver
from crossws_sync.io.dispatch import Dispatcher
from crossws_sync.wire import envelope as env


class Node:
    label = "127.0.0.1:6379"

    def __init__(self):
        self.counts = dict.fromkeys(NODE_COUNTS, 0)


NODE = Node()


def make(ws_handler=None, codec="msgpack"):
    stats = dict.fromkeys(STAT_KEYS, 0)
    channels = Subscriptions(ws_prefix="ws:", system=["csbp:server_bridge"], custom=["news"])
    receiver = Receiver(server_name="A", codec=env.EnvelopeCodec(codec), channels=channels,
                        dispatcher=Dispatcher(10, "test receiver"), stats=stats, ws_handler=ws_handler)
    return receiver, stats


def raw(message, codec="msgpack"):
    return env.EnvelopeCodec(codec).encode(message)


def test_an_expected_echo_is_dropped_once_without_decoding_then_own_messages_by_sender():
    receiver, stats = make()
    receiver.expect_echo(b"\xff not decodable")
    receiver.on_node_message(NODE, "news", b"\xff not decodable")
    assert stats["self_echoes"] == 1 and stats["decode_errors"] == 0
    receiver.on_node_message(NODE, "news", b"\xff not decodable")
    assert stats["decode_errors"] == 1
    receiver.on_node_message(NODE, "news", raw({"senderServer": "A", "n": 1}))
    assert stats["self_echoes"] == 2 and stats["received"] == 3


def test_each_redis_node_counts_what_it_delivered():
    receiver, stats = make()
    first, second = Node(), Node()
    receiver.on_node_message(first, "news", raw({"senderServer": "B", "n": 1}))
    receiver.on_node_message(second, "news", raw({"senderServer": "B", "n": 2}))
    receiver.on_node_message(second, "news", b"\xff not decodable")
    assert first.counts == {"published": 0, "received": 1, "decode_errors": 0, "failovers": 0}
    assert second.counts == {"published": 0, "received": 2, "decode_errors": 1, "failovers": 0}
    assert stats["received"] == 3 and stats["decode_errors"] == 1


def test_the_echo_table_is_cleared_when_full():
    receiver, stats = make()
    for i in range(MAX_PENDING_ECHOES + 1):
        receiver.expect_echo(b"\xc1%d" % i)
    receiver.on_node_message(NODE, "news", b"\xc10")  # forgotten: decoded (and undecodable)
    assert stats["self_echoes"] == 0 and stats["decode_errors"] == 1


def test_routing_by_channel():
    got = []
    receiver, stats = make(ws_handler=lambda channel, message: got.append(("ws", channel, message["n"])))
    receiver.route("csbp:server_bridge", lambda channel, message: got.append(("system", channel, message["n"])))
    receiver.custom_handler = lambda channel, message: got.append(("custom", channel, message["n"]))
    receiver.on_node_message(NODE, "csbp:server_bridge", raw({"senderServer": "B", "n": 1}))
    receiver.on_node_message(NODE, "ws:room", raw({"senderServer": "B", "n": 2}))
    receiver.on_node_message(NODE, "news", raw({"senderServer": "B", "n": 3}))
    assert got == [("system", "csbp:server_bridge", 1), ("ws", "ws:room", 2)]  # custom: on a worker
    gevent.sleep(0.05)
    assert got[2] == ("custom", "news", 3) and stats["dropped"] == 0


def test_without_handlers_messages_are_dropped_and_counted():
    receiver, stats = make()
    receiver.on_node_message(NODE, "ws:room", raw({"senderServer": "B"}))
    receiver.on_node_message(NODE, "news", raw({"senderServer": "B"}))
    assert stats["dropped"] == 2


def test_a_failing_ws_handler_is_logged_not_raised(caplog):
    def boom(channel, message):
        raise RuntimeError("boom")

    receiver, _ = make(ws_handler=boom)
    receiver.on_node_message(NODE, "ws:room", raw({"senderServer": "B"}))
    assert "ws message handler failed" in caplog.text


def test_sequence_gaps_are_counted_and_forgotten_with_the_channel():
    receiver, stats = make(ws_handler=lambda channel, message: None)
    stamper = env.SequenceStamper()
    messages = []
    for n in range(4):
        message = {"senderServer": "B", "n": n}
        stamper.stamp("ws:room", message)
        messages.append(message)
    for message in (messages[0], messages[1], messages[3]):
        receiver.on_node_message(NODE, "ws:room", raw(message))
    assert receiver.gaps.missed == 1 and stats["messages_missed"] == 1
    receiver.on_node_message(NODE, "ws:room", raw(messages[2]))
    assert receiver.gaps.missed == 0 and stats["messages_late"] == 1
    receiver.forget_channel("ws:room")
    later = {"senderServer": "B"}
    for _ in range(3):
        stamper.stamp("ws:room", dict(later))
    stamper.stamp("ws:room", later)
    receiver.on_node_message(NODE, "ws:room", raw(later))  # a new baseline, not a gap
    assert receiver.gaps.missed == 0


def test_a_peer_in_the_other_codec_is_counted_and_warned_about_once(caplog):
    receiver, stats = make()
    receiver.custom_handler = lambda channel, message: None
    for _ in range(3):
        receiver.on_node_message(NODE, "news", raw({"senderServer": "B"}, codec="json"))
    assert stats["foreign_codec"] == 3
    assert caplog.text.count("publishes json") == 1


def test_a_sample_of_own_echoes_is_timed_per_redis_node():
    from crossws_sync.bus.receiver import LAG_SAMPLE_EVERY

    receiver, _ = make()
    first, second = Node(), Node()
    second.label = "127.0.0.1:6380"
    messages = [b"\xc1m%d" % i for i in range(4 * LAG_SAMPLE_EVERY)]
    for message in messages:
        receiver.expect_echo(message)
    gevent.sleep(0.02)
    for index, message in enumerate(messages):
        receiver.on_node_message(first if index < 2 * LAG_SAMPLE_EVERY else second, "news", message)
    assert {label: h.count for label, h in receiver.lag.items()} == {"127.0.0.1:6379": 2, "127.0.0.1:6380": 2}
    assert all(0.02 <= h.sum / h.count < 5 and h.quantile(0.5) >= 0.025 for h in receiver.lag.values())
    receiver.on_node_message(first, "news", raw({"senderServer": "B", "n": 1}))  # a peer's: not timed
    assert receiver.lag["127.0.0.1:6379"].count == 2
