"""Bad bundles, refused fast: alias bombs, watermarks on the wrong column, malformed secret
references (never echoed), and a max_clock_skew longer than the watermark delay."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamops.bundle import load
from streamops.bundle.models import DEFAULT_CLOCK_SKEW
from streamops.bundle.yamlsource import MAX_EXPANDED_NODES, YamlTooLarge, expanded_size
from streamops.errors import BundleError, Problem
from tests.unit.helpers import edited, errors, line_of, only, problems, shipped_text, write

CLAIMS_WM = "      - watermark: {column: event_time, delay: 30 minutes}\n"
CLAIMS_SCHEMA_END = "      event_time: timestamp\n    event_time: event_time\n"
PROD_PW = 'password: "{{secrets/streamops-prod/kafka-password}}"'


def _has_fix(p: Problem) -> None:
    assert p.fix, f"no fix in: {p.render()}"
    assert f". Fix: {p.fix}" in p.render()


def laughs(levels: int, fan: int = 10) -> str:
    """A 'billion laughs' preamble: each anchor is `fan` aliases of the one before."""
    out = ['lol0: &l0 "lol"']
    for i in range(1, levels + 1):
        out.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]")
    return "\n".join(out) + "\n"


# --- YAML alias expansion ----------------------------------------------------------------------


def test_expansion_is_counted_once_per_distinct_node() -> None:
    node = yaml.compose("a: &x [1, 2]\nb: *x\n")
    # root + key a + [1, 2] (3 nodes) + key b + the alias, expanded (3 nodes again)
    assert expanded_size(node) == 9
    # 30 levels of 10 aliases stand for 10^30 values; counting visits 32 distinct nodes.
    with pytest.raises(YamlTooLarge) as info:
        expanded_size(yaml.compose(laughs(30)))
    assert info.value.line is not None and 1 <= info.value.line <= 31
    assert "aliases" in info.value.message and "billion laughs" in info.value.message


def test_the_shipped_bundle_is_far_below_the_bound() -> None:
    assert expanded_size(yaml.compose(shipped_text())) < MAX_EXPANDED_NODES // 10


@pytest.mark.parametrize("levels", [6, 9])
def test_a_billion_laughs_bundle_is_one_clear_error(tmp_path: Path, levels: int) -> None:
    """10^6 values (slow to walk before) and 10^9 (never finished before): refused at once."""
    text = laughs(levels) + shipped_text()
    (p,) = problems(write(tmp_path, text), "local")
    assert p.path == "(yaml)" and p.file.endswith("bundle.yml")
    # The line of the first anchor whose expansion passes the bound.
    assert p.line == line_of(text, "lol5: &l5")
    assert f"more than {MAX_EXPANDED_NODES:,} values" in p.message and "aliases" in p.message
    _has_fix(p)


def test_a_small_shared_anchor_is_fine(tmp_path: Path) -> None:
    text = edited(
        ("    trigger: {processing_time: 2 minutes}\n",
         "    trigger: &every_2m {processing_time: 2 minutes}\n"),
        ("    trigger: {processing_time: 30 seconds}\n", "    trigger: *every_2m\n"),
    )  # fmt: skip
    bundle = load(write(tmp_path, text), "local")
    assert bundle.job("telemetry_5min").trigger == bundle.job("claims_hourly").trigger


# --- watermark column --------------------------------------------------------------------------


def test_a_watermark_on_a_column_that_is_not_a_timestamp_is_an_error(tmp_path: Path) -> None:
    new = "      - watermark: {column: claim_amount, delay: 30 minutes}\n"
    text = edited((CLAIMS_WM, new))
    p = only(errors(problems(write(tmp_path, text), "local")),
             "jobs.claims_hourly.steps[0].watermark.column")  # fmt: skip
    assert p.line == line_of(text, new.strip())
    assert "'claim_amount' has type 'double'" in p.message and "timestamp" in p.message
    assert "event_time" in p.fix
    _has_fix(p)


def test_a_watermark_on_another_timestamp_than_the_event_time_is_an_error(tmp_path: Path) -> None:
    new = "      - watermark: {column: reported_at, delay: 30 minutes}\n"
    text = edited(
        ("claim_amount: double", CLAIMS_SCHEMA_END,
         "      event_time: timestamp\n      reported_at: timestamp\n    event_time: event_time\n"),
        (CLAIMS_WM, new),
    )  # fmt: skip
    p = only(errors(problems(write(tmp_path, text), "local")),
             "jobs.claims_hourly.steps[0].watermark.column")  # fmt: skip
    assert p.line == line_of(text, new.strip())
    assert "'reported_at' is not the job's event time 'event_time'" in p.message
    assert "column: event_time" in p.fix
    _has_fix(p)


# --- secret references -------------------------------------------------------------------------

SECRET = "Zq8-hunter2-pAs5w0rd"


@pytest.mark.parametrize(
    "written",
    [
        f"{{{{secrets/streamops-prod/kafka-password}}}}{SECRET}",  # pasted after the reference
        f"{{{{secrets/streamops-prod/{SECRET}!}}}}",  # a character no key name has
        f"{{{{secrets/{SECRET}}}}}",  # no key
        f"{{{{secret/streamops-prod/{SECRET}}}}}",  # secret, not secrets
        f"{{{{ {SECRET} }}}}",
        f"{{{{env/{SECRET}}}}}",  # not an environment variable name
        f"{{{{secrets/streamops-prod/{SECRET}",  # not closed
    ],
)
def test_a_malformed_secret_reference_is_refused_without_echoing_it(
    tmp_path: Path, written: str
) -> None:
    text = edited((PROD_PW, f"password: '{written}'"))
    with pytest.raises(BundleError) as info:
        load(write(tmp_path, text), "prod")
    p = only(info.value.problems, "targets.prod.kafka.security.password")
    assert p.line == line_of(text, "password: '{{")
    assert "not a secret reference" in p.message and "{{secrets/<scope>/<key>}}" in p.fix
    _has_fix(p)
    for shown in (str(info.value), p.render(), repr(info.value.problems)):
        assert SECRET not in shown


# --- max_clock_skew against the watermark delay ------------------------------------------------


def test_a_clock_skew_longer_than_the_watermark_delay_is_an_error(tmp_path: Path) -> None:
    text = edited(
        ("query_name: claims_hourly", "    steps:\n", "    max_clock_skew: 1 hour\n    steps:\n")
    )
    p = only(errors(problems(write(tmp_path, text), "local")), "jobs.claims_hourly.max_clock_skew")
    assert p.line == line_of(text, "max_clock_skew: 1 hour")
    assert "'1 hour' is longer than the watermark delay '30 minutes'" in p.message
    assert "jobs.claims_hourly.steps[0].watermark.delay" in p.message
    assert "at most '30 minutes'" in p.fix and "event_time_in_future" in p.fix
    _has_fix(p)


def test_a_clock_skew_up_to_the_watermark_delay_is_valid(tmp_path: Path) -> None:
    text = edited(
        (
            "query_name: claims_hourly",
            "    steps:\n",
            "    max_clock_skew: 30 minutes\n    steps:\n",
        )
    )
    assert load(write(tmp_path, text), "local").job("claims_hourly").max_clock_skew.seconds == 1800


def test_the_default_clock_skew_never_exceeds_the_watermark_delay(tmp_path: Path) -> None:
    """5 minutes, or the job's watermark delay when that is shorter."""
    text = edited(("delay: 5 minutes}", "delay: 2 minutes}"))
    bundle = load(write(tmp_path, text), "local")
    assert DEFAULT_CLOCK_SKEW.seconds == 300
    assert bundle.job("claims_hourly").max_clock_skew.seconds == 300  # watermark 30 minutes
    assert bundle.job("telemetry_5min").max_clock_skew.seconds == 120  # watermark 2 minutes
    for name in bundle.spec.jobs:
        job = bundle.job(name)
        assert job.watermark is not None
        assert job.max_clock_skew.seconds <= job.watermark.delay.seconds
