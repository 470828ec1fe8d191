"""Test configuration: gevent monkey-patching first, then fixtures for real redis-server processes."""
from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
import sys  # noqa: E402
from typing import Any, Callable, Iterator, List  # noqa: E402

import pytest  # noqa: E402

from crossws_sync import WebSocketCrossServerAdapter  # noqa: E402

from support import RedisProcess, make_certificate, wait_for  # noqa: E402

logging.getLogger("crossws_sync").setLevel(logging.DEBUG)


def _is_autobahn(item) -> bool:
    return item.nodeid.split("::")[0].endswith("test_autobahn.py")


def pytest_collection_modifyitems(session, config, items):
    """Autobahn|Testsuite's checks run last: its runs start as soon as the tests are collected
    (see pytest_collection_finish) and go on while the other tests run."""
    items[:] = [item for item in items if not _is_autobahn(item)] + [item for item in items if _is_autobahn(item)]


def pytest_collection_finish(session):
    if not session.config.option.collectonly and any(_is_autobahn(item) for item in session.items):
        import test_autobahn

        test_autobahn.start_runs()


def pytest_sessionfinish(session, exitstatus):
    test_autobahn = sys.modules.get("test_autobahn")
    if test_autobahn is not None:
        test_autobahn.stop_runs()


def pytest_report_header(config):
    from support import redis_server_binary, redis_server_version

    path = redis_server_binary()
    return "redis-server %s (%s)" % (redis_server_version(path), path)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium over CDP for the module (tests/cdp.py); fails, never skips, without it."""
    from cdp import Browser, require_chromium

    instance = Browser(require_chromium())
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisProcess]]:
    """Start any number of real redis-server processes on free ports; all stopped at teardown."""
    started: List[RedisProcess] = []

    def start(**kwargs) -> RedisProcess:
        server = RedisProcess(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_server(redis_factory) -> RedisProcess:
    """One real redis-server for this test."""
    return redis_factory()


@pytest.fixture
def cluster(redis_factory):
    """Factory of N WebSocket nodes on shared Redis nodes; all closed at teardown."""
    made = []

    def make(count=2, redis_nodes=None, **options):
        redis_nodes = redis_nodes or [redis_factory()]
        options.setdefault("node_heartbeat_interval", 0.2)
        nodes = []
        for index in range(count):
            adapter = WebSocketCrossServerAdapter(
                server_name="node%d" % index, ws_options={"host": "127.0.0.1", "port": 0},
                redis_config=[r.config for r in redis_nodes], **options)

            def on_connection(socket_, request, adapter=adapter):
                user_id = adapter.parse_ws_request_params(request)["params"].get("id")
                if user_id:
                    socket_.user_id = user_id
                    adapter.set_user_socket(user_id, socket_)

            adapter.on_websocket_event("connection", on_connection)
            adapter.on_websocket_event("close", lambda s, req, code, reason, adapter=adapter:
                                       getattr(s, "user_id", None) and adapter.remove_user_socket(s.user_id))
            adapter.start()
            nodes.append(adapter)
            made.append(adapter)
        wait_for(lambda: all(len(n.get_cluster_nodes()) == count for n in nodes), timeout=10,
                 message="every node to see the others")
        return nodes

    yield make
    for adapter in made:
        adapter.close(timeout=1)


@pytest.fixture
def make_adapter() -> Iterator[Callable[..., WebSocketCrossServerAdapter]]:
    """Build adapters (not started) listening on 127.0.0.1, on a free port unless ``ws_options``
    names one (its other keys are merged in); every one is closed at teardown."""
    made: List[WebSocketCrossServerAdapter] = []

    def make(**options: Any) -> WebSocketCrossServerAdapter:
        ws_options = {"host": "127.0.0.1", "port": 0}
        ws_options.update(options.pop("ws_options", {}))
        adapter = WebSocketCrossServerAdapter(ws_options=ws_options, **options)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close(timeout=1)


@pytest.fixture
def make_client():
    """Build WebSocketConnector clients; every one is closed at teardown."""
    from crossws_sync import WebSocketConnector

    clients = []

    def make(url, **kwargs):
        client = WebSocketConnector(url, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.manual_close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """``(cert, key)``: a self-signed certificate for 127.0.0.1 / localhost (openssl)."""
    return make_certificate(str(tmp_path_factory.mktemp("tls")))
