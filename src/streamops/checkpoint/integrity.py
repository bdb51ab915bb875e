"""Scheduled integrity check of one job's checkpoints (the `streamops_checkpoint_integrity` DAG).

For the job's bronze and gold queries: the structural check, the source checks (bronze's Kafka
offsets against the broker when it can be reached, gold's Delta source offsets against the bronze
table), the registry check when a query id is recorded; then a fresh backup of each healthy
checkpoint. A checkpoint that is not there (the job never ran) is reported as
`missing`, not as a problem. `check_and_page` pages once per job run with problems (dedup key
`streamops/<target>/checkpoint/<job>`) and raises, so the Airflow task fails loudly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from streamops.errors import CheckpointError

if TYPE_CHECKING:
    from streamops.bundle import Bundle
    from streamops.checkpoint.registry import QueryNow, QueryRecord
    from streamops.clock import Clock
    from streamops.databricks_access import DatabricksAccess

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0


@dataclass
class QueryIntegrity:
    """One checkpoint of the job: what the check found and the backup it got."""

    kind: str  # "bronze" | "gold"
    query_name: str
    location: str
    status: str = "healthy"  # "healthy" | "problems" | "missing" | "unreadable"
    report: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    backup: str | None = None
    backup_files: int | None = None


@dataclass
class IntegrityResult:
    """Both checkpoints of one job, checked (and backed up) once."""

    job: str
    target: str
    queries: list[QueryIntegrity]
    broker: str  # what happened to the broker checks, in words

    @property
    def dedup_key(self) -> str:
        return f"streamops/{self.target}/checkpoint/{self.job}"

    @property
    def problems(self) -> list[str]:
        return [f"{q.query_name}: {p}" for q in self.queries for p in q.problems]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "target": self.target,
            "healthy": self.healthy,
            "broker": self.broker,
            "dedup_key": self.dedup_key,
            "queries": [asdict(q) for q in self.queries],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntegrityResult:
        """The inverse of `as_dict` (a cluster run's result line); derived fields recomputed."""
        queries = [QueryIntegrity(**q) for q in data["queries"]]
        return cls(data["job"], data["target"], queries, data["broker"])

    def render(self) -> str:
        lines = [f"checkpoint integrity of job '{self.job}' (target {self.target})"]
        for q in self.queries:
            lines.append(f"  {q.kind} {q.query_name}: {q.status} ({q.location})")
            lines += [f"    {p}" for p in q.problems]
            if q.backup:
                lines.append(f"    backed up {q.backup_files} files -> {q.backup}")
        lines.append(f"  broker checks: {self.broker}")
        lines.append("  healthy" if self.healthy else f"  {len(self.problems)} problem(s)")
        return "\n".join(lines)


def _broker(bundle: Bundle, job_name: str) -> tuple[str | None, dict[str, str], str]:
    """(bootstrap servers or None, client settings, what happened) for the job's source."""
    from confluent_kafka import Consumer

    from streamops.errors import LocalStackError
    from streamops.kafka.offsets import client_config

    try:
        kafka = bundle.runtime.kafka_for(bundle.job(job_name).source)
    except LocalStackError as exc:
        return None, {}, f"skipped: {exc}"
    bootstrap, extra = kafka.bootstrap_servers, kafka.librdkafka()
    consumer = Consumer(client_config(bootstrap, extra))
    try:
        consumer.list_topics(timeout=PROBE_TIMEOUT_S)
    except Exception as exc:
        return None, {}, f"skipped: broker {bootstrap} not reachable ({type(exc).__name__})"
    finally:
        consumer.close()
    return bootstrap, extra, f"ran against {bootstrap}"


@dataclass(frozen=True)
class _Checks:
    """What every query of one job is checked with."""

    bootstrap: str | None
    kafka_config: dict[str, str]
    recorded: dict[str, QueryRecord]  # the registry's records of the job, by query kind
    job_name: str


def _registry_records(bundle: Bundle, job_name: str) -> dict[str, QueryRecord]:
    from streamops.checkpoint.registry import recorded, storage_options_for

    root_so = storage_options_for(bundle.checkpoint_root, bundle)
    if root_so is None:
        return {}
    try:
        return recorded(bundle, job_name, root_so)
    except Exception as exc:  # the registry is a cross-check; its absence is no problem
        log.warning("registry of %s not read: %s", bundle.checkpoint_root, exc)
        return {}


def _check_query(bundle: Bundle, q: QueryNow, checks: _Checks, backup: bool) -> QueryIntegrity:
    import fsspec

    from streamops.checkpoint import backup as bk
    from streamops.checkpoint.checks import check
    from streamops.checkpoint.registry import storage_options_for

    res = QueryIntegrity(q.kind, q.query_name, q.checkpoint)
    so = storage_options_for(q.checkpoint, bundle)
    if so is None:
        res.status = "unreadable"
        res.problems.append(
            f"{q.checkpoint}: no storage options for a remote location. Fix: set "
            "$STREAMOPS_STORAGE_OPTIONS for the Airflow workers"
        )
        return res
    try:
        fs, path = fsspec.core.url_to_fs(q.checkpoint, **so)
        there = fs.exists(path.rstrip("/"))
    except Exception as exc:
        res.status = "unreadable"
        res.problems.append(f"{q.checkpoint}: cannot reach the storage ({exc})")
        return res
    if not there:
        res.status = "missing"
        return res
    rec = checks.recorded.get(q.kind)
    report = check(
        q.checkpoint,
        so,
        bootstrap_servers=checks.bootstrap,
        kafka_config=checks.kafka_config,
        source_tables=q.source_tables,
        expected_query_id=rec.query_id if rec else None,
        registry_note=f"job '{checks.job_name}' has no query id recorded yet",
    )
    res.report = report.as_dict()
    if report.unreadable is not None:
        res.status = "unreadable"
        res.problems.append(report.unreadable)
    elif report.errors:
        res.status = "problems"
        res.problems += [f.render() for f in report.errors]
    elif backup:
        try:
            made = bk.backup(
                q.checkpoint,
                q.query_name,
                bk.backup_root(bundle),
                retention=bundle.target.checkpoints.backup_retention,
                storage_options=so,
            )
        except Exception as exc:
            res.problems.append(f"backup failed: {exc}")
        else:
            res.backup, res.backup_files = made.path, made.files
    return res


def check_job(bundle: Bundle, job_name: str, *, backup: bool = True) -> IntegrityResult:
    """Check both checkpoints of `job_name`; back up each healthy one (read-only otherwise)."""
    from streamops.checkpoint.registry import queries_of

    bootstrap, extra, broker_note = _broker(bundle, job_name)
    checks = _Checks(bootstrap, extra, _registry_records(bundle, job_name), job_name)
    results = [_check_query(bundle, q, checks, backup) for q in queries_of(bundle, job_name)]
    return IntegrityResult(job_name, bundle.target_name, results, broker_note)


def check_and_page(
    bundle: Bundle,
    job_name: str,
    *,
    clock: Clock | None = None,
    access: DatabricksAccess | None = None,
) -> dict[str, Any]:
    """What the DAG task runs: check, back up, page once on problems and raise.

    On a Databricks target whose checkpoints this worker cannot reach (no storage login here),
    the job cluster checks them (`checkpoint.on_cluster`); paging and raising stay here."""
    from streamops.checkpoint.registry import storage_options_for
    from streamops.monitoring.paging import page

    if (
        bundle.target.mode == "databricks"
        and storage_options_for(bundle.checkpoint_root, bundle) is None
    ):
        from streamops.checkpoint.on_cluster import check_on_cluster

        found = check_on_cluster(bundle, job_name, clock=clock, access=access)
        result = IntegrityResult.from_dict(found)
    else:
        result = check_job(bundle, job_name)
    print(result.render())
    for q in result.queries:
        if q.status == "missing":
            log.warning(
                "%s: no checkpoint at %s (the job never ran here)", q.query_name, q.location
            )
    if not result.healthy:
        problems = result.problems
        summary = (
            f"checkpoint problems in job '{job_name}' ({bundle.target_name}): "
            f"{len(problems)} problem(s), first: {problems[0]}"
        )
        page(
            bundle,
            summary=summary,
            severity="error",
            dedup_key=result.dedup_key,
            details=json.loads(json.dumps(result.as_dict(), default=str)),
            component=job_name,
            event_class="checkpoint_integrity",
        )
        raise CheckpointError(summary + "\n" + result.render())
    return result.as_dict()
