"""The I/O every service shares: Kafka, PostgreSQL, Redis, locks, HTTP, logs, metrics."""
