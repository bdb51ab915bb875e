"""The data path, the same on every target: Spark session, Kafka read, parse/quarantine,
watermark, aggregate, Delta writers (executors write; nothing is collected to the driver)."""
