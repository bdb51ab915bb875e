"""Integrity rules for a Spark checkpoint. Each finding has a stable code (documented in
docs/checkpoint.md); the check only reads.

Structural rules need only the location. Broker rules run with bootstrap servers; the reset rule
runs with the query id recorded at the last deploy or start (the registry).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from streamops.checkpoint.reader import (
    KNOWN_VERSIONS,
    CheckpointUnreadable,
    Listing,
    OffsetsFile,
    list_checkpoint,
    parse_commit,
    parse_metadata,
    parse_offsets,
    read_text,
)
from streamops.checkpoint.report import Report

# Stable codes: never renumber; add new ones at the end of their group.
METADATA_MISSING = "CK101"
METADATA_GARBLED = "CK102"
OFFSETS_GAP = "CK110"
COMMITS_GAP = "CK111"
COMMIT_WITHOUT_OFFSETS = "CK112"
UNCOMMITTED_BATCHES = "CK113"
OFFSETS_BACKWARDS = "CK114"
STRAY_FILE = "CK115"
INVALID_JSON = "CK120"
UNKNOWN_VERSION = "CK121"
STATE_MISSING = "CK130"
STATE_METADATA_MISSING = "CK131"
OFFSET_BEFORE_EARLIEST = "CK140"
OFFSET_BEYOND_LATEST = "CK141"
TOPIC_MISSING = "CK142"
QUERY_ID_CHANGED = "CK150"

CODES = {
    METADATA_MISSING: "metadata missing",
    METADATA_GARBLED: "metadata garbled",
    OFFSETS_GAP: "offsets with a gap",
    COMMITS_GAP: "commits with a gap",
    COMMIT_WITHOUT_OFFSETS: "a commit without its offsets",
    UNCOMMITTED_BATCHES: "more than one uncommitted batch",
    OFFSETS_BACKWARDS: "offsets going backwards",
    STRAY_FILE: "a file that is not a batch number (warning)",
    INVALID_JSON: "truncated or invalid JSON",
    UNKNOWN_VERSION: "unknown version line",
    STATE_MISSING: "state files missing for the last committed batch",
    STATE_METADATA_MISSING: "state operator metadata missing (warning)",
    OFFSET_BEFORE_EARLIEST: "committed offsets older than the broker's earliest",
    OFFSET_BEYOND_LATEST: "committed offsets beyond the broker's latest (topic recreated)",
    TOPIC_MISSING: "a topic or partition of the checkpoint is not on the broker",
    QUERY_ID_CHANGED: "query id differs from the one recorded at the last deploy (a reset)",
}

RESTORE_FIX = (
    "stop the job, then `streamops checkpoint restore` the newest good backup, or "
    "`streamops checkpoint reconstruct` and restart with --reset-from"
)


def check(
    location: str,
    storage_options: dict[str, Any] | None = None,
    *,
    bootstrap_servers: str | None = None,
    kafka_config: dict[str, str] | None = None,
    expected_query_id: str | None = None,
    registry_note: str | None = None,
    newest: int = 3,
) -> Report:
    """Check the checkpoint at `location`; read-only. See `Report.exit_code`."""
    report = Report(location)
    try:
        listing = list_checkpoint(location, storage_options)
    except CheckpointUnreadable as exc:
        report.unreadable = str(exc)
        return report
    report.checks_run.append("structure")
    _check_metadata(report, listing, storage_options)
    _check_sequence(report, listing)
    offsets = _check_newest(report, listing, storage_options, newest)
    _check_state(report, listing)
    committed = next((o for o in offsets if o.batch_id == report.last_committed), None)
    if committed is None and report.last_committed is not None:
        try:
            committed = parse_offsets(
                read_text(location, f"offsets/{report.last_committed}", storage_options),
                report.last_committed,
            )
        except (OSError, ValueError):
            committed = None
    if bootstrap_servers:
        report.checks_run.append("broker")
        if committed is None:
            report.checks_skipped["broker"] = "no committed batch whose offsets could be read"
        else:
            _check_broker(report, committed, bootstrap_servers, kafka_config or {})
    else:
        report.checks_skipped["broker"] = "no --bootstrap-servers or --bundle/--target given"
    if expected_query_id is not None:
        report.checks_run.append("registry")
        if report.query_id is not None and report.query_id != expected_query_id:
            report.add(
                QUERY_ID_CHANGED, "metadata",
                f"query id {report.query_id} differs from {expected_query_id} recorded at the "
                "last deploy/start: the checkpoint was reset or replaced",
                "if the reset was not intended, restore the backup holding query id "
                f"{expected_query_id} (`streamops checkpoint restore`); if it was, restart the job "
                "with --reset-from so the reset is recorded",
            )  # fmt: skip
    else:
        report.checks_skipped["registry"] = registry_note or "no --bundle/--target given"
    return report


def _check_metadata(report: Report, listing: Listing, so: dict[str, Any] | None) -> None:
    if not listing.has_metadata:
        report.add(
            METADATA_MISSING, "metadata",
            "the checkpoint has no metadata file (no query id): Spark would start a new query "
            "from startingOffsets" + ("" if not listing.offsets else " and ignore the batches here"),
            RESTORE_FIX,
        )  # fmt: skip
        return
    try:
        report.query_id = parse_metadata(read_text(listing.location, "metadata", so))
    except (ValueError, UnicodeDecodeError) as exc:
        report.add(METADATA_GARBLED, "metadata", str(exc), RESTORE_FIX)


def _runs_with_gaps(numbers: Iterable[int]) -> list[tuple[int, int]]:
    nums = list(numbers)
    return [(a, b) for a, b in itertools.pairwise(nums) if b != a + 1]


def _check_sequence(report: Report, listing: Listing) -> None:
    offs, coms = listing.offsets, listing.commits
    report.last_batch = offs[-1] if offs else None
    report.last_committed = coms[-1] if coms else None
    for a, b in _runs_with_gaps(offs):
        report.add(
            OFFSETS_GAP, f"offsets/{b}",
            f"offsets jump from batch {a} to {b} (batches {a + 1}..{b - 1} missing)", RESTORE_FIX,
        )  # fmt: skip
    for a, b in _runs_with_gaps(coms):
        report.add(
            COMMITS_GAP, f"commits/{b}",
            f"commits jump from batch {a} to {b} (batches {a + 1}..{b - 1} missing)", RESTORE_FIX,
        )  # fmt: skip
    have = set(offs)
    for n in coms:
        if n not in have and (not offs or n >= offs[0]):
            report.add(
                COMMIT_WITHOUT_OFFSETS, f"commits/{n}",
                f"batch {n} is committed but offsets/{n} is missing"
                + (" (commits run ahead of the offsets log)" if not offs or n > offs[-1] else ""),
                RESTORE_FIX,
            )  # fmt: skip
    if offs:
        done = coms[-1] if coms else offs[0] - 1
        pending = [n for n in offs if n > done]
        if len(pending) > 1:
            report.add(
                UNCOMMITTED_BATCHES, f"offsets/{pending[0]}",
                f"{len(pending)} batches ({pending[0]}..{pending[-1]}) have offsets but no commit; "
                "Spark leaves at most the newest one uncommitted",
                "a commits/ file was lost: " + RESTORE_FIX,
            )  # fmt: skip
    for rel in listing.odd_names:
        report.add(
            STRAY_FILE, rel, "not a batch number; Spark ignores it",
            "remove the file (or move it out of the checkpoint)", "warning",
        )  # fmt: skip


def _check_newest(
    report: Report, listing: Listing, so: dict[str, Any] | None, newest: int
) -> list[OffsetsFile]:
    """Parse the newest offsets and commit files (the ones a restart reads)."""
    parsed: list[OffsetsFile] = []
    for kind, numbers in (("offsets", listing.offsets), ("commits", listing.commits)):
        for n in numbers[-newest:]:
            rel = f"{kind}/{n}"
            if listing.sizes.get(rel, 0) == 0:
                report.add(INVALID_JSON, rel, "the file is empty (a truncated write)", RESTORE_FIX)
                continue
            try:
                text = read_text(listing.location, rel, so)
                f = parse_offsets(text, n) if kind == "offsets" else parse_commit(text, n)
            except (ValueError, UnicodeDecodeError) as exc:
                report.add(INVALID_JSON, rel, f"truncated or invalid: {exc}", RESTORE_FIX)
                continue
            if f.version not in KNOWN_VERSIONS:
                report.add(
                    UNKNOWN_VERSION, rel,
                    f"version line '{f.version[:40]}' is not one of {', '.join(KNOWN_VERSIONS)}",
                    "the checkpoint was written by a newer Spark (run it there) or is corrupt: "
                    + RESTORE_FIX,
                )  # fmt: skip
            if isinstance(f, OffsetsFile):
                parsed.append(f)
    for prev, cur in itertools.pairwise(parsed):
        for i, (a, b) in enumerate(zip(prev.sources, cur.sources, strict=False)):
            for topic, parts in (b or {}).items():
                before = (a or {}).get(topic) or {}
                back = {
                    p: (before[p], off)
                    for p, off in (parts or {}).items()
                    if isinstance(off, int) and isinstance(before.get(p), int) and off < before[p]
                }
                if back:
                    shown = ", ".join(f"partition {p}: {x} -> {y}" for p, (x, y) in back.items())
                    report.add(
                        OFFSETS_BACKWARDS, f"offsets/{cur.batch_id}",
                        f"source {i} topic '{topic}' goes backwards from batch {prev.batch_id} "
                        f"({shown})", RESTORE_FIX,
                    )  # fmt: skip
    return parsed


def _check_state(report: Report, listing: Listing) -> None:
    if not listing.operators:
        return
    report.checks_run.append("state")
    last = report.last_committed
    if last is None:
        return
    want = last + 1
    have = {
        (s.operator, s.partition)
        for s in listing.state_files
        if s.version == want and s.kind in ("delta", "snapshot", "zip", "changelog")
    }
    for op in listing.operators:
        if not op.has_metadata:
            report.add(
                STATE_METADATA_MISSING, f"state/{op.operator}/_metadata/metadata",
                "the operator's state metadata is missing (state readers cannot describe it)",
                "restore it from a backup; Spark rewrites it on the next batch", "warning",
            )  # fmt: skip
        missing = [p for p in op.partitions if (op.operator, p) not in have]
        if not op.partitions or missing:
            shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
            report.add(
                STATE_MISSING, f"state/{op.operator}",
                f"state version {want} (batch {last}) missing for partition(s) {shown or 'all'}",
                RESTORE_FIX,
            )  # fmt: skip


def _check_broker(
    report: Report, committed: OffsetsFile, bootstrap: str, extra: dict[str, str]
) -> None:
    from confluent_kafka import Consumer

    from streamops.errors import KafkaError
    from streamops.kafka.offsets import client_config, topic_partitions, watermarks

    consumer = Consumer(client_config(bootstrap, extra))
    rel = f"offsets/{committed.batch_id}"
    try:
        for source in committed.sources:
            for topic, parts in (source or {}).items():
                try:
                    present = set(topic_partitions(consumer, topic))
                except KafkaError as exc:
                    report.add(
                        TOPIC_MISSING, rel, str(exc),
                        "recreate the topic, or point the job at the right broker",
                    )  # fmt: skip
                    continue
                wanted = {int(p): off for p, off in (parts or {}).items() if isinstance(off, int)}
                gone = sorted(set(wanted) - present)
                if gone:
                    report.add(
                        TOPIC_MISSING, rel,
                        f"topic '{topic}' has no partition(s) {gone} that the checkpoint reads",
                        "the topic was recreated with fewer partitions: reconstruct offsets "
                        "(`streamops checkpoint reconstruct`) and restart with --reset-from",
                    )  # fmt: skip
                marks = watermarks(consumer, topic, sorted(set(wanted) & present))
                for p, off in sorted(wanted.items()):
                    if p not in marks:
                        continue
                    lo, hi = marks[p]
                    if off < lo:
                        report.add(
                            OFFSET_BEFORE_EARLIEST, rel,
                            f"'{topic}' partition {p}: committed offset {off} is older than the "
                            f"earliest available {lo} ({lo - off} records lost to retention)",
                            "raise the topic's retention; to go on, accept the loss with "
                            "failOnDataLoss=false or reconstruct offsets and restart with --reset-from",
                        )  # fmt: skip
                    elif off > hi:
                        report.add(
                            OFFSET_BEYOND_LATEST, rel,
                            f"'{topic}' partition {p}: committed offset {off} is beyond the latest "
                            f"{hi}: the topic was probably deleted and recreated",
                            "reconstruct offsets (`streamops checkpoint reconstruct`) into a new "
                            "checkpoint and restart with --reset-from",
                        )  # fmt: skip
    except Exception as exc:
        report.checks_run.remove("broker")
        report.checks_skipped["broker"] = f"broker {bootstrap} not usable: {exc}"
    finally:
        consumer.close()
