"""crossws_sync: distributed WebSocket services on gevent, wire compatible with websocket-cross-server-adapter."""
from __future__ import annotations

import logging

from .errors import (
    AckTimeoutError,
    ConfigError,
    ConnectionClosedError,
    CrossWSError,
    EnvelopeError,
    MessageTooBig,
    MonkeyPatchError,
    NotOpenError,
    ProtocolError,
    RedisUnavailableError,
)

__version__ = "0.1.0"

logging.getLogger("crossws_sync").addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "AckTimeoutError",
    "ConfigError",
    "ConnectionClosedError",
    "CrossWSError",
    "EnvelopeError",
    "MessageTooBig",
    "MonkeyPatchError",
    "NotOpenError",
    "ProtocolError",
    "RedisUnavailableError",
]
