"""How a history, a query's rows and a table's coverage look in a terminal. Rows are a table where they fit, or where
the terminal is wide enough to read one (MIN_TABLE_WIDTH), else each row is a block of labelled lines, as the page
shows entries on a phone: at 80 columns a history's table of seven cut every time and key into three lines. No value
is ever cut short (a long one wraps), and a coverage table never wraps a day or its status and leaves out the counts
no day has. Cells come as rich markup, escaped by the caller (`plain`); pure but for printing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.segment import Segment, Segments
from rich.table import Table

from chalicelib.shown import visible_text

HISTORY_COLUMNS = ("time", "table", "who", "operation", "key", "attributes", "result", "from")
# Below this many columns, a history or a query's rows too wide for the terminal are shown as blocks, one a row.
MIN_TABLE_WIDTH = 100
# The width a table is measured at, to know the width it needs.
_UNBOUNDED = 1_000_000
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


def print_rows(
    console: Console,
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    whole: Sequence[str] = (),
) -> None:
    """`rows` (cells in `columns`' order, as markup) under `title`: a table, where a cell too long wraps (none is cut
    short) but never one of the `whole` columns; or, when the table would not fit a terminal narrower than
    MIN_TABLE_WIDTH, each row a block of lines, one a column, labelled, its empty cells left out."""
    view = Table(title=title, title_justify="left")
    for name in columns:
        view.add_column(name, no_wrap=name in whole, overflow="fold")
    rows = list(rows)
    for row in rows:
        view.add_row(*row)
    natural = Measurement.get(console, console.options.update_width(_UNBOUNDED), view).maximum
    if natural <= console.width or console.width >= MIN_TABLE_WIDTH:
        console.print(view)
        return
    if title is not None:
        console.print(title)
    blocks = Table.grid(padding=(0, 1))
    blocks.add_column(style="dim", no_wrap=True)
    blocks.add_column(overflow="fold")
    for number, row in enumerate(rows):
        if number:
            blocks.add_row("", "")
        for name, cell in zip(columns, row, strict=True):
            if cell:
                blocks.add_row(name, cell)
    lines: list[Segment] = []
    for line in console.render_lines(blocks, pad=False):  # a grid pads each cell to its column: not the lines' ends
        while line and not line[-1].control and not line[-1].text.strip():
            line.pop()
        if line:
            line[-1] = Segment(line[-1].text.rstrip(), line[-1].style, line[-1].control)
        lines += [*line, Segment.line()]
    console.print(Segments(lines), end="")


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
