"""Starts and stops the whole local stack in one process: moto behind the CloudTrail recorder on one endpoint,
trail delivery, the Kinesis poller, the failure queue's replayer, the Glue crawler, compaction, reconciliation, and
the Chalice API (DuckDB engine).

Resources get the names in `settings` and are created with boto3 against the endpoint, as `make deploy` would
create them in AWS (moto's CloudFormation cannot make the trail, the subscription or the Glue table). State lives
as long as the process.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
import urllib.request
import warnings
from typing import Any

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from chalicelib.errors import DeutziaError
from chalicelib.schema import (
    AUDIT_COLUMNS,
    COMPACTED_PARTITION_COLUMNS,
    PARTITION_COLUMNS,
    TRAIL_COLUMNS,
    TRAIL_PARTITION_COLUMNS,
)
from chalicelib.trail_status import TrailCheck
from deutzia_local import moto_patches
from deutzia_local.crawler import LocalCrawler
from deutzia_local.delivery import TrailDelivery
from deutzia_local.faults import S3FaultInjector
from deutzia_local.local_compaction import LocalCompaction
from deutzia_local.local_reconciliation import LocalReconciliation
from deutzia_local.poller import KinesisPoller
from deutzia_local.recorder import CloudTrailRecorder
from deutzia_local.replayer import FailureQueueReplayer
from deutzia_local.settings import ACCOUNT_ID, HOST, LocalSettings

logger = logging.getLogger("deutzia.stack")
_client_lock = threading.Lock()


class StackError(DeutziaError):
    """The local stack cannot start (a port in use, an endpoint that does not answer)."""


def client(service: str, settings: LocalSettings) -> Any:
    """A boto3 client on the local endpoint; built under a lock (boto3 sessions are not thread-safe)."""
    with _client_lock:
        session = boto3.session.Session()
        return session.client(service, endpoint_url=settings.aws_endpoint, region_name=settings.region)  # type: ignore[call-overload]


def ingest_handler() -> Any:
    """The deployed Lambda's handler, `ingest_audit_events`, imported once the environment is set."""
    import app as deutzia_app

    return deutzia_app.ingest_audit_events


def new_replayer(settings: LocalSettings) -> FailureQueueReplayer:
    """The failure queue's replayer, invoking the deployed `replay_failed_batches` in-process."""
    import app as deutzia_app

    sqs = client("sqs", settings)
    queue_url = sqs.get_queue_url(QueueName=settings.failure_queue)["QueueUrl"]
    return FailureQueueReplayer(sqs, queue_url, deutzia_app.replay_failed_batches, settings.replay_interval)


def new_compaction(settings: LocalSettings) -> LocalCompaction:
    """Compaction of the local audit bucket with the deployed function's compactor, every `compact_interval` s."""
    from chalicelib.compactor import S3Compactor

    compactor = S3Compactor(
        client("s3", settings), settings.audit_bucket, "audit/", "compacted/", grace_seconds=settings.compact_grace
    )
    return LocalCompaction(compactor, settings.compact_interval)


def new_reconciliation(settings: LocalSettings) -> LocalReconciliation:
    """Reconciliation of the local trail with the deployed function's reconciler, on DuckDB."""
    from chalicelib.duckdb_engine import DuckDBTrailEngine
    from chalicelib.reconciler import Reconciler

    reconciler = Reconciler(
        DuckDBTrailEngine.from_environment(),
        client("s3", settings),
        settings.audit_bucket,
        settings.trail_bucket,
        f"AWSLogs/{ACCOUNT_ID}/CloudTrail/",
    )
    return LocalReconciliation(
        reconciler,
        settings.reconcile_interval,
        settings.reconcile_settle_seconds,
        trail_check=lambda: local_trail_check(settings),
    )


def local_trail_check(settings: LocalSettings) -> TrailCheck:
    """What is wrong with the local trail (stopped with `aws cloudtrail stop-logging`, deleted, its selectors changed
    with `aws cloudtrail put-event-selectors` to leave calls out), and when it did not log, as a reconcile run in AWS
    finds them for its own."""
    from chalicelib.trail_status import TrailDuties, check_trail

    # Every table, reads and writes, to the stack's bucket and log group: what the local trail does unless changed.
    duties = TrailDuties(None, reads=True, bucket=settings.trail_bucket, log_group=settings.log_group)
    return check_trail(client("cloudtrail", settings), settings.trail, duties=duties)


class LocalStack:
    """The running stack; `start()` returns once every endpoint answers."""

    def __init__(self, settings: LocalSettings, with_poller: bool = True) -> None:
        self.settings = settings
        self._with_poller = with_poller
        self._aws_server: BaseWSGIServer | None = None
        self._api_server: Any = None
        self._threads: list[threading.Thread] = []
        self._delivery: TrailDelivery | None = None
        self._poller: KinesisPoller | None = None
        self._crawler: LocalCrawler | None = None
        self._replayer: FailureQueueReplayer | None = None
        self._compaction: LocalCompaction | None = None
        self._reconciliation: LocalReconciliation | None = None

    def start(self) -> None:
        settings = self.settings
        settings.apply_to_environment()
        moto_patches.apply()
        self._delivery = TrailDelivery(
            client("logs", settings),
            client("s3", settings),
            settings.log_group,
            settings.trail_bucket,
            log_drop_rate=settings.log_drop_rate,
        )
        recorder = CloudTrailRecorder(
            DomainDispatcherApplication(create_backend_app), self._delivery.submit, settings.trail
        )
        endpoint = S3FaultInjector(recorder)
        self._aws_server = self._serve(
            "AWS endpoint",
            "DEUTZIA_AWS_PORT",
            settings.aws_port,
            lambda: make_server(HOST, settings.aws_port, endpoint, threaded=True, request_handler=MotoRequestHandler),
        )
        self._run_thread("aws-endpoint", self._aws_server.serve_forever)
        create_resources(settings)
        self._delivery.start()
        self._crawler = LocalCrawler(
            client("glue", settings),
            client("s3", settings),
            settings.audit_bucket,
            "audit/",
            settings.glue_database,
            settings.glue_table,
            settings.crawler_interval,
        )
        self._crawler.start()
        if self._with_poller:
            self._poller = new_poller(settings)
            self._poller.start()
        self._replayer = new_replayer(settings)
        self._replayer.start()
        self._compaction = new_compaction(settings)
        self._compaction.start()
        self._reconciliation = new_reconciliation(settings)
        self._reconciliation.start()
        self._api_server = self._serve("API", "DEUTZIA_API_PORT", settings.api_port, lambda: api_server(settings))
        self._run_thread("api", self._api_server.serve_forever)
        wait_until_ready(settings)

    def stop(self) -> None:
        """Stop everything, delivering what the trail still holds first."""
        components = (
            self._poller,
            self._replayer,
            self._compaction,
            self._reconciliation,
            self._crawler,
            self._delivery,
        )
        for component in components:
            if component is not None:
                with contextlib.suppress(Exception):
                    component.stop()
        for server in (self._api_server, self._aws_server):
            if server is not None:
                server.shutdown()
                with contextlib.suppress(Exception):
                    server.server_close()

    def _serve(self, what: str, variable: str, port: int, factory: Any) -> Any:
        # werkzeug exits the process on a busy port; find out first, and say which setting moves it.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StackError(f"{what}: port {port} is in use; stop what uses it or set {variable}") from None
                raise
        return factory()

    def _run_thread(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)


def new_poller(settings: LocalSettings) -> KinesisPoller:
    sqs = client("sqs", settings)
    queue_url = sqs.get_queue_url(QueueName=settings.failure_queue)["QueueUrl"]
    return KinesisPoller(
        client("kinesis", settings),
        client("s3", settings),
        sqs,
        settings.stream,
        settings.state_bucket,
        queue_url,
        ingest_handler(),
        first_retry_seconds=settings.first_retry_seconds,
    )


def api_server(settings: LocalSettings) -> Any:
    """Chalice's local server for the app, keeping its per-thread `current_request`, with a deeper listen queue."""
    from chalice.config import Config
    from chalice.local import (
        ChaliceRequestHandler,
        CustomLocalChalice,
        LocalChalice,
        LocalDevServer,
        ThreadedHTTPServer,
    )

    import app as deutzia_app

    class _Server(ThreadedHTTPServer):
        request_queue_size = 128

    class _QuietHandler(ChaliceRequestHandler):
        def log_message(self, *_: Any) -> None:
            """Requests are not logged line by line; the API's answers say what happened."""

    # `chalice local` serves IAM-authorized routes without SigV4 and warns on every request; the stack says so once.
    warnings.filterwarnings("ignore", message="IAMAuthorizer is not a supported in local mode")
    chalice_app = deutzia_app.app
    if not isinstance(chalice_app, LocalChalice):
        CustomLocalChalice.__bases__ = (LocalChalice, chalice_app.__class__)
        chalice_app.__class__ = CustomLocalChalice
    config = Config.create(chalice_stage="local", app_name="deutzia")
    server = LocalDevServer(chalice_app, config, HOST, settings.api_port, handler_cls=_QuietHandler, server_cls=_Server)
    return server.server


def create_resources(settings: LocalSettings) -> None:
    """The trail, its destinations, the stream, the subscription, the queue and the catalog, idempotently."""
    s3 = client("s3", settings)
    for bucket in (settings.audit_bucket, settings.trail_bucket, settings.state_bucket):
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    logs = client("logs", settings)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=settings.log_group)
    kinesis = client("kinesis", settings)
    with contextlib.suppress(kinesis.exceptions.ResourceInUseException):
        kinesis.create_stream(StreamName=settings.stream, ShardCount=1)
    stream_arn = kinesis.describe_stream_summary(StreamName=settings.stream)["StreamDescriptionSummary"]["StreamARN"]
    logs.put_subscription_filter(
        logGroupName=settings.log_group,
        filterName=settings.subscription_filter,
        filterPattern="",
        destinationArn=stream_arn,
        roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/deutzia-logs-to-kinesis",
    )
    client("sqs", settings).create_queue(QueueName=settings.failure_queue)
    _create_catalog(settings)
    cloudtrail = client("cloudtrail", settings)
    log_group_arn = f"arn:aws:logs:{settings.region}:{ACCOUNT_ID}:log-group:{settings.log_group}:*"
    with contextlib.suppress(cloudtrail.exceptions.TrailAlreadyExistsException):
        cloudtrail.create_trail(
            Name=settings.trail,
            S3BucketName=settings.trail_bucket,
            IsMultiRegionTrail=True,
            EnableLogFileValidation=True,
            CloudWatchLogsLogGroupArn=log_group_arn,
            CloudWatchLogsRoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/deutzia-trail-to-logs",
        )
        # As a selector for all DynamoDB tables does in AWS: every table, reads and writes, every region.
        cloudtrail.put_event_selectors(
            TrailName=settings.trail,
            AdvancedEventSelectors=[
                {
                    "Name": "DynamoDB item calls on every table",
                    "FieldSelectors": [
                        {"Field": "eventCategory", "Equals": ["Data"]},
                        {"Field": "resources.type", "Equals": ["AWS::DynamoDB::Table"]},
                    ],
                }
            ],
        )
        cloudtrail.start_logging(Name=settings.trail)


def _create_catalog(settings: LocalSettings) -> None:
    """The database, the two tiers' tables and the raw trail's, as the template defines them (DuckDB reads S3
    directly; the catalog is there for tools that read it, and the crawler registers the fresh tier's partitions)."""
    glue = client("glue", settings)
    with contextlib.suppress(glue.exceptions.AlreadyExistsException):
        glue.create_database(DatabaseInput={"Name": settings.glue_database})
    columns = [{"Name": c.name, "Type": c.glue_type} for c in AUDIT_COLUMNS]
    tables = [
        (
            settings.glue_table,
            {"classification": "json", "compressionType": "gzip"},
            PARTITION_COLUMNS,
            columns,
            f"{settings.audit_bucket}/audit/",
            ("org.apache.hadoop.mapred.TextInputFormat", "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"),
            "org.openx.data.jsonserde.JsonSerDe",
        ),
        (
            "audit_compacted",
            {"classification": "parquet"},
            COMPACTED_PARTITION_COLUMNS,
            [*columns, {"Name": "dt", "Type": "string"}],
            f"{settings.audit_bucket}/compacted/",
            (
                "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            ),
            "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
        ),
    ]
    trail_columns = [{"Name": c.name, "Type": c.glue_type} for c in TRAIL_COLUMNS]
    tables.append(
        (
            "cloudtrail_logs",
            {"classification": "cloudtrail"},
            TRAIL_PARTITION_COLUMNS,
            trail_columns,
            f"{settings.trail_bucket}/AWSLogs/{ACCOUNT_ID}/CloudTrail/",
            (
                "com.amazon.emr.cloudtrail.CloudTrailInputFormat",
                "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            ),
            "org.apache.hive.hcatalog.data.JsonSerDe",
        )
    )
    for name, parameters, partitions, table_columns, location, (input_format, output_format), serde in tables:
        with contextlib.suppress(glue.exceptions.AlreadyExistsException):
            glue.create_table(
                DatabaseName=settings.glue_database,
                TableInput={
                    "Name": name,
                    "TableType": "EXTERNAL_TABLE",
                    "Parameters": parameters,
                    "PartitionKeys": [{"Name": c.name, "Type": c.glue_type} for c in partitions],
                    "StorageDescriptor": {
                        "Columns": table_columns,
                        "Location": f"s3://{location}",
                        "InputFormat": input_format,
                        "OutputFormat": output_format,
                        "SerdeInfo": {"SerializationLibrary": serde},
                    },
                },
            )


def wait_until_ready(settings: LocalSettings, timeout: float = 30.0, hint: str = "", api: bool = True) -> None:
    """Return once the AWS endpoint (and the API) answer; StackError naming the one that does not (and `hint`)."""
    deadline = time.monotonic() + timeout
    endpoints = [("AWS endpoint", f"{settings.aws_endpoint}/moto-api/")]
    if api:
        endpoints.append(("API", f"{settings.api_url}/health"))
    for name, url in endpoints:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL we built
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"the {name} at {url} did not answer within {timeout:g} s{hint}")
            time.sleep(0.1)


def require_running(settings: LocalSettings, api: bool = True) -> None:
    """StackError telling how to start the stack, when it is not running (`api`: the API must answer too)."""
    hint = ": is the local stack running? Start it with `make up`"
    wait_until_ready(settings, timeout=2.0, hint=hint, api=api)
