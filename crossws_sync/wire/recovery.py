"""Connection state recovery, the pure part: options, per-connection stream positions, and the
decision whether a reconnecting client can be recovered.

A *position* is ``(offset, epoch)`` in a history stream (:mod:`crossws_sync.wire.positions`).
:class:`StreamTracker` keeps, for one connection, the last position delivered in each stream,
and says what to do with the next message: send it, drop it as a duplicate, or fill a gap first.
:func:`plan_recovery` turns a stored session, what the client says it received and the streams'
current tops into the ranges to replay, or the reason it cannot be done. No I/O here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .positions import Position, parse_position, format_position, valid_epoch, valid_stream

#: The event a reconnecting client sends first: ``{"sid": <session id>, "pos": {<stream>: [offset, epoch]}}``.
RECOVER_EVENT = "_crossws.recover"
#: The event a server sends with the session: ``{"sid": <session id>?, "recovered": bool}``.
SESSION_EVENT = "_crossws.session"
#: The URL parameter a reconnecting client adds so the server waits for :data:`RECOVER_EVENT`.
RECOVER_PARAM = "_crossws_recover"
#: Close code of a connection whose live stream lost messages that history no longer holds.
INSUFFICIENT_STATE_CODE = 3010
#: Session field of the user id (stream ids never equal it).
USER_FIELD = "u"


# ---------------------------------------------------------------------------------------------
# One connection's positions
# ---------------------------------------------------------------------------------------------

SEND = "send"
DUPLICATE = "duplicate"
GAP = "gap"


@dataclass
class StreamTracker:
    """The last position delivered to one connection in each of its streams.

    While :attr:`held` is a list (during a recovery), live messages wait there instead of being
    sent; they are replayed through :meth:`check` once history has been sent.
    """

    positions: Dict[str, Position] = field(default_factory=dict)
    #: where the connection joined a stream it has had no message of yet (the stream's top then)
    baseline: Dict[str, Position] = field(default_factory=dict)
    held: Optional[List[Tuple[str, int, str, bytes]]] = None
    #: the user whose session the connection holds
    user_id: Optional[str] = None

    def check(self, stream: str, offset: int, epoch: str) -> Tuple[str, int]:
        """What to do with the message at ``(offset, epoch)`` of ``stream``.

        Returns:
            ``(SEND, 0)``: deliver it (then call :meth:`advance`); ``(DUPLICATE, 0)``: already
            delivered; ``(GAP, after)``: the offsets after ``after`` and before ``offset`` were
            never delivered: fill them from history first. A stream not tracked yet, and a new
            epoch (the stream started again), count from the message itself or from offset 0.
        """
        current = self.positions.get(stream)
        if current is None:
            # Nothing delivered yet: a message from before the join may still be on its way
            # (sent, never a duplicate); one beyond the join's top + 1 means a gap.
            base = self.baseline.get(stream)
            if base is not None and base[1] == epoch and offset > base[0] + 1:
                return GAP, base[0]
            return SEND, 0
        last, last_epoch = current
        if last_epoch != epoch:
            last = 0  # a new epoch numbers from 1
        if offset <= last:
            return DUPLICATE, 0
        if offset > last + 1:
            return GAP, last
        return SEND, 0

    def advance(self, stream: str, offset: int, epoch: str) -> None:
        """Record ``(offset, epoch)`` as delivered in ``stream``."""
        self.positions[stream] = (offset, epoch)

    def forget(self, stream: str) -> None:
        self.positions.pop(stream, None)
        self.baseline.pop(stream, None)


# ---------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------

def session_fields(user_id: str, positions: Dict[str, Position]) -> Dict[str, str]:
    """The Redis hash of a session."""
    fields = {USER_FIELD: user_id}
    for stream, (offset, epoch) in positions.items():
        fields[stream] = format_position(offset, epoch)
    return fields


def parse_session(fields: Dict[str, str]) -> Optional[Tuple[str, Dict[str, Position]]]:
    """``(user id, {stream: position})`` of a stored session, or ``None`` if malformed."""
    user_id = fields.get(USER_FIELD)
    if not user_id:
        return None
    positions: Dict[str, Position] = {}
    for name, value in fields.items():
        if name == USER_FIELD:
            continue
        position = parse_position(value)
        if position is None or not valid_stream(name):
            return None
        positions[name] = position
    return user_id, positions


def parse_request(payload: Any, *, max_streams: int) -> Optional[Tuple[str, Dict[str, Position]]]:
    """``(session id, {stream: position})`` from a client's recovery request, or ``None``.

    Hostile input: anything malformed, oversized or of the wrong type gives ``None`` (the
    connection is then simply not recovered). Positions for streams the client names wrongly
    are dropped one by one.
    """
    if type(payload) is not dict:
        return None
    session_id = payload.get("sid")
    if type(session_id) is not str or not 8 <= len(session_id) <= 64 or not session_id.isascii():
        return None
    raw = payload.get("pos", {})
    if type(raw) is not dict or len(raw) > max_streams:
        return None
    positions: Dict[str, Position] = {}
    for stream, value in raw.items():
        if not valid_stream(stream) or type(value) is not list or len(value) != 2:
            continue
        offset, epoch = value
        if type(offset) is int and 0 <= offset < 10 ** 15 and valid_epoch(epoch):
            positions[stream] = (offset, epoch)
    return session_id, positions


# ---------------------------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What to replay: for each stream, the offset after which history is owed."""

    user_id: str
    starts: Dict[str, Position]


def plan_recovery(session: Optional[Dict[str, str]], client: Dict[str, Position]) -> Tuple[Optional[Plan], str]:
    """Where each stream of the session resumes, or why the session cannot be recovered.

    A stream resumes at the client's position when it is in the same epoch as the session's
    and not before it (a client never gets history from before it joined), else at the
    session's position.

    Returns:
        ``(plan, "")`` or ``(None, reason)``.
    """
    if session is None:
        return None, "unknown or expired session"
    parsed = parse_session(session)
    if parsed is None:
        return None, "malformed session"
    user_id, stored = parsed
    starts: Dict[str, Position] = {}
    for stream, (offset, epoch) in stored.items():
        theirs = client.get(stream)
        if theirs is not None and theirs[1] == epoch and theirs[0] >= offset:
            starts[stream] = theirs
        elif theirs is not None and theirs[1] != epoch:
            # The client followed the stream into a newer epoch live (the session keeps the
            # one of its join, older): it was a member for the whole of the new epoch.
            starts[stream] = theirs
        else:
            starts[stream] = (offset, epoch)
    return Plan(user_id, starts), ""


def check_stream(start: Position, top: Position) -> str:
    """Why ``stream`` cannot resume at ``start`` given its current ``top``, or ``""``."""
    if start[1] != top[1]:
        return "history epoch changed (Redis restarted, failed over, or the history expired)"
    if start[0] > top[0]:
        return "position ahead of the history (the history lost writes)"
    return ""


def check_entries(start: int, offsets: List[int]) -> str:
    """Why history read after ``start`` is not complete, or ``""``: the first entry must be
    ``start + 1`` and the offsets consecutive."""
    expected = start + 1
    for offset in offsets:
        if offset != expected:
            return "history trimmed or expired past the client's position"
        expected += 1
    return ""


__all__ = [
    "DUPLICATE", "GAP", "INSUFFICIENT_STATE_CODE", "Plan", "RECOVER_EVENT", "RECOVER_PARAM", "SEND", "SESSION_EVENT", "StreamTracker", "USER_FIELD", "check_entries", "check_stream", "parse_request",
    "parse_session", "plan_recovery", "session_fields",
]
