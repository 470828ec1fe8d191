"""Redis replies read straight from a connection's socket with a hiredis reader.

redis-py connects, authenticates and selects the database; after that the bus reads its two
connections itself: one ``recv_into`` takes every reply that has arrived and hiredis parses
them one by one, without redis-py's per-reply bookkeeping (error-context strings, timeout
swaps), which cost more than the messages themselves on the bus's hot paths.
"""
from __future__ import annotations

import socket as _stdsocket
from typing import Any, Optional

import hiredis
import redis

from ..io.sockets import SocketReader

_READ_SIZE = 65536

#: Returned by :meth:`ReplyStream.next` when no whole reply arrived within the timeout.
TIMED_OUT = object()


class ReplyStream:
    """The replies arriving on one connected redis-py ``Connection``.

    Error replies come back as ``redis.ResponseError`` instances (not raised), so a refused
    command does not lose its place in the stream.
    """

    def __init__(self, conn: Any) -> None:
        sock = self._sock = conn._sock
        self._timeout = sock.gettimeout()
        self._hiredis = hiredis.Reader(replyError=redis.ResponseError)
        self._buffer = bytearray(_READ_SIZE)
        self._reader = SocketReader(sock)  # waits, then reads (see sockets.py)

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next reply, or :data:`TIMED_OUT`.

        Args:
            timeout: seconds to wait for data; ``None``: the connection's socket timeout. A
                reply that arrived only in part stays buffered for the next call.

        Raises:
            redis.ConnectionError: the server closed the connection.
            OSError: the connection failed.
        """
        reply = self._hiredis.gets()
        if reply is not False:
            return reply
        sock = self._sock
        if timeout is not None:
            sock.settimeout(timeout)
        try:
            while True:
                try:
                    count = self._reader.recv_into(self._buffer)  # the socket's timeout applies
                except _stdsocket.timeout:
                    return TIMED_OUT
                if not count:
                    raise redis.ConnectionError("connection closed by the server")
                self._hiredis.feed(self._buffer, 0, count)  # type: ignore[arg-type]  # any buffer works
                reply = self._hiredis.gets()
                if reply is not False:
                    return reply
        finally:
            if timeout is not None:
                sock.settimeout(self._timeout)  # writes on this socket keep the command timeout

    def ready(self) -> Any:
        """The next reply already buffered, or ``False`` (never reads the socket)."""
        return self._hiredis.gets()


__all__ = ["ReplyStream", "TIMED_OUT"]
