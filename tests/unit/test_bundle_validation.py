"""Every validation rule: the right problem, at the right `file:line` and YAML path, with a fix.

Each test edits a copy of the shipped bundle.yml (valid for local, dev and prod) so that exactly
one rule is broken, and would fail if that rule were removed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamops.bundle import ENV_BOOTSTRAP, load
from streamops.bundle.durations import parse_duration
from streamops.bundle.validation import non_durable_reason
from streamops.errors import BundleError, Problem
from tests.unit.helpers import (
    edited,
    errors,
    line_of,
    only,
    problems,
    shipped_text,
    warnings_of,
    write,
)

PROD_CK = "abfss://checkpoints@streamopsprod.dfs.core.windows.net/streamops"
CLAIMS_WATERMARK = "      - watermark: {column: event_time, delay: 30 minutes}\n"
CLAIMS_STEPS = shipped_text()[
    shipped_text().index(CLAIMS_WATERMARK) : shipped_text().index("    sink: claims_hourly\n")
]
TOKEN = "dapi" + "0123456789abcdef" * 2
# Lines that open each job, to find a line inside that job (table keys repeat the job names).
CLAIMS_JOB = "description: Insurance claims"
TELEMETRY_JOB = "description: Manufacturing telemetry"
TRANSACTIONS_JOB = "description: Financial transactions"


@pytest.fixture(autouse=True)
def _no_bootstrap_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BOOTSTRAP, raising=False)


def _has_fix(p: Problem) -> None:
    assert p.fix, f"no fix in: {p.render()}"
    assert f". Fix: {p.fix}" in p.render()


# --- unknown keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "path", "suggestion"),
    [
        ("alerts:\n", "alert:\n", "alert", "alerts"),
        (f"    checkpoint_root: {PROD_CK}\n", f"    checkpoint_rot: {PROD_CK}\n",
         "targets.prod.checkpoint_rot", "checkpoint_root"),
        ("    cpu_heavy: true\n", "    cpu_heavey: true\n", "jobs.telemetry_5min.cpu_heavey",
         "cpu_heavy"),
        (CLAIMS_WATERMARK, "      - watermark: {column: event_time, delay: 30 minutes, dealy: 1}\n",
         "jobs.claims_hourly.steps[0].watermark.dealy", "delay"),
        ("          window: 1 hour\n          group_by: [claim_type, region]\n",
         "          window: 1 hour\n          grup_by: [claim_type, region]\n",
         "jobs.claims_hourly.steps[1].window_aggregate.grup_by", "group_by"),
        ("- {name: claims, fn: count}", "- {name: claims, fn: count, colunm: claim_id}",
         "jobs.claims_hourly.steps[1].window_aggregate.metrics[0].colunm", "column"),
        ("      sasl_mechanism: PLAIN\n        username: \"{{secrets/streamops-prod",
         "      sasl_mechansim: PLAIN\n        username: \"{{secrets/streamops-prod",
         "targets.prod.kafka.security.sasl_mechansim", "sasl_mechanism"),
    ],
)  # fmt: skip
def test_unknown_keys_are_errors_with_did_you_mean(
    tmp_path: Path, old: str, new: str, path: str, suggestion: str
) -> None:
    text = edited((old, new))
    found = problems(write(tmp_path, text), "prod")
    assert len(found) == 1, [p.render() for p in found]
    p = only(found, path)
    key = path.rsplit(".", 1)[-1]
    assert p.severity == "error"
    assert p.message == f"unknown key '{key}'"
    assert p.line == line_of(text, f"{key}:")
    assert f"did you mean '{suggestion}'?" in p.fix
    assert "allowed here:" in p.fix
    _has_fix(p)


def test_an_unknown_step_kind_is_an_error_with_did_you_mean(tmp_path: Path) -> None:
    text = edited((CLAIMS_WATERMARK, CLAIMS_WATERMARK.replace("- watermark:", "- watermrk:")))
    (p,) = problems(write(tmp_path, text), "prod")
    assert p.path == "jobs.claims_hourly.steps[0].watermrk"
    assert p.message == "unknown step 'watermrk'"
    assert p.line == line_of(text, "- watermrk:")
    assert "did you mean 'watermark'?" in p.fix
    assert "window_aggregate" in p.fix


def test_a_misspelt_required_key_says_both_unknown_and_missing(tmp_path: Path) -> None:
    text = edited(("project: streamops-demo", "projet: streamops-demo"))
    found = problems(write(tmp_path, text), "local")
    unknown = only(found, "projet")
    assert unknown.line == line_of(text, "projet:")
    assert "did you mean 'project'?" in unknown.fix
    missing = only(found, "project")
    assert missing.message == "required key 'project' is missing"


# --- durable storage -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "old", "new", "path", "why"),
    [
        ("prod", f"checkpoint_root: {PROD_CK}\n", "checkpoint_root: /tmp/ck\n",
         "targets.prod.checkpoint_root", "/tmp is local scratch"),
        ("dev", "checkpoint_root: abfss://checkpoints@streamopsdev.dfs.core.windows.net/streamops\n",
         "checkpoint_root: file:/mnt/ck\n", "targets.dev.checkpoint_root", "file: URL"),
        ("prod", "storage_root: abfss://lake@streamopsprod.dfs.core.windows.net/streamops\n",
         "storage_root: data/lake\n", "targets.prod.storage_root", "local path"),
        ("prod", "    source: claims\n",
         "    source: claims\n    checkpoint: dbfs:/tmp/ck/claims_hourly\n",
         "jobs.claims_hourly.checkpoint", "dbfs:/tmp is scratch"),
        ("dev", "    zorder_by: [region]\n",
         "    zorder_by: [region]\n    location: file:///data/claims_hourly\n",
         "tables.claims_hourly.location", "file: URL"),
        ("prod", "    zorder_by: [device_id]\n",
         "    zorder_by: [device_id]\n    location: /var/tmp/telemetry\n",
         "tables.telemetry_5min.location", "/tmp is local scratch"),
    ],
)  # fmt: skip
def test_non_durable_locations_are_errors_on_dev_and_prod(
    tmp_path: Path, target: str, old: str, new: str, path: str, why: str
) -> None:
    text = edited((old, new))
    found = problems(write(tmp_path, text), target)
    assert len(errors(found)) == 1, [p.render() for p in found]
    p = only(found, path)
    assert p.severity == "error"
    assert p.line == line_of(text, new.strip().splitlines()[-1])
    assert f"on target '{target}'" in p.message
    assert why in p.message
    assert "abfss://" in p.fix
    _has_fix(p)


def test_the_local_target_only_warns_about_local_paths(tmp_path: Path) -> None:
    text = edited(
        ("    storage_root: .cache/data\n",
         "    storage_root: /tmp/data\n    checkpoint_root: /tmp/ck\n"),
        ("    source: claims\n",
         "    source: claims\n    checkpoint: file:/tmp/ck/claims_hourly\n"),
    )  # fmt: skip
    bundle = load(write(tmp_path, text), "local")
    (w,) = bundle.warnings
    assert w.severity == "warning"
    assert w.path == "targets.local.storage_root"
    assert w.line == line_of(text, "storage_root: /tmp/data")
    assert "abfss://" in w.fix


@pytest.mark.parametrize(
    ("location", "durable"),
    [
        ("abfss://c@a.dfs.core.windows.net/x", True),
        ("dbfs:/mnt/checkpoints/x", True),
        ("/Volumes/main/streamops/checkpoints/x", True),
        ("s3://bucket/x", True),
        ("/tmp/ck", False),
        ("dbfs:/tmp/ck", False),
        ("/dbfs/tmp/ck", False),
        ("file:/data/ck", False),
        ("FILE:///data/ck", False),
        ("/mnt/data/ck", False),
        (".cache/data", False),
    ],
)
def test_non_durable_reason(location: str, durable: bool) -> None:
    assert (non_durable_reason(location) is None) == durable


def test_embedded_broker_is_refused_on_databricks_targets(tmp_path: Path) -> None:
    old = (
        "bootstrap_servers: kafka-prod-1.internal:9093,kafka-prod-2.internal:9093,"
        "kafka-prod-3.internal:9093"
    )
    text = edited((old, "bootstrap_servers: embedded"))
    (p,) = problems(write(tmp_path, text), "prod")
    assert p.path == "targets.prod.kafka.bootstrap_servers"
    assert p.line == line_of(text, "bootstrap_servers: embedded", after="  prod:")
    _has_fix(p)


# --- checkpoints follow the stable query name ----------------------------------------------------


def test_an_explicit_checkpoint_must_end_with_the_query_name(tmp_path: Path) -> None:
    new = f"    source: claims\n    checkpoint: {PROD_CK}/claims\n"
    text = edited(("    source: claims\n", new))
    (p,) = problems(write(tmp_path, text), "prod")
    assert p.path == "jobs.claims_hourly.checkpoint"
    assert p.line == line_of(text, f"checkpoint: {PROD_CK}/claims")
    assert "must end with the query name 'claims_hourly'" in p.message
    assert "'<durable root>/claims_hourly'" in p.fix


def test_an_explicit_checkpoint_ending_with_the_query_name_is_fine(tmp_path: Path) -> None:
    ck = "abfss://other@streamopsprod.dfs.core.windows.net/ck/transactions_hourly/"
    text = edited(
        ("    source: transactions\n", f"    source: transactions\n    checkpoint: {ck}\n")
    )
    bundle = load(write(tmp_path, text), "prod")
    assert bundle.checkpoint_location(bundle.job("transactions_backfill")) == ck.rstrip("/")


def test_two_jobs_sharing_a_query_name_is_an_error(tmp_path: Path) -> None:
    text = edited(("    query_name: telemetry_5min\n", "    query_name: claims_hourly\n"))
    found = problems(write(tmp_path, text), "prod")
    p = only(found, "jobs.telemetry_5min.query_name", "query name")
    assert p.message.startswith("query name 'claims_hourly' is also used by job 'claims_hourly'")
    assert p.line == line_of(text, "query_name: claims_hourly", after=TELEMETRY_JOB)
    _has_fix(p)
    # Their derived checkpoints collide too.
    shared = only(found, "jobs.telemetry_5min.query_name", "checkpoint '")
    assert (
        f"checkpoint '{PROD_CK}/claims_hourly' is also used by job 'claims_hourly'"
        in shared.message
    )


def test_two_jobs_sharing_a_checkpoint_location_is_an_error(tmp_path: Path) -> None:
    # telemetry_5min keeps its own query name but points at claims_hourly's derived checkpoint.
    new = f"    source: telemetry\n    checkpoint: {PROD_CK}/claims_hourly/\n"
    text = edited(("    source: telemetry\n", new))
    found = problems(write(tmp_path, text), "prod")
    p = only(found, "jobs.telemetry_5min.checkpoint", "also used by")
    assert "two queries sharing one checkpoint corrupt each other" in p.message
    assert p.line == line_of(text, f"checkpoint: {PROD_CK}/claims_hourly/")
    _has_fix(p)


def test_relative_local_checkpoints_that_resolve_alike_are_shared(tmp_path: Path) -> None:
    text = edited(
        ("    source: claims\n", "    source: claims\n    checkpoint: ck/./claims_hourly\n"),
        ("    source: telemetry\n",
         "    source: telemetry\n    checkpoint: ck/x/../claims_hourly\n"),
    )  # fmt: skip
    found = problems(write(tmp_path, text), "local")
    p = only(found, "jobs.telemetry_5min.checkpoint", "also used by job 'claims_hourly'")
    assert p.line == line_of(text, "checkpoint: ck/x/../claims_hourly")


# --- watermarks before stateful steps ------------------------------------------------------------


def test_a_window_aggregate_without_a_watermark_is_an_error(tmp_path: Path) -> None:
    text = edited((CLAIMS_WATERMARK, ""))
    (p,) = problems(write(tmp_path, text), "prod")
    assert p.path == "jobs.claims_hourly.steps[0].window_aggregate"
    assert p.line == line_of(text, "- window_aggregate:", after=CLAIMS_JOB)
    assert "no watermark comes before it" in p.message
    assert "- watermark: {column: event_time" in p.fix


def test_a_watermark_after_the_aggregate_does_not_count(tmp_path: Path) -> None:
    text = edited((CLAIMS_STEPS, CLAIMS_STEPS.replace(CLAIMS_WATERMARK, "") + CLAIMS_WATERMARK))
    found = problems(write(tmp_path, text), "prod")
    p = only(found, "jobs.claims_hourly.steps[0].window_aggregate")
    assert p.line == line_of(text, "- window_aggregate:", after=CLAIMS_JOB)


def test_a_watermark_shorter_than_max_lateness_is_an_error(tmp_path: Path) -> None:
    short = CLAIMS_WATERMARK.replace("30 minutes", "10 minutes")
    text = edited((CLAIMS_WATERMARK, short))
    (p,) = problems(write(tmp_path, text), "prod")
    assert p.path == "jobs.claims_hourly.steps[0].watermark.delay"
    assert p.line == line_of(text, short.strip())
    assert "late events would be dropped" in p.message
    assert "'10 minutes' is shorter than source 'claims' declared max_lateness '20 minutes'" in (
        p.message
    )
    assert p.fix == "set the delay to at least '20 minutes'"


def test_a_watermark_equal_to_max_lateness_is_fine(tmp_path: Path) -> None:
    text = edited((CLAIMS_WATERMARK, CLAIMS_WATERMARK.replace("30 minutes", "1200 seconds")))
    load(write(tmp_path, text), "prod")


def _join_steps(first_watermark: bool, join_delay: str) -> str:
    steps = CLAIMS_WATERMARK if first_watermark else ""
    # `on:` unquoted: YAML 1.1 would read it as the boolean True.
    return steps + (
        "      - join:\n"
        "          source: transactions\n"
        "          schema: {policy_id: string, amount: double, event_time: timestamp}\n"
        f"          watermark: {{column: event_time, delay: {join_delay}}}\n"
        "          on: [policy_id]\n"
        "          within: 1 hour\n"
    )


def test_a_join_with_long_enough_watermarks_is_fine(tmp_path: Path) -> None:
    text = edited((CLAIMS_STEPS, _join_steps(True, "1 hour")))
    bundle = load(write(tmp_path, text), "prod")
    join = bundle.job("claims_hourly").join
    assert join is not None
    assert join.on == ["policy_id"]


def test_a_join_watermark_shorter_than_the_joined_source_is_an_error(tmp_path: Path) -> None:
    text = edited((CLAIMS_STEPS, _join_steps(True, "10 minutes")))
    (p,) = problems(write(tmp_path, text), "prod")
    assert p.path == "jobs.claims_hourly.steps[1].join.watermark.delay"
    assert p.line == line_of(text, "watermark: {column: event_time, delay: 10 minutes}")
    assert "source 'transactions' declared max_lateness '1 hour'" in p.message
    assert "late events would be dropped" in p.message
    assert p.fix == "set the delay to at least '1 hour'"


def test_a_join_without_a_watermark_before_it_is_an_error(tmp_path: Path) -> None:
    text = edited((CLAIMS_STEPS, _join_steps(False, "1 hour")))
    (p,) = problems(write(tmp_path, text), "prod")
    assert p.path == "jobs.claims_hourly.steps[0].join"
    assert p.line == line_of(text, "- join:")
    assert "no watermark comes before it" in p.message
    _has_fix(p)


def test_two_stateful_steps_in_one_query_is_an_error(tmp_path: Path) -> None:
    text = edited((CLAIMS_STEPS, CLAIMS_STEPS + _join_steps(False, "1 hour")))
    found = problems(write(tmp_path, text), "prod")
    p = only(found, "jobs.claims_hourly.steps", "more than one stateful step")
    assert p.line == line_of(text, "    steps:", after=CLAIMS_JOB)


# --- output file sizes -----------------------------------------------------------------------


def _claims_sizing(eps: str, size: str, trigger: str, band: str | None = None) -> str:
    edits: list[tuple[str, str]] = [
        ("    events_per_second: 1000\n", f"    events_per_second: {eps}\n"),
        ("    bytes_per_event: 600\n", f"    bytes_per_event: {size}\n"),
        ("trigger: {processing_time: 2 minutes}", f"trigger: {{processing_time: {trigger}}}"),
    ]
    if band is not None:
        edits.append(
            ("      node_type_id: Standard_E8ds_v5\n",
             f"      node_type_id: Standard_E8ds_v5\n    file_size_band_mb: {band}\n")
        )  # fmt: skip
    return edited(*edits)


@pytest.mark.parametrize(
    ("eps", "size", "trigger", "band", "side"),
    [
        ("1000", "600", "30 seconds", None, "below"),  # 18 MB
        ("1000", "600", "20 minutes", None, "above"),  # 720 MB
        ("1000", "100", "2 minutes", "[50, 53]", "below"),  # a band narrower than a minute's data
        ("200000", "1000", "30 seconds", None, "above"),  # 200 MB/s: under 5 s fits
        ("1000000", "1000", "1 minute", None, "above"),  # 1 GB/s: under a second fits
        ("10", "100", "1 minute", None, "below"),  # a trickle: hours fit
    ],
)
def test_a_trigger_outside_the_file_size_band_warns_with_an_interval_that_fits(
    tmp_path: Path, eps: str, size: str, trigger: str, band: str | None, side: str
) -> None:
    text = _claims_sizing(eps, size, trigger, band)
    bundle = load(write(tmp_path, text), "prod")
    w = only(bundle.warnings, "jobs.claims_hourly.trigger.processing_time")
    assert w.severity == "warning"
    assert w.line == line_of(text, f"processing_time: {trigger}")
    assert f"{side} the" in w.message
    m = re.search(r"a trigger of '([^']+)' would land", w.fix)
    assert m, w.fix
    lo, hi = bundle.target.file_size_band_mb
    landed_mb = float(eps) * float(size) / 1e6 * parse_duration(m.group(1)).seconds
    assert lo <= landed_mb <= hi * (1 + 1e-9), (m.group(1), landed_mb)


def test_a_trigger_inside_the_band_does_not_warn(tmp_path: Path) -> None:
    text = _claims_sizing("1000", "600", "85 seconds")  # 51 MB
    assert not [w for w in warnings_of(write(tmp_path, text), "prod") if "trigger" in w.path]


@pytest.mark.parametrize(("offsets", "side"), [("100000", "low"), ("2000000", "high")])
def test_available_now_batches_outside_the_band_warn_with_a_size_that_fits(
    tmp_path: Path, offsets: str, side: str
) -> None:
    new = f"    max_offsets_per_trigger: {offsets}\n"
    text = edited(("    max_offsets_per_trigger: 200000\n", new))
    bundle = load(write(tmp_path, text), "prod")
    w = only(bundle.warnings, "jobs.transactions_backfill.max_offsets_per_trigger")
    assert w.line == line_of(text, new.strip(), after=TRANSACTIONS_JOB)
    assert "outside the 50-500 MB file-size rule of thumb" in w.message
    m = re.fullmatch(r"max_offsets_per_trigger: (\d+) would land ~[\d.,]+ MB", w.fix)
    assert m, w.fix
    landed_mb = int(m.group(1)) * 300 / 1e6  # transactions: 300 B per event
    assert 50 <= landed_mb <= 500, landed_mb


def test_available_now_without_a_cap_is_not_sized(tmp_path: Path) -> None:
    text = edited(("    max_offsets_per_trigger: 200000\n", ""))
    assert not [w for w in warnings_of(write(tmp_path, text), "prod") if "transactions" in w.path]


# --- partitions vs cores ---------------------------------------------------------------------


@pytest.mark.parametrize(("partitions", "warns"), [(128, False), (129, True), (400, True)])
def test_partitions_far_beyond_the_cores_warn(tmp_path: Path, partitions: int, warns: bool) -> None:
    # prod: 4 workers x 8 cores = 32 cores; more than 4 partitions per core warns.
    new = f"    partitions: {partitions}\n"
    text = edited(
        ("    topic: plant.telemetry\n    partitions: 8\n", f"    topic: plant.telemetry\n{new}")
    )
    found = [w for w in warnings_of(write(tmp_path, text), "prod") if "partitions" in w.path]
    if not warns:
        assert found == []
        return
    (w,) = found
    assert w.path == "sources.telemetry.partitions"
    assert w.line == line_of(text, new.strip())
    assert f"{partitions} partitions far exceed the 32 cores of target 'prod'" in w.message
    assert f"at least {-(-partitions // 4)} cores" in w.fix


@pytest.mark.parametrize(("target", "cores"), [("prod", 32), ("dev", 16)])
def test_a_cpu_heavy_job_with_few_partitions_and_no_repartition_warns(
    tmp_path: Path, target: str, cores: int
) -> None:
    text = edited(("    repartition: 16\n", ""))
    bundle = load(write(tmp_path, text), target)
    w = only(bundle.warnings, "jobs.telemetry_5min.cpu_heavy")
    assert w.line == line_of(text, "cpu_heavy: true")
    assert f"reads 8 partitions on {cores} cores" in w.message
    assert f"`repartition: {cores}`" in w.fix


def test_a_cpu_heavy_job_with_a_repartition_does_not_warn() -> None:
    from tests.unit.helpers import SHIPPED

    assert not [w for w in load(SHIPPED, "prod").warnings if w.path.endswith("cpu_heavy")]


# --- state store forecast ------------------------------------------------------------------------


def _telemetry_state(keys: int, fraction: str | None = None) -> str:
    cluster = "{workers: 1, cores_per_worker: 2, memory_gb_per_worker: 4}"
    edits: list[tuple[str, str]] = [
        ("    key_cardinality: 20000 ", f"    key_cardinality: {keys} "),
        ("    query_name: telemetry_5min\n",
         "    query_name: telemetry_5min\n    state_row_bytes: 1000\n"),
    ]  # fmt: skip
    if fraction is not None:
        edits.append((cluster, cluster[:-1] + f", state_memory_fraction: {fraction}}}"))
    return edited(*edits)


@pytest.mark.parametrize(("keys", "warns"), [(536_870, False), (536_871, True)])
def test_a_state_forecast_above_the_memory_budget_warns(
    tmp_path: Path, keys: int, warns: bool
) -> None:
    # local: 1 worker x 4 GiB x 0.25 = 1 GiB budget. telemetry holds (5 min window + 5 min
    # watermark) / 5 min = 2 windows, so the forecast is keys x 2 x 1000 B.
    text = _telemetry_state(keys)
    found = [w for w in warnings_of(write(tmp_path, text), "local") if "state store" in w.message]
    if not warns:
        assert found == []
        return
    (w,) = found
    assert w.path == "jobs.telemetry_5min.steps"
    assert w.line == line_of(text, "    steps:", after=TELEMETRY_JOB)
    assert f"{keys:,} keys x 2 windows held until the watermark passes x 1000 B/row" in w.message
    assert "25% of the 4 GiB of target 'local'" in w.message
    _has_fix(w)


def test_the_state_memory_fraction_moves_the_budget(tmp_path: Path) -> None:
    text = _telemetry_state(536_871, fraction="0.5")
    found = [w for w in warnings_of(write(tmp_path, text), "local") if "state store" in w.message]
    assert found == []


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "path", "secret"),
    [
        ('token: "{{secrets/streamops-prod/databricks-token}}"', f"token: {TOKEN}",
         "targets.prod.databricks.token", TOKEN),
        ('password: "{{secrets/streamops-prod/kafka-password}}"', "password: hunter2-plain-text",
         "targets.prod.kafka.security.password", "hunter2-plain-text"),
    ],
)  # fmt: skip
def test_a_literal_secret_is_an_error_that_does_not_repeat_it(
    tmp_path: Path, old: str, new: str, path: str, secret: str
) -> None:
    text = edited((old, new))
    with pytest.raises(BundleError) as info:
        load(write(tmp_path, text), "prod")
    (p,) = info.value.problems
    assert p.path == path
    assert p.line == line_of(text, new)
    assert "literal value" in p.message
    assert "{{secrets/scope/key}}" in p.fix
    _has_fix(p)
    assert secret not in str(info.value)
    assert secret not in p.render()
    assert secret not in repr(info.value.problems)


def test_a_secret_in_a_plain_field_is_an_error_that_does_not_repeat_it(tmp_path: Path) -> None:
    old = "    description: Insurance claims per hour, by claim type and region.\n"
    text = edited((old, f"    description: 'token {TOKEN}'\n"))
    with pytest.raises(BundleError) as info:
        load(write(tmp_path, text), "local")
    p = only(errors(info.value.problems), "jobs.claims_hourly.description")
    assert p.line == line_of(text, "description: 'token")
    assert "looks like a literal secret" in p.message
    assert "{{secrets/<scope>/<key>}}" in p.fix
    assert TOKEN not in str(info.value)


def test_a_secret_typed_into_a_checked_field_is_not_echoed(tmp_path: Path) -> None:
    text = edited(("    mode: local\n", f"    mode: {TOKEN}\n"))
    with pytest.raises(BundleError) as info:
        load(write(tmp_path, text), "local")
    (p,) = info.value.problems
    assert p.path == "targets.local.mode"
    assert p.line == line_of(text, f"mode: {TOKEN}")
    assert TOKEN not in str(info.value)
    assert "'***' is not allowed" in p.message


# --- malformed input: one clear problem each, with a line ----------------------------------------


@pytest.mark.parametrize(
    ("name", "old", "new", "path", "needle", "says"),
    [
        ("unclosed flow list", "    partitions: 4\n    max_lateness: 20",
         "    partitions: [4\n    max_lateness: 20", "(yaml)", "max_lateness: 20 minutes",
         "not valid YAML"),
        ("tab indentation", "    partitions: 4\n    max_lateness: 20",
         "\tpartitions: 4\n    max_lateness: 20", "(yaml)", "\tpartitions", "not valid YAML"),
        ("recursive anchor", "project: streamops-demo\n",
         "project: streamops-demo\nloop: &a [*a]\n", "(yaml)", "loop:", "recursive anchor"),
        ("list as a key", "    partitions: 4\n    max_lateness: 20",
         "    ? [a, b]\n    : 4\n    partitions: 4\n    max_lateness: 20", "(yaml)", "? [a, b]",
         "not valid YAML"),
        ("duplicate key", "    partitions: 4\n    max_lateness: 20",
         "    partitions: 4\n    partitions: 6\n    max_lateness: 20", "sources.claims.partitions",
         "partitions: 6", "duplicate key 'partitions' (first at line"),
        ("wrong type", "    partitions: 4\n    max_lateness: 20",
         "    partitions: four\n    max_lateness: 20", "sources.claims.partitions",
         "partitions: four", "'four': input should be a valid integer"),
        ("wrong type in a list", "group_by: [claim_type, region]", "group_by: claim_type",
         "jobs.claims_hourly.steps[1].window_aggregate.group_by", "group_by: claim_type",
         "input should be a valid list"),
        ("bad duration", "    max_lateness: 20 minutes", "    max_lateness: 1 hr",
         "sources.claims.max_lateness", "max_lateness: 1 hr", "'1 hr' is not a duration"),
        ("zero window", "          window: 1 hour\n          group_by: [claim_type, region]",
         "          window: 0 seconds\n          group_by: [claim_type, region]",
         "jobs.claims_hourly.steps[1].window_aggregate.window", "window: 0 seconds",
         "never closes"),
        ("missing required key", "    partitions: 4\n    max_lateness: 20",
         "    max_lateness: 20", "sources.claims.partitions", "  claims:\n",
         "required key 'partitions' is missing"),
        ("unknown enum value",
         "    mode: databricks\n    kafka:\n      bootstrap_servers: kafka-prod",
         "    mode: databrick\n    kafka:\n      bootstrap_servers: kafka-prod",
         "targets.prod.mode", "mode: databrick", "'databrick' is not allowed"),
        ("no trigger", "trigger: {processing_time: 2 minutes}", "trigger: {}",
         "jobs.claims_hourly.trigger", "trigger: {}", "set exactly one of"),
    ],
)  # fmt: skip
def test_malformed_input_is_one_clear_problem_with_a_line(
    tmp_path: Path, name: str, old: str, new: str, path: str, needle: str, says: str
) -> None:
    text = edited((old, new))
    found = problems(write(tmp_path, text), "prod")
    assert len(found) == 1, (name, [p.render() for p in found])
    (p,) = found
    assert p.path == path
    if needle == "  claims:\n":  # a missing key is reported at its parent mapping
        assert p.line == line_of(text, "  claims:", after="sources:")
    else:
        assert p.line == line_of(text, needle, after="  prod:" if "prod" in path else None)
    assert says in p.message
    assert p.render().startswith(f"{tmp_path / 'bundle.yml'}:{p.line}: {path}: ")


def test_problems_with_a_fix_render_it(tmp_path: Path) -> None:
    text = edited(("    max_lateness: 20 minutes", "    max_lateness: 1 hr"))
    (p,) = problems(write(tmp_path, text), "prod")
    assert p.fix.startswith("write a number and a unit, e.g. '30 seconds'")
    _has_fix(p)


@pytest.mark.parametrize(
    ("content", "says"),
    [("", "must be a mapping"), ("- a\n- b\n", "must be a mapping"), ("just text\n", "mapping")],
)
def test_a_bundle_that_is_not_a_mapping_is_one_problem(
    tmp_path: Path, content: str, says: str
) -> None:
    (p,) = problems(write(tmp_path, content), "local")
    assert p.line == 1
    assert says in p.message


def test_a_bundle_that_is_not_utf8_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "bundle.yml"
    path.write_bytes(b"project: caf\xe9\n")
    (p,) = problems(path, "local")
    assert "UTF-8" in p.message


# --- references ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "path", "says", "fix"),
    [
        ("    source: claims\n", "    source: claimz\n", "jobs.claims_hourly.source",
         "unknown source 'claimz'", "claims, telemetry, transactions"),
        ("    sink: claims_hourly\n", "    sink: claims_daily\n", "jobs.claims_hourly.sink",
         "unknown table 'claims_daily'", "claims_hourly, telemetry_5min, transactions_hourly"),
        ("group_by: [claim_type, region]", "group_by: [claim_tipe, region]",
         "jobs.claims_hourly.steps[1].window_aggregate.group_by[0]",
         "'claim_tipe' is not a field of the schema", "schema field"),
        ("{name: total_amount, fn: sum, column: claim_amount}",
         "{name: total_amount, fn: sum, column: claim_amt}",
         "jobs.claims_hourly.steps[1].window_aggregate.metrics[1].column",
         "'claim_amt' is not a field of the schema", "schema field"),
        ("{name: total_amount, fn: sum, column: claim_amount}",
         "{name: total_amount, fn: sum, column: region}",
         "jobs.claims_hourly.steps[1].window_aggregate.metrics[1].column",
         "sum of 'region' needs a number, it is 'string'", "numeric field"),
        ("{name: avg_amount, fn: avg, column: claim_amount}",
         "{name: avg_amount, fn: avg, column: claim_id}",
         "jobs.claims_hourly.steps[1].window_aggregate.metrics[2].column",
         "avg of 'claim_id' needs a number", "numeric field"),
        ("event_time: event_time\n    steps:\n      - watermark: {column: event_time, delay: 30",
         "event_time: created_at\n    steps:\n      - watermark: {column: event_time, delay: 30",
         "jobs.claims_hourly.event_time", "'created_at' is not a field of the schema",
         "event time"),
        ("zorder_by: [region]", "zorder_by: [claim_id]", "tables.claims_hourly.zorder_by[0]",
         "'claim_id' is not a column that job 'claims_hourly' writes", "claim_type"),
        ("zorder_by: [region]", "zorder_by: [region]\n    partition_by: [event_date]",
         "tables.claims_hourly.partition_by[0]",
         "'event_date' is not a column that job 'claims_hourly' writes", "window_start"),
    ],
)  # fmt: skip
def test_references_must_resolve(
    tmp_path: Path, old: str, new: str, path: str, says: str, fix: str
) -> None:
    text = edited((old, new))
    found = problems(write(tmp_path, text), "prod")
    p = only(errors(found), path)
    assert says in p.message
    assert fix in p.fix
    needle = next(line for line in new.strip().splitlines() if line not in old)
    assert p.line == line_of(text, needle.strip())
    assert len(errors(found)) == 1, [x.render() for x in found]


def test_event_time_must_be_a_timestamp(tmp_path: Path) -> None:
    text = edited((CLAIMS_JOB, "      event_time: timestamp\n", "      event_time: string\n"))
    (p,) = problems(write(tmp_path, text), "prod")
    assert p.path == "jobs.claims_hourly.schema.event_time"
    assert p.line == line_of(text, "      event_time: string")
    assert "the event time field has type 'string'" in p.message
    assert "`timestamp`" in p.fix


def test_count_of_a_string_is_fine(tmp_path: Path) -> None:
    text = edited(("- {name: claims, fn: count}", "- {name: claims, fn: count, column: claim_id}"))
    load(write(tmp_path, text), "prod")


def test_a_query_name_may_not_take_another_jobs_bronze_name(tmp_path: Path) -> None:
    text = shipped_text().replace(
        "    query_name: telemetry_5min\n", "    query_name: claims_hourly_bronze\n"
    )
    path = tmp_path / "bundle.yml"
    path.write_text(text)
    with pytest.raises(BundleError) as info:
        load(path, "local")
    found = [p for p in info.value.problems if "bronze query" in p.message]
    assert len(found) == 1 and found[0].path == "jobs.telemetry_5min.query_name"
    assert found[0].line == text.splitlines().index("    query_name: claims_hourly_bronze") + 1
