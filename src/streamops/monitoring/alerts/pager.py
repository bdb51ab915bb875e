"""An alert finding as a page: what the pager is told when a rule breaches and when it recovers.

Here rather than in `monitoring.paging`, which pages a human about anything (checkpoints,
compaction) and so knows nothing of alert findings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamops.monitoring.alerts.rules import Finding
from streamops.monitoring.paging import page, resolve

if TYPE_CHECKING:
    from streamops.bundle import Bundle


class Pager:
    """Pages and resolves alert findings for one bundle (what OpenAlerts.sync calls)."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle

    def details(self, f: Finding) -> dict[str, Any]:
        return {
            "rule": f.rule,
            "job": f.job,
            "query": f.query,
            "value": f.value,
            "threshold": f.threshold,
            "target": self.bundle.target_name,
            **f.dims,
            **f.details,
            "runbook": self.bundle.spec.alerts.runbook_url,
        }

    def trigger(self, f: Finding, key: str) -> None:
        page(
            self.bundle,
            summary=f.summary,
            severity=f.severity,
            dedup_key=key,
            details=self.details(f),
            component=f.job,
            event_class=f.rule,
        )

    def resolve(self, f: Finding, key: str) -> None:
        resolve(
            self.bundle, dedup_key=key, summary=f"recovered: {f.summary}", details=self.details(f)
        )
