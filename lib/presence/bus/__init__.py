"""The Kafka bus's vocabulary: typed versioned events, topic names, record isolation."""
