"""The standalone server's accept path: a new connection waits for its request head with no greenlet.

pywsgi spawns a greenlet per accepted connection, builds a request handler with a buffered
reader, starts a timeout, waits, parses, builds the environ and runs its response cycle: most of
the CPU that accepting a WebSocket costs. :class:`UpgradeServer` (what
:func:`~crossws_sync.server.wsgi.make_server` builds) takes the common case apart:

1. an accepted socket is armed with a read watcher and a deadline timer, and counted as a
   pending head by the server's :class:`~crossws_sync.server.wsgi.HeadGuard` (a silent socket
   costs no greenlet; past the deadline it gets 408; the oldest is closed with 503 when too
   many are pending);
2. when it is readable, one read runs on a reusable worker greenlet
   (:mod:`crossws_sync.io.readers`); when that read holds a whole WebSocket upgrade request
   (:func:`~crossws_sync.wire.headers.parse_upgrade_head`), the application is called at once
   with a PEP 3333 environ and :class:`UpgradeResponse`, and after a ``101`` the socket goes
   to the WebSocket as it is;
3. anything else (plain HTTP, a partial or malformed head, TLS) is served by the usual pywsgi
   handler in a greenlet of its own, fed the bytes already read first.
"""
from __future__ import annotations

import io
import logging
import sys
import time
from datetime import datetime
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import unquote_to_bytes
from wsgiref.handlers import format_date_time

import gevent
from gevent import pywsgi

from ..io.readers import reader_pool
from ..wire.headers import UpgradeHead, parse_upgrade_head

logger = logging.getLogger("crossws_sync.wsgi")

#: Bytes read for a request head at once: what pywsgi's reader buffers (a head past it takes
#: the general path).
HEAD_READ_SIZE = 8192

#: What a connection gets when its head is not complete by the deadline, and when it is closed
#: to make room (the head guard's limit of pending heads); the pywsgi handler sends the same.
HEAD_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
EVICTED_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
                    b"Content-Length: 0\r\n\r\n")

_SERVER_ERROR = (b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: 21\r\n\r\nInternal Server Error")


class UpgradeResponse:
    """``start_response`` and ``write`` for one WebSocket upgrade request, straight to the socket.

    The application's status line and headers go out as given, in one ``sendall`` with the
    first body bytes. No chunked coding and no keep-alive: a ``101`` hands the connection to the
    WebSocket; any other answer (a refusal, an application's own 404) ends it, with
    ``Connection: close`` and a ``Date`` added unless given. Header names or values with a line
    break raise ``ValueError`` (response splitting).
    """

    __slots__ = ("sock", "status", "code", "headers", "headers_sent", "length")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.status: Optional[str] = None
        self.code: Optional[int] = None
        self.headers: List[Tuple[str, str]] = []
        self.headers_sent = False
        self.length = 0

    def start_response(self, status: str, headers: List[Tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        for name, value in headers:
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError("a response header holds a line break: %r" % name)
        self.code = int(status[:3])
        self.status = status
        self.headers = list(headers)
        return self.write

    def write(self, data: bytes) -> None:
        if not self.headers_sent:
            data = self.take_head() + data
        self.sock.sendall(data)
        self.length += len(data)

    def take_head(self) -> bytes:
        """The status line and headers as bytes; from now on they count as sent."""
        if self.status is None:
            raise AssertionError("write() before start_response()")
        self.headers_sent = True
        head = ["HTTP/1.1 %s\r\n" % self.status]
        head.extend("%s: %s\r\n" % pair for pair in self.headers)
        if self.code != 101:
            names = {name.lower() for name, _ in self.headers}
            if "date" not in names:
                head.append("Date: %s\r\n" % format_date_time(time.time()))
            if "connection" not in names:
                head.append("Connection: close\r\n")
        head.append("\r\n")
        return "".join(head).encode("latin-1")

    def hand_over_head(self) -> bytes:
        """:meth:`take_head` for a caller that sends the bytes itself (counted as sent)."""
        data = self.take_head()
        self.length += len(data)
        return data

    def run(self, app: Callable[..., Iterable[bytes]], environ: Dict[str, Any]) -> None:
        """Call ``app`` and send its answer. An exception from the application is logged and
        answered ``500`` when nothing was sent yet; a client that went away ends it quietly."""
        result: Any = None
        try:
            result = app(environ, self.start_response)
            for data in result:
                if data:
                    self.write(data)
            if not self.headers_sent:
                self.write(b"")
        except OSError:
            pass
        except Exception:
            logger.exception("the WSGI application failed on a WebSocket upgrade request for %r",
                             environ.get("PATH_INFO"))
            if not self.headers_sent:
                try:
                    self.sock.sendall(_SERVER_ERROR)
                except OSError:
                    pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


def upgrade_environ(base: Dict[str, Any], head: UpgradeHead, address: Any) -> Dict[str, Any]:
    """The WSGI environ of an upgrade request, as pywsgi builds it: ``base`` (the server's
    environ) plus the request's CGI variables and its headers as ``HTTP_*`` keys (names with an
    underscore dropped, repeated headers joined with ``,``, cookies with ``; ``)."""
    target = head.target
    path, _, query = target.partition("?")
    environ = dict(base)
    environ["REQUEST_METHOD"] = "GET"
    environ["SCRIPT_NAME"] = ""
    environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
    environ["QUERY_STRING"] = query
    environ["SERVER_PROTOCOL"] = "HTTP/1.1"
    if isinstance(address, tuple):
        environ["REMOTE_ADDR"] = str(address[0])
        environ["REMOTE_PORT"] = str(address[1])
    for name, value in head.headers.items():
        if "_" in name:
            continue
        key = "HTTP_" + name.replace("-", "_").upper()
        if key in environ:
            environ[key] += ("; " if "COOKIE" in key else ",") + value
        else:
            environ[key] = value
    environ["wsgi.input"] = io.BytesIO()
    environ["wsgi.input_terminated"] = True
    return environ


class _Prefixed(io.RawIOBase):
    """A socket's byte stream with bytes already read from it put back in front."""

    def __init__(self, prefix: bytes, sock: Any) -> None:
        super().__init__()
        self._prefix = memoryview(prefix)
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        return int(self._sock.recv_into(buffer))


class _FirstRead:
    """An accepted connection waiting for its request head: a read watcher, a deadline timer and
    an entry in the head guard; no greenlet until it is readable."""

    __slots__ = ("server", "sock", "address", "watcher", "timer", "deadline")

    def __init__(self, server: "UpgradeServer", sock: Any, address: Any) -> None:
        self.server = server
        self.sock = sock
        self.address = address
        self.watcher: Any = None
        self.timer: Any = None
        self.deadline = 0.0

    def arm(self) -> None:
        guard = self.server.crossws_head_guard
        guard.enter_waiting(self)
        self.deadline = time.monotonic() + guard.timeout
        loop = self.server.loop
        self.watcher = loop.io(self.sock.fileno(), 1)
        self.watcher.start(self._readable)
        self.timer = loop.timer(guard.timeout)
        self.timer.start(self._timed_out)

    def _disarm(self) -> bool:
        """Stop waiting; False when that was done already (timed out, evicted or read)."""
        watcher, timer = self.watcher, self.timer
        if watcher is None:
            return False
        self.watcher = self.timer = None
        watcher.stop()
        watcher.close()
        timer.stop()
        timer.close()
        self.server.crossws_head_guard.leave_waiting(self)
        return True

    def _readable(self) -> None:  # in the hub
        if self._disarm():
            reader_pool().run(_serve_first_read, self)

    def _timed_out(self) -> None:  # in the hub
        if self._disarm():
            self.server.crossws_head_guard.count("head_timeouts")
            self.refuse(HEAD_TIMEOUT_RESPONSE)

    def evict(self) -> None:
        """Close this connection to make room (the head guard's limit of pending heads)."""
        if self._disarm():
            self.refuse(EVICTED_RESPONSE)

    def refuse(self, response: bytes) -> None:
        """Send ``response`` if the socket takes it at once (never waits), then close."""
        sock = self.sock
        try:
            sock.settimeout(0.0)
            sock.send(response)
        except OSError:
            pass
        sock.close()


def _serve_first_read(first: _FirstRead) -> None:
    """On a worker greenlet, once the connection is readable: read, then serve the upgrade at
    once or hand the connection to the general handler."""
    sock = first.sock
    try:
        sock.settimeout(max(0.001, first.deadline - time.monotonic()))  # a spurious wake-up waits no longer
        try:
            data = sock.recv(HEAD_READ_SIZE)
        finally:
            sock.settimeout(None)
    except OSError:  # socket.timeout included: no head by the deadline
        sock.close()
        return
    if not data:
        sock.close()
        return
    try:
        _serve_head(first, data)
    except Exception:  # a bug of ours: log it, never leak the socket
        logger.exception("serving a new connection from %r failed", first.address)
        sock.close()


def _serve_head(first: _FirstRead, data: bytes) -> None:
    server, sock, address = first.server, first.sock, first.address
    head = parse_upgrade_head(data, server.crossws_head_guard.max_header_bytes)
    if head is None or len(data) != head.length:
        pool = server.pool  # gunicorn's: its worker_connections bound the HTTP handlers
        (pool.spawn if pool is not None else gevent.spawn)(server.handle_with_prefix, sock, address, data,
                                                            first.deadline)
        return
    started = time.time()
    environ = server.upgrade_environ(head, sock, address)
    response = UpgradeResponse(sock)
    environ["crossws.hold_response"] = response.hand_over_head
    response.run(server.application, environ)
    server.log_upgrade(head, address, environ, response, started)
    if response.code != 101 or not response.headers_sent:
        sock.close()  # a refusal, or a 101 that was never sent: the connection ends here


class UpgradeServer(pywsgi.WSGIServer):  # type: ignore[misc]  # gevent ships no types
    """gevent's WSGI server with the accept path of this module for plain (non-TLS) sockets.

    ``crossws_head_guard`` is the :class:`~crossws_sync.server.wsgi.HeadGuard` whose limits
    apply (set by :func:`~crossws_sync.server.wsgi.make_server`)."""

    crossws_head_guard: Any = None

    def do_handle(self, *args: Any) -> None:
        if self.ssl_enabled or self.crossws_head_guard is None:
            super().do_handle(*args)
            return
        sock, address = args
        _FirstRead(self, sock, address).arm()

    def handle_with_prefix(self, sock: Any, address: Any, prefix: bytes, head_deadline: float) -> None:
        """Serve a connection with pywsgi's handler, ``prefix`` (already read) first; its first
        request head must be complete by ``head_deadline`` (``time.monotonic()``), the deadline
        that started at the accept."""
        try:
            handler = self.handler_class(sock, address, self, io.BufferedReader(_Prefixed(prefix, sock)))
            handler.crossws_head_deadline = head_deadline
            handler.handle()
        finally:
            sock.close()

    def upgrade_environ(self, head: UpgradeHead, sock: Any, address: Any) -> Dict[str, Any]:
        """The environ of an upgrade request served here (:func:`upgrade_environ` with the
        server's base environ, and the socket for the adapter, which keeps it after a 101)."""
        environ = upgrade_environ(self.get_environ(), head, address)
        environ["crossws.socket"] = sock
        environ["crossws.detach"] = lambda: sock
        return environ

    def log_upgrade(self, head: UpgradeHead, address: Any, environ: Dict[str, Any], response: UpgradeResponse,
                    started: float) -> None:
        """pywsgi's access line for an upgrade served here, when the access log wants it."""
        log = self.log
        enabled = getattr(log, "enabled", None)
        if log is None or (enabled is not None and not enabled()):
            return
        try:
            client = address[0] if isinstance(address, tuple) else address
            log.write('%s - - [%s] "%s" %s %s %.6f\n' % (
                client or "-", datetime.now().replace(microsecond=0), head.requestline,
                (response.status or "000").split()[0], response.length or "-", time.time() - started))
        except Exception:  # a broken log must not break the connection
            logger.debug("access log failed", exc_info=sys.exc_info())


__all__ = ["EVICTED_RESPONSE", "HEAD_READ_SIZE", "HEAD_TIMEOUT_RESPONSE", "UpgradeResponse", "UpgradeServer",
           "upgrade_environ"]
