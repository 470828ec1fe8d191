"""crossws_sync.errors: one tree under CrossWSError, each also its builtin; reserved names stay exported."""
import pickle

import pytest

import crossws_sync
from crossws_sync import errors

#: name -> the builtin a user may already catch it as.
BUILTINS = {
    "ConfigError": ValueError, "InvalidNameError": ValueError, "LimitExceededError": ValueError,
    "ProtocolError": ValueError, "MessageTooBig": ValueError, "HandshakeError": ValueError,
    "ConnectionClosedError": ConnectionError, "NotOpenError": ConnectionError,
    "AckTimeoutError": TimeoutError, "ConnectTimeoutError": TimeoutError, "EnvelopeError": ValueError,
    "RedisUnavailableError": ConnectionError, "MonkeyPatchError": RuntimeError,
}


def test_every_exception_is_exported_from_the_package_and_caught_as_crosswserror_and_its_builtin():
    assert set(errors.__all__) == set(BUILTINS) | {"CrossWSError"}
    for name, builtin in BUILTINS.items():
        cls = getattr(crossws_sync, name)
        assert cls is getattr(errors, name)
        with pytest.raises(errors.CrossWSError):
            raise cls("x")
        with pytest.raises(builtin):
            raise cls("x")


def test_subclasses_keep_their_parents():
    assert issubclass(errors.InvalidNameError, errors.ConfigError)
    assert issubclass(errors.MessageTooBig, errors.ProtocolError)
    assert issubclass(errors.HandshakeError, errors.ProtocolError)


def test_attributes_carry_the_details():
    assert errors.ProtocolError("bad").close_code == 1002
    assert errors.ProtocolError("bad", close_code=1007).close_code == 1007
    too_big = errors.MessageTooBig("too big")
    assert too_big.close_code == 1009 and str(too_big) == "too big"
    assert errors.HandshakeError("refused", status=403).status == 403
    assert errors.HandshakeError("no status line").status is None
    limit = errors.LimitExceededError("too many rooms", limit="max_rooms_per_socket", value=3)
    assert (limit.limit, limit.value, str(limit)) == ("max_rooms_per_socket", 3, "too many rooms")


def test_simple_exceptions_survive_pickling():
    for name in ("ConfigError", "EnvelopeError", "RedisUnavailableError", "ConnectionClosedError"):
        error = pickle.loads(pickle.dumps(getattr(errors, name)("why")))
        assert type(error) is getattr(errors, name) and str(error) == "why"


@pytest.mark.parametrize("name", ["ConnectionClosedError", "NotOpenError", "AckTimeoutError"])
def test_reserved_exceptions_say_so(name):
    assert "Reserved" in getattr(errors, name).__doc__
