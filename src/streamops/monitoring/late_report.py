"""Which events did the aggregate miss? Bronze holds every good event; gold only the on-time ones.

Both tables are read with delta-rs (no JVM), whichever engine wrote them.

Per window and group: events in bronze minus events counted in gold. A positive difference is
events that arrived after the watermark closed their window (dropped from gold, kept in bronze).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamops.errors import UsageError
from streamops.pipeline.driver_delta import open_delta

if TYPE_CHECKING:
    import pandas as pd

    from streamops.bundle import Bundle


@dataclass(frozen=True)
class MissedWindow:
    window_start: str
    window_end: str
    group: dict[str, Any]
    bronze_events: int
    gold_events: int

    @property
    def missed(self) -> int:
        return self.bronze_events - self.gold_events


def _read(bundle: Bundle, uri: str, columns: list[str]) -> pd.DataFrame | None:
    """`columns` of the Delta table at `uri` (delta-rs: no JVM; on the job cluster delta-spark),
    or None when there is none."""
    dt = open_delta(uri, bundle.runtime.storage(uri))
    return None if dt is None else dt.to_pandas(columns=columns)


def late_report(bundle: Bundle, job_name: str) -> list[MissedWindow]:
    """Windows where bronze holds more events than the gold aggregate counted, oldest first."""
    import pandas as pd

    job = bundle.job(job_name)
    agg = job.aggregate
    if agg is None:
        raise UsageError(f"job '{job_name}' has no window_aggregate step; nothing to compare")
    count = next((m.name for m in agg.metrics if m.fn == "count"), None)
    if count is None:
        raise UsageError(
            f"job '{job_name}' has no count metric, so gold cannot say how many events it "
            "counted. Fix: add `- {name: events, fn: count}` to its metrics"
        )
    keys = list(agg.group_by)
    bronze = _read(bundle, bundle.bronze_location(job), [job.event_time, *keys])
    if bronze is None or bronze.empty:
        return []
    gold_cols = ["window_start", "window_end", *keys, count]
    gold = _read(bundle, bundle.table_location(job.sink), gold_cols)
    if gold is None:
        gold = pd.DataFrame(columns=gold_cols)
    # Tumbling windows start at multiples of the window length from the epoch, as Spark's do.
    # (For sliding windows this compares each event with the window that starts at its floor.)
    step = f"{int(agg.window.seconds)}s"
    ts = pd.to_datetime(bronze[job.event_time], utc=True)
    bronze = bronze.assign(window_start=ts.dt.floor(step))
    b = bronze.groupby(["window_start", *keys], dropna=False).size().rename("bronze_events")
    gold = gold.assign(window_start=pd.to_datetime(gold["window_start"], utc=True))
    g = gold.groupby(["window_start", *keys], dropna=False)[count].sum().rename("gold_events")
    both = pd.concat([b, g], axis=1).fillna(0).reset_index()
    both = both[both["bronze_events"] > both["gold_events"]].sort_values(["window_start", *keys])
    width = pd.Timedelta(seconds=agg.window.seconds)
    return [
        MissedWindow(
            window_start=row.window_start.isoformat(),
            window_end=(row.window_start + width).isoformat(),
            group={k: getattr(row, k) for k in keys},
            bronze_events=int(row.bronze_events),
            gold_events=int(row.gold_events),
        )
        for row in both.itertuples(index=False)
    ]
