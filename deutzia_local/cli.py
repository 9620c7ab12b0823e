"""`python -m deutzia_local <command>`: the local stack's commands (what `make up`, `make run`, `make demo`,
`make compact` and `make reconcile` call; `make sql` is `deutzia sql`). Errors are one line naming the problem, with a
non-zero exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import traceback
from typing import Any, NoReturn

from chalicelib.errors import DeutziaError
from deutzia_local.settings import LocalSettings, quiet_ingest_logs


def _up(settings: LocalSettings, with_poller: bool, then: Any = None) -> NoReturn:
    from deutzia_local.stack import LocalStack

    stack = LocalStack(settings, with_poller=with_poller)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    code = 0
    try:
        stack.start()
        print(
            f"deutzia local stack ready: AWS endpoint {settings.aws_endpoint}  API {settings.api_url}"
            f"  (Ctrl-C stops it)",
            flush=True,
        )
        if then is not None:
            then(settings)
        stopping.wait()
    except DeutziaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except BaseException:
        traceback.print_exc()
        code = 1
    print("stopping the local stack...", flush=True)
    stack.stop()
    print("stopped", flush=True)
    # Every component has stopped and delivered what it held. A request stuck in native code (a wedged S3 read)
    # must not keep the process alive, so leave without joining worker threads at interpreter exit.
    sys.stderr.flush()
    os._exit(code)


def _poll(settings: LocalSettings) -> int:
    """The poller alone, against a running stack (started with --no-poller)."""
    from deutzia_local.stack import new_poller

    settings.apply_to_environment()
    poller = new_poller(settings)
    signal.signal(signal.SIGTERM, lambda *_: poller.stop())
    print(f"polling {settings.stream} on {settings.aws_endpoint}", flush=True)
    poller.run()
    return 0


def _replay(settings: LocalSettings) -> int:
    """Drain the failure queue once: replay each range ingest gave up on."""
    from deutzia_local.stack import new_replayer, require_running

    require_running(settings, api=False)
    settings.apply_to_environment()
    result = new_replayer(settings).drain()
    print(f"replayed {result.replayed} failed batch(es); {result.failed} still failing (left in the queue)")
    return 1 if result.failed else 0


def _compact(settings: LocalSettings) -> int:
    """One compaction run against the running stack: every partition up to today."""
    from chalicelib.compactor import CompactionRefusedError
    from deutzia_local.stack import new_compaction, require_running

    require_running(settings, api=False)
    settings.apply_to_environment()
    try:
        report = new_compaction(settings).run_once()
    except CompactionRefusedError as exc:  # what it did still counts: the refused objects wait for the next runs
        print(exc.report.summary())
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def _reconcile(settings: LocalSettings, day: str | None) -> int:
    """Reconcile one day (default: yesterday and today) against the running stack; 1 when anything is missing or
    the trail does not confirm a record."""
    from datetime import date

    from chalicelib.reconcile import INCOMPLETE, UNCONFIRMED, parse_day
    from deutzia_local.local_reconciliation import describe
    from deutzia_local.stack import local_trail_check, new_reconciliation, require_running

    try:
        chosen: date | None = None if day is None else parse_day(day)
    except ValueError as exc:
        print(f"error: DATE: {exc}", file=sys.stderr)
        return 2
    require_running(settings, api=False)
    settings.apply_to_environment()
    reconciliation = new_reconciliation(settings)
    try:
        reports = reconciliation.run_recent() if chosen is None else [reconciliation.run_day(chosen)]
    except ValueError as exc:
        print(f"error: DATE: {exc}", file=sys.stderr)
        return 2
    for report in reports:
        print(describe(report))
    problems = local_trail_check(settings).problems
    for problem in problems:
        print(f"the trail: {problem}")
    return 1 if problems or any(report.status in (INCOMPLETE, UNCONFIRMED) for report in reports) else 0


def _demo(settings: LocalSettings) -> int:
    from deutzia_local.demo import run_demo

    settings.apply_to_environment()
    return run_demo(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deutzia_local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the local stack in the foreground")
    up.add_argument("--no-poller", action="store_true", help="leave the Kinesis poller to `poll`")
    commands.add_parser("run", help="start the local stack, run the demo, keep serving")
    commands.add_parser("demo", help="run the demo against a running stack")
    commands.add_parser("poll", help="run the Kinesis poller against a running stack")
    commands.add_parser("replay", help="replay the batches ingest gave up on (the failure queue), once")
    commands.add_parser("compact", help="compact the audit records into key-sorted Parquet, once")
    reconcile = commands.add_parser("reconcile", help="reconcile the audit records with the trail's files, once")
    reconcile.add_argument("--date", help="the UTC day, YYYY-MM-DD (default: yesterday and today)")
    arguments = parser.parse_args(argv)
    quiet_ingest_logs()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server would log every request
    try:
        settings = LocalSettings.from_environment()
        if arguments.command == "up":
            return _up(settings, with_poller=not arguments.no_poller)
        if arguments.command == "run":
            from deutzia_local.demo import run_demo

            return _up(settings, with_poller=True, then=run_demo)
        if arguments.command == "demo":
            return _demo(settings)
        if arguments.command == "poll":
            return _poll(settings)
        if arguments.command == "replay":
            return _replay(settings)
        if arguments.command == "compact":
            return _compact(settings)
        return _reconcile(settings, arguments.date or None)  # the last command argparse allows
    except DeutziaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
