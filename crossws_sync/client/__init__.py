"""The Python client: :class:`WebSocketConnector` and its constants.

Modules: ``connector`` (the facade), ``session`` (connections over time, reconnects),
``connection`` (one connection), ``acks``, ``heartbeat``, ``queue`` (the event greenlet) and
``options``. All log on ``crossws_sync.client``.
"""
from .connection import MAX_MESSAGE_SIZE
from .connector import (
    CALLBACK_TIMEOUT,
    CONNECTION_CLOSED,
    INVALID_ARGUMENT,
    LIFECYCLE_EVENTS,
    OFFLINE_QUEUE_DROPPED,
    OFFLINE_QUEUE_FULL,
    WS_NOT_OPEN,
    WebSocketConnector,
    build_connect_url,
    js_string,
)
from .heartbeat import PONG_TIMEOUT_CODE
from .session import MANUAL_CLOSE_CODE

__all__ = [
    "CALLBACK_TIMEOUT",
    "CONNECTION_CLOSED",
    "INVALID_ARGUMENT",
    "LIFECYCLE_EVENTS",
    "MANUAL_CLOSE_CODE",
    "MAX_MESSAGE_SIZE",
    "OFFLINE_QUEUE_DROPPED",
    "OFFLINE_QUEUE_FULL",
    "PONG_TIMEOUT_CODE",
    "WS_NOT_OPEN",
    "WebSocketConnector",
    "build_connect_url",
    "js_string",
]
