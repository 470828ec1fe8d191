"""Per-sender sequence numbers on routing envelopes (ours: gap detection), sans I/O.

What our nodes publish on WebSocket-routing (``<ws>...``) channels carries ``senderEpoch`` and
``senderSeq`` (:class:`SequenceStamper`); receivers count from them the messages Redis never
delivered (:class:`GapDetector`). The original ignores both fields.

This module imports neither gevent nor redis and never blocks.
"""
from __future__ import annotations

import secrets
from typing import Any, Dict, List

from .events import BASE36_DIGITS

#: Envelope field of the per-(sender, channel) sequence number (ours; the original ignores it).
SEQ_FIELD = "senderSeq"
#: Envelope field of the sender's epoch: a random token per bus, new when a sender restarts.
EPOCH_FIELD = "senderEpoch"


class SequenceStamper:
    """Numbers a sender's messages per channel: 1, 2, 3... on each channel, under one epoch.

    A receiver subscribes only some channels, so one counter per channel (not per sender) is
    what lets it tell a lost message from a message it was never meant to see.

    Args:
        max_channels: channels numbered at once; past it the oldest counter is forgotten (its
            channel restarts at 1 under a new epoch, which receivers take as a new sender).
    """

    def __init__(self, max_channels: int = 100000) -> None:
        self.max_channels = max_channels
        self._epoch = self._base = "".join(secrets.choice(BASE36_DIGITS) for _ in range(8))
        self._evictions = 0
        self._counters: Dict[str, List[Any]] = {}

    @property
    def epoch(self) -> str:
        """The epoch of channels numbered from now on (changes only after an eviction)."""
        return self._epoch

    def stamp(self, channel: str, message: Dict[str, Any]) -> None:
        """Add the epoch and the channel's next number to ``message`` (in place).

        A message that already carries this sender's stamp for ``channel`` (re-published after a
        failed write) keeps it, so receivers count it once.
        """
        counter = self._counters.get(channel)
        if counter is None:
            if len(self._counters) >= self.max_channels:
                del self._counters[next(iter(self._counters))]
                self._evictions += 1
                self._epoch = "%s.%d" % (self._base, self._evictions)
            counter = self._counters[channel] = [self._epoch, 0]
        elif message.get(EPOCH_FIELD) == counter[0] and SEQ_FIELD in message:
            return
        counter[1] += 1
        message[EPOCH_FIELD] = counter[0]
        message[SEQ_FIELD] = counter[1]


class GapDetector:
    """Counts the messages a receiver missed, from the senders' per-channel numbers.

    For each (channel, sender) it keeps the sender's epoch, the highest number seen and the
    numbers skipped lately. A number past the highest + 1 counts the numbers in between as
    *missed*; one of those arriving later (several Redis nodes do not keep order between them)
    is taken back and counted as *late*. The first message seen from a sender on a channel only
    sets the baseline (what came before may have been sent before we subscribed); under a new
    epoch (the sender restarted while we listened) the numbers before it count as missed.
    Messages without a number (original nodes) are not checked.

    Args:
        max_keys: (channel, sender) pairs tracked; the oldest is forgotten past it.
        max_skipped: skipped numbers remembered per pair for late arrivals.
    """

    def __init__(self, max_keys: int = 100000, max_skipped: int = 1024) -> None:
        self.max_keys = max_keys
        self.max_skipped = max_skipped
        #: messages missed so far (net of those that arrived late)
        self.missed = 0
        #: messages that arrived after a higher number from the same sender
        self.late = 0
        self._state: Dict[str, Dict[str, List[Any]]] = {}
        self._keys = 0

    def check(self, channel: str, sender: str, epoch: Any, number: Any) -> int:
        """Record message ``number`` of ``sender`` under ``epoch`` on ``channel``.

        Returns:
            How many messages this one shows missing (0 in order; negative never).
        """
        if type(number) is not int or type(epoch) is not str:
            return 0
        senders = self._state.get(channel)
        if senders is None:
            senders = self._state[channel] = {}
        state = senders.get(sender)
        if state is None:
            # The first message seen from this sender here: what came before it may not have
            # been ours to see (we subscribed later), so it only sets the baseline.
            self._evict()
            self._keys += 1
            senders[sender] = [epoch, number, None]
            return 0
        if state[0] != epoch:
            # The sender restarted while we listened: its new numbers start at 1, and all of
            # them were ours to see.
            senders[sender] = [epoch, number, None]
            gap = number - 1 if number > 1 else 0
            self.missed += gap
            return gap
        last: int = state[1]
        if number == last + 1:
            state[1] = number
            return 0
        if number > last:
            gap = number - last - 1
            state[1] = number
            self.missed += gap
            skipped = state[2]
            if skipped is None:
                skipped = state[2] = set()
            skipped.update(range(max(last + 1, number - self.max_skipped), number))
            if len(skipped) > self.max_skipped:  # keep the newest numbers
                for old in sorted(skipped)[:len(skipped) - self.max_skipped]:
                    skipped.discard(old)
            return gap
        skipped = state[2]
        if skipped and number in skipped:
            skipped.discard(number)
            self.missed -= 1
            self.late += 1
        return 0

    def forget_channel(self, channel: str) -> None:
        """Stop tracking ``channel`` (unsubscribed: what is sent meanwhile is not ours to miss)."""
        senders = self._state.pop(channel, None)
        if senders:
            self._keys -= len(senders)

    def _evict(self) -> None:
        if self._keys < self.max_keys:
            return
        for channel, senders in self._state.items():
            if senders:
                senders.pop(next(iter(senders)))
                self._keys -= 1
                if not senders:
                    del self._state[channel]
                return


__all__ = ["EPOCH_FIELD", "GapDetector", "SEQ_FIELD", "SequenceStamper"]
