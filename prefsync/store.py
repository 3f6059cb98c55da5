"""Encrypted snapshots in Redis: batched reads and conditional (check-and-set) writes.

A stored value is ``0x01 | generation (8 bytes, big-endian) | envelope``. The
generation counts writes of that key. A write succeeds only if the stored generation
is still the one the writer read, checked by a Lua script, so two writers (two
workers during a rebalance, or a worker and a rebuild) never lose each other's
changes: the loser re-reads, re-merges and tries again.

Keys are ``pref:{<customer id>}``. The braces are a Redis Cluster hash tag, so every
key prefsync keeps for one customer lands in the same slot.

Next to the snapshots, the worker keeps one offset watermark per consumer group and
input partition (``prefsync:watermark:<group>:<topic>:<partition>``): the offset up to
which every event of that partition is in Redis. A watermark lower than the group's
committed offset, or a missing one, means that Redis lost data or was restored from an
older state, and the worker replays the partition from the watermark.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from prefsync.crypto import Keyring
from prefsync.domain.encoding import decode_snapshot, encode_snapshot
from prefsync.domain.snapshot import Snapshot
from prefsync.errors import DecryptError, StoreUnavailable

__all__ = [
    "KEY_PREFIX",
    "WATERMARK_PREFIX",
    "SnapshotStore",
    "Stored",
    "connect",
    "snapshot_key",
    "watermark_key",
]

KEY_PREFIX = "pref:"
VALUE_FORMAT = 1
_GENERATION = struct.Struct(">Q")
_HEADER_BYTES = 1 + _GENERATION.size

# KEYS[1] = snapshot key; ARGV[1] = expected generation bytes ("" when the key must be
# absent); ARGV[2] = new value. Returns 1 when written, 0 on a generation mismatch.
_CHECK_AND_SET = """
local current = redis.call('GET', KEYS[1])
if current then
  if string.sub(current, 2, 9) ~= ARGV[1] then return 0 end
elseif ARGV[1] ~= '' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1] = watermark key; ARGV[1] = offset. Raises the watermark, never lowers it, and
# returns the value now stored.
_RAISE_WATERMARK = """
local current = tonumber(redis.call('GET', KEYS[1]))
local offset = tonumber(ARGV[1])
if current == nil or offset > current then
  redis.call('SET', KEYS[1], ARGV[1])
  return offset
end
return current
"""

WATERMARK_PREFIX = "prefsync:watermark:"

RedisClient = redis.Redis | RedisCluster
Partition = tuple[str, int]


def snapshot_key(customer_id: str) -> str:
    """Return the Redis key of a customer's snapshot."""
    return f"{KEY_PREFIX}{{{customer_id}}}"


def watermark_key(group: str, topic: str, partition: int) -> str:
    """Return the Redis key of a consumer group's watermark for one input partition."""
    return f"{WATERMARK_PREFIX}{group}:{topic}:{partition}"


def connect(url: str, *, cluster: bool = False, timeout_s: float = 5.0) -> RedisClient:
    """Create a Redis client (or a Redis Cluster client) for ``url``."""
    if cluster:
        return RedisCluster.from_url(url, socket_timeout=timeout_s)
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )


@dataclass(slots=True)
class Stored:
    """A snapshot as read, with the generation a conditional write must match.

    ``error`` is set when the stored value failed to decrypt; ``snapshot`` is then None
    and the value must not be overwritten blindly.
    """

    generation: int
    snapshot: Snapshot | None
    error: DecryptError | None = None


class SnapshotStore:
    """Read and write encrypted snapshots, many per round trip."""

    def __init__(self, client: RedisClient, keyring: Keyring):
        self.client = client
        self.keyring = keyring
        self._check_and_set = client.register_script(_CHECK_AND_SET)
        self._raise_watermark = client.register_script(_RAISE_WATERMARK)

    def read_many(self, customer_ids: Iterable[str]) -> dict[str, Stored]:
        """Read and decrypt the snapshots of ``customer_ids`` in one round trip.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        ids = list(customer_ids)
        try:
            pipe = self.client.pipeline(transaction=False)
            for customer_id in ids:
                pipe.get(snapshot_key(customer_id))
            values = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis read failed: {type(exc).__name__}") from exc
        return {
            cid: self._unseal(cid, value)
            for cid, value in zip(ids, values, strict=True)
        }

    def read(self, customer_id: str) -> Snapshot | None:
        """Read one customer's snapshot, or None when there is none.

        One plain GET: a one-key pipeline costs a terminal's lookup about 10 us more.

        Raises:
            DecryptError: the stored value failed authentication.
            StoreUnavailable: Redis could not be reached.
        """
        stored = self._unseal(customer_id, self.read_raw(customer_id))
        if stored.error is not None:
            raise stored.error
        return stored.snapshot

    def read_raw(self, customer_id: str) -> bytes | None:
        """Return the stored bytes of a customer, without decrypting."""
        try:
            return self.client.get(snapshot_key(customer_id))  # type: ignore[return-value]
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis read failed: {type(exc).__name__}") from exc

    def write_many(self, writes: list[tuple[Snapshot, int]]) -> list[str]:
        """Write each ``(snapshot, generation read)`` if the generation still matches.

        All writes go in one pipelined round trip.

        Returns:
            The customer ids whose write lost a race; the caller re-reads and retries.

        Raises:
            StoreUnavailable: Redis could not be reached, and no write can be
                assumed done.
        """
        return self.write_sealed(
            [(s.customer_id, g, self.seal(s, g + 1)) for s, g in writes]
        )

    def _run_script(
        self, script: Script, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        """Run ``script`` once per ``(keys, args)`` in one pipeline; return the results.

        A plain pipeline loads its scripts before it runs, but a Redis Cluster
        pipeline only sends EVALSHA, so a node that has not seen the script yet (a
        new or restarted node) rejects it with NOSCRIPT. The script is then loaded on
        every primary (SCRIPT LOAD on a cluster client reaches them all) and the
        rejected calls run again.

        Raises:
            redis.RedisError: Redis could not be reached or a call failed.
        """
        results = self._pipeline_script(script, calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            self.client.script_load(script.script)
            retried = self._pipeline_script(script, [calls[i] for i in missing])
            for index, result in zip(missing, retried, strict=True):
                results[index] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def _pipeline_script(
        self, script: Script, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        return pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

    def seal(self, snapshot: Snapshot, generation: int) -> bytes:
        """Return the stored form of ``snapshot`` at ``generation``."""
        envelope = self.keyring.encrypt(snapshot.customer_id, encode_snapshot(snapshot))
        return bytes([VALUE_FORMAT]) + _GENERATION.pack(generation) + envelope

    def _unseal(self, customer_id: str, value: bytes | None) -> Stored:
        if value is None:
            return Stored(0, None)
        if len(value) < _HEADER_BYTES or value[0] != VALUE_FORMAT:
            return Stored(0, None, DecryptError("unknown stored value format"))
        (generation,) = _GENERATION.unpack_from(value, 1)
        try:
            plaintext = self.keyring.decrypt(customer_id, value[_HEADER_BYTES:])
            snapshot = decode_snapshot(plaintext)
        except DecryptError as exc:
            return Stored(generation, None, exc)
        except ValueError as exc:
            return Stored(generation, None, DecryptError(f"invalid snapshot: {exc}"))
        if snapshot.customer_id != customer_id:
            return Stored(
                generation, None, DecryptError("snapshot of another customer")
            )
        return Stored(generation, snapshot)

    def unseal(self, customer_id: str, value: bytes | None) -> Stored:
        """Return a stored value decrypted, e.g. one read back from the snapshot topic.

        A value that fails authentication is returned with ``error`` set.
        """
        return self._unseal(customer_id, value)

    def write_sealed(self, writes: list[tuple[str, int, bytes]]) -> list[str]:
        """Write each ``(customer id, generation read, sealed value)`` if still current.

        Each value must come from :meth:`seal` at the generation read plus one, so the
        same bytes can go to Redis and to the snapshot topic. All writes go in one
        pipelined round trip.

        Returns:
            The customer ids whose write lost a race; the caller re-reads and retries.

        Raises:
            StoreUnavailable: Redis could not be reached; assume nothing was written.
        """
        if not writes:
            return []
        calls = [
            (
                [snapshot_key(customer_id)],
                [b"" if generation == 0 else _GENERATION.pack(generation), value],
            )
            for customer_id, generation, value in writes
        ]
        try:
            results = self._run_script(self._check_and_set, calls)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis write failed: {type(exc).__name__}") from exc
        return [
            customer_id
            for (customer_id, _, _), written in zip(writes, results, strict=True)
            if not written
        ]

    def swap_watermarks(
        self, group: str, offsets: dict[Partition, int]
    ) -> dict[Partition, int | None]:
        """Set the watermarks of ``offsets`` and return the values they replace.

        Call it only after every snapshot of the batch is written. A returned value
        lower than the one the caller wrote last means Redis lost data in between.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        if not offsets:
            return {}
        partitions = list(offsets)
        try:
            pipe = self.client.pipeline(transaction=False)
            for topic, partition in partitions:
                pipe.set(
                    watermark_key(group, topic, partition),
                    offsets[(topic, partition)],
                    get=True,
                )
            previous = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis watermark write failed: {type(exc).__name__}"
            ) from exc
        return {
            tp: None if value is None else int(value)
            for tp, value in zip(partitions, previous, strict=True)
        }

    def read_watermarks(
        self, group: str, partitions: Iterable[Partition]
    ) -> dict[Partition, int | None]:
        """Return the stored watermark of each partition, None where there is none.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        wanted = list(partitions)
        if not wanted:
            return {}
        try:
            pipe = self.client.pipeline(transaction=False)
            for topic, partition in wanted:
                pipe.get(watermark_key(group, topic, partition))
            values = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis watermark read failed: {type(exc).__name__}"
            ) from exc
        return {
            tp: None if value is None else int(value)
            for tp, value in zip(wanted, values, strict=True)
        }

    def restore_watermarks(
        self, group: str, offsets: dict[Partition, int | None]
    ) -> None:
        """Put watermarks back to ``offsets`` (deleting those that are None).

        The worker calls it when it finds that Redis lost data, so that the
        watermark again says how far Redis is complete.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        try:
            pipe = self.client.pipeline(transaction=False)
            for (topic, partition), offset in offsets.items():
                key = watermark_key(group, topic, partition)
                if offset is None:
                    pipe.delete(key)
                else:
                    pipe.set(key, offset)
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis watermark write failed: {type(exc).__name__}"
            ) from exc

    def raise_watermarks(
        self, group: str, offsets: dict[Partition, int]
    ) -> dict[Partition, int]:
        """Raise each watermark to at least its offset and return the stored values.

        A rebuild uses it: a running worker may already have written a higher one.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        partitions = list(offsets)
        calls = [
            ([watermark_key(group, topic, partition)], [offsets[(topic, partition)]])
            for topic, partition in partitions
        ]
        try:
            stored = self._run_script(self._raise_watermark, calls)
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis watermark write failed: {type(exc).__name__}"
            ) from exc
        return {tp: int(value) for tp, value in zip(partitions, stored, strict=True)}
