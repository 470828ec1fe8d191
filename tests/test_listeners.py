"""on / once / off listener registry (pure), including the original's bugs that must not exist (docs/parity.md §8)."""
import logging

import pytest

from crossws_sync.core.listeners import ListenerRegistry, check_event_name

LOGGER = logging.getLogger("crossws_sync.tests.listeners")


class Recorder:
    """A listener that records its calls under a label."""

    def __init__(self, calls, label):
        self.calls = calls
        self.label = label

    def __call__(self, *args):
        self.calls.append((self.label,) + args)


@pytest.fixture
def errors():
    return []


@pytest.fixture
def registry(errors):
    return ListenerRegistry(LOGGER, on_exception=lambda event, exc: errors.append((event, exc)))


# on / emit --------------------------------------------------------------------------------------


def test_on_and_emit_pass_all_arguments_in_registration_order(registry):
    calls = []
    registry.on("say", Recorder(calls, "a"))
    registry.on("say", Recorder(calls, "b"))
    assert registry.emit("say", "socket", {"msg": "hi"}, None) == 2
    assert calls == [("a", "socket", {"msg": "hi"}, None), ("b", "socket", {"msg": "hi"}, None)]
    assert registry.has("say") and registry.count("say") == 2


def test_emit_without_listeners_returns_zero(registry):
    assert registry.emit("nobody") == 0
    assert not registry.has("nobody") and registry.count("nobody") == 0


def test_same_function_registered_twice_runs_twice(registry):
    calls = []
    listener = Recorder(calls, "x")
    registry.on("e", listener)
    registry.on("e", listener)
    assert registry.emit("e") == 2
    assert len(calls) == 2


def test_events_are_independent(registry):
    calls = []
    registry.on("a", Recorder(calls, "a"))
    registry.on("b", Recorder(calls, "b"))
    registry.emit("a", 1)
    assert calls == [("a", 1)]


# once -------------------------------------------------------------------------------------------


def test_once_runs_a_single_time(registry):
    calls = []
    registry.on("e", Recorder(calls, "once"), once=True)
    assert registry.emit("e", 1) == 1
    assert registry.emit("e", 2) == 0
    assert calls == [("once", 1)]
    assert not registry.has("e")


def test_once_removes_only_itself_not_a_persistent_registration_of_the_same_function(registry):
    # Original bug: `once` removal used off(event, fn) and dropped the persistent one too.
    calls = []
    listener = Recorder(calls, "f")
    registry.on("e", listener)
    registry.on("e", listener, once=True)
    assert registry.emit("e", 1) == 2
    assert registry.emit("e", 2) == 1
    assert registry.emit("e", 3) == 1
    assert calls == [("f", 1), ("f", 1), ("f", 2), ("f", 3)]
    assert registry.count("e") == 1


def test_once_keeps_other_once_listeners_of_other_events(registry):
    calls = []
    registry.on("a", Recorder(calls, "a"), once=True)
    registry.on("b", Recorder(calls, "b"), once=True)
    registry.emit("a")
    assert registry.has("b") and not registry.has("a")


def test_once_listener_that_reregisters_itself_keeps_the_new_registration(registry):
    calls = []

    def again(value):
        calls.append(value)
        registry.on("e", again, once=True)

    registry.on("e", again, once=True)
    registry.emit("e", 1)
    registry.emit("e", 2)
    assert calls == [1, 2]
    assert registry.count("e") == 1


def test_once_listener_is_removed_even_when_it_raises(registry, errors):
    def boom():
        raise RuntimeError("boom")

    registry.on("e", boom, once=True)
    registry.emit("e")
    assert not registry.has("e")
    assert registry.emit("e") == 0
    assert len(errors) == 1


# off --------------------------------------------------------------------------------------------


def test_off_without_argument_removes_everything_for_the_event(registry):
    calls = []
    registry.on("e", Recorder(calls, "a"))
    registry.on("e", Recorder(calls, "b"), tag="t", once=True)
    registry.on("other", Recorder(calls, "o"))
    registry.off("e")
    assert registry.emit("e") == 0
    assert not registry.has("e")
    assert registry.emit("other") == 1


def test_off_by_function_removes_all_its_registrations_and_only_those(registry):
    calls = []
    f = Recorder(calls, "f")
    g = Recorder(calls, "g")
    registry.on("e", f)
    registry.on("e", g)
    registry.on("e", f, once=True)
    registry.on("e", f, tag="t")
    registry.off("e", f)
    assert registry.count("e") == 1
    registry.emit("e")
    assert calls == [("g",)]


def test_off_by_bound_method(registry):
    class Handler:
        def __init__(self):
            self.calls = 0

        def on_event(self):
            self.calls += 1

    handler = Handler()
    registry.on("e", handler.on_event)
    registry.off("e", handler.on_event)  # a new bound-method object, equal to the registered one
    registry.emit("e")
    assert handler.calls == 0
    assert not registry.has("e")


@pytest.mark.parametrize("tag", ["room-1", 7, 0, ("t", 1)])
def test_off_by_tag_removes_only_entries_with_that_tag(registry, tag):
    calls = []
    registry.on("e", Recorder(calls, "tagged"), tag)
    registry.on("e", Recorder(calls, "tagged-once"), tag, once=True)
    registry.on("e", Recorder(calls, "untagged"))
    registry.on("e", Recorder(calls, "other-tag"), "other")
    registry.off("e", tag)
    registry.emit("e")
    assert sorted(c[0] for c in calls) == ["other-tag", "untagged"]


def test_off_by_tag_is_not_loose_equality_between_string_and_number(registry):
    calls = []
    registry.on("e", Recorder(calls, "one"), 1)
    registry.off("e", "1")
    assert registry.emit("e") == 1


def test_off_of_unknown_event_or_unknown_tag_is_a_no_op(registry):
    calls = []
    registry.on("e", Recorder(calls, "a"), "t")
    registry.off("missing")
    registry.off("missing", "t")
    registry.off("e", "nope")
    registry.off("e", Recorder(calls, "not-registered"))
    assert registry.emit("e") == 1


def test_clear_removes_every_listener(registry):
    registry.on("a", lambda: None)
    registry.on("b", lambda: None, once=True)
    registry.clear()
    assert not registry.has("a") and not registry.has("b")
    assert registry.emit("a") == 0


# Mutation during emit ---------------------------------------------------------------------------


def test_off_during_emit_does_not_skip_the_listeners_already_scheduled(registry):
    calls = []
    second = Recorder(calls, "second")

    def first():
        calls.append(("first",))
        registry.off("e", second)

    registry.on("e", first)
    registry.on("e", second)
    assert registry.emit("e") == 2
    assert calls == [("first",), ("second",)]
    assert registry.emit("e") == 1


def test_listener_added_during_emit_runs_from_the_next_emit(registry):
    calls = []

    def adder():
        calls.append("adder")
        registry.on("e", lambda: calls.append("late"))

    registry.on("e", adder, once=True)
    registry.emit("e")
    assert calls == ["adder"]
    registry.emit("e")
    assert calls == ["adder", "late"]


# Exceptions -------------------------------------------------------------------------------------


def test_exception_in_one_listener_does_not_stop_the_others(registry, errors, caplog):
    calls = []
    exc = ValueError("bad listener")

    def bad(*args):
        raise exc

    registry.on("e", Recorder(calls, "before"))
    registry.on("e", bad)
    registry.on("e", Recorder(calls, "after"))
    with caplog.at_level(logging.ERROR, logger=LOGGER.name):
        assert registry.emit("e", 1) == 3
    assert calls == [("before", 1), ("after", 1)]
    assert errors == [("e", exc)]
    records = [r for r in caplog.records if r.name == LOGGER.name]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info and records[0].exc_info[1] is exc
    assert "'e'" in records[0].getMessage()


def test_every_failing_listener_is_reported(registry, errors):
    registry.on("e", lambda: 1 / 0)
    registry.on("e", lambda: [][1])
    assert registry.emit("e") == 2
    assert [type(exc) for _, exc in errors] == [ZeroDivisionError, IndexError]


def test_without_on_exception_hook_exceptions_are_only_logged(caplog):
    registry = ListenerRegistry(LOGGER)
    calls = []
    registry.on("e", lambda: 1 / 0)
    registry.on("e", lambda: calls.append("ok"))
    with caplog.at_level(logging.ERROR, logger=LOGGER.name):
        assert registry.emit("e") == 2
    assert calls == ["ok"]
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)


def test_base_exceptions_are_not_swallowed(registry, errors):
    class Stop(BaseException):
        """Stands for GreenletExit / KeyboardInterrupt, which must get through."""

    def stop():
        raise Stop()

    registry.on("e", stop)
    with pytest.raises(Stop):
        registry.emit("e")
    assert errors == []


# Event names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["constructor", "__proto__", "toString", "hasOwnProperty", "__class__", "__dict__", "emit"])
def test_prototype_like_names_are_ordinary_events(registry, name):
    assert registry.emit(name, 1) == 0
    assert not registry.has(name)
    calls = []
    registry.on(name, Recorder(calls, name))
    assert registry.has(name) and registry.count(name) == 1
    assert registry.emit(name, 1) == 1
    assert calls == [(name, 1)]
    registry.off(name)
    assert registry.emit(name, 2) == 0


# Argument checks (TypeError like the original) --------------------------------------------------


@pytest.mark.parametrize("event", ["", None, 1, 0, b"say", ["say"]])
def test_invalid_event_names_raise_type_error(registry, event):
    with pytest.raises(TypeError, match="^event must be a non-empty string"):
        registry.on(event, lambda: None)
    with pytest.raises(TypeError, match="^event must be a non-empty string"):
        registry.off(event)
    with pytest.raises(TypeError, match="^event must be a non-empty string"):
        check_event_name(event)


@pytest.mark.parametrize("listener", [None, "fn", 1, {"a": 1}])
def test_non_callable_listener_raises_type_error(registry, listener):
    with pytest.raises(TypeError, match="^listener must be a function$"):
        registry.on("e", listener)
    with pytest.raises(TypeError, match="^listener must be a function$"):
        registry.on("e", listener, once=True)
    assert not registry.has("e")


def test_check_event_name_returns_the_name():
    assert check_event_name("say") == "say"


# emit_with_extra (the client's reply argument) ----------------------------------------------------


def test_emit_with_extra_gives_the_extra_argument_only_to_listeners_that_take_it(registry):
    calls = []

    class Handler:
        def method(self, payload, reply):
            calls.append(("method", payload, reply))

        def __call__(self, payload):
            calls.append(("callable", payload))

    registry.on("e", lambda payload: calls.append(("one", payload)))
    registry.on("e", lambda payload, reply: calls.append(("two", payload, reply)))
    registry.on("e", lambda payload, reply=None: calls.append(("default", payload, reply)))
    registry.on("e", lambda *args: calls.append(("star",) + args))
    registry.on("e", Handler().method)
    registry.on("e", Handler())
    registry.on("e", lambda: calls.append(("none",)))  # raises (too many arguments): logged, others run
    assert registry.emit_with_extra("e", "REPLY", "P") == 4
    assert calls == [("one", "P"), ("two", "P", "REPLY"), ("default", "P", "REPLY"), ("star", "P", "REPLY"),
                     ("method", "P", "REPLY"), ("callable", "P")]


def test_emit_with_extra_removes_once_listeners_and_returns_zero_without_listeners(registry):
    calls = []
    registry.on("e", lambda payload, reply: calls.append(reply), once=True)
    assert registry.emit_with_extra("e", "R1", 1) == 1
    assert registry.emit_with_extra("e", "R2", 1) == 0
    assert calls == ["R1"] and not registry.has("e")


def test_positional_capacity():
    import sys

    from crossws_sync.core.listeners import positional_capacity

    def keyword_only(a, *, b):
        return a

    assert positional_capacity(lambda a, b: None) == 2
    assert positional_capacity(keyword_only) == 1
    assert positional_capacity(lambda *a: None) == sys.maxsize
    assert positional_capacity(print) in (-1, sys.maxsize)  # no signature, or *args: never breaks
