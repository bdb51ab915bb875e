"""State metrics per stateful operator, beside the totals the alert rules use."""

from __future__ import annotations

from streamops.monitoring import metrics as m
from streamops.pipeline.progress import parse_progress

PROGRESS = {
    "name": "q", "batchId": 3, "timestamp": "2026-11-24T06:00:00.000Z", "numInputRows": 10,
    "durationMs": {"triggerExecution": 500},
    "stateOperators": [
        {"operatorName": "stateStoreSave", "numRowsTotal": 40, "memoryUsedBytes": 4000,
         "numRowsDroppedByWatermark": 1},
        {"operatorName": "symmetricHashJoin", "numRowsTotal": 2, "memoryUsedBytes": 200},
    ],
    "sources": [],
}  # fmt: skip


def test_each_operator_has_its_own_series_and_the_totals_stay_whole() -> None:
    bp = parse_progress(PROGRESS)
    assert bp.operators == (("0:stateStoreSave", 40, 4000), ("1:symmetricHashJoin", 2, 200))
    points = m.batch_points(bp, job="j", target="local", trigger_seconds=None)
    by = {(p["name"], p.get("operator")): p["value"] for p in points}
    assert by[(m.STATE_ROWS, "all")] == 42 and by[(m.STATE_MEMORY, "all")] == 4200
    assert by[(m.STATE_OP_ROWS, "0:stateStoreSave")] == 40
    assert by[(m.STATE_OP_MEMORY, "1:symmetricHashJoin")] == 200
    # The totals' series hold only the totals (rules on state size read these).
    assert [p["operator"] for p in points if p["name"] == m.STATE_MEMORY] == ["all"]
