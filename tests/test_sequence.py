"""Pure tests of crossws_sync.wire.sequence: per-(sender, channel) numbers and gap detection."""
from crossws_sync.wire.sequence import EPOCH_FIELD, SEQ_FIELD, GapDetector, SequenceStamper


def test_stamper_numbers_each_channel_from_one_and_keeps_a_stamp_on_republish():
    stamper = SequenceStamper()
    stamped = []
    for channel in ("ws:a", "ws:b", "ws:a"):
        message = {"data": "x"}
        stamper.stamp(channel, message)
        stamped.append((message[EPOCH_FIELD], message[SEQ_FIELD]))
    assert [n for _, n in stamped] == [1, 1, 2] and {e for e, _ in stamped} == {stamper.epoch}
    again = {"data": "y"}
    stamper.stamp("ws:a", again)
    stamper.stamp("ws:a", again)  # re-published after a failed write: same number
    assert again[SEQ_FIELD] == 3
    assert SequenceStamper().epoch != stamper.epoch  # a restarted sender is a new epoch


def test_stamper_evicting_a_channel_gives_it_a_new_epoch():
    stamper = SequenceStamper(max_channels=1)
    first, other, back = {}, {}, {}
    stamper.stamp("ws:a", first)
    stamper.stamp("ws:b", other)
    stamper.stamp("ws:a", back)
    assert back[SEQ_FIELD] == 1 and back[EPOCH_FIELD] != first[EPOCH_FIELD]


def test_gap_detector_counts_skipped_numbers_per_sender_and_channel():
    gaps = GapDetector()
    assert [gaps.check("ws:a", "A", "e1", n) for n in (5, 6, 7)] == [0, 0, 0]  # first seen: baseline
    assert gaps.check("ws:b", "A", "e1", 1) == 0  # another channel: its own numbers
    assert gaps.check("ws:a", "B", "e9", 1) == 0  # another sender
    assert gaps.check("ws:a", "A", "e1", 10) == 2 and gaps.missed == 2
    assert gaps.check("ws:a", "A", "e1", 8) == 0 and (gaps.missed, gaps.late) == (1, 1)  # late, taken back
    assert gaps.check("ws:a", "A", "e1", 8) == 0 and (gaps.missed, gaps.late) == (1, 1)  # duplicate: ignored
    assert gaps.check("ws:a", "A", "e2", 1) == 0 and gaps.missed == 1  # restarted sender
    assert gaps.check("ws:a", "A", "e3", 4) == 3 and gaps.missed == 4  # restarted, its first 3 lost
    assert gaps.check("ws:a", "A", "e3", "5") == 0 and gaps.check("ws:a", "A", None, 5) == 0  # malformed
    gaps.forget_channel("ws:a")
    assert gaps.check("ws:a", "A", "e3", 50) == 0 and gaps.missed == 4  # re-subscribed: new baseline


def test_gap_detector_is_bounded():
    gaps = GapDetector(max_keys=3, max_skipped=4)
    for n in range(10):
        gaps.check("ws:%d" % n, "A", "e", 1)
    assert gaps._keys == 3
    gaps.check("ws:x", "A", "e", 1)
    gaps.check("ws:x", "A", "e", 100)
    assert gaps.missed == 98
    assert gaps.check("ws:x", "A", "e", 2) == 0 and gaps.missed == 98  # too old to be remembered
    assert gaps.check("ws:x", "A", "e", 99) == 0 and gaps.missed == 97
