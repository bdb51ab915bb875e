"""Helpers for the job tests: the shipped bundle pointed at a test's own topic, tables and
checkpoints, and the aggregates a correct job must write, computed in plain Python."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from streamops.bundle import Bundle, load
from streamops.bundle.models import KafkaSecurity
from streamops.localstack import local_broker
from tests.stack_fixtures import PROJECT

SHIPPED_BUNDLE = PROJECT / "bundle.yml"


def local_bundle(
    tmp_path: Path,
    *,
    topics: dict[str, str],
    jobs: dict[str, dict[str, Any]] | None = None,
    sasl: bool = True,
) -> Bundle:
    """bundle.yml's local target, with storage under `tmp_path`, the session's broker ('embedded':
    its SASL listener, or PLAINTEXT with sasl=False), the given topic per source, and field
    updates per job (e.g. a smaller max_offsets_per_trigger). Needs the `local_stack` fixture."""
    bundle = load(SHIPPED_BUNDLE, "local", local_broker=local_broker)
    spec = bundle.spec
    local = spec.targets["local"]
    kafka = local.kafka
    if not sasl:
        kafka = kafka.model_copy(update={"security": KafkaSecurity()})
    target = local.model_copy(update={"storage_root": str(tmp_path / "data"), "kafka": kafka})
    sources = {
        name: src.model_copy(update={"topic": topics[name]}) if name in topics else src
        for name, src in spec.sources.items()
    }
    job_models = {
        name: job.model_copy(update=(jobs or {})[name]) if name in (jobs or {}) else job
        for name, job in spec.jobs.items()
    }
    spec = spec.model_copy(
        update={
            "targets": {**spec.targets, "local": target},
            "sources": sources,
            "jobs": job_models,
        }
    )
    return dataclasses.replace(bundle, spec=spec)


def hour_of(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def expected_hourly(
    events: list[dict[str, Any]], group_by: tuple[str, ...], column: str
) -> dict[tuple[Any, ...], list[Any]]:
    """Valid events grouped by (hour window start, *group_by) -> the values of `column`."""
    groups: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for e in events:
        groups[(hour_of(e["event_time"]), *(e[g] for g in group_by))].append(e[column])
    return dict(groups)


def table_rows(table_uri: str, group_by: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The sink table's rows keyed by (window_start, *group_by); fails on a duplicated key."""
    rows = delta_rows(table_uri)
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = (r["window_start"], *(r[g] for g in group_by))
        assert key not in out, f"duplicate output row for {key}"
        assert r["window_end"] - r["window_start"] == timedelta(hours=1), r
        out[key] = r
    return out


def decimal_sum(values: list[Decimal]) -> Decimal:
    return sum(values, Decimal(0))


def delta_rows(table_uri: str) -> list[dict[str, Any]]:
    """Every row of a Delta table (read with delta-rs, independent of the Spark writer)."""
    from deltalake import DeltaTable

    return list(DeltaTable(table_uri).to_pyarrow_table().to_pylist())


def kafka_conf(bundle: Bundle, source: str = "claims") -> dict[str, str]:
    """librdkafka settings of `source` (the session broker's SASL listener, credentials included)."""
    return bundle.runtime.kafka_for(source).librdkafka()
