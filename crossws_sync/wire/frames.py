"""RFC 6455 framing, sans I/O: shared by the server connection and the client.

Pure: no gevent, no sockets. :class:`FrameParser` turns received bytes into messages and
enforces the message size limit *while reading the header*, so an oversized message is
refused before its payload is buffered. Encoders return ready-to-write ``bytes`` so that a
broadcast can encode a frame once and write the same object to every member.

Unmasking XORs whole integers (``int.from_bytes``) instead of looping per byte in Python.
"""
from __future__ import annotations

import base64
import codecs
import hashlib
import os
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ..errors import MessageTooBig, ProtocolError

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Close codes a peer may legitimately send (RFC 6455 §7.4 plus the 1012-1014 registry additions).
VALID_PEER_CLOSE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}

_pack_h = struct.Struct("!H").pack
_pack_q = struct.Struct("!Q").pack
_unpack_h = struct.Struct("!H").unpack_from
_unpack_q = struct.Struct("!Q").unpack_from

#: A parsed message: (opcode, payload). Text payloads stay bytes; the caller decodes.
Message = Tuple[int, bytes]


def accept_key(sec_websocket_key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((sec_websocket_key + WS_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def new_client_key() -> str:
    """Return a fresh random ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


#: Small payloads only (<= 1 KiB): word count -> the integer whose every 32-bit word is 1, so
#: that ``mask * repeat`` is the mask repeated over the payload in one multiplication.
_REPEAT_WORDS = 256
_repeat: Dict[int, int] = {}


def unmask(payload: Union[bytes, bytearray, memoryview], mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (C-speed via big integers)."""
    length = len(payload)
    if length == 0:
        return b""
    words = (length + 3) >> 2
    if words <= _REPEAT_WORDS:
        repeat = _repeat.get(words)
        if repeat is None:
            repeat = _repeat[words] = ((1 << (words << 5)) - 1) // 0xFFFFFFFF
        value = int.from_bytes(payload, "little") ^ (int.from_bytes(mask, "little") * repeat)
        return value.to_bytes(words << 2, "little")[:length]
    full_mask = (mask * (words + 1))[:length]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(full_mask, "big")
    return value.to_bytes(length, "big")


def encode_frame(opcode: int, payload: bytes, *, mask: bool = False, fin: bool = True, rsv1: bool = False) -> bytes:
    """Encode one frame. Servers send unmasked frames, clients masked ones; ``rsv1`` marks a
    compressed message (permessage-deflate)."""
    length = len(payload)
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = bytes((first, mask_bit | 126)) + _pack_h(length)
    else:
        header = bytes((first, mask_bit | 127)) + _pack_q(length)
    if mask:
        key = os.urandom(4)
        return header + key + unmask(payload, key)
    return header + payload


def encode_data(data: Union[str, bytes, bytearray, memoryview], *, mask: bool = False) -> bytes:
    """One whole data frame for a raw message: ``str`` as text, bytes-like as binary.

    Raises:
        TypeError: ``data`` is neither text nor bytes.
    """
    if isinstance(data, str):
        return encode_text(data, mask=mask)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return encode_frame(OP_BINARY, bytes(data), mask=mask)
    raise TypeError("a raw message is str or bytes, not %s" % type(data).__name__)


def recompress(frame: bytes, compress: Callable[[bytes], bytes], threshold: int, *, mask: bool) -> bytes:
    """``frame`` again with its payload deflated (RSV1 set), when it is a whole data frame of at
    least ``threshold`` payload bytes; else ``frame`` itself (permessage-deflate, RFC 7692)."""
    b0 = frame[0]
    if (b0 & 0x0F) not in (OP_TEXT, OP_BINARY) or not b0 & 0x80 or b0 & 0x70:
        return frame
    length = frame[1] & 0x7F
    header = 2
    if length == 126:
        length, header = _unpack_h(frame, 2)[0], 4
    elif length == 127:
        length, header = _unpack_q(frame, 2)[0], 10
    if length < threshold:
        return frame
    payload = frame[header + 4:] if mask else frame[header:]
    if mask:
        payload = unmask(payload, frame[header:header + 4])
    return encode_frame(b0 & 0x0F, compress(bytes(payload)), mask=mask, rsv1=True)


def encode_text_bytes(payload: bytes) -> bytes:
    """Encode an unmasked text frame from UTF-8 ``payload`` (the server's per-message path)."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    return encode_frame(OP_TEXT, payload)


def encode_text(text: str, *, mask: bool = False) -> bytes:
    """Encode a text frame from a ``str``."""
    return encode_frame(OP_TEXT, text.encode("utf-8"), mask=mask)


def encode_close(code: Optional[int] = 1000, reason: str = "", *, mask: bool = False) -> bytes:
    """Encode a close frame carrying ``code`` and ``reason`` (reason truncated to 123 bytes)."""
    if code is None:
        return encode_frame(OP_CLOSE, b"", mask=mask)
    raw_reason = reason.encode("utf-8")
    if len(raw_reason) > 123:
        # Cut on a character boundary: half a UTF-8 sequence would make the peer close with 1007.
        raw_reason = raw_reason[:123].decode("utf-8", "ignore").encode("utf-8")
    return encode_frame(OP_CLOSE, _pack_h(code) + raw_reason, mask=mask)


def parse_close_payload(payload: bytes) -> Tuple[int, str]:
    """Return ``(code, reason)`` of a close frame; 1005 when it carries no code.

    Raises:
        ProtocolError: a one-byte payload, a code peers may not send, or a non-UTF-8 reason.
    """
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload")
    code = _unpack_h(payload)[0]
    if not (code in VALID_PEER_CLOSE or 3000 <= code <= 4999):
        raise ProtocolError("invalid close code %d" % code)
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("close reason is not UTF-8", close_code=1007) from None
    return code, reason


class FrameParser:
    """Incremental frame parser that reassembles fragmented messages.

    Args:
        max_message_size: largest data message accepted, in bytes (``None``: unlimited).
        expect_masked: ``True`` on the server (client frames must be masked), ``False`` on
            the client (server frames must not be).
    """

    __slots__ = ("_buf", "_max", "_expect_masked", "_frag_opcode", "_frag_parts", "_frag_size", "_frag_utf8",
                 "_inflate", "_frag_compressed")

    def __init__(self, max_message_size: Optional[int] = 1 << 20, *, expect_masked: bool = True,
                 inflate: Optional[Callable[[bytes], bytes]] = None) -> None:
        self._buf = bytearray()
        self._max = max_message_size
        self._expect_masked = expect_masked
        self._frag_opcode = 0
        self._frag_parts: List[bytes] = []
        self._frag_size = 0
        self._frag_utf8: Any = None  # incremental UTF-8 check of a fragmented text message
        #: permessage-deflate's inflater, once negotiated: RSV1 then marks a compressed message
        self._inflate = inflate
        self._frag_compressed = False

    def feed(self, data: bytes, out: Optional[List[Message]] = None) -> List[Message]:
        """Add received bytes; return the complete messages (data and control) they finish,
        appended to ``out`` when given (so that the messages before an error are kept there).

        Raises:
            ProtocolError: the peer broke the protocol (its ``close_code`` says how to close).
            MessageTooBig: a message announced or reached more than the size limit.
        """
        buf = self._buf
        if buf:
            buf += data
            view: Union[bytes, bytearray] = buf
        else:
            view = data
            # Fast path, inline for speed: exactly one whole text frame under 64 KiB (a client's
            # typical request, a server's typical ack or push); everything else, and every error,
            # takes the general loop (_parse).
            if len(data) > 1 and data[0] == 0x81 and not self._frag_opcode:
                b1 = data[1]
                start = 0
                if self._expect_masked:
                    if b1 == 0xFE:  # masked, 16-bit length
                        if len(data) > 8 and (data[2] << 8 | data[3]) == len(data) - 8:
                            start = 8
                    elif b1 < 0xFE and b1 - 0x80 == len(data) - 6:  # masked, 7-bit length
                        start = 6
                elif b1 == 0x7E:  # unmasked, 16-bit length
                    if len(data) > 4 and (data[2] << 8 | data[3]) == len(data) - 4:
                        start = 4
                elif b1 < 0x7E and b1 == len(data) - 2:  # unmasked, 7-bit length
                    start = 2
                if start and (self._max is None or len(data) - start <= self._max):
                    whole = (OP_TEXT, unmask(data[start:], data[start - 4:start]) if self._expect_masked
                             else bytes(data[start:]))
                    if out is None:
                        return [whole]
                    out.append(whole)
                    return out
        if out is None:
            out = []
        pos = self._parse(view, out)
        if pos:
            if view is buf:
                del buf[:pos]
            else:
                self._buf = bytearray(view[pos:])
        elif view is not buf:
            self._buf = bytearray(view)
        return out

    def _parse(self, view: Union[bytes, bytearray], out: List[Message]) -> int:
        """Append the messages of the whole frames at the start of ``view`` to ``out``; return
        how many bytes they took (an incomplete frame at the end stays for the next feed)."""
        pos = 0
        total = len(view)
        limit = self._max
        mask_bit = 0x80 if self._expect_masked else 0
        while total - pos >= 2:
            b0 = view[pos]
            b1 = view[pos + 1]
            opcode = b0 & 0x0F
            compressed = bool(b0 & 0x70) and self._compressed(b0)
            length = b1 & 0x7F
            header = 2
            if length == 126:
                if total - pos < 4:
                    break
                length = _unpack_h(view, pos + 2)[0]
                header = 4
            elif length == 127:
                if total - pos < 10:
                    break
                length = _unpack_q(view, pos + 2)[0]
                header = 10
            if (b1 & 0x80) != mask_bit or opcode > OP_BINARY:
                self._check_header(b0, b1, length)
            elif limit is not None and self._frag_size + length > limit:
                raise MessageTooBig("message exceeds %d bytes" % limit)
            if mask_bit:
                header += 4
            end = pos + header + length
            if total < end:
                break
            if mask_bit:
                payload = unmask(memoryview(view)[pos + header:end], bytes(view[pos + header - 4:pos + header]))
            else:
                payload = bytes(view[pos + header:end])
            pos = end
            if opcode >= 0x8:
                out.append((opcode, payload))
            elif b0 & 0x80 and opcode and not self._frag_opcode:  # a whole data message
                out.append((opcode, self._inflate(payload) if compressed else payload))  # type: ignore[misc]
            else:
                self._fragment(opcode, payload, bool(b0 & 0x80), compressed, out)
        return pos

    def _compressed(self, b0: int) -> bool:
        """RSV bits are set in ``b0``: ``True`` for a compressed data frame (RSV1 with deflate).

        Raises:
            ProtocolError: any other use of the reserved bits.
        """
        if (b0 & 0x70) != 0x40 or self._inflate is None or (b0 & 0x0F) not in (OP_TEXT, OP_BINARY):
            raise ProtocolError("reserved bits set (no extension was negotiated for them)")
        return True

    def _check_header(self, b0: int, b1: int, length: int) -> None:
        """Check a frame that is not a plain data frame of the right masking (the rare case).

        Raises:
            ProtocolError: wrong masking, a control frame fragmented or over 125 bytes, an unknown opcode.
        """
        if bool(b1 & 0x80) != self._expect_masked:
            raise ProtocolError("frame masking is wrong for this side")
        opcode = b0 & 0x0F
        if opcode < 0x8:
            raise ProtocolError("unknown data opcode %d" % opcode)
        if not b0 & 0x80 or length > 125:
            raise ProtocolError("control frame fragmented or longer than 125 bytes")
        if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
            raise ProtocolError("unknown control opcode %d" % opcode)

    def _fragment(self, opcode: int, payload: bytes, fin: bool, compressed: bool, out: List[Message]) -> None:
        """A data frame that starts, continues or ends a fragmented message (or breaks one).

        Raises:
            ProtocolError: a continuation without a message, a new message inside one, or
            invalid UTF-8 in a fragmented text message.
        """
        if opcode == OP_CONT:
            if not self._frag_opcode:
                raise ProtocolError("continuation frame without a message to continue")
            self._frag_parts.append(payload)
            self._frag_size += len(payload)
            if self._frag_utf8 is not None:
                self._check_utf8(payload, fin)
            if fin:
                message = b"".join(self._frag_parts)
                if self._frag_compressed:
                    message = self._inflate(message)  # type: ignore[misc]
                out.append((self._frag_opcode, message))
                self._frag_opcode = 0
                self._frag_parts = []
                self._frag_size = 0
                self._frag_utf8 = None
        elif self._frag_opcode:
            raise ProtocolError("new data frame inside a fragmented message")
        else:
            self._frag_opcode = opcode
            self._frag_parts = [payload]
            self._frag_size = len(payload)
            self._frag_compressed = compressed
            if opcode == OP_TEXT and not compressed:  # RFC 6455 §8.1: fail as soon as the text is invalid
                self._frag_utf8 = codecs.getincrementaldecoder("utf-8")()
                self._check_utf8(payload, False)

    def set_inflate(self, inflate: Optional[Callable[[bytes], bytes]]) -> None:
        """Accept compressed messages (RSV1) from now on, inflated with ``inflate``."""
        self._inflate = inflate

    def _check_utf8(self, payload: bytes, final: bool) -> None:
        try:
            self._frag_utf8.decode(payload, final)
        except UnicodeDecodeError:
            raise ProtocolError("invalid UTF-8 in a text message", close_code=1007) from None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf) + self._frag_size
