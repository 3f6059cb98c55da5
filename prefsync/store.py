"""Encrypted snapshots in Redis: batched reads and conditional (check-and-set) writes.

Each customer has one key, ``pref:{<customer id>}``, whose value is an envelope (see
:mod:`prefsync.envelope`): the customer's data key record, wrapped by the keyring
(see :mod:`prefsync.datakeys`), then the snapshot sealed with AES-256-GCM under that
data key, with associated data ``format | dek id | customer id``. The braces are a
Redis Cluster hash tag, so every key prefsync keeps for one customer lands in the
same slot. Values of the older two-key layout (a format 2 value beside its record in
``dek:{<customer id>}``) and format 1 values (encrypted under a keyring key
directly) are still read, with a second round trip; the next write of such a
customer stores an envelope and deletes ``dek:{<customer id>}``, and ``prefsync keys
reencrypt`` migrates every remaining one.

The generation counts writes of that key and is not authenticated: it only orders
writes. A write succeeds only if the stored generation is still the one the writer
read, and the stored value is still sealed under the data key the writer saw, both
checked by one Lua script. So two writers (two workers during a rebalance, or a
worker and an erasure) never lose each other's changes, and nothing is ever written
under a data key that was shredded meanwhile.

Next to the snapshots, the worker keeps one offset watermark per consumer group and
input partition (``prefsync:watermark:<group>:<topic>:<partition>``): the offset up to
which every event of that partition is in Redis. A watermark lower than the group's
committed offset, or a missing one, means that Redis lost data or was restored from an
older state, and the worker replays the partition from the watermark.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from cryptography.exceptions import InvalidTag
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from prefsync.api.pseudonym import Pseudonymizer
from prefsync.crypto import Keyring
from prefsync.datakeys import (
    DEK_ID_BYTES,
    NO_EPOCH,
    DataKey,
    DataKeyCache,
    KeyJournal,
    data_key_key,
    epoch_of,
    new_data_key,
    parse_data_key,
    record_dek_id,
)
from prefsync.direct_get import DirectGet
from prefsync.domain.encoding import decode_snapshot, decode_view, encode_snapshot
from prefsync.domain.events import SOURCES
from prefsync.domain.snapshot import Snapshot, Stamp
from prefsync.envelope import (
    ENVELOPE_FORMAT,
    LEGACY_VALUE_FORMAT,
    NONCE_BYTES,
    PLAIN_SEALED_FORMAT,
    SEALED_FORMAT,
    compress_plaintext,
    decompress_plaintext,
    envelope_record,
    key_only_envelope,
    to_envelope,
    to_reference,
    value_dek_id,
)
from prefsync.errors import DecryptError, StoreUnavailable

__all__ = [
    "KEY_PREFIX",
    "USAGE_KEY",
    "WATERMARK_PREFIX",
    "SnapshotStore",
    "Stored",
    "connect",
    "snapshot_key",
    "value_dek_id",
    "watermark_key",
]

log = structlog.get_logger()

KEY_PREFIX = "pref:"
# Redis hash of encryptions per keyring key id, shared by every process.
USAGE_KEY = "prefsync:key-usage"
_GENERATION = struct.Struct(">Q")
_HEADER_BYTES = 1 + _GENERATION.size
_REFERENCE_HEADER_BYTES = _HEADER_BYTES + DEK_ID_BYTES
_PAYLOAD_LABEL = b"prefsync-payload"
_KNOWN_FORMATS = (
    LEGACY_VALUE_FORMAT,
    PLAIN_SEALED_FORMAT,
    SEALED_FORMAT,
    ENVELOPE_FORMAT,
)
# Format, id and epoch at the start of a data key record.
_RECORD_ID_EPOCH_BYTES = 1 + DEK_ID_BYTES + 8

# KEYS[1] = snapshot key; KEYS[2], when given, = the two-key layout's data key record.
# ARGV[1] = expected generation bytes ("" when the value must be absent);
# ARGV[2] = new value; ARGV[3] = id of the data key the value read was sealed with
# ("" for none); ARGV[4], with KEYS[2], = id of the record read there ("" for none).
# The data key id sits at bytes 12-19 of an envelope (format 4) and at bytes 10-17
# of formats 2 and 3. With KEYS[2], the record there is deleted, because the new
# value is an envelope that contains its own record.
# Returns 1 when written, 0 when the generation or the data key changed meanwhile,
# 2 when KEYS[2] contains a record the writer did not read (re-read it).
_CHECK_AND_SET = """
local current = redis.call('GET', KEYS[1])
local seen = ''
if current then
  if string.sub(current, 2, 9) ~= ARGV[1] then return 0 end
  local format = string.byte(current, 1)
  if format == 4 then
    seen = string.sub(current, 12, 19)
  elseif format == 2 or format == 3 then
    seen = string.sub(current, 10, 17)
  end
elseif ARGV[1] ~= '' then
  return 0
end
if seen ~= ARGV[3] then return 0 end
if KEYS[2] then
  local record = redis.call('GET', KEYS[2])
  local present = ''
  if record then present = string.sub(record, 2, 9) end
  if present ~= ARGV[4] then return 2 end
  redis.call('DEL', KEYS[2])
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
# A write that found a record in KEYS[2] it had not read.
_LEGACY_RECORD_UNREAD = 2

# KEYS as above. ARGV[1] = value expected ("" for none), ARGV[2] = data key record
# expected ("" for none). Deletes both when neither changed; returns 1, else 0.
_DELETE_IF_UNCHANGED = """
local value = redis.call('GET', KEYS[1]) or ''
local record = redis.call('GET', KEYS[2]) or ''
if value ~= ARGV[1] or record ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
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

# KEYS[1] = watermark key; ARGV[1] = offset. Raises the watermark, never lowers it,
# and returns the value it had before (nil when there was none). A worker that was
# frozen past its session timeout and writes late cannot lower the new owner's mark.
_SWAP_WATERMARK = """
local previous = redis.call('GET', KEYS[1])
local offset = tonumber(ARGV[1])
if previous == false or offset > tonumber(previous) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return previous
"""

WATERMARK_PREFIX = "prefsync:watermark:"
# Hash tags tried to find one per Redis Cluster primary. With the slots spread
# evenly over three primaries, the local stack's cluster needed fewer than ten.
MAX_TAG_SEARCH = 100_000

RedisClient = redis.Redis | RedisCluster
ScriptCall = tuple[Script, list[str], list[Any]]
"""A script, its keys and its arguments, for :meth:`SnapshotStore._run_scripts`."""


def _no_script(result: object) -> bool:
    return isinstance(result, NoScriptError)


Partition = tuple[str, int]


def _record_of(value: bytes | None, legacy: bytes | None) -> bytes | None:
    """Return the data key record of a value read from Redis, in either layout."""
    embedded = None if value is None else envelope_record(value)
    return legacy if embedded is None else embedded


def snapshot_key(customer_id: str) -> str:
    """Return the Redis key of a customer's snapshot."""
    return f"{KEY_PREFIX}{{{customer_id}}}"


def watermark_key(
    group: str, topic: str, partition: int, tag: str | None = None
) -> str:
    """Return the Redis key of a consumer group's watermark for one input partition.

    ``tag``: the hash tag of one copy in Redis Cluster; None on a single Redis.
    """
    where = "" if tag is None else f"{{{tag}}}:"
    return f"{WATERMARK_PREFIX}{where}{group}:{topic}:{partition}"


def _primary_tags(client: RedisClient) -> list[str | None]:
    """Return one hash tag per Redis Cluster primary, or [None] for a single Redis."""
    if not isinstance(client, RedisCluster):
        return [None]
    wanted = {node.name for node in client.get_primaries()}
    tags: dict[str, str] = {}
    for number in range(MAX_TAG_SEARCH):
        tag = f"w{number}"
        node = client.get_node_from_key(f"{{{tag}}}").name
        if node in wanted and node not in tags:
            tags[node] = tag
            if len(tags) == len(wanted):
                break
    return [tags[name] for name in sorted(tags)]


def _lowest(
    keys: list[tuple[Partition, str]], values: list[Any]
) -> dict[Partition, int | None]:
    """Fold the copies of each watermark: None if any copy is missing, else the
    lowest, because every copy must show that its primary still has the data."""
    folded: dict[Partition, int | None] = {}
    missing: set[Partition] = set()
    for (tp, _), value in zip(keys, values, strict=True):
        if value is None:
            missing.add(tp)
            folded[tp] = None
        elif tp not in missing:
            current = folded.get(tp)
            folded[tp] = int(value) if current is None else min(current, int(value))
    return folded


def connect(url: str, *, cluster: bool = False, timeout_s: float = 5.0) -> RedisClient:
    """Create a Redis client (or a Redis Cluster client) for ``url``.

    ACL credentials and TLS come from the URL: ``rediss://USER:PASSWORD@host:port/0
    ?ssl_ca_certs=ca.pem`` (see docs/privacy.md).
    """
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
    """Read and write encrypted snapshots, many per round trip.

    ``journal`` receives every new data key record before Redis does, and the
    tombstone of every shredded one. Without it, data keys live in Redis only, which
    suits readers and tests but not the worker. ``actor`` names the writer in erasure
    audit records, and ``pseudonymizer`` names the customer there.
    """

    def __init__(
        self,
        client: RedisClient,
        keyring: Keyring,
        *,
        journal: KeyJournal | None = None,
        cache_entries: int = 100_000,
        actor: str = "worker",
        pseudonymizer: Pseudonymizer | None = None,
    ):
        self.client = client
        self._get = (
            DirectGet(client).get if isinstance(client, redis.Redis) else client.get
        )
        self.keyring = keyring
        self.journal = journal
        self.actor = actor
        self.pseudonymizer = pseudonymizer
        self.data_keys = DataKeyCache(cache_entries)
        self.data_key_max_encryptions = keyring.hard_limit
        # Header (id and epoch) of the data key record present in Redis at the last
        # read, per customer, and keys proposed by seal() not stored yet.
        self._present: dict[str, bytes] = {}
        self.audit_context: dict[str, object] = {}
        self._proposed: dict[str, tuple[DataKey, DataKey | None]] = {}
        # Erasure floor of the snapshot each proposal was made for, for the audit.
        self._proposed_floor: dict[str, Stamp | None] = {}
        # Per customer at the last read: the data key id of the value read (b"" for
        # none), and the id in ``dek:{id}`` (b"" for none), or None where the read
        # found an envelope and the two-key layout plays no part.
        self._seen: dict[str, tuple[bytes, bytes | None]] = {}
        # Customers whose write found a ``dek:{id}`` record it had not read.
        self._legacy_unread: set[str] = set()
        self._check_and_set = client.register_script(_CHECK_AND_SET)
        self._raise_watermark = client.register_script(_RAISE_WATERMARK)
        self._swap_watermark = client.register_script(_SWAP_WATERMARK)
        # One hash tag per primary for the watermark copies, found on first use.
        self._watermark_tags: list[str | None] | None = None
        self._delete_if_unchanged = client.register_script(_DELETE_IF_UNCHANGED)

    def read_many(self, customer_ids: Iterable[str]) -> dict[str, Stored]:
        """Read and decrypt the snapshots of ``customer_ids``.

        One round trip, and a second one only for customers still in the two-key
        layout.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        ids = list(customer_ids)
        self.keyring.maybe_reload()
        pairs = self._read_values(ids)
        self._bound_tracking()
        return {
            cid: self._unseal(cid, value, record)
            for cid, (value, record) in zip(ids, pairs, strict=True)
        }

    def _read_values(
        self, customer_ids: list[str]
    ) -> list[tuple[bytes | None, bytes | None]]:
        """Return each customer's ``(value, dek:{id} record)``.

        The record is read only where the value is not an envelope and may depend
        on it: formats 1 and 2, and missing values whose write found a record.
        """
        try:
            pipe = self.client.pipeline(transaction=False)
            for customer_id in customer_ids:
                pipe.get(snapshot_key(customer_id))
            values: list[bytes | None] = pipe.execute()
            legacy = [
                index
                for index, (customer_id, value) in enumerate(
                    zip(customer_ids, values, strict=True)
                )
                if self._needs_legacy_record(customer_id, value)
            ]
            records: list[bytes | None] = [None] * len(values)
            if legacy:
                pipe = self.client.pipeline(transaction=False)
                for index in legacy:
                    pipe.get(data_key_key(customer_ids[index]))
                for index, record in zip(legacy, pipe.execute(), strict=True):
                    records[index] = record
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis read failed: {type(exc).__name__}") from exc
        return list(zip(values, records, strict=True))

    def _needs_legacy_record(self, customer_id: str, value: bytes | None) -> bool:
        if value is None:
            return customer_id in self._legacy_unread
        return value[:1] != bytes([ENVELOPE_FORMAT])

    def _bound_tracking(self) -> None:
        if len(self._present) > 4 * self.data_keys.max_entries:
            self._present.clear()
            self._seen.clear()

    def read_records(
        self, customer_ids: list[str]
    ) -> list[tuple[bytes | None, bytes | None]]:
        """Return each customer's raw ``(value, dek:{id} record)`` in one round trip.

        The second item is the two-key layout's ``dek:{id}`` record, None where there
        is none, as for every customer whose value is already an envelope.
        """
        try:
            pipe = self.client.pipeline(transaction=False)
            # Two GETs, not one MGET: redis-py's cluster pipeline rejects MGET even
            # for keys of one slot.
            for customer_id in customer_ids:
                pipe.get(snapshot_key(customer_id))
                pipe.get(data_key_key(customer_id))
            results = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis read failed: {type(exc).__name__}") from exc
        return list(zip(results[::2], results[1::2], strict=True))

    def read(self, customer_id: str) -> Snapshot | None:
        """Read one customer's snapshot, or None when there is none.

        One GET of the envelope; a value of the two-key layout costs a second GET.

        Raises:
            DecryptError: the stored value failed authentication.
            StoreUnavailable: Redis could not be reached.
        """
        value, record = self._get_one(customer_id)
        stored = self._unseal(customer_id, value, record)
        if stored.error is not None:
            raise stored.error
        return stored.snapshot

    def read_view(self, customer_id: str) -> dict[str, Any] | None:
        """Read one customer's preference view, or None when there is none.

        The terminal's read: ``to_view(read(customer_id))``, with the view decoded
        from the plaintext directly (:func:`decode_view`), without the snapshot's
        stamps.

        Raises:
            DecryptError: the stored value failed authentication.
            StoreUnavailable: Redis could not be reached.
        """
        value, record = self._get_one(customer_id)
        try:
            plaintext = self._open(customer_id, value, record)
            return None if plaintext is None else decode_view(plaintext, customer_id)
        except ValueError as exc:
            raise DecryptError(f"invalid snapshot: {exc}") from exc

    def _get_one(self, customer_id: str) -> tuple[bytes | None, bytes | None]:
        """Return one customer's ``(value, dek:{id} record)``: a second GET only for a
        value of the two-key layout."""
        self.keyring.maybe_reload()
        try:
            value = self._get(snapshot_key(customer_id))
            record = None
            if value is not None and value[:1] != bytes([ENVELOPE_FORMAT]):
                record = self.client.get(data_key_key(customer_id))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis read failed: {type(exc).__name__}") from exc
        self._bound_tracking()
        return value, record  # type: ignore[return-value]

    def read_raw(self, customer_id: str) -> bytes | None:
        """Return a customer's value in reference form, as the snapshot topic
        carries it (no data key record), without decrypting.

        None when there is no value, or only a data key and no snapshot.
        """
        try:
            value = self.client.get(snapshot_key(customer_id))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis read failed: {type(exc).__name__}") from exc
        if value is None:
            return None
        return to_reference(value)  # type: ignore[arg-type]

    def write_many(self, writes: list[tuple[Snapshot, int]]) -> list[str]:
        """Write each ``(snapshot, generation read)`` if the generation still matches.

        New data key records reach the journal (acknowledged) before Redis.
        All writes go in one pipelined round trip.

        Returns:
            The customer ids whose write lost a race; the caller re-reads and retries.

        Raises:
            StoreUnavailable: Redis or the key journal could not be reached; nothing
                can be assumed written.
            KeyUsageExceeded: the primary keyring key reached its limit.
        """
        if not writes:
            return []
        self.keyring.maybe_reload()
        return self.write_sealed(
            [(s.customer_id, g, self.seal(s, g + 1)) for s, g in writes]
        )

    def write_sealed(self, writes: list[tuple[str, int, bytes]]) -> list[str]:
        """Write each ``(customer id, generation read, sealed value)`` if still current.

        Each value must come from :meth:`seal` at the generation read plus one, so the
        same bytes can go to Redis and to the snapshot topic. New data key records
        that :meth:`seal` proposed reach the journal (acknowledged) before Redis. All
        writes go in one pipelined round trip.

        Returns:
            The customer ids whose write lost a race; the caller re-reads and retries.

        Raises:
            StoreUnavailable: Redis or the key journal could not be reached; nothing
                can be assumed written.
        """
        if not writes:
            return []
        created = self._proposals_used(writes)
        journal = self.journal if created else None
        if journal is not None:
            for customer_id, (data_key, _) in created.items():
                journal.publish(customer_id, data_key.record)
        # Flushed after the pipeline is built and before it runs, so Kafka
        # acknowledges the records while the commands are prepared.
        results = self._execute_writes(
            writes, created, before_execute=None if journal is None else journal.flush
        )
        lost = []
        for (customer_id, _, value), written in zip(writes, results, strict=True):
            new, replaced = self._proposed.pop(customer_id, (None, None))
            floor = self._proposed_floor.pop(customer_id, None)
            if written:
                # Redis now has an envelope sealed under this value's data key.
                self._seen[customer_id] = (value_dek_id(value) or b"", None)
                if new is not None:
                    self._adopt(customer_id, new, replaced, floor)
            else:
                lost.append(customer_id)
                self.data_keys.drop(customer_id)
                if new is not None and self.journal is not None:
                    self.journal.tombstone(customer_id, new.dek_id)
        if self.journal is not None and (created or lost):
            self.journal.flush()
        return lost

    def _proposals_used(
        self, writes: list[tuple[str, int, bytes]]
    ) -> dict[str, tuple[DataKey, DataKey | None]]:
        """Return the proposed data keys that the values of ``writes`` are sealed
        under, and drop proposals that no value uses."""
        created = {}
        for customer_id, _, value in writes:
            proposal = self._proposed.get(customer_id)
            if proposal is None:
                continue
            if value_dek_id(value) == proposal[0].dek_id:
                created[customer_id] = proposal
                continue
            # A proposal left by an attempt that failed before Redis (the key journal
            # or Redis was unreachable), for another erasure floor than this value's:
            # storing it with this value would pair the value with the wrong key.
            self.discard_proposal(customer_id)
            if self.journal is not None:
                self.journal.tombstone(customer_id, proposal[0].dek_id)
        return created

    def discard_proposal(self, customer_id: str) -> bool:
        """Forget a data key that :meth:`seal` proposed but nobody will write.

        Returns:
            True when there was one: a value sealed under it must not be kept,
            because the key never reaches the journal.
        """
        self._proposed_floor.pop(customer_id, None)
        return self._proposed.pop(customer_id, None) is not None

    def _execute_writes(
        self,
        writes: list[tuple[str, int, bytes]],
        created: dict[str, tuple[DataKey, DataKey | None]],
        *,
        before_execute: Callable[[], None] | None = None,
    ) -> list[int]:
        """Run the check-and-set of every write; return 1 per value written.

        ``before_execute`` runs once the pipeline is built, before it is sent; when
        it raises StoreUnavailable, nothing is sent.
        """
        usage = self.keyring.drain_usage()
        calls: list[ScriptCall] = []
        sent: list[int] = []
        for index, (customer_id, generation, value) in enumerate(writes):
            call = self._write_call(customer_id, generation, value, created)
            if call is not None:
                calls.append(call)
                sent.append(index)

        def count_usage(pipe: Any) -> None:
            for key_id, count in usage.items():
                pipe.hincrby(USAGE_KEY, key_id, count)

        try:
            results = self._run_scripts(
                calls, then=count_usage, before_execute=before_execute
            )
        except StoreUnavailable:
            self.keyring.restore_usage(usage)
            raise
        except redis.RedisError as exc:
            self.keyring.restore_usage(usage)
            raise StoreUnavailable(f"Redis write failed: {type(exc).__name__}") from exc
        self.keyring.record_usage(dict(zip(usage, results[len(calls) :], strict=True)))
        outcomes = [0] * len(writes)
        for index, result in zip(sent, results[: len(calls)], strict=True):
            if result == _LEGACY_RECORD_UNREAD:
                self._legacy_unread.add(writes[index][0])
            outcomes[index] = 1 if result == 1 else 0
        return outcomes

    def _write_call(
        self,
        customer_id: str,
        generation: int,
        value: bytes,
        created: dict[str, tuple[DataKey, DataKey | None]],
    ) -> ScriptCall | None:
        """Return the check-and-set call that stores ``value`` as an envelope.

        None when the data key record the value is sealed with is no longer at
        hand (evicted from the cache): the write counts as lost and is retried.
        """
        new = created.get(customer_id, (None, None))[0]
        data_key = new if new is not None else self.data_keys.get(customer_id)
        dek_id = value_dek_id(value)
        if data_key is None or data_key.dek_id != dek_id:
            return None
        expected = b"" if generation == 0 else _GENERATION.pack(generation)
        envelope = to_envelope(value, data_key.record)
        seen_id, legacy_id = self._seen.get(customer_id, (b"", b""))
        if legacy_id is None:
            return (
                self._check_and_set,
                [snapshot_key(customer_id)],
                [expected, envelope, seen_id],
            )
        keys = [snapshot_key(customer_id), data_key_key(customer_id)]
        return (self._check_and_set, keys, [expected, envelope, seen_id, legacy_id])

    def _run_scripts(
        self,
        calls: list[ScriptCall],
        *,
        then: Callable[[Any], None] | None = None,
        before_execute: Callable[[], None] | None = None,
    ) -> list[Any]:
        """Run script calls, then the commands ``then`` adds, in one pipeline.

        ``before_execute`` runs after the pipeline is built and before it is sent.

        A plain pipeline loads its scripts before it runs, but a Redis Cluster
        pipeline only sends EVALSHA, so a node that has not seen a script yet (a new
        or restarted node) rejects the call with NOSCRIPT and runs nothing for it.
        Those scripts are then loaded on every primary (SCRIPT LOAD on a cluster
        client reaches them all) and only the rejected calls run again.

        Raises:
            redis.RedisError: Redis could not be reached, or a command failed.
        """
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        if then is not None:
            then(pipe)
        if before_execute is not None:
            before_execute()
        results: list[Any] = pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(results[: len(calls)]) if _no_script(r)]
        if missing:
            for script in {calls[i][0].sha: calls[i][0] for i in missing}.values():
                self.client.script_load(script.script)
            retry = self.client.pipeline(transaction=False)
            for index in missing:
                script, keys, args = calls[index]
                script(keys=keys, args=args, client=retry)
            for index, result in zip(missing, retry.execute(), strict=True):
                results[index] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def _adopt(
        self,
        customer_id: str,
        new: DataKey,
        replaced: DataKey | None,
        floor: Stamp | None,
    ) -> None:
        present = self._present.get(customer_id, b"")
        old_id = present[1 : 1 + DEK_ID_BYTES]
        old_epoch = present[1 + DEK_ID_BYTES : _RECORD_ID_EPOCH_BYTES] or NO_EPOCH
        self.data_keys.put(customer_id, new)
        self._present[customer_id] = new.record[:_RECORD_ID_EPOCH_BYTES]
        if new.epoch == old_epoch or self.journal is None:
            return
        # The erasure floor rose: the old data key is shredded, and with it every
        # copy of the customer's data sealed under it.
        if old_id:
            self.journal.tombstone(customer_id, old_id)
        self.journal.audit(self.erasure_record(customer_id, floor, old_id, new))

    def erasure_record(
        self, customer_id: str, floor: Stamp | None, old_id: bytes, new: DataKey
    ) -> dict[str, object]:
        """Return the audit record of an erasure at ``floor``: no customer id, name or
        value."""
        pseudonym = self.pseudonym(customer_id)
        if pseudonym is None:
            log.error("erasure.pseudonym_unavailable", reason="no pseudonym key")
        return {
            **self.audit_context,
            "event": "erasure",
            "pseudonym": pseudonym,
            "actor": self.actor,
            "erased_at_ms": int(time.time() * 1000),
            "floor": None
            if floor is None
            else {
                "crm_version": floor[0],
                "occurred_at_ms": floor[1],
                "source": SOURCES[floor[3]],
            },
            "shredded_data_key": old_id.hex() or None,
            "new_data_key": new.dek_id.hex(),
        }

    def pseudonym(self, customer_id: str) -> str | None:
        """Return the customer's keyed pseudonym (the one applied events carry).

        Returns None when the store was built without a pseudonymizer.
        """
        if self.pseudonymizer is None:
            return None
        return self.pseudonymizer.pseudonym(customer_id)

    def seal(self, snapshot: Snapshot, generation: int) -> bytes:
        """Return ``snapshot`` at ``generation`` sealed, in reference form.

        The snapshot topic carries these bytes; :meth:`write_sealed` stores them in
        Redis as an envelope with the data key record. Uses the customer's current
        data key, or proposes a new one when there is none, the erasure floor
        changed, or the key reached its encryption limit.
        """
        data_key = self._data_key_for_write(snapshot, generation)
        customer_id = snapshot.customer_id
        nonce = os.urandom(NONCE_BYTES)
        aad = bytes([SEALED_FORMAT]) + data_key.dek_id + customer_id.encode()
        plaintext = compress_plaintext(encode_snapshot(snapshot))
        sealed = data_key.cipher.encrypt(nonce, plaintext, aad)
        return (
            bytes([SEALED_FORMAT])
            + _GENERATION.pack(generation)
            + data_key.dek_id
            + nonce
            + sealed
        )

    def _data_key_for_write(self, snapshot: Snapshot, generation: int) -> DataKey:
        customer_id = snapshot.customer_id
        epoch = epoch_of(snapshot.erased)
        proposed = self._proposed.get(customer_id)
        if proposed is not None and proposed[0].epoch == epoch:
            return proposed[0]
        current = self.data_keys.get(customer_id)
        if (
            current is not None
            and current.epoch == epoch
            and generation - current.born_generation < self.data_key_max_encryptions
        ):
            return current
        if current is not None and current.epoch == epoch:
            log.info("keys.data_key_rotated", reason="encryption_limit")
        created = new_data_key(self.keyring, customer_id, epoch, generation)
        self._proposed[customer_id] = (created, current)
        self._proposed_floor[customer_id] = snapshot.erased
        return created

    def _unseal(
        self, customer_id: str, value: bytes | None, record: bytes | None = None
    ) -> Stored:
        """Decrypt a value of any format; ``record`` is the ``dek:{id}`` record
        read beside it (two-key layout), or one from the key topic."""
        if value is None:
            self._open(customer_id, value, record)
            return Stored(0, None)
        generation = 0
        if len(value) >= _HEADER_BYTES:
            (generation,) = _GENERATION.unpack_from(value, 1)
        try:
            plaintext = self._open(customer_id, value, record)
            if plaintext is None:
                return Stored(generation, None)
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

    def _open(
        self, customer_id: str, value: bytes | None, record: bytes | None
    ) -> bytes | None:
        """Note what a read found and return the snapshot bytes of ``value``.

        None for a missing value or a key-only envelope.

        Raises:
            DecryptError: the value or its data key failed authentication.
            ValueError: the compressed snapshot is invalid.
        """
        embedded = None if value is None else envelope_record(value)
        if embedded is not None:
            record = embedded
        self._present[customer_id] = (
            b"" if record is None else record[:_RECORD_ID_EPOCH_BYTES]
        )
        self._track_seen(customer_id, value, record, embedded is not None)
        if value is None:
            self._cache_record(customer_id, record)
            return None
        return self._plaintext(customer_id, value, record)

    def _track_seen(
        self,
        customer_id: str,
        value: bytes | None,
        record: bytes | None,
        envelope: bool,
    ) -> None:
        self._legacy_unread.discard(customer_id)
        seen_id = b"" if value is None else value_dek_id(value) or b""
        if envelope:
            self._seen[customer_id] = (seen_id, None)
            return
        self._seen[customer_id] = (seen_id, b"" if record is None else record[1:9])

    def _plaintext(
        self, customer_id: str, value: bytes, record: bytes | None
    ) -> bytes | None:
        """Return the snapshot bytes of a value; None for a key-only envelope.

        Raises:
            DecryptError: the value or its data key failed authentication.
            ValueError: the compressed snapshot is invalid.
        """
        if len(value) < _HEADER_BYTES or value[0] not in _KNOWN_FORMATS:
            raise DecryptError("unknown stored value format")
        if value[0] == LEGACY_VALUE_FORMAT:
            self._cache_record(customer_id, record)
            return self.keyring.decrypt(customer_id, value[_HEADER_BYTES:])
        reference = to_reference(value)
        if reference is None:
            self._cache_record(customer_id, record)
            return None
        plaintext = self._decrypt_value(customer_id, reference, record)
        if reference[0] == SEALED_FORMAT:
            return decompress_plaintext(plaintext)
        return plaintext

    def unseal_many(self, items: list[tuple[str, bytes]]) -> list[Stored]:
        """Decrypt values read elsewhere (e.g. the snapshot topic) with the data
        keys Redis has now.

        A value that fails authentication, or whose data key is missing, is returned
        with ``error`` set.
        """
        stored = self._read_values([customer_id for customer_id, _ in items])
        return [
            self._unseal(customer_id, value, _record_of(current, legacy))
            for (customer_id, value), (current, legacy) in zip(
                items, stored, strict=True
            )
        ]

    def unseal_with_record(
        self, customer_id: str, value: bytes, record: bytes | None
    ) -> Stored:
        """Decrypt a value with a given data key record, e.g. one from the key topic.

        A rebuild uses it for snapshot-topic values whose data key differs from the
        one Redis has now.
        """
        return self._unseal(customer_id, value, record)

    def open_with_record(
        self, customer_id: str, value: bytes, record: bytes | None
    ) -> bytes:
        """Decrypt a value with a given data key record and return its MessagePack
        snapshot bytes, undecoded.

        Unlike :meth:`unseal_with_record`, it leaves the generation check's state
        alone, so it may run after :meth:`read_many` and before the write. A rebuild
        compares these bytes to decode each distinct snapshot once.

        Raises:
            DecryptError: the value or its data key failed authentication, or the
                value is a key-only envelope.
            ValueError: the compressed snapshot is invalid.
        """
        plaintext = self._plaintext(customer_id, value, record)
        if plaintext is None:
            raise DecryptError("key-only envelope: no snapshot to decrypt")
        return plaintext

    def data_key_seen(self, customer_id: str) -> bytes:
        """Return the id of the data key Redis had for a customer at the last read.

        That is the stored value's key, else the key of a ``dek:{id}`` record, and
        b"" when there was neither.
        """
        seen_id, legacy_id = self._seen.get(customer_id, (b"", None))
        return seen_id or legacy_id or b""

    def use_data_key(self, customer_id: str, record: bytes) -> None:
        """Make ``record``'s data key the one :meth:`write_sealed` stores with the
        customer's next value.

        A rebuild calls it after :meth:`read_many` found no value, to store a value
        from the snapshot topic as it is, sealed under its own data key.
        """
        self._cache_record(customer_id, record)

    def unseal(self, customer_id: str, value: bytes | None) -> Stored:
        """Return one value decrypted, e.g. one read back from the snapshot topic."""
        if value is None:
            return Stored(0, None)
        return self.unseal_many([(customer_id, value)])[0]

    def swap_watermarks(
        self, group: str, offsets: dict[Partition, int]
    ) -> dict[Partition, int | None]:
        """Raise the watermarks to ``offsets`` and return the values they had before.

        Call it only after every snapshot of the batch is written. A returned value
        lower than the one the caller wrote last means Redis lost data in between.
        A watermark is never lowered here: a higher one came from another worker
        that wrote those events.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        if not offsets:
            return {}
        keys = self._watermark_keys(group, offsets)
        calls: list[ScriptCall] = [
            (self._swap_watermark, [key], [offsets[tp]]) for tp, key in keys
        ]
        try:
            previous = self._run_scripts(calls)
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis watermark write failed: {type(exc).__name__}"
            ) from exc
        return _lowest(keys, previous)

    def read_watermarks(
        self, group: str, partitions: Iterable[Partition]
    ) -> dict[Partition, int | None]:
        """Return the stored watermark of each partition, None where there is none.

        Raises:
            StoreUnavailable: Redis could not be reached.
        """
        keys = self._watermark_keys(group, partitions)
        if not keys:
            return {}
        try:
            pipe = self.client.pipeline(transaction=False)
            for _, key in keys:
                pipe.get(key)
            values = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis watermark read failed: {type(exc).__name__}"
            ) from exc
        return _lowest(keys, values)

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
            for tp, key in self._watermark_keys(group, offsets):
                offset = offsets[tp]
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
        keys = self._watermark_keys(group, offsets)
        calls: list[ScriptCall] = [
            (self._raise_watermark, [key], [offsets[tp]]) for tp, key in keys
        ]
        try:
            stored = self._run_scripts(calls)
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis watermark write failed: {type(exc).__name__}"
            ) from exc
        return {tp: value or 0 for tp, value in _lowest(keys, stored).items()}

    def _watermark_keys(
        self, group: str, partitions: Iterable[Partition]
    ) -> list[tuple[Partition, str]]:
        """Return every copy's key of each partition's watermark.

        In Redis Cluster each primary keeps its own copy (a hash tag that maps to
        one of its slots), because a primary that loses its data loses the
        customers of its slots, whichever primary contains the watermark.
        """
        if self._watermark_tags is None:
            self._watermark_tags = _primary_tags(self.client)
        return [
            (tp, watermark_key(group, tp[0], tp[1], tag))
            for tp in partitions
            for tag in self._watermark_tags
        ]

    def _decrypt_value(
        self, customer_id: str, value: bytes, record: bytes | None
    ) -> bytes:
        """Decrypt a reference-form value (format 2 or 3) with ``record``'s key."""
        if len(value) < _REFERENCE_HEADER_BYTES + NONCE_BYTES:
            raise DecryptError("truncated stored value")
        dek_id = value[_HEADER_BYTES:_REFERENCE_HEADER_BYTES]
        data_key = self._data_key_for_read(customer_id, dek_id, record)
        nonce = value[_REFERENCE_HEADER_BYTES : _REFERENCE_HEADER_BYTES + NONCE_BYTES]
        aad = value[:1] + dek_id + customer_id.encode()
        try:
            return data_key.cipher.decrypt(
                nonce, value[_REFERENCE_HEADER_BYTES + NONCE_BYTES :], aad
            )
        except InvalidTag as exc:
            raise DecryptError(
                "authentication failed: the value was altered or belongs to "
                "another customer"
            ) from exc

    def _data_key_for_read(
        self, customer_id: str, dek_id: bytes, record: bytes | None
    ) -> DataKey:
        if record is not None and record_dek_id(record) == dek_id:
            cached = self.data_keys.get(customer_id)
            # Equal bytes, not only the id: a rotation rewraps the same key, and a
            # later write must store the rewrapped record.
            if cached is not None and cached.record == record:
                return cached
        if record is None:
            raise DecryptError(
                "data key missing: the customer was erased (crypto-shredded), or the "
                "data keys were not restored after a Redis loss; run `prefsync keys "
                "restore`"
            )
        if record_dek_id(record) != dek_id:
            raise DecryptError(
                "data key mismatch: the value is sealed under a data key that was "
                "replaced (the customer was erased) or copied from another customer"
            )
        data_key = parse_data_key(self.keyring, customer_id, record)
        self.data_keys.put(customer_id, data_key)
        return data_key

    def _cache_record(self, customer_id: str, record: bytes | None) -> None:
        if record is None:
            self.data_keys.drop(customer_id)
            return
        cached = self.data_keys.get(customer_id)
        if cached is not None and cached.record == record:
            return
        try:
            self.data_keys.put(
                customer_id, parse_data_key(self.keyring, customer_id, record)
            )
        except DecryptError as exc:
            # A write proposes a new key and replaces this record.
            self.data_keys.drop(customer_id)
            log.warning("store.data_key_unreadable", error=str(exc))

    def delete_if_unchanged(
        self, customer_id: str, value: bytes | None, record: bytes | None
    ) -> bool:
        """Delete a customer's value and data key record if both are as read.

        The journal gets a tombstone for the deleted data key. Used to shred values
        that cannot be decrypted any more, and stale copies whose key is gone.

        Returns:
            True when deleted; False when another writer changed either meanwhile.
        """
        try:
            deleted = self._delete_if_unchanged(
                keys=[snapshot_key(customer_id), data_key_key(customer_id)],
                args=[value or b"", record or b""],
            )
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis write failed: {type(exc).__name__}") from exc
        if not deleted:
            return False
        self.data_keys.drop(customer_id)
        self._present[customer_id] = b""
        if record is not None and self.journal is not None:
            self.journal.tombstone(customer_id, record_dek_id(record))
            self.journal.flush()
        return True

    # Payloads outside Redis (dead letters) ----------------------------------------

    def seal_payload(
        self, customer_id: str, payload: bytes, purpose: bytes
    ) -> tuple[bytes, bytes]:
        """Encrypt ``payload`` under the customer's data key; return (dek id, sealed).

        Erasing the customer shreds the key, so the payload becomes unreadable too.
        Creates the customer's data key (journal first) when there is none yet.

        Raises:
            StoreUnavailable: Redis or the key journal could not be reached.
        """
        data_key = self._data_key_for_payload(customer_id)
        nonce = os.urandom(NONCE_BYTES)
        aad = _PAYLOAD_LABEL + purpose + data_key.dek_id + customer_id.encode()
        return data_key.dek_id, nonce + data_key.cipher.encrypt(nonce, payload, aad)

    def open_payload(
        self, customer_id: str, dek_id: bytes, sealed: bytes, purpose: bytes
    ) -> bytes:
        """Decrypt a payload made by :meth:`seal_payload`.

        Raises:
            DecryptError: the data key was shredded or replaced, or the payload was
                altered or belongs to another customer.
        """
        ((value, legacy),) = self.read_records([customer_id])
        record = _record_of(value, legacy)
        data_key = self._data_key_for_read(customer_id, dek_id, record)
        aad = _PAYLOAD_LABEL + purpose + dek_id + customer_id.encode()
        try:
            return data_key.cipher.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad
            )
        except InvalidTag as exc:
            raise DecryptError(
                "authentication failed: the payload was altered or belongs to "
                "another customer"
            ) from exc

    def _data_key_for_payload(self, customer_id: str) -> DataKey:
        cached = self.data_keys.get(customer_id)
        if cached is not None:
            return cached
        for _attempt in range(3):
            ((value, legacy),) = self.read_records([customer_id])
            record = _record_of(value, legacy)
            if record is not None:
                data_key = parse_data_key(self.keyring, customer_id, record)
                self.data_keys.put(customer_id, data_key)
                return data_key
            created = new_data_key(self.keyring, customer_id, NO_EPOCH, 0)
            if self.journal is not None:
                self.journal.publish(customer_id, created.record)
                self.journal.flush()
            try:
                if value is None:
                    # A key-only envelope: the customer's first snapshot reuses it.
                    stored = self.client.set(
                        snapshot_key(customer_id),
                        key_only_envelope(created.record),
                        nx=True,
                    )
                else:
                    # A format 1 value has no data key: add one in the two-key
                    # layout, which its next write turns into an envelope.
                    stored = self.client.set(
                        data_key_key(customer_id), created.record, nx=True
                    )
            except redis.RedisError as exc:
                raise StoreUnavailable(
                    f"Redis write failed: {type(exc).__name__}"
                ) from exc
            if stored:
                self.data_keys.put(customer_id, created)
                self._present[customer_id] = created.record[:_RECORD_ID_EPOCH_BYTES]
                return created
            if self.journal is not None:
                self.journal.tombstone(customer_id, created.dek_id)
                self.journal.flush()
        raise StoreUnavailable(
            "data key creation kept racing with another writer; retry the batch"
        )
