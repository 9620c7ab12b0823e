"""Notes of what compaction replaced: read back as written, bounded, refused when they are anything else; and what a
run deletes and holds, for any notes, listing and time (Hypothesis): nothing before its grace is over, nothing
rewritten since its note, nothing whose rows are in no file left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.compaction import StoredObject
from chalicelib.errors import ConfigError
from chalicelib.superseded import (
    MAX_GRACE_SECONDS,
    MAX_NOTE_BYTES,
    Superseded,
    grace_seconds_setting,
    retirement,
    unheld,
)

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
FILE = "compacted/table_name=Music/month=2024-05/month-2024-05-0123456789abcdef.parquet"
FRESH = StoredObject("audit/table_name=Music/dt=2024-05-01/a.json.gz", 100, '"e1"')
OLD_FILE = StoredObject("compacted/table_name=Music/month=2024-05/day-2024-05-01-fedcba9876543210.parquet", 900, '"e2"')


def _note(at: datetime = T0, objects: tuple[StoredObject, ...] = (FRESH, OLD_FILE), file: str = FILE) -> Superseded:
    return Superseded(file, "Music", at, objects)


def _listed(*objects: StoredObject) -> dict[str, StoredObject]:
    return {item.key: item for item in objects}


def test_a_note_reads_back_as_written_and_is_kept_outside_both_tiers() -> None:
    note = _note()
    assert Superseded.decode(note.encode()) == note
    assert note.note_key == "superseded/Music/month-2024-05-0123456789abcdef.json"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"not json", "not a note"),
        (b'{"file": 1}', "not a note"),
        (b"[]", "not a note"),
        (_note().encode().replace(b'"size":100', b'"size":true'), "not a size"),
        (_note().encode().replace(b'"size":100', b'"size":-1'), "not a size"),
        (_note().encode().replace(b"+00:00", b""), "no time zone"),
        (_note().encode().replace(b'"table":"Music"', b'"table":["Music"]'), "not a string"),
        (b" " * (MAX_NOTE_BYTES + 1), "more than the"),
    ],
)
def test_anything_else_than_a_note_is_refused_naming_why(body: bytes, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Superseded.decode(body)


def test_inputs_stay_held_through_the_grace_and_are_deleted_with_their_note_once_it_is_over() -> None:
    listed = _listed(FRESH, OLD_FILE, StoredObject(FILE, 1000, '"e3"'))
    within = retirement([_note()], listed, T0 + timedelta(seconds=239), 240)
    assert (within.delete, within.settled, within.held) == ((), (), {FRESH, OLD_FILE})
    assert unheld(listed.values(), within) == [listed[FILE]]
    over = retirement([_note()], listed, T0 + timedelta(seconds=240), 240)
    assert (over.delete, over.settled, over.held) == ((FRESH.key, OLD_FILE.key), (_note(),), frozenset())
    assert unheld(listed.values(), over) == [listed[FILE]]


def test_an_input_rewritten_since_its_note_is_neither_held_nor_deleted() -> None:
    rewritten = StoredObject(FRESH.key, 150, '"e9"')
    listed = _listed(rewritten, OLD_FILE, StoredObject(FILE, 1000, '"e3"'))
    assert retirement([_note()], listed, T0, 240).held == {OLD_FILE}
    over = retirement([_note()], listed, T0 + timedelta(hours=1), 240)
    assert (over.delete, over.settled) == ((OLD_FILE.key,), (_note(),))
    assert rewritten in unheld(listed.values(), over)


def test_a_note_whose_file_is_gone_deletes_nothing_unless_a_later_file_replaced_it() -> None:
    listed = _listed(FRESH, OLD_FILE)  # the note's file is not there
    orphan = retirement([_note()], listed, T0 + timedelta(hours=1), 240)
    assert (orphan.delete, orphan.settled, orphan.held) == ((), (_note(),), frozenset())
    later = _note(at=T0 + timedelta(minutes=5), objects=(StoredObject(FILE, 1000, '"e3"'),), file="compacted/x.parquet")
    chained = retirement(
        [_note(), later],
        _listed(FRESH, OLD_FILE, StoredObject("compacted/x.parquet", 1, '"x"')),
        T0 + timedelta(hours=1),
        240,
    )
    assert chained.delete == (FRESH.key, OLD_FILE.key)


def test_the_grace_setting_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPACTION_GRACE_SECONDS", raising=False)
    assert grace_seconds_setting() == 240
    monkeypatch.setenv("COMPACTION_GRACE_SECONDS", str(MAX_GRACE_SECONDS))
    assert grace_seconds_setting() == MAX_GRACE_SECONDS
    for wrong in (str(MAX_GRACE_SECONDS + 1), "inf", "nan", "0", "-5", "soon"):
        monkeypatch.setenv("COMPACTION_GRACE_SECONDS", wrong)
        with pytest.raises(ConfigError, match="COMPACTION_GRACE_SECONDS"):
            grace_seconds_setting()


_KEYS = st.sampled_from([f"audit/table_name=Music/dt=2024-05-01/{n}.json.gz" for n in range(4)] + [FILE, "compacted/y"])
_OBJECTS = st.builds(StoredObject, _KEYS, st.integers(0, 3), st.sampled_from(['"a"', '"b"']))
_NOTES = st.builds(
    Superseded,
    st.sampled_from([FILE, "compacted/y", "compacted/gone"]),
    st.just("Music"),
    st.integers(0, 600).map(lambda seconds: T0 + timedelta(seconds=seconds)),
    st.lists(_OBJECTS, max_size=4).map(tuple),
)


@given(st.lists(_NOTES, max_size=4), st.lists(_OBJECTS, max_size=6), st.integers(0, 900), st.sampled_from([0, 240]))
def test_nothing_is_deleted_before_its_grace_nor_unlike_its_note_nor_without_a_file_holding_its_rows(
    notes: list[Superseded], objects: list[StoredObject], seconds: int, grace: int
) -> None:
    listed = _listed(*objects)
    now = T0 + timedelta(seconds=seconds)
    retired = retirement(notes, listed, now, grace)
    replaced_files = {item.key for note in notes for item in note.objects}
    for key in retired.delete:
        assert any(
            (now - note.at).total_seconds() >= grace
            and listed[key] in note.objects
            and (note.file in listed or note.file in replaced_files)
            for note in notes
        )
    assert set(retired.settled) == {note for note in notes if (now - note.at).total_seconds() >= grace}
    assert retired.held <= set(listed.values())
    assert not {item.key for item in retired.held} & set(retired.delete)
    for note in notes:
        if (now - note.at).total_seconds() < grace:
            assert {item for item in note.objects if listed.get(item.key) == item} <= retired.held | {
                listed[key] for key in retired.delete
            }
    remaining = unheld(listed.values(), retired)
    assert not set(remaining) & retired.held
    assert not {item.key for item in remaining} & set(retired.delete)


def test_the_local_stacks_grace_is_half_its_compaction_interval_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from deutzia_local.settings import LocalSettings

    monkeypatch.delenv("COMPACTION_GRACE_SECONDS", raising=False)
    monkeypatch.setenv("DEUTZIA_COMPACT_INTERVAL", "8")
    assert (LocalSettings.from_environment().compact_interval, LocalSettings.from_environment().compact_grace) == (8, 4)
    monkeypatch.setenv("DEUTZIA_COMPACT_INTERVAL", "86400")  # runs only when told: the longest grace
    assert LocalSettings.from_environment().compact_grace == MAX_GRACE_SECONDS
    monkeypatch.setenv("COMPACTION_GRACE_SECONDS", "1.5")
    assert LocalSettings.from_environment().compact_grace == 1.5
    monkeypatch.setenv("COMPACTION_GRACE_SECONDS", str(MAX_GRACE_SECONDS * 2))
    with pytest.raises(ConfigError, match="COMPACTION_GRACE_SECONDS"):
        LocalSettings.from_environment()
