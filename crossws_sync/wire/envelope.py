"""Redis envelopes: channels, callback ids, builders and validators, sans I/O.

Everything that crosses Redis between nodes is an *envelope*: a JSON-like ``dict`` built here
and turned into bytes by :class:`~crossws_sync.wire.codec.EnvelopeCodec`. The envelopes are the original library's, field for field and in the same order, so original Node.js nodes and ours share
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
``senderEpoch`` and ``senderSeq`` (:mod:`crossws_sync.wire.sequence`).

The codec (JSON, MessagePack, zstd, signed frames: :mod:`crossws_sync.wire.codec`) and the
sequence numbers live in their own modules; their names are importable from here too.
This module imports neither gevent nor redis and never blocks.
"""
from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from ..errors import EnvelopeError
from .codec import CODECS, ZSTD_MAGIC, EnvelopeCodec, Raw, codec_from_options, detect_format  # noqa: F401 (kept importable)
from .events import BASE36_DIGITS, MISSING, StampedIds, base36
from .sequence import EPOCH_FIELD, SEQ_FIELD, GapDetector, SequenceStamper
from .signing import sign, verify

#: Reserved event name of a cross-server reply (wire constant of the original).
CALLBACK_EVENT = "_Cs_Cb_"


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
