"""One connection of the client: connect, TLS, the opening handshake, then read and write.

A driver around the sans-I/O protocol :class:`~crossws_sync.wire.websocket.WebSocketProtocol`
(shared with the server): its greenlet feeds it the bytes read and writes what it answers.
"""
from __future__ import annotations

import logging
import socket as _stdsocket
from typing import Any, Callable, List, Optional, Protocol

import gevent
import gevent.lock
import gevent.socket
import gevent.ssl

from ..errors import ConnectTimeoutError, HandshakeError
from ..io.sockets import SocketIO
from ..wire import frames
from ..wire.deflate import PerMessageDeflate, accept, client_offer
from ..wire.handshake import MAX_HANDSHAKE_BYTES, check_handshake_response, handshake_request
from ..wire.websocket import BINARY, CLOSED, CLOSING, CONNECTING, OPEN, PING, TEXT, WebSocketProtocol
from .acks import Pending
from .options import ClientOptions

logger = logging.getLogger("crossws_sync.client")

#: Largest message accepted from the server (the original's ``ws`` allows 100 MiB).
MAX_MESSAGE_SIZE = 64 << 20
_RECV_SIZE = 65536


class Owner(Protocol):
    """What a connection reports to, from its greenlet (user code must not run there)."""

    def conn_open(self, conn: "Connection") -> None:
        """The WebSocket is open."""

    def conn_failed(self, conn: "Connection", error: Exception) -> None:
        """The attempt failed before the WebSocket was open (the connection is over)."""

    def conn_text(self, conn: "Connection", text: str) -> None:
        """A text message."""

    def conn_binary(self, conn: "Connection", data: bytes) -> None:
        """A binary message."""

    def conn_closed(self, conn: "Connection", code: int, reason: str, was_clean: bool,
                    error: Optional[BaseException]) -> None:
        """The open WebSocket is closed (the connection is over)."""


class Connection:
    """One connection attempt and, once upgraded, the WebSocket it became.

    Runs in one greenlet (:meth:`run`): connect, handshake, then read until the end. Reports to
    its :class:`Owner` from that greenlet; the owner ignores a connection it has ``detached``.
    Any greenlet may :meth:`send` (one writer at a time, behind a lock).
    """

    def __init__(self, owner: Owner, config: ClientOptions, *, resource: Optional[str] = None) -> None:
        self.owner = owner
        self.config = config
        #: the request target (the URL's path and query, plus what this attempt adds)
        self.resource = resource if resource is not None else config.target.resource
        self.state = CONNECTING
        self.detached = False
        self.sock: Optional[gevent.socket.socket] = None
        self.proto = WebSocketProtocol(client=True, max_message_size=MAX_MESSAGE_SIZE)
        self.write_lock = gevent.lock.Semaphore()
        self._raw_send: Optional[Callable[[bytes], int]] = None  # set once open (not with TLS)
        self._io: Optional[SocketIO] = None
        self.pending: Pending = {}
        self.greenlet: Optional[gevent.Greenlet] = None
        self._close_timer: Optional[gevent.Greenlet] = None

    # Writing

    def send(self, data: bytes) -> bool:
        """Write one encoded frame; ``False`` when the connection is not open (or just broke)."""
        if self.state != OPEN:
            return False
        data = self.proto.prepare(data)  # compressed when negotiated, else the same bytes
        raw = self._raw_send
        if raw is not None and not self.write_lock.locked():
            # Nobody is writing: one non-blocking send() on the OS socket (it cannot yield, so
            # nothing can interleave); what the kernel does not take is written under the lock.
            try:
                sent = raw(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                logger.debug("write failed: %s", exc)
                self.abort()
                return False
            if sent == len(data):
                return True
            data = data[sent:]
        with self.write_lock:
            if self.state != OPEN or self.sock is None:
                return False
            return self._write(data)

    def _write(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)  # type: ignore[union-attr]
            return True
        except OSError as exc:
            logger.debug("write failed: %s", exc)
            self.abort()
            return False
        except BaseException:
            # Killed mid-frame: the stream is corrupt from here on, drop the connection.
            self.abort()
            raise

    def start_close(self, code: int, reason: str) -> None:
        """Begin the closing handshake without blocking; the socket is dropped at the latest
        ``pong_timeout`` seconds later if the server does not answer."""
        if self.state != OPEN:
            return
        self.state = CLOSING
        gevent.spawn(self._send_control, self.proto.send_close(code, reason))
        self._close_timer = gevent.spawn_later(self.config.pong_timeout, self.abort)

    def _send_control(self, frame: bytes) -> None:
        """Write a frame of the protocol's own (a close) also while closing, behind any write."""
        if not self.write_lock.acquire(timeout=self.config.pong_timeout):
            self.abort()
            return
        try:
            if self.sock is not None:
                self._write(frame)
        finally:
            self.write_lock.release()

    def abort(self) -> None:
        """Cut the TCP connection; the reading greenlet then finishes the connection."""
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(_stdsocket.SHUT_RDWR)
            except OSError:
                pass

    def cancel_attempt(self) -> None:
        """Stop a connection attempt that is still connecting (its socket is closed)."""
        if self.greenlet is not None and self.state == CONNECTING:
            self.greenlet.kill(block=False)

    # The connection's greenlet

    def run(self) -> None:
        """Connect within ``connect_timeout``, upgrade, then read until the connection ends."""
        try:
            try:
                with gevent.Timeout(self.config.connect_timeout,
                                    ConnectTimeoutError("no WebSocket connection to %s within %gs"
                                                        % (self.config.url, self.config.connect_timeout))):
                    leftover = self._open_and_upgrade()
            except Exception as exc:
                self.state = CLOSED
                self._close_socket()
                self.owner.conn_failed(self, exc)
                return
            self.state = OPEN
            self.owner.conn_open(self)
            self._read(leftover)
        finally:
            self._close_socket()

    def _open_and_upgrade(self) -> bytes:
        target = self.config.target
        last_error: Optional[Exception] = None
        infos = gevent.socket.getaddrinfo(target.host, target.port, 0, _stdsocket.SOCK_STREAM)
        for family, socktype, proto, _, address in infos:
            self.sock = gevent.socket.socket(family, socktype, proto)
            try:
                self.sock.connect(address)
                break
            except OSError as exc:
                last_error = exc
                self._close_socket()
        if self.sock is None:
            raise last_error or OSError("cannot resolve %s" % target.host)
        self.sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        if target.secure:
            context = self.config.ssl_context or gevent.ssl.create_default_context()
            self.sock = context.wrap_socket(self.sock, server_hostname=target.host)
        key = frames.new_client_key()
        headers = self.config.headers
        deflate_options = self.config.per_message_deflate
        if deflate_options is not None:
            headers = headers + (("Sec-WebSocket-Extensions", client_offer(deflate_options)),)
        self.sock.sendall(handshake_request(self.resource, target.host_header, key, headers))
        buffer: bytes = b""
        while True:
            chunk: bytes = self.sock.recv(4096)
            if not chunk:
                raise HandshakeError("connection closed during the WebSocket handshake")
            buffer += chunk
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buffer) > MAX_HANDSHAKE_BYTES:
                raise HandshakeError("oversized answer to the WebSocket upgrade")
        answer = check_handshake_response(buffer[:end], key, extensions_offered=deflate_options is not None)
        if deflate_options is not None:
            agreement = accept(answer, deflate_options)
            if agreement is not None:
                self.proto.use_deflate(PerMessageDeflate(agreement, False, deflate_options, MAX_MESSAGE_SIZE))
        return buffer[end + 4:]

    def _read(self, leftover: bytes) -> None:
        error: Optional[BaseException] = None
        reader = self._io = SocketIO(self.sock)  # waits, then reads (see sockets.py)
        self._raw_send = reader.send if not reader.tls else None
        proto = self.proto
        try:
            data = leftover
            while True:
                if data and self._handle(proto.receive_data(data)):
                    break
                data = reader.recv(_RECV_SIZE)
                if not data:
                    break
        except OSError as exc:
            error = exc
        except Exception as exc:  # a bug of ours must still end in a close event
            logger.exception("client connection reader failed")
            error = exc
        finally:
            proto.receive_eof()
            self.state = CLOSED
            if self._close_timer is not None:
                self._close_timer.kill(block=False)
        if proto.error is not None:
            error = proto.error
        self.owner.conn_closed(self, proto.close_code, proto.close_reason, proto.was_clean, error)

    def _handle(self, received: List[Any]) -> bool:
        """Dispatch the protocol's events; ``True`` once a close frame or a violation ended it."""
        proto = self.proto
        for kind, value in received:
            if kind == TEXT:
                self.owner.conn_text(self, value)
            elif kind == BINARY:
                self.owner.conn_binary(self, value)
            elif kind == PING:
                # Answered from the reader, before anything the app sends in answer to later
                # messages (RFC 6455 §5.5.2: a pong as soon as practical, in order).
                pong = proto.data_to_send()
                if not pong:
                    continue
                if self.write_lock.locked():
                    gevent.spawn(self.send, pong)  # a big write is in progress: never block the reader
                else:
                    self.send(pong)
        if proto.state != CLOSED:
            return False
        if proto.error is not None:
            logger.warning("server broke the protocol: %s", proto.error)
        answer = proto.data_to_send()
        if self.state == OPEN:
            self.state = CLOSING
            if answer:
                self._send_control(answer)
        return True

    def _close_socket(self) -> None:
        self._raw_send = None
        io, self._io = self._io, None
        sock, self.sock = self.sock, None
        if io is not None:
            io.close()
        elif sock is not None:
            try:
                sock.close()
            except OSError:
                pass
