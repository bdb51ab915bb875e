"""Kafka helpers shared by the Spark source, the sample producer and the checks."""
