"""Kafka consumer construction for prefsync's worker and tools."""

from consumers.kafka import consumer_config, create_consumer, next_offsets

__all__ = ["consumer_config", "create_consumer", "next_offsets"]
