"""The cost of ``history_replicas`` (WAIT before publishing), in process, on a local primary with
one replica (both started here, on free ports, killed at the end).

Two shapes, with history_replicas 0 and 1:

* bursts (W3-like): 30 appends per turn of the event loop (one message to each of 30 rooms),
  300 turns; appends/s from the first append to the last publication received;
* one at a time (W4-like): an append, then wait until its publication arrives; 2000 of them;
  p50 / p99 latency.

    python bench/history_replicas.py
"""
from __future__ import annotations

import gevent.monkey

gevent.monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, List  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from crossws_sync.bus.connection import settings_from  # noqa: E402
from crossws_sync.bus.history import HistoryStore  # noqa: E402
from crossws_sync.bus.settings import make_client  # noqa: E402
from crossws_sync.wire.envelope import EnvelopeCodec  # noqa: E402
from support import RedisProcess, wait_for  # noqa: E402


def run(port: int, replicas: int) -> Dict[str, Any]:
    pool = make_client({"host": "127.0.0.1", "port": port}, connect_timeout=2.0, command_timeout=2.0).connection_pool
    store = HistoryStore(settings_from(pool.connection_class, pool.connection_kwargs), prefix="bench%d:" % replicas,
                         history_size=1000, stream_ttl=60, replicas=replicas, replica_timeout=0.5)
    codec = EnvelopeCodec("json")
    sub = redis.Redis(port=port).pubsub()
    sub.subscribe("bench")
    sub.get_message(timeout=2)
    got: List[float] = []

    def listen() -> None:
        for message in sub.listen():
            if message["type"] == "message":
                got.append(time.perf_counter())

    listener = gevent.spawn(listen)
    raw, index = codec.encode_positioned({"data": '{"event":"m","payload":"x"}', "senderServer": "n1"}, "bench")
    store.top("warm")
    # bursts
    start = time.perf_counter()
    for turn in range(300):
        for room in range(30):
            store.append("r\x1fns\x1froom%d" % room, "bench", raw, index, lambda error: None)
        gevent.sleep(0)
    wait_for(lambda: len(got) == 9000, timeout=60)
    burst_rate = 9000 / (got[-1] - start)
    # one at a time
    latencies = []
    for i in range(2000):
        before = len(got)
        sent = time.perf_counter()
        store.append("u\x1fuser", "bench", raw, index, lambda error: None)
        while len(got) == before:
            gevent.sleep(0.00001)
        latencies.append(got[-1] - sent)
    latencies.sort()
    listener.kill()
    sub.close()
    store.close()
    return {"replicas": replicas, "burst_appends_per_s": round(burst_rate),
            "single_p50_ms": round(latencies[1000] * 1000, 3), "single_p99_ms": round(latencies[1980] * 1000, 3)}


def main() -> None:
    primary = RedisProcess().start()
    replica = RedisProcess(extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    try:
        wait_for(lambda: redis.Redis(port=replica.port).info("replication").get("master_link_status") == "up", 10)
        for replicas in (0, 1, 0, 1):
            print(run(primary.port, replicas), flush=True)
    finally:
        replica.stop()
        primary.stop()


if __name__ == "__main__":
    main()
