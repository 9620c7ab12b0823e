"""GET /audit's pages of one item on Athena, whatever the entries' sizes and however many rows Athena gives a call:
every entry once, in order, each page within its bound in bytes and entries, resuming within Athena's own pages."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.athena import AthenaQueryRunner
from chalicelib.query import ENTRY_COLUMNS, MAX_PAGE_BYTES, AuditQuery, PageToken, decode_page_token


class _Results:
    """Athena's side of one query: its rows, at most `batch` a call whatever MaxResults asks (as Athena may)."""

    def __init__(self, rows: list[list[str]], batch: int) -> None:
        self._rows = [ENTRY_COLUMNS, *rows]  # a result set starts with its header row
        self._batch = batch
        self._execution: dict[str, Any] = {}

    def start_query_execution(self, QueryString: str, WorkGroup: str, ExecutionParameters: list[str]) -> Any:
        self._execution = {"Query": QueryString, "WorkGroup": WorkGroup, "ExecutionParameters": ExecutionParameters}
        return {"QueryExecutionId": "q-1"}

    def get_query_execution(self, QueryExecutionId: str) -> Any:
        return {"QueryExecution": {**self._execution, "Status": {"State": "SUCCEEDED"}}}

    def get_query_results(self, QueryExecutionId: str, MaxResults: int, NextToken: str | None = None) -> Any:
        assert 1 <= MaxResults <= 1000
        start = int(NextToken) if NextToken else 0
        end = start + min(MaxResults, self._batch)
        answer: dict[str, Any] = {
            "ResultSet": {"Rows": [{"Data": [{"VarCharValue": v} for v in row]} for row in self._rows[start:end]]}
        }
        if end < len(self._rows):
            answer["NextToken"] = str(end)
        return answer


def _row(number: int, size: int) -> list[str]:
    values = {
        "event_id": f"e{number:04d}",
        "item_index": "0",
        "event_time": f"2024-05-01T12:{59 - number // 60:02d}:{59 - number % 60:02d}Z",  # newest first
        "success": "true",
        "attribute_names": "[]",
        "request_parameters": "é" * size,  # written as six bytes each in the answer
    }
    return [values.get(name, "x") for name in ENTRY_COLUMNS]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    sizes=st.lists(st.one_of(st.integers(0, 2000), st.integers(0, MAX_PAGE_BYTES // 6)), max_size=30),
    batch=st.integers(1, 8),
    limit=st.integers(1, 40),
)
def test_paging_gives_every_entry_once_in_order_each_page_within_its_bounds(
    sizes: list[int], batch: int, limit: int
) -> None:
    runner = AthenaQueryRunner(_Results([_row(n, size) for n, size in enumerate(sizes)], batch), "wg", "db")
    query = AuditQuery(table="Music", key='{"id":"song-1"}', limit=limit)  # one item: Athena's own pages
    seen: list[str] = []
    token: PageToken | None = None
    for _ in range(len(sizes) + 1):
        page = runner.fetch_page(query, token)
        assert page.entries or not sizes
        assert len(page.entries) <= limit
        written = sum(len(json.dumps(entry, separators=(",", ":"))) + 1 for entry in page.entries)
        assert written <= MAX_PAGE_BYTES or len(page.entries) == 1
        seen += [str(entry["event_id"]) for entry in page.entries]
        if page.next_token is None:
            break
        token = decode_page_token(page.next_token, query)
    assert seen == [f"e{n:04d}" for n in range(len(sizes))]
