"""History streams and sessions (crossws_sync/bus/history.py) against a real Redis."""
from __future__ import annotations

from typing import Any, Iterator, List, Tuple

import pytest
import redis

from crossws_sync.bus.history import HistoryStore, new_epoch, new_session_id
from crossws_sync.bus.settings import make_client
from crossws_sync.bus.connection import settings_from
from crossws_sync.wire.envelope import EnvelopeCodec
from crossws_sync.wire.positions import parse_position
from support import RedisProcess, wait_for


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.stop()


def store_for(server: RedisProcess, **options: Any) -> HistoryStore:
    pool = make_client(server.config, connect_timeout=2.0, command_timeout=2.0).connection_pool
    settings = settings_from(pool.connection_class, pool.connection_kwargs)
    options.setdefault("history_size", 100)
    options.setdefault("stream_ttl", 60)
    return HistoryStore(settings, prefix="ws:", **options)


class Listener:
    def __init__(self, server: RedisProcess, channel: str) -> None:
        self.pubsub = redis.Redis(port=server.port).pubsub()
        self.pubsub.subscribe(channel)
        self.pubsub.get_message(timeout=2)
        self.messages: List[bytes] = []

    def drain(self, count: int) -> List[bytes]:
        while len(self.messages) < count:
            message = self.pubsub.get_message(timeout=2)
            if message is None:
                break
            self.messages.append(message["data"])
        return self.messages


def append(store: HistoryStore, codec: EnvelopeCodec, stream: str, channel: str, body: Any) -> None:
    raw, index = codec.encode_positioned({"data": body, "senderServer": "n1"}, channel)
    lost: List[BaseException] = []
    store.append(stream, channel, raw, index, lost.append)
    return lost


def test_append_publishes_with_the_position_written_in_and_reads_back(redis_server):
    store, codec = store_for(redis_server), EnvelopeCodec("json")
    listener = Listener(redis_server, "ws:chan")
    for i in range(3):
        append(store, codec, "b", "ws:chan", "m%d" % i)
    published = listener.drain(3)
    decoded = [codec.decode(raw) for raw in published]
    positions = [parse_position(message["streamPos"]) for message in decoded]
    assert [offset for offset, _ in positions] == [1, 2, 3]
    assert len({epoch for _, epoch in positions}) == 1
    assert [m["data"] for m in decoded] == ["m0", "m1", "m2"]
    entries = store.read("b", 1, 10)
    assert [(offset, channel) for offset, _, channel, _ in entries] == [(2, "ws:chan"), (3, "ws:chan")]
    assert [codec.decode(body)["data"] for *_, body in entries] == ["m1", "m2"]
    assert store.top("b") == (3, positions[0][1])
    store.close()


def test_compressed_and_signed_bodies_carry_the_position_in_front(redis_server):
    store = store_for(redis_server)
    codec = EnvelopeCodec("msgpack", compress_threshold=0, signing_key=b"k" * 32)
    listener = Listener(redis_server, "ws:chan")
    append(store, codec, "b", "ws:chan", "x" * 100)
    raw = listener.drain(1)[0]
    message = codec.decode(raw, "ws:chan")
    assert parse_position(message["streamPos"])[0] == 1
    assert message["data"] == "x" * 100
    entry = store.read("b", 0, 1)[0]
    # read again from history: same message, the replay guard is not in the way
    assert codec.decode(entry[3], "ws:chan", check_replay=False)["data"] == "x" * 100
    store.close()


def test_a_flushed_script_is_loaded_again_and_nothing_is_lost_or_reordered(redis_server):
    store, codec = store_for(redis_server), EnvelopeCodec("json")
    append(store, codec, "b", "ws:c", 0)
    wait_for(lambda: store.top("b")[0] == 1)
    redis_server.command("SCRIPT", "FLUSH")
    for i in range(1, 20):
        assert not append(store, codec, "b", "ws:c", i)
    wait_for(lambda: store.top("b")[0] == 20)
    assert [codec.decode(body)["data"] for *_, body in store.read("b", 0, 100)] == list(range(20))
    assert store.stats["script_loads"] >= 2  # loaded again after the flush
    store.close()


def test_a_redis_restart_starts_a_new_epoch(redis_server):
    store, codec = store_for(redis_server), EnvelopeCodec("json")
    append(store, codec, "b", "ws:c", 0)
    wait_for(lambda: store.top("b")[0] == 1)
    before = store.top("b")
    redis_server.restart()
    wait_for(lambda: _try_top(store) is not None, 10)
    after = store.top("b")
    assert after[1] != before[1]
    assert after[0] == 0
    store.close()


def _try_top(store: HistoryStore) -> Any:
    try:
        return store.top("b")
    except Exception:
        return None


def test_trimming_keeps_about_history_size_entries(redis_server):
    store, codec = store_for(redis_server, history_size=10), EnvelopeCodec("json")
    for i in range(500):
        append(store, codec, "r\x1fa\x1fb", "ws:a", i)
    wait_for(lambda: store.top("r\x1fa\x1fb")[0] == 500)
    first = store.first_offset("r\x1fa\x1fb")
    assert first is not None and first > 300
    store.close()


def test_sessions_are_taken_once(redis_server):
    store = store_for(redis_server)
    session_id = new_session_id()
    store.save_session(session_id, {"u": "alice", "b": "0000000000000003:abcd1234"}, 30)
    wait_for(lambda: store.command("EXISTS", store.session_key(session_id)) == 1)
    assert 0 < store.command("TTL", store.session_key(session_id)) <= 30
    assert store.take_session(session_id) == {"u": "alice", "b": "0000000000000003:abcd1234"}
    assert store.take_session(session_id) is None
    store.close()


def test_ids_are_random():
    assert len({new_session_id() for _ in range(100)}) == 100
    assert len(new_epoch()) == 8 and new_epoch() != new_epoch()


def test_every_connection_is_opened_by_the_given_opener_and_follows_its_address(redis_factory):
    """What a Sentinel node passes: an opener that decides where each (re)connection goes."""
    from dataclasses import replace

    from crossws_sync.bus.connection import RedisConnection

    first, second = redis_factory(), redis_factory()
    target = {"port": first.port}
    opened: List[int] = []

    def opener(settings):
        opened.append(target["port"])
        return RedisConnection.open(replace(settings, port=target["port"]))

    pool = make_client({"host": "127.0.0.1", "port": 1}, connect_timeout=2.0, command_timeout=2.0).connection_pool
    store = HistoryStore(settings_from(pool.connection_class, pool.connection_kwargs), prefix="ws:", history_size=100,
                         stream_ttl=60, open_connection=opener, label="sentinel:svc")
    try:
        assert store.label == "sentinel:svc"
        top = store.top("s")
        run_first = store.run_id
        target["port"] = second.port
        first.kill()  # the connection breaks; the next command reconnects through the opener
        wait_for(lambda: _top_or_none(store) is not None, timeout=5)
        assert opened == [first.port, second.port] and store.run_id != run_first
        assert store.top("s")[1] != top[1]  # another Redis process: a new epoch
    finally:
        store.close()


def _top_or_none(store: HistoryStore) -> Any:
    try:
        return store.top("s")
    except Exception:
        return None


# history_replicas: publish after WAIT, an epoch that survives a promotion --------------------

@pytest.fixture
def primary_and_replica() -> Iterator[Tuple[RedisProcess, RedisProcess]]:
    primary = RedisProcess().start()
    replica = RedisProcess(extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    wait_for(lambda: redis.Redis(port=replica.port).info("replication").get("master_link_status") == "up",
             timeout=10, message="the replica to sync")
    yield primary, replica
    replica.stop()
    primary.stop()


def durable_store(server: RedisProcess, opened: Any = None, **options: Any) -> HistoryStore:
    options.setdefault("replicas", 1)
    options.setdefault("replica_timeout", 0.2)
    return store_for(server, **options)


def test_with_history_replicas_an_append_is_published_once_the_replica_has_it(primary_and_replica):
    primary, replica = primary_and_replica
    store, codec = durable_store(primary), EnvelopeCodec("json")
    listener = Listener(primary, "ws:chan")
    for i in range(5):
        assert not append(store, codec, "b", "ws:chan", i)
    decoded = [codec.decode(raw) for raw in listener.drain(5)]
    assert [m["data"] for m in decoded] == list(range(5))
    assert [parse_position(m["streamPos"])[0] for m in decoded] == [1, 2, 3, 4, 5]
    # what was published is on the replica: stream entries (with their message ids) and the meta hash
    on_replica = redis.Redis(port=replica.port)
    assert on_replica.xlen(store.stream_key("b")) == 5
    version = on_replica.hget(store.meta_key("b"), "v").decode()
    assert version.endswith(":replicated") and version[:8] == parse_position(decoded[0]["streamPos"])[1]
    assert all(b"i" in fields for _, fields in on_replica.xrange(store.stream_key("b")))
    assert store.stats["confirmed"] == 5 and store.stats["unconfirmed_waits"] == 0
    assert store.top("b") == (5, version[:8])
    store.close()


def _synced(replica: RedisProcess) -> bool:
    return redis.Redis(port=replica.port).info("replication").get("master_link_status") == "up"


def test_a_promoted_replica_keeps_the_epoch_and_the_offsets_continue(primary_and_replica):
    """Two replicas: the primary is killed, one replica promoted (``REPLICAOF NO ONE``), the other
    follows it; a store on the new primary continues the stream: same epoch, next offset."""
    primary, replica = primary_and_replica
    second = RedisProcess(extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    try:
        wait_for(lambda: _synced(second), timeout=10)
        store, codec = durable_store(primary, replicas=2), EnvelopeCodec("json")
        for i in range(3):
            append(store, codec, "b", "ws:c", i)
        wait_for(lambda: store.stats["confirmed"] == 3)
        before = store.top("b")
        store.close()
        primary.kill()
        redis.Redis(port=replica.port).execute_command("REPLICAOF", "NO", "ONE")
        redis.Redis(port=second.port).execute_command("REPLICAOF", "127.0.0.1", str(replica.port))
        wait_for(lambda: _synced(second), timeout=10)
        promoted = durable_store(replica)
        try:
            assert promoted.top("b") == before  # another Redis process, the same epoch and offsets
            append(promoted, codec, "b", "ws:c", 3)
            wait_for(lambda: promoted.stats["confirmed"] == 1)
            assert promoted.top("b") == (4, before[1])
            assert [codec.decode(body)["data"] for *_, body in promoted.read("b", 0, 10)] == [0, 1, 2, 3]
        finally:
            promoted.close()
    finally:
        second.stop()


def test_when_the_replica_does_not_confirm_nothing_is_published_until_it_does(primary_and_replica):
    """The fail-safe: a paused replica (SIGSTOP) makes WAIT time out; the appends stay in the
    primary's history, unpublished, and reads of the top fail (no client gets a position the
    replica may lack); once the replica answers again, they are published in order, once."""
    import os
    import signal as signals

    primary, replica = primary_and_replica
    store, codec = durable_store(primary, replica_timeout=0.1), EnvelopeCodec("json")
    listener = Listener(primary, "ws:chan")
    append(store, codec, "b", "ws:chan", 0)
    assert len(listener.drain(1)) == 1
    os.kill(replica.proc.pid, signals.SIGSTOP)
    try:
        for i in range(1, 6):
            assert not append(store, codec, "b", "ws:chan", i)
        wait_for(lambda: store.stats["unconfirmed_waits"] >= 2, timeout=5)
        assert redis.Redis(port=primary.port).xlen(store.stream_key("b")) == 6  # appended on the primary
        assert listener.drain(2) == listener.messages[:1]  # ...but not published
        with pytest.raises(Exception, match="replicas confirmed 0 of 1"):
            store.top("b")
    finally:
        os.kill(replica.proc.pid, signals.SIGCONT)
    decoded = [codec.decode(raw) for raw in listener.drain(6)]
    assert [m["data"] for m in decoded] == list(range(6))
    assert [parse_position(m["streamPos"])[0] for m in decoded] == list(range(1, 7))
    assert store.stats["confirmed"] == 6
    store.close()


def test_a_second_attempt_finds_the_first_instead_of_appending_twice(primary_and_replica):
    primary, _ = primary_and_replica
    store, codec = durable_store(primary), EnvelopeCodec("json")
    listener = Listener(primary, "ws:chan")
    raw, index = codec.encode_positioned({"data": "once", "senderServer": "n1"}, "ws:chan")
    store.append("b", "ws:chan", raw, index, lambda error: None, "0123456789abcdef", False)
    store.append("b", "ws:chan", raw, index, lambda error: None, "0123456789abcdef", True)  # its reply was lost
    store.append("b", "ws:chan", raw, index, lambda error: None, "fedcba9876543210", True)  # never got there
    published = [codec.decode(m) for m in listener.drain(3)]
    assert [parse_position(m["streamPos"])[0] for m in published] == [1, 1, 2]
    assert store.top("b")[0] == 2 and store.stats["found_again"] == 1
    store.close()
