"""Spark side of streamops: session, Kafka source, Delta sinks, pipelines, progress."""
