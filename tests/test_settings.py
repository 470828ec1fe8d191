"""crossws_sync.bus.settings: redis_config entries read without connecting, refused credentials
recognised, Redis refused without gevent's monkey-patching."""
import pytest
from gevent import monkey

from crossws_sync.bus.settings import MONKEY_PATCH_HINT, describe_config, is_auth_error, make_client, require_monkey_patched
from crossws_sync.errors import ConfigError, MonkeyPatchError


def test_configs_urls_and_their_errors():
    assert describe_config({"host": "10.0.0.1", "port": 6380, "db": 2}) == ("10.0.0.1", 6380, 2)
    assert describe_config("redis://:pw@example.com:6390/3") == ("example.com", 6390, 3)
    client = make_client({"host": "h", "tls": True}, connect_timeout=1.0, command_timeout=2.0)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 2.0 and kwargs["socket_connect_timeout"] == 1.0
    assert "ssl" in client.connection_pool.connection_class.__name__.lower()
    for bad in ("http://h:1", 6379, {"hots": "h"}, {"host": "h", "tls": {"ca": "x"}}):
        with pytest.raises(ConfigError):
            make_client(bad, connect_timeout=1.0, command_timeout=1.0)


def test_auth_errors_are_recognised():
    assert is_auth_error("WRONGPASS invalid username-password pair or user is disabled.")
    assert is_auth_error("NOAUTH Authentication required.")
    assert not is_auth_error("Connection refused") and not is_auth_error(None)


def test_redis_is_refused_without_monkey_patching(monkeypatch):
    require_monkey_patched()  # the test process is patched (conftest)
    monkeypatch.setattr(monkey, "is_module_patched", lambda name: False)
    with pytest.raises(MonkeyPatchError) as caught:
        require_monkey_patched()
    assert str(caught.value) == MONKEY_PATCH_HINT and "patch_all()" in MONKEY_PATCH_HINT
