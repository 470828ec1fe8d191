"""crossws_sync.results: a Result reads as the original's dict and as typed attributes."""
import copy
import json
import pickle

import gevent
import pytest

from crossws_sync import Result
from crossws_sync.bus.calls import PendingCalls
from crossws_sync.wire.events import encode_ack


def test_keys_read_as_items_and_as_attributes():
    result = Result(success=False, error="Cross-server callback timed out.", unresponded_count=2)
    assert result["success"] is False and result.success is False
    assert result.error == result["error"] == "Cross-server callback timed out."
    assert result.unresponded_count == 2
    result.callback_id = "cb1"  # attribute writes are item writes
    assert result["callback_id"] == "cb1"
    result["data"] = {"x": 1}
    assert result.data == {"x": 1}


def test_absent_keys_are_never_invented():
    result = Result(success=True)
    with pytest.raises(AttributeError):
        result.error
    with pytest.raises(KeyError):
        result["error"]
    assert not hasattr(result, "responses") and result.get("responses") is None
    del result.success
    assert result == {} and not hasattr(result, "success")
    with pytest.raises(AttributeError):
        del result.success


def test_equal_to_the_dict_of_the_same_keys_and_serialised_as_it():
    result = Result(success=True, data=Result(payload=[1, "a"]), remaining_responses=0)
    plain = {"success": True, "data": {"payload": [1, "a"]}, "remaining_responses": 0}
    assert result == plain and plain == result and isinstance(result, dict)
    assert result != {"success": True}
    assert json.loads(json.dumps(result)) == plain
    assert json.dumps(result) == json.dumps(plain)
    assert encode_ack("cb", result) == json.dumps({"payload": plain, "callbackId": "cb"}, separators=(",", ":"))


def test_copies_and_pickles_keep_the_keys_and_the_type():
    result = Result(success=True, responses={"a": {"payload": 1}})
    for clone in (copy.copy(result), copy.deepcopy(result), pickle.loads(pickle.dumps(result))):
        assert type(clone) is Result and clone == result and clone.responses == {"a": {"payload": 1}}
    assert copy.deepcopy(result).responses is not result.responses


def test_keys_are_listed_by_dir_and_dict_methods_keep_working():
    result = Result(success=True, remaining_responses=1)
    assert {"success", "remaining_responses", "items", "keys"} <= set(dir(result))
    assert sorted(result.keys()) == ["remaining_responses", "success"]
    assert dict(result.items()) == {"success": True, "remaining_responses": 1}


def test_declared_keys_cover_what_pending_calls_report():
    got = []
    calls = PendingCalls(lambda function, args, inline: function(*args), {"replies": 0, "late_replies": 0})
    calls.add("c1", got.append, None, 2, ["a", "b"], timeout=0.2)
    calls.reply({"callbackId": "c1", "senderServer": "a", "payload": 1}, inline=True)
    gevent.sleep(0.4)  # the timeout ends the call
    assert [set(result) <= set(Result.__annotations__) for result in got] == [True, True]
    assert got[0].success is True and got[0].remaining_responses == 1
    assert got[1].success is False and got[1].unresponded_servers == ["b"] and got[1].callback_id == "c1"
