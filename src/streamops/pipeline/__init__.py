"""The data path, the same on every target, in two queries per job: `bronze` (Kafka -> parse and
reason -> bronze and quarantine tables) and `gold` (bronze as a Delta stream -> steps -> MERGE or
append), each started with its sink, checkpoint and trigger. Executors write; nothing is
collected to the driver."""
