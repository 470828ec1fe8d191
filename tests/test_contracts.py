"""crossws_sync.cluster.contracts: what the cluster layer needs from its node."""
import dataclasses
import inspect

import pytest

from crossws_sync.cluster.contracts import LocalDelivery, RouterSettings
from crossws_sync.cluster.local import LocalNode


def test_router_settings_are_frozen_with_the_adapters_defaults():
    settings = RouterSettings(server_name="n1", ws_prefix="ws:", websocket=True)
    assert (settings.heartbeat_interval, settings.outage_buffer_size, settings.outage_buffer_age) == (2.0, 10000, 30.0)
    assert settings.duplicate_login is None and settings.duplicate_login_code == 4012
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.server_name = "other"


def test_the_local_node_provides_everything_the_router_calls():
    wanted = {name for name, _ in inspect.getmembers(LocalDelivery, inspect.isfunction) if not name.startswith("_")}
    assert wanted >= {"deliver_to_all", "deliver_to_room", "deliver_to_socket", "remove_room",
                      "get_socket_instance", "get_local_socket_ids"}
    for name in wanted:
        ours, theirs = inspect.signature(getattr(LocalNode, name)), inspect.signature(getattr(LocalDelivery, name))
        assert list(ours.parameters) == list(theirs.parameters), name
