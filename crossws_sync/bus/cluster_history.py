"""History streams and recovery sessions on a Redis Cluster (connection state recovery).

The same keys, script and contract as :class:`~crossws_sync.bus.history.HistoryStore`, spread over
the shards of a :class:`~crossws_sync.bus.cluster.ClusterNode`:

* every command goes to the primary serving its key's slot (``MOVED`` / ``ASK`` followed, the
  topology refreshed): a stream's keys ``<ws>_crossws.h:{<stream>}`` and ``<ws>_crossws.m:{<stream>}``
  share their hash tag, and sessions get one too, ``<ws>_crossws.s:{<session id>}``, so that
  ``HGETALL`` + ``DEL`` of a session and the script's two keys never span two slots;
* the script is loaded per shard (each primary has its own run id, built into the script: a
  failover gives the promoted replica's streams a new epoch), again after ``NOSCRIPT``; with
  ``history_replicas`` the epoch is replicated data instead, and each shard's appends are
  SPUBLISHed only once ``WAIT`` on that shard's connection says its replicas hold them
  (:mod:`.replication`), so a promoted replica continues the streams of its slots;
* appending cannot publish from the script: the channel (``ws:<namespace>``...) hashes to
  another slot than the stream, and a script may only touch its own slot. The script returns the
  positioned body instead (its ``n`` mode), and the store SPUBLISHes it on the channel's shard
  from the reply, in reply order: messages of one stream stay in order (streams of one channel
  on different shards are not ordered among themselves, as on several independent nodes).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

import gevent
import redis

from ..errors import RedisUnavailableError
from ..wire.positions import Position
from ..wire.slots import Address, parse_redirect
from .history import REPLICATED, SCRIPT, StoreBase, new_epoch, new_message_id, run_id_of
from .publisher import CallbackCommand, NoWaitCommand
from .replication import Confirmations, wait_timeout

if TYPE_CHECKING:
    from .cluster import ClusterNode
    from .shards import Shard

logger = logging.getLogger("crossws_sync.bus")

_ATTEMPTS = 4

#: One append: stream, channel, body, position index, on_lost, attempt, the error that sent it back,
#: message id and whether it was tried before (``history_replicas``).
_Job = Tuple[str, str, bytes, int, Callable[[BaseException], None], int, Optional[str], str, bool]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class ClusterHistoryStore(StoreBase):
    """The history of connection state recovery on a Redis Cluster.

    Args:
        node: the bus's cluster node (its shards carry the commands).
        prefix: key prefix (the adapter's ``ws_prefix``).
        history_size: entries kept per stream (``MAXLEN ~``).
        stream_ttl: seconds a stream lives after its last append.
        command_timeout: seconds to wait for one reply.
        replicas: ``history_replicas`` (see :class:`~crossws_sync.bus.history.HistoryStore`), per shard.
        replica_timeout: seconds one ``WAIT`` may block a shard's connection (at most half the
            node's command timeout).
    """

    def __init__(self, node: "ClusterNode", *, prefix: str, history_size: int, stream_ttl: float,
                 command_timeout: float = 2.0, replicas: int = 0, replica_timeout: float = 0.5) -> None:
        self.node = node
        self.prefix = prefix
        self.history_size = int(history_size)
        self.stream_ttl = max(1, int(stream_ttl + 0.999))
        self.meta_ttl = max(86400, 10 * self.stream_ttl)
        self._timeout = 2 * command_timeout + 0.5
        self._scripts: Dict[Address, Tuple[str, str]] = {}  # primary -> (run id, sha)
        self._closed = False
        #: appends waiting (in order) for a script load or a redirection; ``None``: none
        self._queue: Optional[List[_Job]] = None
        self.stats = {"appends": 0, "append_failures": 0, "script_loads": 0, "redirects": 0}
        self.replicas = int(replicas)
        self._wait_ms = int(wait_timeout(replica_timeout, node.command_timeout) * 1000) or 1
        self._confirms: Dict[Address, Tuple["Shard", Confirmations]] = {}
        if self.replicas:
            self.stats.update(publish_failures=0, found_again=0, confirmed=0, unconfirmed_waits=0,
                              unconfirmed_given_up=0, lost_before_confirmation=0)

    # Streams ----------------------------------------------------------------------------------

    def append(self, stream: str, channel: str, raw: bytes, index: int,
               on_lost: Callable[[BaseException], None], message_id: str = "", again: bool = False) -> None:
        """Append ``raw`` to ``stream`` and SPUBLISH the positioned body on ``channel`` (no wait).

        ``on_lost(error)`` runs (in an I/O greenlet; it must not block) when it could not be done.
        ``message_id`` and ``again``: as for :meth:`~crossws_sync.bus.history.HistoryStore.append`.
        """
        self._append((stream, channel, raw, index, on_lost, 0, None, message_id, again))

    def _append(self, job: _Job) -> None:
        if self._closed:
            job[4](RedisUnavailableError("history store closed"))
            return
        if self._queue is not None:  # behind the appends waiting for a script or a redirect: order
            self._queue.append(job)
            return
        stream, on_lost = job[0], job[4]
        try:
            shard = self.node.topology.shard_for(self.stream_key(stream))
        except RedisUnavailableError as exc:
            on_lost(exc)
            return
        script = self._scripts.get(shard.address)
        if script is None:
            self._enqueue(job)
            return
        self._submit(shard, script[1], job)

    def _submit(self, shard: "Shard", sha: str, job: _Job) -> None:
        stream, channel, raw, index, on_lost, attempt, _, message_id, again = job
        self.stats["appends"] += 1
        confirm = self._confirmations(shard) if self.replicas else None
        pending = confirm.track(channel, on_lost) if confirm is not None else None

        def replied(reply: Any) -> None:
            if confirm is not None and pending is not None:
                if len(reply) > 3 and reply[3] == 1:
                    self.stats["found_again"] += 1
                confirm.appended(pending, reply[2])
                return
            try:
                self.node.publish_nowait(channel, reply[2], on_lost)
            except RedisUnavailableError as exc:
                on_lost(exc)

        def failed(error: BaseException) -> None:
            # In the shard's reader greenlet, in submission order: queue, never block.
            if confirm is not None and pending is not None:
                confirm.failed(pending, error)
            text = str(error)
            if isinstance(error, redis.ResponseError) and attempt < _ATTEMPTS and (
                    text.startswith("NOSCRIPT") or parse_redirect(text) is not None):
                if text.startswith("NOSCRIPT"):
                    self._scripts.pop(shard.address, None)
                self._enqueue((stream, channel, raw, index, on_lost, attempt + 1, text, message_id, again))
                return
            self.stats["append_failures"] += 1
            on_lost(error)

        shard.publisher.submit(CallbackCommand(self._eval_args(sha, stream, "a", raw, index, channel, message_id, again),
                                               replied, failed))

    def _confirmations(self, shard: "Shard") -> Confirmations:
        """The confirmations of appends on ``shard``'s connection (new ones for a new primary)."""
        entry = self._confirms.get(shard.address)
        if entry is None or entry[0] is not shard:
            publisher = shard.publisher
            confirm = Confirmations(publisher.submit, lambda: publisher.generation, self._publish,
                                    replicas=self.replicas, timeout=self._wait_ms / 1000.0, label=shard.label,
                                    stats=self.stats)
            entry = self._confirms[shard.address] = (shard, confirm)
        return entry[1]

    def _publish(self, channel: str, body: bytes) -> None:
        """SPUBLISH a confirmed append (a lost live copy is filled from history by receivers)."""
        def failed(error: BaseException) -> None:
            self.stats["publish_failures"] += 1
            logger.debug("publishing a confirmed history append failed: %s", error)

        try:
            self.node.publish_nowait(channel, body, failed)
        except RedisUnavailableError as exc:
            failed(exc)

    def _enqueue(self, job: _Job) -> None:
        if self._queue is None:
            self._queue = []
            gevent.spawn(self._drain)
        self._queue.append(job)

    def _drain(self) -> None:
        """Load scripts and follow redirections for the queued appends, then submit them in order."""
        while not self._closed:
            queue = self._queue
            if not queue:
                self._queue = None
                return
            job = queue.pop(0)
            stream, on_lost, error = job[0], job[4], job[6]
            try:
                redirect = parse_redirect(error) if error else None
                if redirect is not None:
                    self.stats["redirects"] += 1
                    self.node.topology.follow(redirect)
                shard = self.node.topology.shard_for(self.stream_key(stream))
                script = self._scripts.get(shard.address) or self._load(shard)
            except (RedisUnavailableError, redis.RedisError) as exc:
                self.stats["append_failures"] += 1
                on_lost(exc)
                continue
            self._submit(shard, script[1], job)
        for job in self._queue or []:
            job[4](RedisUnavailableError("history store closed"))
        self._queue = None

    def _handle_error(self, shard: "Shard", error: str) -> None:
        if error.startswith("NOSCRIPT"):
            self._scripts.pop(shard.address, None)
            return
        redirect = parse_redirect(error, shard.address[0])
        if redirect is not None:
            self.stats["redirects"] += 1
            self.node.topology.follow(redirect)

    def _eval_args(self, sha: str, stream: str, mode: str, raw: bytes = b"", index: int = 1,
                   channel: str = "", message_id: str = "", again: bool = False) -> Tuple[Any, ...]:
        args: Tuple[Any, ...] = ("EVALSHA", sha, 2, self.stream_key(stream), self.meta_key(stream), raw, index, channel,
                self.history_size, self.stream_ttl, self.meta_ttl, new_epoch(), int(time.time() * 1e6), mode, "n")
        if self.replicas:
            args += (message_id or new_message_id(), "1" if again else "0")
        return args

    def _load(self, shard: "Shard") -> Tuple[str, str]:
        """Load the script on one primary, for its current process (its run id)."""
        self.stats["script_loads"] += 1
        run_id = run_id_of(shard.command(("INFO", "server"), self._timeout))
        tag = REPLICATED if self.replicas else run_id
        sha = _text(shard.command(("SCRIPT", "LOAD", SCRIPT.replace("__RUN__", tag)), self._timeout))
        self._scripts[shard.address] = (run_id, sha)
        return run_id, sha

    def top(self, stream: str) -> Position:
        """The last offset of ``stream`` and its epoch (starting the stream's meta if new).

        With ``history_replicas``, the top as the shard's replicas confirmed it.

        Raises:
            RedisUnavailableError: the shard did not answer, or its replicas did not confirm in time.
        """
        key = self.stream_key(stream)
        error = ""
        for _ in range(_ATTEMPTS):
            shard = self.node.topology.shard_for(key)
            script = self._scripts.get(shard.address) or self._load(shard)
            try:
                reply = shard.command(self._eval_args(script[1], stream, "t"), self._timeout)
            except redis.ResponseError as exc:
                error = str(exc)
                if not (error.startswith("NOSCRIPT") or parse_redirect(error) is not None):
                    raise
                self._handle_error(shard, error)
                continue
            if self.replicas:
                acknowledged = int(shard.command(("WAIT", self.replicas, self._wait_ms), self._timeout))
                if acknowledged < self.replicas:
                    self.stats["unconfirmed_waits"] += 1
                    raise RedisUnavailableError("history replicas of %s confirmed %d of %d within %d ms"
                                                % (shard.label, acknowledged, self.replicas, self._wait_ms))
            return int(reply[0]), _text(reply[1])
        raise RedisUnavailableError("history: %s" % error)

    def tops(self, streams: Iterable[str]) -> Dict[str, Position]:
        """:meth:`top` of several streams, concurrently (they live on several shards)."""
        streams = list(streams)
        jobs = [gevent.spawn(self.top, stream) for stream in streams]
        gevent.joinall(jobs, raise_error=True)
        return {stream: job.value for stream, job in zip(streams, jobs)}

    # Plumbing --------------------------------------------------------------------------------

    def _run(self, key: str, commands: List[Tuple[Any, ...]]) -> List[Any]:
        return [self.node.command_for_key(key, *args) for args in commands]

    def _nowait(self, key: str, args: Tuple[Any, ...]) -> None:
        if self._closed:
            return
        try:
            shard = self.node.topology.shard_for(key)
        except RedisUnavailableError as exc:
            logger.debug("history command %s not sent: %s", args[0], exc)
            return

        def failed(error: BaseException) -> None:
            logger.debug("history command %s failed: %s", args[0], error)

        shard.publisher.submit(NoWaitCommand(args, failed))

    def close(self) -> None:
        """Stop using the shards (the cluster node owns and closes the connections)."""
        self._closed = True
        for _, confirm in self._confirms.values():
            confirm.close()


__all__ = ["ClusterHistoryStore"]
