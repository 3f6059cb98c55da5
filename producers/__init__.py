"""Kafka producers: the CRM simulator and the dead-letter producer."""
