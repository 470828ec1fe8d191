"""Test configuration: gevent monkey-patching first, then fixtures for real redis-server processes."""
from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
from typing import Callable, Iterator, List  # noqa: E402

import pytest  # noqa: E402

from support import RedisProcess, make_certificate  # noqa: E402

logging.getLogger("crossws_sync").setLevel(logging.DEBUG)


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
