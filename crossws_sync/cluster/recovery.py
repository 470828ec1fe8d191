"""Connection state recovery: positioned publishing, exact delivery, sessions and replay.

With ``connection_state_recovery`` on (every node of the cluster), messages to everyone, to
rooms and to users are appended to history streams and published in one step
(:class:`~crossws_sync.bus.history.HistoryStore`); each carries its position. This module:

* publishes them (the sender's own clients get them back through its subscription, with their
  position, like everyone else's);
* delivers positioned messages to local connections exactly once and in order: a duplicate is
  dropped, a gap is filled from history first (or the connection is closed with 3010
  "insufficient state" when history no longer has it, so the client recovers what it can);
* keeps a *session* per mapped connection in Redis (user id, streams and where it joined them),
  extended while the connection lives and for ``max_disconnection`` seconds after;
* recovers a reconnecting client on any node: it sends ``_crossws.recover`` with its session id
  and the positions it received; the node checks that history still holds everything after
  them, maps the user, joins its rooms, sends ``_crossws.session`` (``recovered: true`` and a new
  session id), replays what was missed in order, then goes live. Anything that makes a full
  replay impossible gives ``recovered: false`` and nothing is restored.

The protocol and the guarantee are described in docs/reliability.md ("Connection state recovery").
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

import gevent

from ..bus.history import Entry, HistoryStore, new_message_id, new_session_id
from ..config import RecoveryOptions
from ..wire.recovery import (DUPLICATE, GAP, INSUFFICIENT_STATE_CODE, SESSION_EVENT, StreamTracker, check_entries,
                             check_stream, parse_request, plan_recovery, session_fields)
from ..errors import CrossWSError, EnvelopeError, LimitExceededError
from ..io.supervisor import supervise
from ..wire import frames
from ..wire.codec import EnvelopeCodec
from ..wire.envelope import data_of
from ..wire.positions import (BROADCAST_STREAM, POSITION_FIELD, Position, parse_position, room_stream,
                              stream_room, user_stream, with_position)

if TYPE_CHECKING:
    from ..server.connection import WebSocketConnection
    from .contracts import RecoveryHost

logger = logging.getLogger("crossws_sync.recovery")

#: Most streams a recovery request may name.
MAX_REQUEST_STREAMS = 4096
#: Seconds after a recovery when the user's stream is read once more (messages routed to the
#: node the user was on before the cluster learnt where it is now).
CATCH_UP_DELAY = 2.0
#: Seconds the history store is not tried again after it failed.
RETRY_PAUSE = 0.5
#: Seconds between attempts to start the session of a connection mapped while the history node
#: was unreachable (tried again as long as the connection lives).
SESSION_RETRY = 2.0

#: ``send(channel, envelope, on_lost)``: how a held message is tried again.
Send = Callable[[str, Dict[str, Any], Callable[[BaseException], None]], None]
#: ``hold(channel, envelope, send)``: keep a message that could not be appended now.
Hold = Callable[[str, Dict[str, Any], Send], None]


def tracker_of(conn: "WebSocketConnection") -> StreamTracker:
    """The connection's :class:`StreamTracker`, created on first use."""
    tracker: Optional[StreamTracker] = conn.streams
    if tracker is None:
        tracker = conn.streams = StreamTracker()
    return tracker


class Recovery:
    """Connection state recovery for one node (see the module docstring).

    Args:
        options: the checked ``connection_state_recovery`` options.
        store: the history node's streams and sessions.
        codec: the bus's codec (history entries are bus messages).
        local: this node's users and rooms.
        hold: keeps a message whose append failed, to try again later (the router's outage buffer).
        backlog: how many messages ``hold`` keeps now (a new message waits behind them: order).
    """

    def __init__(self, options: RecoveryOptions, *, store: HistoryStore, codec: EnvelopeCodec,
                 local: "RecoveryHost", hold: Hold, backlog: Callable[[], int] = lambda: 0) -> None:
        self.options = options
        self.store = store
        self.codec = codec
        self.local = local
        self._hold = hold
        self._backlog = backlog
        self._failed_at = 0.0
        self._closed = False
        self.stats = {"published": 0, "sessions": 0, "recovered": 0, "not_recovered": 0, "replayed": 0,
                      "gaps_filled": 0, "duplicates": 0, "insufficient_state": 0}
        self._refresher = gevent.spawn(supervise, self._refresh_loop, "session refresh", logger,
                                       stopped=lambda: self._closed)

    # Publishing ------------------------------------------------------------------------------

    def publish(self, channel: str, envelope: Dict[str, Any]) -> None:
        """Append ``envelope`` to its stream and publish it on ``channel`` (kept for later if
        the history node cannot take it now)."""
        # With history_replicas, every attempt of one message carries the same id, and the
        # second and later ones are marked: one whose first attempt reached the stream (its
        # reply lost with the connection) is found there instead of appended twice.
        message_id = new_message_id() if self.store.replicas else ""
        if self._backlog():
            # behind the messages held during an outage, so a stream keeps the senders' order
            self._hold(channel, envelope, self._held_sender(message_id))
            return
        try:
            self._send(channel, envelope, self._on_lost(channel, envelope, message_id), message_id, False)
        except CrossWSError:
            self._hold(channel, envelope, self._held_sender(message_id))

    def _on_lost(self, channel: str, envelope: Dict[str, Any], message_id: str) -> Callable[[BaseException], None]:
        def lost(error: BaseException) -> None:
            self._failed_at = time.monotonic()
            self._hold(channel, envelope, self._held_sender(message_id))
        return lost

    def _held_sender(self, message_id: str) -> Send:
        def send(channel: str, envelope: Dict[str, Any], on_lost: Callable[[BaseException], None]) -> None:
            def lost(error: BaseException) -> None:
                self._failed_at = time.monotonic()
                on_lost(error)
            # Held messages may have been tried before: look for them first (only with an id).
            self._send(channel, envelope, lost, message_id, True)
        return send

    def _send(self, channel: str, envelope: Dict[str, Any], on_lost: Callable[[BaseException], None],
              message_id: str, again: bool) -> None:
        if time.monotonic() - self._failed_at < RETRY_PAUSE:
            raise CrossWSError("the history node failed less than %.1f s ago" % RETRY_PAUSE)
        raw, index = self.codec.encode_positioned(envelope, channel)
        self.stats["published"] += 1
        self.store.append(envelope_stream(envelope), channel, raw, index, on_lost, message_id, again)

    # Delivering ------------------------------------------------------------------------------

    def deliver_all(self, envelope: Dict[str, Any]) -> None:
        """A positioned message to everyone: to every local connection."""
        position = parse_position(envelope.get(POSITION_FIELD))
        frame = self._frame(envelope, BROADCAST_STREAM, position)
        service = self.local.service
        if service is None or frame is None or position is None:
            return
        cache: Dict[Any, List[Entry]] = {}
        deliver = self._deliver
        offset, epoch = position
        for conn in list(service.clients):
            # The common case inline (next offset, same epoch, nothing held): one dict lookup.
            tracker = conn.streams
            if tracker is not None and tracker.held is None:
                last = tracker.positions.get(BROADCAST_STREAM)
                if last is not None and last[0] + 1 == offset and last[1] == epoch:
                    tracker.positions[BROADCAST_STREAM] = position
                    conn.send_frame(frame)
                    continue
            deliver(conn, BROADCAST_STREAM, position, frame, cache, send=True)

    def deliver_room(self, room_namespace: str, room_id: str, envelope: Dict[str, Any]) -> None:
        """A positioned room message: to the room's local members (excluded ones only advance)."""
        stream = room_stream(room_namespace, room_id)
        position = parse_position(envelope.get(POSITION_FIELD))
        frame = self._frame(envelope, stream, position)
        if frame is None or position is None:
            return
        excluded = envelope.get("excludeSocketIds") or ()
        excluded = set(x for x in excluded if type(x) is str) if type(excluded) is list else set()
        sockets = self.local.sockets
        cache: Dict[Any, List[Entry]] = {}
        deliver = self._deliver
        offset, epoch = position
        for socket_id in list(self.local.rooms.members(room_namespace, room_id)):
            conn = sockets.get(socket_id)
            if conn is None or not conn.open:
                continue
            # The common case inline (next offset, same epoch, nothing held): one dict lookup.
            tracker = conn.streams
            if tracker is not None and tracker.held is None:
                last = tracker.positions.get(stream)
                if last is not None and last[0] + 1 == offset and last[1] == epoch:
                    tracker.positions[stream] = position
                    if socket_id not in excluded:
                        conn.send_frame(frame)
                    continue
            deliver(conn, stream, position, frame, cache, send=socket_id not in excluded)
        if envelope.get("roomDestroy") is True:
            self.local.remove_room(room_namespace, room_id)

    def deliver_user(self, socket_id: str, envelope: Dict[str, Any]) -> bool:
        """A positioned direct message: to the user's local connection. False when not here."""
        conn = self.local.sockets.get(socket_id)
        if conn is None or not conn.open:
            return False
        stream = user_stream(socket_id)
        position = parse_position(envelope.get(POSITION_FIELD))
        frame = self._frame(envelope, stream, position)
        if frame is not None and position is not None:
            self._deliver(conn, stream, position, frame, {}, send=True)
        return True

    def _frame(self, envelope: Dict[str, Any], stream: str, position: Optional[Position]) -> Optional[bytes]:
        text = data_of(envelope)
        if not isinstance(text, str):
            return None
        if position is None:
            return frames.encode_text(text)
        try:
            return frames.encode_text(with_position(text, stream, position[0], position[1]))
        except ValueError:
            return frames.encode_text(text)

    def _deliver(self, conn: "WebSocketConnection", stream: str, position: Position, frame: Optional[bytes],
                 cache: Dict[Any, List[Entry]], *, send: bool) -> None:
        tracker = tracker_of(conn)
        if tracker.held is not None:
            tracker.held.append((stream, position[0], position[1], frame if send and frame else b""))
            return
        self._deliver_now(conn, tracker, stream, position, frame if send else None, cache)

    def _fill(self, conn: "WebSocketConnection", tracker: StreamTracker, stream: str, after: int,
              position: Position, cache: Dict[Any, List[Entry]]) -> bool:
        """Deliver the offsets after ``after`` and before ``position`` from history."""
        offset, epoch = position
        key = (stream, after, offset)
        entries = cache.get(key)
        if entries is None:
            try:
                entries = self.store.read(stream, after, offset - after - 1)
            except CrossWSError as exc:
                logger.warning("could not fill a gap in %r from history: %s", stream, exc)
                return False
            cache[key] = entries
        if check_entries(after, [entry[0] for entry in entries]) or len(entries) != offset - after - 1:
            return False
        self.stats["gaps_filled"] += 1
        for entry in entries:
            self._send_entry(conn, tracker, stream, entry, epoch)
        return True

    def _send_entry(self, conn: "WebSocketConnection", tracker: StreamTracker, stream: str, entry: Entry,
                    epoch: str) -> None:
        offset, _, channel, body = entry
        tracker.advance(stream, offset, epoch)
        try:
            envelope = self.codec.decode(body, channel, check_replay=False)
        except EnvelopeError as exc:
            logger.warning("undecodable history entry %d of %r skipped: %s", offset, stream, exc)
            return
        if type(envelope) is not dict:
            return
        excluded = envelope.get("excludeSocketIds")
        if type(excluded) is list and conn.socket_id in excluded:
            return
        frame = self._frame(envelope, stream, (offset, epoch))
        if frame is not None:
            conn.send_frame(frame)
        room = stream_room(stream)
        if room is not None and envelope.get("roomDestroy") is True and conn.socket_id is not None:
            self.local.leave_room(room[0], room[1], conn.socket_id)

    # Sessions --------------------------------------------------------------------------------

    def user_mapped(self, conn: "WebSocketConnection", socket_id: str) -> None:
        """``set_user_socket``: start a session for the connection (unless it is being recovered)."""
        if conn.recovering or not conn.open:
            return
        tracker = tracker_of(conn)
        if conn.session_id is not None and tracker.user_id == socket_id:
            return  # mapped again to the same user (e.g. after a recovery): same session
        streams = [BROADCAST_STREAM, user_stream(socket_id)]
        streams += [room_stream(ns, room) for ns, rooms in self.local.rooms.joined_rooms(socket_id).items()
                    for room in rooms]
        try:
            tops = self.store.tops(streams)
        except CrossWSError as exc:
            logger.warning("no recovery session for %r yet: the history node is unavailable (%s); trying again "
                           "in %.0f s", conn, exc, SESSION_RETRY)
            gevent.spawn_later(SESSION_RETRY, self._retry_session, conn, socket_id)
            return
        for stream, top in tops.items():
            tracker.baseline[stream] = top
        self._start_session(conn, socket_id, tracker, recovered=False)

    def _retry_session(self, conn: "WebSocketConnection", socket_id: str) -> None:
        if not self._closed and conn.open and conn.session_id is None and conn.socket_id == socket_id:
            self.user_mapped(conn, socket_id)

    def _start_session(self, conn: "WebSocketConnection", socket_id: str, tracker: StreamTracker, *,
                       recovered: bool) -> None:
        session_id = new_session_id()
        conn.session_id = session_id
        tracker.user_id = socket_id
        positions = dict(tracker.baseline)
        positions.update(tracker.positions)
        self.store.save_session(session_id, session_fields(socket_id, positions), self.options.session_ttl)
        self.stats["sessions"] += 1
        conn.send_event(SESSION_EVENT, {"sid": session_id, "recovered": recovered})

    def room_joined(self, socket_id: str, room_namespace: str, room_id: str) -> None:
        """``join_room`` (after the namespace is subscribed): record where the member starts."""
        conn = self.local.sockets.get(socket_id)
        if conn is None or conn.session_id is None or conn.recovering or not conn.open:
            return
        stream = room_stream(room_namespace, room_id)
        tracker = tracker_of(conn)
        if stream in tracker.positions or stream in tracker.baseline:
            return
        try:
            top = self.store.top(stream)
        except CrossWSError as exc:
            logger.warning("room %r of %r not in its recovery session: %s", room_id, conn, exc)
            return
        tracker.baseline[stream] = top
        self.store.save_session(conn.session_id, {stream: "%016d:%s" % top}, self.options.session_ttl)

    def rooms_left(self, socket_ids: Iterable[str], room_namespace: str, room_id: str) -> None:
        """``leave_room`` / ``remove_room``: the members' sessions forget the room."""
        stream = room_stream(room_namespace, room_id)
        for socket_id in socket_ids:
            conn = self.local.sockets.get(socket_id)
            if conn is None or conn.session_id is None or not conn.open:
                continue
            tracker = tracker_of(conn)
            tracker.forget(stream)
            self.store.forget_session_fields(conn.session_id, [stream])

    def closed(self, conn: "WebSocketConnection") -> None:
        """A connection closed: its session lives ``max_disconnection`` seconds more."""
        if conn.session_id is not None and not self._closed:
            self.store.touch_sessions([conn.session_id], self.options.max_disconnection)

    def _refresh_loop(self) -> None:
        while not self._closed:
            gevent.sleep(self.options.refresh_interval)
            service = self.local.service
            if service is None:
                continue
            live = [conn.session_id for conn in list(service.clients) if conn.open and conn.session_id]
            if live:
                self.store.touch_sessions(live, self.options.session_ttl)

    # Recovering ------------------------------------------------------------------------------

    def recover(self, conn: "WebSocketConnection", payload: Any) -> None:
        """Recover ``conn`` from the client's request (``None``: it sent none in time).

        Runs before the application's ``connection`` handler; sets ``conn.recovered``.
        """
        request = parse_request(payload, max_streams=MAX_REQUEST_STREAMS) if payload is not None else None
        if request is None:
            self._not_recovered(conn, "no valid recovery request")
            return
        session_id, client_positions = request
        try:
            plan, reason = plan_recovery(self.store.take_session(session_id), client_positions)
            if plan is None:
                self._not_recovered(conn, reason)
                return
            replay, reason = self._read_missed(plan.starts)
        except CrossWSError as exc:
            self._not_recovered(conn, "history unavailable: %s" % exc)
            return
        if replay is None:
            self._not_recovered(conn, reason)
            return
        self._restore(conn, plan.user_id, plan.starts, replay)

    def _read_missed(self, starts: Dict[str, Position]) -> Tuple[Optional[Dict[str, List[Entry]]], str]:
        tops = self.store.tops(starts)
        budget = self.options.max_replay
        replay: Dict[str, List[Entry]] = {}
        for stream, start in starts.items():
            top = tops[stream]
            reason = check_stream(start, top)
            if reason:
                return None, reason
            missed = top[0] - start[0]
            if missed > budget:
                return None, "more than max_replay (%d) messages missed" % self.options.max_replay
            budget -= missed
            entries = self.store.read(stream, start[0], missed) if missed else []
            if len(entries) != missed or check_entries(start[0], [entry[0] for entry in entries]):
                return None, "history trimmed or expired past the client's position"
            replay[stream] = entries
        return replay, ""

    def _restore(self, conn: "WebSocketConnection", user_id: str, starts: Dict[str, Position],
                 replay: Dict[str, List[Entry]]) -> None:
        tracker = tracker_of(conn)
        tracker.held = []
        for stream, position in starts.items():
            tracker.advance(stream, *position)
        conn.recovering = True
        try:
            if not self.local.set_user_socket(user_id, conn):
                tracker.held = None
                self._not_recovered(conn, "the application refused the user (duplicate login)")
                return
            for stream in starts:
                room = stream_room(stream)
                if room is not None:
                    try:
                        self.local.join_room(room[0], room[1], user_id)
                    except (LimitExceededError, CrossWSError, TypeError, ValueError) as exc:
                        logger.warning("recovered %r could not rejoin room %r: %s", conn, room[1], exc)
            # What was appended after the first read and before the subscriptions took effect.
            for stream, entries in replay.items():
                last = entries[-1][0] if entries else starts[stream][0]
                try:
                    entries.extend(self.store.read_confirmed(stream, last, self.options.max_replay))
                except CrossWSError:
                    pass
        finally:
            conn.recovering = False
        conn.recovered = True
        self.stats["recovered"] += 1
        self._start_session(conn, user_id, tracker, recovered=True)
        ordered = sorted(((entry[1], stream, entry) for stream, entries in replay.items() for entry in entries),
                         key=lambda item: (item[0], item[1], item[2][0]))
        for _, stream, entry in ordered:
            epoch = tracker.positions[stream][1]
            verdict, _ = tracker.check(stream, entry[0], epoch)
            if verdict != DUPLICATE:
                self.stats["replayed"] += 1
                self._send_entry(conn, tracker, stream, entry, epoch)
        self._release(conn, tracker)
        self._save_positions(conn, user_id, tracker)
        gevent.spawn_later(CATCH_UP_DELAY, self._catch_up, conn, user_stream(user_id))

    def _release(self, conn: "WebSocketConnection", tracker: StreamTracker) -> None:
        """Deliver what arrived live during the replay (filling may yield: newer ones wait)."""
        while tracker.held:
            held, tracker.held = tracker.held, []
            cache: Dict[Any, List[Entry]] = {}
            for stream, offset, epoch, frame in held:
                self._deliver_now(conn, tracker, stream, (offset, epoch), frame, cache)
        tracker.held = None

    def _deliver_now(self, conn: "WebSocketConnection", tracker: StreamTracker, stream: str, position: Position,
                     frame: Optional[bytes], cache: Dict[Any, List[Entry]]) -> None:
        """Deliver ``frame`` (``None``/empty: only advance) unless a duplicate; fill a gap first,
        or close with 3010 when history no longer holds it."""
        verdict, after = tracker.check(stream, position[0], position[1])
        if verdict == DUPLICATE:
            self.stats["duplicates"] += 1
            return
        if verdict == GAP and not self._fill(conn, tracker, stream, after, position, cache):
            self.stats["insufficient_state"] += 1
            logger.info("%r missed messages of a stream that history no longer holds: closing it with %d so it recovers",
                        conn, INSUFFICIENT_STATE_CODE)
            conn.close(INSUFFICIENT_STATE_CODE, "insufficient state")
            return
        tracker.advance(stream, position[0], position[1])
        if frame:
            conn.send_frame(frame)

    def _save_positions(self, conn: "WebSocketConnection", user_id: str, tracker: StreamTracker) -> None:
        if conn.session_id is not None:
            self.store.save_session(conn.session_id, session_fields(user_id, dict(tracker.positions)),
                                    self.options.session_ttl)

    def _catch_up(self, conn: "WebSocketConnection", stream: str) -> None:
        tracker = conn.streams
        if tracker is None or not conn.open or tracker.held is not None:
            return
        last = tracker.positions.get(stream)
        if last is None:
            return
        try:
            entries = self.store.read_confirmed(stream, last[0], self.options.max_replay)
        except CrossWSError:
            return
        for entry in entries:
            verdict, _ = tracker.check(stream, entry[0], last[1])
            if verdict != DUPLICATE and conn.open:
                self._send_entry(conn, tracker, stream, entry, last[1])

    def _not_recovered(self, conn: "WebSocketConnection", reason: str) -> None:
        conn.recovered = False
        self.stats["not_recovered"] += 1
        logger.info("%r not recovered: %s", conn, reason)
        conn.send_event(SESSION_EVENT, {"recovered": False, "reason": reason})

    def close(self) -> None:
        self._closed = True
        self._refresher.kill(block=False)
        self.store.close()


def envelope_stream(envelope: Dict[str, Any]) -> str:
    """The stream a positioned envelope belongs to (from its fields)."""
    namespace, room_id = envelope.get("roomNamespace"), envelope.get("roomId")
    if type(namespace) is str and type(room_id) is str:
        return room_stream(namespace, room_id)
    socket_id = envelope.get("socketId")
    if type(socket_id) is str:
        return user_stream(socket_id)
    ids = envelope.get("ids")
    if type(ids) is list and len(ids) == 1 and type(ids[0]) is str:
        return user_stream(ids[0])
    return BROADCAST_STREAM


__all__ = ["CATCH_UP_DELAY", "MAX_REQUEST_STREAMS", "Recovery", "envelope_stream", "tracker_of"]
