"""`streamops validate`: one line per problem, exit 0 valid, 1 invalid, 2 usage error, no traceback.

The exit codes are those of the real entry point (`streamops.cli:main`), run in a subprocess the
way the console script runs it; a few cases also run the installed console script itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamops.bundle import ENV_BOOTSTRAP
from tests.unit.helpers import SHIPPED, edited, line_of, shipped_text, write

PROD_CK = "abfss://checkpoints@streamopsprod.dfs.core.windows.net/streamops"
CONSOLE_SCRIPT = Path(sys.executable).with_name("streamops")
PROBLEM_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<warning>warning: )?(?P<path>\S+): ")


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def problem_lines(self, *, warnings: bool) -> list[str]:
        out = []
        for line in self.stdout.splitlines():
            m = PROBLEM_LINE.match(line)
            if m and bool(m.group("warning")) == warnings:
                out.append(line)
        return out


def streamops(*args: str | Path, script: bool = False) -> Result:
    env = {k: v for k, v in os.environ.items() if k != ENV_BOOTSTRAP}
    env["COLUMNS"] = "80"  # long problem lines must still come out as one line each
    cmd = [str(CONSOLE_SCRIPT)] if script else [sys.executable, "-m", "streamops.cli"]
    proc = subprocess.run(
        [*cmd, *map(str, args)], capture_output=True, text=True, env=env, timeout=60
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in result.output, result.output
    return result


@pytest.mark.parametrize("target", ["local", "dev", "prod"])
def test_the_shipped_bundle_is_valid(target: str) -> None:
    r = streamops("validate", "--bundle", SHIPPED, "--target", target)
    assert r.code == 0, r.output
    assert r.problem_lines(warnings=False) == []
    assert f"valid for target '{target}' (3 jobs" in r.stderr


def test_the_console_script_validates_the_shipped_bundle() -> None:
    assert CONSOLE_SCRIPT.exists(), "install the project: make setup (pip install -e .)"
    r = streamops("validate", "-b", SHIPPED, "-t", "local", script=True)
    assert r.code == 0, r.output
    (warning,) = r.problem_lines(warnings=True)
    line = line_of(shipped_text(), "storage_root: .cache/data")
    assert warning == (
        f"{SHIPPED}:{line}: warning: targets.local.storage_root: tables are kept under a local folder "
        "('.cache/data'). Fix: fine for the local target; dev/prod must use durable storage "
        "(abfss://)"
    )


def test_a_tmp_checkpoint_on_prod_is_one_error_line_and_exit_1(tmp_path: Path) -> None:
    text = edited((f"checkpoint_root: {PROD_CK}\n", "checkpoint_root: /tmp/ck\n"))
    path = write(tmp_path, text)
    line = line_of(text, "checkpoint_root: /tmp/ck")
    r = streamops("validate", "--bundle", path, "--target", "prod")
    assert r.code == 1, r.output
    (error,) = r.problem_lines(warnings=False)
    assert f"bundle.yml:{line}: " in error
    assert error.startswith(
        f"{path}:{line}: targets.prod.checkpoint_root: '/tmp/ck' is not durable"
    )
    assert "targets.prod.checkpoint_root" in error
    assert "Fix: use abfss://" in error
    assert r.problem_lines(warnings=True) == []
    assert "1 error(s) for target 'prod'" in r.stderr


def test_the_same_bundle_is_valid_on_local_with_a_warning(tmp_path: Path) -> None:
    # The prod mistake does not concern the local target.
    text = edited((f"checkpoint_root: {PROD_CK}\n", "checkpoint_root: /tmp/ck\n"))
    r = streamops("validate", "--bundle", write(tmp_path, text), "--target", "local")
    assert r.code == 0, r.output


def test_warnings_alone_exit_0(tmp_path: Path) -> None:
    text = edited(
        ("trigger: {processing_time: 2 minutes}", "trigger: {processing_time: 30 seconds}")
    )
    path = write(tmp_path, text)
    r = streamops("validate", "--bundle", path, "--target", "prod")
    assert r.code == 0, r.output
    (warning,) = r.problem_lines(warnings=True)
    line = line_of(text, "processing_time: 30 seconds")
    assert warning.startswith(
        f"{path}:{line}: warning: jobs.claims_hourly.trigger.processing_time: "
    )
    assert "Fix: a trigger of '85 seconds'" in warning
    assert "1 warning(s)" in r.stderr


@pytest.mark.parametrize(
    ("old", "new", "path", "needle"),
    [
        ("    partitions: 4\n    max_lateness: 20", "    partitions: [4\n    max_lateness: 20",
         "(yaml)", "max_lateness: 20 minutes"),
        ("project: streamops-demo\n", "project: streamops-demo\nloop: &a [*a]\n", "(yaml)",
         "loop:"),
        ("    partitions: 4\n    max_lateness: 20",
         "    partitions: 4\n    partitions: 5\n    max_lateness: 20",
         "sources.claims.partitions", "partitions: 5"),
        ("    max_lateness: 20 minutes", "    max_lateness: 1 hr", "sources.claims.max_lateness",
         "max_lateness: 1 hr"),
        ("          window: 1 hour\n          group_by: [claim_type",
         "          window: 0 seconds\n          group_by: [claim_type",
         "jobs.claims_hourly.steps[1].window_aggregate.window", "window: 0 seconds"),
        ('token: "{{secrets/streamops-prod/databricks-token}}"',
         "token: dapi" + "0123456789abcdef" * 2, "targets.prod.databricks.token",
         "token: dapi"),
    ],
)  # fmt: skip
def test_a_broken_bundle_exits_1_with_one_located_error(
    tmp_path: Path, old: str, new: str, path: str, needle: str
) -> None:
    text = edited((old, new))
    bundle = write(tmp_path, text)
    r = streamops("validate", "--bundle", bundle, "--target", "prod")
    assert r.code == 1, r.output
    (error,) = r.problem_lines(warnings=False)
    m = PROBLEM_LINE.match(error)
    assert m
    assert m.group("file") == str(bundle)
    assert m.group("path") == path
    assert int(m.group("line")) == line_of(text, needle)
    assert ". Fix: " in error
    assert "dapi" + "0123456789abcdef" * 2 not in r.output


def test_an_unknown_target_exits_2_listing_the_targets() -> None:
    r = streamops("validate", "--bundle", SHIPPED, "--target", "staging")
    assert r.code == 2, r.output
    assert "no target 'staging'" in r.stderr
    assert "targets: local, dev, prod" in r.stderr


def test_an_unknown_option_exits_2() -> None:
    r = streamops("validate", "--bundle", SHIPPED, "--targt", "prod")
    assert r.code == 2, r.output
    assert "No such option: --targt" in r.stderr


def test_an_unknown_command_exits_2() -> None:
    r = streamops("valdate", "--bundle", SHIPPED)
    assert r.code == 2, r.output
    assert "valdate" in r.stderr


def test_a_missing_bundle_file_exits_2(tmp_path: Path) -> None:
    r = streamops("validate", "--bundle", tmp_path / "nope.yml", "--target", "local")
    assert r.code == 2, r.output
    assert "does not exist" in r.stderr


def test_the_console_script_exits_2_on_an_unknown_target() -> None:
    r = streamops("validate", "--bundle", SHIPPED, "--target", "nope", script=True)
    assert r.code == 2, r.output
    assert "targets: local, dev, prod" in r.stderr


def test_a_billion_laughs_bundle_is_one_error_line_and_exit_1(tmp_path: Path) -> None:
    """Nine levels of ten aliases (10^9 values): one line naming file, line and fix, at once
    (before, validate never answered; the subprocess timeout bounds this test)."""
    anchors = ['lol0: &l0 "lol"'] + [
        f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)
    ]
    text = "\n".join(anchors) + "\n" + shipped_text()
    path = write(tmp_path, text)
    r = streamops("validate", "--bundle", path, "--target", "local")
    assert r.code == 1, r.output
    (line,) = r.problem_lines(warnings=False)
    assert line.startswith(f"{path}:{line_of(text, 'lol5: &l5')}: (yaml): aliases expand")
    assert ". Fix: " in line
