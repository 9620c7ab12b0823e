"""How rows look in a terminal: a table where they fit or the terminal is wide, else a block of labelled lines a row;
no value is ever cut short, whatever the width."""

from __future__ import annotations

import io
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from deutzia_cli.views import MIN_TABLE_WIDTH, plain, print_rows

COLUMNS = ["event_time", "principal_name", "item_key"]
ROW = ["2026-11-30T00:24:53Z", "bob", '{"Artist":"No One You Know","SongTitle":"Call Me Today"}']


def _printed(width: int, columns: list[str], rows: list[list[str]], whole: tuple[str, ...] = ()) -> list[str]:
    written = io.StringIO()
    print_rows(Console(file=written, width=width, highlight=False), None, columns, rows, whole)
    return written.getvalue().splitlines()


def test_rows_that_fit_are_a_table_and_rows_that_do_not_are_blocks_below_the_width_a_table_needs() -> None:
    assert _printed(80, ["n", "operation"], [["3", "Update"]])[1] == "┃ n ┃ operation ┃"
    blocks = _printed(80, COLUMNS, [ROW, ROW])
    assert blocks == [*(f"{name:<14} {value}" for name, value in zip(COLUMNS, ROW, strict=True)), "",
                      *(f"{name:<14} {value}" for name, value in zip(COLUMNS, ROW, strict=True))]  # fmt: skip
    assert not any(line.endswith(" ") for line in blocks)  # nothing trails a value a reader copies
    wide = _printed(MIN_TABLE_WIDTH, COLUMNS, [ROW], whole=("event_time",))
    assert wide[1].split("┃")[1:-1] == [f" {name:<{len(value)}} " for name, value in zip(COLUMNS, ROW, strict=True)]


def test_a_block_leaves_out_empty_cells() -> None:
    shown = _printed(40, COLUMNS, [["2026-11-30T00:24:53Z", "", "k" * 90]])
    assert [line.split()[0] for line in shown if not line.startswith(" ")] == ["event_time", "item_key"]
    assert "".join(line.split()[-1] for line in shown[1:]) == "k" * 90  # folded, whole


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(min_value=30, max_value=160),
    cells=st.lists(st.text(alphabet='abc{}":,-T0123456789 ', max_size=120), min_size=3, max_size=3),
)
def test_no_value_is_cut_short_at_any_width(width: int, cells: list[str]) -> None:
    shown = "".join(_printed(width, COLUMNS, [[plain(cell) for cell in cells]]))
    assert "…" not in shown
    assert not Counter("".join(cells).replace(" ", "")) - Counter(shown)  # every character of every value is there
