"""streamops: Kafka -> Spark Structured Streaming -> Delta Lake, operated from Airflow."""

__version__ = "0.1.0"
