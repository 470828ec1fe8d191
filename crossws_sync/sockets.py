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


def read_waiter(sock: Any) -> Optional[Callable[[], None]]:
    """A function that blocks the calling greenlet until ``sock`` is readable.

    It honours the socket's timeout (raises ``socket.timeout``) and raises ``OSError`` when
    the socket is closed meanwhile. ``None`` when ``sock`` is not a plain gevent socket.
    """
    wait = getattr(sock, "_wait", None)
    read_event = getattr(sock, "_read_event", None)
    if wait is None or read_event is None or os_socket(sock) is None:
        return None

    def wait_readable() -> None:
        wait(read_event)

    return wait_readable


__all__ = ["is_tls", "os_socket", "read_waiter"]
