"""The dead-letter topic: messages that cannot be applied, with why and where from.

Headers carry the origin (topic, partition, offset), the error class, a message that
contains no personal data, and the schema id when known.

The payload is the original bytes with card data masked (every Luhn-valid card number
and labelled CVV; for card errors every long digit run), then, when a sealer is
configured, encrypted:

- ``prefsync.payload.encryption: dek-v1``: under the data key of the customer named
  by the message key, so erasing that customer makes the payload unreadable. The
  header ``prefsync.payload.dek_id`` names the data key.
- ``kek-v1``: under the keyring, bound to the origin topic, partition and offset,
  when the message key is not a valid customer id or the data key is unavailable.
  Such payloads are not erasable per customer; the topic's retention removes them.
"""

from __future__ import annotations

import re
import time

import structlog
from confluent_kafka import KafkaError, Message, Producer

from prefsync.crypto import Keyring
from prefsync.domain.cards import redact_card_bytes
from prefsync.domain.events import CUSTOMER_ID_PATTERN
from prefsync.errors import (
    DecodeError,
    DecryptError,
    KeyUsageExceeded,
    PrefsyncError,
    StoreUnavailable,
)

__all__ = [
    "DLQ_PURPOSE",
    "DeadLetterProducer",
    "DeadLetterSealer",
    "open_dead_letter",
    "redact_digits",
]

log = structlog.get_logger()

DLQ_PURPOSE = b"dlq"
# Kafka's default max.message.bytes is 1 MiB. Compressed input can exceed it once
# decompressed, so longer payloads are cut to this size, leaving room for headers
# and encryption.
MAX_PAYLOAD_BYTES = 900_000
TRUNCATED_HEADER = "prefsync.payload.truncated_from_bytes"
ENCRYPTION_HEADER = "prefsync.payload.encryption"
DEK_ID_HEADER = "prefsync.payload.dek_id"
_KEK_LABEL = b"prefsync-dlq"

# A run of 13 or more digits, spaces or dashes, as a card number would appear inside an
# Avro string. Masking digit by digit keeps the Avro length prefixes valid.
_DIGIT_RUN = re.compile(rb"[0-9][0-9 -]{11,}[0-9]")


def redact_digits(payload: bytes) -> bytes:
    """Return ``payload`` with each digit of every long digit run replaced by ``*``."""
    return _DIGIT_RUN.sub(lambda m: re.sub(rb"[0-9]", b"*", m.group()), payload)


def _origin_context(topic: str, partition: int, offset: int) -> bytes:
    return _KEK_LABEL + f"{topic}/{partition}/{offset}".encode()


class DeadLetterSealer:
    """Encrypts dead-letter payloads under the customer's data key, else the keyring."""

    def __init__(self, store: object, keyring: Keyring):
        # ``store`` is a prefsync.store.SnapshotStore; typed loosely to keep this
        # module free of the Redis import.
        self.store = store
        self.keyring = keyring

    def seal(self, message: Message, payload: bytes) -> tuple[bytes, list]:
        """Return the sealed payload and the headers that describe its encryption."""
        key = message.key()
        customer_id = key.decode(errors="replace") if key else ""
        if CUSTOMER_ID_PATTERN.fullmatch(customer_id):
            try:
                dek_id, sealed = self.store.seal_payload(  # type: ignore[attr-defined]
                    customer_id, payload, DLQ_PURPOSE
                )
                return sealed, [
                    (ENCRYPTION_HEADER, b"dek-v1"),
                    (DEK_ID_HEADER, dek_id.hex().encode()),
                ]
            except (StoreUnavailable, DecryptError, KeyUsageExceeded) as exc:
                log.warning(
                    "dead_letter.data_key_unavailable",
                    topic=message.topic(),
                    partition=message.partition(),
                    offset=message.offset(),
                    error=str(exc),
                )
        context = _origin_context(
            message.topic(), message.partition(), message.offset()
        )
        return self.keyring.wrap(payload, context), [(ENCRYPTION_HEADER, b"kek-v1")]


def open_dead_letter(message: Message, store: object, keyring: Keyring) -> bytes:
    """Return the (redacted) original payload of a dead letter.

    Raises:
        DecryptError: the customer was erased (the data key is shredded), the keyring
            key is retired, or the payload was altered.
    """
    headers = dict(message.headers() or [])
    payload = message.value() or b""
    scheme = headers.get(ENCRYPTION_HEADER)
    if scheme is None:
        return payload
    if scheme == b"kek-v1":
        origin = {
            name: headers[f"prefsync.origin.{name}"].decode()
            for name in ("topic", "partition", "offset")
        }
        context = _origin_context(
            origin["topic"], int(origin["partition"]), int(origin["offset"])
        )
        return keyring.unwrap(payload, context)
    if scheme == b"dek-v1":
        customer_id = (message.key() or b"").decode(errors="replace")
        dek_id = bytes.fromhex(headers[DEK_ID_HEADER].decode())
        return store.open_payload(  # type: ignore[attr-defined, no-any-return]
            customer_id, dek_id, payload, DLQ_PURPOSE
        )
    raise DecryptError(f"unknown dead-letter encryption {scheme!r}")


class DeadLetterProducer:
    """Send rejected messages to the dead-letter topic and confirm delivery."""

    def __init__(
        self, producer: Producer, topic: str, sealer: DeadLetterSealer | None = None
    ):
        self._producer = producer
        self.topic = topic
        self.sealer = sealer
        self._failures: list[str] = []
        self.sent = 0

    def send(self, message: Message, error: DecodeError | PrefsyncError) -> None:
        """Queue ``message`` for the dead-letter topic with ``error`` in its headers."""
        error_class = getattr(error, "error_class", type(error).__name__)
        schema_id = getattr(error, "schema_id", None)
        original = message.value() or b""
        payload = redact_card_bytes(original)
        if error_class.startswith("card_"):
            payload = redact_digits(payload)
        redacted = payload != original
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
        if len(payload) > MAX_PAYLOAD_BYTES:
            # Replay skips a cut payload too: it no longer decodes.
            headers.append((TRUNCATED_HEADER, str(len(payload)).encode()))
            payload = payload[:MAX_PAYLOAD_BYTES]
        if self.sealer is not None and payload:
            payload, encryption_headers = self.sealer.seal(message, payload)
            headers.extend(encryption_headers)
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
