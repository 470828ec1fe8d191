"""The original's client <-> server JSON frames, sans I/O.

Wire format, byte-compatible with ``JSON.stringify`` of the original:

* event, no ack:   ``{"event":"say","payload":{"msg":"hi"}}``
* event with ack:  ``{"event":"say","payload":{...},"callbackId":"mwwqqd9p-zx2w-1"}``
* ack:             ``{"payload":{...},"callbackId":"mwwqqd9p-zx2w-1"}``
* server push:     ``{"event":"hello","payload":{"a":1}}``
* heartbeat:       a text frame equal to the configured heartbeat string (default ``""``).

Two frames of ours, additive (server-to-client requests, see :mod:`crossws_sync.cluster.asks`):

* server request:  ``{"event":"confirm","payload":{...},"ackId":"k3"}``: a server push that wants an
  answer. It is not a ``callbackId`` frame: the original client takes any server frame with a
  ``callbackId`` for the ack of one of its own requests and never dispatches it, whereas it
  dispatches this one as an ordinary event (and never answers).
* answer:          ``{"ackId":"k3","payload":{...}}`` from the client: no ``event``.

Floats that are NaN or infinite are written as ``null``, as ``JSON.stringify`` does: ``NaN`` and
``Infinity`` are not JSON and ``JSON.parse`` rejects them. Every JSON that leaves a node (frames
to clients, the Python client's frames, bus envelopes in the ``json`` codec) goes through
:data:`dumps` / :data:`dumps_bytes`.

A payload of :data:`MISSING` is left out of the frame, like ``undefined`` in JavaScript.
"""
from __future__ import annotations

import itertools
import os
import random
import string
import time
from typing import Any, Callable, Optional, Tuple

import ujson

from ..errors import ProtocolError


class _Missing:
    """Sentinel for "no payload" (JavaScript ``undefined``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

#: Longest ``callbackId`` the server accepts (as the original: 1..64 characters).
MAX_CALLBACK_ID_LENGTH = 64
#: Longest ``ackId`` of an answer frame (the same rule as ``callbackId``).
MAX_ACK_ID_LENGTH = 64


def finite_floats(obj: Any) -> Any:
    """Return ``obj`` with every NaN / infinite float inside dicts, lists and tuples replaced by ``None``.

    That is what ``JSON.stringify`` writes for them (``null``); the JSON that goes on the wire
    must never hold ``NaN`` / ``Infinity``, which ``JSON.parse`` rejects.
    """
    kind = type(obj)
    if kind is float:
        return obj if obj - obj == 0.0 else None
    if kind is dict:
        return {key: finite_floats(value) for key, value in obj.items()}
    if kind is list or kind is tuple:
        return [finite_floats(value) for value in obj]
    if isinstance(obj, float):
        return obj if obj - obj == 0.0 else None
    if isinstance(obj, dict):
        return {key: finite_floats(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_floats(value) for value in obj]
    return obj


def _make_dumps() -> Tuple[Callable[[Any], str], Callable[[Any], bytes]]:
    if os.environ.get("CROSSWS_JSON", "").lower() != "ujson":
        try:
            import orjson

            _orjson_dumps = orjson.dumps
            _non_str_keys = orjson.OPT_NON_STR_KEYS

            def orjson_dumps_bytes(obj: Any) -> bytes:
                try:
                    data: bytes = _orjson_dumps(obj)
                except TypeError:
                    # JSON.stringify (and ujson) turn every key into a string; orjson must be told to.
                    data = _orjson_dumps(obj, option=_non_str_keys)
                return data

            def orjson_dumps(obj: Any) -> str:
                return orjson_dumps_bytes(obj).decode("utf-8")

            return orjson_dumps, orjson_dumps_bytes
        except ImportError:
            pass

    _ujson_dumps = ujson.dumps

    def ujson_dumps(obj: Any) -> str:
        try:
            return _ujson_dumps(obj, ensure_ascii=False, escape_forward_slashes=False, allow_nan=False)
        except OverflowError:
            # ujson would write NaN / Infinity, which JSON.parse rejects: write null instead, as
            # JSON.stringify (and orjson) do. Only a message holding such a float pays for this.
            return _ujson_dumps(finite_floats(obj), ensure_ascii=False, escape_forward_slashes=False,
                                allow_nan=False)

    def ujson_dumps_bytes(obj: Any) -> bytes:
        return ujson_dumps(obj).encode("utf-8")

    return ujson_dumps, ujson_dumps_bytes


def _make_loads() -> Callable[[Any], Any]:
    if os.environ.get("CROSSWS_JSON", "").lower() != "ujson":
        try:
            import orjson

            loads: Callable[[Any], Any] = orjson.loads
            return loads
        except ImportError:
            pass
    return ujson.loads


#: ``JSON.stringify``-compatible compact encoder (orjson when installed, else ujson), and the
#: same producing UTF-8 bytes (no str round trip when the result goes straight into a frame).
dumps, dumps_bytes = _make_dumps()
#: JSON decoder matching :data:`dumps`.
loads: Callable[[Any], Any] = _make_loads()


def encode_event(event: str, payload: Any = MISSING) -> str:
    """Return the text of a server push / client event frame without ack."""
    if payload is MISSING:
        return dumps({"event": event})
    return dumps({"event": event, "payload": payload})


def encode_request(event: str, payload: Any, callback_id: str) -> str:
    """Return the text of a client event frame that asks for an ack (``payload`` left out when :data:`MISSING`)."""
    if payload is MISSING:
        return dumps({"event": event, "callbackId": callback_id})
    return dumps({"event": event, "payload": payload, "callbackId": callback_id})


def encode_ack(callback_id: str, payload: Any = MISSING) -> str:
    """Return the text of an ack frame (``payload`` left out when :data:`MISSING`)."""
    if payload is MISSING:
        return dumps({"callbackId": callback_id})
    return dumps({"payload": payload, "callbackId": callback_id})


def encode_ack_bytes(callback_id: str, payload: Any = MISSING) -> bytes:
    """:func:`encode_ack` as UTF-8 bytes (the server's per-request hot path)."""
    if payload is MISSING:
        return dumps_bytes({"callbackId": callback_id})
    return dumps_bytes({"payload": payload, "callbackId": callback_id})


def encode_server_request(text: str, ack_id: str) -> str:
    """The server request frame: an event frame's text (:func:`encode_event`) with ``"ackId"`` added last.

    The event is encoded once (on the node that asks, possibly another one) and the node that
    holds the connection only appends its own ``ackId``.

    Raises:
        ValueError: ``text`` is not the text of an event frame (:func:`is_event_text`).
    """
    if not is_event_text(text):
        raise ValueError("not the text of an event frame")
    return text[:-1] + ',"ackId":' + dumps(ack_id) + "}"


def is_event_text(text: object) -> bool:
    """Whether ``text`` looks like :func:`encode_event`'s output (a JSON object whose first key is
    ``event``): checked on what arrives from other nodes before an ``ackId`` is appended."""
    return type(text) is str and text.startswith('{"event":') and text.endswith("}")


def encode_answer(ack_id: str, payload: Any = MISSING) -> str:
    """Return the text of a client's answer to a server request (``payload`` left out when :data:`MISSING`)."""
    if payload is MISSING:
        return dumps({"ackId": ack_id})
    return dumps({"ackId": ack_id, "payload": payload})


def valid_ack_id(ack_id: object) -> bool:
    """Whether ``ack_id`` is a string of 1..:data:`MAX_ACK_ID_LENGTH` characters."""
    return type(ack_id) is str and 0 < len(ack_id) <= MAX_ACK_ID_LENGTH


def decode_client_message(text: str) -> Tuple[Optional[str], Any, Optional[str]]:
    """Parse a client data frame: an event (the original's frames) or an answer (ours).

    Returns:
        ``(event, payload, callback_id)`` for an event frame, as :func:`decode_client_frame`;
        ``(None, payload, ack_id)`` for an answer frame (an object without ``event`` that has
        an ``ackId``). A missing payload is :data:`MISSING`.

    Raises:
        ProtocolError: not JSON, not an object, ``event`` empty / not a string, neither
            ``event`` nor ``ackId``, or an ``ackId`` that is not a string of 1..64 characters.
    """
    try:
        message = loads(text)
    except (ValueError, TypeError) as exc:
        raise ProtocolError("malformed JSON: %s" % exc) from None
    if type(message) is not dict:
        raise ProtocolError("frame is not a JSON object")
    event = message.get("event")
    if type(event) is not str or not event:
        if event is None and "event" not in message and "ackId" in message:
            ack_id = message["ackId"]
            if not valid_ack_id(ack_id):
                raise ProtocolError("answer frame without a string 'ackId' of 1..%d characters" % MAX_ACK_ID_LENGTH)
            return None, message.get("payload", MISSING), ack_id
        raise ProtocolError("frame has no non-empty string 'event'")
    callback_id = message.get("callbackId")
    if type(callback_id) is not str or not 0 < len(callback_id) <= MAX_CALLBACK_ID_LENGTH:
        callback_id = None
    return event, message.get("payload", MISSING), callback_id


def decode_client_frame(text: str) -> Tuple[str, Any, Optional[str]]:
    """Parse a client event frame into ``(event, payload, callback_id)``.

    ``callback_id`` is ``None`` unless the frame carries a string of 1..64 characters (as the
    original, any other value makes it a frame without ack). A missing payload is
    :data:`MISSING`.

    Raises:
        ProtocolError: not JSON, not an object, or ``event`` missing / empty / not a string
            (an answer frame too: see :func:`decode_client_message`).
    """
    event, payload, callback_id = decode_client_message(text)
    if event is None:
        raise ProtocolError("frame has no non-empty string 'event'")
    return event, payload, callback_id


def decode_server_message(text: str) -> Tuple[Optional[str], Any, Optional[str], Optional[str]]:
    """Parse a server frame into ``(event, payload, callback_id, ack_id)`` for the client.

    Returns ``(None, MISSING, None, None)`` for anything that is not a JSON object (the original
    client drops such frames silently). ``event`` is ``None`` unless a non-empty string;
    ``ack_id`` (a server request, see :func:`encode_server_request`) is ``None`` unless a
    string of 1..64 characters.
    """
    try:
        message = loads(text)
    except (ValueError, TypeError):
        return None, MISSING, None, None
    if type(message) is not dict:
        return None, MISSING, None, None
    event = message.get("event")
    if type(event) is not str or not event:
        event = None
    callback_id = message.get("callbackId")
    if type(callback_id) is not str or not callback_id:
        callback_id = None
    ack_id = message.get("ackId")
    if not valid_ack_id(ack_id):
        ack_id = None
    return event, message.get("payload", MISSING), callback_id, ack_id


def decode_server_frame(text: str) -> Tuple[Optional[str], Any, Optional[str]]:
    """Parse a server frame into ``(event, payload, callback_id)`` (:func:`decode_server_message`
    without the ``ackId``)."""
    event, payload, callback_id, _ = decode_server_message(text)
    return event, payload, callback_id


#: The digits of base 36, as JavaScript's ``toString(36)`` writes them.
BASE36_DIGITS = string.digits + string.ascii_lowercase


def base36(number: int) -> str:
    """``number.toString(36)`` as JavaScript writes it (ids shaped like the original's)."""
    if number == 0:
        return "0"
    digits = []
    while number:
        number, rem = divmod(number, 36)
        digits.append(BASE36_DIGITS[rem])
    return "".join(reversed(digits))


class StampedIds:
    """Ids ``<stamp(ms)><counter base36>``: a process-unique counter behind a stamp of the current
    millisecond that is computed once per millisecond (a burst of emits does not pay for it
    each time)."""

    __slots__ = ("_make_stamp", "_counter", "_ms", "_stamp")

    def __init__(self, make_stamp: Callable[[int], str]) -> None:
        self._make_stamp = make_stamp
        self._counter = itertools.count(1)
        self._ms = -1
        self._stamp = ""

    def new(self) -> str:
        """A fresh id."""
        now_ms = int(time.time() * 1000)
        if now_ms != self._ms:
            self._ms, self._stamp = now_ms, self._make_stamp(now_ms)
        return self._stamp + base36(next(self._counter))


_client_ids = StampedIds(lambda ms: "%s-%s-" % (base36(ms), "".join(random.choice(BASE36_DIGITS) for _ in range(4))))


def new_client_callback_id() -> str:
    """Return a client ``callbackId`` shaped like the original's: ``<ms36>-<rand4>-<n36>``."""
    return _client_ids.new()
