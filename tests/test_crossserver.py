"""crossws_sync.cluster.crossserver: the facade's cross-server methods, through real adapters:
nothing is sent without Redis, registrations made before the bus exists reach it, and
``expected_responses=None`` waits for every live node of the cluster registry."""
import pytest

from crossws_sync import WebSocketCrossServerAdapter
from support import wait_for


def test_without_redis_calls_fail_at_once_and_registrations_are_ignored(make_adapter):
    adapter = make_adapter().start()
    results = []
    adapter.on_cross_server_event("ask", lambda data, callback: callback("never"))
    assert adapter.emit_cross_server("ask", 1, results.append) is None
    assert [(r.success, r.error_code) for r in results] == [(False, "CROSS_SERVER_DISABLED")]
    promised = adapter.emit_cross_server_and_wait("ask", 1)
    assert promised.success is False and promised.message
    assert adapter.publish_redis_message("ch", {"a": 1}) is False
    assert adapter.delete_cross_server_callback("x") is False
    with pytest.raises(TypeError):
        adapter.publish_redis_message("", {"a": 1})


def test_listeners_registered_before_the_start_answer_and_none_expects_every_live_node(cluster, redis_server):
    nodes = cluster(2, redis_nodes=[redis_server])
    for node in nodes:
        node.on_cross_server_event("ask", lambda data, callback, node=node: callback(node.get_server_name()))
    late = WebSocketCrossServerAdapter(server_name="late", ws_options={"host": "127.0.0.1", "port": 0},
                                       redis_config=[redis_server.config], node_heartbeat_interval=0.2)
    try:
        late.on_cross_server_event("ask", lambda data, callback: callback("late"))  # before any bus exists
        late.start()
        wait_for(lambda: len(nodes[0].get_cluster_nodes()) == 3, timeout=10)
        result = nodes[0].emit_cross_server_and_wait("ask", 1, expected_responses=None, except_self=True, timeout=3)
        assert result.success is True and sorted(result.responses) == ["late", "node1"]
        assert result.responses["late"]["payload"] == "late"
        everyone = nodes[0].emit_cross_server_and_wait("ask", 1, expected_responses=None, timeout=3)
        assert sorted(everyone.responses) == ["late", "node0", "node1"]
    finally:
        late.close(timeout=1)
