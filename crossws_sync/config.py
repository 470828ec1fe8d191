"""Option validation for the adapter: keyword arguments in, frozen settings out. Pure."""
from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Literal, Optional, Tuple, Union, overload

from .errors import ConfigError

#: Keys accepted in ``ws_options`` (a typo is an error, not a silent no-op).
WS_OPTION_KEYS = frozenset({"host", "port", "path", "app", "no_server", "noServer", "backlog", "ssl_context",
                            "keyfile", "certfile", "max_payload", "maxPayload"})


@overload
def positive_number(name: str, value: Any, *, allow_none: Literal[False] = False, allow_zero: bool = False,
                    finite: bool = False) -> float: ...


@overload
def positive_number(name: str, value: Any, *, allow_none: bool, allow_zero: bool = False,
                    finite: bool = False) -> Optional[float]: ...


def positive_number(name: str, value: Any, *, allow_none: bool = False, allow_zero: bool = False,
                    finite: bool = False) -> Optional[float]:
    """Return ``value`` as float after checking it is a positive number (seconds, sizes...).

    ``allow_zero`` admits 0, ``finite`` refuses infinity, ``allow_none`` passes ``None`` through.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("%s must be a number, got %r" % (name, value))
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero) or (finite and math.isinf(value)):
        raise ConfigError("%s must be %s%s, got %r" % (name, "non-negative" if allow_zero else "positive",
                                                      " and finite" if finite else "", value))
    return float(value)


@overload
def positive_int(name: str, value: Any, *, allow_none: Literal[False] = False, allow_zero: bool = False) -> int: ...


@overload
def positive_int(name: str, value: Any, *, allow_none: bool, allow_zero: bool = False) -> Optional[int]: ...


def positive_int(name: str, value: Any, *, allow_none: bool = False, allow_zero: bool = False) -> Optional[int]:
    """Return ``value`` after checking it is a positive ``int`` (not a bool); ``allow_zero``
    admits 0, ``allow_none`` passes ``None`` through."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError("%s must be a %s integer, got %r" % (name, "non-negative" if allow_zero else "positive", value))
    return value


@dataclass(frozen=True)
class ListenOptions:
    """Where and how the standalone server listens (from ``ws_options``)."""

    host: str = "0.0.0.0"
    port: Optional[int] = None
    path: Optional[str] = None
    app: Any = None
    no_server: bool = False
    backlog: Optional[int] = None
    ssl_args: Optional[Dict[str, Any]] = None


def parse_ws_options(ws_options: Optional[Dict[str, Any]]) -> Tuple[Optional[ListenOptions], Optional[int]]:
    """Validate ``ws_options``; return the listen options (``None``: WebSocket disabled) and max payload."""
    if ws_options is None:
        return None, None
    if not isinstance(ws_options, dict):
        raise ConfigError("ws_options must be a dict or None")
    unknown = set(ws_options) - WS_OPTION_KEYS
    if unknown:
        raise ConfigError("unknown ws_options key(s): %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(sorted(WS_OPTION_KEYS))))
    port = ws_options.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise ConfigError("ws_options['port'] must be an int from 0 to 65535")
    path = ws_options.get("path")
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        raise ConfigError("ws_options['path'] must start with '/'")
    ssl_args: Optional[Dict[str, Any]] = None
    if ws_options.get("ssl_context") is not None:
        ssl_args = {"ssl_context": ws_options["ssl_context"]}
    elif ws_options.get("certfile"):
        ssl_args = {"certfile": ws_options["certfile"], "keyfile": ws_options.get("keyfile")}
    max_payload = ws_options.get("max_payload", ws_options.get("maxPayload"))
    if max_payload is not None:
        positive_int("ws_options['max_payload']", max_payload)
    listen = ListenOptions(
        host=ws_options.get("host", "0.0.0.0"),
        port=port,
        path=path,
        app=ws_options.get("app"),
        no_server=bool(ws_options.get("no_server", ws_options.get("noServer", False))),
        backlog=ws_options.get("backlog"),
        ssl_args=ssl_args,
    )
    return listen, max_payload


def check_prefixes(bridge_prefix: str, ws_prefix: str) -> None:
    """Reject prefixes that would route one kind of channel as the other."""
    for name, value in (("bridge_prefix", bridge_prefix), ("ws_prefix", ws_prefix)):
        if not isinstance(value, str) or not value:
            raise ConfigError("%s must be a non-empty string" % name)
    if bridge_prefix.startswith(ws_prefix) or ws_prefix.startswith(bridge_prefix):
        raise ConfigError('bridge_prefix and ws_prefix must be different and not prefixes of each other. Received: "%s", "%s"'
                          % (bridge_prefix, ws_prefix))


def resolve_server_name(template: Optional[str]) -> str:
    """Expand ``{host}``, ``{pid}`` and ``{worker}`` in a server name; default ``<host>-<pid>``.

    The default gives every gunicorn worker its own node name.

    Raises:
        ConfigError: ``template`` is not a non-empty string or has an unknown/broken placeholder.
    """
    if template is None:
        template = "{host}-{pid}"
    if not isinstance(template, str) or not template:
        raise ConfigError("server_name must be a non-empty string, got %r" % (template,))
    # platform.node() rather than socket.gethostname(): this module stays free of socket.
    host = platform.node().split(".")[0][:12] or "host"
    try:
        return template.format(host=host, pid=os.getpid(), worker=os.environ.get("CROSSWS_WORKER_ID", "0"))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError("server_name %r: only {host}, {pid} and {worker} can be expanded (%s)" % (template, exc)) from None


def as_list(value: Union[None, str, Iterable[str]], name: str) -> List[str]:
    """``None`` -> [], ``"a"`` -> ["a"], iterable of non-empty strings -> list."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    result = list(value)
    for item in result:
        if not isinstance(item, str) or not item:
            raise ConfigError("%s must contain non-empty strings, got %r" % (name, item))
    return result


#: Publish strategies over several Redis nodes.
SELECTION_STRATEGIES = ("random", "round-robin", "fastest")
REDIS_CODECS = ("json", "msgpack")


def check_redis_options(redis_config: Any, selection_strategy: Any, redis_codec: Any) -> None:
    """Validate the Redis options in the constructor (not later, when the bus starts)."""
    if selection_strategy not in SELECTION_STRATEGIES:
        raise ConfigError("selection_strategy must be one of %s, got %r" % (", ".join(SELECTION_STRATEGIES), selection_strategy))
    if redis_codec not in REDIS_CODECS:
        raise ConfigError("redis_codec must be one of %s, got %r" % (", ".join(REDIS_CODECS), redis_codec))
    for item in redis_config or []:
        if isinstance(item, str):
            if not item.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError("a redis_config URL must start with redis://, rediss:// or unix://")
        elif not isinstance(item, dict):
            raise ConfigError("each redis_config entry must be a dict of connection options or a URL string")
