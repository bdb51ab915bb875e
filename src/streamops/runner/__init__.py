"""Run one job of the bundle: guard the checkpoints, start its queries, watch them, report."""
