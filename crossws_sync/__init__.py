"""crossws_sync: distributed WebSocket services on gevent, wire compatible with websocket-cross-server-adapter."""
from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any, List

from ._aliases import install_module_aliases
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

# The classes load on first use (PEP 562): ``import crossws_sync`` (as gunicorn does to find the
# worker class, before the worker monkey-patches) must not import redis or ssl.
_LAZY = {
    "CrossServerBus": ".bus",
    "WebSocketConnector": ".client",
    "WebSocketConnection": ".server.connection",
    "Request": ".wire.request",
    "parse_ws_request_params": ".wire.request",
    "Result": ".results",
    "CrossServerAdapter": ".adapter",
    "WebSocketCrossServerAdapter": ".adapter",
    "Reject": ".server.service",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .bus.bus import CrossServerBus
    from .client.connector import WebSocketConnector
    from .server.connection import WebSocketConnection
    from .wire.request import Request, parse_ws_request_params
    from .results import Result
    from .adapter import CrossServerAdapter, WebSocketCrossServerAdapter
    from .server.service import Reject


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'crossws_sync' has no attribute %r" % name)
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

logging.getLogger("crossws_sync").addHandler(logging.NullHandler())
install_module_aliases()

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
