"""Per-customer data keys (DEKs), their wrapped records, cache and durable journal.

Every customer's snapshot is encrypted under that customer's own 256-bit data key.
The data key is stored only wrapped by the keyring (a KEK), in two places:

- Redis, ``dek:{<customer id>}``, next to ``pref:{<customer id>}`` in the same hash
  slot, so one ``MGET`` reads both and one Lua script writes both atomically;
- the compacted Kafka topic ``prefsync.keys``, keyed ``<customer id>/<dek id hex>``,
  which survives a Redis loss and lets a rebuild restore the keys.

Erasing a customer replaces the data key and writes a tombstone for the old one, so
every copy sealed under it (snapshot topic records, backups, dead letters) becomes
unreadable: crypto-shredding.

Record layout (bytes)::

    format (1) | dek id (8) | epoch (8) | born generation (8, big-endian) | KEK envelope

``epoch`` is a hash of the customer's erasure floor: a snapshot whose floor differs
from its data key's epoch gets a new data key. ``born generation`` is the snapshot
generation the key was created for. Each stored write increments the generation and
is one encryption, so ``generation - born`` counts the key's encryptions.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgpack
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaPartition
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consumers.kafka import watermark_offsets
from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.domain.snapshot import Stamp
from prefsync.errors import DecryptError, StoreUnavailable

__all__ = [
    "DATA_KEY_PREFIX",
    "NO_EPOCH",
    "DataKey",
    "DataKeyCache",
    "KeyJournal",
    "data_key_key",
    "epoch_of",
    "journal_key",
    "new_data_key",
    "parse_data_key",
    "read_compacted",
    "record_dek_id",
    "rewrap_data_key",
]

log = structlog.get_logger()

DATA_KEY_PREFIX = "dek:"
RECORD_FORMAT = 1
DEK_ID_BYTES = 8
_BORN = struct.Struct(">Q")
RECORD_HEADER_BYTES = 1 + DEK_ID_BYTES + 8 + _BORN.size
NO_EPOCH = bytes(8)
_WRAP_LABEL = b"prefsync-dek"


def data_key_key(customer_id: str) -> str:
    """Return the Redis key of a customer's wrapped data key."""
    return f"{DATA_KEY_PREFIX}{{{customer_id}}}"


def journal_key(customer_id: str, dek_id: bytes) -> bytes:
    """Return the ``prefsync.keys`` message key of one data key."""
    return f"{customer_id}/{dek_id.hex()}".encode()


def epoch_of(erased: Stamp | None) -> bytes:
    """Return the epoch of an erasure floor: 8 bytes of BLAKE2b, zeros for none."""
    if erased is None:
        return NO_EPOCH
    packed = msgpack.packb(list(erased))
    return hashlib.blake2b(packed, digest_size=8).digest()


def record_dek_id(record: bytes) -> bytes:
    """Return the data key id in a wrapped record's header."""
    return record[1 : 1 + DEK_ID_BYTES]


@dataclass(slots=True, repr=False)
class DataKey:
    """An unwrapped data key, ready to encrypt. Its repr shows the id only."""

    dek_id: bytes
    epoch: bytes
    born_generation: int
    cipher: AESGCM
    record: bytes

    def __repr__(self) -> str:
        return f"DataKey(dek_id={self.dek_id.hex()}, material=<hidden>)"


def _wrap_context(header: bytes, customer_id: str) -> bytes:
    return _WRAP_LABEL + header + customer_id.encode()


def new_data_key(
    keyring: Keyring, customer_id: str, epoch: bytes, born_generation: int
) -> DataKey:
    """Create a random data key for ``customer_id`` and wrap it with the primary KEK.

    Raises:
        KeyUsageExceeded: the primary KEK reached its encryption limit.
    """
    material = os.urandom(32)
    dek_id = os.urandom(DEK_ID_BYTES)
    header = bytes([RECORD_FORMAT]) + dek_id + epoch + _BORN.pack(born_generation)
    wrapped = keyring.wrap(material, _wrap_context(header, customer_id))
    return DataKey(dek_id, epoch, born_generation, AESGCM(material), header + wrapped)


def parse_data_key(keyring: Keyring, customer_id: str, record: bytes) -> DataKey:
    """Unwrap a data key record of ``customer_id``.

    Raises:
        DecryptError: unknown format, a retired or unknown KEK, or a record that was
            altered or belongs to another customer.
    """
    if len(record) <= RECORD_HEADER_BYTES or record[0] != RECORD_FORMAT:
        raise DecryptError("unknown data key record format")
    header = record[:RECORD_HEADER_BYTES]
    material = keyring.unwrap(
        record[RECORD_HEADER_BYTES:], _wrap_context(header, customer_id)
    )
    (born,) = _BORN.unpack_from(header, 1 + DEK_ID_BYTES + 8)
    return DataKey(
        header[1 : 1 + DEK_ID_BYTES],
        header[1 + DEK_ID_BYTES : 1 + DEK_ID_BYTES + 8],
        born,
        AESGCM(material),
        record,
    )


def rewrap_data_key(keyring: Keyring, customer_id: str, record: bytes) -> bytes:
    """Return ``record`` rewrapped under the primary KEK, with the same header."""
    header = record[:RECORD_HEADER_BYTES]
    context = _wrap_context(header, customer_id)
    material = keyring.unwrap(record[RECORD_HEADER_BYTES:], context)
    return header + keyring.wrap(material, context)


class DataKeyCache:
    """Unwrapped data keys by customer id, least recently used evicted past a bound."""

    def __init__(self, max_entries: int):
        self.max_entries = max(1, max_entries)
        self._entries: OrderedDict[str, DataKey] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, customer_id: str) -> DataKey | None:
        """Return the cached key of ``customer_id``, marking it recently used."""
        entry = self._entries.get(customer_id)
        if entry is not None:
            self._entries.move_to_end(customer_id)
        return entry

    def put(self, customer_id: str, data_key: DataKey) -> None:
        """Cache ``data_key``, evicting the least recently used entry past the bound."""
        self._entries[customer_id] = data_key
        self._entries.move_to_end(customer_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, customer_id: str) -> None:
        """Forget the key of ``customer_id``."""
        self._entries.pop(customer_id, None)


class KeyJournal:
    """Durable data key records (``prefsync.keys``) and erasure audit records.

    Writes are acknowledged by every in-sync replica before :meth:`flush` returns.
    """

    def __init__(self, producer: Producer, keys_topic: str, erasures_topic: str):
        self._producer = producer
        self.keys_topic = keys_topic
        self.erasures_topic = erasures_topic
        self._failures: list[str] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyJournal:
        """Create a journal with an idempotent producer for ``settings``' Kafka."""
        producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
            }
        )
        return cls(producer, settings.topics.keys, settings.topics.erasures)

    def publish(self, customer_id: str, data_key_record: bytes) -> None:
        """Queue a data key record."""
        key = journal_key(customer_id, record_dek_id(data_key_record))
        self._produce(self.keys_topic, key, data_key_record)

    def tombstone(self, customer_id: str, dek_id: bytes) -> None:
        """Queue the deletion of a data key record (compaction removes it)."""
        self._produce(self.keys_topic, journal_key(customer_id, dek_id), None)

    def audit(self, record: dict[str, Any]) -> None:
        """Queue an erasure audit record; it must hold no personal data."""
        payload = json.dumps(record, sort_keys=True).encode()
        self._produce(self.erasures_topic, str(uuid.uuid4()).encode(), payload)

    def _produce(self, topic: str, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._on_delivery)
                return
            except BufferError:
                self._producer.poll(0.1)

    def _on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            self._failures.append(error.str())

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued record is acknowledged.

        Raises:
            StoreUnavailable: a record was not acknowledged; the caller must not
                write Redis values that depend on it.
        """
        remaining = self._producer.flush(timeout_s)
        if remaining or self._failures:
            failures, self._failures = self._failures, []
            raise StoreUnavailable(
                f"key journal write to {self.keys_topic} failed: {remaining} "
                f"unacknowledged, errors {failures[:3]}; check Kafka"
            )


def read_compacted(
    bootstrap: str, topic: str, timeout_s: float = 60.0
) -> dict[bytes, bytes]:
    """Read ``topic`` from the start to its current end: the newest value per key.

    A tombstone (null value) removes its key, as compaction would.

    Raises:
        StoreUnavailable: Kafka did not return the topic's offsets in time.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"prefsync-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    latest: dict[bytes, bytes] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        partitions = metadata.topics[topic].partitions
        ends: dict[int, int] = {}
        for partition in partitions:
            low, high = watermark_offsets(
                consumer, KafkaPartition(topic, partition), timeout_s
            )
            if high > low:
                ends[partition] = high
        consumer.assign(
            [KafkaPartition(topic, p, -2) for p in ends]  # -2: the beginning
        )
        _consume_until(consumer, ends, latest, time.monotonic() + timeout_s)
    except KafkaException as exc:
        raise StoreUnavailable(f"reading {topic} failed: {exc}") from exc
    finally:
        consumer.close()
    return latest


def _consume_until(
    consumer: Consumer,
    ends: dict[int, int],
    latest: dict[bytes, bytes],
    deadline: float,
) -> None:
    pending = dict(ends)
    while pending:
        if time.monotonic() > deadline:
            raise StoreUnavailable(
                f"timed out reading to the end of {len(pending)} partitions"
            )
        for message in consumer.consume(500, 0.5):
            if message.error() is not None:
                continue
            key = message.key() or b""
            value = message.value()
            if value is None:
                latest.pop(key, None)
            else:
                latest[key] = value
            if message.offset() + 1 >= pending.get(message.partition(), 0):
                pending.pop(message.partition(), None)
