"""SocketIO: wait for readability, then one read (no failed read per message); sends that never yield."""
import socket

import gevent
import gevent.socket
import pytest

import gevent.ssl

from crossws_sync.io import sockets
from crossws_sync.io.sockets import SocketIO


@pytest.fixture
def pair():
    a, b = gevent.socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_one_read_per_message_when_the_peer_answers_later(pair):
    a, b = pair
    reader = SocketIO(a)
    calls = []
    real_recv = reader._recv

    def counted(size):
        try:
            data = real_recv(size)
        except BlockingIOError:
            calls.append("EAGAIN")
            raise
        calls.append(len(data))
        return data

    reader._recv = counted

    def peer():
        for index in range(5):
            gevent.sleep(0.01)  # the reader is waiting before anything is there
            b.sendall(b"message %d" % index)

    writer = gevent.spawn(peer)
    received = [reader.recv(1024) for _ in range(5)]
    writer.join(5)
    assert received == [b"message %d" % index for index in range(5)]
    # Reading first (as gevent's recv does) would fail with EAGAIN before each message.
    assert calls == [9] * 5


def test_a_full_buffer_is_followed_by_an_immediate_read_and_eof_is_empty(pair):
    a, b = pair
    reader = SocketIO(a)
    b.sendall(b"x" * 100)
    assert reader.recv(64) == b"x" * 64
    assert reader.recv(64) == b"x" * 36  # read at once: the previous read filled the buffer
    buffer = bytearray(8)
    b.sendall(b"abc")
    assert reader.recv_into(buffer) == 3 and bytes(buffer[:3]) == b"abc"
    b.close()
    assert reader.recv(64) == b""


def test_the_socket_timeout_still_applies(pair):
    a, _ = pair
    a.settimeout(0.05)
    with pytest.raises(socket.timeout):
        SocketIO(a).recv(64)


def test_send_never_blocks_and_reports_what_the_kernel_took(pair):
    a, b = pair
    io = SocketIO(a)
    chunk = b"x" * 65536
    sent = 0
    with pytest.raises(BlockingIOError):
        for _ in range(10000):  # until the kernel's buffers are full
            sent += io.send(chunk)
    assert sent > 0
    received = 0
    b.settimeout(1)
    while received < sent:
        received += len(b.recv(1 << 20))
    assert received == sent


def test_release_wakes_a_waiting_reader_and_leaves_the_socket_open(pair):
    a, b = pair
    io = SocketIO(a)
    waiting = gevent.spawn(io.recv, 64)
    gevent.sleep(0.01)
    io.release()
    with pytest.raises(OSError):
        waiting.get(timeout=1)
    with pytest.raises(OSError):
        io.send(b"x")
    a.sendall(b"still open")  # the descriptor was shared, not closed
    assert b.recv(64) == b"still open"
    io.release()  # idempotent


def test_close_closes_the_socket_and_a_dropped_io_never_closes_it(pair):
    a, b = pair
    SocketIO(a)  # dropped at once, never released
    a.sendall(b"open")
    assert b.recv(64) == b"open"
    io = SocketIO(a)
    io.close()
    assert a.fileno() == -1
    assert b.recv(64) == b""


def test_an_explicit_timeout_overrides_the_socket_timeout(pair):
    a, b = pair
    io = SocketIO(a)
    with pytest.raises(socket.timeout):
        io.recv_into(bytearray(8), timeout=0.05)
    b.sendall(b"late")
    assert io.recv(8, timeout=None) == b"late"


def test_tls_sockets_read_through_their_wrapper_and_never_take_a_direct_send(tls_files):
    cert, key = tls_files
    server_context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = gevent.ssl.create_default_context(cafile=cert)
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        tls = server_context.wrap_socket(conn, server_side=True)
        tls.sendall(tls.recv(64).upper())
        tls.close()

    server = gevent.spawn(serve)
    client = client_context.wrap_socket(gevent.socket.create_connection(listener.getsockname()),
                                        server_hostname="localhost")
    io = SocketIO(client)
    assert io.tls
    with pytest.raises(BlockingIOError):
        io.send(b"hello")
    client.sendall(b"hello")
    assert io.recv(64, timeout=2) == b"HELLO"
    io.close()
    server.join(2)
    listener.close()


def test_only_public_gevent_api_is_used():
    """What SocketIO relies on (all public): fails loudly if gevent renames any of it."""
    hub = gevent.get_hub()
    for name in ("wait", "cancel_wait"):
        assert callable(getattr(hub, name, None)), "gevent's Hub.%s is gone: update crossws_sync/io/sockets.py" % name
    watcher = hub.loop.io(0, 1)
    assert hasattr(watcher, "active"), "gevent's io watcher has no 'active': update crossws_sync/io/sockets.py"
    watcher.close()
    from gevent.monkey import get_original
    assert get_original("socket", "socket").__module__ == "socket"
    source = open(sockets.__file__).read()
    assert "._sock" not in source and "_read_event" not in source and "._wait(" not in source


def test_close_while_a_read_waits_closes_the_socket_after_the_wait_ended(pair):
    a, b = pair
    io = SocketIO(a)
    waiting = gevent.spawn(io.recv, 64, None)
    gevent.sleep(0.01)
    io.close(shutdown=True)
    with pytest.raises(OSError):
        waiting.get(timeout=1)
    assert a.fileno() == -1  # closed by the hub right after it woke the reader
    assert b.recv(64) == b""


def test_reads_with_a_timeout_time_out_each_time(pair):
    a, b = pair
    io = SocketIO(a)
    for _ in range(3):
        b.sendall(b"x")
        assert io.recv(8, timeout=0.5) == b"x"
    with pytest.raises(socket.timeout):
        io.recv(8, timeout=0.05)
    with pytest.raises(socket.timeout):
        io.recv(8, timeout=0.03)
    b.sendall(b"y")
    assert io.recv(8, timeout=0.03) == b"y"
    io.release()
