"""Publisher: pipelined commands on one real Redis connection, replies matched in order."""
import gevent
import pytest
import redis

from crossws_sync.errors import RedisUnavailableError
from crossws_sync.bus.connection import RedisConnection, RedisSettings
from crossws_sync.bus.publisher import Command, NoWaitCommand, Publisher
from bus_fixtures import Spy
from support import counting_sends, wait_for


@pytest.fixture
def publisher(redis_server):
    downs = []
    settings = RedisSettings(host="127.0.0.1", port=redis_server.port, connect_timeout=1.0, timeout=1.0)

    def open_connection():
        return RedisConnection.open(settings)

    def on_down(event, error):
        # Health hooks and failover callbacks may block: they must never run in the hub.
        assert gevent.getcurrent() is not gevent.get_hub()
        gevent.sleep(0.001)
        downs.append((event, error))

    pub = Publisher(open_connection, label="test", on_down=on_down, command_timeout=1.0)
    writer = gevent.spawn(pub.writer_loop)
    pub.downs = downs
    yield pub
    pub.close()
    writer.kill()


def test_replies_match_their_commands_and_a_refused_command_fails_alone(publisher):
    commands = [Command(("PING",)), Command(("NOSUCHCOMMAND", "x")), Command(("ECHO", "after")),
                Command(("PUBLISH", "nobody", b"x"))]
    for command in commands:
        publisher.submit(command)
    assert commands[0].result.get(timeout=2) == b"PONG"
    with pytest.raises(redis.ResponseError):
        commands[1].result.get(timeout=2)
    assert commands[2].result.get(timeout=2) == b"after"
    assert commands[3].result.get(timeout=2) == 0
    assert publisher.downs == []


def test_commands_of_one_loop_iteration_share_one_send(publisher, redis_server):
    warm = Command(("PING",))
    publisher.submit(warm)  # connect first
    assert warm.result.get(timeout=2) == b"PONG"
    sends = []
    publisher._send = counting_sends(publisher._send, sends)
    spy = Spy(redis_server.port, "pipe")
    lost = []
    for index in range(200):
        publisher.submit(NoWaitCommand(("PUBLISH", "pipe", b"m%d" % index), lost.append))
    wait_for(lambda: len(spy.on("pipe")) == 200, message="200 publishes delivered")
    spy.close()
    assert spy.on("pipe") == [b"m%d" % index for index in range(200)]
    assert len(sends) == 1 and lost == []  # one send() for the 200 publishes, no greenlet switch


def test_what_the_kernel_does_not_take_at_once_is_written_by_the_writer_in_order(publisher, redis_server):
    spy = Spy(redis_server.port, "big")
    lost = []
    payloads = [bytes([65 + index]) * (1 << 20) for index in range(12)]  # 12 MiB in one iteration
    for payload in payloads:
        publisher.submit(NoWaitCommand(("PUBLISH", "big", payload), lost.append))
    publisher.submit(NoWaitCommand(("PUBLISH", "big", b"tail"), lost.append))
    wait_for(lambda: len(spy.on("big")) == 13, timeout=20, message="13 publishes delivered")
    spy.close()
    assert spy.on("big") == payloads + [b"tail"] and lost == []


def test_a_dead_server_fails_the_commands_in_flight_and_reports_down(publisher, redis_server):
    first = Command(("PING",))
    publisher.submit(first)
    assert first.result.get(timeout=2) == b"PONG"
    redis_server.kill()
    lost = []

    def fallback(error):
        assert gevent.getcurrent() is not gevent.get_hub()
        lost.append(error)

    for _ in range(3):  # the first write may still be taken by the kernel
        publisher.submit(NoWaitCommand(("PUBLISH", "x", b"y"), fallback))
        gevent.sleep(0.05)
    wait_for(lambda: lost, message="the lost publish's fallback ran")
    assert isinstance(lost[0], RedisUnavailableError)
    wait_for(lambda: publisher.downs, message="the publisher reported itself down")
    redis_server.start()
    again = Command(("PING",))
    publisher.submit(again)  # a new connection for the next command
    assert again.result.get(timeout=3) == b"PONG"


def test_a_hung_server_breaks_the_connection_after_the_command_timeout(publisher, redis_server):
    warm = Command(("PING",))
    publisher.submit(warm)
    assert warm.result.get(timeout=2) == b"PONG"
    redis_server.proc.send_signal(19)  # SIGSTOP: connected, never answers
    try:
        hung = Command(("PING",))
        publisher.submit(hung)
        with pytest.raises(RedisUnavailableError):
            hung.result.get(timeout=5)
        assert publisher.downs and publisher.downs[0][0] == "error"
    finally:
        redis_server.proc.send_signal(18)  # SIGCONT


def test_submit_after_close_raises(publisher):
    publisher.close()
    with pytest.raises(RedisUnavailableError):
        publisher.submit(Command(("PING",)))
