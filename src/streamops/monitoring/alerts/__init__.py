"""Alert rules, their evaluation (local JSON lines or Azure Monitor), open-alert state, pages, KQL."""
