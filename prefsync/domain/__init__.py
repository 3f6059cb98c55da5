"""Pure domain logic: events, the snapshot merge and the preference view. No Kafka, no Redis."""
