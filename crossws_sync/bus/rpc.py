"""Cross-server RPC on the bridge channel: events that ask for replies, and the replies.

The bus (:mod:`crossws_sync.bus`) owns the transport: the codec, the Redis nodes, the echo
filter and the routing of what arrives by channel (:mod:`.receiver`). This module owns the
protocol of ``<bridge_prefix>server_bridge`` on top of it:

* emitting: the request envelope, its callback id, the pending call that collects
  ``expected_responses`` replies until its timeout (:mod:`.calls`), the synchronous
  local delivery when this server is a target, and failing the call at once when no Redis
  node takes the request;
* receiving: a request addressed to this server goes to its cross-server event listeners with
  a ``callback`` that publishes one reply per call (to the requester's own node channel when
  it is one of ours, else on the bridge channel, as the original); a reply goes to its pending
  call.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from gevent.event import AsyncResult

from ..config import positive_int_or_default, positive_number_or_default
from ..wire import envelope as env
from .calls import PendingCall, PendingCalls, ResultCallback
from ..io.dispatch import Dispatcher
from ..wire.codec import EnvelopeCodec
from ..errors import ConfigError, EnvelopeError, RedisUnavailableError
from ..core.listeners import ListenerRegistry, check_event_name
from .nodes import UNAVAILABLE_MESSAGE, RedisNodeSet
from ..results import Result
from ..wire.events import MISSING

logger = logging.getLogger("crossws_sync.bus")

UNAVAILABLE_CODE = "REDIS_UNAVAILABLE"
DEFAULT_TIMEOUT = 5.0

#: ``listener(data, callback)``: ``data`` is the request envelope, ``callback`` replies (or None).
Listener = Callable[[Dict[str, Any], Optional[Callable[..., bool]]], Any]
#: ``publish(channel, envelope, wait=False)``: the bus's encode-once, pipelined publish.
Publish = Callable[..., None]


def normalize_targets(target_server: Any) -> List[str]:
    """``target_server`` as a list of names (a name, a list of names, or nothing = every server)."""
    if isinstance(target_server, str):
        return [target_server] if target_server else []
    if isinstance(target_server, (list, tuple)):
        return [t for t in target_server if isinstance(t, str) and t]
    return []


class BridgeRpc:
    """Requests, replies and pending calls of one bus (see the module docstring)."""

    def __init__(self, *, server_name: str, bridge_prefix: str, codec: EnvelopeCodec, nodes: RedisNodeSet,
                 publish: Publish, expect_echo: Callable[[bytes], None], dispatcher: Dispatcher,
                 stats: Dict[str, int]) -> None:
        self._server_name = server_name
        self._bridge_prefix = bridge_prefix
        self.bridge_channel = env.bridge_channel(bridge_prefix)
        self.node_channel = env.node_channel(bridge_prefix, server_name)
        self._codec = codec
        self._nodes = nodes
        self._publish = publish
        self._expect_echo = expect_echo
        self._dispatcher = dispatcher
        self.stats = stats
        self.listeners = ListenerRegistry(logger)
        self.calls = PendingCalls(self._call_user, stats)
        self._ids = env.CallbackIdFactory(server_name)

    # Emitting ------------------------------------------------------------------------------

    def emit(self, event: str, message: Any, callback: Optional[ResultCallback], promise: Optional[AsyncResult],
             target_server: Any, timeout: Any, expected_responses: Any, except_self: bool) -> Optional[str]:
        """Send one request (the bus's ``emit_cross_server*`` methods document the arguments).

        Returns:
            The callback id when ``callback`` is given.

        Raises:
            TypeError: invalid event name, or ``callback`` is not callable.
            ConfigError: ``message`` is ``None``.
            EnvelopeError: ``message`` cannot be encoded.
        """
        if callback is not None and not callable(callback):
            raise TypeError("callback must be a function")
        check_event_name(event)
        if message is None:
            raise ConfigError("emitCrossServer: message cannot be null or undefined")
        targets = normalize_targets(target_server)
        timeout = positive_number_or_default(timeout, DEFAULT_TIMEOUT)
        expected = len(targets) if targets else positive_int_or_default(expected_responses, 1)
        me = self._server_name
        to_self = (not targets and not except_self) or me in targets
        only_self = bool(targets) and all(target == me for target in targets)
        wants_reply = callback is not None or promise is not None
        callback_id = self._ids.new() if wants_reply else None
        request = env.bridge_request(event, me, message, targets, callback_id,
                                     reply_to=self.node_channel if wants_reply and not only_self else None,
                                     promise_order=promise is not None)
        raw = None if only_self else self._codec.encode(request, self.bridge_channel)
        if raw is not None:
            self._expect_echo(raw)
        pending = self.calls.add(callback_id, callback, promise, expected, targets, timeout) \
            if callback_id is not None else None
        if to_self:
            self._deliver_request(request["data"], inline=True)
        if raw is not None:
            try:
                # Pipelined with every other publish; if the write fails on every node, the
                # call fails at once (on_lost) instead of waiting for its timeout.
                self._nodes.publish_nowait(self.bridge_channel, raw,
                                           (lambda error: self._unavailable(pending)) if pending is not None else None)
            except RedisUnavailableError as exc:
                logger.warning("emit %r from %s failed: %s", event, me, exc)
                self._unavailable(pending, inline=True)
        return callback_id if callback is not None else None

    def emit_promise(self, event: str, message: Any, target_server: Any, timeout: Any, expected_responses: Any,
                     except_self: bool) -> AsyncResult:
        """:meth:`emit` with a promise, returned; invalid arguments resolve it to
        ``Result(success=False, message=<why>)`` instead of raising."""
        promise = AsyncResult()
        try:
            self.emit(event, message, None, promise, target_server, timeout, expected_responses, except_self)
        except (TypeError, ConfigError, EnvelopeError) as exc:
            promise.set(Result(success=False, message=str(exc)))
        return promise

    def _unavailable(self, pending: Optional[PendingCall], inline: bool = False) -> None:
        self.calls.fail(pending, UNAVAILABLE_MESSAGE, inline=inline, error_code=UNAVAILABLE_CODE)

    # Receiving -----------------------------------------------------------------------------

    def on_bridge_message(self, channel: str, message: Any) -> None:
        """A decoded message from the bridge channel or this server's node channel."""
        try:
            kind, data = env.parse_bridge(message)
        except EnvelopeError as exc:
            self.stats["dropped"] += 1
            logger.warning("bad bridge message on %s dropped: %s", channel, exc)
            return
        if kind == "reply":
            self.calls.reply(data, inline=False)
            return
        targets = data["targetServer"]
        if targets and self._server_name not in targets:
            return
        self.stats["requests"] += 1
        self._deliver_request(data, inline=False)

    def _deliver_request(self, data: Dict[str, Any], *, inline: bool) -> None:
        callback_id = data.get("callbackId")
        reply = self._make_reply(data) if isinstance(callback_id, str) and callback_id else None
        if inline:
            self.listeners.emit(data["event"], data, reply)
        else:
            self._dispatcher.submit(self.listeners.emit, data["event"], data, reply)

    def _make_reply(self, data: Dict[str, Any]) -> Callable[..., bool]:
        callback_id = data["callbackId"]
        origin = data.get("senderServer")
        reply_to = data.get("replyTo")
        if not (isinstance(origin, str) and reply_to == env.node_channel(self._bridge_prefix, origin)):
            reply_to = None  # an original node (or anything odd): reply on the bridge, as the original

        def callback(payload: Any = MISSING) -> bool:
            """Send one reply to the requesting server; return whether it was sent."""
            envelope = env.bridge_reply(self._server_name, callback_id, payload)
            if origin == self._server_name:
                self.calls.reply(envelope["data"], inline=True)
                return True
            channel = reply_to or self.bridge_channel
            try:
                self._publish(channel, envelope, wait=False)  # pipelined with other replies
            except (RedisUnavailableError, EnvelopeError) as exc:
                logger.warning("reply to %s (%s) failed: %s", origin, callback_id, exc)
                return False
            return True

        return callback

    # User code -----------------------------------------------------------------------------

    def _call_user(self, function: Callable[..., Any], args: Tuple[Any, ...], inline: bool) -> None:
        if inline:
            guarded(function, *args)
        else:
            self._dispatcher.submit(guarded, function, *args)


def guarded(function: Callable[..., Any], *args: Any) -> None:
    """Call user code; an exception it raises is logged with its traceback, never propagated."""
    try:
        function(*args)
    except Exception:  # user code
        logger.exception("cross-server callback %r raised", function)
