"""Pure domain logic: events, the merge and the preference view. No Kafka, no Redis."""
