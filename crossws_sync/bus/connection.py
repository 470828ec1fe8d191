"""The bus's own Redis connections: socket, TLS, handshake and hiredis parsing, all ours.

:func:`settings_from` turns a ``redis_config`` entry, parsed by redis-py's public API
(``redis.Redis(...).connection_pool``: its ``connection_class`` and ``connection_kwargs``),
into :class:`RedisSettings`; :meth:`RedisConnection.open` then connects a gevent socket
(TCP with ``socket_connect_timeout``, TCP_NODELAY, keepalive; or a Unix socket), wraps it in
TLS when the entry asks (``ssl=True`` / ``rediss://`` and the ``ssl_*`` options), and sends
the handshake in one round trip: ``AUTH`` (password, or username and password, or what a
``credential_provider`` returns), ``CLIENT SETNAME``, ``SELECT``. RESP2 only.

After that the connection is the bus's alone: :meth:`RedisConnection.send` writes without
ever yielding (from the hub), and :meth:`RedisConnection.next` reads every reply that has
arrived with one ``recv_into`` and parses them with hiredis, without redis-py's per-reply
bookkeeping (error-context strings, timeout swaps), which costs more than the messages
themselves on the bus's hot paths.
"""
from __future__ import annotations

import os
import socket as _stdsocket
import ssl as _stdssl
from dataclasses import dataclass, field, replace
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import gevent.socket
import gevent.ssl
import hiredis
import redis

from ..errors import ConfigError
from ..io.sockets import SocketIO

_READ_SIZE = 65536

#: Returned by :meth:`RedisConnection.next` when no whole reply arrived within the timeout.
TIMED_OUT = object()

_CERT_REQS = {"none": _stdssl.CERT_NONE, "optional": _stdssl.CERT_OPTIONAL, "required": _stdssl.CERT_REQUIRED}

#: redis-py connection options that change how a connection is made and that we do not do:
#: refused rather than silently ignored.
_UNSUPPORTED = ("ssl_validate_ocsp", "ssl_validate_ocsp_stapled", "ssl_ocsp_context", "ssl_ocsp_expected_cert",
                "redis_connect_func")


@dataclass(frozen=True)
class TlsSettings:
    """redis-py's ``ssl_*`` options (same meaning, same defaults)."""

    keyfile: Optional[str] = None
    certfile: Optional[str] = None
    cert_reqs: Any = "required"
    ca_certs: Optional[str] = None
    ca_data: Any = None
    ca_path: Optional[str] = None
    check_hostname: bool = True
    password: Any = None
    min_version: Any = None
    ciphers: Optional[str] = None
    include_verify_flags: Sequence[Any] = ()
    exclude_verify_flags: Sequence[Any] = ()

    def context(self) -> Any:
        """A gevent ``SSLContext`` built as redis-py builds its own.

        Raises:
            ConfigError: an invalid ``ssl_cert_reqs``.
        """
        reqs = self.cert_reqs
        if reqs is None:
            reqs = _stdssl.CERT_NONE
        elif isinstance(reqs, str):
            if reqs not in _CERT_REQS:
                raise ConfigError("invalid redis_config ssl_cert_reqs %r (none, optional or required)" % reqs)
            reqs = _CERT_REQS[reqs]
        context = gevent.ssl.create_default_context()
        context.check_hostname = bool(self.check_hostname) and reqs != _stdssl.CERT_NONE
        context.verify_mode = reqs
        for flag in self.include_verify_flags:
            context.verify_flags |= flag
        for flag in self.exclude_verify_flags:
            context.verify_flags &= ~flag
        if self.certfile or self.keyfile:
            context.load_cert_chain(certfile=self.certfile, keyfile=self.keyfile, password=self.password)
        if self.ca_certs is not None or self.ca_path is not None or self.ca_data is not None:
            context.load_verify_locations(cafile=self.ca_certs, capath=self.ca_path, cadata=self.ca_data)
        if self.min_version is not None:
            context.minimum_version = self.min_version
        if self.ciphers:
            context.set_ciphers(self.ciphers)
        return context


@dataclass(frozen=True)
class RedisSettings:
    """Where and how to connect to one Redis server.

    ``path`` set means a Unix socket (``host`` / ``port`` unused). ``timeout`` bounds the TLS
    handshake, the handshake's replies and every blocking write.
    """

    host: str = "localhost"
    port: int = 6379
    path: Optional[str] = None
    db: int = 0
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    credential_provider: Any = field(default=None, repr=False)
    client_name: Optional[str] = None
    connect_timeout: Optional[float] = None
    timeout: Optional[float] = None
    keepalive: bool = False
    keepalive_options: Mapping[int, int] = field(default_factory=dict)
    family: int = 0
    tls: Optional[TlsSettings] = None

    @property
    def label(self) -> str:
        """``host:port`` or the socket path (never a secret)."""
        return self.path if self.path is not None else "%s:%s" % (self.host, self.port)

    def replace_timeout(self, timeout: Optional[float]) -> "RedisSettings":
        """These settings with another ``timeout``."""
        return replace(self, timeout=timeout)


def settings_from(connection_class: type, kwargs: Mapping[str, Any]) -> RedisSettings:
    """Read a redis-py ``ConnectionPool``'s ``connection_class`` and ``connection_kwargs``.

    Raises:
        ConfigError: an option we do not support (OCSP checks, ``redis_connect_func``), or
            ``protocol`` other than 2.
    """
    for name in _UNSUPPORTED:
        if kwargs.get(name):
            raise ConfigError("redis_config option %s is not supported by crossws_sync" % name)
    if str(kwargs.get("protocol") or 2) != "2":
        raise ConfigError("redis_config protocol must be 2 (RESP2)")
    keepalive_options = kwargs.get("socket_keepalive_options")
    tls: Optional[TlsSettings] = None
    if issubclass(connection_class, redis.SSLConnection):
        tls = TlsSettings(
            keyfile=kwargs.get("ssl_keyfile"), certfile=kwargs.get("ssl_certfile"),
            cert_reqs=kwargs.get("ssl_cert_reqs", "required"), ca_certs=kwargs.get("ssl_ca_certs"),
            ca_data=kwargs.get("ssl_ca_data"), ca_path=kwargs.get("ssl_ca_path"),
            check_hostname=_flag(kwargs.get("ssl_check_hostname", True)), password=kwargs.get("ssl_password"),
            min_version=kwargs.get("ssl_min_version"), ciphers=kwargs.get("ssl_ciphers"),
            include_verify_flags=tuple(kwargs.get("ssl_include_verify_flags") or ()),
            exclude_verify_flags=tuple(kwargs.get("ssl_exclude_verify_flags") or ()))
        if isinstance(tls.cert_reqs, str) and tls.cert_reqs not in _CERT_REQS:
            raise ConfigError("invalid redis_config ssl_cert_reqs %r (none, optional or required)" % tls.cert_reqs)
    path = kwargs.get("path") if issubclass(connection_class, redis.UnixDomainSocketConnection) else None
    return RedisSettings(
        host=kwargs.get("host", "localhost"), port=int(kwargs.get("port", 6379)), path=path,
        db=int(kwargs.get("db") or 0), username=kwargs.get("username"), password=kwargs.get("password"),
        credential_provider=kwargs.get("credential_provider"), client_name=kwargs.get("client_name"),
        connect_timeout=kwargs.get("socket_connect_timeout"), timeout=kwargs.get("socket_timeout"),
        keepalive=bool(kwargs.get("socket_keepalive")),
        keepalive_options=dict(keepalive_options) if isinstance(keepalive_options, Mapping) else {},
        family=int(kwargs.get("socket_type") or 0), tls=tls)


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "f", "false", "n", "no", "off", "")
    return bool(value)


def _handshake(settings: RedisSettings) -> List[Tuple[Any, ...]]:
    commands: List[Tuple[Any, ...]] = []
    if settings.credential_provider is not None:
        credentials = tuple(settings.credential_provider.get_credentials())
    elif settings.username or settings.password:
        credentials = (settings.username, settings.password) if settings.username else (settings.password,)
    else:
        credentials = ()
    if credentials:
        commands.append(("AUTH",) + tuple(c for c in credentials if c is not None))
    if settings.client_name:
        commands.append(("CLIENT", "SETNAME", settings.client_name))
    if settings.db:
        commands.append(("SELECT", settings.db))
    return commands


class RedisConnection:
    """One open connection to Redis, used by one publisher or one subscriber.

    Writes: :meth:`send` (never yields; ``BlockingIOError`` when the kernel took nothing,
    always on TLS) and :meth:`sendall` (blocks the greenlet up to the settings' ``timeout``).
    Reads: :meth:`next` and :meth:`ready`, from one greenlet. Error replies come back as
    ``redis.ResponseError`` instances (not raised), so a refused command does not lose its
    place in the stream.
    """

    def __init__(self, sock: Any, settings: RedisSettings) -> None:
        self.settings = settings
        self._sock = sock
        self._io = SocketIO(sock)
        self.send = self._io.send
        self._hiredis = hiredis.Reader(replyError=redis.ResponseError)
        self._buffer = bytearray(_READ_SIZE)
        self._closed = False
        self._pid = os.getpid()

    @classmethod
    def open(cls, settings: RedisSettings) -> "RedisConnection":
        """Connect, start TLS if asked, authenticate, name the connection, select the database.

        Raises:
            redis.AuthenticationError: Redis refused the credentials (its own message).
            redis.ConnectionError: connecting failed, or Redis refused the handshake.
            redis.TimeoutError: connecting or the handshake took too long.
        """
        sock = _connect(settings)
        conn = cls(sock, settings)
        try:
            commands = _handshake(settings)
            if commands:
                conn.sendall(b"".join(hiredis.pack_command(command) for command in commands))
                for command in commands:
                    reply = conn.next(settings.timeout)
                    if reply is TIMED_OUT:
                        raise redis.TimeoutError("Timeout reading from %s during the handshake" % settings.label)
                    if isinstance(reply, redis.ResponseError):
                        text = str(reply)
                        if command[0] == "AUTH":
                            raise redis.AuthenticationError(text)
                        raise redis.ConnectionError("redis %s refused %s: %s" % (settings.label, command[0], text))
        except _stdsocket.timeout:
            conn.close()
            raise redis.TimeoutError("Timeout writing to %s during the handshake" % settings.label) from None
        except OSError as exc:
            conn.close()
            raise redis.ConnectionError("Error while talking to %s: %s" % (settings.label, exc)) from None
        except BaseException:
            conn.close()
            raise
        return conn

    # Writing ------------------------------------------------------------------------------

    def sendall(self, data: bytes) -> None:
        """Write all of ``data`` (may block the greenlet).

        Raises:
            OSError: the connection failed or timed out (``socket.timeout``).
        """
        self._sock.sendall(data)

    # Reading ------------------------------------------------------------------------------

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next reply, or :data:`TIMED_OUT`.

        Args:
            timeout: seconds to wait for data; ``None``: the settings' ``timeout``. A reply that
                arrived only in part stays buffered for the next call.

        Raises:
            redis.ConnectionError: the server closed the connection.
            OSError: the connection failed.
        """
        reply = self._hiredis.gets()
        if reply is not False:
            return reply
        if timeout is None:
            timeout = self.settings.timeout
        recv_into = self._io.recv_into
        buffer = self._buffer
        while True:
            try:
                count = recv_into(buffer, timeout)
            except _stdsocket.timeout:
                return TIMED_OUT
            if not count:
                raise redis.ConnectionError("connection closed by the server")
            self._hiredis.feed(buffer, 0, count)  # type: ignore[arg-type]  # any buffer works
            reply = self._hiredis.gets()
            if reply is not False:
                return reply

    def ready(self) -> Any:
        """The next reply already buffered, or ``False`` (never reads the socket)."""
        return self._hiredis.gets()

    def close(self) -> None:
        """Close the connection; idempotent. In a forked child only the child's descriptor is
        closed: the connection is shut down only in the process that opened it."""
        if self._closed:
            return
        self._closed = True
        self._io.close(shutdown=os.getpid() == self._pid)

    disconnect = close


def _connect(settings: RedisSettings) -> Any:
    try:
        if settings.path is not None:
            sock = _open_socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM, 0, settings.path, settings, tcp=False)
        else:
            sock = _connect_tcp(settings)
    except _stdsocket.timeout:
        raise redis.TimeoutError("Timeout connecting to %s" % settings.label) from None
    except OSError as exc:
        raise redis.ConnectionError(_error_text(settings, exc)) from None
    if settings.tls is not None:
        try:
            sock.settimeout(settings.connect_timeout)
            sock = settings.tls.context().wrap_socket(sock, server_hostname=settings.host)
        except _stdsocket.timeout:
            sock.close()
            raise redis.TimeoutError("Timeout during the TLS handshake with %s" % settings.label) from None
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            sock.close()
            raise redis.ConnectionError(_error_text(settings, exc)) from None
    sock.settimeout(settings.timeout)
    return sock


def _connect_tcp(settings: RedisSettings) -> Any:
    error: Optional[OSError] = None
    for family, kind, proto, _, address in gevent.socket.getaddrinfo(
            settings.host, settings.port, settings.family, _stdsocket.SOCK_STREAM):
        try:
            return _open_socket(family, kind, proto, address, settings, tcp=True)
        except OSError as exc:
            error = exc
    raise error or OSError("getaddrinfo returned no address for %s" % settings.host)


def _open_socket(family: int, kind: int, proto: int, address: Any, settings: RedisSettings, *, tcp: bool) -> Any:
    sock = gevent.socket.socket(family, kind, proto)
    try:
        if tcp:
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            if settings.keepalive:
                sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_KEEPALIVE, 1)
                for option, value in settings.keepalive_options.items():
                    sock.setsockopt(_stdsocket.IPPROTO_TCP, option, value)
        sock.settimeout(settings.connect_timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _error_text(settings: RedisSettings, exc: BaseException) -> str:
    number = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or str(exc)
    if number is None:
        return "Error connecting to %s. %s." % (settings.label, reason)
    return "Error %s connecting to %s. %s." % (number, settings.label, reason)


__all__ = ["RedisConnection", "RedisSettings", "TIMED_OUT", "TlsSettings", "settings_from"]
