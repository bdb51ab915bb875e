"""Integrity rules for a Spark checkpoint. Each finding has a stable code (listed in
docs/checkpoints.md); the check only reads.

Structural rules need only the location. Source rules follow the shape of each source line:
Kafka offsets (the bronze query) are checked against the broker, Delta source offsets (the gold
query reads the bronze table) against that table's log. The reset rule runs with the query id
recorded at the last deploy or start (the registry).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streamops.bundle.storage import login_from_fsspec
from streamops.checkpoint.findings import Report
from streamops.checkpoint.reader import (
    KNOWN_VERSIONS,
    STATE_KINDS,
    CheckpointUnreadable,
    CommitFile,
    Listing,
    OffsetsFile,
    cannot_read,
    delta_offset,
    kafka_offsets,
    list_checkpoint,
    parse_commit,
    parse_metadata,
    parse_offsets,
    read_text,
)
from streamops.errors import UsageError
from streamops.pipeline.driver_delta import open_delta

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
SOURCE_TABLE_REPLACED = "CK143"
SOURCE_VERSION_BEYOND_LATEST = "CK144"
QUERY_ID_CHANGED = "CK150"

# The way back from a broken checkpoint depends on the query: one that only reads Kafka and keeps
# no state (bronze) can start again from offsets rebuilt from its sink; one that reads a Delta
# table or keeps state (gold) can only be restored.
RESTORE_FIX = (
    "stop the job, then `streamops checkpoint restore` the newest good backup, or (for a "
    "bronze query) `streamops checkpoint reconstruct` and restart with --reset-from"
)
REBUILDABLE_FIX = (
    "stop the job, then `streamops checkpoint restore` the newest good backup, or "
    "`streamops checkpoint reconstruct` and restart with --reset-from"
)
RESTORE_ONLY_FIX = (
    "stop the job, then `streamops checkpoint restore` the newest good backup (this query reads a "
    "Delta table or keeps state, so its checkpoint cannot be rebuilt from Kafka offsets)"
)


@dataclass(frozen=True)
class _Newest:
    """The newest offsets and commit files, parsed (or why not), before anything is reported."""

    offsets: list[OffsetsFile]
    commits: list[CommitFile]
    broken: list[tuple[str, str]]  # (file, what is wrong)


def check(
    location: str,
    storage_options: dict[str, Any] | None = None,
    *,
    bootstrap_servers: str | None = None,
    kafka_config: dict[str, str] | None = None,
    source_tables: tuple[str, ...] = (),
    expected_query_id: str | None = None,
    registry_note: str | None = None,
    newest: int = 3,
) -> Report:
    """Check the checkpoint at `location`; read-only. See `Report.exit_code`.

    `source_tables`: the Delta tables the query streams from, in the order of its Delta sources
    (for a gold query: the job's bronze table).
    """
    report = Report(location)
    try:
        listing = list_checkpoint(location, storage_options)
        report.checks_run.append("structure")
        found = _read_newest(listing, storage_options, newest)
        fix = _fix_for(listing, found.offsets)
        _check_metadata(report, listing, storage_options, fix)
        _check_sequence(report, listing, fix)
        _check_newest(report, found, fix)
        _check_state(report, listing, fix)
        committed = _committed(report, listing, found, storage_options)
    except (CheckpointUnreadable, UsageError) as exc:
        # What could not be read is no finding about the checkpoint (it may well be intact).
        report.unreadable = str(exc)
        report.findings.clear()
        return report
    _check_kafka_sources(report, committed, bootstrap_servers, kafka_config or {})
    _check_delta_sources(report, committed, source_tables, storage_options)
    _check_registry(report, expected_query_id, registry_note)
    return report


def _fix_for(listing: Listing, offsets: list[OffsetsFile]) -> str:
    if not offsets:
        return RESTORE_FIX
    # A bare 0 (the rate source's first offset) is a source line too: only None is "no source".
    reads_only_kafka = all(
        kafka_offsets(s) is not None for s in offsets[-1].sources if s is not None
    )
    return REBUILDABLE_FIX if reads_only_kafka and not listing.operators else RESTORE_ONLY_FIX


def _check_metadata(report: Report, listing: Listing, so: dict[str, Any] | None, fix: str) -> None:
    if not listing.has_metadata:
        report.add(
            METADATA_MISSING,
            "metadata",
            "the checkpoint has no metadata file (no query id): Spark would start a new query "
            "from startingOffsets"
            + ("" if not listing.offsets else " and ignore the batches here"),
            fix,
        )
        return
    try:
        report.query_id = parse_metadata(_read(listing, "metadata", so))
    except (ValueError, UnicodeDecodeError) as exc:
        report.add(METADATA_GARBLED, "metadata", str(exc), fix)


def _runs_with_gaps(numbers: Iterable[int]) -> list[tuple[int, int]]:
    nums = list(numbers)
    return [(a, b) for a, b in itertools.pairwise(nums) if b != a + 1]


def _check_sequence(report: Report, listing: Listing, fix: str) -> None:
    offs, coms = listing.offsets, listing.commits
    report.last_batch = offs[-1] if offs else None
    report.last_committed = coms[-1] if coms else None
    for a, b in _runs_with_gaps(offs):
        report.add(
            OFFSETS_GAP,
            f"offsets/{b}",
            f"offsets jump from batch {a} to {b} (batches {a + 1}..{b - 1} missing)",
            fix,
        )
    for a, b in _runs_with_gaps(coms):
        report.add(
            COMMITS_GAP,
            f"commits/{b}",
            f"commits jump from batch {a} to {b} (batches {a + 1}..{b - 1} missing)",
            fix,
        )
    have = set(offs)
    for n in coms:
        if n not in have and (not offs or n >= offs[0]):
            report.add(
                COMMIT_WITHOUT_OFFSETS,
                f"commits/{n}",
                f"batch {n} is committed but offsets/{n} is missing"
                + (" (commits run ahead of the offsets log)" if not offs or n > offs[-1] else ""),
                fix,
            )
    if offs:
        done = coms[-1] if coms else offs[0] - 1
        pending = [n for n in offs if n > done]
        if len(pending) > 1:
            report.add(
                UNCOMMITTED_BATCHES,
                f"offsets/{pending[0]}",
                f"{len(pending)} batches ({pending[0]}..{pending[-1]}) have offsets but no commit; "
                "Spark leaves at most the newest one uncommitted",
                "a commits/ file was lost: " + fix,
            )
    for rel in listing.odd_names:
        report.add(
            STRAY_FILE,
            rel,
            "not a batch number; Spark ignores it",
            "remove the file (or move it out of the checkpoint)",
            "warning",
        )


def _read_newest(listing: Listing, so: dict[str, Any] | None, newest: int) -> _Newest:
    """Parse the newest offsets and commit files (the ones a restart reads)."""
    found = _Newest([], [], [])
    for kind, numbers in (("offsets", listing.offsets), ("commits", listing.commits)):
        for n in numbers[-newest:]:
            rel = f"{kind}/{n}"
            try:
                # Read even a file listed as empty: a link's listed size says nothing about it.
                text = _read(listing, rel, so)
                if not text:
                    found.broken.append((rel, "the file is empty (a truncated write)"))
                    continue
                if kind == "offsets":
                    found.offsets.append(parse_offsets(text, n))
                else:
                    found.commits.append(parse_commit(text, n))
            except (ValueError, UnicodeDecodeError) as exc:
                found.broken.append((rel, f"truncated or invalid: {exc}"))
    return found


def _check_newest(report: Report, found: _Newest, fix: str) -> None:
    for rel, why in found.broken:
        report.add(INVALID_JSON, rel, why, fix)
    files: list[OffsetsFile | CommitFile] = [*found.offsets, *found.commits]
    for f in files:
        if f.version not in KNOWN_VERSIONS:
            kind = "offsets" if isinstance(f, OffsetsFile) else "commits"
            report.add(
                UNKNOWN_VERSION,
                f"{kind}/{f.batch_id}",
                f"version line '{f.version[:40]}' is not one of {', '.join(KNOWN_VERSIONS)}",
                "the checkpoint was written by a newer Spark (run it there) or is corrupt: " + fix,
            )
    for prev, cur in itertools.pairwise(found.offsets):
        for i, (a, b) in enumerate(zip(prev.sources, cur.sources, strict=False)):
            back = _backwards(a, b)
            if back:
                report.add(
                    OFFSETS_BACKWARDS,
                    f"offsets/{cur.batch_id}",
                    f"source {i} goes backwards from batch {prev.batch_id} ({back})",
                    fix,
                )


def _backwards(before: Any, after: Any) -> str | None:
    """What went backwards between two batches' offsets of one source, in words, or None."""
    k0, k1 = kafka_offsets(before), kafka_offsets(after)
    if k0 is not None and k1 is not None:
        back = [
            f"'{topic}' partition {p}: {k0[topic][p]} -> {off}"
            for topic, parts in k1.items()
            for p, off in parts.items()
            if p in k0.get(topic, {}) and off < k0[topic][p]
        ]
        return ", ".join(back) or None
    d0, d1 = delta_offset(before), delta_offset(after)
    # A new table id between two batches is no step backwards (Spark refuses it at once).
    if d0 is None or d1 is None or d0.reservoir_id != d1.reservoir_id:
        return None
    if d1.position >= d0.position:
        return None
    return f"Delta table {d1.reservoir_id}: (version, index) {d0.position} -> {d1.position}"


def _check_state(report: Report, listing: Listing, fix: str) -> None:
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
        if s.version == want and s.kind in STATE_KINDS
    }
    for op in listing.operators:
        if not op.has_metadata:
            report.add(
                STATE_METADATA_MISSING,
                f"state/{op.operator}/_metadata/metadata",
                "the operator's state metadata is missing (state readers cannot describe it)",
                "restore it from a backup; Spark rewrites it on the next batch",
                "warning",
            )
        missing = [p for p in op.partitions if (op.operator, p) not in have]
        if not op.partitions or missing:
            shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
            report.add(
                STATE_MISSING,
                f"state/{op.operator}",
                f"state version {want} (batch {last}) missing for partition(s) {shown or 'all'}",
                fix,
            )


def _committed(
    report: Report, listing: Listing, found: _Newest, so: dict[str, Any] | None
) -> OffsetsFile | None:
    """The offsets of the last committed batch (where a restart resumes), if they can be read."""
    last = report.last_committed
    if last is None:
        return None
    have = next((o for o in found.offsets if o.batch_id == last), None)
    if have is not None or f"offsets/{last}" not in listing.sizes:
        return have
    try:
        return parse_offsets(_read(listing, f"offsets/{last}", so), last)
    except (ValueError, UnicodeDecodeError):
        return None


def _read(listing: Listing, rel: str, so: dict[str, Any] | None) -> str:
    """A listed file's text; a listed file that cannot be opened (gone since the listing, or a
    dangling link) is unreadable, never a finding."""
    try:
        return read_text(listing.location, rel, so)
    except FileNotFoundError as exc:
        raise cannot_read(f"{listing.location.rstrip('/')}/{rel}", exc) from None


def _check_kafka_sources(
    report: Report, committed: OffsetsFile | None, bootstrap: str | None, extra: dict[str, str]
) -> None:
    if committed is None:
        report.checks_skipped["broker"] = "no committed batch whose offsets could be read"
        return
    sources = [k for s in committed.sources if (k := kafka_offsets(s)) is not None]
    if not sources:
        report.checks_skipped["broker"] = (
            "the query reads no Kafka topic (a gold query reads the bronze table as a Delta stream)"
        )
        return
    if not bootstrap:
        report.checks_skipped["broker"] = "no --bootstrap-servers or --bundle/--target given"
        return
    report.checks_run.append("broker")
    _check_broker(report, committed.batch_id, sources, bootstrap, extra)


def _check_broker(
    report: Report,
    batch_id: int,
    sources: list[dict[str, dict[str, int]]],
    bootstrap: str,
    extra: dict[str, str],
) -> None:
    from confluent_kafka import Consumer

    from streamops.errors import KafkaError
    from streamops.kafka.offsets import client_config, topic_partitions, watermarks

    consumer = Consumer(client_config(bootstrap, extra))
    rel = f"offsets/{batch_id}"
    try:
        for source in sources:
            for topic, parts in source.items():
                try:
                    present = set(topic_partitions(consumer, topic))
                except KafkaError as exc:
                    report.add(
                        TOPIC_MISSING,
                        rel,
                        str(exc),
                        "recreate the topic, or point the job at the right broker",
                    )
                    continue
                wanted = {int(p): off for p, off in parts.items()}
                gone = sorted(set(wanted) - present)
                if gone:
                    report.add(
                        TOPIC_MISSING,
                        rel,
                        f"topic '{topic}' has no partition(s) {gone} that the checkpoint reads",
                        "the topic was recreated with fewer partitions: reconstruct offsets "
                        "(`streamops checkpoint reconstruct`) and restart with --reset-from",
                    )
                marks = watermarks(consumer, topic, sorted(set(wanted) & present))
                for p, off in sorted(wanted.items()):
                    if p in marks:
                        _check_range(report, rel, topic, p, off, marks[p])
    except Exception as exc:
        report.checks_run.remove("broker")
        report.checks_skipped["broker"] = f"broker {bootstrap} not usable: {exc}"
    finally:
        consumer.close()


def _check_range(
    report: Report, rel: str, topic: str, p: int, off: int, marks: tuple[int, int]
) -> None:
    lo, hi = marks
    if off < lo:
        report.add(
            OFFSET_BEFORE_EARLIEST,
            rel,
            f"'{topic}' partition {p}: committed offset {off} is older than the earliest "
            f"available {lo} ({lo - off} records lost to retention)",
            "raise the topic's retention; to go on, accept the loss with failOnDataLoss=false or "
            "reconstruct offsets and restart with --reset-from",
        )
    elif off > hi:
        report.add(
            OFFSET_BEYOND_LATEST,
            rel,
            f"'{topic}' partition {p}: committed offset {off} is beyond the latest {hi}: the "
            "topic was probably deleted and recreated",
            "reconstruct offsets (`streamops checkpoint reconstruct`) into a new checkpoint and "
            "restart with --reset-from",
        )


def _check_delta_sources(
    report: Report,
    committed: OffsetsFile | None,
    tables: tuple[str, ...],
    so: dict[str, Any] | None,
) -> None:
    if committed is None:
        return
    sources = [d for s in committed.sources if (d := delta_offset(s)) is not None]
    if not sources:
        return
    if not tables:
        report.checks_skipped["delta-source"] = (
            "the source table is not known: give --bundle/--target (or source_tables)"
        )
        return
    report.checks_run.append("delta-source")
    rel = f"offsets/{committed.batch_id}"
    rebuild = (
        "restore the table, or rebuild the query's output from its source: move its sink table "
        "and checkpoint aside and start the job (it re-reads the source table from its start)"
    )
    for offset, uri in zip(sources, tables, strict=False):
        try:
            dt = open_delta(uri, login_from_fsspec(so))
            if dt is None:
                raise FileNotFoundError(f"no Delta table at {uri}")
            table_id, newest = str(dt.metadata().id), int(dt.version())
        except Exception as exc:
            report.checks_run.remove("delta-source")
            report.checks_skipped["delta-source"] = f"{uri} not readable: {exc}"
            return
        if table_id != offset.reservoir_id:
            report.add(
                SOURCE_TABLE_REPLACED,
                rel,
                f"the checkpoint reads Delta table {offset.reservoir_id} but {uri} is table "
                f"{table_id}: the source table was deleted and created again",
                rebuild,
            )
        # Caught up, a Delta source points at the version after the newest (index -1).
        elif offset.reservoir_version > newest + 1:
            report.add(
                SOURCE_VERSION_BEYOND_LATEST,
                rel,
                f"the checkpoint has read {uri} up to version {offset.reservoir_version} but the "
                f"table's newest version is {newest}: it was restored to an older version",
                rebuild,
            )


def _check_registry(report: Report, expected: str | None, note: str | None) -> None:
    if expected is None:
        report.checks_skipped["registry"] = note or "no --bundle/--target given"
        return
    report.checks_run.append("registry")
    if report.query_id is not None and report.query_id != expected:
        report.add(
            QUERY_ID_CHANGED,
            "metadata",
            f"query id {report.query_id} differs from {expected} recorded at the last "
            "deploy/start: the checkpoint was reset or replaced",
            f"if the reset was not intended, restore the backup holding query id {expected} "
            "(`streamops checkpoint restore`); if it was, restart the job with --reset-from so "
            "the reset is recorded",
        )
