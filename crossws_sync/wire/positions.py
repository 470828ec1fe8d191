"""Stream positions of recoverable messages, sans I/O (connection state recovery).

With ``connection_state_recovery`` on, every message for a room, a user or everyone is appended
to a *history stream* in Redis and published in one atomic step (a Lua script), and carries its
*position* in that stream: an ``offset`` (1, 2, 3, ... per stream) and the stream's ``epoch``
(a random tag that changes whenever the history may have lost writes: a new stream, a Redis
restart or failover). Positions let a node de-duplicate, detect gaps and replay exactly what a
reconnecting client missed.

Streams. Each has a *stream id*, the name clients see, and a Redis key derived from it:

* ``b``                          messages to everyone (``broadcast``);
* ``r\\x1f<namespace>\\x1f<room>``   messages to one room (``broadcast_to_room``);
* ``u\\x1f<socket id>``             messages to one user (``to_socket_id`` / ``to_socket_ids``).

``\\x1f`` cannot occur in a valid name (the name policy refuses control characters), so stream
ids are one-to-one with what they name.

On the bus, a position is the fixed-width text ``"<offset, 16 digits>:<epoch, 8 chars>"``:

* in plain envelopes (JSON or MessagePack, neither compressed nor signed) it is the first field,
  ``streamPos``, so the script can write it in place without changing the message's length, and
  original Node.js nodes read the envelope as usual (they ignore the extra field);
* a compressed or signed body (ours only) is prefixed by :data:`POSITIONED_MARKER` and the
  position instead.

To a client, a positioned frame is the usual ``{"event", "payload"}`` object with one more
field, ``"_pos": [<stream id>, <offset>, <epoch>]`` (the original's client ignores it).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

from . import events

#: Stream id of messages to everyone.
BROADCAST_STREAM = "b"
#: Separator inside stream ids (never part of a valid name).
SEPARATOR = "\x1f"
#: Envelope field holding the position on the bus.
POSITION_FIELD = "streamPos"
#: Frame field holding the position for clients.
FRAME_FIELD = "_pos"
#: Width of an offset's digits on the bus.
OFFSET_DIGITS = 16
#: Width of an epoch.
EPOCH_LENGTH = 8
#: Width of a position on the bus (``offset:epoch``).
POSITION_LENGTH = OFFSET_DIGITS + 1 + EPOCH_LENGTH
#: What an envelope carries until the script writes the real position over it.
PLACEHOLDER = "~" * POSITION_LENGTH
#: First bytes of a compressed or signed body that carries its position in front.
POSITIONED_MARKER = b"\xc1\x03"

Position = Tuple[int, str]


def room_stream(room_namespace: str, room_id: str) -> str:
    """The stream id of a room."""
    return "r" + SEPARATOR + room_namespace + SEPARATOR + room_id


def user_stream(socket_id: str) -> str:
    """The stream id of a user's direct messages."""
    return "u" + SEPARATOR + socket_id


def stream_room(stream: str) -> Optional[Tuple[str, str]]:
    """``(namespace, room id)`` of a room stream id, else ``None``."""
    parts = stream.split(SEPARATOR)
    if len(parts) == 3 and parts[0] == "r" and parts[1] and parts[2]:
        return parts[1], parts[2]
    return None


def valid_stream(stream: Any, max_bytes: int = 1024) -> bool:
    """Whether ``stream`` is a well-formed stream id (checked on what clients send back)."""
    if type(stream) is not str or not stream or len(stream) > max_bytes:
        return False
    if stream == BROADCAST_STREAM:
        return True
    parts = stream.split(SEPARATOR)
    if parts[0] == "u":
        return len(parts) == 2 and bool(parts[1])
    return parts[0] == "r" and len(parts) == 3 and bool(parts[1]) and bool(parts[2])


def format_position(offset: int, epoch: str) -> str:
    """The bus text of a position (fixed width)."""
    return "%0*d:%s" % (OFFSET_DIGITS, offset, epoch)


def parse_position(text: Any) -> Optional[Position]:
    """``(offset, epoch)`` from the bus text, or ``None`` if it is not one."""
    if type(text) is bytes:
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    if type(text) is not str or len(text) != POSITION_LENGTH or text[OFFSET_DIGITS] != ":":
        return None
    digits = text[:OFFSET_DIGITS]
    if not digits.isdigit() or not digits.isascii():
        return None
    return int(digits), text[OFFSET_DIGITS + 1:]


def valid_epoch(epoch: Any) -> bool:
    """Whether ``epoch`` looks like one (what clients send back is checked with this)."""
    return type(epoch) is str and len(epoch) == EPOCH_LENGTH and epoch.isascii() and epoch.isalnum()


def with_position(frame_text: str, stream: str, offset: int, epoch: str) -> str:
    """``frame_text`` (a JSON object's text) with the ``_pos`` field added for the client.

    Raises:
        ValueError: ``frame_text`` is not the text of a JSON object.
    """
    text = frame_text.rstrip()
    if not text.startswith("{") or not text.endswith("}"):
        raise ValueError("a positioned frame must be a JSON object")
    tail = events.dumps([stream, offset, epoch])
    if text == "{}" or text.replace(" ", "") == "{}":
        return '{"%s":%s}' % (FRAME_FIELD, tail)
    return '%s,"%s":%s}' % (text[:-1], FRAME_FIELD, tail)


def client_position(message: Any) -> Optional[Tuple[str, int, str]]:
    """``(stream, offset, epoch)`` from a decoded server frame's ``_pos``, or ``None``."""
    if type(message) is not dict:
        return None
    value = message.get(FRAME_FIELD)
    if type(value) is not list or len(value) != 3:
        return None
    stream, offset, epoch = value
    if type(stream) is not str or type(offset) is not int or type(epoch) is not str:
        return None
    return stream, offset, epoch


__all__ = [
    "BROADCAST_STREAM", "EPOCH_LENGTH", "FRAME_FIELD", "PLACEHOLDER", "POSITIONED_MARKER", "POSITION_FIELD",
    "POSITION_LENGTH", "Position", "client_position", "format_position", "parse_position", "room_stream",
    "stream_room", "user_stream", "valid_epoch", "valid_stream", "with_position",
]
