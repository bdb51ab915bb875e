"""The checkpoint registry as a typed model, and the reset guard as a pure check: verdicts from
what the registry recorded and what the checkpoints and sinks hold, with no storage and no clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamops.bundle import Bundle, load
from streamops.checkpoint.registry import (
    Observed,
    QueryRecord,
    Registry,
    ResetFile,
    guard,
    guard_check,
    load_registry,
    parse_registry,
    queries_of,
    recorded_after,
    registry_path,
    save_registry,
)
from streamops.errors import CheckpointError, CheckpointGuardError
from tests.unit.helpers import edited, write

JOB = "claims_hourly"
AT = 1_700_000_000.0


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return load(write(tmp_path, edited()), "local")


def _record(bundle: Bundle, kind: str, **changes: object) -> QueryRecord:
    q = next(q for q in queries_of(bundle, JOB) if q.kind == kind)
    fields: dict[str, object] = {
        "query_name": q.query_name,
        "checkpoint": q.checkpoint,
        "query_id": f"id-{kind}",
        "offsets": None,
        "batch": 3,
        "event": "start",
        "at": AT,
    }
    return QueryRecord(**{**fields, **changes})  # type: ignore[arg-type]


def _observed(bundle: Bundle, **query_ids: str | None) -> list[Observed]:
    return [Observed(q, query_ids.get(q.kind, f"id-{q.kind}")) for q in queries_of(bundle, JOB)]


def test_a_malformed_registry_names_the_file_and_the_place() -> None:
    data = {"version": 1, "jobs": {JOB: {"gold": {"query_name": 7}}}, "resets": []}
    with pytest.raises(CheckpointError) as info:
        parse_registry(data, "abfss://ck@acct.dfs.core.windows.net/_streamops_registry.json")
    msg = str(info.value)
    assert msg.startswith("abfss://ck@acct.dfs.core.windows.net/_streamops_registry.json: ")
    assert f"malformed at jobs.{JOB}.gold" in msg and "Fix: restore it" in msg
    with pytest.raises(CheckpointError, match="malformed at the top level"):
        parse_registry([], "reg.json")


def test_the_registry_file_round_trips(bundle: Bundle) -> None:
    path = registry_path(bundle)
    assert load_registry(path, {}) == Registry()  # none yet: empty
    reg = Registry(jobs={JOB: {"gold": _record(bundle, "gold", offsets=[{"t": {"0": 5}}])}})
    save_registry(path, {}, reg)
    assert load_registry(path, {}) == reg
    on_disk = json.loads(Path(path).read_text())
    assert on_disk["jobs"][JOB]["gold"]["query_id"] == "id-gold" and on_disk["resets"] == []


def test_the_check_passes_what_the_registry_recorded(bundle: Bundle) -> None:
    recorded = {k: _record(bundle, k) for k in ("bronze", "gold")}
    verdict = guard_check(bundle, JOB, event="start", recorded=recorded, observed=_observed(bundle))
    assert verdict.refusals == [] and verdict.starting == {}
    verdict.raise_if_refused()


def test_the_check_refuses_a_moved_a_replaced_and_an_emptied_checkpoint(bundle: Bundle) -> None:
    recorded = {
        "bronze": _record(bundle, "bronze", checkpoint="/old/bronze"),
        "gold": _record(bundle, "gold", query_id="id-before"),
    }
    verdict = guard_check(
        bundle, JOB, event="deploy", recorded=recorded, observed=_observed(bundle)
    )
    moved, replaced = verdict.refusals
    assert "checkpoint location changed from /old/bronze" in moved
    assert "differs from id-before recorded at the last start" in replaced
    with pytest.raises(CheckpointGuardError, match=f"refusing to deploy job '{JOB}'"):
        verdict.raise_if_refused()

    gone = [Observed(q, None, sink_has_data=q.kind == "gold") for q in queries_of(bundle, JOB)]
    [emptied] = guard_check(bundle, JOB, event="start", recorded={}, observed=gone).refusals
    assert "empty or gone while its sink already holds data" in emptied


def test_a_reset_goes_past_the_refusal_and_is_recorded_at_the_given_time(bundle: Bundle) -> None:
    bronze = next(q for q in queries_of(bundle, JOB) if q.kind == "bronze")
    offsets = {"claims": {"0": 10}}
    reset = ResetFile(
        Path("offsets.json"), JOB, "delta-commit", {bronze.query_name: {"startingOffsets": offsets}}
    )
    observed = [
        Observed(q, None if q.kind == "bronze" else "id-gold") for q in queries_of(bundle, JOB)
    ]
    observed[0] = Observed(bronze, None, sink_has_data=True)
    verdict = guard_check(bundle, JOB, event="start", recorded={}, observed=observed, reset=reset)
    assert verdict.refusals == []
    assert verdict.starting == {bronze.query_name: '{"claims":{"0":10}}'}
    assert "empty or gone" in verdict.overrode[bronze.query_name][0]

    after = recorded_after(Registry(), verdict, reset=reset, at=AT)
    assert {r.at for r in after.jobs[JOB].values()} == {AT}
    [done] = after.resets
    assert (done.job, done.at, done.offsets_file, done.source) == (
        JOB,
        AT,
        "offsets.json",
        "delta-commit",
    )
    with pytest.raises(CheckpointGuardError, match="not 'other'"):
        reset.for_job("other")


def test_the_guard_records_the_time_it_is_given(bundle: Bundle) -> None:
    assert guard(bundle, JOB, event="deploy", now=AT) == {}
    recorded = load_registry(registry_path(bundle), {}).job(JOB)
    assert {r.at for r in recorded.values()} == {AT}
    assert {r.event for r in recorded.values()} == {"deploy"}
