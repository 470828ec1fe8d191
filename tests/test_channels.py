"""Subscriptions: which channels a bus wants and why (pure bookkeeping)."""
import pytest

from crossws_sync.bus.channels import Subscriptions
from crossws_sync.errors import ConfigError, InvalidNameError


def make():
    return Subscriptions(ws_prefix="ws:", system=("csbp:server_bridge", "csbp:node:A"), custom=["news"],
                         pinned=["ws:broadcast"])


def test_wanted_is_every_set_and_pinned_channels_are_ws_channels():
    subs = make()
    assert subs.wanted() == {"csbp:server_bridge", "csbp:node:A", "news", "ws:broadcast"}
    assert subs.is_ws("ws:broadcast")


def test_routing_a_ws_prefix_channel_wanted_as_custom_goes_to_the_custom_handler():
    subs = make()
    assert subs.is_ws("ws:room") and subs.is_numbered("ws:room")
    subs.add_custom("ws:room")
    assert not subs.is_ws("ws:room") and not subs.is_numbered("ws:room")
    subs.add_ws("ws:room")  # wanted by both: the WebSocket layer's routing wins on arrival
    assert subs.is_ws("ws:room") and not subs.is_numbered("ws:room")
    assert not subs.is_ws("other") and not subs.is_numbered("other")


def test_a_channel_wanted_by_both_apis_is_released_only_by_both():
    subs = make()
    subs.add_ws("shared")
    subs.add_custom("shared")
    assert subs.remove_ws(["shared"]) == []
    assert subs.remove_custom("shared") is True
    subs.add_custom("solo")
    assert subs.remove_custom("solo") is True and "solo" not in subs.wanted()


def test_system_channels_are_never_custom_nor_ws_and_never_unsubscribed():
    subs = make()
    subs.add_custom("csbp:node:A")
    subs.add_ws("csbp:server_bridge")
    assert not subs.custom & subs.system and not subs.ws & subs.system
    with pytest.raises(ConfigError, match="own channels"):
        subs.remove_custom("csbp:node:A")
    with pytest.raises(ConfigError, match="system channel"):
        subs.remove_ws(["csbp:server_bridge"])


def test_remove_ws_is_all_or_nothing_and_lists_each_channel_once():
    subs = make()
    subs.add_ws("ws:a")
    subs.add_ws("ws:b")
    with pytest.raises(ConfigError):
        subs.remove_ws(["ws:a", "ws:broadcast"])  # pinned
    assert {"ws:a", "ws:b"} <= subs.ws
    assert subs.remove_ws(iter(["ws:a", "ws:b", "ws:a"])) == ["ws:a", "ws:b"]
    assert subs.ws == {"ws:broadcast"}


@pytest.mark.parametrize("bad", ["", None, 3])
def test_bad_channels_are_type_errors(bad):
    subs = make()
    for call in (subs.add_custom, subs.add_ws, subs.remove_custom, lambda c: subs.remove_ws([c])):
        with pytest.raises(TypeError):
            call(bad)


def test_unencodable_channels_are_refused():
    with pytest.raises(InvalidNameError):
        make().add_ws("ws:\ud800")
