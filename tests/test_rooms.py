"""Room registry (pure): membership, namespace emptiness signals, prefix queries, copies, no leaks."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossws_sync.core.rooms import RoomRegistry


@pytest.fixture
def rooms():
    return RoomRegistry()


def assert_no_leaks(registry):
    """Nothing left in either index (the original leaked empty namespace maps)."""
    assert registry._rooms == {}
    assert registry._socket_rooms == {}
    assert len(registry) == 0
    assert registry.namespaces() == []
    assert registry.snapshot() == {}


def assert_consistent(registry):
    """Both indexes describe the same memberships and hold no empty containers."""
    forward = {(ns, rid, sid) for ns, rs in registry._rooms.items() for rid, sids in rs.items() for sid in sids}
    reverse = {(ns, rid, sid) for sid, nss in registry._socket_rooms.items() for ns, rids in nss.items() for rid in rids}
    assert forward == reverse
    for rs in registry._rooms.values():
        assert rs and all(rs.values())
    for nss in registry._socket_rooms.values():
        assert nss and all(nss.values())


# Mutations and namespace emptiness ------------------------------------------------------------


def test_join_reports_a_new_namespace_only_once(rooms):
    assert rooms.join("game", "r1", "s1") is True
    assert rooms.join("game", "r1", "s2") is False
    assert rooms.join("game", "r2", "s1") is False
    assert rooms.join("chat", "r1", "s1") is True
    assert rooms.socket_ids("game", "r1") == {"s1", "s2"}
    assert rooms.has_namespace("game") and rooms.has_namespace("chat")
    assert_consistent(rooms)


def test_join_twice_is_idempotent(rooms):
    rooms.join("ns", "r", "s")
    assert rooms.join("ns", "r", "s") is False
    assert rooms.socket_count("ns", "r") == 1
    assert rooms.joined_rooms("s") == {"ns": {"r"}}


def test_leave_reports_when_the_namespace_becomes_empty(rooms):
    rooms.join("ns", "r1", "a")
    rooms.join("ns", "r1", "b")
    rooms.join("ns", "r2", "a")
    assert rooms.leave("ns", "r1", "a") is False
    assert rooms.socket_ids("ns", "r1") == {"b"}
    assert rooms.is_joined("a", "ns", "r2") and not rooms.is_joined("a", "ns", "r1")
    assert rooms.leave("ns", "r1", "b") is False  # r2 still holds a
    assert rooms.room_ids("ns") == ["r2"]
    assert rooms.leave("ns", "r2", "a") is True
    assert not rooms.has_namespace("ns")
    assert_no_leaks(rooms)


def test_leave_of_unknown_things_is_false_and_creates_nothing(rooms):
    assert rooms.leave("nope", "r", "s") is False
    rooms.join("ns", "r", "a")
    assert rooms.leave("ns", "other", "a") is False
    assert rooms.leave("ns", "r", "stranger") is False
    assert rooms.socket_ids("ns", "r") == {"a"}
    assert rooms.joined_rooms("stranger") == {}
    assert "stranger" not in rooms._socket_rooms
    assert_consistent(rooms)


def test_remove_room_removes_every_member_and_reports_emptiness(rooms):
    rooms.join("ns", "r1", "a")
    rooms.join("ns", "r1", "b")
    rooms.join("ns", "r2", "b")
    assert rooms.remove_room("ns", "r1") is False
    assert rooms.joined_rooms("a") == {}
    assert rooms.joined_rooms("b") == {"ns": {"r2"}}
    assert rooms.remove_room("ns", "r2") is True
    assert_no_leaks(rooms)


def test_remove_room_of_unknown_room_or_namespace_is_false(rooms):
    assert rooms.remove_room("nope", "r") is False
    rooms.join("ns", "r", "a")
    assert rooms.remove_room("ns", "other") is False
    assert rooms.socket_ids("ns", "r") == {"a"}


def test_remove_socket_returns_only_the_namespaces_it_emptied(rooms):
    rooms.join("solo", "r1", "a")
    rooms.join("solo", "r2", "a")
    rooms.join("shared", "r1", "a")
    rooms.join("shared", "r1", "b")
    rooms.join("other", "r9", "b")
    assert sorted(rooms.remove_socket("a")) == ["solo"]
    assert rooms.joined_rooms("a") == {}
    assert rooms.socket_ids("shared", "r1") == {"b"}
    assert not rooms.has_namespace("solo")
    assert sorted(rooms.remove_socket("b")) == ["other", "shared"]
    assert_no_leaks(rooms)


def test_remove_socket_of_unknown_socket_is_empty(rooms):
    assert rooms.remove_socket("ghost") == []
    rooms.join("ns", "r", "a")
    assert rooms.remove_socket("ghost") == []
    assert rooms.socket_ids("ns") == {"a"}


def test_remove_socket_when_namespace_keeps_other_rooms(rooms):
    rooms.join("ns", "r1", "a")
    rooms.join("ns", "r2", "b")
    assert rooms.remove_socket("a") == []
    assert rooms.room_ids("ns") == ["r2"]
    assert_consistent(rooms)


# Queries: exact and prefix matching ---------------------------------------------


@pytest.fixture
def populated(rooms):
    # namespace "game": rooms "room-1", "room-10", "room-2", "lobby"
    rooms.join("game", "room-1", "a")
    rooms.join("game", "room-1", "b")
    rooms.join("game", "room-10", "b")
    rooms.join("game", "room-10", "c")
    rooms.join("game", "room-2", "d")
    rooms.join("game", "lobby", "e")
    # namespaces sharing a prefix with "game"
    rooms.join("game-eu", "room-1", "f")
    rooms.join("games", "x", "g")
    rooms.join("chat", "room-1", "a")
    return rooms


def test_socket_ids_exact(populated):
    assert populated.socket_ids("game", "room-1") == {"a", "b"}
    assert populated.socket_ids("game", "room-1", exact_match=True) == {"a", "b"}
    assert populated.socket_ids("game", "room-") == set()
    assert populated.socket_ids("game", "missing") == set()
    assert populated.socket_ids("missing", "room-1") == set()


def test_socket_ids_prefix_over_room_ids_of_one_namespace(populated):
    assert populated.socket_ids("game", "room-1", exact_match=False) == {"a", "b", "c"}
    assert populated.socket_ids("game", "room-", exact_match=False) == {"a", "b", "c", "d"}
    assert populated.socket_ids("game", "", exact_match=False) == {"a", "b", "c", "d", "e"}
    assert populated.socket_ids("game", "zzz", exact_match=False) == set()
    # The namespace itself is never a prefix here: game-eu's room-1 member "f" is not included.
    assert "f" not in populated.socket_ids("game", "room-1", exact_match=False)


def test_socket_ids_of_a_whole_namespace(populated):
    assert populated.socket_ids("game") == {"a", "b", "c", "d", "e"}
    assert populated.socket_ids("game", exact_match=False) == {"a", "b", "c", "d", "e"}
    assert populated.socket_ids("gam") == set()


def test_socket_count_matches_socket_ids(populated):
    assert populated.socket_count("game", "room-1") == 2
    assert populated.socket_count("game", "room-10") == 2
    assert populated.socket_count("game", "missing") == 0
    assert populated.socket_count("missing") == 0
    # Prefix and namespace counts are distinct sockets ("b" is in room-1 and room-10).
    assert populated.socket_count("game", "room-1", exact_match=False) == 3
    assert populated.socket_count("game", "room-", exact_match=False) == 4
    assert populated.socket_count("game") == 5
    assert populated.socket_count("game", "lobby", exact_match=False) == 1


def test_room_count_exact_and_by_namespace_prefix(populated):
    assert populated.room_count("game") == 4
    assert populated.room_count("game", exact_match=True) == 4
    assert populated.room_count("gam") == 0
    assert populated.room_count("game", exact_match=False) == 4 + 1 + 1  # game, game-eu, games
    assert populated.room_count("gam", exact_match=False) == 6
    assert populated.room_count("", exact_match=False) == 7
    assert populated.room_count("missing") == 0


def test_room_ids_exact_and_by_namespace_prefix(populated):
    assert sorted(populated.room_ids("game")) == ["lobby", "room-1", "room-10", "room-2"]
    assert populated.room_ids("missing") == []
    # Prefix mode concatenates room ids of every matching namespace; duplicates are possible.
    prefixed = populated.room_ids("game", exact_match=False)
    assert sorted(prefixed) == ["lobby", "room-1", "room-1", "room-10", "room-2", "x"]
    assert sorted(populated.room_ids("", exact_match=False)) == sorted(prefixed + ["room-1"])


def test_joined_rooms_with_and_without_namespace_prefix(populated):
    assert populated.joined_rooms("a") == {"game": {"room-1"}, "chat": {"room-1"}}
    assert populated.joined_rooms("b") == {"game": {"room-1", "room-10"}}
    assert populated.joined_rooms("a", "ch") == {"chat": {"room-1"}}
    assert populated.joined_rooms("a", "game") == {"game": {"room-1"}}
    assert populated.joined_rooms("f", "game") == {"game-eu": {"room-1"}}
    assert populated.joined_rooms("a", "zzz") == {}
    assert populated.joined_rooms("ghost") == {}


def test_is_joined(populated):
    assert populated.is_joined("a", "game", "room-1")
    assert populated.is_joined("a", "game")
    assert not populated.is_joined("a", "game", "room-10")
    assert not populated.is_joined("a", "gam")  # the namespace is exact, not a prefix
    assert not populated.is_joined("f", "game")
    assert not populated.is_joined("ghost", "game")
    assert not populated.is_joined("ghost", "game", "room-1")


def test_namespaces_snapshot_and_len(populated):
    assert sorted(populated.namespaces()) == ["chat", "game", "game-eu", "games"]
    assert populated.snapshot() == {
        "game": {"room-1": 2, "room-10": 2, "room-2": 1, "lobby": 1},
        "game-eu": {"room-1": 1},
        "games": {"x": 1},
        "chat": {"room-1": 1},
    }
    assert len(populated) == 7


def test_members_is_the_live_set_and_empty_is_immutable(populated):
    assert populated.members("game", "room-1") == {"a", "b"}
    empty = populated.members("game", "missing")
    assert empty == set()
    assert populated.members("missing", "r") == set()
    with pytest.raises(AttributeError):
        empty.add("x")  # the shared empty value is a frozenset: it cannot be polluted


# Copies -------------------------------------------------------------------------------------------


def test_query_results_are_copies(populated):
    before = populated.snapshot()
    joined_before = populated.joined_rooms("b")

    populated.socket_ids("game", "room-1").add("intruder")
    populated.socket_ids("game", "room-1", exact_match=False).clear()
    populated.socket_ids("game").discard("a")
    populated.room_ids("game").append("fake")
    populated.room_ids("game", exact_match=False).clear()
    joined = populated.joined_rooms("b")
    joined["game"].add("fake-room")
    joined["new-ns"] = {"r"}
    populated.joined_rooms("b", "game")["game"].clear()
    populated.namespaces().append("fake-ns")
    snap = populated.snapshot()
    snap["game"]["room-1"] = 99
    snap.clear()

    assert populated.snapshot() == before
    assert populated.joined_rooms("b") == joined_before
    assert populated.socket_ids("game", "room-1") == {"a", "b"}
    assert "fake-ns" not in populated.namespaces()
    assert_consistent(populated)


# No leaks -------------------------------------------------------------------------------------------


def test_no_leaks_after_everyone_leaves_by_every_path(rooms):
    for i in range(20):
        rooms.join("ns%d" % (i % 3), "room%d" % (i % 5), "sock%d" % i)
        rooms.join("shared", "all", "sock%d" % i)
    for i in range(0, 20, 3):
        rooms.leave("ns%d" % (i % 3), "room%d" % (i % 5), "sock%d" % i)
    rooms.remove_room("shared", "all")
    for i in range(20):
        rooms.remove_socket("sock%d" % i)
    assert_no_leaks(rooms)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["join", "leave", "remove_room", "remove_socket"]),
        st.sampled_from(["ns", "ns2", "other"]),
        st.sampled_from(["r1", "r2", "r10"]),
        st.sampled_from(["a", "b", "c"]),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_random_operations_match_a_simple_model(ops):
    registry = RoomRegistry()
    model = set()  # {(namespace, room_id, socket_id)}

    def namespaces():
        return {ns for ns, _, _ in model}

    for op, ns, room_id, socket_id in ops:
        before = namespaces()
        if op == "join":
            model.add((ns, room_id, socket_id))
            assert registry.join(ns, room_id, socket_id) is (ns not in before)
        elif op == "leave":
            model.discard((ns, room_id, socket_id))
            assert registry.leave(ns, room_id, socket_id) is (ns in before and ns not in namespaces())
        elif op == "remove_room":
            model = {m for m in model if (m[0], m[1]) != (ns, room_id)}
            assert registry.remove_room(ns, room_id) is (ns in before and ns not in namespaces())
        else:
            model = {m for m in model if m[2] != socket_id}
            assert sorted(registry.remove_socket(socket_id)) == sorted(before - namespaces())
        assert_consistent(registry)
        assert set(registry.namespaces()) == namespaces()
        for check_ns in ("ns", "ns2", "other"):
            assert registry.socket_ids(check_ns) == {s for n, _, s in model if n == check_ns}
            assert registry.socket_count(check_ns, "r1", exact_match=False) == len(
                {s for n, r, s in model if n == check_ns and r.startswith("r1")}
            )
    for socket_id in ("a", "b", "c"):
        registry.remove_socket(socket_id)
    assert_no_leaks(registry)


def test_view_is_the_live_mapping_without_a_copy(rooms):
    view = rooms.view()
    assert view == {}
    rooms.join("chat", "lobby", "a")
    rooms.join("chat", "lobby", "b")
    assert view == {"chat": {"lobby": {"a", "b"}}}  # the same object, updated in place
    rooms.remove_socket("a")
    rooms.remove_socket("b")
    assert view == {} and rooms.view() is view
