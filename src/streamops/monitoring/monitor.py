"""What every job registers on its batches: metrics (exported without blocking), the fast-path
alerts, and the consumer-group commit of each batch's end offsets."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamops.monitoring.exporters import BufferedExporter, JsonlSink, exporters_of, metrics_dir
from streamops.monitoring.metrics import BatchMetrics

if TYPE_CHECKING:
    from streamops.bundle import Bundle, KafkaClientSettings
    from streamops.kafka.groups import GroupCommitter
    from streamops.monitoring.alerts.evaluate import FastPath
    from streamops.pipeline.progress import BatchProgress

OnBatch = Callable[["BatchProgress"], None]


class JobMonitor:
    def __init__(
        self,
        metrics: BatchMetrics,
        exporter: BufferedExporter,
        fast_path: FastPath | None = None,
        committer: GroupCommitter | None = None,
    ):
        self.metrics = metrics
        self.exporter = exporter
        self.fast_path = fast_path
        self.committer = committer

    @classmethod
    def for_job(
        cls,
        bundle: Bundle,
        job_name: str,
        *,
        kafka: KafkaClientSettings | None,
        trigger_seconds: float | None,
        say: Callable[[str], None] | None = None,
        alerting: bool = True,
    ) -> JobMonitor:
        from streamops.monitoring.alerts.evaluate import FastPath

        mon = bundle.target.monitoring
        # Metrics go to JSON lines on the driver's disk (local targets) and through the Logs
        # Ingestion API (azure-monitor), each sink buffered on its own thread. On Databricks the
        # driver's disk is gone with the cluster and read by no alert: Azure Monitor only there.
        exporter: Any = None
        if mon.metrics == "jsonl" or bundle.target.mode != "databricks":
            exporter = BufferedExporter(
                JsonlSink(metrics_dir(bundle.state_dir)),
                max_batches=mon.buffer_batches,
                name="jsonl",
            )
        if mon.metrics == "azure-monitor" and mon.ingestion_endpoint and mon.dcr_immutable_id:
            from streamops.monitoring.azure_login import exporter_credential
            from streamops.monitoring.exporters import AzureMonitorSink, FanOut

            # Never DefaultAzureCredential on a cluster: the target's login (azure_login.py).
            credential = exporter_credential(bundle)
            azure = BufferedExporter(
                AzureMonitorSink(
                    mon.ingestion_endpoint, mon.dcr_immutable_id, mon.dcr_stream, credential
                ),
                max_batches=mon.buffer_batches,
                name="azure-monitor",
            )
            exporter = azure if exporter is None else FanOut(exporter, azure)
        assert exporter is not None  # azure-monitor without its endpoint fails validation
        fast = FastPath(bundle, say=say) if alerting else None
        # A sink that keeps failing pages "monitoring blind" and says why, never only a counter.
        alarm = ExporterAlarm(job_name, fast, say)
        for e in exporters_of(exporter):
            e.watch(mon.blind_after_failures, alarm)
        metrics = BatchMetrics(
            job=job_name,
            target=bundle.target_name,
            trigger_seconds=trigger_seconds,
            export=exporter,
            say=say,
            listeners=(fast,) if fast else (),
        )
        committer = None
        if mon.commit_offsets and kafka is not None:
            from streamops.kafka.groups import GroupCommitter

            committer = GroupCommitter(kafka.bootstrap_servers, kafka.librdkafka())
        return cls(metrics, exporter, fast, committer)

    def __call__(self, bp: BatchProgress) -> None:
        self.metrics(bp)
        # Only queries that read Kafka (bronze) have Kafka end offsets to mirror.
        if self.committer is not None and bp.end_offsets:
            self.committer.commit(bp.query_name, bp.end_offsets)

    def wrap(self, on_batch: OnBatch | None) -> OnBatch:
        def both(bp: BatchProgress) -> None:
            self(bp)
            if on_batch is not None:
                on_batch(bp)

        return both

    def close(self) -> None:
        self.exporter.close(timeout=5)
        if self.committer is not None:
            self.committer.close()


class ExporterAlarm:
    """What a job's exporters raise when they go blind: a line in the run's log (the driver's
    output, which the run page shows) and, with alerting on, a page through the fast path."""

    def __init__(self, job: str, fast: FastPath | None, say: Callable[[str], None] | None = None):
        self.job = job
        self.fast = fast
        self.say = say or (lambda _m: None)

    def blind(self, exporter: str, why: str, failures: int) -> bool:
        self.say(
            f"error: [{self.job}] monitoring is blind: the {exporter} metrics exporter failed "
            f"{failures} sends in a row: {why}. No alert sees this job's metrics until it sends"
        )
        return self.fast is None or self.fast.exporter_blind(self.job, exporter, why, failures)

    def sighted(self, exporter: str) -> bool:
        self.say(f"[{self.job}] the {exporter} metrics exporter sends again")
        return self.fast is None or self.fast.exporter_sighted(self.job, exporter)
