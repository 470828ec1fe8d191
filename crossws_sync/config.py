"""Option validation, the one place for it: keyword arguments in, checked values out. Pure.

Every checker raises :class:`~crossws_sync.errors.ConfigError` (or the error it is given) on bad
input; the ``*_or_default`` forms are for per-call arguments that fall back to a default instead,
as the original does.
"""
from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Tuple, Union, overload
from urllib.parse import parse_qsl, quote, unquote, urlencode

from .errors import ConfigError, InvalidNameError

#: Keys accepted in ``ws_options`` (a typo is an error, not a silent no-op).
WS_OPTION_KEYS = frozenset({"host", "port", "path", "app", "no_server", "noServer", "backlog", "ssl_context",
                            "keyfile", "certfile", "max_payload", "maxPayload"})


@overload
def positive_number(name: str, value: Any, *, allow_none: Literal[False] = ..., allow_zero: bool = ...,
                    finite: bool = ...) -> float: ...
@overload
def positive_number(name: str, value: Any, *, allow_none: bool, allow_zero: bool = ...,
                    finite: bool = ...) -> Optional[float]: ...


def positive_number(name: str, value: Any, *, allow_none: bool = False, allow_zero: bool = False,
                    finite: bool = False) -> Optional[float]:
    """Return ``value`` as float after checking it is a positive number (seconds, sizes...).

    Raises:
        ConfigError: not an int or float (``bool`` is not a number), NaN, negative, zero
            without ``allow_zero``, or infinite with ``finite``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("%s must be a number, got %r" % (name, value))
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError("%s must be %s, got %r" % (name, "non-negative" if allow_zero else "positive", value))
    if finite and math.isinf(value):
        raise ConfigError("%s must be finite, got %r" % (name, value))
    return float(value)


@overload
def positive_int(name: str, value: Any, *, allow_none: Literal[False] = ..., allow_zero: bool = ...) -> int: ...
@overload
def positive_int(name: str, value: Any, *, allow_none: bool, allow_zero: bool = ...) -> Optional[int]: ...


def positive_int(name: str, value: Any, *, allow_none: bool = False, allow_zero: bool = False) -> Optional[int]:
    """Return ``value`` after checking it is a positive int (``bool`` is not one), or 0
    with ``allow_zero``.

    Raises:
        ConfigError: anything else.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError("%s must be a %s integer, got %r"
                          % (name, "non-negative" if allow_zero else "positive", value))
    return value


def close_code(name: str, value: Any) -> int:
    """Return ``value`` when a server may send it as a close code: 1000-1003, 1007-1014 or 3000-4999.

    Raises:
        ConfigError: anything else (1004-1006 and 1015 are reserved, never sent on the wire).
    """
    if (isinstance(value, bool) or not isinstance(value, int)
            or not (1000 <= value <= 1003 or 1007 <= value <= 1014 or 3000 <= value <= 4999)):
        raise ConfigError("%s must be a close code a server may send (1000-1003, 1007-1014, 3000-4999), got %r"
                          % (name, value))
    return value


def positive_number_or_default(value: Any, default: float) -> float:
    """``value`` as float when :func:`positive_number` accepts it, else ``default`` (never raises)."""
    try:
        return positive_number("value", value)
    except ConfigError:
        return default


def positive_int_or_default(value: Any, default: int) -> int:
    """``value`` when :func:`positive_int` accepts it, else ``default`` (never raises)."""
    try:
        return positive_int("value", value)
    except ConfigError:
        return default


def check_callable(name: str, value: Any) -> None:
    """Accept ``None`` or a callable (a hook, a handler).

    Raises:
        ConfigError: anything else.
    """
    if value is not None and not callable(value):
        raise ConfigError("%s must be callable" % name)


def check_channel(channel: Any, error: Callable[[str], Exception] = TypeError) -> str:
    """Return ``channel`` after checking it is non-empty text that encodes to UTF-8 (Redis takes bytes).

    Raises:
        TypeError: (or ``error``) not a non-empty string.
        InvalidNameError: it holds a lone surrogate.
    """
    if not isinstance(channel, str) or not channel:
        raise error("The channel must be a non-empty string")
    if not channel.isascii():
        try:
            channel.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidNameError("channel %r is not valid text (it holds a lone surrogate)" % channel) from None
    return channel


def channel_list(value: Union[None, str, Iterable[str]]) -> List[str]:
    """``None`` -> [], ``"a"`` -> ["a"], an iterable of channels -> list (each :func:`check_channel`).

    Raises:
        ConfigError: a channel is not a non-empty string.
        InvalidNameError: a channel holds a lone surrogate.
    """
    if value is None:
        return []
    channels = [value] if isinstance(value, str) else list(value)
    for channel in channels:
        check_channel(channel, ConfigError)
    return channels


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
#: Schemes a ``redis_config`` URL may have.
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def check_selection_strategy(selection_strategy: Any) -> str:
    """Return ``selection_strategy`` after checking it is one of :data:`SELECTION_STRATEGIES`.

    Raises:
        ConfigError: another value.
    """
    if selection_strategy not in SELECTION_STRATEGIES:
        raise ConfigError("selection_strategy must be one of %s, got %r"
                          % (", ".join(SELECTION_STRATEGIES), selection_strategy))
    return str(selection_strategy)


def check_redis_url(url: str) -> str:
    """Return ``url`` after checking its scheme is one of :data:`REDIS_URL_SCHEMES`.

    Raises:
        ConfigError: another scheme.
    """
    if not url.startswith(REDIS_URL_SCHEMES):
        raise ConfigError("a redis_config URL must start with redis://, rediss://, unix:// or redis+sentinel://")
    return url


#: Schemes of a Sentinel entry's URL (``rediss+``: TLS to the primary).
SENTINEL_URL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
#: The port of a sentinel given without one.
SENTINEL_DEFAULT_PORT = 26379
#: Keys of a Sentinel entry (dict form, or query options of the URL form) about the sentinels
#: themselves; every other key is a redis-py option for the connections to the primary.
SENTINEL_KEYS = frozenset({"sentinels", "service_name", "sentinel_username", "sentinel_password", "sentinel_timeout"})
#: Keys that would give the primary a fixed address: a Sentinel entry asks the sentinels instead.
_ADDRESS_KEYS = ("host", "port", "path", "unix_socket_path", "url")


@dataclass(frozen=True)
class SentinelConfig:
    """A checked Sentinel entry of ``redis_config`` (see :func:`sentinel_config`).

    Attributes:
        sentinels: ``(host, port)`` of each sentinel, in the order given.
        service_name: the primary's name in the sentinels' configuration (``mymaster``).
        sentinel_username, sentinel_password: credentials for the sentinels (never in a repr).
        sentinel_timeout: seconds for connecting to and asking one sentinel.
        primary: a ``redis_config`` entry (dict of redis-py options or ``redis[s]://`` URL) for the
            connections to the primary, whose address is a placeholder replaced by the sentinels'
            answer (never in a repr: it may hold the password).
    """

    sentinels: Tuple[Tuple[str, int], ...]
    service_name: str
    sentinel_username: Optional[str] = None
    sentinel_password: Optional[str] = field(default=None, repr=False)
    sentinel_timeout: float = 0.5
    primary: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """``sentinel:<service name>`` (never a secret)."""
        return "sentinel:%s" % self.service_name

    @property
    def sentinel_list(self) -> str:
        """The sentinels as ``host:port,host:port`` (identifies the group, with :attr:`service_name`)."""
        return ",".join("%s:%d" % address for address in self.sentinels)


def is_sentinel_entry(entry: Any) -> bool:
    """Whether a ``redis_config`` entry names a Sentinel-managed primary (URL or dict form)."""
    if isinstance(entry, str):
        return entry.startswith(SENTINEL_URL_SCHEMES)
    return isinstance(entry, dict) and "sentinels" in entry


def _sentinel_address(item: Any) -> Tuple[str, int]:
    if isinstance(item, str):
        host, sep, port_text = item.strip().rpartition(":")
        if not sep:
            host, port_text = item.strip(), str(SENTINEL_DEFAULT_PORT)
        host = host.strip("[]")
        if not port_text.isdigit():
            raise ConfigError("redis_config sentinel %r: the port must be a number" % item)
        port: Any = int(port_text)
    elif isinstance(item, (list, tuple)) and len(item) == 2:
        host, port = item
    else:
        raise ConfigError("redis_config sentinels must be \"host:port\" strings or [host, port] pairs, got %r" % (item,))
    if not isinstance(host, str) or not host:
        raise ConfigError("redis_config sentinel %r: the host must be a non-empty string" % (item,))
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        raise ConfigError("redis_config sentinel %r: the port must be an int from 1 to 65535" % (item,))
    return host, port


def _service_name(value: Any) -> str:
    if not isinstance(value, str) or not value or "/" in value or any(ch.isspace() for ch in value):
        raise ConfigError("redis_config service_name must be a non-empty name without '/' or spaces, got %r" % (value,))
    return value


def _optional_text(name: str, value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError("redis_config %s must be a string" % name)


def sentinel_config(entry: Any) -> SentinelConfig:
    """Check a Sentinel entry of ``redis_config`` and return it as a :class:`SentinelConfig`.

    Two forms:

    * URL: ``redis+sentinel://[user:password@]host1:26379,host2:26379/<service_name>[/<db>]``
      with optional query options ``sentinel_username``, ``sentinel_password``,
      ``sentinel_timeout`` and any redis-py URL option for the primary (``socket_timeout``...).
      The user and password are the primary's; ``rediss+sentinel://`` uses TLS to the primary.
    * dict: ``{"sentinels": [["host1", 26379], "host2:26379"], "service_name": "mymaster",
      "sentinel_password": ..., "sentinel_username": ..., "sentinel_timeout": ...}`` plus
      redis-py options for the primary (``password``, ``username``, ``db``, ``ssl``...).

    Sentinels are reached over plain TCP; TLS options apply to the primary.

    Raises:
        ConfigError: not a Sentinel entry, no sentinel, a bad address or service name, or an
            option giving the primary a fixed address (``host``, ``port``, ``path``).
    """
    if isinstance(entry, str) and entry.startswith(SENTINEL_URL_SCHEMES):
        return _sentinel_from_url(entry)
    if not isinstance(entry, dict) or "sentinels" not in entry:
        raise ConfigError("a Sentinel redis_config entry is a redis+sentinel:// URL or a dict with \"sentinels\"")
    sentinels = entry["sentinels"]
    if isinstance(sentinels, (str, bytes)) or not isinstance(sentinels, (list, tuple)) or not sentinels:
        raise ConfigError("redis_config sentinels must be a non-empty list of \"host:port\" or [host, port]")
    if "service_name" not in entry:
        raise ConfigError("a Sentinel redis_config entry needs \"service_name\" (the primary's name, such as mymaster)")
    fixed = [key for key in _ADDRESS_KEYS if key in entry]
    if fixed:
        raise ConfigError("a Sentinel redis_config entry gets the primary's address from the sentinels: remove %s"
                          % ", ".join(fixed))
    primary = {key: value for key, value in entry.items() if key not in SENTINEL_KEYS}
    db = primary.get("db", 0)
    if isinstance(db, bool) or not isinstance(db, int) or db < 0:
        raise ConfigError("redis_config db must be a non-negative integer, got %r" % (db,))
    return SentinelConfig(
        sentinels=tuple(_sentinel_address(item) for item in sentinels),
        service_name=_service_name(entry["service_name"]),
        sentinel_username=_optional_text("sentinel_username", entry.get("sentinel_username")),
        sentinel_password=_optional_text("sentinel_password", entry.get("sentinel_password")),
        sentinel_timeout=positive_number("redis_config sentinel_timeout", entry.get("sentinel_timeout", 0.5), finite=True),
        primary=primary)


def _sentinel_from_url(url: str) -> SentinelConfig:
    scheme, _, rest = url.partition("://")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo = ""
    if not hosts:
        raise ConfigError("redis+sentinel URL: no sentinel (redis+sentinel://host1:26379,host2:26379/mymaster)")
    parts = [part for part in path.split("/") if part]
    if not parts or len(parts) > 2:
        raise ConfigError("redis+sentinel URL: the path must be /<service_name> or /<service_name>/<db>")
    service = _service_name(unquote(parts[0]))
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ConfigError("redis+sentinel URL: the database must be a number, got %r" % parts[1])
        db = int(parts[1])
    options: Dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in ("sentinels", "service_name"):
            raise ConfigError("redis+sentinel URL: %s goes in the URL's host list or path, not its query" % key)
        options[key] = value
    timeout_text = options.pop("sentinel_timeout", None)
    try:
        timeout = float(timeout_text) if timeout_text is not None else 0.5
    except ValueError:
        raise ConfigError("redis+sentinel URL: sentinel_timeout must be a number of seconds") from None
    sentinel_username = options.pop("sentinel_username", None)
    sentinel_password = options.pop("sentinel_password", None)
    # The primary as a redis:// URL whose address the sentinels' answer replaces.
    primary = "%s://%s127.0.0.1:6379/%d" % ("rediss" if scheme == "rediss+sentinel" else "redis",
                                            userinfo + "@" if userinfo else "", db)
    if options:
        primary += "?" + urlencode(options, quote_via=quote)
    return SentinelConfig(
        sentinels=tuple(_sentinel_address(item) for item in hosts.split(",")), service_name=service,
        sentinel_username=sentinel_username or None, sentinel_password=sentinel_password or None,
        sentinel_timeout=positive_number("redis_config sentinel_timeout", timeout, finite=True), primary=primary)


def redis_config_list(redis_config: Any) -> List[Any]:
    """One entry (a dict or URL) or a list / tuple of entries, as a list; entries are checked later.

    Raises:
        ConfigError: anything else.
    """
    if isinstance(redis_config, (str, dict)):
        return [redis_config]
    if not isinstance(redis_config, (list, tuple)):
        raise ConfigError("redis_config must be a list of dicts or redis:// URLs")
    return list(redis_config)


def check_redis_options(redis_config: Any, selection_strategy: Any, redis_codec: Any) -> None:
    """Validate the Redis options in the constructor (not later, when the bus starts)."""
    check_selection_strategy(selection_strategy)
    if redis_codec not in REDIS_CODECS:
        raise ConfigError("redis_codec must be one of %s, got %r" % (", ".join(REDIS_CODECS), redis_codec))
    if isinstance(redis_config, (str, dict)):
        raise ConfigError("redis_config must be a list of entries (dicts or URLs), e.g. [%r]" % (redis_config,))
    items = list(redis_config or [])
    check_cluster_entries(items)
    for item in items:
        if is_cluster_entry(item):
            continue
        if is_sentinel_entry(item):
            sentinel_config(item)
        elif isinstance(item, str):
            check_redis_url(item)
        elif not isinstance(item, dict):
            raise ConfigError("each redis_config entry must be a dict of connection options or a URL string")


# Redis Cluster entries ------------------------------------------------------------------------

#: Schemes of a Redis Cluster URL (``rediss+cluster://``: TLS to every node).
CLUSTER_URL_SCHEMES = ("redis+cluster://", "rediss+cluster://")


@dataclass(frozen=True)
class ClusterConfig:
    """A checked Redis Cluster ``redis_config`` entry.

    Attributes:
        seeds: ``(host, port)`` of the nodes to read the topology from (any reachable one).
        options: redis-py keyword options shared by every node (``password``, ``username``,
            ``ssl``...; never ``host`` / ``port``); kept out of the repr (secrets).
        url_template: for a URL entry, ``scheme://userinfo@%s:%d?query``, else ``None``.
    """

    seeds: Tuple[Tuple[str, int], ...]
    options: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    url_template: Optional[str] = field(default=None, repr=False, compare=False)

    def node_config(self, host: str, port: int) -> Union[str, Dict[str, Any]]:
        """The ordinary ``redis_config`` entry (URL or dict) of one node of the cluster."""
        if self.url_template is not None:
            return self.url_template % (host.replace("%", "%%"), port)
        config = dict(self.options)
        config.update(host=host, port=port)
        return config


def is_cluster_entry(item: Any) -> bool:
    """Whether a ``redis_config`` entry names a Redis Cluster (URL scheme or ``"cluster"`` key)."""
    if isinstance(item, str):
        return item.startswith(CLUSTER_URL_SCHEMES)
    return isinstance(item, dict) and "cluster" in item


def _seed(value: Any) -> Tuple[str, int]:
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ConfigError("redis_config cluster seed %r must be 'host:port'" % value)
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        host, port = value
    else:
        raise ConfigError("redis_config cluster seeds must be 'host:port' strings or [host, port] pairs, got %r" % (value,))
    host = str(host).strip("[]")
    if not host:
        raise ConfigError("redis_config cluster seed %r has no host" % (value,))
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise ConfigError("redis_config cluster seed %r has no valid port" % (value,)) from None
    if not 0 < number < 65536 or isinstance(port, bool):
        raise ConfigError("redis_config cluster seed %r has no valid port" % (value,))
    return host, number


def parse_cluster_entry(item: Any) -> ClusterConfig:
    """Check a Redis Cluster entry and return it as a :class:`ClusterConfig`.

    Forms: ``redis+cluster://[user:password@]h1:7000,h2:7001[/0][?options]`` (``rediss+cluster``
    for TLS; the query holds redis-py URL options) or ``{"cluster": ["h1:7000", ["h2", 7001]],
    "password": ..., "ssl": ...}`` (every other key is a redis-py option for all nodes).

    Raises:
        ConfigError: no seed, a malformed seed, ``host`` / ``port`` / a non-zero ``db`` given
            (a cluster has database 0 only).
    """
    if isinstance(item, str):
        if not item.startswith(CLUSTER_URL_SCHEMES):
            raise ConfigError("a Redis Cluster URL must start with redis+cluster:// or rediss+cluster://")
        scheme, rest = item.split("+cluster://", 1)
        netloc, sep, tail = rest.partition("/")
        query = ""
        if not sep:
            netloc, _, query = netloc.partition("?")
        userinfo, _, hosts = netloc.rpartition("@")
        path, _, query_tail = tail.partition("?")
        query = query or query_tail
        if path not in ("", "0"):
            raise ConfigError("a Redis Cluster has database 0 only (URL path %r)" % path)
        seeds = tuple(_seed(part) for part in hosts.split(",") if part)
        if not seeds:
            raise ConfigError("redis_config cluster URL names no seed node (redis+cluster://host:port,...)")
        template = "%s://%s%%s:%%d%s" % (scheme, userinfo + "@" if userinfo else "", "?" + query if query else "")
        return ClusterConfig(seeds=seeds, url_template=template)
    if not isinstance(item, dict) or "cluster" not in item:
        raise ConfigError("a Redis Cluster entry is a redis+cluster:// URL or a dict with a 'cluster' list")
    raw = item["cluster"]
    if isinstance(raw, str) or not isinstance(raw, (list, tuple)) or not raw:
        raise ConfigError("redis_config 'cluster' must be a non-empty list of 'host:port' or [host, port] seeds")
    options = {key: value for key, value in item.items() if key != "cluster"}
    for key in ("host", "port", "path", "unix_socket_path"):
        if key in options:
            raise ConfigError("redis_config cluster entry: %r is not allowed (the nodes come from 'cluster')" % key)
    if options.get("db"):
        raise ConfigError("a Redis Cluster has database 0 only (db=%r)" % (options["db"],))
    return ClusterConfig(seeds=tuple(_seed(seed) for seed in raw), options=options)


def check_cluster_entries(items: List[Any]) -> Optional[ClusterConfig]:
    """The cluster entry of a ``redis_config`` list, checked, or ``None`` when there is none.

    Raises:
        ConfigError: a malformed cluster entry, or a cluster entry that is not the only one (a
            Redis Cluster is one bus node set of its own: it cannot be mixed with other nodes).
    """
    clusters = [item for item in items if is_cluster_entry(item)]
    if not clusters:
        return None
    if len(items) != 1:
        raise ConfigError("a Redis Cluster entry must be the only redis_config entry (got %d entries): the "
                          "cluster is one shared bus; list several seeds inside it instead" % len(items))
    return parse_cluster_entry(clusters[0])


def require_server_name(server_name: Any) -> str:
    """Return ``server_name`` after checking it is a non-empty string (no template expansion).

    Raises:
        ConfigError: anything else.
    """
    if not isinstance(server_name, str) or not server_name:
        raise ConfigError("server_name must be specified for cross-server communication to work reliably.")
    return server_name


@dataclass(frozen=True)
class BusOptions:
    """The bus options that :func:`check_bus_options` returns as lists."""

    redis_config: List[Any]
    custom: List[str]
    initial: List[str]


def check_bus_options(*, server_name: Any, bridge_prefix: Any, ws_prefix: Any, selection_strategy: Any,
                      seconds: Dict[str, Any], hooks: Dict[str, Any], redis_config: Any,
                      custom_channels: Union[None, str, Iterable[str]], initial_channels: Iterable[str]) -> BusOptions:
    """Validate the cross-server bus's options (the codec's are checked by the codec).

    Args:
        seconds: option name -> a value that must be a positive number.
        hooks: option name -> ``None`` or a callable.

    Returns:
        The Redis config as a list and the custom and initial channels as lists.

    Raises:
        ConfigError: an invalid option.
        InvalidNameError: a channel holds a lone surrogate.
    """
    require_server_name(server_name)
    check_prefixes(bridge_prefix, ws_prefix)
    check_selection_strategy(selection_strategy)
    for name, value in seconds.items():
        positive_number(name, value)
    for name, hook in hooks.items():
        check_callable(name, hook)
    configs = redis_config_list(redis_config)
    check_cluster_entries(configs)
    return BusOptions(redis_config=configs, custom=channel_list(custom_channels),
                      initial=channel_list(initial_channels))


@dataclass(frozen=True)
class RecoveryOptions:
    """``connection_state_recovery`` options (checked by :func:`crossws_sync.config.recovery_options`).

    Attributes:
        max_disconnection: seconds a disconnected client can still be recovered.
        history_size: entries kept per stream (older ones are trimmed).
        max_replay: most messages replayed to one reconnecting client; more gives ``recovered=False``.
        wait_timeout: seconds the server waits for the client's recovery request after the upgrade.
        history_replicas: 0 (default): the history's epoch follows the Redis process, so a client
            away across a failover is not recovered. N >= 1: an append is published only once N
            replicas of the history's primary acknowledged it (``WAIT``), and the epoch survives a
            failover: recovering clients lose nothing across one (docs/reliability.md).
        replica_timeout: seconds one ``WAIT`` may block the history connection (at most half its
            command timeout is used); appends not confirmed by then wait, unpublished, for the next.
    """

    max_disconnection: float = 120.0
    history_size: int = 1000
    max_replay: int = 5000
    wait_timeout: float = 5.0
    history_replicas: int = 0
    replica_timeout: float = 0.5

    @property
    def refresh_interval(self) -> float:
        """How often live sessions' TTLs are extended."""
        return max(1.0, self.max_disconnection / 4.0)

    @property
    def session_ttl(self) -> float:
        """TTL given to a live session: it outlives a crash of its node by ``max_disconnection``."""
        return self.max_disconnection + self.refresh_interval


#: Keys accepted in ``connection_state_recovery``.
RECOVERY_OPTION_KEYS = frozenset({"max_disconnection", "history_size", "max_replay", "wait_timeout",
                                  "history_replicas", "replica_timeout"})
#: Most replicas ``history_replicas`` may ask for.
MAX_HISTORY_REPLICAS = 16


def recovery_options(value: Any) -> Optional[RecoveryOptions]:
    """Check ``connection_state_recovery``: ``None`` / ``False`` (off), ``True`` (defaults) or a
    dict of :class:`RecoveryOptions` fields.

    Raises:
        ConfigError: an unknown key or a bad value.
    """
    if value is None or value is False:
        return None
    if value is True:
        return RecoveryOptions()
    if not isinstance(value, dict):
        raise ConfigError("connection_state_recovery must be None, True or a dict such as "
                          "{\"max_disconnection\": 120.0, \"history_size\": 1000}")
    unknown = set(value) - RECOVERY_OPTION_KEYS
    if unknown:
        raise ConfigError("connection_state_recovery: unknown option(s) %s (known: %s)"
                          % (", ".join(sorted(map(str, unknown))), ", ".join(sorted(RECOVERY_OPTION_KEYS))))
    defaults = RecoveryOptions()
    return RecoveryOptions(
        max_disconnection=positive_number("connection_state_recovery max_disconnection",
                                          value.get("max_disconnection", defaults.max_disconnection), finite=True),
        history_size=positive_int("connection_state_recovery history_size", value.get("history_size", defaults.history_size)),
        max_replay=positive_int("connection_state_recovery max_replay", value.get("max_replay", defaults.max_replay)),
        wait_timeout=positive_number("connection_state_recovery wait_timeout",
                                     value.get("wait_timeout", defaults.wait_timeout), finite=True),
        history_replicas=_history_replicas(value.get("history_replicas", defaults.history_replicas)),
        replica_timeout=_replica_timeout(value.get("replica_timeout", defaults.replica_timeout)),
    )


def _history_replicas(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_HISTORY_REPLICAS:
        raise ConfigError("connection_state_recovery history_replicas must be an int from 0 to %d, got %r"
                          % (MAX_HISTORY_REPLICAS, value))
    return value


def _replica_timeout(value: Any) -> float:
    seconds = positive_number("connection_state_recovery replica_timeout", value, finite=True)
    if seconds > 5.0:
        raise ConfigError("connection_state_recovery replica_timeout must be at most 5.0 s (a WAIT blocks the "
                          "history connection that long), got %r" % (value,))
    return float(seconds)


@dataclass(frozen=True)
class MetricsOptions:
    """Where the Prometheus metrics are served (``metrics=True`` or a dict of these fields).

    Attributes:
        path: the exact URL path of the metrics (GET only).
        auth: ``auth(request) -> bool`` called with the scrape's :class:`~crossws_sync.Request`;
            False answers 403 (``None``: anyone who reaches the port may scrape).
        multiprocess_dir: a directory shared by the workers of one gunicorn master: each worker
            writes its metrics there and a scrape of any worker answers for all of them
            (``None``: the ``PROMETHEUS_MULTIPROC_DIR`` environment variable, if set).
    """

    path: str = "/metrics"
    auth: Optional[Callable[[Any], bool]] = None
    multiprocess_dir: Optional[str] = None


@dataclass(frozen=True)
class HealthOptions:
    """The paths of the probes (``health=True`` or a dict of these fields).

    Attributes:
        liveness_path: 200 while the process serves HTTP.
        readiness_path: 200 when the node can take traffic, 503 otherwise.
    """

    liveness_path: str = "/healthz"
    readiness_path: str = "/readyz"


@dataclass(frozen=True)
class DashboardOptions:
    """The live cluster dashboard (``dashboard={"auth": check}`` or a dict of these fields).

    Attributes:
        path: the exact URL path of the page; its JSON snapshot is at ``path + "/data"``.
        auth: ``auth(request) -> bool`` called with each request's
            :class:`~crossws_sync.Request`; False (or an exception) answers 403. ``None`` serves
            the dashboard to anyone who reaches the port, and must be given explicitly.
        top_rooms: how many of the largest rooms the snapshot lists (totals cover every room).
        interval: seconds between two samples of the message counters, and between two polls
            of the page.
        history: seconds of rate samples kept, so a page opened now draws its chart at once.
    """

    path: str = "/dashboard"
    auth: Optional[Callable[[Any], bool]] = None
    top_rooms: int = 50
    interval: float = 1.0
    history: float = 120.0

    @property
    def data_path(self) -> str:
        """The path of the JSON snapshot."""
        return self.path.rstrip("/") + "/data"

    @property
    def samples(self) -> int:
        """How many rate samples are kept (``history / interval``, at least 2)."""
        return max(2, int(round(self.history / self.interval)))


#: Keys of the ``dashboard`` option.
DASHBOARD_KEYS = frozenset({"path", "auth", "top_rooms", "interval", "history"})


def dashboard_options(value: Any) -> Optional[DashboardOptions]:
    """Check ``dashboard``: ``False`` / ``None`` (off) or a dict of :class:`DashboardOptions`
    fields that names ``auth``.

    The dashboard shows user ids, room names and the cluster's layout, so it is never open by
    accident: ``dashboard=True`` and a dict without ``auth`` are refused, and ``{"auth": None}``
    is how an open dashboard is asked for.

    Raises:
        ConfigError: ``True``, no ``auth`` key, an unknown key or a bad value.
    """
    if value is None or value is False:
        return None
    if value is True:
        raise ConfigError("dashboard=True would show user ids and rooms to anyone who reaches the port: pass "
                          "dashboard={\"auth\": check} with check(request) -> bool, or dashboard={\"auth\": None} "
                          "to serve it open on purpose")
    if not isinstance(value, dict):
        raise ConfigError("dashboard must be False or a dict such as {\"auth\": check, \"path\": \"/dashboard\"}")
    unknown = set(value) - DASHBOARD_KEYS
    if unknown:
        raise ConfigError("dashboard: unknown option(s) %s (known: %s)"
                          % (", ".join(sorted(map(str, unknown))), ", ".join(sorted(DASHBOARD_KEYS))))
    if "auth" not in value:
        raise ConfigError("dashboard needs an \"auth\" hook, check(request) -> bool; {\"auth\": None} serves it "
                          "open on purpose")
    check_callable("dashboard auth", value["auth"])
    path = _url_path("dashboard path", value.get("path", "/dashboard"))
    if path == "/":
        raise ConfigError("dashboard path must not be '/'")
    interval = positive_number("dashboard interval", value.get("interval", 1.0), finite=True)
    history = positive_number("dashboard history", value.get("history", 120.0), finite=True)
    if not 0.1 <= interval <= 60:
        raise ConfigError("dashboard interval must be from 0.1 to 60 seconds, got %r" % (interval,))
    if not interval * 2 <= history <= 3600:
        raise ConfigError("dashboard history must be from 2 intervals to 3600 seconds, got %r" % (history,))
    top_rooms = positive_int("dashboard top_rooms", value.get("top_rooms", 50))
    if top_rooms > 1000:
        raise ConfigError("dashboard top_rooms must be at most 1000 (the snapshot stays small), got %r" % (top_rooms,))
    return DashboardOptions(path=path, auth=value["auth"], top_rooms=top_rooms, interval=interval, history=history)


def _url_path(option: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "?" in value:
        raise ConfigError("%s must be a URL path starting with '/', got %r" % (option, value))
    return value


def metrics_options(value: Any) -> Optional[MetricsOptions]:
    """Check ``metrics``: ``False`` / ``None`` (off), ``True`` (defaults) or a dict of
    :class:`MetricsOptions` fields.

    Raises:
        ConfigError: an unknown key or a bad value.
    """
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError("metrics must be False, True or a dict such as {\"path\": \"/metrics\", \"auth\": check}")
    unknown = set(value) - {"path", "auth", "multiprocess_dir"}
    if unknown:
        raise ConfigError("metrics: unknown option(s) %s (known: auth, multiprocess_dir, path)"
                          % ", ".join(sorted(map(str, unknown))))
    check_callable("metrics auth", value.get("auth"))
    directory = value.get("multiprocess_dir", os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None)
    if directory is not None and (not isinstance(directory, str) or not directory):
        raise ConfigError("metrics multiprocess_dir must be a directory path, got %r" % (directory,))
    return MetricsOptions(path=_url_path("metrics path", value.get("path", "/metrics")), auth=value.get("auth"),
                          multiprocess_dir=directory)


def health_options(value: Any) -> Optional[HealthOptions]:
    """Check ``health``: ``False`` / ``None`` (off), ``True`` (``/healthz`` and ``/readyz``) or a
    dict with ``liveness_path`` and/or ``readiness_path``.

    Raises:
        ConfigError: an unknown key, a bad path, or both probes on one path.
    """
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError("health must be False, True or a dict such as {\"readiness_path\": \"/readyz\"}")
    unknown = set(value) - {"liveness_path", "readiness_path"}
    if unknown:
        raise ConfigError("health: unknown option(s) %s (known: liveness_path, readiness_path)"
                          % ", ".join(sorted(map(str, unknown))))
    options = HealthOptions(liveness_path=_url_path("health liveness_path", value.get("liveness_path", "/healthz")),
                            readiness_path=_url_path("health readiness_path", value.get("readiness_path", "/readyz")))
    if options.liveness_path == options.readiness_path:
        raise ConfigError("health: liveness_path and readiness_path must differ")
    return options
