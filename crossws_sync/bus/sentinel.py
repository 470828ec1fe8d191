"""Redis Sentinel: where a Sentinel-managed primary is now, and a connection that is really to it.

A :class:`SentinelPrimary` turns a checked Sentinel entry of ``redis_config``
(:class:`~crossws_sync.config.SentinelConfig`) into connections to the service's current
primary. Every :meth:`SentinelPrimary.open` asks the sentinels again
(``SENTINEL get-master-addr-by-name <service>``), each with a short timeout, starting with the
one that answered last; then it connects with the caller's :class:`RedisSettings` (address
replaced) and checks ``ROLE``: an address that is no longer the primary (a sentinel that has
not seen the failover yet, an old primary back as a replica) is closed and asked again a few
times, then refused with ``redis.ConnectionError`` so that the caller's reconnect loop retries.

Nothing here keeps a connection open: the publisher, the subscriber and the history store each
reopen (and so re-resolve) by themselves after a failure, which is how they follow a failover.
Sentinel itself drops the clients of a primary it demotes (``CLIENT KILL TYPE normal`` and
``pubsub``), and a primary killed outright drops them too; a link that stays up but hears
nothing is caught by the node's liveness probe (:mod:`crossws_sync.bus.node`).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, List, Optional, Tuple

import gevent
from hiredis import pack_command

import redis

from ..config import SentinelConfig
from .connection import TIMED_OUT, RedisConnection, RedisSettings

logger = logging.getLogger("crossws_sync.nodes")

#: Times :meth:`SentinelPrimary.open` asks the sentinels again when the address it got is not
#: the primary (sentinels agree within a second or so after a failover).
ROLE_ATTEMPTS = 3
_ROLE_RETRY_DELAY = 0.1


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _ask(conn: RedisConnection, timeout: float, *args: Any) -> Any:
    conn.sendall(pack_command(args))
    reply = conn.next(timeout)
    if reply is TIMED_OUT:
        raise redis.TimeoutError("no reply to %s within %.1fs" % (args[0], timeout))
    if isinstance(reply, redis.ResponseError):
        raise reply
    return reply


class SentinelPrimary:
    """The current primary of one Sentinel-managed service.

    Args:
        config: the checked Sentinel entry.
        connect_timeout: upper bound of each sentinel's connect timeout (the entry's
            ``sentinel_timeout`` is used when smaller).
    """

    def __init__(self, config: SentinelConfig, *, connect_timeout: float) -> None:
        self.config = config
        self._timeout = min(config.sentinel_timeout, connect_timeout)
        self._order: List[Tuple[str, int]] = list(config.sentinels)
        #: ``(host, port)`` of the primary last connected to (``None``: never).
        self.address: Optional[Tuple[str, int]] = None

    def __repr__(self) -> str:
        return "SentinelPrimary(%s, sentinels=%s)" % (self.config.service_name, self.config.sentinel_list)

    @property
    def label(self) -> str:
        """``sentinel:<service name>``."""
        return self.config.label

    def resolve(self) -> Tuple[str, int]:
        """Ask the sentinels, one after the other, where the primary is.

        The sentinel that answers is asked first next time.

        Raises:
            redis.ConnectionError: no sentinel answered with an address (each one's error is in
                the message).
        """
        errors = []
        for sentinel in list(self._order):
            try:
                address = self._ask_sentinel(sentinel)
            except (redis.RedisError, OSError) as exc:
                errors.append("%s:%d: %s" % (sentinel[0], sentinel[1], exc))
                continue
            if address is None:
                errors.append("%s:%d: does not know %s" % (sentinel[0], sentinel[1], self.config.service_name))
                continue
            if self._order[0] != sentinel:
                self._order.remove(sentinel)
                self._order.insert(0, sentinel)
            return address
        raise redis.ConnectionError("no sentinel of %s gave the primary's address (%s)" % (self.label, "; ".join(errors)))

    def _ask_sentinel(self, sentinel: Tuple[str, int]) -> Optional[Tuple[str, int]]:
        settings = RedisSettings(host=sentinel[0], port=sentinel[1], username=self.config.sentinel_username,
                                 password=self.config.sentinel_password, connect_timeout=self._timeout,
                                 timeout=self._timeout)
        conn = RedisConnection.open(settings)
        try:
            reply = _ask(conn, self._timeout, "SENTINEL", "get-master-addr-by-name", self.config.service_name)
        finally:
            conn.close()
        if not reply:
            return None
        return _text(reply[0]), int(reply[1])

    def open(self, settings: RedisSettings) -> RedisConnection:
        """Open a connection to the current primary with ``settings`` (their address replaced).

        May block: up to one ``sentinel_timeout`` per sentinel asked, plus the connect.

        Raises:
            redis.ConnectionError: no sentinel answered, the primary could not be reached, or the
                address the sentinels give is still not a primary after :data:`ROLE_ATTEMPTS`.
            redis.AuthenticationError: the primary refused the credentials.
            redis.TimeoutError: connecting or the handshake took too long.
        """
        role = ""
        for attempt in range(ROLE_ATTEMPTS):
            if attempt:
                gevent.sleep(_ROLE_RETRY_DELAY * attempt)
            host, port = self.resolve()
            conn = RedisConnection.open(replace(settings, host=host, port=port))
            try:
                reply = _ask(conn, settings.timeout or self._timeout, "ROLE")
            except BaseException:
                conn.close()
                raise
            role = _text(reply[0]) if isinstance(reply, list) and reply else repr(reply)
            if role == "master":
                if self.address != (host, port):
                    if self.address is not None:
                        logger.warning("redis %s: the primary is %s:%d now (was %s:%d)", self.label, host, port,
                                       self.address[0], self.address[1])
                    self.address = (host, port)
                return conn
            conn.close()
            logger.debug("redis %s: %s:%d is a %s, not the primary; asking the sentinels again",
                         self.label, host, port, role)
        raise redis.ConnectionError("redis %s: the sentinels' primary is a %s (failover in progress?)" % (self.label, role))


__all__ = ["ROLE_ATTEMPTS", "SentinelPrimary"]
