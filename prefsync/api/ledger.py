"""Transaction records in Redis: idempotent checkout steps and pending events.

One hash per transaction, ``txn:{<customer id>}:<transaction id>``. The braces are a
Redis Cluster hash tag, so the record lives in the customer's slot. Fields:

``state``
    ``applied``, ``confirmed`` or ``reversed``.
``revision``, ``fingerprint``
    The basket revision and the SHA-256 of the newest apply request. The same request
    again is a retry and returns the stored result; a different basket before
    confirmation is the next revision.
``apply``, ``confirm``, ``reverse``
    The stored result of each step, encrypted for the customer with the snapshot
    keyring, because results contain allergy and payment details.
``confirm_fingerprint``
    The SHA-256 of the confirm request, to tell a retry from a different request.
``pending:<STEP>:<revision>``
    The encoded applied-preference event of a step until Kafka acknowledged it.

A step is recorded with its pending event in one Lua script, which checks the state
and revision it expects, so two terminals racing on one transaction cannot both
record it. The key of each record with a pending event is also in the sorted set
``txn-pending`` (score: when recorded), which the republisher walks. Records expire
after :data:`RECORD_TTL_S` (90 days, a common return window).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.cluster import RedisCluster

from prefsync.errors import StoreUnavailable

__all__ = [
    "PENDING_INDEX",
    "RECORD_TTL_S",
    "Ledger",
    "TransactionRecord",
    "pending_field",
    "record_key",
]

RECORD_TTL_S = 90 * 86_400
PENDING_INDEX = "txn-pending"
PENDING_PREFIX = "pending:"

# KEYS[1] = record key. ARGV[1] = expected state ("" when the record must be absent),
# ARGV[2] = expected revision ("" for any), ARGV[3] = TTL in ms, ARGV[4..] = field,
# value pairs. Returns 1 when written, 0 when the state or revision differs.
_RECORD_STEP = """
local state = redis.call('HGET', KEYS[1], 'state') or ''
if state ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'revision') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] = record key. ARGV[1] = pending field. Returns the pending fields left.
_CLEAR_PENDING = """
redis.call('HDEL', KEYS[1], ARGV[1])
local left = 0
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 8) == 'pending:' then left = left + 1 end
end
return left
"""


def record_key(customer_id: str, transaction_id: str) -> str:
    """Return the Redis key of a transaction record."""
    return f"txn:{{{customer_id}}}:{transaction_id}"


def pending_field(step: str, revision: int) -> str:
    """Return the hash field name of a step's unacknowledged event."""
    return f"{PENDING_PREFIX}{step}:{revision}"


@dataclass(slots=True)
class TransactionRecord:
    """A transaction record as read. ``state`` is "" when there is none."""

    state: str = ""
    revision: int = 0
    fingerprint: str = ""
    confirm_fingerprint: str = ""
    results: dict[str, bytes] = field(default_factory=dict)
    pending: dict[str, bytes] = field(default_factory=dict)


class Ledger:
    """Read and record checkout steps."""

    def __init__(self, client: redis.Redis | RedisCluster):
        self.client = client
        self._record_step = client.register_script(_RECORD_STEP)
        self._clear_pending = client.register_script(_CLEAR_PENDING)

    def load(self, key: str) -> TransactionRecord:
        """Return the record at ``key``, empty when there is none.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        try:
            raw: Mapping[bytes, bytes] = self.client.hgetall(key)  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis read of a transaction record failed: {type(exc).__name__}"
            ) from exc
        record = TransactionRecord()
        for name_bytes, value in raw.items():
            name = name_bytes.decode()
            if name == "state":
                record.state = value.decode()
            elif name == "revision":
                record.revision = int(value)
            elif name == "fingerprint":
                record.fingerprint = value.decode()
            elif name == "confirm_fingerprint":
                record.confirm_fingerprint = value.decode()
            elif name.startswith(PENDING_PREFIX):
                record.pending[name] = value
            else:
                record.results[name] = value
        return record

    def record(
        self,
        key: str,
        *,
        expected_state: str,
        expected_revision: int | None,
        values: Mapping[str, Any],
        now_ms: int,
    ) -> bool:
        """Write ``values`` if the record is still in the expected state and revision.

        Every field named ``pending:*`` also puts ``key`` in the pending index first,
        so a crash right after the write leaves the event findable.

        Returns:
            False when another request changed the record first.

        Raises:
            StoreUnavailable: Redis could not be reached; the step may or may not be
                recorded, and a retry of the same request resolves it.
        """
        args: list[Any] = [
            expected_state,
            "" if expected_revision is None else str(expected_revision),
            RECORD_TTL_S * 1000,
        ]
        for name, value in values.items():
            args.extend((name, value))
        try:
            if any(name.startswith(PENDING_PREFIX) for name in values):
                self.client.zadd(PENDING_INDEX, {key: now_ms})
            return bool(self._record_step(keys=[key], args=args))
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis write of a transaction record failed: {type(exc).__name__}"
            ) from exc

    def clear_pending(self, key: str, pending: str) -> None:
        """Drop an acknowledged event, and the key from the index when none is left.

        Raises:
            StoreUnavailable: Redis could not be reached; the event stays pending and
                may be published again, under the same event id.
        """
        try:
            left = self._clear_pending(keys=[key], args=[pending])
            if not left:
                self.client.zrem(PENDING_INDEX, key)
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis update of a transaction record failed: {type(exc).__name__}"
            ) from exc

    def pending_keys(self, older_than_ms: int, limit: int = 100) -> list[str]:
        """Return keys whose events have been pending since before ``older_than_ms``."""
        try:
            keys = self.client.zrangebyscore(
                PENDING_INDEX, "-inf", older_than_ms, start=0, num=limit
            )
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis read of the pending index failed: {type(exc).__name__}"
            ) from exc
        return [key.decode() for key in keys]  # type: ignore[union-attr]

    def forget(self, key: str) -> None:
        """Remove ``key`` from the pending index (the record expired or has none)."""
        try:
            self.client.zrem(PENDING_INDEX, key)
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis update of the pending index failed: {type(exc).__name__}"
            ) from exc
