"""What the hot paths need from a gevent socket beyond its public API, in one place.

gevent's socket wraps a non-blocking OS socket (``_sock``) and waits on its own libev watcher
(``_read_event``, ``_wait``) whenever a call would block. Two things cost a syscall per message
with the public API alone:

* ``send`` from the hub or from a loop callback must never yield: the OS socket's ``send``
  returns what the kernel took at once (``BlockingIOError`` when nothing);
* gevent's ``recv`` tries first and waits after an ``EAGAIN``: a peer that waits for our
  answer has sent nothing yet, so every read after the last message fails once. Waiting on the
  watcher first and then reading once avoids it.

TLS sockets are left alone: their bytes must go through the wrapper, and decrypted data may be
buffered inside it while the OS socket is not readable.
"""
from __future__ import annotations

import functools
import ssl as _stdssl
from typing import Any, Callable, Optional

import gevent.ssl


def is_tls(sock: Any) -> bool:
    """Whether ``sock`` is a TLS socket (gevent's or the standard library's)."""
    return isinstance(sock, (_stdssl.SSLSocket, gevent.ssl.SSLSocket))


def os_socket(sock: Any) -> Optional[Any]:
    """The non-blocking OS socket under a plain gevent socket, else ``None`` (TLS, other types)."""
    if is_tls(sock):
        return None
    return getattr(sock, "_sock", None)


class SocketReader:
    """Reads ``sock`` the cheap way: wait on gevent's read watcher, then one non-blocking read.

    After a read that filled the whole buffer the next read is tried at once (more is probably
    there). On a TLS socket, or anything that is not a plain gevent socket, it is the socket's
    own ``recv`` / ``recv_into``. Either way a socket timeout raises ``socket.timeout`` and a
    socket closed meanwhile raises ``OSError``; ``b""`` / ``0`` means the peer closed.
    """

    __slots__ = ("_wait", "_recv", "_recv_into", "_more")

    def __init__(self, sock: Any) -> None:
        raw = os_socket(sock)
        wait = getattr(sock, "_wait", None)  # gevent's wait on one of the socket's watchers
        read_event = getattr(sock, "_read_event", None)
        self._wait: Optional[Callable[[], None]] = None
        if raw is not None and wait is not None and read_event is not None:
            # Honours the socket's timeout (socket.timeout) and raises OSError if it is closed.
            self._wait = functools.partial(wait, read_event)
            self._recv, self._recv_into = raw.recv, raw.recv_into
        else:
            self._recv, self._recv_into = sock.recv, sock.recv_into
        self._more = False

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes, once some arrived."""
        data: bytes = self._read(self._recv, size)
        self._more = len(data) == size
        return data

    def recv_into(self, buffer: bytearray) -> int:
        """Fill ``buffer`` with what arrived (at least one byte, or 0 when the peer closed)."""
        count: int = self._read(self._recv_into, buffer)
        self._more = count == len(buffer)
        return count

    def _read(self, read: Callable[[Any], Any], arg: Any) -> Any:
        while True:
            if self._wait is not None and not self._more:
                self._wait()
            try:
                return read(arg)
            except BlockingIOError:  # woken without data after all
                self._more = False


__all__ = ["SocketReader", "is_tls", "os_socket"]
