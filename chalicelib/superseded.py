"""What a compacted file replaced, kept in place for a grace period before it is deleted: a query lists each tier when
it will (Athena gives no order), so one that listed the compacted tier before a new file was stored and the fresh
tier after its inputs were deleted would miss their rows without an error, and one that listed an input and opened it
after its delete would fail. A query that takes less than the grace sees every row in one tier or both, and readers
de-duplicate on `(event_id, item_index)`.

Each compaction unit leaves a note, `superseded/<table>/<file name>.json` in the audit bucket (outside both tiers'
locations: no table, view or crawler reads it), naming its file and every input it replaced with its ETag. Later
runs hold those inputs out of their plans while the grace lasts, then delete each input still as the note saw it (an
input rewritten since, such as a reconciliation object given more records, is new input, not deleted), then the
note. A lost note only makes a later run fold its inputs again. Pure: notes, listings and a clock in, decisions out;
`compactor` does the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from chalicelib.compaction import StoredObject
from chalicelib.config import number
from chalicelib.errors import ConfigError

NOTE_PREFIX = "superseded/"
# A note names a unit's inputs; one unit holds at most some tens of thousands of objects (its input bytes are bounded).
MAX_NOTE_BYTES = 16 * 1024 * 1024
DEFAULT_GRACE_SECONDS = 240
# The longest grace COMPACTION_GRACE_SECONDS may set: the fresh tier holds the grace's objects on top of a run's.
MAX_GRACE_SECONDS = 4 * 3600


def grace_seconds_setting(default: float = DEFAULT_GRACE_SECONDS) -> float:
    """How long replaced objects stay: $COMPACTION_GRACE_SECONDS, positive and at most MAX_GRACE_SECONDS."""
    grace = number("COMPACTION_GRACE_SECONDS", default)
    if grace > MAX_GRACE_SECONDS:
        raise ConfigError(f"environment variable COMPACTION_GRACE_SECONDS must be at most {MAX_GRACE_SECONDS}")
    return grace


@dataclass(frozen=True)
class Superseded:
    """The inputs a compacted file replaced (`objects`, as listed when it was planned) and when it was stored."""

    file: str
    table: str
    at: datetime
    objects: tuple[StoredObject, ...]

    @property
    def note_key(self) -> str:
        """Where the note is kept: named after its file, so a rerun of the same unit writes the same note."""
        name = self.file.rsplit("/", 1)[-1].removesuffix(".parquet")
        return f"{NOTE_PREFIX}{self.table}/{name}.json"

    def encode(self) -> bytes:
        return json.dumps(
            {
                "file": self.file,
                "table": self.table,
                "superseded_at": self.at.isoformat(),
                "objects": [{"key": item.key, "size": item.size, "etag": item.etag} for item in self.objects],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> Superseded:
        """A note as `encode` writes it; ValueError naming what is wrong with anything else."""
        if len(body) > MAX_NOTE_BYTES:
            raise ValueError(f"it holds {len(body):,} bytes, more than the {MAX_NOTE_BYTES:,} a note may")
        try:
            note = json.loads(body)
            at = datetime.fromisoformat(note["superseded_at"])
            objects = tuple(
                StoredObject(_text(item["key"]), _count(item["size"]), _text(item["etag"])) for item in note["objects"]
            )
            file, table = _text(note["file"]), _text(note["table"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"it is not a note of superseded objects ({type(exc).__name__}: {exc})") from exc
        if at.tzinfo is None:
            raise ValueError("its superseded_at has no time zone")
        return cls(file, table, at.astimezone(UTC), objects)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"{value!r} is not a size")
    return value


class Retirement(NamedTuple):
    """What a run does with the notes it found: delete `delete` (inputs whose grace is over, as their note saw them)
    and then the notes `settled`; hold `held` (inputs still in their grace) out of its plan."""

    delete: tuple[str, ...]
    settled: tuple[Superseded, ...]
    held: frozenset[StoredObject]


def retirement(
    notes: Sequence[Superseded], listed: Mapping[str, StoredObject], now: datetime, grace_seconds: float
) -> Retirement:
    """Of `notes`, those stored at least `grace_seconds` before `now` are settled: their inputs that are still listed
    as the note saw them are deleted. The others hold their inputs out of the plan. A note whose file is neither
    listed nor replaced by another note's file is settled without deleting anything (its inputs are folded again)."""
    replaced_files = {item.key for note in notes for item in note.objects}
    delete: list[str] = []
    settled: list[Superseded] = []
    held: set[StoredObject] = set()
    for note in notes:
        current = [item for item in note.objects if listed.get(item.key) == item]
        if (now - note.at).total_seconds() < grace_seconds:
            held.update(current)
            continue
        if note.file in listed or note.file in replaced_files:
            delete.extend(item.key for item in current)
        settled.append(note)
    deleting = set(delete)
    return Retirement(tuple(sorted(deleting)), tuple(settled), frozenset(held - {o for o in held if o.key in deleting}))


def unheld(objects: Iterable[StoredObject], retired: Retirement) -> list[StoredObject]:
    """`objects` without those the notes hold or are deleting."""
    deleting = set(retired.delete)
    return [item for item in objects if item not in retired.held and item.key not in deleting]
