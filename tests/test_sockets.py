"""SocketReader: wait on gevent's read watcher, then one read (no failed read per message)."""
import socket

import gevent
import gevent.socket
import pytest

from crossws_sync.io.sockets import SocketReader


@pytest.fixture
def pair():
    a, b = gevent.socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_one_read_per_message_when_the_peer_answers_later(pair):
    a, b = pair
    reader = SocketReader(a)
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
    reader = SocketReader(a)
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
        SocketReader(a).recv(64)
