"""Spark checkpoints: read them, check them, back them up, rebuild offsets from the sink."""
