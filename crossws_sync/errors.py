"""Exception tree of crossws_sync.

Every exception the library raises on purpose derives from :class:`CrossWSError`::

    CrossWSError
    ├── ConfigError (ValueError)            bad constructor option or argument value
    │   └── InvalidNameError                a namespace, room id or socket id the name policy refuses
    ├── LimitExceededError (ValueError)     a per-connection limit (rooms, namespaces) would be passed
    ├── ProtocolError (ValueError)          a WebSocket frame or message that breaks the protocol
    │   ├── MessageTooBig                   an inbound message over the size limit (close 1009)
    │   └── HandshakeError                  the server refused or botched the client's upgrade
    ├── ConnectionClosedError (ConnectionError)  reserved: writing to / using a closed connection
    ├── NotOpenError (ConnectionError)      reserved: client emit while the socket is not open
    ├── AckTimeoutError (TimeoutError)      reserved: an acknowledgement did not arrive in time
    ├── ConnectTimeoutError (TimeoutError)  the client's connect + handshake exceeded connect_timeout
    ├── EnvelopeError (ValueError)          a Redis envelope that cannot be decoded
    ├── RedisUnavailableError (ConnectionError)  no healthy Redis node could take a publish
    └── MonkeyPatchError (RuntimeError)     Redis used without gevent monkey-patching

The three marked *reserved* are exported but never raised today: those failures are reported
as a ``False`` return or in a ``Result``. Argument-type mistakes (``event`` not a string,
``listener`` not callable) raise the builtin :class:`TypeError`, exactly like the original library.
"""
from __future__ import annotations

from typing import Optional


class CrossWSError(Exception):
    """Root of every exception raised by crossws_sync."""


class ConfigError(CrossWSError, ValueError):
    """An option or argument has an invalid value."""


class InvalidNameError(ConfigError):
    """A namespace, room id or socket id is not valid text or is reserved (see ``crossws_sync.core.names``)."""


class LimitExceededError(CrossWSError, ValueError):
    """A per-connection limit would be exceeded; nothing was changed.

    Attributes:
        limit: the option's name (``max_rooms_per_socket``, ``max_namespaces_per_socket``).
        value: its value.
    """

    def __init__(self, message: str, limit: str = "", value: int = 0) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value


class ProtocolError(CrossWSError, ValueError):
    """A peer broke the WebSocket protocol."""

    def __init__(self, message: str, close_code: int = 1002) -> None:
        super().__init__(message)
        self.close_code = close_code


class MessageTooBig(ProtocolError):
    """An inbound message exceeds the configured size limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, close_code=1009)


class HandshakeError(ProtocolError):
    """The server answered the client's upgrade request with something other than a valid 101.

    Attributes:
        status: the HTTP status code of the answer (``None`` when there was no valid status line).
        retry_after: the answer's ``Retry-After`` in seconds (a ``503`` of the accept-rate
            limit), ``None`` without one.
    """

    def __init__(self, message: str, status: Optional[int] = None, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ConnectionClosedError(CrossWSError, ConnectionError):
    """The connection is closed; nothing can be sent on it.

    Reserved: not raised today. Sending on a connection that is not open returns ``False``.
    """


class NotOpenError(CrossWSError, ConnectionError):
    """The client is not connected (error code ``WS_NOT_OPEN``).

    Reserved: not raised today. An emit while not open reports ``WS_NOT_OPEN`` in its callback
    or promise ``Result``, as the original does.
    """


class AckTimeoutError(CrossWSError, TimeoutError):
    """An acknowledgement did not arrive within its timeout.

    Reserved: not raised today. A late acknowledgement is reported as ``CALLBACK_TIMEOUT`` (client)
    or ``success=False`` (cross-server calls) in the callback or promise ``Result``.
    """


class ConnectTimeoutError(CrossWSError, TimeoutError):
    """The client could not connect and finish the WebSocket handshake within ``connect_timeout``."""


class EnvelopeError(CrossWSError, ValueError):
    """A Redis message could not be decoded into an envelope."""


class RedisUnavailableError(CrossWSError, ConnectionError):
    """No healthy Redis node accepted the publish."""


class MonkeyPatchError(CrossWSError, RuntimeError):
    """gevent monkey-patching is required but was not applied."""


__all__ = [
    "CrossWSError",
    "ConfigError",
    "InvalidNameError",
    "LimitExceededError",
    "ProtocolError",
    "MessageTooBig",
    "ConnectionClosedError",
    "NotOpenError",
    "AckTimeoutError",
    "ConnectTimeoutError",
    "HandshakeError",
    "EnvelopeError",
    "RedisUnavailableError",
    "MonkeyPatchError",
]
