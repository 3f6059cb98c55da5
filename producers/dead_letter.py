"""The dead-letter topic: messages that cannot be applied, with why and where from.

Headers carry the origin (topic, partition, offset), the error class, a message that
contains no personal data, and the schema id when known. The payload is the original
bytes, except that card numbers are masked first when the error was a card number.
"""

from __future__ import annotations

import re
import time

import structlog
from confluent_kafka import KafkaError, Message, Producer

from prefsync.errors import DecodeError, PrefsyncError

__all__ = ["DeadLetterProducer", "redact_digits"]

log = structlog.get_logger()

# A run of 13 or more digits, spaces or dashes, as a card number would appear inside an
# Avro string. Masking digit by digit keeps the Avro length prefixes valid.
_DIGIT_RUN = re.compile(rb"[0-9][0-9 -]{11,}[0-9]")


def redact_digits(payload: bytes) -> bytes:
    """Return ``payload`` with each digit of every long digit run replaced by ``*``."""
    return _DIGIT_RUN.sub(lambda m: re.sub(rb"[0-9]", b"*", m.group()), payload)


class DeadLetterProducer:
    """Send rejected messages to the dead-letter topic and confirm delivery."""

    def __init__(self, producer: Producer, topic: str):
        self._producer = producer
        self.topic = topic
        self._failures: list[str] = []
        self.sent = 0

    def send(self, message: Message, error: DecodeError | PrefsyncError) -> None:
        """Queue ``message`` for the dead-letter topic with ``error`` in its headers."""
        error_class = getattr(error, "error_class", type(error).__name__)
        schema_id = getattr(error, "schema_id", None)
        payload = message.value() or b""
        redacted = error_class.startswith("card_number")
        if redacted:
            payload = redact_digits(payload)
        headers = [
            ("prefsync.error.class", error_class.encode()),
            ("prefsync.error.message", str(error).encode()),
            ("prefsync.origin.topic", message.topic().encode()),
            ("prefsync.origin.partition", str(message.partition()).encode()),
            ("prefsync.origin.offset", str(message.offset()).encode()),
            ("prefsync.dead_lettered_at_ms", str(int(time.time() * 1000)).encode()),
        ]
        if schema_id is not None:
            headers.append(("prefsync.schema_id", str(schema_id).encode()))
        if redacted:
            # Replaying a masked copy would apply masked values: replay skips it.
            headers.append(("prefsync.payload.redacted", b"1"))
        log.warning(
            "message.dead_lettered",
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            error_class=error_class,
            schema_id=schema_id,
        )
        self._produce(message.key(), payload, headers)
        self.sent += 1

    def _produce(self, key: bytes | None, payload: bytes, headers: list) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    payload,
                    key,
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.1)

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._failures.append(error.str())

    def wait(self, timeout_s: float) -> tuple[int, list[str]]:
        """Wait up to ``timeout_s`` for the producer's queue to drain.

        Returns:
            The messages still unacknowledged and the delivery errors seen since the
            last call; the caller sends the failed messages again.
        """
        remaining = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        return remaining, failures

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued message is acknowledged.

        Raises:
            PrefsyncError: a message was not acknowledged; the caller must not commit
                the offsets of the messages it dead-lettered.
        """
        remaining = self._producer.flush(timeout_s)
        if remaining or self._failures:
            failures, self._failures = self._failures, []
            raise PrefsyncError(
                f"dead-letter delivery failed: {remaining} unacknowledged, "
                f"errors {failures[:3]}"
            )
