"""Redis envelopes and their codecs, sans I/O.

Everything that crosses Redis between nodes is an *envelope*: a JSON-like ``dict`` built here
and turned into bytes by :class:`EnvelopeCodec`. The envelopes are the original library's, field for field and in the same order, so original Node.js nodes and ours share
the channels:

==================  =========================  ==================================================
kind                channel                    envelope
==================  =========================  ==================================================
bridge request      ``<bridge>server_bridge``  ``{"data": {"event", "senderServer", "payload",
                                               "targetServer": [...], "callbackId"?}}``
bridge reply        bridge, or ours: the       ``{"data": {"event": "_Cs_Cb_", "senderServer",
                    requester's node channel   "targetServer": [], "callbackId", "isCallback":
                                               true, "payload"?}}``
unicast             ``<ws>private_socket``     ``{"data": "<frame>", "socketId", "senderServer"}``
multicast           ``<ws>private_socket``     ``{"data": "<frame>", "socketIds", "senderServer"}``
broadcast           ``<ws>broadcast``          ``{"data": "<frame>", "senderServer"}``
room                ``<ws><namespace>``        ``{"data": "<frame>", "roomNamespace", "roomId",
                                               "senderServer", "excludeSocketIds"}``
custom              any                        the caller's object
==================  =========================  ==================================================

Our requests add one field the original ignores: ``replyTo``, the requester's private channel
``<bridge>node:<serverName>``, so that replies between our nodes reach only the requester.
What our nodes publish on WebSocket-routing (``<ws>...``) channels also carries
``senderEpoch`` and ``senderSeq`` (:class:`SequenceStamper`), from which receivers count the
messages Redis never delivered (:class:`GapDetector`).

Codecs. ``msgpack`` (the default, as the original's) is notepack.io-compatible
(``msgpack.packb(obj, use_bin_type=True)``); ``json`` is ``JSON.stringify``-compatible compact UTF-8 (:func:`events.dumps`). Ours only:
bodies longer than ``compress_threshold`` bytes are zstd-compressed, and an optional shared
``signing_key`` wraps each message in an HMAC-SHA256 frame bound to its channel. Decoding
detects the format by itself, whatever this node sends:

* first non-blank byte ``{`` or ``[``  -> JSON (a valid MessagePack *object* never starts so);
* ``28 b5 2f fd`` (zstd frame magic)    -> decompress (bounded), then JSON or MessagePack;
* ``c1`` (a byte MessagePack never uses) -> signed frame (:mod:`crossws_sync.wire.signing`:
  HMAC bound to the channel, sender token, sequence and timestamp against replays);
* anything else                         -> MessagePack.

This module imports neither gevent nor redis and never blocks.
"""
from __future__ import annotations

import base64
import binascii
import io
import itertools
import secrets
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import zstandard

from . import events
from ..errors import ConfigError, EnvelopeError
from .events import BASE36_DIGITS, MISSING, StampedIds, base36
from .positions import PLACEHOLDER, POSITION_FIELD, POSITION_LENGTH, POSITIONED_MARKER
from .signing import SIGNED_MARKER, ReplayGuard, new_sender_token, sign, verify

import msgpack as _msgpack

#: Reserved event name of a cross-server reply (wire constant of the original).
CALLBACK_EVENT = "_Cs_Cb_"

#: Codec names accepted by :class:`EnvelopeCodec`.
CODECS = ("json", "msgpack")

#: Bytes that start every zstd frame.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_JSON_FIRST = frozenset(b"{[ \t\r\n")

Raw = Union[bytes, bytearray, memoryview, str]


# ---------------------------------------------------------------------------------------------
# Channels
# ---------------------------------------------------------------------------------------------

def bridge_channel(bridge_prefix: str) -> str:
    """Return the channel of every cross-server request (``csbp:server_bridge`` by default)."""
    return bridge_prefix + "server_bridge"


def node_channel(bridge_prefix: str, server_name: str) -> str:
    """Return a node's private reply channel (ours only): ``<bridge_prefix>node:<server_name>``."""
    return "%snode:%s" % (bridge_prefix, server_name)


def private_socket_channel(ws_prefix: str) -> str:
    """Return the channel of unicasts and multicasts to sockets (``ws:private_socket``)."""
    return ws_prefix + "private_socket"


def broadcast_channel(ws_prefix: str) -> str:
    """Return the channel of WebSocket broadcasts (``ws:broadcast``)."""
    return ws_prefix + "broadcast"


def room_channel(ws_prefix: str, bridge_prefix: str, room_namespace: str) -> str:
    """Return the channel of a room namespace, as the original maps it.

    A namespace that already starts with ``ws_prefix`` or ``bridge_prefix`` is used verbatim,
    any other gets ``ws_prefix`` in front (``lobby`` -> ``ws:lobby``).
    """
    if room_namespace.startswith(ws_prefix) or room_namespace.startswith(bridge_prefix):
        return room_namespace
    return ws_prefix + room_namespace


# ---------------------------------------------------------------------------------------------
# Callback ids
# ---------------------------------------------------------------------------------------------

class CallbackIdFactory:
    """Callback ids that are unique across the cluster.

    Shape: ``<serverName>-<epoch ms base36>-<instance token>-<counter base36>``, e.g.
    ``nodeA-mwwqqdvs-k3f9x2-1``. The original used only the last 6 characters of the server
    name, so two nodes could mint the same id and steal each other's replies. Here
    the whole server name (unique in a healthy cluster) is kept, and a random per-instance
    token separates even two processes that wrongly share a name, or a restarted process.

    Args:
        server_name: this node's name.
    """

    def __init__(self, server_name: str) -> None:
        self._token = token = "".join(secrets.choice(BASE36_DIGITS) for _ in range(6))
        self._ids = StampedIds(lambda ms: "%s-%s-%s-" % (server_name, base36(ms), token))

    @property
    def token(self) -> str:
        """The random instance token embedded in every id."""
        return self._token

    def new(self) -> str:
        """Return a fresh callback id."""
        return self._ids.new()


# ---------------------------------------------------------------------------------------------
# Envelope builders
# ---------------------------------------------------------------------------------------------

def bridge_request(event: str, sender_server: str, payload: Any, target_server: Sequence[str],
                   callback_id: Optional[str] = None, *, reply_to: Optional[str] = None,
                   promise_order: bool = False) -> Dict[str, Any]:
    """Build a cross-server request envelope.

    Args:
        event: the event name.
        sender_server: this node's name.
        payload: the user's message (JSON-like); :data:`events.MISSING` leaves it out.
        target_server: target node names; empty means every node.
        callback_id: set when the sender waits for replies.
        reply_to: ours only, the requester's private channel for replies.
        promise_order: use the key order of the original's promise variant (``payload`` first);
            the content is the same, only the bytes differ.

    Returns:
        ``{"data": {...}}`` with the original's field order.
    """
    data: Dict[str, Any] = {}
    if promise_order and payload is not MISSING:
        data["payload"] = payload
    data["event"] = event
    data["senderServer"] = sender_server
    if not promise_order and payload is not MISSING:
        data["payload"] = payload
    data["targetServer"] = list(target_server)
    if callback_id is not None:
        data["callbackId"] = callback_id
    if reply_to is not None:
        data["replyTo"] = reply_to
    return {"data": data}


def bridge_reply(sender_server: str, callback_id: str, payload: Any = MISSING) -> Dict[str, Any]:
    """Build a reply envelope (event ``_Cs_Cb_``); a :data:`MISSING` payload is left out."""
    data: Dict[str, Any] = {
        "event": CALLBACK_EVENT,
        "senderServer": sender_server,
        "targetServer": [],
        "callbackId": callback_id,
        "isCallback": True,
    }
    if payload is not MISSING:
        data["payload"] = payload
    return {"data": data}


def ws_unicast(frame: str, socket_id: str, sender_server: str) -> Dict[str, Any]:
    """Build a unicast envelope for ``<ws>private_socket`` (``frame`` is the client frame text)."""
    return {"data": frame, "socketId": socket_id, "senderServer": sender_server}


def ws_multicast(frame: str, socket_ids: Sequence[str], sender_server: str) -> Dict[str, Any]:
    """Build a multicast envelope for ``<ws>private_socket``."""
    return {"data": frame, "socketIds": list(socket_ids), "senderServer": sender_server}


def ws_broadcast(frame: str, sender_server: str) -> Dict[str, Any]:
    """Build a broadcast envelope for ``<ws>broadcast``."""
    return {"data": frame, "senderServer": sender_server}


def raw_data(data: Union[str, bytes], codec: str) -> Dict[str, Any]:
    """The ``data`` fields of a routing envelope for a raw message (ours: binary across nodes).

    Text stays the original's ``data`` string. Bytes travel as MessagePack ``bin`` (an original
    node in MessagePack mode sends that Buffer on as a binary frame, byte for byte); JSON has no
    bytes, so there they travel as base64 with ``dataEncoding: "base64"`` (ours only).
    """
    if isinstance(data, str) or codec == "msgpack":
        return {"data": data}
    return {"data": base64.b64encode(data).decode("ascii"), "dataEncoding": "base64"}


def data_of(envelope: Dict[str, Any]) -> Union[str, bytes]:
    """The message an envelope carries: ``str`` (text) or ``bytes`` (binary).

    Raises:
        ValueError: ``data`` is missing, of another type, or not valid base64.
    """
    data = envelope.get("data")
    if type(data) is str:
        if envelope.get("dataEncoding") == "base64":
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("dataEncoding base64 but data is not base64") from None
        return data
    if type(data) is bytes:
        return data
    raise ValueError("envelope without a string or bytes 'data'")


def ws_room(frame: str, room_namespace: str, room_id: str, sender_server: str,
            exclude_socket_ids: Sequence[str] = ()) -> Dict[str, Any]:
    """Build a room envelope for the namespace's channel."""
    return {"data": frame, "roomNamespace": room_namespace, "roomId": room_id,
            "senderServer": sender_server, "excludeSocketIds": list(exclude_socket_ids)}


# ---------------------------------------------------------------------------------------------
# Per-sender sequence numbers (ours: gap detection)
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Envelope validators
# ---------------------------------------------------------------------------------------------

def sender_of(message: Any) -> Optional[str]:
    """Return the sender's name the original looks at (``senderServer`` or ``data.senderServer``).

    The receive pipeline drops a message whose sender is this node (its own echo).
    """
    if type(message) is not dict:
        return None
    sender = message.get("senderServer")
    if type(sender) is str:
        return sender
    data = message.get("data")
    if type(data) is dict:
        sender = data.get("senderServer")
        if type(sender) is str:
            return sender
    return None


def parse_bridge(message: Any) -> Tuple[str, Dict[str, Any]]:
    """Classify a message from a bridge or node channel.

    Returns:
        ``("reply", data)`` for a reply (``isCallback`` true, string ``callbackId`` and
        ``senderServer``) or ``("request", data)`` for a request (string ``event`` and a list
        ``targetServer``), where ``data`` is the inner dict handed to listeners.

    Raises:
        EnvelopeError: anything else (the original throws there, caught and logged).
    """
    if type(message) is not dict or type(message.get("data")) is not dict:
        raise EnvelopeError("bridge message has no object 'data'")
    data = message["data"]
    if data.get("isCallback") is True:
        if type(data.get("callbackId")) is not str or type(data.get("senderServer")) is not str:
            raise EnvelopeError("bridge reply without string callbackId/senderServer")
        return "reply", data
    event = data.get("event")
    if type(event) is not str or not event:
        raise EnvelopeError("bridge request without a non-empty string event")
    if type(data.get("targetServer")) is not list:
        raise EnvelopeError("bridge request without a targetServer list")
    callback_id = data.get("callbackId")
    if callback_id is not None and type(callback_id) is not str:
        raise EnvelopeError("bridge request with a non-string callbackId")
    return "request", data


def parse_ws(message: Any) -> str:
    """Classify a WebSocket-routing envelope.

    Returns:
        ``"multicast"`` (``socketIds`` list; preferred when present, as the original),
        ``"unicast"`` (``socketId`` string), ``"room"`` (``roomNamespace`` and ``roomId``
        strings) or ``"broadcast"``.

    Raises:
        EnvelopeError: not an object, ``data`` not a string, or malformed ids.
    """
    if type(message) is not dict:
        raise EnvelopeError("ws envelope is not an object")
    if type(message.get("data")) is not str:
        raise EnvelopeError("ws envelope has no string 'data'")
    if "socketIds" in message:
        socket_ids = message["socketIds"]
        if type(socket_ids) is not list:
            raise EnvelopeError("ws envelope 'socketIds' is not a list")
        return "multicast"
    if "socketId" in message:
        if type(message["socketId"]) is not str or not message["socketId"]:
            raise EnvelopeError("ws envelope 'socketId' is not a non-empty string")
        return "unicast"
    if "roomNamespace" in message or "roomId" in message:
        if type(message.get("roomNamespace")) is not str or type(message.get("roomId")) is not str:
            raise EnvelopeError("ws room envelope needs string roomNamespace and roomId")
        exclude = message.get("excludeSocketIds", [])
        if type(exclude) is not list:
            raise EnvelopeError("ws room envelope 'excludeSocketIds' is not a list")
        return "room"
    return "broadcast"


# ---------------------------------------------------------------------------------------------
# Codec
# ---------------------------------------------------------------------------------------------

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


__all__ = [
    "CALLBACK_EVENT",
    "CODECS",
    "CallbackIdFactory",
    "EPOCH_FIELD",
    "EnvelopeCodec",
    "GapDetector",
    "SEQ_FIELD",
    "SequenceStamper",
    "bridge_channel",
    "bridge_reply",
    "bridge_request",
    "broadcast_channel",
    "codec_from_options",
    "detect_format",
    "node_channel",
    "parse_bridge",
    "parse_ws",
    "private_socket_channel",
    "room_channel",
    "sender_of",
    "sign",
    "verify",
    "ws_broadcast",
    "ws_multicast",
    "ws_room",
    "ws_unicast",
]
