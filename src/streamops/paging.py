"""Paging a human. Locally: one JSON line per page in `<cache_dir>/pages.log`.

The signature is what every backend takes (PagerDuty Events API v2 fields: summary, severity,
dedup_key, custom details), so callers do not change when a target pages elsewhere.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamops.errors import UsageError

if TYPE_CHECKING:
    from streamops.bundle import Bundle

SEVERITIES = ("critical", "error", "warning", "info")


def pages_log(bundle: Bundle) -> Path:
    """Where the local target's pages go."""
    return bundle.cache_dir / "pages.log"


def page(
    bundle: Bundle, *, summary: str, severity: str, dedup_key: str, details: dict[str, Any]
) -> None:
    """Page a human about `summary`; pages with the same dedup_key are one incident."""
    if severity not in SEVERITIES:
        raise UsageError(f"page severity '{severity}' is not one of {', '.join(SEVERITIES)}")
    record = {
        "ts": datetime.now(UTC).isoformat(),
        "target": bundle.target_name,
        "summary": summary,
        "severity": severity,
        "dedup_key": dedup_key,
        "details": details,
    }
    path = pages_log(bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
