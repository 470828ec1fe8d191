"""RedisConnection: the bus's own Redis connections (AUTH, ACL users, SELECT, CLIENT SETNAME, TLS,
Unix sockets) and how redis_config entries become RedisSettings."""
import os
import re
import ssl

import pytest
import redis

from crossws_sync.bus.connection import TIMED_OUT, RedisConnection, RedisSettings, settings_from
from crossws_sync.bus.settings import make_client
from crossws_sync.errors import ConfigError
from bus_fixtures import make_bus  # noqa: F401  (a fixture)
from support import free_port, make_certificate


def settings_of(config, **options):
    pool = make_client(config, connect_timeout=options.pop("connect_timeout", 2.0),
                       command_timeout=options.pop("command_timeout", 2.0)).connection_pool
    return settings_from(pool.connection_class, pool.connection_kwargs)


def call(conn, *args):
    from hiredis import pack_command
    conn.sendall(pack_command(args))
    reply = conn.next(2.0)
    assert reply is not TIMED_OUT
    return reply


def client_info(conn):
    text = call(conn, "CLIENT", "INFO").decode()
    return dict(field.split("=", 1) for field in text.split() if "=" in field)


def test_plain_connection_selects_the_database_and_names_itself(redis_server):
    conn = RedisConnection.open(settings_of(dict(redis_server.config, db=3, client_name="crossws-test")))
    try:
        info = client_info(conn)
        assert info["db"] == "3" and info["name"] == "crossws-test"
        assert call(conn, "PING") == b"PONG"
    finally:
        conn.close()
    conn.close()  # idempotent


def test_requirepass_accepts_the_password_and_refuses_a_wrong_one(redis_factory):
    server = redis_factory(extra_args=["--requirepass", "s3cret"])
    conn = RedisConnection.open(settings_of(dict(server.config, password="s3cret", db=1)))
    assert call(conn, "PING") == b"PONG" and client_info(conn)["db"] == "1"
    conn.close()
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        RedisConnection.open(settings_of(dict(server.config, password="wrong")))
    unauthenticated = RedisConnection.open(settings_of(server.config))  # no AUTH sent: Redis says NOAUTH
    reply = call(unauthenticated, "PING")
    assert isinstance(reply, redis.ResponseError) and str(reply).startswith("NOAUTH")
    unauthenticated.close()
    # The URL form carries the password the same way.
    conn = RedisConnection.open(settings_of("redis://:s3cret@127.0.0.1:%d/2" % server.port))
    assert client_info(conn)["db"] == "2"
    conn.close()


def test_acl_user_and_password_and_a_credential_provider(redis_server):
    assert redis_server.command("ACL", "SETUSER", "bus", "on", ">pw", "~*", "&*", "+@all").startswith("+OK")
    conn = RedisConnection.open(settings_of(dict(redis_server.config, username="bus", password="pw")))
    assert client_info(conn)["user"] == "bus"
    conn.close()
    conn = RedisConnection.open(settings_of("redis://bus:pw@127.0.0.1:%d/0" % redis_server.port))
    assert client_info(conn)["user"] == "bus"
    conn.close()
    provider = redis.UsernamePasswordCredentialProvider("bus", "pw")
    conn = RedisConnection.open(settings_of(dict(redis_server.config, credential_provider=provider)))
    assert client_info(conn)["user"] == "bus"
    conn.close()
    with pytest.raises(redis.AuthenticationError, match="WRONGPASS"):
        RedisConnection.open(settings_of(dict(redis_server.config, username="bus", password="nope")))


def test_connection_errors_are_redis_errors():
    port = free_port()
    with pytest.raises(redis.ConnectionError, match="connecting to 127.0.0.1:%d" % port):
        RedisConnection.open(RedisSettings(host="127.0.0.1", port=port, connect_timeout=1.0, timeout=1.0))


def test_a_closed_connection_ends_the_reader_and_a_silent_one_times_out(redis_server):
    conn = RedisConnection.open(settings_of(redis_server.config))
    assert conn.next(0.05) is TIMED_OUT
    redis_server.command("CLIENT", "KILL", "TYPE", "normal")  # Redis closes our connection
    with pytest.raises((redis.ConnectionError, OSError)):
        for _ in range(10):
            conn.next(1.0)
    conn.close()


def test_unix_socket(redis_factory, tmp_path):
    path = str(tmp_path / "redis.sock")
    redis_factory(extra_args=["--unixsocket", path, "--unixsocketperm", "700"])
    settings = settings_of("unix://%s?db=4" % path)
    assert settings.path == path and settings.label == path
    conn = RedisConnection.open(settings)
    assert call(conn, "PING") == b"PONG" and client_info(conn)["db"] == "4"
    conn.close()


@pytest.fixture
def tls_redis(redis_factory, tls_files):
    cert, key = tls_files
    port = free_port()
    server = redis_factory(extra_args=["--tls-port", str(port), "--tls-cert-file", cert, "--tls-key-file", key,
                                       "--tls-ca-cert-file", cert, "--tls-auth-clients", "optional",
                                       "--requirepass", "tls-secret"])
    server.tls_port = port
    return server


def test_tls_with_a_ca_a_client_certificate_and_the_rediss_url(tls_redis, tls_files, tmp_path):
    cert, key = tls_files
    base = {"host": "127.0.0.1", "port": tls_redis.tls_port, "password": "tls-secret", "db": 5}
    for config in (dict(base, ssl=True, ssl_ca_certs=cert),
                   dict(base, ssl=True, ssl_ca_certs=cert, ssl_certfile=cert, ssl_keyfile=key),
                   dict(base, tls=True, ssl_ca_certs=cert),  # ioredis's spelling
                   "rediss://:tls-secret@127.0.0.1:%d/5?ssl_ca_certs=%s" % (tls_redis.tls_port, cert),
                   dict(base, ssl=True, ssl_cert_reqs="none")):
        conn = RedisConnection.open(settings_of(config))
        assert conn.settings.tls is not None
        assert call(conn, "PING") == b"PONG" and client_info(conn)["db"] == "5"
        with pytest.raises(BlockingIOError):
            conn.send(b"*1\r\n$4\r\nPING\r\n")  # TLS: every write goes through the writer's sendall
        conn.close()
    other_cert, _ = make_certificate(str(tmp_path), "other", common_name="someone-else")
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        RedisConnection.open(settings_of(dict(base, ssl=True, ssl_ca_certs=other_cert)))
    with pytest.raises(redis.RedisError):  # a plain connection to the TLS port
        RedisConnection.open(settings_of(base, connect_timeout=0.5, command_timeout=0.5))


def test_bus_over_tls_with_select(tls_redis, tls_files, make_bus):
    cert, _ = tls_files
    config = {"host": "127.0.0.1", "port": tls_redis.tls_port, "password": "tls-secret", "ssl": True,
              "ssl_ca_certs": cert, "db": 2}
    a = make_bus("A", [config], redis_ping_interval=0.2)
    b = make_bus("B", [config], redis_ping_interval=0.2)
    b.on_cross_server_event("who", lambda data, callback: callback and callback("B"))
    assert a.wait_healthy(5) and b.wait_healthy(5)
    result = a.emit_cross_server_and_wait("who", {}, target_server="B", timeout=3)
    assert result.success and result.responses["B"]["payload"] == "B"


def test_settings_from_keeps_redis_py_options_and_refuses_what_we_do_not_do(tls_files):
    cert, _ = tls_files
    settings = settings_of({"host": "h", "port": 7, "socket_keepalive_options": {1: 2},
                            "ssl": True, "ssl_cert_reqs": "optional", "ssl_check_hostname": False,
                            "ssl_ca_certs": cert, "ssl_min_version": ssl.TLSVersion.TLSv1_2})
    assert (settings.host, settings.port, settings.keepalive, settings.keepalive_options) == ("h", 7, True, {1: 2})
    assert settings.tls.cert_reqs == "optional" and settings.tls.check_hostname is False
    context = settings.tls.context()
    assert context.verify_mode == ssl.CERT_OPTIONAL and context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert "s3cret" not in repr(settings_of({"host": "h", "password": "s3cret"}))
    with pytest.raises(ConfigError, match="ssl_validate_ocsp"):
        settings_of({"host": "h", "ssl": True, "ssl_validate_ocsp": True})
    with pytest.raises(ConfigError, match="ssl_cert_reqs"):
        settings_of({"host": "h", "ssl": True, "ssl_cert_reqs": "sometimes"})
    with pytest.raises(ConfigError, match="protocol"):
        settings_of({"host": "h", "protocol": 3})


#: someone else's private attribute (ours are ``self._x``), or redis-py's connection internals
PRIVATE = re.compile(r"\b(?!self\b)[a-z_]\w*\.(_sock|_parser|_read_event|_write_event|_wait)\b"
                     r"|make_connection|send_packed_command|read_response")


def test_no_private_attribute_of_redis_py_or_gevent_in_the_package():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "crossws_sync")
    offenders = []
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as handle:
                    for number, line in enumerate(handle, 1):
                        if PRIVATE.search(line):
                            offenders.append("%s:%d: %s" % (os.path.relpath(path, root), number, line.strip()))
    assert not offenders, "\n".join(offenders)


def test_closing_in_a_forked_child_leaves_the_parents_connection_alone(redis_server):
    conn = RedisConnection.open(settings_of(redis_server.config))
    pid = os.fork()
    if pid == 0:  # the child closes what it inherited, as an abandoned bus does
        try:
            conn.close()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert call(conn, "PING") == b"PONG"
    conn.close()
