"""`streamops checkpoint check` never cries wolf: a checkpoint of a source that is not Kafka (Spark's
rate source writes a bare number per batch) is healthy; what cannot be read (permissions, a
looping link, a FIFO) is exit 2 "cannot read <file>" with the fix, never a traceback, a finding
or advice to restore; a file or an empty path instead of a folder is a usage error (exit 2).

The checkpoint is Spark's own (module fixture: the rate source, a few availableNow runs); each
test works on a private copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from streamops.checkpoint import backup as bk
from streamops.checkpoint.checks import RESTORE_ONLY_FIX, check
from streamops.checkpoint.reader import kafka_offsets, read_checkpoint
from streamops.errors import CheckpointError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rate_checkpoint(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint Spark's rate source wrote: offsets lines are bare numbers (0, 1, ...)."""
    ck = tmp_path_factory.mktemp("rate") / "ck"
    for _ in range(3):
        df = spark.readStream.format("rate").option("rowsPerSecond", 10).load()
        q = (df.writeStream.format("noop").option("checkpointLocation", str(ck))
             .trigger(availableNow=True).start())  # fmt: skip
        q.awaitTermination()
    return ck


@pytest.fixture
def ck(rate_checkpoint: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(rate_checkpoint, tmp_path / "ck"))


def _drop_permission_override() -> None:
    """In the child, before exec: drop root's capabilities to override file permissions
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the bounding set, so root after exec reads only
    what the file modes allow (it stays uid 0 and can still run the checkout's interpreter)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH (linux/capability.h)
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) refused")


def _cli(*args: str, as_file_modes_say: bool = False, cwd: Path | None = None) -> tuple[int, str]:
    """Run the real `streamops` entry point; (exit code, stdout + stderr)."""
    code = "import sys; from streamops.cli import main; sys.argv[0] = 'streamops'; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
        cwd=cwd, check=False,
        preexec_fn=_drop_permission_override if as_file_modes_say else None,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_a_rate_source_checkpoint_is_healthy(ck: Path) -> None:
    read = read_checkpoint(str(ck))
    committed = read.committed_offsets()
    assert committed is not None and read.last_committed is not None
    # Spark's rate source writes a bare number, not a Kafka or Delta offset object.
    assert all(isinstance(s, int) and kafka_offsets(s) is None for s in committed.sources)
    report = check(str(ck))
    assert report.exit_code == 0 and report.findings == [], report.render()
    assert "reads no Kafka topic" in report.checks_skipped["broker"]
    rc, out = _cli("checkpoint", "check", str(ck))
    assert rc == 0 and "healthy" in out, out


def test_a_bare_zero_offset_is_a_source_that_cannot_be_rebuilt_from_kafka(ck: Path) -> None:
    """Batch 0 of the rate source has the offset `0`: still a source, and not Kafka, so a broken
    checkpoint's fix is a restore, never `reconstruct` (which rebuilds Kafka offsets)."""
    for kind in ("offsets", "commits"):
        for f in (ck / kind).iterdir():
            if f.name != "0":
                f.unlink()
    # Spark writes 0 when the first batch ends within the query's first second; make sure of it.
    text = (ck / "offsets" / "0").read_text(encoding="utf-8").splitlines()
    (ck / "offsets" / "0").write_text("\n".join([*text[:2], "0"]), encoding="utf-8")
    assert read_checkpoint(str(ck)).offsets[0].sources == (0,)
    (ck / "metadata").unlink()
    report = check(str(ck))
    assert [f.code for f in report.errors] == ["CK101"]
    assert report.errors[0].fix == RESTORE_ONLY_FIX


def _loop(path: Path) -> None:
    """Make `path` a link to itself: there, but unreadable even to root (ELOOP)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(path.name)


def _newest(ck: Path, kind: str) -> Path:
    return ck / kind / str(max(int(p.name) for p in (ck / kind).iterdir() if p.name.isdigit()))


@pytest.mark.parametrize("what", ["metadata", "offsets file", "offsets folder", "fifo"])
def test_an_unreadable_file_or_folder_is_exit_2_naming_it_never_a_finding(
    ck: Path, what: str
) -> None:
    if what == "metadata":
        bad = ck / "metadata"
        _loop(bad)
    elif what == "offsets file":
        bad = _newest(ck, "offsets")
        _loop(bad)
    elif what == "offsets folder":
        bad = ck / "offsets"
        _loop(bad)
    else:
        # A FIFO where Spark writes a commit: reading it would block, listing it says size 0.
        bad = _newest(ck, "commits")
        bad.unlink()
        os.mkfifo(bad)
    report = check(str(ck))
    assert report.exit_code == 2 and report.findings == [], report.render()
    rc, out = _cli("checkpoint", "check", str(ck))
    assert rc == 2, out
    assert f"cannot read {bad}" in out and "Fix:" in out, out
    assert "Traceback" not in out and "restore" not in out and "CK1" not in out, out
    # A backup of what cannot be read is refused, not taken half.
    with pytest.raises(CheckpointError, match="cannot read"):
        bk.backup(str(ck), "rate", str(ck.parent / "backups"), retention=2)


@pytest.mark.parametrize("what", ["metadata", "offsets"])
def test_a_file_or_folder_without_read_permission_is_exit_2_with_the_fix(
    ck: Path, what: str
) -> None:
    """An unreadable offsets/ folder is no "missing offsets": the check says it cannot read it.

    Root reads every file whatever its mode; a root test run checks without that privilege."""
    root = os.geteuid() == 0
    bad = ck / what
    bad.chmod(0)
    try:
        rc, out = _cli("checkpoint", "check", str(ck), as_file_modes_say=root)
    except subprocess.SubprocessError as exc:
        pytest.skip(f"running as root and this system does not let a child drop the right to "
                    f"override file modes ({exc}): a mode-000 file is readable to root")  # fmt: skip
    finally:
        bad.chmod(0o755 if bad.is_dir() else 0o644)
    assert rc == 2, out
    assert f"cannot read {bad} (permission denied)" in out and "read access" in out, out
    assert "Traceback" not in out and "restore" not in out and "CK1" not in out, out


def test_a_file_or_an_empty_path_is_a_usage_error(ck: Path) -> None:
    rc, out = _cli("checkpoint", "check", str(ck / "metadata"))
    assert rc == 2 and f"{ck / 'metadata'} is a file, not a checkpoint folder" in out, out
    assert (
        f"Fix: give the folder that holds metadata, offsets/ and commits/ (if this is one of its files: {ck},"
        in " ".join(out.split())
    ), out
    assert "CK101" not in out and "Traceback" not in out, out
    rc, out = _cli("checkpoint", "check", "", cwd=ck)
    assert rc == 2 and "no checkpoint location given" in out and "Fix:" in out, out
    assert "CK101" not in out and "Traceback" not in out, out
    assert "is a file" in str(check(str(ck / "metadata")).unreadable)
