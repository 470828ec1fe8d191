"""History streams and recovery sessions in Redis (connection state recovery).

One Redis node of the bus, the *history node* (the first of ``redis_config``), holds:

==============================================  ===============================================
key                                             holds
==============================================  ===============================================
``<ws>_crossws.h:{<stream id>}``                the stream: entry id ``0-<offset>``, fields
                                                ``d`` (the published body), ``c`` (its channel),
                                                ``t`` (sender's time, microseconds); ``MAXLEN ~``
``<ws>_crossws.m:{<stream id>}``                its meta hash: ``v`` ``<epoch>:<Redis run id>``,
                                                ``s`` last offset
``<ws>_crossws.s:{<session id>}``               a session hash: ``u`` user id, and the position
                                                (``offset:epoch``) of each of its streams when
                                                the session took it (join, mapping)
==============================================  ===============================================

The keys of a stream share a hash tag, so they stay in one slot of a Redis Cluster; a session
key has one too. Plain Redis (:class:`HistoryStore`) and a Redis Cluster
(:class:`~crossws_sync.bus.cluster_history.ClusterHistoryStore`) share the key names, reads and
sessions (:class:`StoreBase`).

Appending and publishing are one Lua script (:data:`SCRIPT`): it numbers the message, writes
its position into the body (same length, see :mod:`crossws_sync.wire.positions`), appends it
to the stream and publishes it, so every live message is in the history and in order. The
epoch changes when the meta hash is new (a fresh stream, Redis restarted without its data) and
when the Redis *run id* changes (a restart or a failover, after which writes may have been
lost): positions from before can then never be taken for positions after. The run id is built
into the loaded script (see :data:`SCRIPT`).

With ``history_replicas`` (N >= 1) the script does not publish: the store publishes each append
once ``WAIT N`` on its connection confirmed it (:mod:`.replication`), the meta hash is tagged
:data:`REPLICATED` instead of a run id (the epoch survives a promotion), entries carry a message
id (field ``i``) so a second attempt is not appended twice, and tops are read with a ``WAIT``.

Everything here goes over one pipelined connection of its own (:class:`~.publisher.Publisher`).
"""
from __future__ import annotations

import logging
import random
import secrets
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import gevent
import redis

from ..errors import RedisUnavailableError
from ..io.supervisor import supervise
from ..wire.positions import Position
from .connection import RedisConnection, RedisSettings
from .publisher import CallbackCommand, Command, NoWaitCommand, Publisher
from .replication import Confirmations, wait_timeout

logger = logging.getLogger("crossws_sync.bus")

#: Append-and-publish (mode ``a``) or read the top, creating the meta hash (mode ``t``).
#: KEYS: stream, meta. ARGV: body, 1-based index of the position in it, channel, MAXLEN,
#: stream TTL (s), meta TTL (s), epoch to use if a new one is needed, the sender's time
#: (microseconds, orders a replay across streams), mode, and ``n`` to return the positioned body
#: instead of publishing it (Redis Cluster, see :mod:`.cluster_history`, and ``history_replicas``, see
#: :mod:`.replication`); with ``history_replicas`` also the message id (stored as field ``i``) and
#: ``1`` on a second attempt (the entry with that id among the last 1000 is returned instead of
#: appending again). Each ``redis.call`` costs about as much
#: as the command itself, so the common path makes five: HINCRBY, HGET, XADD, EXPIRE, PUBLISH;
#: the meta hash's TTL is extended on every 64th append and on every read of the top.
#: ``__RUN__`` is replaced by the server's run id when the script is loaded, so a script (and
#: its SHA) loaded on one Redis process can never run on another one; with ``history_replicas``
#: by :data:`REPLICATED` instead: the epoch is then replicated data and survives a promotion.
SCRIPT = """
local RUN = '__RUN__'
local meta = KEYS[2]
local append = ARGV[9] == 'a'
if append and ARGV[12] == '1' then
  -- a second attempt (history_replicas): the first may be in the stream, its reply lost
  local version = redis.call('HGET', meta, 'v')
  if version and string.sub(version, 10) == RUN then
    for _, entry in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1000)) do
      local fields, found, body = entry[2], false, ''
      for j = 1, #fields - 1, 2 do
        if fields[j] == 'i' and fields[j + 1] == ARGV[11] then found = true end
        if fields[j] == 'd' then body = fields[j + 1] end
      end
      if found then
        return {tonumber(string.sub(entry[1], 3)), string.sub(version, 1, 8), body, 1}
      end
    end
  end
end
local top = 0
if append then
  top = redis.call('HINCRBY', meta, 's', 1)
end
local version = redis.call('HGET', meta, 'v')
local epoch = version and string.sub(version, 1, 8)
if (not version) or string.sub(version, 10) ~= RUN then
  -- a new stream, or one written by another Redis process (restart, failover): new epoch
  epoch = ARGV[7]
  top = append and 1 or 0
  redis.call('DEL', KEYS[1])
  redis.call('HSET', meta, 'v', epoch .. ':' .. RUN, 's', top)
  redis.call('EXPIRE', meta, ARGV[6])
elseif (not append) or top % 64 == 0 then
  redis.call('EXPIRE', meta, ARGV[6])
end
if not append then
  return {tonumber(redis.call('HGET', meta, 's')), epoch}
end
local position = string.format('%016d', top) .. ':' .. epoch
local body = ARGV[1]
local i = tonumber(ARGV[2])
body = string.sub(body, 1, i - 1) .. position .. string.sub(body, i + 25)
if ARGV[11] then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '0-' .. top, 'd', body, 'c', ARGV[3], 't', ARGV[8], 'i', ARGV[11])
else
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '0-' .. top, 'd', body, 'c', ARGV[3], 't', ARGV[8])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
if ARGV[10] == 'n' then
  -- Redis Cluster, or history_replicas: the caller publishes the body (after WAIT)
  return {top, epoch, body, 0}
end
redis.call('PUBLISH', ARGV[3], body)
return {top, epoch}
"""

_random_bits = random.Random().getrandbits

#: The meta hash's tag (in place of a run id) of streams whose epoch survives a failover.
REPLICATED = "replicated"

#: An entry read back: ``(offset, microseconds, channel, body)``.
Entry = Tuple[int, int, str, bytes]


def new_epoch() -> str:
    """A random epoch (:data:`~crossws_sync.wire.positions.EPOCH_LENGTH` hex digits).

    Every append carries a fresh one (used only if the stream needs a new epoch), so it must be
    cheap: 32 bits from the non-cryptographic generator (epochs are not secrets, they only have
    to differ from the stream's previous one).
    """
    return "%08x" % _random_bits(32)


def new_message_id() -> str:
    """A message id for the stream (``history_replicas``): 64 random bits, 16 hex digits; it only has
    to differ from the ids of the last 1000 entries of one stream."""
    return "%016x" % _random_bits(64)


def new_session_id() -> str:
    """A session id: 128 random bits, URL-safe (a bearer secret of the client)."""
    return secrets.token_urlsafe(16)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def run_id_of(info: Any) -> str:
    """The ``run_id`` of an ``INFO server`` reply.

    Raises:
        RedisUnavailableError: none in it.
    """
    for line in _text(info).splitlines():
        if line.startswith("run_id:"):
            run_id = line[len("run_id:"):].strip()
            if run_id.isalnum():
                return run_id
    raise RedisUnavailableError("no run_id in INFO server")


class StoreBase:
    """Key names, reads and sessions of a history store, over two primitives a subclass
    provides: :meth:`_run` (commands on one key's node, waiting for the replies) and
    :meth:`_nowait` (one command on one key's node, pipelined)."""

    prefix: str
    #: replicas that must confirm an append before it is published (0: none, epoch per run id)
    replicas: int = 0

    def top(self, stream: str) -> Position:  # pragma: no cover - interface
        raise NotImplementedError

    def stream_key(self, stream: str) -> str:
        return "%s_crossws.h:{%s}" % (self.prefix, stream)

    def meta_key(self, stream: str) -> str:
        return "%s_crossws.m:{%s}" % (self.prefix, stream)

    def session_key(self, session_id: str) -> str:
        return "%s_crossws.s:{%s}" % (self.prefix, session_id)

    def _run(self, key: str, commands: List[Tuple[Any, ...]]) -> List[Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def _nowait(self, key: str, args: Tuple[Any, ...]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self, stream: str, after: int, limit: int) -> List[Entry]:
        """Up to ``limit`` entries of ``stream`` with offsets above ``after``, in order."""
        key = self.stream_key(stream)
        reply = self._run(key, [("XRANGE", key, "(0-%d" % after, "+", "COUNT", limit)])[0]
        return [_entry(item) for item in reply or ()]

    def read_confirmed(self, stream: str, after: int, limit: int) -> List[Entry]:
        """:meth:`read`, but never past the stream's top as the replicas confirmed it (with
        ``history_replicas``: an append not confirmed yet must reach no client).

        Raises:
            RedisUnavailableError: the replicas did not confirm the top in time.
        """
        if not self.replicas:
            return self.read(stream, after, limit)
        count = min(limit, self.top(stream)[0] - after)
        return self.read(stream, after, count) if count > 0 else []

    def first_offset(self, stream: str) -> Optional[int]:
        """The oldest offset still in ``stream`` (``None`` when it is empty or gone)."""
        key = self.stream_key(stream)
        reply = self._run(key, [("XRANGE", key, "-", "+", "COUNT", 1)])[0]
        return _entry(reply[0])[0] if reply else None

    def save_session(self, session_id: str, fields: Dict[str, str], ttl: float) -> None:
        """Create or extend a session (pipelined, no wait)."""
        key = self.session_key(session_id)
        args: List[Any] = ["HSET", key]
        for name, value in fields.items():
            args += [name, value]
        self._nowait(key, tuple(args))
        self._nowait(key, ("EXPIRE", key, max(1, int(ttl + 0.999))))

    def forget_session_fields(self, session_id: str, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            key = self.session_key(session_id)
            self._nowait(key, ("HDEL", key) + tuple(names))

    def touch_sessions(self, session_ids: Iterable[str], ttl: float) -> None:
        """Extend sessions' TTL (pipelined, no wait)."""
        seconds = max(1, int(ttl + 0.999))
        for session_id in session_ids:
            key = self.session_key(session_id)
            self._nowait(key, ("EXPIRE", key, seconds))

    def take_session(self, session_id: str) -> Optional[Dict[str, str]]:
        """Read and delete a session (each is used once); ``None`` when absent or expired."""
        key = self.session_key(session_id)
        raw = self._run(key, [("HGETALL", key), ("DEL", key)])[0]
        if not raw:
            return None
        items = list(raw.items()) if isinstance(raw, dict) else list(zip(raw[0::2], raw[1::2]))
        return {_text(name): _text(value) for name, value in items}


class HistoryStore(StoreBase):
    """The history node's streams and sessions.

    Args:
        settings: how to connect to the history node (its :class:`RedisSettings`).
        prefix: key prefix (the adapter's ``ws_prefix``).
        history_size: entries kept per stream (``MAXLEN ~``).
        stream_ttl: seconds a stream lives after its last append.
        command_timeout: a reply not started within this many seconds breaks the connection.
        open_connection: opens a connection with the given settings (default
            :meth:`RedisConnection.open`); a Sentinel node's
            :meth:`~crossws_sync.bus.node.RedisNode.open_connection` asks the sentinels for the
            primary on every (re)connect, so the history follows a failover.
        label: names the history node in logs (default: the settings' ``host:port``).
        replicas: ``history_replicas``: with N >= 1 an append is published only once ``WAIT N``
            says N replicas hold it (:mod:`.replication`), and the epoch survives a failover.
        replica_timeout: seconds one ``WAIT`` may block (at most half of ``command_timeout``).
    """

    def __init__(self, settings: RedisSettings, *, prefix: str, history_size: int, stream_ttl: float,
                 command_timeout: float = 2.0,
                 open_connection: Optional[Callable[[RedisSettings], RedisConnection]] = None,
                 label: Optional[str] = None, replicas: int = 0, replica_timeout: float = 0.5) -> None:
        self.settings = settings
        self.label = label or settings.label
        self._open_connection = open_connection or RedisConnection.open
        self.prefix = prefix
        self.history_size = int(history_size)
        self.stream_ttl = max(1, int(stream_ttl + 0.999))
        #: metas outlive their streams, so a quiet stream keeps its epoch and offsets
        self.meta_ttl = max(86400, 10 * self.stream_ttl)
        self.run_id = ""
        self._sha = ""
        self._command_timeout = command_timeout
        self._closed = False
        self._publisher = Publisher(self._open, label=self.label, on_down=self._down,
                                    command_timeout=command_timeout)
        self._writer = gevent.spawn(supervise, self._publisher.writer_loop, "history writer", logger,
                                    stopped=lambda: self._closed)
        #: appends waiting for the script to be loaded again (NOSCRIPT), in order
        self._waiting: Optional[List[Tuple[Tuple[Any, ...], Callable[[BaseException], None]]]] = None
        self.stats = {"appends": 0, "append_failures": 0, "script_loads": 0}
        self.replicas = int(replicas)
        self._wait_ms = int(wait_timeout(replica_timeout, command_timeout) * 1000) or 1
        self._confirm: Optional[Confirmations] = None
        if self.replicas:
            self.stats.update(publish_failures=0, found_again=0, confirmed=0, unconfirmed_waits=0,
                              unconfirmed_given_up=0, lost_before_confirmation=0)
            self._confirm = Confirmations(self._publisher.submit, lambda: self._publisher.generation, self._publish,
                                          replicas=self.replicas, timeout=self._wait_ms / 1000.0, label=self.label,
                                          stats=self.stats)

    # Streams ----------------------------------------------------------------------------------

    def append(self, stream: str, channel: str, raw: bytes, index: int,
               on_lost: Callable[[BaseException], None], message_id: str = "", again: bool = False) -> None:
        """Append ``raw`` to ``stream`` and publish it on ``channel``, pipelined (no wait).

        ``raw`` holds the position placeholder at the 1-based byte ``index``. ``on_lost(error)``
        runs (in an I/O greenlet; it must not block) when Redis could not take it. With
        ``history_replicas``: ``message_id`` names the message in the stream, and ``again`` says
        it was tried before (it is not appended twice; see :mod:`.replication`).
        """
        args = (stream, channel, raw, index, message_id, again)
        if self._waiting is not None or not self._sha:
            self._reload_then(args, on_lost)
            return
        self._submit_append(args, on_lost)

    def _submit_append(self, args: Tuple[Any, ...], on_lost: Callable[[BaseException], None]) -> None:
        stream, channel, raw, index, message_id, again = args
        self.stats["appends"] += 1
        confirm = self._confirm

        def failed(error: BaseException) -> None:
            if isinstance(error, redis.ResponseError) and str(error).startswith("NOSCRIPT"):
                self._reload_then(args, on_lost)
                return
            self.stats["append_failures"] += 1
            on_lost(error)

        if self._closed:
            on_lost(RedisUnavailableError("history store closed"))
            return
        if confirm is None:
            self._publisher.submit(NoWaitCommand(self._eval_args(stream, "a", raw, index, channel), failed))
            return
        pending = confirm.track(channel, on_lost)

        def replied(reply: Any) -> None:
            if len(reply) > 3 and reply[3] == 1:
                self.stats["found_again"] += 1
            confirm.appended(pending, reply[2])

        def refused(error: BaseException) -> None:
            confirm.failed(pending, error)
            failed(error)

        self._publisher.submit(CallbackCommand(self._eval_args(stream, "a", raw, index, channel, message_id, again),
                                      replied, refused))

    def _publish(self, channel: str, body: bytes) -> None:
        """Publish a confirmed append. A failure loses only the live copy: the message is in the
        replicated history, and receivers fill the gap from it at the stream's next message."""
        def failed(error: BaseException) -> None:
            self.stats["publish_failures"] += 1
            logger.debug("publishing a confirmed history append failed: %s", error)

        if not self._closed:
            self._publisher.submit(NoWaitCommand(("PUBLISH", channel, body), failed))

    def _eval_args(self, stream: str, mode: str, raw: bytes = b"", index: int = 1, channel: str = "",
                   message_id: str = "", again: bool = False) -> Tuple[Any, ...]:
        args: Tuple[Any, ...] = ("EVALSHA", self._sha or "0" * 40, 2, self.stream_key(stream), self.meta_key(stream),
                raw, index, channel, self.history_size, self.stream_ttl, self.meta_ttl, new_epoch(),
                int(time.time() * 1e6), mode)
        if self.replicas:
            args += ("n", message_id or new_message_id(), "1" if again else "0")
        return args

    def _reload_then(self, args: Tuple[Any, ...], on_lost: Callable[[BaseException], None]) -> None:
        if self._waiting is not None:
            self._waiting.append((args, on_lost))
            return
        self._waiting = [(args, on_lost)]
        gevent.spawn(self._reload)

    def _reload(self) -> None:
        waiting = self._waiting or []
        try:
            self.load_script()
        except (RedisUnavailableError, redis.RedisError) as exc:
            self._waiting = None
            for _, on_lost in waiting:
                self.stats["append_failures"] += 1
                on_lost(exc)
            return
        self._waiting = None
        for args, on_lost in waiting:
            self._submit_append(args, on_lost)

    def load_script(self) -> None:
        """Load the script for the history node's current Redis process (read its run id first).

        Done again by itself whenever Redis answers NOSCRIPT: after a restart or a failover, or a
        ``SCRIPT FLUSH``.
        """
        self.stats["script_loads"] += 1
        run_id = run_id_of(self.command("INFO", "server"))
        if self.run_id and run_id != self.run_id:
            logger.warning("history node %s is another Redis process now (run id %s...): history streams "
                           "start a new epoch", self.label, run_id[:8])
        self.run_id = run_id
        tag = REPLICATED if self.replicas else run_id
        self._sha = _text(self.command("SCRIPT", "LOAD", SCRIPT.replace("__RUN__", tag)))

    def top(self, stream: str) -> Position:
        """The last offset of ``stream`` and its epoch (starting the stream's meta if new).

        With ``history_replicas``, the top as the replicas confirmed it (the reading script writes
        the meta hash's TTL, so the ``WAIT`` that follows covers every append before it).

        Raises:
            RedisUnavailableError: the history node did not answer, or the replicas did not
                confirm in time.
        """
        return self.tops([stream])[stream]

    def tops(self, streams: Iterable[str]) -> Dict[str, Position]:
        """:meth:`top` of several streams in one pipelined round trip."""
        streams = list(streams)
        replies = self._run_all(self._top_commands(streams), retry_noscript=True)
        if replies is None:
            replies = self._run_all(self._top_commands(streams), retry_noscript=False)
        assert replies is not None
        if self.replicas:
            acknowledged = int(replies.pop())
            if acknowledged < self.replicas:
                self.stats["unconfirmed_waits"] += 1
                raise RedisUnavailableError("history replicas confirmed %d of %d within %d ms"
                                            % (acknowledged, self.replicas, self._wait_ms))
        return {stream: (int(reply[0]), _text(reply[1])) for stream, reply in zip(streams, replies)}

    def _top_commands(self, streams: List[str]) -> List[Command]:
        commands = [Command(self._eval_args(stream, "t")) for stream in streams]
        if self.replicas:
            commands.append(Command(("WAIT", self.replicas, self._wait_ms)))
        return commands

    # Plumbing --------------------------------------------------------------------------------

    def command(self, *args: Any) -> Any:
        """One command, waiting for its reply.

        Raises:
            RedisUnavailableError: not answered in time, or the connection failed.
            redis.ResponseError: Redis answered with an error.
        """
        replies = self._run_all([Command(args)], retry_noscript=False)
        assert replies is not None
        return replies[0]

    def _run_all(self, commands: List[Command], *, retry_noscript: bool) -> Optional[List[Any]]:
        if self._closed:
            raise RedisUnavailableError("history store closed")
        for command in commands:
            self._publisher.submit(command)
        wait = 2 * self._command_timeout + 0.5
        replies = []
        for command in commands:
            try:
                replies.append(command.result.get(timeout=wait))
            except gevent.Timeout:
                command.cancelled = True
                raise RedisUnavailableError("history node %s did not answer within %.1fs" % (self.label, wait)) from None
            except redis.ResponseError as exc:
                if retry_noscript and str(exc).startswith("NOSCRIPT"):
                    self.load_script()
                    return None
                raise
        return replies

    def _run(self, key: str, commands: List[Tuple[Any, ...]]) -> List[Any]:
        replies = self._run_all([Command(args) for args in commands], retry_noscript=False)
        assert replies is not None
        return replies

    def _nowait(self, key: str, args: Tuple[Any, ...]) -> None:
        if self._closed:
            return

        def failed(error: BaseException) -> None:
            logger.debug("history command %s failed: %s", args[0], error)

        self._publisher.submit(NoWaitCommand(args, failed))

    def _open(self) -> RedisConnection:
        return self._open_connection(self.settings)

    def _down(self, event: str, error: str) -> None:
        logger.debug("history node %s: %s %s", self.label, event, error)

    def close(self) -> None:
        self._closed = True
        if self._confirm is not None:
            self._confirm.close()
        self._publisher.close()
        self._writer.kill(block=False)


def _entry(item: Any) -> Entry:
    entry_id, fields = item
    offset = int(_text(entry_id).split("-", 1)[1])
    if isinstance(fields, dict):
        values = {_text(k): v for k, v in fields.items()}
    else:
        values = {_text(k): v for k, v in zip(fields[0::2], fields[1::2])}
    body = values.get("d", b"")
    return offset, int(_text(values.get("t", b"0"))), _text(values.get("c", b"")), body if isinstance(body, bytes) else _text(body).encode("utf-8")


__all__ = ["Entry", "HistoryStore", "REPLICATED", "StoreBase", "run_id_of", "SCRIPT", "new_epoch", "new_message_id",
           "new_session_id"]
