"""`streamops report`: one job's exported metrics as a PNG (three panels) and a small HTML page.

Reads the JSON-lines metrics (`<state_dir>/metrics/<query>.jsonl`, both of the job's queries) and
writes `<state_dir>/reports/<job>/report.png` and `report.html`:

1. lag per partition over time (`streamops_kafka_lag_records`, one line per query/topic/partition)
2. batch duration against the trigger interval (`streamops_batch_duration_ms`; the dashed line is
   the processingTime trigger, absent for availableNow jobs)
3. state-store size over time (`streamops_state_memory_bytes`, operator `all`)

The HTML page is self-contained: the PNG embedded as base64 and a table of each series' last value.
Rendering uses matplotlib's Agg canvas directly (no pyplot, no display, no global state).
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamops.errors import StreamopsError
from streamops.monitoring import metrics as m
from streamops.monitoring.alerts.rules import parse_ts
from streamops.monitoring.exporters import metrics_dir, read_points

if TYPE_CHECKING:
    from streamops.bundle import Bundle

Points = list[dict[str, Any]]


@dataclass(frozen=True)
class Report:
    job: str
    png: Path
    html: Path
    points: int


def reports_dir(cache_dir: Path, job: str) -> Path:
    return cache_dir / "reports" / job


def job_points(bundle: Bundle, job_name: str) -> Points:
    """The job's points from the exported JSON lines (its bronze and gold queries)."""
    job = bundle.job(job_name)
    queries = {job.query_name, job.bronze_query_name}
    return [
        p for p in read_points(metrics_dir(bundle.state_dir), queries) if p.get("job") == job_name
    ]


def _series(points: Points, name: str, key: Any) -> dict[str, list[tuple[datetime, float]]]:
    out: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for p in points:
        if p["name"] != name:
            continue
        label = key(p)
        if label is None:
            continue
        out[label].append((parse_ts(p["ts"]), float(p["value"])))
    return {k: sorted(v) for k, v in sorted(out.items())}


def _lag_label(p: dict[str, Any]) -> str:
    return f"{p['query']} {p.get('topic', '?')}[{p.get('partition', '?')}]"


def _state_label(p: dict[str, Any]) -> str | None:
    return str(p["query"]) if p.get("operator", "all") == "all" else None


def render_png(points: Points, *, title: str, trigger_seconds: float | None) -> bytes:
    """The three panels as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 10), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_lag, ax_dur, ax_state = fig.subplots(3, 1, sharex=True)
    fig.suptitle(title)

    for label, pts in _series(points, m.LAG, _lag_label).items():
        ax_lag.plot([t for t, _ in pts], [v for _, v in pts], marker=".", label=label)
    ax_lag.set_title("Kafka lag per partition (records behind after each batch)")
    ax_lag.set_ylabel("records")

    for label, pts in _series(points, m.BATCH_DURATION, lambda p: str(p["query"])).items():
        ax_dur.plot([t for t, _ in pts], [v / 1000.0 for _, v in pts], marker=".", label=label)
    if trigger_seconds:
        ax_dur.axhline(
            trigger_seconds,
            color="red",
            linestyle="--",
            label=f"trigger interval ({trigger_seconds:g} s)",
        )
    ax_dur.set_title("Batch duration against the trigger interval")
    ax_dur.set_ylabel("seconds")

    for label, pts in _series(points, m.STATE_MEMORY, _state_label).items():
        ax_state.plot([t for t, _ in pts], [v / 1e6 for _, v in pts], marker=".", label=label)
    ax_state.set_title("State store size (memory, all operators)")
    ax_state.set_ylabel("MB")

    locator = AutoDateLocator()
    ax_state.xaxis.set_major_locator(locator)
    ax_state.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax_state.set_xlabel("batch time (UTC)")
    for ax in (ax_lag, ax_dur, ax_state):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="upper right")
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def last_values(points: Points) -> list[dict[str, Any]]:
    """The latest point of each series (name + query + dimensions), in metric order."""
    last: dict[tuple[Any, ...], dict[str, Any]] = {}
    for p in points:
        k = (p["name"], p["query"], p.get("topic"), p.get("partition"), p.get("operator"))
        if k not in last or (parse_ts(p["ts"]), p["batch_id"]) >= (
            parse_ts(last[k]["ts"]),
            last[k]["batch_id"],
        ):
            last[k] = p
    order = {name: i for i, name in enumerate(m.METRICS)}
    return sorted(
        last.values(),
        key=lambda p: (
            order.get(p["name"], 99),
            p["query"],
            str(p.get("topic", "")),
            int(p.get("partition", -1)),
            str(p.get("operator", "")),
        ),
    )


def render_html(job: str, target: str, png: bytes, points: Points, generated: datetime) -> str:
    e = html.escape
    rows = []
    for p in last_values(points):
        dims = " ".join(f"{d}={p[d]}" for d in ("topic", "partition", "operator") if d in p)
        v = p["value"]
        value = f"{v:g}" if isinstance(v, (int, float)) else str(v)
        rows.append(
            f"<tr><td>{e(str(p['name']))}</td><td>{e(str(p['query']))}</td><td>{e(dims)}</td>"
            f"<td class=n>{e(value)}</td>"
            f"<td>{e(str(p['unit']))}</td><td class=n>{e(str(p['batch_id']))}</td>"
            f"<td>{e(str(p['ts']))}</td></tr>"
        )
    img = base64.b64encode(png).decode("ascii")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>streamops report: {e(job)} ({e(target)})</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>{e(job)} <small>(target {e(target)})</small></h1>
<p>Generated {e(generated.isoformat(timespec="seconds"))} from {len(points)} metric points.</p>
<img alt="lag, batch duration and state size of {e(job)}" src="data:image/png;base64,{img}">
<h2>Last values</h2>
<table>
<tr><th>metric</th><th>query</th><th>dimensions</th><th>value</th><th>unit</th><th>batch</th><th>time</th></tr>
{chr(10).join(rows)}
</table>
</body></html>
"""


def render_report(
    bundle: Bundle,
    job_name: str,
    *,
    points: Points | None = None,
    now: datetime | None = None,
) -> Report:
    """Write the job's report under `<state_dir>/reports/<job>/`; raises when it has no metrics."""
    job = bundle.job(job_name)
    pts = job_points(bundle, job_name) if points is None else points
    if not pts:
        raise StreamopsError(
            f"no metrics for job '{job_name}' under {metrics_dir(bundle.state_dir)}; run the job first"
        )
    trigger = job.trigger.processing_time.seconds if job.trigger.processing_time else None
    png = render_png(pts, title=f"{job_name} ({bundle.target_name})", trigger_seconds=trigger)
    out = reports_dir(bundle.state_dir, job_name)
    out.mkdir(parents=True, exist_ok=True)
    png_path, html_path = out / "report.png", out / "report.html"
    png_path.write_bytes(png)
    page = render_html(job_name, bundle.target_name, png, pts, now or datetime.now(UTC))
    html_path.write_text(page, encoding="utf-8")
    return Report(job_name, png_path, html_path, len(pts))
