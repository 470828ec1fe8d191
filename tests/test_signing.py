"""Signed frames: bound to key and channel, refused when replayed, stale, from the future or v1."""
import pytest

from crossws_sync.wire.envelope import EnvelopeCodec
from crossws_sync.errors import EnvelopeError
from crossws_sync.wire.signing import ReplayGuard, sign, verify

KEY = b"shared"


def test_a_message_decodes_once_then_is_a_replay():
    sender, receiver = EnvelopeCodec("json", signing_key=KEY), EnvelopeCodec("json", signing_key=KEY)
    raw = sender.encode({"a": 1}, "ch")
    assert receiver.decode(raw, "ch") == {"a": 1}
    with pytest.raises(EnvelopeError, match="replay"):
        receiver.decode(raw, "ch")
    assert receiver.decode(sender.encode({"a": 2}, "ch"), "ch") == {"a": 2}  # the next one is fine
    assert receiver.signature_failures == 1


def test_signature_failures_are_counted_by_the_codec():
    receiver = EnvelopeCodec("json", signing_key=KEY)
    for raw in (EnvelopeCodec("json").encode({"a": 1}, "ch"),  # unsigned
                EnvelopeCodec("json", signing_key=b"other").encode({"a": 1}, "ch")):  # wrong key
        with pytest.raises(EnvelopeError):
            receiver.decode(raw, "ch")
    assert receiver.signature_failures == 2


def test_reordered_sequences_inside_the_window_pass_once_and_older_ones_are_refused():
    guard = ReplayGuard(max_age=60, window=8)
    token, now = b"T" * 8, 1000.0
    for sequence in (5, 3, 4, 1, 2):  # several Redis nodes may reorder a little
        guard.check(token, sequence, 1_000_000, now)
    with pytest.raises(EnvelopeError, match="seen before"):
        guard.check(token, 3, 1_000_000, now)
    guard.check(token, 20, 1_000_000, now)
    with pytest.raises(EnvelopeError, match="behind"):
        guard.check(token, 12, 1_000_000, now)  # 8 behind the highest: outside the window
    guard.check(token, 13, 1_000_000, now)
    guard.check(b"U" * 8, 3, 1_000_000, now)  # another sender has its own window


def test_stale_and_future_timestamps_are_refused():
    guard = ReplayGuard(max_age=60)
    with pytest.raises(EnvelopeError, match="timestamp"):
        guard.check(b"T" * 8, 1, 1_000_000 - 61_000, 1000.0)
    with pytest.raises(EnvelopeError, match="timestamp"):
        guard.check(b"T" * 8, 1, 1_000_000 + 61_000, 1000.0)
    guard.check(b"T" * 8, 1, 1_000_000 - 59_000, 1000.0)


def test_quiet_senders_are_forgotten_and_their_old_messages_stay_refused():
    guard = ReplayGuard(max_age=10)
    guard.check(b"old-one!", 1, 0, 0.0)
    for sequence in range(1, 1100):  # the periodic sweep runs every 1024 checks
        guard.check(b"busy-one", sequence, 30_000, 30.0)
    assert len(guard) == 1  # quiet for 2 x max_age: forgotten
    with pytest.raises(EnvelopeError, match="timestamp"):
        guard.check(b"old-one!", 1, 0, 30.0)  # and its replay is refused by the timestamp


def test_mac_binds_key_channel_and_header_and_version_1_is_refused():
    raw = sign(KEY, "ch", b"{}", token=b"T" * 8, sequence=7, now_ms=123)
    assert verify(KEY, "ch", raw) == (b"{}", b"T" * 8, 7, 123)
    with pytest.raises(EnvelopeError, match="bad signature"):
        verify(KEY, "other", raw)
    with pytest.raises(EnvelopeError, match="bad signature"):
        verify(b"guess", "ch", raw)
    tampered = raw[:10] + bytes([raw[10] ^ 1]) + raw[11:]  # the sequence, inside the header
    with pytest.raises(EnvelopeError, match="bad signature"):
        verify(KEY, "ch", tampered)
    with pytest.raises(EnvelopeError, match="version 1"):
        verify(KEY, "ch", b"\xc1\x01" + bytes(32) + b"{}")
