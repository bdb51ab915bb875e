"""Paging a human. Every page and resolve is one JSON line in `<state_dir>/pages.log` (the local
target's pager, and an audit trail elsewhere); `monitoring.paging` in the target also sends it to
PagerDuty (Events API v2) or a Teams/Slack webhook.

The signature is what every backend takes (PagerDuty Events API v2 fields: summary, severity,
dedup_key, custom details), so callers do not change when a target pages elsewhere. Pages with the
same dedup_key are one incident: PagerDuty appends a repeated trigger to the open incident, and a
resolve with that key closes it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamops.errors import StreamopsError, UsageError

if TYPE_CHECKING:
    from streamops.bundle import Bundle

SEVERITIES = ("critical", "error", "warning", "info")
TIMEOUT_S = 10.0


class PagingError(StreamopsError):
    """The pager refused or could not be reached; the page is in the local pages log."""


def pages_log(bundle: Bundle) -> Path:
    """Where the local target's pages go."""
    return bundle.state_dir / "pages.log"


def _log(bundle: Bundle, record: dict[str, Any]) -> None:
    path = pages_log(bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")


def pagerduty_event(
    routing_key: str,
    action: str,
    dedup_key: str,
    *,
    summary: str = "",
    severity: str = "error",
    source: str = "streamops",
    component: str | None = None,
    group: str | None = None,
    event_class: str | None = None,
    details: dict[str, Any] | None = None,
    runbook_url: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The Events API v2 body (POST /v2/enqueue) for a trigger or a resolve."""
    if action == "resolve":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    payload: dict[str, Any] = {"summary": summary[:1024], "source": source, "severity": severity}
    if timestamp:
        payload["timestamp"] = timestamp
    for k, v in (("component", component), ("group", group), ("class", event_class)):
        if v:
            payload[k] = v
    payload["custom_details"] = details or {}
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key,
        "payload": payload,
    }
    if runbook_url:
        body["links"] = [{"href": runbook_url, "text": "Runbook"}]
    return body


def _post(url: str, body: dict[str, Any], what: str) -> None:
    import requests

    try:
        resp = requests.post(url, json=body, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise PagingError(f"{what}: cannot reach {url}: {type(exc).__name__}") from None
    if resp.status_code >= 300:
        raise PagingError(f"{what}: {url} answered {resp.status_code}: {resp.text[:300]}")


def _send(
    bundle: Bundle,
    action: str,
    *,
    summary: str,
    severity: str,
    dedup_key: str,
    details: dict[str, Any],
    component: str | None = None,
    event_class: str | None = None,
) -> None:
    mon = bundle.target.monitoring
    if mon.paging == "pagerduty":
        assert mon.pagerduty_routing_key is not None  # validated in the bundle
        body = pagerduty_event(
            mon.pagerduty_routing_key.resolve(),
            action,
            dedup_key,
            summary=summary,
            severity=severity,
            source=f"streamops/{bundle.target_name}",
            component=component,
            group=bundle.spec.project,
            event_class=event_class,
            details=details,
            runbook_url=bundle.spec.alerts.runbook_url,
            timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        _post(mon.pagerduty_url, body, f"PagerDuty {action}")
    elif mon.paging == "webhook":
        assert mon.webhook_url is not None
        verb = "RESOLVED" if action == "resolve" else severity.upper()
        text = f"[{verb}] {summary}"
        if bundle.spec.alerts.runbook_url and action != "resolve":
            text += f"\nRunbook: {bundle.spec.alerts.runbook_url}"
        _post(
            mon.webhook_url.resolve(),
            {"text": text, "dedup_key": dedup_key, "action": action, "details": details},
            "webhook",
        )


def page(
    bundle: Bundle,
    *,
    summary: str,
    severity: str,
    dedup_key: str,
    details: dict[str, Any],
    component: str | None = None,
    event_class: str | None = None,
) -> None:
    """Page a human about `summary`; pages with the same dedup_key are one incident."""
    if severity not in SEVERITIES:
        raise UsageError(f"page severity '{severity}' is not one of {', '.join(SEVERITIES)}")
    _log(
        bundle,
        {
            "ts": datetime.now(UTC).isoformat(),
            "target": bundle.target_name,
            "summary": summary,
            "severity": severity,
            "dedup_key": dedup_key,
            "details": details,
        },
    )
    _send(
        bundle,
        "trigger",
        summary=summary,
        severity=severity,
        dedup_key=dedup_key,
        details=details,
        component=component,
        event_class=event_class,
    )


def resolve(
    bundle: Bundle, *, dedup_key: str, summary: str = "", details: dict[str, Any] | None = None
) -> None:
    """Close the incident opened with `dedup_key`."""
    _log(
        bundle,
        {
            "ts": datetime.now(UTC).isoformat(),
            "target": bundle.target_name,
            "action": "resolve",
            "summary": summary,
            "dedup_key": dedup_key,
            "details": details or {},
        },
    )
    _send(
        bundle,
        "resolve",
        summary=summary,
        severity="info",
        dedup_key=dedup_key,
        details=details or {},
    )
