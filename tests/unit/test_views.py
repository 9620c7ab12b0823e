"""How rows look in a terminal: a table where they fit or wrap to at most three lines each, else a block of labelled
lines a row; no value is ever cut short or shown as an emoji, whatever the width; a day's coverage counts in words
where their columns do not fit."""

from __future__ import annotations

import io
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from deutzia_cli.views import MAX_LINES_PER_ROW, plain, print_coverage, print_rows

COLUMNS = ["event_time", "principal_name", "item_key"]
ROW = ["2026-11-30T00:24:53Z", "bob", '{"Artist":"No One You Know","SongTitle":"Call Me Today"}']


def _printed(width: int, columns: list[str], rows: list[list[str]], whole: tuple[str, ...] = ()) -> list[str]:
    written = io.StringIO()
    print_rows(Console(file=written, width=width, highlight=False), None, columns, rows, whole)
    return written.getvalue().splitlines()


def test_rows_that_fit_are_a_table_and_rows_that_would_wrap_to_more_than_three_lines_are_blocks() -> None:
    assert _printed(80, ["n", "operation"], [["3", "Update"]])[1] == "┃ n ┃ operation ┃"
    blocks = _printed(64, COLUMNS, [ROW, ROW])
    assert [line.split()[0] for line in blocks if line[:1].strip()] == COLUMNS * 2  # labelled lines, a row each
    assert blocks[len(COLUMNS) + 1] == ""  # a blank line between two rows
    assert "".join(line[15:] for line in blocks[2 : len(COLUMNS) + 1]) == ROW[2].replace("Me ", "Me")  # wrapped, whole
    assert not any(line.endswith(" ") for line in blocks)  # nothing trails a value a reader copies
    wrapped = _printed(80, COLUMNS, [ROW, ROW], whole=("event_time",))  # two lines a row: a table
    assert [line.split("│")[1:3] for line in wrapped[3:7]] == [[" 2026-11-30T00:24:53Z ", " bob            "],
                                                              [" " * 22, " " * 16]] * 2  # fmt: skip
    wide = _printed(100, COLUMNS, [ROW], whole=("event_time",))
    assert wide[1].split("┃")[1:-1] == [f" {name:<{len(value)}} " for name, value in zip(COLUMNS, ROW, strict=True)]


def test_a_history_too_wide_for_its_terminal_is_a_table_only_where_its_rows_take_a_line_to_three() -> None:
    columns = ["time", "who", "operation", "key", "attributes", "result", "from"]
    entry = ["2026-11-30T02:11:47Z", "bob", "Update", '{"Artist":"No One You Know","SongTitle":"Call Me Today"}',
             "SET Year = :y; condition attribute_not_exists(AlbumTitle)", "failed: ConditionalCheckFailedException",
             "127.0.0.1"]  # fmt: skip
    assert _printed(130, columns, [entry] * 3, whole=("time",))[0] == "time       2026-11-30T02:11:47Z"  # blocks
    assert len(_printed(140, columns, [entry] * 3, whole=("time",))) == 3 + 3 * 3 + 1  # rules, headings, 3 lines a row
    assert len(_printed(180, columns, [entry] * 3, whole=("time",))) == 3 + 2 * 3 + 1  # two lines a row


def test_no_rows_too_wide_for_the_terminal_still_name_their_columns() -> None:
    columns = [f"column_{number}" for number in range(12)]
    shown = " ".join(" ".join(_printed(60, columns, [])).split())
    assert shown == "no rows; columns: " + ", ".join(columns)
    assert _printed(80, ["n"], [])[1] == "┃ n ┃"  # a table, where it fits


def test_a_block_leaves_out_empty_cells() -> None:
    shown = _printed(40, COLUMNS, [["2026-11-30T00:24:53Z", "", "k" * 90]])
    assert [line.split()[0] for line in shown if not line.startswith(" ")] == ["event_time", "item_key"]
    assert "".join(line.split()[-1] for line in shown[1:]) == "k" * 90  # folded, whole


@settings(max_examples=100, deadline=None)
@given(
    width=st.integers(min_value=30, max_value=200),
    headings=st.lists(st.text(alphabet="ab_ ", max_size=12), min_size=8, max_size=8),
    rows=st.integers(min_value=1, max_value=8).flatmap(
        lambda count: st.lists(
            st.lists(st.text(alphabet='abc{}":,-T0123456789 ', max_size=120), min_size=count, max_size=count),
            min_size=1,
            max_size=3,
        )
    ),
)
def test_no_value_is_cut_short_and_no_line_is_too_wide_at_any_width(
    width: int, headings: list[str], rows: list[list[str]]
) -> None:
    columns = [f"column{number}{heading}" for number, heading in enumerate(headings[: len(rows[0])])]
    printed = _printed(width, columns, [[plain(cell) for cell in row] for row in rows], whole=("column0",))
    shown = "".join(printed)
    assert "…" not in shown
    assert not Counter("".join(map("".join, rows)).replace(" ", "")) - Counter(shown)  # every character is there
    assert all(len(line) <= width for line in printed)
    if printed[0].startswith("┏"):  # a table: its headings on one line, its rows 3 lines each at most, on average
        assert sum(line.startswith("┃") for line in printed) == 1
        assert sum(line.startswith("│") for line in printed) <= MAX_LINES_PER_ROW * len(rows)


def test_a_days_counts_are_columns_where_their_headings_fit_else_words_in_one_column() -> None:
    days = [{"day": "2026-11-29", "status": "no_trail_files"},
            {"day": "2026-11-30", "status": "verified", "trail_events": 6, "backfilled": 0, "still_missing": 0,
             "not_in_trail": 0, "altered": 0}]  # fmt: skip
    for width, expected in (
        (120, ["2026-11-30", "verified", "6", "0", "0", "0", "0"]),
        (80, ["2026-11-30", "verified", "6 calls in the trail, 0 backfilled, 0 missing,"]),
    ):
        written = io.StringIO()
        print_coverage(Console(file=written, width=width, highlight=False), "Music: coverage", days)
        lines = written.getvalue().splitlines()
        assert all(len(line) <= width for line in lines)
        assert "…" not in "".join(lines)
        rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
        assert rows[1] == expected
    assert rows[2] == ["", "", "0 not in the trail, 0 contradicting it"]  # the counts wrap, whole words
