"""Outbox: encode once, number our own messages on WebSocket-routing channels, expect their echo."""
import pytest

from crossws_sync.bus.channels import Subscriptions
from crossws_sync.bus.outbox import Outbox
from crossws_sync.errors import RedisUnavailableError
from crossws_sync.wire import envelope as env


class Nodes:
    """A stand-in RedisNodeSet: records what is published."""

    def __init__(self, channels=(), fail=False):
        self.channels = set(channels)
        self.fail = fail
        self.sent = []

    def publish(self, channel, raw):
        if self.fail:
            raise RedisUnavailableError("No healthy Redis node available")
        self.sent.append(("wait", channel, raw))

    def publish_nowait(self, channel, raw, on_lost):
        self.sent.append(("nowait", channel, raw, on_lost))


def make(subscribed=(), fail=False):
    codec = env.EnvelopeCodec("json")
    nodes = Nodes(subscribed, fail)
    echoes = []
    outbox = Outbox(server_name="A", codec=codec, nodes=nodes,
                    channels=Subscriptions(ws_prefix="ws:", system=[], custom=["ws:custom"]), expect_echo=echoes.append)
    return outbox, nodes, echoes, codec


def test_own_messages_on_ws_channels_are_numbered_others_not():
    outbox, nodes, _, codec = make()
    outbox.publish("ws:room", {"senderServer": "A"})
    outbox.publish("ws:room", {"senderServer": "A"})
    outbox.publish("ws:room", {"senderServer": "B"})
    outbox.publish("ws:custom", {"senderServer": "A"})
    outbox.publish("other", {"senderServer": "A"})
    decoded = [codec.decode(sent[2]) for sent in nodes.sent]
    assert [m.get(env.SEQ_FIELD) for m in decoded] == [1, 2, None, None, None]


def test_the_echo_is_expected_only_for_our_messages_on_subscribed_channels():
    outbox, nodes, echoes, _ = make(subscribed=["news"])
    outbox.send("news", {"senderServer": "A"})
    outbox.send("news", {"senderServer": "B"})
    outbox.send("elsewhere", {"senderServer": "A"})
    assert echoes == [nodes.sent[0][2]]


def test_wait_false_queues_with_the_lost_hook():
    outbox, nodes, _, _ = make()
    lost = []
    outbox.publish("ws:room", {"x": 1}, wait=False, on_lost=lost.append)
    assert nodes.sent[0][0] == "nowait" and nodes.sent[0][3] == lost.append


def test_publish_custom_tags_a_copy_and_reports_failures_as_false():
    outbox, nodes, _, codec = make()
    message = {"n": 1}
    assert outbox.publish_custom("news", message, tag_sender=True) is True
    assert message == {"n": 1} and codec.decode(nodes.sent[0][2]) == {"n": 1, "senderServer": "A"}
    assert outbox.publish_custom("news", {"n": 2}, tag_sender=False) is True
    assert codec.decode(nodes.sent[1][2]) == {"n": 2}
    assert outbox.publish_custom("news", ["not", "a", "dict"], tag_sender=True) is False
    assert outbox.publish_custom("news", {"bad": object()}, tag_sender=True) is False
    with pytest.raises(TypeError):
        outbox.publish_custom("", {}, tag_sender=True)
    failing, _, _, _ = make(fail=True)
    assert failing.publish_custom("news", {"n": 3}, tag_sender=True) is False
