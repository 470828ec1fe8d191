"""crossws_sync: distributed WebSocket services on gevent, wire compatible with websocket-cross-server-adapter."""
from __future__ import annotations

import logging

from .errors import (
    AckTimeoutError,
    ConfigError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CrossWSError,
    EnvelopeError,
    HandshakeError,
    InvalidNameError,
    LimitExceededError,
    MessageTooBig,
    MonkeyPatchError,
    NotOpenError,
    ProtocolError,
    RedisUnavailableError,
)

from .bus import CrossServerBus
from .client import WebSocketConnector
from .connection import WebSocketConnection
from .request import Request, parse_ws_request_params
from .results import Result
from .server import CrossServerAdapter, WebSocketCrossServerAdapter
from .wsserver import Reject

__version__ = "0.1.0"

logging.getLogger("crossws_sync").addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    "WebSocketCrossServerAdapter",
    "CrossServerAdapter",
    "WebSocketConnector",
    "CrossServerBus",
    "WebSocketConnection",
    "Request",
    "Reject",
    "Result",
    "parse_ws_request_params",
    "AckTimeoutError",
    "ConfigError",
    "ConnectionClosedError",
    "ConnectTimeoutError",
    "CrossWSError",
    "EnvelopeError",
    "HandshakeError",
    "InvalidNameError",
    "LimitExceededError",
    "MessageTooBig",
    "MonkeyPatchError",
    "NotOpenError",
    "ProtocolError",
    "RedisUnavailableError",
]
