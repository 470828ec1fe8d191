"""The WebSocket protocol (RFC 6455, with RFC 7692's permessage-deflate) for both roles, sans I/O.

:class:`WebSocketProtocol` turns received bytes into events and calls into bytes to send. The
server connection (:mod:`crossws_sync.server.connection`) and the client (:mod:`crossws_sync.client`)
are thin gevent drivers around it: they read from the socket, :meth:`~WebSocketProtocol.receive_data`,
dispatch the events, and write what :meth:`~WebSocketProtocol.data_to_send` returns.

The rules it owns, the same for both roles:

* framing, fragmentation, masking by role, the message size limit, fail-fast UTF-8
  (:class:`~crossws_sync.wire.frames.FrameParser`);
* a ping is answered with a pong carrying its payload (while open);
* the close handshake: a peer's close is echoed with its code (an empty close when it carried
  none), a close of ours waits for the peer's; a protocol violation sends the close code the
  violation calls for (1002, 1007 for invalid UTF-8, 1009 for an oversized message) once;
* after a close frame or a violation nothing more is read.

Pure: no gevent, no sockets. The opening handshake is in :mod:`crossws_sync.wire.handshake`.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

from . import frames
from ..errors import ProtocolError

CONNECTING = 0
OPEN = 1
CLOSING = 2
CLOSED = 3

#: Event kinds: the opcodes of what was received.
TEXT = frames.OP_TEXT
BINARY = frames.OP_BINARY
PING = frames.OP_PING
PONG = frames.OP_PONG

#: ``(kind, value)``: ``(TEXT, str)``, ``(BINARY, bytes)``, ``(PING, bytes)``, ``(PONG, bytes)``.
Event = Tuple[int, Any]


def sendable_close_code(code: int) -> bool:
    """Whether an endpoint may send ``code`` in a close frame (RFC 6455 §7.4)."""
    return code in frames.VALID_PEER_CLOSE or 3000 <= code <= 4999


class WebSocketProtocol:
    """One WebSocket connection's protocol state, for either role.

    Args:
        client: ``True`` for the client role (frames sent masked, frames received unmasked).
        max_message_size: largest data message accepted, in bytes (``None``: unlimited).
        compress / inflate: permessage-deflate's per-connection functions, once negotiated
            (:class:`~crossws_sync.wire.deflate.PerMessageDeflate`); see :meth:`use_deflate`.

    Attributes:
        state: ``OPEN``, ``CLOSING`` (our close sent, the peer's awaited) or ``CLOSED``.
        close_sent / close_received: ``(code, reason)`` of the close frames, once sent or
            received (code 1005 for a close that carried none).
        error: the :class:`~crossws_sync.errors.ProtocolError` that failed the connection.
    """

    __slots__ = ("client", "state", "close_sent", "close_received", "error", "_parser", "_out", "_initiated",
                 "_deflate")

    def __init__(self, *, client: bool, max_message_size: Optional[int] = 1 << 20) -> None:
        self.client = client
        self.state = OPEN
        self.close_sent: Optional[Tuple[int, str]] = None
        self.close_received: Optional[Tuple[int, str]] = None
        self.error: Optional[ProtocolError] = None
        self._parser = frames.FrameParser(max_message_size, expect_masked=not client)
        self._out: List[bytes] = []
        self._initiated = False
        self._deflate: Any = None

    def use_deflate(self, deflate: Any) -> None:
        """Compress and inflate with ``deflate`` (a :class:`~crossws_sync.wire.deflate.PerMessageDeflate`)
        from now on: compressed messages (RSV1) are accepted, :meth:`prepare` compresses."""
        self._deflate = deflate
        self._parser.set_inflate(deflate.decompress)

    @property
    def compressing(self) -> bool:
        """Whether permessage-deflate was negotiated (data frames go through :meth:`prepare`)."""
        return self._deflate is not None

    # Receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> List[Event]:
        """Feed received bytes; return the events they complete, in order.

        A close frame or a protocol violation ends the reading: the events before it are
        returned, ``state`` becomes ``CLOSED`` and the answer (the close frame to send) waits in
        :meth:`data_to_send`. Nothing is read once closed.
        """
        if self.state == CLOSED:
            return []
        messages: List[frames.Message] = []
        try:
            self._parser.feed(data, messages)
        except ProtocolError as exc:
            events = self._events(messages)
            self.fail(exc)
            return events
        if len(messages) == 1 and messages[0][0] == TEXT:  # the common case: one text message
            try:
                return [(TEXT, messages[0][1].decode("utf-8"))]
            except UnicodeDecodeError:
                pass  # failed by _events, with the reason
        return self._events(messages)

    def _events(self, messages: List[frames.Message]) -> List[Event]:
        events: List[Event] = []
        for opcode, payload in messages:
            if opcode == TEXT:
                try:
                    events.append((TEXT, payload.decode("utf-8")))
                except UnicodeDecodeError as exc:
                    # RFC 6455 §8.1: invalid UTF-8 in a text message MUST fail the connection.
                    self.fail(ProtocolError("invalid UTF-8 in a text message: %s" % exc, 1007))
                    break
            elif opcode == BINARY or opcode == PONG:
                events.append((opcode, payload))
            elif opcode == PING:
                if self.state == OPEN:
                    self._out.append(frames.encode_frame(frames.OP_PONG, payload, mask=self.client))
                events.append((PING, payload))
            else:
                self._receive_close(payload)
                break
        return events

    def _receive_close(self, payload: bytes) -> None:
        try:
            received = frames.parse_close_payload(payload)
        except ProtocolError as exc:
            self.fail(exc)
            return
        self.close_received = received
        if self.close_sent is None:
            # RFC 6455 §5.5.1: answer with the peer's code (no code when it sent none).
            code = received[0]
            self.close_sent = (code, "")
            self._out.append(frames.encode_close(None if code == 1005 else code, "", mask=self.client))
        self.state = CLOSED

    def receive_eof(self) -> None:
        """The peer closed the TCP connection (or it broke): the protocol is over."""
        self.state = CLOSED

    def data_to_send(self) -> bytes:
        """What the protocol itself must send now (pongs, the close answer), oldest first."""
        if not self._out:
            return b""
        out, self._out = self._out, []
        return out[0] if len(out) == 1 else b"".join(out)

    # Sending -----------------------------------------------------------------------------

    def prepare(self, frame: bytes) -> bytes:
        """An encoded whole data frame as it goes on this connection's wire (compressed when
        permessage-deflate was negotiated and the payload reaches its threshold)."""
        deflate = self._deflate
        if deflate is None:
            return frame
        return frames.recompress(frame, deflate.compress, deflate.threshold, mask=self.client)

    def send_close(self, code: int = 1000, reason: str = "") -> bytes:
        """Start the close handshake: the close frame to send (``b""`` when not open).

        Raises:
            ValueError: ``code`` is not one an endpoint may send (RFC 6455 §7.4: 1000-1003,
                1007-1014, 3000-4999).
        """
        if not sendable_close_code(code):
            raise ValueError("close code %r cannot be sent (1000-1003, 1007-1014 or 3000-4999)" % (code,))
        if self.state != OPEN:
            return b""
        self.state = CLOSING
        self._initiated = True
        self.close_sent = (code, reason)
        return frames.encode_close(code, reason, mask=self.client)

    def ping_frame(self, payload: bytes = b"") -> bytes:
        """A ping frame (payload cut to 125 bytes)."""
        return frames.encode_frame(frames.OP_PING, payload[:125], mask=self.client)

    def fail(self, error: ProtocolError) -> None:
        """Fail the connection (RFC 6455 §7.1.7): our close with the error's code is queued
        unless a close of ours was already sent; nothing more is read."""
        if self.error is None:
            self.error = error
        if self.close_sent is None and self.state == OPEN:
            reason = str(error)[:120]
            self.close_sent = (error.close_code, reason)
            self._out.append(frames.encode_close(error.close_code, reason, mask=self.client))
        self.state = CLOSED

    # Outcome -----------------------------------------------------------------------------

    @property
    def close_code(self) -> int:
        """The connection's close code: ours when we closed first or failed it, the peer's when
        it closed first, 1006 when it ended with no close frame at all."""
        if self.close_received is not None and not self._initiated:
            return self.close_received[0]
        if self.close_sent is not None:
            return self.close_sent[0]
        return 1006

    @property
    def close_reason(self) -> str:
        """The reason that goes with :attr:`close_code`."""
        if self.close_received is not None and not self._initiated:
            return self.close_received[1]
        if self.close_sent is not None:
            return self.close_sent[1]
        return ""

    @property
    def was_clean(self) -> bool:
        """Whether the close handshake completed (the peer's close frame arrived)."""
        return self.close_received is not None

    def __repr__(self) -> str:
        return "<WebSocketProtocol %s state=%d>" % ("client" if self.client else "server", self.state)


__all__ = [
    "BINARY",
    "CLOSED",
    "CLOSING",
    "CONNECTING",
    "OPEN",
    "PING",
    "PONG",
    "TEXT",
    "Event",
    "WebSocketProtocol",
    "sendable_close_code",
]
