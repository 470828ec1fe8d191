"""Signed bus messages: HMAC-SHA256 bound to the channel, with replay protection.

With a shared ``signing_key`` every message our nodes publish is wrapped in a signed frame::

    c1 02 <sender token: 8 bytes> <sequence: u64> <timestamp ms: u64> <HMAC-SHA256: 32 bytes> <body>

The MAC covers a domain string, the channel, the 26-byte header and the body: a message is
accepted only from a key holder, only on the channel it was signed for, and only once. The
sender token is random per process and the sequence counts up from 1, so a receiver keeps, per
sender, the highest sequence seen and a window of the :data:`SEQUENCE_WINDOW` before it (pub/sub
through several Redis nodes may reorder a little): a sequence seen before, or older than the
window, is a replay. A timestamp more than ``max_age`` seconds away from the receiver's clock is
refused too, which bounds what can be replayed to a receiver that lost its state (a restart)
and lets it forget senders quiet for ``2 x max_age``. Clocks must agree within ``max_age`` (NTP).

Version 1 frames (no header, no replay protection) are refused. This module imports neither
gevent nor redis and never blocks.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from typing import Dict, List, Optional, Tuple

from ..errors import EnvelopeError

#: First byte of a signed frame (0xc1 is "never used" in MessagePack, not JSON either).
SIGNED_MARKER = 0xC1
SIGNED_VERSION = 0x02
#: Sequences a receiver still accepts below the highest one seen from the same sender.
SEQUENCE_WINDOW = 4096
#: Default bound on the distance between a message's timestamp and the receiver's clock.
DEFAULT_MAX_AGE = 60.0

_HEADER = struct.Struct("!BB8sQQ")  # marker, version, sender token, sequence, timestamp (ms)
_MAC_SIZE = 32
_SIGN_DOMAIN = b"crossws-sync/bus/v2\x00"


def _mac(key: bytes, channel: str, header: bytes, body: bytes) -> bytes:
    return hmac.new(key, _SIGN_DOMAIN + channel.encode("utf-8") + b"\x00" + header + body, hashlib.sha256).digest()


def new_sender_token() -> bytes:
    """A random 8-byte sender token (one per process and codec)."""
    return os.urandom(8)


def sign(key: bytes, channel: str, body: bytes, *, token: bytes = b"\x00" * 8, sequence: int = 1,
         now_ms: Optional[int] = None) -> bytes:
    """Wrap ``body`` in a signed frame bound to ``channel`` (see the module docstring)."""
    header = _HEADER.pack(SIGNED_MARKER, SIGNED_VERSION, token, sequence,
                          int(time.time() * 1000) if now_ms is None else now_ms)
    return header + _mac(key, channel, header, body) + body


def verify(key: bytes, channel: str, raw: bytes) -> Tuple[bytes, bytes, int, int]:
    """Check a signed frame's MAC; return ``(body, token, sequence, timestamp_ms)``.

    Raises:
        EnvelopeError: not a signed frame, another version or a wrong MAC.
    """
    if len(raw) < 2 or raw[0] != SIGNED_MARKER:
        raise EnvelopeError("unsigned message rejected (a signing_key is configured)")
    if raw[1] != SIGNED_VERSION:
        raise EnvelopeError("signed frame of version %d refused (this node reads version %d, "
                            "with replay protection)" % (raw[1], SIGNED_VERSION))
    if len(raw) < _HEADER.size + _MAC_SIZE:
        raise EnvelopeError("truncated signed frame")
    header = raw[:_HEADER.size]
    mac, body = raw[_HEADER.size:_HEADER.size + _MAC_SIZE], raw[_HEADER.size + _MAC_SIZE:]
    if not hmac.compare_digest(mac, _mac(key, channel, header, body)):
        raise EnvelopeError("bad signature on channel %r" % channel)
    _, _, token, sequence, stamp = _HEADER.unpack(header)
    return body, token, sequence, stamp


class ReplayGuard:
    """Refuses signed messages seen before, too old or from the future.

    Args:
        max_age: seconds a timestamp may differ from this clock.
        window: sequences accepted below the highest seen from a sender.
    """

    def __init__(self, max_age: float = DEFAULT_MAX_AGE, window: int = SEQUENCE_WINDOW) -> None:
        self.max_age = max_age
        self.window = window
        self._mask = (1 << window) - 1
        # token -> [highest sequence, bitmap of the window (bit i: highest - i seen), last seen]
        self._senders: Dict[bytes, List[float]] = {}
        self._checks = 0

    def __len__(self) -> int:
        """Senders remembered."""
        return len(self._senders)

    def check(self, token: bytes, sequence: int, stamp_ms: int, now: Optional[float] = None) -> None:
        """Record the message or refuse it.

        Raises:
            EnvelopeError: a replay (sequence seen, or below the window), or a timestamp more
                than ``max_age`` away.
        """
        now = time.time() if now is None else now
        if abs(now - stamp_ms / 1000.0) > self.max_age:
            raise EnvelopeError("signed message refused: its timestamp is %.0f s away from this clock"
                                % (stamp_ms / 1000.0 - now))
        self._checks += 1
        if self._checks % 1024 == 0:
            self._forget_quiet(now)
        state = self._senders.get(token)
        if state is None:
            self._senders[token] = [sequence, 1, now]
            return
        highest, bitmap = int(state[0]), int(state[1])
        if sequence > highest:
            state[0], state[1] = sequence, ((bitmap << (sequence - highest)) | 1) & self._mask
        else:
            behind = highest - sequence
            if behind >= self.window:
                raise EnvelopeError("signed message refused: a replay (sequence %d is %d behind)" % (sequence, behind))
            if (bitmap >> behind) & 1:
                raise EnvelopeError("signed message refused: a replay (sequence %d seen before)" % sequence)
            state[1] = bitmap | (1 << behind)
        state[2] = now

    def _forget_quiet(self, now: float) -> None:
        # Everything a sender quiet for 2 x max_age sent is refused by its timestamp now, even
        # with its clock up to max_age ahead of ours: its window is no longer needed.
        quiet = [token for token, state in self._senders.items() if now - state[2] > 2 * self.max_age]
        for token in quiet:
            del self._senders[token]


__all__ = ["DEFAULT_MAX_AGE", "ReplayGuard", "SEQUENCE_WINDOW", "SIGNED_MARKER", "SIGNED_VERSION",
           "new_sender_token", "sign", "verify"]
