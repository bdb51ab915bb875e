"""Frozen models, durations, secret references and the Bundle's derived locations."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamops.bundle import ENV_BOOTSTRAP, load
from streamops.bundle.durations import Duration, human, parse_duration
from streamops.bundle.models import BundleSpec, Trigger
from streamops.bundle.secrets import SecretNotResolved, SecretRef, parse_secret
from streamops.errors import Problem, UsageError
from tests.unit.helpers import SHIPPED, edited, line_of, shipped_text, write

PROD_CK = "abfss://checkpoints@streamopsprod.dfs.core.windows.net/streamops"
PROD_PW = 'password: "{{secrets/streamops-prod/kafka-password}}"'


@pytest.fixture(autouse=True)
def _no_bootstrap_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell may point the local target at another broker; tests set it themselves.
    monkeypatch.delenv(ENV_BOOTSTRAP, raising=False)


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds", "text"),
    [
        ("30 seconds", 30, "30 seconds"),
        ("2 minutes", 120, "2 minutes"),
        ("1 hour", 3600, "1 hour"),
        ("7 days", 7 * 86400, "7 days"),
        ("5 min", 300, "5 minutes"),
        ("10s", 10, "10 seconds"),
        ("1 sec", 1, "1 second"),
        ("2 h", 7200, "2 hours"),
        ("3 mins", 180, "3 minutes"),
        ("1 d", 86400, "1 day"),
        ("500 ms", 0.5, "500 milliseconds"),
        ("  45   Seconds ", 45, "45 seconds"),
        ("2.5 seconds", 2.5, "2.5 seconds"),
        # Spark refuses a fraction on any unit but seconds, so these are said in seconds.
        ("1.5 minutes", 90, "90 seconds"),
        ("0.5 hours", 1800, "1800 seconds"),
        (90, 90, "90 seconds"),
        (120, 120, "2 minutes"),
        (0.5, 0.5, "0.5 seconds"),
    ],
)
def test_durations_parse_to_seconds_and_spark_friendly_text(
    written: str | float, seconds: float, text: str
) -> None:
    d = parse_duration(written)
    assert d.seconds == pytest.approx(seconds)
    assert d.text == text
    assert str(d) == text
    assert repr(d) == f"Duration({text!r})"
    # What Spark's interval parser takes: a number and a full unit name, a fraction only on seconds.
    assert re.fullmatch(r"\d+ (millisecond|second|minute|hour|day)s?|\d+\.\d+ seconds", d.text)


@pytest.mark.parametrize(
    "bad", ["1 hr", "5", "minutes", "", "two minutes", "-5 minutes", "5 weeks"]
)
def test_bad_duration_text_is_refused_with_examples(bad: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration; .*'30 seconds', '2 minutes'"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [True, None, [1], {"minutes": 2}, -3])
def test_bad_duration_values_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_a_duration_is_a_float_of_seconds_and_serialises_as_written() -> None:
    trigger = Trigger.model_validate({"processing_time": "5 min"})
    assert trigger.processing_time == 300.0
    assert trigger.model_dump() == {"processing_time": "5 minutes", "available_now": False}
    assert Duration(3600).text == "1 hour"
    assert human(90) == "90 seconds"
    assert human(86400 * 2) == "2 days"


# --- the shipped bundle and derived locations --------------------------------------------------


@pytest.mark.parametrize("target", ["local", "dev", "prod"])
def test_the_shipped_bundle_is_valid_for_every_target(target: str) -> None:
    bundle = load(SHIPPED, target)
    assert bundle.target_name == target
    assert set(bundle.jobs) == {"claims_hourly", "telemetry_5min", "transactions_backfill"}


def test_the_shipped_local_target_only_warns_about_its_local_folder() -> None:
    (warning,) = load(SHIPPED, "local").warnings
    assert warning.path == "targets.local.storage_root"
    assert warning.line == line_of(shipped_text(), "storage_root: .cache/data")
    assert "local folder" in warning.message
    assert "abfss://" in warning.fix


@pytest.mark.parametrize(
    ("job", "query_name"),
    [
        ("claims_hourly", "claims_hourly"),
        ("telemetry_5min", "telemetry_5min"),
        # The job key is not the query name: the checkpoint follows the stable query name.
        ("transactions_backfill", "transactions_hourly"),
    ],
)
def test_checkpoint_location_is_checkpoint_root_slash_query_name(job: str, query_name: str) -> None:
    bundle = load(SHIPPED, "prod")
    assert bundle.checkpoint_root == PROD_CK
    assert bundle.checkpoint_location(bundle.job(job)) == f"{PROD_CK}/{query_name}"


def test_checkpoint_root_trailing_slash_does_not_double(tmp_path: Path) -> None:
    text = edited((f"checkpoint_root: {PROD_CK}\n", f"checkpoint_root: {PROD_CK}/\n"))
    bundle = load(write(tmp_path, text), "prod")
    assert bundle.checkpoint_location(bundle.job("claims_hourly")) == f"{PROD_CK}/claims_hourly"


def test_an_explicit_dbfs_checkpoint_is_used_as_written(tmp_path: Path) -> None:
    # dbfs:/ has no '//': it is still a URL, not a path under the bundle's folder.
    ck = "dbfs:/mnt/checkpoints/claims_hourly"
    text = edited(("    source: claims\n", f"    source: claims\n    checkpoint: {ck}\n"))
    bundle = load(write(tmp_path, text), "prod")
    assert bundle.checkpoint_location(bundle.job("claims_hourly")) == ck


def test_local_paths_resolve_against_the_bundle_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write(project, shipped_text())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    bundle = load(Path("..") / "project" / "bundle.yml", "local")  # a relative --bundle
    root = project.resolve()
    assert bundle.root == root
    assert bundle.storage_root == str(root / ".cache" / "data")
    # No checkpoint_root on local: checkpoints go under the storage root.
    assert bundle.checkpoint_root == str(root / ".cache" / "data" / "_checkpoints")
    job = bundle.job("claims_hourly")
    assert bundle.checkpoint_location(job) == f"{root}/.cache/data/_checkpoints/claims_hourly"
    assert bundle.table_location("claims_hourly") == f"{root}/.cache/data/tables/claims_hourly"


def test_an_explicit_table_location_is_used(tmp_path: Path) -> None:
    loc = "abfss://lake@streamopsprod.dfs.core.windows.net/custom/claims"
    text = edited(("    zorder_by: [region]\n", f"    zorder_by: [region]\n    location: {loc}/\n"))
    bundle = load(write(tmp_path, text), "prod")
    assert bundle.table_location("claims_hourly") == loc
    assert bundle.table_location("telemetry_5min") == (
        "abfss://lake@streamopsprod.dfs.core.windows.net/streamops/tables/telemetry_5min"
    )


# --- bootstrap servers ---------------------------------------------------------------------


def test_bootstrap_servers_come_from_the_target() -> None:
    local = load(SHIPPED, "local")
    assert local.bootstrap_servers(local.source(local.job("claims_hourly"))) == "embedded"
    prod = load(SHIPPED, "prod")
    assert prod.bootstrap_servers(prod.spec.sources["claims"]).startswith("kafka-prod-1.internal")


def test_env_var_overrides_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BOOTSTRAP, "127.0.0.1:19092")
    bundle = load(SHIPPED, "local")
    for job in bundle.jobs.values():
        assert bundle.bootstrap_servers(bundle.source(job)) == "127.0.0.1:19092"


def test_env_var_never_redirects_a_databricks_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BOOTSTRAP, "127.0.0.1:19092")
    prod = load(SHIPPED, "prod")
    assert prod.bootstrap_override is None
    assert prod.bootstrap_servers(prod.spec.sources["claims"]).startswith("kafka-prod-1.internal")


def test_env_var_override_wins_over_a_source_own_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = edited(
        (
            "    topic: insurance.claims\n",
            "    topic: insurance.claims\n    bootstrap_servers: b:1\n",
        )
    )
    path = write(tmp_path, text)
    bundle = load(path, "local")
    assert bundle.bootstrap_servers(bundle.spec.sources["claims"]) == "b:1"
    monkeypatch.setenv(ENV_BOOTSTRAP, "127.0.0.1:29092")
    bundle = load(path, "local")
    assert bundle.bootstrap_servers(bundle.spec.sources["claims"]) == "127.0.0.1:29092"


def test_an_empty_env_var_does_not_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BOOTSTRAP, "")
    bundle = load(SHIPPED, "local")
    assert bundle.bootstrap_override is None
    assert bundle.bootstrap_servers(bundle.spec.sources["claims"]) == "embedded"


# --- frozen ------------------------------------------------------------------------------------


def test_models_are_frozen() -> None:
    bundle = load(SHIPPED, "prod")
    with pytest.raises(ValidationError, match="frozen"):
        bundle.spec.project = "other"  # type: ignore[misc]
    job = bundle.job("claims_hourly")
    with pytest.raises(ValidationError, match="frozen"):
        job.query_name = "renamed"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        bundle.target.cluster.workers = 100  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        job.trigger.available_now = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.target_name = "local"  # type: ignore[misc]
    problem = Problem("bundle.yml", 3, "project", "m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.line = 4  # type: ignore[misc]
    assert job.query_name == "claims_hourly"


def test_a_dumped_spec_validates_back_to_an_equal_spec() -> None:
    spec = load(SHIPPED, "prod").spec
    again = BundleSpec.model_validate(spec.model_dump(by_alias=True))
    assert again == spec
    interval = again.jobs["claims_hourly"].trigger.processing_time
    assert interval is not None
    assert interval.text == "2 minutes"


# --- usage errors ------------------------------------------------------------------------------


def test_unknown_target_is_a_usage_error_listing_the_targets() -> None:
    with pytest.raises(UsageError) as info:
        load(SHIPPED, "prd")
    assert info.value.exit_code == 2
    text = str(info.value)
    assert "no target 'prd'" in text
    assert "targets: local, dev, prod" in text
    assert "did you mean 'prod'" in text


def test_unknown_job_is_a_usage_error_listing_the_jobs() -> None:
    bundle = load(SHIPPED, "local")
    with pytest.raises(UsageError) as info:
        bundle.job("claims_hourl")
    text = str(info.value)
    assert "no job 'claims_hourl'" in text
    assert "jobs: claims_hourly, telemetry_5min, transactions_backfill" in text
    assert "did you mean 'claims_hourly'" in text


def test_a_missing_bundle_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"does not exist\. Fix: pass --bundle"):
        load(tmp_path / "nope.yml", "local")


# --- secret references ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "ref"),
    [
        ("{{secrets/streamops-prod/kafka-password}}",
         SecretRef("secrets", "streamops-prod", "kafka-password")),
        ("{{env/KAFKA_PASSWORD}}", SecretRef("env", "KAFKA_PASSWORD")),
        ("{{ env/KAFKA_PASSWORD }}", SecretRef("env", "KAFKA_PASSWORD")),
        ("{{conn/kafka_prod}}", SecretRef("conn", "kafka_prod")),
        ("{{conn/kafka_prod/login}}", SecretRef("conn", "kafka_prod", "login")),
    ],
)  # fmt: skip
def test_secret_references_are_accepted(tmp_path: Path, written: str, ref: SecretRef) -> None:
    # Parsed on any target; only a {{secrets/...}} is valid on prod's cluster
    # (test_pager_validation), so the parse is looked at without validation's verdict.
    text = edited((PROD_PW, f'password: "{written}"'))
    bundle = load(write(tmp_path, text), "prod", strict=False)
    security = bundle.target.kafka.security
    assert security.password == ref
    assert repr(security.password).startswith("SecretRef({{")


def test_a_secret_repr_shows_the_reference_never_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "s3cr3t-Pa55word-value"
    monkeypatch.setenv("STREAMOPS_TEST_KAFKA_PASSWORD", value)
    text = edited((PROD_PW, 'password: "{{env/STREAMOPS_TEST_KAFKA_PASSWORD}}"'))
    bundle = load(write(tmp_path, text), "prod", strict=False)  # an env ref: refused on prod
    ref = bundle.target.kafka.security.password
    assert ref is not None
    assert ref.resolve() == value  # resolved only when asked, at run time
    for shown in (
        repr(bundle),
        repr(bundle.target),
        str(bundle.target.kafka),
        repr(ref),
        str(ref),
        bundle.spec.model_dump_json(),
    ):
        assert value not in shown
    assert repr(ref) == "SecretRef({{env/STREAMOPS_TEST_KAFKA_PASSWORD}})"


def test_a_databricks_secret_resolves_locally_from_its_env_var(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = parse_secret("{{secrets/streamops-prod/databricks-token}}")
    var = "STREAMOPS_SECRET_STREAMOPS_PROD_DATABRICKS_TOKEN"
    monkeypatch.delenv(var, raising=False)
    with pytest.raises(SecretNotResolved, match=f"export {var}="):
        ref.resolve()
    monkeypatch.setenv(var, "value-from-env")
    assert ref.resolve() == "value-from-env"


def test_an_unset_env_secret_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMOPS_TEST_UNSET", raising=False)
    with pytest.raises(SecretNotResolved, match="STREAMOPS_TEST_UNSET is not set"):
        parse_secret("{{env/STREAMOPS_TEST_UNSET}}").resolve()


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("hunter2", "written here as a literal value"),
        ("dapi" + "0123456789abcdef" * 2, "written here as a literal value"),
        ("{{vault/kv/kafka}}", "not a secret reference I understand"),
        (12345, "must be a reference"),
    ],
)
def test_literal_or_unknown_secrets_are_refused(bad: object, says: str) -> None:
    with pytest.raises(ValueError, match=says) as info:
        parse_secret(bad)
    if isinstance(bad, str) and not bad.startswith("{{"):
        assert bad not in str(info.value)
