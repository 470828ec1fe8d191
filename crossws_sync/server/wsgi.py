"""WSGI glue: the pywsgi handler, the middleware that mounts the adapter in an app, the standalone server.

Three ways to serve (all end in :meth:`WebSocketService.handle_upgrade`):

* standalone: :func:`make_server` builds an :class:`~crossws_sync.server.accept.UpgradeServer`
  (gevent's ``pywsgi.WSGIServer`` with a greenlet-free accept path for upgrades) with
  :class:`WebSocketHandler` for everything else;
* mounted: :class:`WebSocketMiddleware` wraps any WSGI app (Flask: ``app.wsgi_app =
  adapter.wsgi_middleware(app.wsgi_app, path="/ws")``); upgrade requests on ``path`` are taken
  before the app's router sees them, so Werkzeug's ``websocket=True`` pitfall does not apply;
* gunicorn: ``-k crossws_sync.server.gunicorn.GeventWebSocketWorker`` (see :mod:`crossws_sync.server.gunicorn`).

Auth runs before the ``101`` response, so a rejected request gets a plain HTTP status.
"""
from __future__ import annotations

import io
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional

import gevent
import gevent.socket
import gevent.ssl
from gevent import pywsgi

from ..io.sockets import is_tls
from ..wire.headers import RequestHeaders
from .accept import EVICTED_RESPONSE, HEAD_TIMEOUT_RESPONSE, UpgradeResponse, UpgradeServer

if TYPE_CHECKING:
    from .service import WebSocketService

logger = logging.getLogger("crossws_sync.wsgi")

WSGIApp = Callable[[Dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def is_websocket_request(environ: Dict[str, Any]) -> bool:
    """Whether the request asks for a WebSocket upgrade (or was upgraded by gevent-websocket)."""
    return environ.get("HTTP_UPGRADE", "").lower() == "websocket" or environ.get("wsgi.websocket") is not None


class _HeadTimeout(Exception):
    """The request head did not arrive within the handshake deadline."""


class _HeadTooLarge(ValueError):
    """The request head passed the header-bytes cap."""


class _Evicted(Exception):
    """The oldest unfinished request head, closed to make room for a new connection."""


_RESPONSES = {
    _HeadTimeout: HEAD_TIMEOUT_RESPONSE,
    _HeadTooLarge: b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    _Evicted: EVICTED_RESPONSE,
}


class HeadGuard:
    """Bounds what a connection may cost before its request head is complete.

    * ``timeout``: seconds from the start of a request line to the end of its headers
      (also the idle time allowed between keep-alive requests); past it: 408 and close.
    * ``max_header_bytes``: request line excluded, the header block may not pass this; past it:
      431 (RFC 6585 §5) and close, without buffering the rest.
    * ``max_pending``: connections whose head is unfinished; a new one past it closes the
      oldest unfinished one (503), so slow or silent sockets cannot lock real clients out.

    One guard per server; counts are in :attr:`stats`.
    """

    def __init__(self, timeout: float = 10.0, max_header_bytes: int = 32768, max_pending: int = 1000) -> None:
        self.timeout = timeout
        self.max_header_bytes = max_header_bytes
        self.max_pending = max_pending
        self.pending: Dict[Any, float] = {}  # greenlet -> start; insertion order = age
        self.stats: Dict[str, int] = {"head_timeouts": 0, "heads_too_large": 0, "evicted": 0}
        self._logged_at = 0.0

    def configure_like(self, other: "HeadGuard") -> None:
        """Take ``other``'s limits (counts and pending heads stay)."""
        self.timeout = other.timeout
        self.max_header_bytes = other.max_header_bytes
        self.max_pending = other.max_pending

    def enter(self) -> None:
        """The current greenlet starts reading a request head."""
        self.enter_waiting(gevent.getcurrent())

    def leave(self) -> None:
        """The current greenlet finished (or gave up) reading its request head."""
        self.pending.pop(gevent.getcurrent(), None)

    def enter_waiting(self, key: Any) -> None:
        """``key`` starts waiting for a request head: a greenlet (evicted by raising in it) or
        an object with an ``evict()`` method (an accepted socket waiting with no greenlet)."""
        pending = self.pending
        while len(pending) >= self.max_pending:
            oldest = next(iter(pending))
            del pending[oldest]
            self.count("evicted")
            evict = getattr(oldest, "evict", None)
            if evict is not None:
                evict()
            else:
                gevent.kill(oldest, _Evicted)  # raised where it waits; does not block us
        pending[key] = time.monotonic()

    def leave_waiting(self, key: Any) -> None:
        """``key`` got its request head, or gave up."""
        self.pending.pop(key, None)

    def count(self, what: str) -> None:
        self.stats[what] += 1
        now = time.monotonic()
        if now - self._logged_at >= 10.0:  # a flood logs one line per 10 s
            self._logged_at = now
            logger.warning("unfinished HTTP request heads: %s (pending now %d, limits %.1fs / %d bytes / %d)",
                           ", ".join("%s %d" % item for item in self.stats.items()), len(self.pending),
                           self.timeout, self.max_header_bytes, self.max_pending)


#: Used by servers that were not given a guard of their own (the gunicorn worker).
DEFAULT_HEAD_GUARD = HeadGuard()


class UpgradeHandlerMixin:
    """pywsgi handler behaviour shared by the standalone server and the gunicorn worker.

    * exposes the raw socket to the app (``environ["crossws.socket"]``);
    * offers ``environ["crossws.detach"]()``: after the 101 the adapter moves the connection to
      a socket object of its own and serves it from the event loop, so this handler (its
      environ, HTTP reader buffer and parsed headers, about 12 KiB) is freed instead of living as
      long as the WebSocket;
    * answers ``GET`` requests with ``Upgrade: websocket`` through a lean response cycle (see
      :meth:`_respond_to_upgrade`), whatever application is mounted;
    * ends the HTTP keep-alive loop after a 101 without touching the socket again.
    """

    socket: Any
    code: Any
    close_connection: bool
    server: Any
    rfile: Any
    command: str
    headers: Any
    environ: Any
    application: Any
    status: Any
    headers_sent: bool
    response_headers: Any
    response_length: int
    time_finish: float
    _head_timer: Optional[gevent.Timeout] = None

    # Request heads: deadline, size cap, pending bound ------------------------------------------

    def _guard(self) -> HeadGuard:
        return getattr(self.server, "crossws_head_guard", None) or DEFAULT_HEAD_GUARD

    def handle_one_request(self) -> Any:
        guard = self._guard()
        guard.enter()
        timeout = guard.timeout
        deadline = self.__dict__.pop("crossws_head_deadline", None)  # set by the accept path
        if deadline is not None:
            timeout = max(0.001, deadline - time.monotonic())
        self._head_timer = gevent.Timeout.start_new(timeout, _HeadTimeout())
        try:
            return super().handle_one_request()  # type: ignore[misc]
        except (_HeadTimeout, _Evicted) as exc:  # raised while waiting for the request line
            return self._head_failed(exc)
        finally:
            self._end_head()

    def _end_head(self) -> None:
        timer, self._head_timer = self._head_timer, None
        if timer is not None:
            timer.close()
            self._guard().leave()

    def read_request(self, raw_requestline: str) -> Any:
        guard = self._guard()
        limit = guard.max_header_bytes
        block = bytearray()
        while True:
            line = self.rfile.readline(limit - len(block) + 1)
            block += line
            if len(block) > limit:
                raise _HeadTooLarge("request headers over %d bytes" % limit)
            if line in (b"\r\n", b"\n", b""):
                break
            if b":" not in line and line[:1] not in (b" ", b"\t"):
                raise ValueError("a header line without a colon")  # 400
        self._end_head()  # the head is complete: the application may take its time
        stream, self.rfile = self.rfile, io.BytesIO(bytes(block))
        try:
            return super().read_request(raw_requestline)  # type: ignore[misc]
        finally:
            self.rfile = stream

    def MessageClass(self, fp: Any, *args: Any) -> RequestHeaders:  # noqa: N802 - pywsgi's hook name
        # pywsgi's header parser is the e-mail package's (a tenth of an accepted WebSocket's
        # CPU); read_request above hands it the whole, bounded block in a BytesIO.
        return RequestHeaders.parse(fp.read())

    def _handle_client_error(self, ex: Exception) -> Any:
        # pywsgi's documented hook for invalid client input (see WSGIHandler.handle_one_request).
        if isinstance(ex, (_HeadTimeout, _HeadTooLarge, _Evicted)):
            return self._head_failed(ex)
        return super()._handle_client_error(ex)  # type: ignore[misc]

    def _head_failed(self, exc: Exception) -> Any:
        guard = self._guard()
        if isinstance(exc, _HeadTimeout):
            guard.count("head_timeouts")
        elif isinstance(exc, _HeadTooLarge):
            guard.count("heads_too_large")
        self.close_connection = True
        status = {_HeadTimeout: "408", _HeadTooLarge: "431", _Evicted: "503"}[type(exc)]
        return (status, _RESPONSES[type(exc)])

    def get_environ(self) -> Dict[str, Any]:
        environ: Dict[str, Any] = super().get_environ()  # type: ignore[misc]  # a mixin of pywsgi's handler
        environ["crossws.socket"] = self.socket
        environ["crossws.detach"] = self._detach_socket
        return environ

    # Upgrade requests: a lean response cycle ----------------------------------------------------

    def handle_one_response(self) -> None:
        if self.command == "GET" and is_websocket_request(self.environ):
            self._respond_to_upgrade()
        else:
            super().handle_one_response()  # type: ignore[misc]

    def _respond_to_upgrade(self) -> None:
        """pywsgi's response cycle cut to what a WebSocket upgrade request needs
        (:class:`~crossws_sync.server.accept.UpgradeResponse`): the general one cost a third of
        the server's CPU per accepted connection. The connection is never reused for HTTP."""
        self.close_connection = True
        response = UpgradeResponse(self.socket)
        try:
            response.run(self.application, self.environ)
        finally:
            self.status, self.code = response.status, response.code
            self.response_headers, self.response_length = response.headers, response.length
            self.headers_sent = response.headers_sent
            self.time_finish = time.time()
            self.log_request()  # type: ignore[attr-defined]
        if self.code == 101 and getattr(self, "_crossws_detached", False):
            # The connection lives on the adapter's socket object now: pywsgi's end-of-connection
            # handling must not touch the old one (handle() releases what is left of it).
            self._crossws_request_socket = (self.socket, self.rfile)
            self.socket = None

    def _detach_socket(self) -> Any:
        """After the ``101``: move the connection to a new socket object on the same descriptor
        (``socket.detach``), so that the server's close of the accepted socket object, once this
        handler returns, leaves the connection open. ``None`` for TLS (its session lives in the
        socket object)."""
        sock = self.socket
        if sock is None or is_tls(sock):
            return None
        family, kind, proto = sock.family, sock.type, sock.proto
        moved = gevent.socket.socket(family, kind, proto, fileno=sock.detach())
        self._crossws_detached = True
        return moved

    def handle(self) -> None:
        try:
            super().handle()  # type: ignore[misc]
        finally:
            self._release_request_socket()

    def _release_request_socket(self) -> None:
        """After an upgrade moved the connection to a socket object of its own: close the HTTP
        reader (its buffer) and the old, detached socket object (which closes no descriptor).
        The environ refers back to this handler (``crossws.detach``); breaking that cycle lets
        reference counting free the handler, its environ and its reader at once instead of
        leaving them to the cyclic GC."""
        request_socket = self.__dict__.pop("_crossws_request_socket", None)
        environ = getattr(self, "environ", None)
        if isinstance(environ, dict):
            environ.pop("crossws.detach", None)
        if request_socket is None:
            return
        sock, rfile = request_socket
        for stream in (rfile, sock):
            try:
                stream.close()
            except OSError:
                pass


class WebSocketHandler(UpgradeHandlerMixin, pywsgi.WSGIHandler):
    """pywsgi handler for crossws_sync (standalone servers and ``pywsgi.WSGIServer`` users)."""

    def log_request(self) -> None:
        # pywsgi formats every access line (a datetime and a string per request) before the
        # log discards it; ours is the crossws_sync.access logger at DEBUG: format only if on.
        log = getattr(self.server, "log", None)
        if isinstance(log, _AccessLog) and not log.enabled():
            return
        super().log_request()


def _not_found(environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
    body = b"Not Found"
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _upgrade_required(environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
    body = b"This endpoint speaks WebSocket"
    start_response("426 Upgrade Required", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                                            ("Upgrade", "websocket")])
    return [body]


class WebSocketMiddleware:
    """WSGI middleware: WebSocket upgrades on ``path`` go to the adapter, everything else to ``app``.

    Args:
        service: the adapter's WebSocket service.
        app: the wrapped WSGI app (``None``: 426 for plain HTTP on ``path``, 404 elsewhere).
        path: the WebSocket path (``None`` accepts upgrades on every path, like ``ws``'s ``{port}`` mode).
        static_files: ``{url_path: (content_type, bytes)}`` served for GET (the browser client).
        endpoints: ``{url_path: wsgi_app}`` taken before everything else on exactly that path
            (the metrics and the probes); the dict is read at each request, so endpoints added
            later are served.
    """

    def __init__(self, service: "WebSocketService", app: Optional[WSGIApp] = None, path: Optional[str] = None,
                 static_files: Optional[Dict[str, Any]] = None, endpoints: Optional[Dict[str, WSGIApp]] = None) -> None:
        self.service = service
        self.app = app
        self.path = path
        self.static_files = dict(static_files or {})
        self.endpoints: Dict[str, WSGIApp] = endpoints if endpoints is not None else {}

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        endpoint = self.endpoints.get(path) if self.endpoints else None
        if endpoint is not None and not is_websocket_request(environ):
            return endpoint(environ, start_response)
        if self.path is None or path == self.path:
            if is_websocket_request(environ):
                return self.service.handle_upgrade(environ, start_response)
        static = self.static_files.get(path)
        if static is not None and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            content_type, body = static
            start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                      ("Cache-Control", "max-age=300")])
            return [body] if environ.get("REQUEST_METHOD") == "GET" else []
        if self.app is not None:
            return self.app(environ, start_response)
        if self.path is not None and path == self.path:
            return _upgrade_required(environ, start_response)
        return _not_found(environ, start_response) if self.path is not None else _upgrade_required(environ, start_response)


class _AccessLog:
    """Routes pywsgi's access log lines to the ``crossws_sync.access`` logger at DEBUG."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("crossws_sync.access")

    def enabled(self) -> bool:
        """Whether access lines are wanted (the logger is on at DEBUG)."""
        return self._logger.isEnabledFor(logging.DEBUG)

    def write(self, line: str) -> None:
        self._logger.debug("%s", line.rstrip())


#: Listen backlog when none is given: Node's ``server.listen`` default (gevent's is 128). A burst
#: of connects past the backlog loses SYNs, which the clients resend after a second (W10's p99).
DEFAULT_BACKLOG = 511


def make_server(host: str, port: int, app: WSGIApp, *, ssl_args: Optional[Dict[str, Any]] = None,
                backlog: Optional[int] = None, head_guard: Optional[HeadGuard] = None) -> UpgradeServer:
    """Build (without starting) a gevent WSGI server that serves ``app`` with WebSocket support
    (an :class:`~crossws_sync.server.accept.UpgradeServer`: upgrade requests on plain sockets
    take its greenlet-free accept path).

    ``ssl_args`` is ``{"ssl_context": ...}`` or ``{"certfile": ..., "keyfile": ...}``; a
    certificate file is loaded into a default server context here (pywsgi would build one with
    the deprecated ``PROTOCOL_TLS``).
    """
    kwargs: Dict[str, Any] = dict(ssl_args or {})
    if "certfile" in kwargs:
        context = gevent.ssl.create_default_context(gevent.ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(kwargs.pop("certfile"), kwargs.pop("keyfile", None))
        kwargs["ssl_context"] = context
    kwargs["backlog"] = DEFAULT_BACKLOG if backlog is None else backlog
    server = UpgradeServer((host, port), app, handler_class=WebSocketHandler, log=_AccessLog(),
                               error_log=logging.getLogger("crossws_sync.wsgi"), **kwargs)
    server.crossws_head_guard = head_guard or HeadGuard()
    return server
