"""The cluster directory (crossws_sync.directory): pure, no I/O."""
from __future__ import annotations

import json

import pytest

from crossws_sync.core.directory import ClusterDirectory, SnapshotAssembler, snapshot_parts


def _rooms(count, members=3, width=50):
    return [("ns%d" % (i % 7), "room-%d-" % i + "x" * width, ["user%d" % (i * members + m) for m in range(members)])
            for i in range(count)]


def test_snapshot_parts_stay_under_the_target_and_lose_nothing():
    users = {"user%d" % i: float(i) for i in range(5000)}
    rooms = _rooms(3000)
    parts = list(snapshot_parts(users, rooms, part_bytes=20000))
    assert len(parts) > 10
    assert max(len(json.dumps({"users": u, "rooms": r})) for u, r in parts) < 2 * 20000
    merged_users = {k: v for u, _ in parts for k, v in u.items()}
    assert merged_users == users
    merged = {}
    for _, part_rooms in parts:
        for ns, room_map in part_rooms.items():
            for room_id, members in room_map.items():
                merged.setdefault((ns, room_id), []).extend(members)
    assert merged == {(ns, room_id): members for ns, room_id, members in rooms}


def test_one_huge_room_is_split_across_parts():
    parts = list(snapshot_parts({}, [("ns", "big", ["member-%05d" % i for i in range(10000)])], part_bytes=10000))
    assert len(parts) > 5
    assembler = SnapshotAssembler()
    result = None
    for index, (users, rooms) in enumerate(parts):
        result = assembler.add_part("A", 7, index, len(parts), users, rooms, now=0.0)
    assert result is not None
    assert len(result[2]["ns"]["big"]) == 10000


def test_empty_snapshot_is_one_part():
    assert list(snapshot_parts({}, [])) == [({}, {})]


def test_assembler_completes_once_and_replays_buffered_deltas_in_order():
    assembler = SnapshotAssembler()
    assert assembler.add_part("A", 5, 1, 2, {"u2": 2.0}, {}, now=0.0) is None
    assert assembler.assembling("A", now=1.0)
    assert assembler.buffer_delta("A", 7, [["u-", "u2"]])
    assert assembler.buffer_delta("A", 6, [["u+", "u3", 3.0]])
    assert assembler.add_part("A", 5, 1, 2, {"u2": 2.0}, {}, now=0.0) is None  # duplicate part
    seq, users, rooms, deltas = assembler.add_part("A", 5, 0, 2, {"u1": 1.0}, {"ns": {"r": ["u1"]}}, now=0.0)
    assert (seq, users, rooms) == (5, {"u1": 1.0, "u2": 2.0}, {"ns": {"r": {"u1"}}})
    assert [d[0] for d in deltas] == [6, 7]
    assert not assembler.assembling("A", now=1.0)
    directory = ClusterDirectory()
    directory.apply_snapshot("A", seq, users, rooms, now=0.0)
    for delta_seq, ops in deltas:
        assert directory.apply_delta("A", delta_seq, ops, now=0.0)[0]
    assert directory.users() == {"u1", "u3"}


def test_a_newer_snapshot_replaces_an_unfinished_one_and_stale_assemblies_expire():
    assembler = SnapshotAssembler(timeout=10.0)
    assembler.add_part("A", 1, 0, 3, {"old": 1.0}, {}, now=0.0)
    assert assembler.add_part("A", 2, 0, 2, {"new": 1.0}, {}, now=0.0) is None
    _, users, _, _ = assembler.add_part("A", 2, 1, 2, {}, {}, now=0.0)
    assert users == {"new": 1.0}
    assembler.add_part("B", 1, 0, 2, {}, {}, now=0.0)
    assert not assembler.assembling("B", now=11.0)
    assert not assembler.buffer_delta("B", 2, [])


def test_buffered_deltas_are_bounded():
    assembler = SnapshotAssembler(max_deltas=2)
    assembler.add_part("A", 1, 0, 2, {}, {}, now=0.0)
    assert assembler.buffer_delta("A", 2, []) and assembler.buffer_delta("A", 3, [])
    assert not assembler.buffer_delta("A", 4, [])
    assert not assembler.assembling("A", now=0.0)  # dropped: the caller asks for a snapshot again


@pytest.mark.parametrize("index, count", [(0, 0), (2, 2), (-1, 2)])
def test_bad_part_numbers_are_refused(index, count):
    with pytest.raises(ValueError):
        SnapshotAssembler().add_part("A", 1, index, count, {}, {}, now=0.0)


def test_delta_gap_asks_for_a_snapshot():
    directory = ClusterDirectory()
    directory.apply_snapshot("A", 3, {"u": 1.0}, {}, now=0.0)
    assert directory.apply_delta("A", 5, [["u-", "u"]], now=0.0) == (False, [])
    assert directory.heartbeat("A", 4, now=0.0) is True
    assert directory.heartbeat("A", 3, now=0.0) is False
