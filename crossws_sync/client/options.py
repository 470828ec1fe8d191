"""The client's options: checked once by :func:`client_options`, then frozen."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, FrozenSet, Iterable, Mapping, Optional, Tuple, Union

import gevent.ssl

from ..config import positive_int, positive_number
from ..core.backoff import check_jitter
from ..errors import ConfigError
from ..wire.deflate import DeflateOptions, options_from
from ..wire.url import Target, build_connect_url, header_pairs, parse_ws_url


def _seconds(name: str, value: Any) -> float:
    return positive_number(name, value, finite=True)


@dataclass(frozen=True)
class ClientOptions:
    """A client's checked options (times in seconds); see :class:`~.connector.WebSocketConnector`.

    ``url`` is the URL actually connected to (with ``custom_params``), ``target`` its parts.
    """

    url: str
    target: Target
    ping_interval: float
    pong_timeout: float
    fast_reconnect_threshold: int
    fast_reconnect_interval: float
    reconnect_max_interval: float
    ping_msg: str
    callback_timeout: float
    repeat_limit: Optional[int]
    pending_timeout: float
    connect_timeout: float
    auto_reconnect: bool
    no_reconnect_codes: FrozenSet[int]
    headers: Tuple[Tuple[str, str], ...]
    per_message_deflate: Optional[DeflateOptions]
    ssl_context: Optional[gevent.ssl.SSLContext]
    offline_queue_size: int = 1000
    recover: bool = True
    reconnect_jitter: str = "full"


def client_options(
    url: str,
    *,
    ping_interval: float,
    pong_timeout: float,
    fast_reconnect_threshold: int,
    fast_reconnect_interval: float,
    reconnect_max_interval: float,
    ping_msg: str,
    callback_timeout: float,
    repeat_limit: Optional[int],
    pending_timeout: float,
    custom_params: Optional[Mapping[Any, Any]],
    connect_timeout: float,
    auto_reconnect: bool,
    no_reconnect_codes: Iterable[int],
    headers: Optional[Union[Mapping[str, str], Iterable[Tuple[str, str]]]],
    ssl_context: Optional[gevent.ssl.SSLContext],
    per_message_deflate: Union[bool, Mapping[str, Any], None],
    offline_queue_size: int = 1000,
    reconnect_jitter: str = "full",
) -> ClientOptions:
    """Check the constructor's options of :class:`~.connector.WebSocketConnector`.

    Raises:
        ConfigError: an empty or unusable ``url``, or any invalid option value.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError("url is required: a complete ws:// or wss:// address such as ws://127.0.0.1:9000/path")
    if custom_params is not None and not isinstance(custom_params, Mapping):
        raise ConfigError("custom_params must be a mapping (dict) or None")
    if not isinstance(ping_msg, str):
        raise ConfigError("ping_msg must be a str")
    if ssl_context is not None and not isinstance(ssl_context, gevent.ssl.SSLContext):
        raise ConfigError("ssl_context must be gevent-aware: create it after gevent.monkey.patch_all() "
                          "or with gevent.ssl.create_default_context()")
    try:
        codes = frozenset(int(code) for code in no_reconnect_codes)
    except (TypeError, ValueError):
        raise ConfigError("no_reconnect_codes must be an iterable of close codes") from None
    full_url = build_connect_url(url, custom_params)
    return ClientOptions(
        url=full_url,
        target=parse_ws_url(full_url),
        pong_timeout=_seconds("pong_timeout", pong_timeout),
        fast_reconnect_threshold=positive_int("fast_reconnect_threshold", fast_reconnect_threshold, allow_zero=True),
        fast_reconnect_interval=_seconds("fast_reconnect_interval", fast_reconnect_interval),
        reconnect_max_interval=_seconds("reconnect_max_interval", reconnect_max_interval),
        ping_msg=ping_msg,
        callback_timeout=_seconds("callback_timeout", callback_timeout),
        repeat_limit=positive_int("repeat_limit", repeat_limit, allow_none=True, allow_zero=True),
        pending_timeout=_seconds("pending_timeout", pending_timeout),
        connect_timeout=_seconds("connect_timeout", connect_timeout),
        auto_reconnect=bool(auto_reconnect),
        no_reconnect_codes=codes,
        headers=header_pairs(headers),
        ssl_context=ssl_context,
        per_message_deflate=options_from(per_message_deflate),
        offline_queue_size=positive_int("offline_queue_size", offline_queue_size, allow_zero=True),
        reconnect_jitter=check_jitter(reconnect_jitter),
        ping_interval=_seconds("ping_interval", ping_interval),  # checked last, as before
    )
