"""How a history, a query's rows and a table's coverage look in a terminal. Rows are a table where they fit, or where
they wrap to three lines each at most (MAX_LINES_PER_ROW, on average), no heading wrapping; else each row is a block
of labelled lines, as the page shows entries on a phone: at 100 columns a table's history of seven columns cut every
key into six lines. No value is ever cut short (a long one wraps), no column is squeezed to nothing, and no emoji code
a value holds (`:a:`) is shown as an emoji; a coverage table never wraps a day or its status, leaves out the counts no
day has, and says a day's counts in one column of words where their headings would not fit. No value fails to print
where the output's encoding cannot write it (a terminal or file in Latin-1, cp1252 or ASCII): it is written as its
backslash escape, and JSON as ASCII. Cells come as rich markup, escaped by the caller (`plain`); pure but for printing.
"""

from __future__ import annotations

import codecs
import io
import json
import sys
from collections.abc import Iterable, Mapping, Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.segment import Segment, Segments
from rich.table import Table
from rich.text import Text

from chalicelib.shown import visible_text

HISTORY_COLUMNS = ("time", "table", "who", "operation", "key", "attributes", "result", "from")
# A table too wide for the terminal whose rows wrap to more lines than this, on average, is shown as blocks instead.
MAX_LINES_PER_ROW = 3
# The tables' box; a row's lines start with its `mid_left`.
_BOX = box.HEAVY_HEAD
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
    short) but never one of the `whole` columns, the widest narrowed first, none below its heading's width; or, when
    such a table would not fit the terminal or its rows would take more than MAX_LINES_PER_ROW lines each on average,
    each row a block of lines, one a column, labelled, its empty cells left out."""
    rows = list(rows)
    view = Table(title=None if title is None else _text(title), title_justify="left", box=_BOX)
    for name in columns:
        view.add_column(_text(name), no_wrap=name in whole, overflow="fold")
    for row in rows:
        view.add_row(*map(_text, row))
    natural = [_width(console, [name, *(row[index] for row in rows)]) for index, name in enumerate(columns)]
    headings = [max(_width(console, [name]), 2) for name in columns]
    room = console.width - (3 * len(columns) + 1)  # each column's borders and padding
    if sum(natural) <= room:
        _print_lines(console, console.render_lines(view, pad=False))
        return
    # A column's floor: its heading's width, so no heading wraps and none is squeezed to nothing; a whole one's own.
    floors = [natural[index] if name in whole else headings[index] for index, name in enumerate(columns)]
    widths = _narrowed(natural, floors, room)
    if widths is not None:
        for column, width in zip(view.columns, widths, strict=True):
            column.width = width
        wrapped = console.render_lines(view, pad=False)
        if sum(1 for line in wrapped if line and line[0].text == _BOX.mid_left) <= MAX_LINES_PER_ROW * len(rows):
            _print_lines(console, wrapped)
            return
    if title is not None:
        console.print(_text(title))
    if not rows:  # no block to label: the columns it would have, named
        console.print(_text("no rows; columns: " + ", ".join(columns)))
        return
    blocks = Table.grid(padding=(0, 1))
    blocks.add_column(style="dim", no_wrap=True)
    blocks.add_column(overflow="fold")
    for number, row in enumerate(rows):
        if number:
            blocks.add_row("", "")
        filled = [(name, cell) for name, cell in zip(columns, row, strict=True) if cell]
        for name, cell in filled or [(columns[0], "")]:  # a row of empty values still shows, as its first column
            blocks.add_row(_text(name), _text(cell))
    _print_lines(console, console.render_lines(blocks, pad=False))


def _width(console: Console, cells: Iterable[str]) -> int:
    """The width the widest of `cells` (markup) takes on one line."""
    options = console.options.update_width(_UNBOUNDED)
    return max(Measurement.get(console, options, _text(cell)).maximum for cell in cells)


def _text(markup: str) -> Text:
    """Markup as rich text, without emoji codes whatever the console (a key holding `:a:` is not an emoji)."""
    return Text.from_markup(markup, emoji=False)


def _narrowed(natural: Sequence[int], floors: Sequence[int], room: int) -> list[int] | None:
    """Column widths within `room`, the widest narrowed first to one level, none below its floor; None when the floors
    alone take more than the room."""
    if sum(floors) > room:
        return None
    low, high = 0, max(natural)  # the highest level at which the widths fit
    while low < high:
        level = (low + high + 1) // 2
        if sum(max(floor, min(width, level)) for width, floor in zip(natural, floors, strict=True)) <= room:
            low = level
        else:
            high = level - 1
    return [max(floor, min(width, low)) for width, floor in zip(natural, floors, strict=True)]


def _print_lines(console: Console, lines: Iterable[list[Segment]]) -> None:
    """Rendered lines, each without the spaces that pad it to its cells' width (a reader copies values, not those)."""
    printed: list[Segment] = []
    for line in lines:
        while line and not line[-1].control and not line[-1].text.strip():
            line.pop()
        if line:
            line[-1] = Segment(line[-1].text.rstrip(), line[-1].style, line[-1].control)
        printed += [*line, Segment.line()]
    console.print(Segments(printed), end="")


def writable_whatever_the_encoding() -> None:
    """Let stdout and stderr write any value: where their encoding cannot write a character a value holds (an emoji
    in a key, on a terminal or file in Latin-1, cp1252 or ASCII), it is written as its backslash escape
    (`\\U0001f3b5`) instead of ending the command with a traceback."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and not _writes_utf8(stream):
            stream.reconfigure(errors="backslashreplace")


def json_text(value: object) -> str:
    """`value` as JSON for stdout: its text as written where stdout writes UTF-8, else every character past
    ASCII escaped as JSON escapes it (`\\ud83c\\udfb5`), so that the JSON stays valid whatever the encoding."""
    return json.dumps(value, ensure_ascii=not _writes_utf8(sys.stdout))


def _writes_utf8(stream: object) -> bool:
    encoding = getattr(stream, "encoding", None)
    try:
        return isinstance(encoding, str) and codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def terminal(stderr: bool = False, soft_wrap: bool = False, quiet: bool = False) -> Console:
    """A console for what `deutzia` prints: no highlighting of numbers or addresses a value holds, and no emoji codes
    (rich would show a key holding `:a:` as an emoji, a value other than the one logged)."""
    return Console(stderr=stderr, soft_wrap=soft_wrap, quiet=quiet, highlight=False, emoji=False)


def plain(value: object) -> str:
    """A value shown as text, never as Rich markup (a key may hold `[red]` or anything else), with every character
    that would move the cursor, hide text or reorder it (a user agent may hold escape sequences that erase lines)
    written visibly as `\\uXXXX`, and every one the output's encoding cannot write as its backslash escape (so that
    the table is measured as it prints)."""
    text = visible_text(value)
    encoding = getattr(sys.stdout, "encoding", None)
    if isinstance(encoding, str) and not _writes_utf8(sys.stdout):
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    return escape(text)


def print_coverage(console: Console, title: str, days: Sequence[Mapping[str, object]]) -> None:
    """One line a day: its status and the counts of its check, a column each where their headings fit the terminal,
    else in words in one column (`4 calls in the trail, 0 missing`); a count no day has is left out."""
    names = [name for name in COVERAGE_COUNTS if any(name in day for day in days)]
    view = _coverage_table(title, [COVERAGE_COUNTS[name] for name in names])
    for day in days:
        view.add_row(*(_text(plain(day.get(name, ""))) for name in ("day", "status", *names)))
    if Measurement.get(console, console.options.update_width(_UNBOUNDED), view).maximum > console.width:
        view = _coverage_table(title, ["counts"])
        for day in days:
            counts = ", ".join(f"{day[name]} {COVERAGE_COUNTS[name]}" for name in names if name in day)
            view.add_row(*(_text(plain(cell)) for cell in (day.get("day", ""), day.get("status", ""), counts)))
    _print_lines(console, console.render_lines(view, pad=False))


def _coverage_table(title: str, counts: Sequence[str]) -> Table:
    view = Table(title=_text(plain(title)), box=_BOX)
    view.add_column("day", no_wrap=True)
    view.add_column("status", no_wrap=True)
    for heading in counts:
        view.add_column(heading, justify="left" if heading == "counts" else "right")
    return view
