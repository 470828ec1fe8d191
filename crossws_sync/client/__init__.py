"""The Python client: :class:`WebSocketConnector` and its constants.

Modules: ``connector`` (the facade), ``session`` (connections over time, reconnects),
``connection`` (one connection), ``acks``, ``heartbeat``, ``queue`` (the event greenlet) and
``options``. All log on ``crossws_sync.client``.
"""
from .connector import (
    CALLBACK_TIMEOUT,
    CONNECTION_CLOSED,
    INVALID_ARGUMENT,
    LIFECYCLE_EVENTS,
    MANUAL_CLOSE_CODE,
    MAX_MESSAGE_SIZE,
    PONG_TIMEOUT_CODE,
    WS_NOT_OPEN,
    WebSocketConnector,
    build_connect_url,
    js_string,
)

__all__ = [
    "CALLBACK_TIMEOUT",
    "CONNECTION_CLOSED",
    "INVALID_ARGUMENT",
    "LIFECYCLE_EVENTS",
    "MANUAL_CLOSE_CODE",
    "MAX_MESSAGE_SIZE",
    "PONG_TIMEOUT_CODE",
    "WS_NOT_OPEN",
    "WebSocketConnector",
    "build_connect_url",
    "js_string",
]
