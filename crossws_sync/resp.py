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

from .sockets import os_socket, read_waiter

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
        self._reader = hiredis.Reader(replyError=redis.ResponseError)
        self._buffer = bytearray(_READ_SIZE)
        # Plain sockets: wait on gevent's read watcher, then one non-blocking read (see
        # sockets.py); TLS sockets read through their wrapper.
        raw = os_socket(sock)
        self._wait = read_waiter(sock)
        self._recv_into = raw.recv_into if raw is not None and self._wait is not None else sock.recv_into
        self._more = False

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next reply, or :data:`TIMED_OUT`.

        Args:
            timeout: seconds to wait for data; ``None``: the connection's socket timeout. A
                reply that arrived only in part stays buffered for the next call.

        Raises:
            redis.ConnectionError: the server closed the connection.
            OSError: the connection failed.
        """
        reply = self._reader.gets()
        if reply is not False:
            return reply
        sock = self._sock
        if timeout is not None:
            sock.settimeout(timeout)
        try:
            while True:
                try:
                    if self._wait is not None and not self._more:
                        self._wait()  # raises socket.timeout after the timeout
                    count = self._recv_into(self._buffer)
                except _stdsocket.timeout:
                    return TIMED_OUT
                except BlockingIOError:  # woken without data after all
                    self._more = False
                    continue
                if not count:
                    raise redis.ConnectionError("connection closed by the server")
                self._more = count == _READ_SIZE
                self._reader.feed(self._buffer, 0, count)  # type: ignore[arg-type]  # any buffer works
                reply = self._reader.gets()
                if reply is not False:
                    return reply
        finally:
            if timeout is not None:
                sock.settimeout(self._timeout)  # writes on this socket keep the command timeout

    def ready(self) -> Any:
        """The next reply already buffered, or ``False`` (never reads the socket)."""
        return self._reader.gets()


__all__ = ["ReplyStream", "TIMED_OUT"]
