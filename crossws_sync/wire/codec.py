"""The envelope codec: envelopes to bytes for Redis and back, sans I/O.

``msgpack`` (the default, as the original's) is notepack.io-compatible
(``msgpack.packb(obj, use_bin_type=True)``); ``json`` is ``JSON.stringify``-compatible compact
UTF-8 (:func:`events.dumps`). Ours only: bodies longer than ``compress_threshold`` bytes are
zstd-compressed, and an optional shared ``signing_key`` wraps each message in an HMAC-SHA256
frame bound to its channel. Decoding detects the format by itself, whatever this node sends:

* first non-blank byte ``{`` or ``[``  -> JSON (a valid MessagePack *object* never starts so);
* ``28 b5 2f fd`` (zstd frame magic)    -> decompress (bounded), then JSON or MessagePack;
* ``c1`` (a byte MessagePack never uses) -> signed frame (:mod:`crossws_sync.wire.signing`:
  HMAC bound to the channel, sender token, sequence and timestamp against replays);
* anything else                         -> MessagePack.

A recoverable message may carry its stream position (:mod:`crossws_sync.wire.positions`).
This module imports neither gevent nor redis and never blocks.
"""
from __future__ import annotations

import io
import itertools
from typing import Any, Dict, Optional, Tuple, Union

import zstandard

from . import events
from ..errors import ConfigError, EnvelopeError
from .positions import PLACEHOLDER, POSITION_FIELD, POSITION_LENGTH, POSITIONED_MARKER
from .signing import SIGNED_MARKER, ReplayGuard, new_sender_token, sign, verify

import msgpack as _msgpack

#: Codec names accepted by :class:`EnvelopeCodec`.
CODECS = ("json", "msgpack")

#: Bytes that start every zstd frame.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_JSON_FIRST = frozenset(b"{[ \t\r\n")

Raw = Union[bytes, bytearray, memoryview, str]


def detect_format(raw: bytes) -> str:
    """Name the format of an encoded message: ``json``, ``msgpack``, ``zstd`` or ``signed``."""
    if not raw:
        return "msgpack"
    first = raw[0]
    if first in _JSON_FIRST:
        return "json"
    if raw[:4] == ZSTD_MAGIC:
        return "zstd"
    if first == SIGNED_MARKER:
        return "signed"
    return "msgpack"


class EnvelopeCodec:
    """Encode envelopes for Redis and decode whatever a JSON, MessagePack or zstd node sent.

    Args:
        codec: ``"msgpack"`` (default, as the original's default ``enableRedisDataCompression:
            true``) or ``"json"``.
        compress_threshold: bodies longer than this many bytes are zstd-compressed (ours only:
            original Node nodes cannot read them); ``None`` never compresses.
        max_decompressed_size: refuse messages larger than this many bytes, plain or once
            decompressed (zstd).
        signing_key: when set, every message is signed and unsigned, badly signed or replayed
            messages are rejected (only between our nodes; original nodes can neither sign nor
            verify). See :mod:`crossws_sync.wire.signing`.
        compress_level: zstd level (1 is the measured best trade-off).

    Raises:
        ConfigError: unknown codec, msgpack not installed, or a bad number.
    """

    def __init__(self, codec: str = "msgpack", *, compress_threshold: Optional[int] = None,
                 max_decompressed_size: int = 16 << 20, signing_key: Optional[bytes] = None,
                 compress_level: int = 1) -> None:
        if codec not in CODECS:
            raise ConfigError("redis_codec must be one of %s, got %r" % (", ".join(CODECS), codec))
        if compress_threshold is not None and (type(compress_threshold) is not int or compress_threshold < 0):
            raise ConfigError("redis_compress_threshold must be a non-negative int or None")
        if type(max_decompressed_size) is not int or max_decompressed_size <= 0:
            raise ConfigError("max_decompressed_size must be a positive int")
        if signing_key is not None:
            if isinstance(signing_key, str):
                signing_key = signing_key.encode("utf-8")
            if not isinstance(signing_key, (bytes, bytearray)) or not signing_key:
                raise ConfigError("signing_key must be non-empty bytes")
            signing_key = bytes(signing_key)
        self.codec = codec
        #: the plain format (``"json"`` or ``"msgpack"``) of the last message :meth:`decode` read
        self.last_format = codec
        self.compress_threshold = compress_threshold
        self.max_decompressed_size = max_decompressed_size
        self._key = signing_key
        self._token = new_sender_token()
        self._sequence = itertools.count(1)
        self._replays = ReplayGuard()
        #: signed frames refused: unsigned, wrong MAC, replayed (with a signing key only)
        self.signature_failures = 0
        self._compressor = zstandard.ZstdCompressor(level=compress_level, write_content_size=True)
        self._decompressor = zstandard.ZstdDecompressor()

    @property
    def signed(self) -> bool:
        """Whether messages are signed (and unsigned ones rejected)."""
        return self._key is not None

    def __repr__(self) -> str:
        return "EnvelopeCodec(codec=%r, compress_threshold=%r, signed=%r)" % (
            self.codec, self.compress_threshold, self.signed)

    # Encoding -----------------------------------------------------------------------------

    def encode(self, message: Any, channel: str = "") -> bytes:
        """Return the bytes to publish on ``channel`` (the channel matters only when signing).

        Raises:
            EnvelopeError: the message is not serialisable.
        """
        try:
            if self.codec == "json":
                body = events.dumps(message).encode("utf-8")
            else:
                body = _msgpack.packb(message, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EnvelopeError("cannot encode message: %s" % exc) from None
        if self.compress_threshold is not None and len(body) > self.compress_threshold:
            body = self._compressor.compress(body)
        if self._key is not None:
            body = sign(self._key, channel, body, token=self._token, sequence=next(self._sequence))
        return body

    def encode_positioned(self, message: Dict[str, Any], channel: str) -> Tuple[bytes, int]:
        """Encode a recoverable message with room for its stream position.

        Returns:
            ``(raw, index)``: ``raw`` holds :data:`~.positions.PLACEHOLDER` at the 1-based byte
            ``index``, where the history script writes the position (same length). A plain
            body carries it as its first field ``streamPos`` (original nodes read it as usual);
            a compressed or signed one behind :data:`~.positions.POSITIONED_MARKER`.

        Raises:
            EnvelopeError: the message is not serialisable.
        """
        plain = self.compress_threshold is None and self._key is None
        if plain:
            raw = self.encode(dict({POSITION_FIELD: PLACEHOLDER}, **message), channel)
            index = raw.find(PLACEHOLDER.encode("ascii"))
            if index >= 0:
                return raw, index + 1
        raw = POSITIONED_MARKER + PLACEHOLDER.encode("ascii") + self.encode(message, channel)
        return raw, len(POSITIONED_MARKER) + 1

    # Decoding -----------------------------------------------------------------------------

    def decode(self, raw: Raw, channel: str = "", *, check_replay: bool = True) -> Any:
        """Decode a message in any supported format (see the module docstring).

        Args:
            check_replay: refuse a signed message seen before (off for history entries, which
                are read again on purpose).

        Raises:
            EnvelopeError: undecodable, too large once decompressed, or unsigned / badly signed
                while a signing key is configured.
        """
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        elif not isinstance(raw, bytes):
            raw = bytes(raw)
        if len(raw) > self.max_decompressed_size:
            # Decoding a huge plain message costs several times its size in objects: refuse it.
            raise EnvelopeError("message of %d bytes exceeds the %d-byte limit" % (len(raw), self.max_decompressed_size))
        position: Optional[bytes] = None
        if raw[:2] == POSITIONED_MARKER:
            start = len(POSITIONED_MARKER)
            position, raw = raw[start:start + POSITION_LENGTH], raw[start + POSITION_LENGTH:]
        message = self._decode_body(raw, channel, check_replay)
        if position is not None:
            if type(message) is not dict:
                raise EnvelopeError("a positioned message must be a map")
            message[POSITION_FIELD] = position.decode("ascii", "replace")
        return message

    def _decode_body(self, raw: bytes, channel: str, check_replay: bool) -> Any:
        if self._key is not None:
            try:
                raw, token, sequence, stamp = verify(self._key, channel, raw)
                if check_replay:
                    self._replays.check(token, sequence, stamp)
            except EnvelopeError:
                self.signature_failures += 1
                raise
        elif raw[:1] == b"\xc1":
            raise EnvelopeError("signed message received but no signing_key is configured")
        if raw[:4] == ZSTD_MAGIC:
            raw = self._decompress(raw)
            if raw[:4] == ZSTD_MAGIC:
                raise EnvelopeError("nested zstd frames are not accepted")
        return self._decode_plain(raw)

    def _decompress(self, raw: bytes) -> bytes:
        limit = self.max_decompressed_size
        try:
            declared = zstandard.frame_content_size(raw)
            if declared > limit:
                raise EnvelopeError("zstd message declares %d bytes, over the %d byte limit" % (declared, limit))
            with self._decompressor.stream_reader(io.BytesIO(raw)) as reader:
                out = reader.read(limit + 1)
        except zstandard.ZstdError as exc:
            raise EnvelopeError("bad zstd message: %s" % exc) from None
        if len(out) > limit:
            raise EnvelopeError("zstd message expands beyond the %d byte limit" % limit)
        return out

    def _decode_plain(self, raw: bytes) -> Any:
        if not raw:
            raise EnvelopeError("empty message")
        if raw[0] in _JSON_FIRST:
            self.last_format = "json"
            try:
                return events.loads(raw)
            except (ValueError, TypeError) as exc:
                raise EnvelopeError("bad JSON message: %s" % exc) from None
        self.last_format = "msgpack"
        try:
            return _msgpack.unpackb(raw, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            raise EnvelopeError("bad MessagePack message: %s" % exc) from None


def codec_from_options(*, redis_codec: str = "msgpack", redis_compress_threshold: Optional[int] = None,
                       enable_redis_data_compression: Optional[bool] = None,
                       max_decompressed_size: int = 16 << 20,
                       signing_key: Optional[bytes] = None) -> EnvelopeCodec:
    """Build the codec from the adapter's options.

    ``enable_redis_data_compression`` is the original's option: when given it wins, ``True``
    meaning MessagePack and ``False`` JSON, both without zstd (exactly what an original node
    with the same setting reads).
    """
    if enable_redis_data_compression is not None:
        redis_codec = "msgpack" if enable_redis_data_compression else "json"
        redis_compress_threshold = None
    return EnvelopeCodec(redis_codec, compress_threshold=redis_compress_threshold,
                         max_decompressed_size=max_decompressed_size, signing_key=signing_key)


__all__ = ["CODECS", "EnvelopeCodec", "Raw", "ZSTD_MAGIC", "codec_from_options", "detect_format"]
