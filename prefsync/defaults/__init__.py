"""Admin defaults: layers, their precedence, and their distribution through Kafka."""
