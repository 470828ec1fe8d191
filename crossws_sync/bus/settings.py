"""A ``redis_config`` entry, read without connecting, and what must hold before Redis is used.

:func:`make_client` parses one entry with redis-py (keywords or a URL, the ioredis ``tls`` spelling
accepted); the bus reads only the parsed settings and opens its own connections
(:mod:`crossws_sync.bus.connection`). :func:`describe_config` names an entry for logs (never its
password). :func:`require_monkey_patched` refuses Redis without gevent's socket patching, and
:func:`is_auth_error` recognises refused credentials in a connection error's text.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple, Union

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..config import check_redis_url, is_sentinel_entry, sentinel_config
from ..errors import ConfigError, MonkeyPatchError

logger = logging.getLogger("crossws_sync.nodes")

RedisConfig = Union[str, Dict[str, Any]]

MONKEY_PATCH_HINT = (
    "crossws_sync uses Redis from greenlets and needs gevent monkey-patching: put "
    "`from gevent import monkey; monkey.patch_all()` as the very first lines of your program, "
    "before importing redis, flask or crossws_sync (gunicorn's gevent workers do it for you)."
)


def require_monkey_patched() -> None:
    """Refuse to use Redis when the socket module is not patched by gevent.

    Raises:
        MonkeyPatchError: ``socket`` is not monkey-patched; the message says how to fix it.
    """
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        raise MonkeyPatchError(MONKEY_PATCH_HINT)


def _translate(config: Dict[str, Any]) -> Dict[str, Any]:
    """Accept the one ioredis spelling users copy from the original docs: ``tls``."""
    cfg = dict(config)
    tls = cfg.pop("tls", None)
    if tls:
        cfg.setdefault("ssl", True)
        if isinstance(tls, dict):
            for key in ("ca", "cert", "key"):
                if key in tls:
                    raise ConfigError("redis_config 'tls' sub-options are ioredis'; use redis-py's ssl_* keys")
    return cfg


def make_client(config: RedisConfig, *, connect_timeout: float, command_timeout: float) -> redis.Redis:
    """Parse one ``redis_config`` entry with redis-py (nothing connects).

    Only the client's ``connection_pool.connection_class`` and ``connection_kwargs`` are read
    (:func:`~crossws_sync.bus.connection.settings_from`): the bus opens its own connections.

    Args:
        config: a dict of redis-py keyword arguments (``host``, ``port``, ``password``, ``db``,
            ``username``, ``ssl``...) or a ``redis://`` / ``rediss://`` / ``unix://`` URL (for a
            Sentinel entry, pass its :attr:`~crossws_sync.config.SentinelConfig.primary`).
        connect_timeout: default ``socket_connect_timeout``.
        command_timeout: default ``socket_timeout`` of the publisher.

    Raises:
        ConfigError: not a dict or URL, or an unknown keyword.
    """
    defaults: Dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": command_timeout,
        "socket_keepalive": True,
        "health_check_interval": 0,
        "protocol": 2,
    }
    forced: Dict[str, Any] = {"decode_responses": False, "retry": Retry(NoBackoff(), 0)}
    try:
        if isinstance(config, str):
            return redis.Redis.from_url(check_redis_url(config), **defaults, **forced)
        if isinstance(config, dict):
            if config.get("decode_responses"):
                logger.warning("redis_config decode_responses=True ignored: the bus needs bytes")
            kwargs = dict(defaults)
            kwargs.update(_translate(config))
            kwargs.update(forced)
            return redis.Redis(**kwargs)
    except TypeError as exc:
        raise ConfigError("invalid redis_config entry: %s" % exc) from None
    except ValueError as exc:
        raise ConfigError("invalid redis_config entry: %s" % exc) from None
    raise ConfigError("each redis_config entry must be a dict of redis-py options or a redis:// URL")


def describe_config(config: RedisConfig) -> Tuple[Any, Any, Any]:
    """Return ``(host, port, db)`` of a ``redis_config`` entry without connecting.

    A Sentinel entry is ``("sentinel:<service>", "<host:port,...>", db)``.
    """
    if is_sentinel_entry(config):
        sentinel = sentinel_config(config)
        db = make_client(sentinel.primary, connect_timeout=1.0, command_timeout=1.0).connection_pool.connection_kwargs.get("db", 0)
        return sentinel.label, sentinel.sentinel_list, db
    client = make_client(config, connect_timeout=1.0, command_timeout=1.0)
    kwargs = client.connection_pool.connection_kwargs
    host = kwargs.get("host", kwargs.get("path", "Unknown Host"))
    return host, kwargs.get("port", "Unknown Port"), kwargs.get("db", 0)


#: What Redis and redis-py say when the credentials are refused (WRONGPASS / NOAUTH replies, and
#: redis-py's AuthenticationError texts), lower case.
_AUTH_ERROR_MARKERS = ("wrongpass", "noauth", "invalid username-password pair", "authentication required",
                       "invalid password", "without any password configured", "no password is set",
                       "must be called with the client already authenticated")


def is_auth_error(error: Optional[str]) -> bool:
    """Whether a connection error text says that Redis refused our credentials."""
    if not error:
        return False
    text = error.lower()
    return any(marker in text for marker in _AUTH_ERROR_MARKERS)


__all__ = ["MONKEY_PATCH_HINT", "RedisConfig", "describe_config", "is_auth_error", "make_client",
           "require_monkey_patched"]
