"""crossws_sync.client.heartbeat: ping after the interval, pong on the echo, pong-timeout and a
4002 close without one; a fake connection, small intervals."""
import gevent
import pytest

from crossws_sync.client.heartbeat import PONG_TIMEOUT_CODE, PONG_TIMEOUT_REASON, Heartbeat
from crossws_sync.wire import frames
from crossws_sync.wire.websocket import CLOSING, OPEN
from support import wait_for

pytestmark = pytest.mark.timeout(30)


class FakeLink:
    def __init__(self):
        self.state = OPEN
        self.detached = False
        self.sent = []
        self.closes = []

    def send(self, data):
        self.sent.append(frames.FrameParser(None).feed(data))  # masked, like every client frame
        return True

    def start_close(self, code, reason):
        self.closes.append((code, reason))
        self.state = CLOSING


def make(interval=0.05, pong_timeout=0.1):
    fired = []
    beat = Heartbeat(interval, pong_timeout=pong_timeout, ping_msg="hb", fire=lambda *a: fired.append(a), url="ws://x")
    return beat, fired


def test_ping_after_the_interval_then_pong_on_the_echo_and_again():
    beat, fired = make()
    link = FakeLink()
    beat.start(link)
    assert not beat.on_text(link, "hb")  # no ping outstanding: not a pong
    wait_for(lambda: link.sent)
    assert fired == [("ping",)] and link.sent == [[(frames.OP_TEXT, b"hb")]]
    assert not beat.on_text(link, "other") and beat.latency is None
    assert beat.on_text(link, "hb")
    assert fired[-1][0] == "pong" and fired[-1][1] == beat.latency and 0 <= beat.latency < 1
    assert not beat.on_text(link, "hb")  # the same echo counts once
    wait_for(lambda: len(link.sent) == 2)  # re-armed by the pong
    beat.stop()
    assert link.closes == []


def test_no_echo_fires_pong_timeout_and_closes_with_4002():
    beat, fired = make()
    link = FakeLink()
    beat.start(link)
    wait_for(lambda: link.closes)
    assert [f[0] for f in fired] == ["ping", "pong-timeout"]
    assert link.closes == [(PONG_TIMEOUT_CODE, PONG_TIMEOUT_REASON)] == [(4002, "pong timeout")]
    assert not beat.on_text(link, "hb")  # too late


def test_stop_cancels_the_ping_and_the_pong_wait():
    beat, fired = make(interval=0.02, pong_timeout=0.05)
    link = FakeLink()
    beat.start(link)
    wait_for(lambda: link.sent)
    beat.stop()
    gevent.sleep(0.1)
    assert fired == [("ping",)] and link.closes == []
    assert not beat.on_text(link, "hb")


def test_nothing_is_sent_on_a_detached_or_closed_link():
    for attr, value in (("detached", True), ("state", CLOSING)):
        beat, fired = make(interval=0.01)
        link = FakeLink()
        setattr(link, attr, value)
        beat.start(link)
        gevent.sleep(0.05)
        assert fired == [] and link.sent == []


def test_a_detached_link_gets_no_pong_timeout():
    beat, fired = make(interval=0.01, pong_timeout=0.03)
    link = FakeLink()
    beat.start(link)
    wait_for(lambda: link.sent)
    link.detached = True
    gevent.sleep(0.06)
    assert fired == [("ping",)] and link.closes == []


def test_interval_changes_apply_at_the_next_start():
    beat, fired = make(interval=10)
    link = FakeLink()
    beat.start(link)
    beat.interval = 0.01
    gevent.sleep(0.03)
    assert link.sent == []
    beat.start(link)
    wait_for(lambda: link.sent)
    beat.stop()
