"""How a history and a table's coverage look in a terminal. A history is a table where the terminal is wide enough to
read one (MIN_TABLE_WIDTH), else each entry is a block of labelled lines, as the page shows entries on a phone: at 80
columns a table of seven cut every time and key into three lines. A coverage table never cuts a day or its status,
and leaves out the counts no day has. Cells come as rich markup, escaped by the caller; pure but for printing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chalicelib.shown import visible_text

HISTORY_COLUMNS = ("time", "table", "who", "operation", "key", "attributes", "result", "from")
# Below this many columns a history is shown as blocks, one an entry.
MIN_TABLE_WIDTH = 100
# A coverage day's counts: the answer's field, then its column's heading.
COVERAGE_COUNTS = {
    "trail_events": "calls in the trail",
    "backfilled": "backfilled",
    "still_missing": "missing",
    "not_in_trail": "not in the trail",
    "altered": "contradicting it",
    "gone": "deleted",
    "restored": "restored",
}


def print_history(console: Console, title: str, columns: Sequence[str], rows: Sequence[Mapping[str, str]]) -> None:
    """The entries' `columns` (of HISTORY_COLUMNS), newest first, under `title`: a table, or blocks on a narrow
    terminal, where an entry's empty cells are left out."""
    if console.width >= MIN_TABLE_WIDTH:
        view = Table(title=title, title_justify="left")
        for name in columns:  # a time is never cut; a key is never cut short: it wraps
            view.add_column(name, no_wrap=name == "time", min_width=20 if name == "time" else None, overflow="fold")
        for row in rows:
            view.add_row(*(row[name] for name in columns))
        console.print(view)
        return
    console.print(title)
    blocks = Table.grid(padding=(0, 1))
    blocks.add_column(style="dim", no_wrap=True)
    blocks.add_column(overflow="fold")
    for number, row in enumerate(rows):
        if number:
            blocks.add_row("", "")
        for name in columns:
            if row[name]:
                blocks.add_row(name, row[name])
    console.print(blocks)


def plain(value: object) -> str:
    """A value shown as text, never as Rich markup (a key may hold `[red]` or anything else), with every character
    that would move the cursor, hide text or reorder it (a user agent may hold escape sequences that erase lines)
    written visibly as `\\uXXXX`."""
    return escape(visible_text(value))


def print_coverage(console: Console, title: str, days: Sequence[Mapping[str, object]]) -> None:
    """One line a day: its status and the counts of its check; a count no day has is no column."""
    names = [name for name in COVERAGE_COUNTS if any(name in day for day in days)]
    view = Table(title=plain(title))
    view.add_column("day", no_wrap=True)
    view.add_column("status", no_wrap=True)
    for name in names:
        view.add_column(COVERAGE_COUNTS[name], justify="right")
    for day in days:
        view.add_row(*(plain(day.get(name, "")) for name in ("day", "status", *names)))
    console.print(view)
