"""crossws_sync.cluster.lifecycle: starting and stopping a node (through the facade that owns
it), with a real redis-server and a real listener: idempotent start, autostart at the first hub
turn, a start after close refused, a fork that starts afresh, a graceful shutdown once."""
import gevent
import pytest

from crossws_sync import WebSocketConnector, WebSocketCrossServerAdapter
from crossws_sync.errors import ConfigError
from support import wait_for


@pytest.fixture
def adapters():
    made = []
    yield made
    for adapter in made:
        adapter.close(timeout=1)


def test_start_is_idempotent_and_listens_on_a_free_port(adapters):
    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0})
    adapters.append(adapter)
    assert adapter.start() is adapter and adapter.start() is adapter
    life = adapter._life
    assert life.started and life.port == adapter.port and adapter.port > 0
    client = WebSocketConnector("ws://127.0.0.1:%d/" % adapter.port)
    try:
        assert client.wait_connected(5)
    finally:
        client.manual_close()


def test_autostart_starts_the_redis_side_at_the_first_hub_turn(adapters, redis_server):
    adapter = WebSocketCrossServerAdapter(redis_config=[redis_server.config], server_name="auto-{pid}")
    adapters.append(adapter)
    assert adapter._life.runtime.bus is None  # nothing yet: the constructor only armed it
    gevent.sleep(0)
    wait_for(lambda: adapter._life.runtime.bus is not None, timeout=5, message="the bus started by itself")
    assert adapter.get_server_name().startswith("auto-") and "{pid}" not in adapter.get_server_name()
    assert not adapter._life.started  # the Redis side only: start() (the listener) was not called


def test_without_autostart_nothing_starts_until_asked(adapters, redis_server):
    adapter = WebSocketCrossServerAdapter(redis_config=[redis_server.config], autostart=False)
    adapters.append(adapter)
    gevent.sleep(0.1)
    assert adapter._life.runtime.bus is None
    assert adapter.get_redis_instances_count() == 1  # first use starts it
    assert adapter._life.started and adapter._life.runtime.bus is not None


def test_a_closed_node_does_not_start_again_and_shuts_down_once(redis_server):
    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0},
                                          redis_config=[redis_server.config]).start()
    closed = []
    adapter.on_websocket_event("ws-server-close", lambda: closed.append(1))
    adapter.shutdown(timeout=1)
    adapter.shutdown(timeout=1)
    assert closed == [1] and adapter._life.stopped.is_set() and adapter._life.http_server is None
    adapter.start()  # started once already: nothing starts again
    assert adapter._life.http_server is None and adapter._life.runtime.bus is not None
    never_started = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0})
    never_started.close()
    with pytest.raises(ConfigError, match="closed"):
        never_started.start()


def test_after_a_fork_the_child_drops_what_it_inherited_and_starts_afresh(adapters, redis_server):
    adapter = WebSocketCrossServerAdapter(redis_config=[redis_server.config]).start()
    adapters.append(adapter)
    inherited = adapter._life.runtime.bus
    assert inherited is not None
    adapter._after_fork()  # what io/forks.py calls in the child
    assert adapter._life.runtime.bus is None and not adapter._life.started
    wait_for(lambda: adapter._life.runtime.bus is not None, timeout=5, message="a new bus after the fork")
    assert adapter._life.runtime.bus is not inherited
