"""`make faults`, smaller: mixed calls from many threads through an S3 outage longer than the retries, a poller
killed mid-stream and a poison record; after recovery every call is in GET /audit once, with its result, and stays
so when copies of calls are forged in the trail's log group."""

from __future__ import annotations

from deutzia_local.fault_suite import run_suite


def test_every_call_survives_the_faults_exactly_once() -> None:
    lines: list[str] = []
    report = run_suite(calls=400, threads=8, outage_seconds=10, progress=lines.append)
    assert report.calls == 400
    assert report.items > report.calls  # batches and transactions touch several items per call
    assert (report.lost, report.duplicated, report.wrong_success, report.unexpected) == (0, 0, 0, 0), report.lines()
    assert report.found == report.items
    assert report.quarantined == 1  # the poison record, kept byte for byte
    assert report.replayed_batches >= 1, lines  # the outage outlasted the retries: replay brought them back
    # Forged copies of real calls in the log group, each naming another caller and the opposite result: reconciliation
    # restores the trail's own records, and the history shows each call as CloudTrail logged it.
    assert (report.forged, report.restored, report.forgeries_shown) == (20, 20, 0), report.lines()
    assert report.exact
