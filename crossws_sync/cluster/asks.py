"""Server-to-client requests: a server sends an event to a user wherever it is connected and gets
the client's answer (the facade's ``to_socket_id(..., callback=)``, ``to_socket_id_with_promise``,
``to_socket_id_and_wait``).

On the wire (client <-> server, :mod:`crossws_sync.wire.events`) the request is an event frame
with an ``"ackId"`` added, ``{"event":E,"payload":P,"ackId":"k3"}``, and our clients answer with
``{"ackId":"k3","payload":R}``. The original JavaScript client dispatches the request as an
ordinary event and never answers: the request ends with :data:`ACK_TIMEOUT`.

Every request sent on a connection of this node is *held* here, bound to that connection: only
an answer that arrives on the same connection settles it (any other answer, of an unknown, late
or foreign id, is ignored and counted). When the connection closes, its requests end at once with
:data:`USER_DISCONNECTED`.

Across the cluster (node channels ``ws:_crossws.node:<name>``, dispatched by the router's
handlers), when the user is on another node per the cluster directory:

* ``{"t":"ask","id":<ask id>,"user":<socket id>,"frame":<event frame text>,"timeout":<s>,
  "asker":<node>[,"fwd":1]}`` goes to the node that holds the user. That node sends the frame
  with its own ``ackId`` and holds the request; a node where the user is not (any more) forwards
  it once to the node its directory names, else answers :data:`USER_NOT_FOUND`.
* ``{"t":"ans","id":<ask id>,"ok":true,"data":<payload>}`` or ``{"t":"ans","id":<ask id>,
  "ok":false,"code":<code>}`` goes back to the asker's channel. The asker's own timer ends the
  request with :data:`ACK_TIMEOUT` (the holder drops its entry silently at the same time); a
  late answer is ignored.

Every field that arrives from Redis is checked; a bad message is counted in the router's
``bad_messages`` and logged (rate-limited), never fatal. Users the directory does not know
(not connected anywhere, connected to an original Node.js node, or connected a few tens of
milliseconds ago and not announced yet: deltas are batched for 20 ms) end at once with
:data:`USER_NOT_FOUND`; the caller may retry.

Bounds: at most ``max_pending`` requests held on this node and as many waiting for other nodes,
and ``max_pending_per_socket`` per connection; past a bound a request fails at once with
:data:`TOO_MANY_PENDING_ACKS`, nothing is sent.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import gevent
import gevent.event

from ..config import positive_number
from ..core.listeners import check_event_name
from ..core.names import check_name, valid_name
from ..errors import ConfigError
from ..results import Result
from ..server.connection import WebSocketConnection
from ..wire import frames
from ..wire.events import MISSING, base36, encode_event, encode_server_request, is_event_text, valid_ack_id
from .local import LocalNode, check_id
from .runtime import Runtime

if TYPE_CHECKING:
    from .routing import Router

logger = logging.getLogger("crossws_sync.cluster")

#: No answer within the timeout (also: the original JavaScript client, which never answers).
ACK_TIMEOUT = "ACK_TIMEOUT"
#: The user is connected nowhere: not on this node and unknown to the cluster directory.
USER_NOT_FOUND = "USER_NOT_FOUND"
#: The user's connection closed (or the user moved) before it answered.
USER_DISCONNECTED = "USER_DISCONNECTED"
#: A bound on pending requests (per node or per connection) was reached; nothing was sent.
TOO_MANY_PENDING_ACKS = "TOO_MANY_PENDING_ACKS"
#: The user is on another node and no Redis node could take the request.
REDIS_UNAVAILABLE = "REDIS_UNAVAILABLE"
#: The node has neither WebSocket nor Redis.
WEBSOCKET_DISABLED = "WEBSOCKET_DISABLED"
#: Promise forms only: an invalid argument (the callback form raises instead).
INVALID_ARGUMENT = "INVALID_ARGUMENT"

#: The ``error`` text of each code.
MESSAGES = {
    ACK_TIMEOUT: "No answer from the client in time",
    USER_NOT_FOUND: "The user is not connected to any node",
    USER_DISCONNECTED: "The user's connection closed before it answered",
    TOO_MANY_PENDING_ACKS: "Too many requests waiting for answers (max_pending_acks, max_pending_acks_per_socket)",
    REDIS_UNAVAILABLE: "No healthy Redis node available",
    WEBSOCKET_DISABLED: "WebSocket is not enabled",
}
#: Codes a holder node may send back in an ``ans`` message.
REMOTE_CODES = frozenset({USER_NOT_FOUND, USER_DISCONNECTED, TOO_MANY_PENDING_ACKS})

#: Longest timeout of one request, in seconds (a day).
MAX_ACK_TIMEOUT = 86400.0

Settle = Callable[[Result], Any]


def failure(code: str) -> Result:
    """The failed :class:`Result` of ``code``."""
    return Result(success=False, error=MESSAGES[code], error_code=code)


def check_timeout(timeout: Any) -> float:
    """``timeout`` in seconds as a float.

    Raises:
        ConfigError: not a number, not positive, or over :data:`MAX_ACK_TIMEOUT`.
    """
    value = positive_number("timeout", timeout, finite=True)
    if value > MAX_ACK_TIMEOUT:
        raise ConfigError("timeout must be at most %g seconds, got %r" % (MAX_ACK_TIMEOUT, timeout))
    return value


def _valid_timeout(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and 0 < value <= MAX_ACK_TIMEOUT


@dataclass(frozen=True)
class AskSettings:
    """Bounds of the pending requests (the adapter's ``max_pending_acks*`` options)."""

    max_pending: int = 10000
    max_pending_per_socket: int = 100


class _Held:
    """A request sent on a connection of this node, waiting for its answer there."""

    __slots__ = ("ack_id", "conn", "settle", "remote", "timer")

    def __init__(self, ack_id: str, conn: WebSocketConnection, settle: Settle, remote: bool) -> None:
        self.ack_id = ack_id
        self.conn = conn
        self.settle = settle
        #: asked by another node: its own timer reports the timeout, this one drops silently
        self.remote = remote
        self.timer: Any = None


class _Asked:
    """A request sent to another node, waiting for its ``ans`` message."""

    __slots__ = ("ask_id", "node", "settle", "timer")

    def __init__(self, ask_id: str, node: str, settle: Settle) -> None:
        self.ask_id = ask_id
        self.node = node
        self.settle = settle
        self.timer: Any = None


def _run_callback(callback: Callable[[Result], Any], result: Result) -> None:
    try:
        callback(result)
    except Exception:  # user code: log, never break the node
        logger.exception("to_socket_id callback raised")


class Asks:
    """The pending server-to-client requests of one node, and their cross-node messages.

    Args:
        local: this node's users (the connections requests are sent on).
        runtime: the bus and router of this process.
        settings: the bounds.

    Attributes:
        stats: counters: ``sent`` (frames written), ``answered``, ``timed_out``,
            ``disconnected``, ``not_found``, ``refused`` (a bound was reached),
            ``unmatched_answers`` (ignored answer frames), ``asked_remote``, ``forwarded``,
            ``late_answers`` (``ans`` messages for requests already ended).
    """

    def __init__(self, local: LocalNode, runtime: Runtime, settings: AskSettings) -> None:
        self.local = local
        self.runtime = runtime
        self.settings = settings
        self._held: Dict[str, _Held] = {}
        self._by_conn: Dict[WebSocketConnection, Dict[str, _Held]] = {}
        self._asked: Dict[str, _Asked] = {}
        self._ids = itertools.count(1)
        self._bad_logged = 0
        self.stats: Dict[str, int] = {"sent": 0, "answered": 0, "timed_out": 0, "disconnected": 0, "not_found": 0,
                                      "refused": 0, "unmatched_answers": 0, "asked_remote": 0, "forwarded": 0,
                                      "late_answers": 0}

    @property
    def pending(self) -> int:
        """Requests waiting: held on this node's connections plus sent to other nodes."""
        return len(self._held) + len(self._asked)

    # Public API ------------------------------------------------------------------------------

    def send_with_callback(self, socket_id: str, event: str, data: Any, callback: Callable[[Result], Any],
                           timeout: float) -> bool:
        """Send ``event`` to ``socket_id`` and call ``callback(result)`` once, in a greenlet of its
        own (never before this returns), with the answer or the failure.

        Returns:
            whether the request was written to a connection of this node.

        Raises:
            TypeError: ``socket_id`` or ``event`` is not a non-empty string, ``callback`` is not
                callable, or ``data`` is not JSON-serialisable.
            ConfigError: ``timeout`` is invalid, or ``socket_id`` is refused by the name policy.
        """
        if not callable(callback):
            raise TypeError("callback must be a function")
        text = self._request_text(socket_id, event, data)
        timeout = check_timeout(timeout)
        return self._ask(socket_id, text, lambda result: gevent.spawn(_run_callback, callback, result), timeout)

    def send_with_promise(self, socket_id: str, event: str, data: Any, timeout: float) -> gevent.event.AsyncResult:
        """Like :meth:`send_with_callback`, returning an ``AsyncResult`` that always resolves to a
        :class:`Result` (invalid arguments: ``INVALID_ARGUMENT``, never an exception)."""
        promise = gevent.event.AsyncResult()
        try:
            text = self._request_text(socket_id, event, data)
            timeout = check_timeout(timeout)
        except (ConfigError, TypeError, ValueError) as exc:
            promise.set(Result(success=False, error=str(exc), error_code=INVALID_ARGUMENT))
            return promise
        self._ask(socket_id, text, promise.set, timeout)
        return promise

    def answer(self, conn: WebSocketConnection, ack_id: str, payload: Any) -> bool:
        """An answer frame arrived on ``conn`` (the service's hook). Settles the request of that id
        if it was sent on this very connection; anything else is ignored and counted.

        Returns:
            whether it settled a request.
        """
        held = self._held.get(ack_id)
        if held is None or held.conn is not conn:
            self.stats["unmatched_answers"] += 1
            return False
        self._forget(held)
        self.stats["answered"] += 1
        held.settle(Result(success=True, data=None if payload is MISSING else payload))
        return True

    def connection_closed(self, conn: WebSocketConnection) -> None:
        """``conn`` closed: its requests end now with :data:`USER_DISCONNECTED`."""
        entries = self._by_conn.pop(conn, None)
        if not entries:
            return
        for held in list(entries.values()):
            self._held.pop(held.ack_id, None)
            self._stop(held.timer)
            self.stats["disconnected"] += 1
            held.settle(failure(USER_DISCONNECTED))

    def attach(self, router: "Router") -> None:
        """Handle the ``ask`` / ``ans`` messages of ``router`` (each router this node builds)."""
        router.add_handlers({"ask": self._on_ask, "ans": self._on_answer})

    # Internals ------------------------------------------------------------------------------

    def _request_text(self, socket_id: str, event: str, data: Any) -> str:
        check_id("socketId", socket_id)
        check_event_name(event)
        check_name("socketId", socket_id, self.local.settings.max_name_bytes)
        return encode_event(event, data)

    def _new_id(self) -> str:
        return base36(next(self._ids))

    def _ask(self, socket_id: str, text: str, settle: Settle, timeout: float) -> bool:
        if self.local.service is None and not self.runtime.redis_enabled:
            settle(failure(WEBSOCKET_DISABLED))
            return False
        conn = self.local.sockets.get(socket_id)
        if conn is not None and conn.open:
            return self._send_held(conn, text, settle, timeout, remote=False)
        router = self.runtime.started_router() if self.runtime.redis_enabled else None
        owner = self._owner(router, socket_id) if router is not None else None
        if router is None or owner is None:
            self.stats["not_found"] += 1
            settle(failure(USER_NOT_FOUND))
            return False
        if len(self._asked) >= self.settings.max_pending:
            self.stats["refused"] += 1
            settle(failure(TOO_MANY_PENDING_ACKS))
            return False
        asked = _Asked(self._new_id(), owner, settle)
        self._asked[asked.ask_id] = asked
        asked.timer = gevent.get_hub().loop.timer(timeout)
        asked.timer.start(self._asked_expired, asked.ask_id)
        self.stats["asked_remote"] += 1
        message = {"t": "ask", "id": asked.ask_id, "user": socket_id, "frame": text, "timeout": timeout,
                   "asker": router.name}
        if not router.send_to_node(owner, message) and self._asked.pop(asked.ask_id, None) is asked:
            self._stop(asked.timer)
            settle(failure(REDIS_UNAVAILABLE))
        return False

    @staticmethod
    def _owner(router: "Router", socket_id: str) -> Optional[str]:
        owners = router.membership.directory.user_nodes(socket_id)
        owners.discard(router.name)
        return sorted(owners)[0] if owners else None

    def _send_held(self, conn: WebSocketConnection, text: str, settle: Settle, timeout: float, *, remote: bool) -> bool:
        per_conn = self._by_conn.get(conn)
        if len(self._held) >= self.settings.max_pending or (
                per_conn is not None and len(per_conn) >= self.settings.max_pending_per_socket):
            self.stats["refused"] += 1
            settle(failure(TOO_MANY_PENDING_ACKS))
            return False
        held = _Held(self._new_id(), conn, settle, remote)
        if not conn.send_frame(frames.encode_text(encode_server_request(text, held.ack_id))):
            self.stats["disconnected"] += 1
            settle(failure(USER_DISCONNECTED))  # closing: its close event may already be over
            return False
        self.stats["sent"] += 1
        self._held[held.ack_id] = held
        if per_conn is None:
            per_conn = self._by_conn[conn] = {}
        per_conn[held.ack_id] = held
        held.timer = gevent.get_hub().loop.timer(timeout)
        held.timer.start(self._held_expired, held.ack_id)
        return True

    def _forget(self, held: _Held) -> None:
        self._held.pop(held.ack_id, None)
        self._stop(held.timer)
        per_conn = self._by_conn.get(held.conn)
        if per_conn is not None:
            per_conn.pop(held.ack_id, None)
            if not per_conn:
                del self._by_conn[held.conn]

    @staticmethod
    def _stop(timer: Any) -> None:
        if timer is not None:
            timer.close()

    def _held_expired(self, ack_id: str) -> None:
        # Runs in the hub (a loop timer): settle only resolves a promise or spawns a callback, and a
        # request of another node ends silently (the asker's own timer reports the timeout).
        held = self._held.get(ack_id)
        if held is None:
            return
        self._forget(held)
        if not held.remote:
            self.stats["timed_out"] += 1
            held.settle(failure(ACK_TIMEOUT))

    def _asked_expired(self, ask_id: str) -> None:
        asked = self._asked.pop(ask_id, None)
        if asked is not None:
            self._stop(asked.timer)
            self.stats["timed_out"] += 1
            asked.settle(failure(ACK_TIMEOUT))

    # Bus handlers -----------------------------------------------------------------------------

    def _bad(self, router: "Router", message: Dict[str, Any], why: str) -> None:
        router.stats["bad_messages"] += 1
        self._bad_logged += 1
        count = self._bad_logged
        if count in (1, 10, 100, 1000, 10000) or count % 100000 == 0:
            logger.warning("bad %r message from %r (%s; %d so far)", str(message.get("t"))[:16],
                           str(message.get("node"))[:64], why, count)

    def _on_ask(self, message: Dict[str, Any]) -> None:
        router = self.runtime.router
        if router is None:
            return
        ask_id: Any = message.get("id")
        user: Any = message.get("user")
        text: Any = message.get("frame")
        asker: Any = message.get("asker")
        timeout: Any = message.get("timeout")
        max_bytes = self.local.settings.max_name_bytes
        if not valid_ack_id(ask_id) or not valid_name(user, max_bytes) or not valid_name(asker, 1024):
            self._bad(router, message, "id, user or asker")
            return
        if not is_event_text(text) or not _valid_timeout(timeout):
            self._bad(router, message, "frame or timeout")
            return

        def reply(result: Result) -> None:
            answer: Dict[str, Any] = {"t": "ans", "id": ask_id}
            if result.get("success"):
                answer.update(ok=True, data=result.get("data"))
            else:
                answer.update(ok=False, code=result.get("error_code"))
            router.send_to_node(asker, answer)

        conn = self.local.sockets.get(user)
        if conn is not None and conn.open:
            self._send_held(conn, text, reply, float(timeout), remote=True)
            return
        owner = self._owner(router, user) if message.get("fwd") is None else None
        if owner is not None:  # the user moved since the asker looked it up: forward once
            self.stats["forwarded"] += 1
            router.send_to_node(owner, {"t": "ask", "id": ask_id, "user": user, "frame": text, "timeout": timeout,
                                        "asker": asker, "fwd": 1})
            return
        self.stats["not_found"] += 1
        reply(failure(USER_NOT_FOUND))

    def _on_answer(self, message: Dict[str, Any]) -> None:
        router = self.runtime.router
        if router is None:
            return
        ask_id: Any = message.get("id")
        ok: Any = message.get("ok")
        if not valid_ack_id(ask_id) or type(ok) is not bool:
            self._bad(router, message, "id or ok")
            return
        code: Any = message.get("code")
        if not ok and code not in REMOTE_CODES:
            self._bad(router, message, "code")
            return
        asked = self._asked.pop(ask_id, None)
        if asked is None:
            self.stats["late_answers"] += 1
            return
        self._stop(asked.timer)
        if ok:
            self.stats["answered"] += 1
            asked.settle(Result(success=True, data=message.get("data")))
        else:
            self.stats["disconnected" if code == USER_DISCONNECTED else "not_found" if code == USER_NOT_FOUND
                       else "refused"] += 1
            asked.settle(failure(code))


__all__ = ["ACK_TIMEOUT", "Asks", "AskSettings", "INVALID_ARGUMENT", "MAX_ACK_TIMEOUT", "REDIS_UNAVAILABLE",
           "TOO_MANY_PENDING_ACKS", "USER_DISCONNECTED", "USER_NOT_FOUND", "WEBSOCKET_DISABLED", "check_timeout",
           "failure"]
