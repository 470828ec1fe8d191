"""crossws_sync.config (pure): ws_options, prefixes, server names, the number/list checkers, and the
cross-server bus's checkers (channels, hooks, strategies, Redis config, per-call ``*_or_default`` forms)."""
import dataclasses
import math
import os
import re

import pytest

from crossws_sync.bus import STRATEGIES
from crossws_sync.config import (
    SELECTION_STRATEGIES,
    WS_OPTION_KEYS,
    BusOptions,
    ListenOptions,
    as_list,
    channel_list,
    check_bus_options,
    check_callable,
    check_channel,
    check_prefixes,
    check_redis_url,
    check_selection_strategy,
    parse_ws_options,
    positive_int,
    positive_int_or_default,
    positive_number,
    positive_number_or_default,
    redis_config_list,
    require_server_name,
    resolve_server_name,
)
from crossws_sync.errors import ConfigError, CrossWSError, InvalidNameError

# parse_ws_options ---------------------------------------------------------------------------------


def test_none_disables_websocket():
    assert parse_ws_options(None) == (None, None)


def test_defaults():
    listen, max_payload = parse_ws_options({})
    assert listen == ListenOptions()
    assert listen.host == "0.0.0.0" and listen.port is None and listen.path is None
    assert listen.no_server is False and listen.ssl_args is None
    assert max_payload is None


def test_all_known_options():
    app = object()
    listen, max_payload = parse_ws_options(
        {"host": "127.0.0.1", "port": 9101, "path": "/ws", "app": app, "backlog": 64, "max_payload": 4096}
    )
    assert listen == ListenOptions(host="127.0.0.1", port=9101, path="/ws", app=app, backlog=64)
    assert max_payload == 4096


def test_original_camel_case_spellings_are_accepted():
    listen, max_payload = parse_ws_options({"noServer": True, "maxPayload": 1024})
    assert listen.no_server is True
    assert max_payload == 1024
    listen, _ = parse_ws_options({"no_server": True})
    assert listen.no_server is True


def test_ssl_arguments():
    context = object()
    assert parse_ws_options({"ssl_context": context})[0].ssl_args == {"ssl_context": context}
    listen, _ = parse_ws_options({"certfile": "c.pem", "keyfile": "k.pem"})
    assert listen.ssl_args == {"certfile": "c.pem", "keyfile": "k.pem"}
    assert parse_ws_options({"keyfile": "k.pem"})[0].ssl_args is None


def test_listen_options_are_frozen():
    listen, _ = parse_ws_options({"port": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        listen.port = 2


@pytest.mark.parametrize("bad", [{"prot": 80}, {"port": 80, "clientTracking": False}, {"Host": "x"}, {"server": None}])
def test_unknown_keys_are_rejected_by_name(bad):
    with pytest.raises(ConfigError) as info:
        parse_ws_options(bad)
    unknown = sorted(set(bad) - WS_OPTION_KEYS)
    for key in unknown:
        assert key in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, CrossWSError)


@pytest.mark.parametrize("ws_options", [[("port", 80)], "port=80", 80, True])
def test_non_dict_is_rejected(ws_options):
    with pytest.raises(ConfigError):
        parse_ws_options(ws_options)


@pytest.mark.parametrize("port", [0, 1, 8080, 65535, None])
def test_valid_ports(port):
    assert parse_ws_options({"port": port})[0].port == port


@pytest.mark.parametrize("port", [-1, 65536, 100000, "8080", 80.0, True, False, [80]])
def test_bad_ports(port):
    with pytest.raises(ConfigError, match="port"):
        parse_ws_options({"port": port})


@pytest.mark.parametrize("path", ["/", "/ws", "/a/b?x"])
def test_valid_paths(path):
    assert parse_ws_options({"path": path})[0].path == path


@pytest.mark.parametrize("path", ["", "ws", "chat/", 1, b"/ws"])
def test_bad_paths(path):
    with pytest.raises(ConfigError, match="path"):
        parse_ws_options({"path": path})


@pytest.mark.parametrize("key", ["max_payload", "maxPayload"])
@pytest.mark.parametrize("value", [0, -1, 1.5, "1024", True])
def test_bad_max_payload(key, value):
    with pytest.raises(ConfigError):
        parse_ws_options({key: value})


# check_prefixes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bridge, ws", [("csbp:", "ws:"), ("a:", "b:"), ("bridge", "ws"), ("x:", "y")])
def test_distinct_prefixes_are_accepted(bridge, ws):
    assert check_prefixes(bridge, ws) is None


@pytest.mark.parametrize(
    "bridge, ws",
    [("same:", "same:"), ("ws:", "ws:bridge:"), ("csbp:ws:", "csbp:"), ("a", "ab"), ("ab", "a")],
)
def test_equal_or_mutually_prefixed_prefixes_are_rejected(bridge, ws):
    with pytest.raises(ConfigError) as info:
        check_prefixes(bridge, ws)
    message = str(info.value)
    assert bridge in message and ws in message


@pytest.mark.parametrize("bridge, ws", [("", "ws:"), ("csbp:", ""), (None, "ws:"), ("csbp:", 5)])
def test_empty_or_non_string_prefixes_are_rejected(bridge, ws):
    with pytest.raises(ConfigError, match="must be a non-empty string"):
        check_prefixes(bridge, ws)


# resolve_server_name ----------------------------------------------------------------------------------


def test_default_server_name_is_host_and_pid(monkeypatch):
    monkeypatch.delenv("CROSSWS_WORKER_ID", raising=False)
    name = resolve_server_name(None)
    host, pid = name.rsplit("-", 1)
    assert pid == str(os.getpid())
    assert host and "." not in host and len(host) <= 12


def test_placeholders_are_expanded(monkeypatch):
    monkeypatch.setenv("CROSSWS_WORKER_ID", "3")
    name = resolve_server_name("api-{host}-{pid}-w{worker}")
    match = re.fullmatch(r"api-(.+)-(\d+)-w3", name)
    assert match, name
    assert match.group(2) == str(os.getpid())
    assert match.group(1) == resolve_server_name("{host}")


def test_worker_defaults_to_zero(monkeypatch):
    monkeypatch.delenv("CROSSWS_WORKER_ID", raising=False)
    assert resolve_server_name("w{worker}") == "w0"


def test_literal_names_are_kept():
    assert resolve_server_name("node-a") == "node-a"
    assert resolve_server_name("{{literal}}") == "{literal}"


@pytest.mark.parametrize("template", ["node-{id}", "node-{0}", "node-{", "node-}", "{pid!z}", "", 42])
def test_bad_templates_are_config_errors(template):
    with pytest.raises(ConfigError):
        resolve_server_name(template)


# positive_number / positive_int / as_list ----------------------------------------------------------------


def test_positive_number():
    assert positive_number("t", 5) == 5.0 and isinstance(positive_number("t", 5), float)
    assert positive_number("t", 0.25) == 0.25
    assert positive_number("t", None, allow_none=True) is None
    assert positive_number("t", 0, allow_zero=True) == 0.0


@pytest.mark.parametrize("value", [0, -1, -0.5, None, "5", True, float("nan"), [1]])
def test_positive_number_rejects(value):
    with pytest.raises(ConfigError, match="^t "):
        positive_number("t", value)


def test_positive_number_zero_allowed_but_not_negative():
    with pytest.raises(ConfigError, match="non-negative"):
        positive_number("t", -1, allow_zero=True)


def test_positive_int():
    assert positive_int("n", 3) == 3
    assert positive_int("n", None, allow_none=True) is None
    for value in (0, -2, 1.0, "3", True, None):
        with pytest.raises(ConfigError, match="^n must be a positive integer"):
            positive_int("n", value)


def test_as_list():
    assert as_list(None, "x") == []
    assert as_list("game", "x") == ["game"]
    assert as_list(("a", "b"), "x") == ["a", "b"]
    assert as_list(iter(["a"]), "x") == ["a"]
    for bad in (["a", ""], ["a", 1], [None]):
        with pytest.raises(ConfigError, match="^x must contain non-empty strings"):
            as_list(bad, "x")


# The cross-server bus's checkers ------------------------------------------------------------------


def options(**overrides):
    kwargs = dict(server_name="a", bridge_prefix="csbp:", ws_prefix="ws:", selection_strategy="random",
                  seconds={"redis_ping_interval": 5.0}, hooks={"ws_message_handler": None}, redis_config=[],
                  custom_channels=None, initial_channels=())
    kwargs.update(overrides)
    return check_bus_options(**kwargs)


def test_one_strategy_tuple():
    assert STRATEGIES is SELECTION_STRATEGIES
    assert check_selection_strategy("round-robin") == "round-robin"
    with pytest.raises(ConfigError, match="selection_strategy"):
        check_selection_strategy("fast")


@pytest.mark.parametrize("value, default, expected", [
    (2, 5.0, 2.0), (0.5, 5.0, 0.5), (0, 5.0, 5.0), (-1, 5.0, 5.0), (None, 5.0, 5.0), ("3", 5.0, 5.0),
    (True, 5.0, 5.0), (float("nan"), 5.0, 5.0)])
def test_positive_number_or_default(value, default, expected):
    result = positive_number_or_default(value, default)
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize("value, expected", [(3, 3), (0, 1), (-2, 1), (2.0, 1), (True, 1), (None, 1), ("2", 1)])
def test_positive_int_or_default(value, expected):
    assert positive_int_or_default(value, 1) == expected


def test_check_channel():
    assert check_channel("ws:é") == "ws:é"
    for bad in ("", None, 1):
        with pytest.raises(TypeError):
            check_channel(bad)
        with pytest.raises(ConfigError):
            check_channel(bad, ConfigError)
    with pytest.raises(InvalidNameError):
        check_channel("ws:\udc00")


def test_channel_list():
    assert channel_list(None) == [] and channel_list("a") == ["a"] and channel_list(iter(["a", "b"])) == ["a", "b"]
    with pytest.raises(ConfigError):
        channel_list(["a", ""])


def test_check_callable():
    check_callable("hook", None)
    check_callable("hook", print)
    with pytest.raises(ConfigError, match="^hook must be callable"):
        check_callable("hook", "print")


def test_redis_config():
    assert redis_config_list("redis://h") == ["redis://h"] and redis_config_list({"host": "h"}) == [{"host": "h"}]
    assert redis_config_list(({"host": "h"},)) == [{"host": "h"}]
    with pytest.raises(ConfigError):
        redis_config_list(42)
    assert check_redis_url("rediss://h:1") == "rediss://h:1"
    with pytest.raises(ConfigError, match="must start with"):
        check_redis_url("http://h")


def test_server_name_is_required():
    assert require_server_name("n") == "n"
    for bad in ("", None, 3):
        with pytest.raises(ConfigError, match="^server_name must be specified"):
            require_server_name(bad)


def test_check_bus_options_normalizes_lists():
    assert options(redis_config={"host": "h"}, custom_channels="news", initial_channels=iter(["ws:b"])) == \
        BusOptions(redis_config=[{"host": "h"}], custom=["news"], initial=["ws:b"])


@pytest.mark.parametrize("overrides, match", [
    ({"server_name": ""}, "server_name"),
    ({"bridge_prefix": "ws:b"}, "different"),
    ({"ws_prefix": ""}, "non-empty"),
    ({"selection_strategy": "x"}, "selection_strategy"),
    ({"seconds": {"connect_timeout": 0}}, "^connect_timeout must be positive"),
    ({"seconds": {"connect_timeout": math.nan}}, "connect_timeout"),
    ({"hooks": {"on_server_name_conflict": 1}}, "on_server_name_conflict must be callable"),
    ({"redis_config": 1}, "redis_config"),
    ({"custom_channels": [""]}, "non-empty"),
])
def test_check_bus_options_rejects(overrides, match):
    with pytest.raises(ConfigError, match=match):
        options(**overrides)


def test_finite_numbers_and_non_negative_ints_for_other_callers():
    from crossws_sync.config import positive_int, positive_number

    assert positive_number("t", math.inf) == math.inf
    with pytest.raises(ConfigError, match="^t must be finite"):
        positive_number("t", math.inf, finite=True)
    assert positive_number("t", 2, finite=True) == 2.0
    assert positive_int("n", 0, allow_zero=True) == 0
    with pytest.raises(ConfigError, match="^n must be a non-negative integer"):
        positive_int("n", -1, allow_zero=True)
    with pytest.raises(ConfigError, match="^n must be a positive integer"):
        positive_int("n", 0)


# Redis Cluster entries ------------------------------------------------------------------------

from crossws_sync.config import ClusterConfig, check_cluster_entries, check_redis_options, is_cluster_entry, parse_cluster_entry  # noqa: E402


def test_cluster_url_entry():
    config = parse_cluster_entry("redis+cluster://user:s3cret@h1:7000,h2:7001?socket_timeout=3")
    assert config.seeds == (("h1", 7000), ("h2", 7001))
    assert config.node_config("10.0.0.5", 7005) == "redis://user:s3cret@10.0.0.5:7005?socket_timeout=3"
    assert "s3cret" not in repr(config)
    tls = parse_cluster_entry("rediss+cluster://h1:7000/0")
    assert tls.node_config("h3", 7002) == "rediss://h3:7002"


def test_cluster_dict_entry():
    config = parse_cluster_entry({"cluster": ["h1:7000", ["h2", 7001]], "password": "pw", "ssl": True})
    assert config.seeds == (("h1", 7000), ("h2", 7001))
    assert config.node_config("h3", 7002) == {"password": "pw", "ssl": True, "host": "h3", "port": 7002}
    assert "pw" not in repr(config)
    assert is_cluster_entry({"cluster": []}) and is_cluster_entry("redis+cluster://h:1")
    assert not is_cluster_entry({"host": "h"}) and not is_cluster_entry("redis://h")


@pytest.mark.parametrize("entry,message", [
    ("redis+cluster://", "no seed"),
    ("redis+cluster://h1", "host:port"),
    ("redis+cluster://h1:x", "valid port"),
    ("redis+cluster://h1:7000/3", "database 0"),
    ({"cluster": []}, "non-empty list"),
    ({"cluster": "h1:7000"}, "non-empty list"),
    ({"cluster": [["h1"]]}, "seeds must be"),
    ({"cluster": ["h1:7000"], "host": "h"}, "'host' is not allowed"),
    ({"cluster": ["h1:7000"], "db": 2}, "database 0"),
    ({"cluster": ["h1:70000"]}, "valid port"),
])
def test_cluster_entry_errors(entry, message):
    with pytest.raises(ConfigError, match=message):
        check_cluster_entries([entry])


def test_cluster_entry_must_be_the_only_one():
    assert check_cluster_entries([{"host": "h"}, "redis://x"]) is None
    assert isinstance(check_cluster_entries(["redis+cluster://h:1"]), ClusterConfig)
    with pytest.raises(ConfigError, match="only redis_config entry"):
        check_cluster_entries(["redis+cluster://h:1", {"host": "h"}])
    with pytest.raises(ConfigError, match="only redis_config entry"):
        check_redis_options(["redis+cluster://h:1", "redis+cluster://h:2"], "random", "json")
    with pytest.raises(ConfigError, match="only redis_config entry"):
        options(redis_config=[{"cluster": ["h:1"]}, "redis://h"])
    check_redis_options(["redis+cluster://h:1"], "random", "json")
    with pytest.raises(ConfigError, match="must be a list"):
        check_redis_options("redis+cluster://h:1", "random", "json")


# Sentinel entries of redis_config ---------------------------------------------------------------

from crossws_sync.config import SentinelConfig, is_sentinel_entry, sentinel_config  # noqa: E402


def test_sentinel_url_gives_sentinels_service_db_and_the_primary_options():
    config = sentinel_config("redis+sentinel://app:s3cret@h1:26379,h2,[::1]:26380/mymaster/3"
                             "?sentinel_password=sp&sentinel_username=su&sentinel_timeout=0.25&socket_timeout=1.5")
    assert config.sentinels == (("h1", 26379), ("h2", 26379), ("::1", 26380))
    assert config.service_name == "mymaster" and config.label == "sentinel:mymaster"
    assert (config.sentinel_username, config.sentinel_password, config.sentinel_timeout) == ("su", "sp", 0.25)
    # the primary is a redis:// URL whose address the sentinels' answer replaces
    assert config.primary == "redis://app:s3cret@127.0.0.1:6379/3?socket_timeout=1.5"
    assert config.sentinel_list == "h1:26379,h2:26379,::1:26380"
    assert sentinel_config("rediss+sentinel://h1/svc").primary.startswith("rediss://")
    assert sentinel_config("redis+sentinel://h1:1/svc").primary == "redis://127.0.0.1:6379/0"


def test_sentinel_dict_accepts_pairs_and_strings_and_keeps_primary_options():
    config = sentinel_config({"sentinels": [["h1", 26379], "h2:26380", ("h3", 1)], "service_name": "svc",
                              "password": "pw", "db": 2, "sentinel_password": "sp", "ssl": True})
    assert config.sentinels == (("h1", 26379), ("h2", 26380), ("h3", 1))
    assert config.primary == {"password": "pw", "db": 2, "ssl": True}
    assert config.sentinel_password == "sp" and config.sentinel_timeout == 0.5


def test_sentinel_secrets_never_in_the_repr():
    for entry in ("redis+sentinel://u:PRIMARYPW@h1/svc?sentinel_password=SENTINELPW",
                  {"sentinels": ["h1:1"], "service_name": "svc", "password": "PRIMARYPW", "sentinel_password": "SENTINELPW"}):
        text = repr(sentinel_config(entry))
        assert "PRIMARYPW" not in text and "SENTINELPW" not in text and "svc" in text


@pytest.mark.parametrize("entry, message", [
    ("redis+sentinel:///svc", "no sentinel"),
    ("redis+sentinel://h1:26379", "/<service_name>"),
    ("redis+sentinel://h1:26379/svc/x", "database must be a number"),
    ("redis+sentinel://h1:26379/a/1/2", "/<service_name>"),
    ("redis+sentinel://h1:port/svc", "port must be a number"),
    ("redis+sentinel://h1:70000/svc", "1 to 65535"),
    ("redis+sentinel://h1/svc?sentinel_timeout=soon", "sentinel_timeout"),
    ("redis+sentinel://h1/svc?sentinel_timeout=0", "sentinel_timeout"),
    ("redis+sentinel://h1/svc?service_name=x", "not its query"),
    ({"sentinels": [], "service_name": "svc"}, "non-empty list"),
    ({"sentinels": "h1:26379", "service_name": "svc"}, "non-empty list"),
    ({"sentinels": ["h1"]}, "needs \"service_name\""),
    ({"sentinels": ["h1"], "service_name": ""}, "service_name"),
    ({"sentinels": ["h1"], "service_name": "a b"}, "service_name"),
    ({"sentinels": [["h1"]], "service_name": "svc"}, "[host, port] pairs"),
    ({"sentinels": [["h1", "26379"]], "service_name": "svc"}, "1 to 65535"),
    ({"sentinels": [["", 1]], "service_name": "svc"}, "host must be"),
    ({"sentinels": ["h1"], "service_name": "svc", "host": "h", "port": 1}, "remove host, port"),
    ({"sentinels": ["h1"], "service_name": "svc", "db": -1}, "db must be"),
    ({"sentinels": ["h1"], "service_name": "svc", "sentinel_password": 5}, "sentinel_password must be a string"),
])
def test_bad_sentinel_entries_are_refused_with_a_clear_message(entry, message):
    with pytest.raises(ConfigError) as info:
        sentinel_config(entry)
    assert message in str(info.value)
    with pytest.raises(ConfigError):  # and in the adapter's constructor checks
        check_redis_options([entry], "random", "json")


def test_sentinel_entries_are_recognised_and_checked_with_the_other_entries():
    assert is_sentinel_entry("redis+sentinel://h1/svc") and is_sentinel_entry({"sentinels": []})
    assert not is_sentinel_entry("redis://h1") and not is_sentinel_entry({"host": "h1"})
    check_redis_options(["redis://h1", "redis+sentinel://h1/svc", {"sentinels": ["h1"], "service_name": "s"}],
                        "random", "json")
    with pytest.raises(ConfigError, match="redis\\+sentinel://"):
        check_redis_url("sentinel://h1/svc")
    assert isinstance(sentinel_config("redis+sentinel://h1/svc"), SentinelConfig)


def test_close_code():
    from crossws_sync.config import close_code

    for code in (1000, 1001, 1003, 1007, 1012, 1014, 3000, 4999):
        assert close_code("shutdown_code", code) == code
    for bad in (999, 1004, 1005, 1006, 1015, 2999, 5000, True, "1012", 1012.0, None):
        with pytest.raises(ConfigError, match="^shutdown_code "):
            close_code("shutdown_code", bad)


# The dashboard option ----------------------------------------------------------------------------

from crossws_sync.config import DashboardOptions, dashboard_options  # noqa: E402


def test_dashboard_off_and_its_defaults():
    assert dashboard_options(None) is None and dashboard_options(False) is None
    check = lambda request: True  # noqa: E731
    options = dashboard_options({"auth": check})
    assert options == DashboardOptions(auth=check)
    assert (options.path, options.data_path, options.top_rooms, options.interval, options.history) == (
        "/dashboard", "/dashboard/data", 50, 1.0, 120.0)
    assert options.samples == 120
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.path = "/x"  # type: ignore[misc]
    custom = dashboard_options({"auth": None, "path": "/ops/board/", "top_rooms": 5, "interval": 2, "history": 60})
    assert (custom.auth, custom.path, custom.data_path, custom.top_rooms, custom.interval, custom.samples) == (
        None, "/ops/board/", "/ops/board/data", 5, 2.0, 30)


def test_dashboard_is_never_open_by_accident():
    with pytest.raises(ConfigError, match=r"dashboard=\{\"auth\": None\}") as refused:
        dashboard_options(True)
    assert "check(request) -> bool" in str(refused.value)
    with pytest.raises(ConfigError, match="needs an \"auth\" hook"):
        dashboard_options({"path": "/dashboard"})
    assert dashboard_options({"auth": None}).auth is None  # open, on purpose


@pytest.mark.parametrize("value, message", [
    ({"auth": "secret"}, "dashboard auth must be callable"),
    ({"auth": None, "pth": "/x"}, "unknown option"),
    ({"auth": None, "path": "dashboard"}, "dashboard path must be a URL path"),
    ({"auth": None, "path": "/d?x=1"}, "dashboard path must be a URL path"),
    ({"auth": None, "path": "/"}, "must not be '/'"),
    ({"auth": None, "top_rooms": 0}, "top_rooms must be a positive integer"),
    ({"auth": None, "top_rooms": True}, "top_rooms must be a positive integer"),
    ({"auth": None, "top_rooms": 5000}, "at most 1000"),
    ({"auth": None, "interval": 0}, "interval must be positive"),
    ({"auth": None, "interval": 0.01}, "from 0.1 to 60"),
    ({"auth": None, "interval": math.inf}, "interval must be finite"),
    ({"auth": None, "history": 1, "interval": 1}, "from 2 intervals"),
    ({"auth": None, "history": 10000}, "to 3600"),
    ("yes", "dashboard must be False or a dict"),
])
def test_dashboard_bad_values(value, message):
    with pytest.raises(ConfigError, match=re.escape(message) if "(" not in message else message):
        dashboard_options(value)


from crossws_sync.config import RecoveryOptions, recovery_options  # noqa: E402


def test_recovery_history_replicas_and_replica_timeout():
    assert recovery_options(True) == RecoveryOptions()
    assert RecoveryOptions().history_replicas == 0  # off by default: nothing changes on the wire
    options = recovery_options({"history_replicas": 2, "replica_timeout": 0.25})
    assert options is not None and options.history_replicas == 2 and options.replica_timeout == 0.25
    for bad in (-1, 1.0, True, "1", 17):
        with pytest.raises(ConfigError, match="history_replicas"):
            recovery_options({"history_replicas": bad})
    for bad in (0, -0.1, float("nan"), float("inf"), 5.5, "1"):
        with pytest.raises(ConfigError, match="replica_timeout"):
            recovery_options({"replica_timeout": bad})
    with pytest.raises(ConfigError, match="unknown option"):
        recovery_options({"history_replica": 1})
