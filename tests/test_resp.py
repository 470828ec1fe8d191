"""crossws_sync.bus.resp: the replies of a real redis-server read from the connection's socket,
in order, errors as values, a partial reply kept for the next read, a closed connection raised."""
import socket

import pytest
import redis

from crossws_sync.bus.resp import TIMED_OUT, ReplyStream


@pytest.fixture
def connection(redis_server):
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=2.0)
    conn = client.connection_pool.make_connection()
    conn.connect()
    yield conn
    conn.disconnect()
    client.close()


def send(conn, *commands):
    conn.send_packed_command(conn.pack_commands(commands))


def test_replies_come_in_order_and_an_error_reply_is_a_value_not_a_raise(connection):
    stream = ReplyStream(connection)
    send(connection, ("PING",), ("NOSUCHCOMMAND",), ("ECHO", "after"), ("SUBSCRIBE", "ch"))
    assert stream.next() == b"PONG"
    error = stream.next()
    assert isinstance(error, redis.ResponseError) and "unknown command" in str(error).lower()
    assert stream.next() == b"after"
    assert stream.next() == [b"subscribe", b"ch", 1]


def test_ready_never_reads_the_socket_and_next_times_out_without_losing_the_stream(connection):
    stream = ReplyStream(connection)
    assert stream.ready() is False
    assert stream.next(timeout=0.05) is TIMED_OUT
    assert connection._sock.gettimeout() == 2.0  # the command timeout is restored
    send(connection, ("ECHO", "a"), ("ECHO", "b"))
    assert stream.next(timeout=2) == b"a"
    assert stream.ready() == b"b"  # arrived with the first read
    assert stream.ready() is False


def test_a_reply_that_arrived_in_part_is_completed_by_the_next_read():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    conn = redis.Connection(host="127.0.0.1", port=server.getsockname()[1], socket_timeout=2.0)
    conn._sock = socket.create_connection(server.getsockname(), timeout=2.0)
    peer, _ = server.accept()
    try:
        stream = ReplyStream(conn)
        peer.sendall(b"$5\r\nhel")
        assert stream.next(timeout=0.1) is TIMED_OUT
        peer.sendall(b"lo\r\n:42\r\n")
        assert stream.next(timeout=1) == b"hello"
        assert stream.next(timeout=1) == 42
        peer.close()
        with pytest.raises(redis.ConnectionError):
            stream.next(timeout=1)
    finally:
        conn._sock.close()
        server.close()
