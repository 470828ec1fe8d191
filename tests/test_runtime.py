"""crossws_sync.cluster.runtime: the process's bus and router, started on first use."""
from crossws_sync.cluster.runtime import Runtime


def test_the_router_is_asked_for_after_starting_the_node():
    starts = []
    runtime = Runtime(lambda: starts.append(1), redis_config=[])
    assert runtime.bus is None and runtime.router is None
    assert runtime.started_router() is None and starts == [1]
    router = object()
    runtime.router = router  # what the node's start sets
    assert runtime.started_router() is router and starts == [1, 1]


def test_without_redis_there_is_no_bus_and_nothing_is_started_for_one():
    starts = []
    runtime = Runtime(lambda: starts.append(1), redis_config=[])
    assert runtime.started_bus() is None and starts == []


def test_with_redis_the_bus_is_the_started_one():
    runtime = Runtime(lambda: None, redis_config=["redis://127.0.0.1:6379"])
    bus = object()

    def start():
        runtime.bus = bus

    runtime._ensure_started = start
    assert runtime.started_bus() is bus
