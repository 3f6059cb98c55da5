"""The worker loop: consume a batch, merge per customer, write Redis, then commit.

The commit path of one batch, in order:

1. Decode and validate every message. Poison messages are kept for the dead-letter
   topic; the rest become merge changes grouped by customer.
2. Read the current snapshots of the batch's customers from Redis (one round trip).
3. Fold each customer's changes into its snapshot in memory.
4. Seal and write the changed snapshots with a generation check (one round trip).
   Customers whose write lost a race are re-read and merged again.
5. Set the batch's partition watermarks in Redis. A replaced watermark lower than
   the one this worker wrote last means Redis lost data: the partition is replayed
   from the watermark Redis still has, and its offsets are not committed.
6. Publish the sealed snapshots to the compacted snapshot topic and the poison
   messages to the dead-letter topic, and wait until Kafka acknowledged all of them.
7. Commit the offsets after the last message of each partition, without waiting
   for the reply (synchronously on revoke and shutdown).

Committing before step 6 could lose events if the process died in between;
committing after is at-least-once, and the merge makes redelivered events harmless.

When a step fails (Redis unreachable, Kafka not acknowledging, a commit error), the
batch stays pending and the worker pauses its partitions. It keeps calling
``consume``, so the group does not expel it for exceeding ``max.poll.interval.ms``,
retries the step with exponential backoff, and resumes the partitions once the batch
is committed.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumers.kafka import CommitLog
from prefsync.codec import WireCodec
from prefsync.config import Settings
from prefsync.domain.snapshot import Change, Snapshot, apply_change
from prefsync.errors import DecodeError, PrefsyncError, StoreUnavailable
from prefsync.store import SnapshotStore
from producers.dead_letter import DeadLetterProducer
from producers.snapshots import SnapshotPublisher
from worker.batch import Batch, Partition, Stage, decode_message
from worker.continuity import Continuity, Verdict
from worker.metrics import WorkerMetrics
from worker.watermarks import WatermarkTracker

__all__ = ["Worker", "WorkerStats"]

log = structlog.get_logger()

MAX_WRITE_ATTEMPTS = 20
RETRY_FIRST_DELAY_S = 0.1
PUBLISH_WAIT_S = 1.0
COMMITTED_TIMEOUT_S = 10.0
COMMITTED_RETRY_TIMEOUT_S = 2.0
LAG_INTERVAL_S = 2.0
# How often offsets whose commit failed are sent again.
RECOMMIT_INTERVAL_S = 1.0
LIVENESS_STALE_S = 60.0


class PublishFailed(PrefsyncError):
    """Kafka reported a delivery error for a snapshot or a dead letter."""


class ConsumerFatal(PrefsyncError):
    """The consumer hit an error librdkafka cannot recover from."""


def _is_fatal(error: KafkaError) -> bool:
    """Return whether the consumer cannot go on after ``error``.

    librdkafka reports a fenced static member as FENCED_INSTANCE_ID on the commit,
    then as a _FATAL consume event, whose ``fatal()`` flag is not always set.
    """
    return error.fatal() or error.code() in (
        KafkaError._FATAL,
        KafkaError.FENCED_INSTANCE_ID,
    )


def _fatal(error: KafkaError) -> ConsumerFatal:
    log.error("consumer.fatal", error=error.str(), code=error.name())
    return ConsumerFatal(
        f"Kafka consumer error {error.name()} is fatal ({error.str()}); the worker "
        "stops. FENCED_INSTANCE_ID means another worker runs with the same "
        "PREFSYNC_GROUP_INSTANCE_ID: give each worker its own id and restart"
    )


@dataclass
class WorkerStats:
    """Counters since start."""

    consumed: int = 0
    applied: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    snapshots_written: int = 0
    snapshots_published: int = 0
    write_conflicts: int = 0
    redis_retries: int = 0
    kafka_retries: int = 0
    restores_detected: int = 0
    batches: int = 0
    started_at: float = field(default_factory=time.monotonic)
    first_batch_at: float | None = None
    last_batch_at: float | None = None
    # Seconds from each batch's first message to its commit, summed. Polls between
    # batches that returned nothing or only partition ends are left out.
    busy_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the counters, the time since start, and the events per busy second,
        which leaves out the group join and idle polls."""
        data = asdict(self)
        for name in ("started_at", "first_batch_at", "last_batch_at"):
            data.pop(name)
        data["elapsed_s"] = round(time.monotonic() - self.started_at, 3)
        data["busy_s"] = round(self.busy_s, 3)
        busy_s = self.busy_s
        data["events_per_s"] = round(self.consumed / busy_s, 1) if busy_s else 0.0
        return data


class Worker:
    """Consume the input topics in one consumer group and keep Redis in sync."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        store: SnapshotStore,
        codec: WireCodec,
        dead_letters: DeadLetterProducer,
        *,
        snapshots: SnapshotPublisher | None = None,
        metrics: WorkerMetrics | None = None,
        commit_log: CommitLog | None = None,
    ):
        self.settings = settings
        # The consumer's commit reply callback: partitions whose commit failed are
        # committed again (see _recommit_failed).
        self.commit_log = commit_log
        self.consumer = consumer
        self.store = store
        self.codec = codec
        self.dead_letters = dead_letters
        self.snapshots = snapshots
        self.metrics = metrics or WorkerMetrics()
        self.stats = WorkerStats()
        self.assignment: set[Partition] = set()
        self.last_loop_at = time.monotonic()
        self._stopping = False
        self._stop_signal: str | None = None
        self._idle_since = time.monotonic()
        self._at_end: set[Partition] = set()
        self._pending: Batch | None = None
        self._attempt = 0
        self._retry_at = 0.0
        self._paused: set[Partition] = set()
        self._paused_since: float | None = None
        self._watermarks = WatermarkTracker()
        self._continuity = Continuity()
        # Assigned partitions whose committed offset could not be read yet.
        self._unverified: set[Partition] = set()
        # The last offset commit sent per partition, whether or not it succeeded.
        self._sent: dict[Partition, int] = {}
        # Set by a rebalance: kept partitions are sought to their expected offsets.
        self._reseek = False
        self._check_watermarks_at = 0.0
        self._lag_at = 0.0
        self._recommit_at = 0.0
        # Extra checks of each decoded event; one raising ValidationError
        # dead-letters the message (see prefsync.defaults.enforce).
        self.event_checks: list[Callable[[Message, dict[str, Any]], None]] = []
        # Called with the message count of every committed batch (progress bars).
        self.on_committed: Callable[[int], None] | None = None

    # ----------------------------------------------------------------------------
    # Lifecycle

    def stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Ask the loop to finish the current step, commit what is ready and return."""
        self._stopping = True
        if signum is not None:
            self._stop_signal = signal.Signals(signum).name

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(
        self, *, until_caught_up: bool = False, idle_exit_s: float = 5.0
    ) -> WorkerStats:
        """Run until stopped, or with ``until_caught_up`` until every partition is read.

        ``idle_exit_s``: with ``until_caught_up``, also return after this long without
        messages once partitions are assigned.
        """
        log.info("worker.start", settings=self.settings.redacted())
        self.consumer.subscribe(
            self.settings.topics.inputs(),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._idle_since = time.monotonic()
        try:
            while not self._stopping:
                self.last_loop_at = time.monotonic()
                if self._reseek:
                    self._reseek = False
                    self._seek_expected(self.assignment - self._paused)
                if self._pending is not None:
                    self._serve_pending()
                    continue
                self._periodic_tasks()
                messages = self._next_batch()
                if self._receive(messages):
                    self._idle_since = time.monotonic()
                    self._advance()
                elif until_caught_up and self._finished(idle_exit_s):
                    break
        finally:
            self._shutdown()
        return self.stats

    def _next_batch(self) -> list[Message]:
        """Wait up to ``poll_timeout_s`` for one message, then take what is fetched.

        ``Consumer.consume(n, timeout)`` returns only after ``n`` messages or the
        whole timeout, so at a low rate every event waited ``poll_timeout_s``. The
        second call takes what librdkafka has already fetched without waiting, so
        batches stay full under load and the first event of a quiet spell is
        handled at once.
        """
        first = self.consumer.poll(self.settings.poll_timeout_s)
        if first is None:
            return []
        rest = self.consumer.consume(self.settings.batch_max_messages - 1, 0)
        return [first, *rest]

    def caught_up(self) -> bool:
        """Return True when every assigned partition has reported its end since its
        last message (librdkafka's partition EOF event)."""
        return bool(self.assignment) and self.assignment <= self._at_end

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Return whether the loop turned recently, for ``/healthz``."""
        age_s = time.monotonic() - self.last_loop_at
        return age_s < LIVENESS_STALE_S, {"loop_age_s": round(age_s, 3)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Return whether the worker has partitions, reaches Redis and is not stuck."""
        reasons = []
        if not self.assignment:
            reasons.append("no partitions assigned")
        try:
            self.store.client.ping()
        except Exception as exc:  # any failure means "not reachable" to a probe
            reasons.append(f"Redis unreachable: {type(exc).__name__}")
        paused_s = (
            0.0 if self._paused_since is None else time.monotonic() - self._paused_since
        )
        if paused_s > self.settings.readiness_max_pause_s:
            reasons.append(f"paused for {paused_s:.0f} s")
        details = {
            "assigned": len(self.assignment),
            "paused_s": round(paused_s, 3),
            "reasons": reasons,
        }
        return not reasons, details

    def _finished(self, idle_exit_s: float) -> bool:
        return bool(self.assignment) and (
            self.caught_up() or time.monotonic() - self._idle_since > idle_exit_s
        )

    def _shutdown(self) -> None:
        pending = len(self._pending) if self._pending is not None else 0
        if self._pending is not None and self._pending.stage is Stage.COMMIT:
            try:
                self._commit(self._pending, wait=True)
                pending = 0
            except KafkaException as exc:
                log.error("offsets.commit_failed", error=str(exc), when="shutdown")
                self.metrics.errors.labels("kafka_commit").inc()
        else:
            # The last commit sent without waiting may not have reached Kafka yet.
            self._commit_sent(set(self.assignment), "shutdown")
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.error("consumer.close_failed", error=str(exc))
        log.info(
            "worker.stop",
            signal=self._stop_signal,
            uncommitted_messages=pending,
            **self.stats.as_dict(),
        )

    # ----------------------------------------------------------------------------
    # Receiving and the commit path

    def _receive(self, messages: list[Message]) -> bool:
        """Decode ``messages`` into the pending batch; return whether any was valid."""
        # Counted per topic and added once per call: a labelled Prometheus counter
        # per message was 5% of the worker's time in a py-spy profile.
        consumed_by_topic: dict[str, int] = {}
        self._continuity.begin()
        batch = self._pending
        for message in messages:
            error = message.error()
            tp = (message.topic(), message.partition())
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(tp)
                elif _is_fatal(error):
                    raise _fatal(error)
                else:
                    log.error("consume.error", error=error.str())
                    self.metrics.errors.labels("consume").inc()
                continue
            if not self._continuous(tp, message.offset()):
                continue
            self._at_end.discard(tp)
            consumed_by_topic[tp[0]] = consumed_by_topic.get(tp[0], 0) + 1
            outcome: Any
            try:
                outcome = decode_message(self.codec, message, self.event_checks)
            except DecodeError as exc:
                outcome = exc
            if batch is None:
                batch = self._pending = Batch()
            batch.add(message, outcome)
        for topic, count in consumed_by_topic.items():
            self.stats.consumed += count
            self.metrics.consumed.labels(topic).inc(count)
        return bool(consumed_by_topic)

    def _continuous(self, tp: Partition, offset: int) -> bool:
        """Return whether to take the message at ``offset``; seek back on a gap."""
        verdict, gap = self._continuity.check(tp, offset)
        if gap is None:
            return verdict is Verdict.ACCEPT
        fields = {
            "topic": tp[0],
            "partition": tp[1],
            "expected_offset": gap.expected,
            "received_offset": gap.received,
        }
        if verdict is Verdict.ACCEPT:
            log.info("consume.gap_confirmed", **fields)
            return True
        log.warning("consume.gap_detected", **fields)
        self.metrics.gaps.inc()
        try:
            self.consumer.seek(TopicPartition(tp[0], tp[1], gap.expected))
        except KafkaException as exc:
            # The next message of the partition shows the gap again and retries.
            log.warning("consumer.seek_failed", error=str(exc), **fields)
            self.metrics.errors.labels("kafka_seek").inc()
        return False

    def _serve_pending(self) -> None:
        """Retry the pending batch when due, and keep the group membership alive."""
        wait_s = max(0.0, self._retry_at - time.monotonic())
        messages = self.consumer.consume(
            self.settings.batch_max_messages,
            min(self.settings.poll_timeout_s, wait_s) if wait_s else 0,
        )
        self._receive(messages)
        if self._pending is not None and time.monotonic() >= self._retry_at:
            self._advance()

    def _advance(self) -> None:
        """Run the pending batch's remaining steps; on failure schedule a retry."""
        batch = self._pending
        if batch is None:
            return
        try:
            if batch.stage is Stage.WRITE:
                self._write(batch)
                batch.stage = Stage.PUBLISH
            if batch.stage is Stage.PUBLISH:
                if not self._publish(batch):
                    self._hold("kafka_publish", None)
                    return
                batch.stage = Stage.COMMIT
            self._commit(batch)
        except StoreUnavailable as exc:
            self._hold("redis", exc)
            return
        except PublishFailed as exc:
            batch.stage = Stage.PUBLISH
            self._hold("kafka_publish", exc)
            return
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and _is_fatal(error):
                raise _fatal(error) from exc
            self._hold("kafka_commit", exc)
            return
        self._finish(batch)

    def _finish(self, batch: Batch) -> None:
        self._pending = None
        if self.on_committed is not None:
            self.on_committed(len(batch))
        self.stats.batches += 1
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = batch.started_at
        self.stats.last_batch_at = time.monotonic()
        self.stats.busy_s += self.stats.last_batch_at - batch.started_at
        self.metrics.batch_duration.observe(time.monotonic() - batch.started_at)
        if self._attempt:
            log.info("worker.recovered", attempts=self._attempt)
            # Redis may have restarted empty while this batch waited: compare every
            # assigned partition's watermark before the next batch.
            self._check_watermarks_at = 0.0
        self._attempt = 0
        self._retry_at = 0.0
        self._resume()

    def _hold(self, operation: str, error: Exception | None) -> None:
        """Keep the batch pending, pause the partitions and schedule the next try."""
        self._pause()
        if error is None:
            # Still waiting for acknowledgements: no backoff, the wait itself blocks.
            self._retry_at = time.monotonic()
            return
        self._attempt += 1
        delay_s = min(
            RETRY_FIRST_DELAY_S * 2 ** (self._attempt - 1),
            self.settings.redis_retry_max_delay_s,
        )
        self._retry_at = time.monotonic() + delay_s
        if operation == "redis":
            self.stats.redis_retries += 1
            event = "store.retry"
        else:
            self.stats.kafka_retries += 1
            event = "kafka.retry"
        self.metrics.retries.labels(operation).inc()
        self.metrics.errors.labels(type(error).__name__).inc()
        log.warning(
            event,
            operation=operation,
            attempt=self._attempt,
            delay_s=round(delay_s, 2),
            pending_messages=len(self._pending or ()),
            partitions=_describe(sorted(self._pending.partitions()))
            if self._pending
            else [],
            error=str(error),
        )

    def _write(self, batch: Batch) -> None:
        """Steps 2 to 5 of the module doc for every customer of the batch."""
        grouped = batch.changes()
        pending = set(grouped)
        batch.sealed = {}
        effective: dict[str, int] = {}
        written = 0
        for _attempt in range(MAX_WRITE_ATTEMPTS):
            writes = self._merge(batch, grouped, pending, effective)
            lost = set(self.store.write_sealed(writes))
            written += len(writes) - len(lost)
            if not lost:
                break
            self.stats.write_conflicts += len(lost)
            self.metrics.conflicts.inc(len(lost))
            log.info("store.write_conflict", customers=len(lost))
            pending = lost
        else:
            raise PrefsyncError(
                f"{len(pending)} snapshots still conflicted after "
                f"{MAX_WRITE_ATTEMPTS} attempts; another writer is updating the same "
                "customers continuously"
            )
        self._write_watermarks(batch)
        if log.is_enabled_for(logging.DEBUG):
            # Checked first: the offset ranges are built only when they are logged.
            log.debug("batch.written", messages=len(batch), ranges=batch.ranges())
        applied = sum(effective.values())
        ignored = sum(len(grouped[cid]) for cid in effective) - applied
        self.stats.snapshots_written += written
        self.metrics.snapshots_written.inc(written)
        self.stats.applied += applied
        self.metrics.applied.inc(applied)
        self.stats.ignored += ignored
        self.metrics.ignored.inc(ignored)

    def _merge(
        self,
        batch: Batch,
        grouped: dict[str, list[Change]],
        pending: set[str],
        effective: dict[str, int],
    ) -> list[tuple[str, int, bytes]]:
        """Read ``pending`` customers, fold their changes and seal what changed."""
        stored = self.store.read_many(pending)
        writes: list[tuple[str, int, bytes]] = []
        for customer_id in pending:
            current = stored[customer_id]
            if current.error is not None:
                self._mark_unreadable(batch, customer_id, current.error)
                effective.pop(customer_id, None)
                continue
            snapshot = current.snapshot or Snapshot(customer_id)
            count = sum(apply_change(snapshot, c) for c in grouped[customer_id])
            effective[customer_id] = count
            if count:
                value = self.store.seal(snapshot, current.generation + 1)
                writes.append((customer_id, current.generation, value))
                batch.sealed[customer_id] = value
            elif current.snapshot is not None:
                # Published again: an earlier attempt may have written Redis but
                # stopped before the snapshot topic acknowledged it. A value sealed
                # under a newly proposed data key is dropped, because that key is
                # journaled only by a Redis write.
                value = self.store.seal(snapshot, current.generation)
                if not self.store.discard_proposal(customer_id):
                    batch.sealed[customer_id] = value
        return writes

    def _mark_unreadable(
        self, batch: Batch, customer_id: str, error: PrefsyncError
    ) -> None:
        if customer_id in batch.unreadable:
            return
        log.error("store.snapshot_unreadable", error=str(error))
        self.metrics.errors.labels("stored_snapshot_unreadable").inc()
        batch.unreadable[customer_id] = DecodeError(
            f"stored snapshot unreadable ({error}); events kept here for replay",
            error_class="stored_snapshot_unreadable",
        )

    def _write_watermarks(self, batch: Batch) -> None:
        """Step 5: set the watermarks and detect a Redis that lost data."""
        offsets = {
            tp: offset
            for tp, offset in batch.next_offsets().items()
            if tp not in batch.replayed
        }
        group = self.settings.consumer_group
        previous = self.store.swap_watermarks(group, offsets)
        lost = {
            tp: prev for tp, prev in previous.items() if self._watermarks.lost(tp, prev)
        }
        if lost:
            self.store.restore_watermarks(group, lost)
            batch.replayed.update(lost)
        for tp, offset in offsets.items():
            if tp not in lost:
                self._watermarks.wrote(tp, offset)
        for tp, stored in lost.items():
            self._replay(tp, stored, "batch")

    def _publish(self, batch: Batch) -> bool:
        """Step 6; return False while Kafka has not acknowledged everything yet."""
        dead = batch.dead_letters()
        if not batch.produced:
            for message, error in dead:
                self.dead_letters.send(message, error)
            if self.snapshots is not None:
                for customer_id, value in batch.sealed.items():
                    self.snapshots.publish(customer_id, value)
            batch.produced = True
        # Both share one producer, so the first wait covers the messages of both.
        # TODO: overlap this wait and the key journal's with decoding the next
        # batch. Together they took 1.4 to 2.6 us per event in bench step timings.
        remaining, failures = self.dead_letters.wait(PUBLISH_WAIT_S)
        if self.snapshots is not None:
            failures += self.snapshots.wait(0)[1]
        if failures:
            batch.produced = False
            raise PublishFailed(
                f"Kafka delivery failed for {len(failures)} messages, e.g. "
                f"{failures[0]}; the batch is published again"
            )
        if remaining:
            return False
        self.stats.dead_lettered += len(dead)
        for _, error in dead:
            self.metrics.dead_lettered.labels(error.error_class).inc()
        self.stats.snapshots_published += len(batch.sealed)
        self.metrics.snapshots_published.inc(len(batch.sealed))
        return True

    def _commit(self, batch: Batch, *, wait: bool = False) -> None:
        """Step 7: commit the batch's offsets of the partitions still assigned.

        In the loop the commit is sent without waiting for the reply. Every batch's
        data is in Redis before its commit is sent, so a failed commit (a rebalance
        under way) loses nothing. The next commit, or the synchronous one on revoke
        and shutdown (``wait``), covers its offsets. A crash in between only applies
        the batch again.
        """
        offsets = [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in batch.commit_offsets().items()
            if (topic, partition) in self.assignment
        ]
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=not wait)
            for p in offsets:
                self._sent[(p.topic, p.partition)] = p.offset
            self.metrics.commits.inc()
            log.debug(
                "batch.committed",
                offsets={f"{p.topic}[{p.partition}]": p.offset for p in offsets},
            )

    # ----------------------------------------------------------------------------
    # Pausing, replaying and periodic checks

    def _pause(self) -> None:
        wanted = self.assignment - self._paused
        if wanted:
            self.consumer.pause(_partitions(wanted))
            self._paused |= wanted
            log.warning("partitions.paused", partitions=_describe(sorted(wanted)))
        if self._paused_since is None:
            self._paused_since = time.monotonic()
            self.metrics.paused.set(1)

    def _resume(self) -> None:
        resumable = self._paused & self.assignment
        if resumable:
            self.consumer.resume(_partitions(resumable))
            log.info("partitions.resumed", partitions=_describe(sorted(resumable)))
            self._seek_expected(resumable)
        self._paused.clear()
        self._paused_since = None
        self.metrics.paused.set(0)

    def _seek_expected(self, partitions: set[Partition]) -> None:
        """Seek ``partitions`` to the offset after their last accepted message.

        Called after a resume and after a rebalance: librdkafka skipped a message at
        both moments (see worker/continuity.py).
        """
        for tp in sorted(partitions):
            expected = self._continuity.expected(tp)
            if expected is None:
                continue
            self._continuity.arm(tp)
            try:
                self.consumer.seek(TopicPartition(tp[0], tp[1], expected))
            except KafkaException as exc:
                # The armed continuity check catches a skip on the next message.
                log.warning(
                    "consumer.seek_failed",
                    topic=tp[0],
                    partition=tp[1],
                    expected_offset=expected,
                    error=str(exc),
                )
                self.metrics.errors.labels("kafka_seek").inc()

    def _replay(self, tp: Partition, stored: int | None, detected_by: str) -> None:
        """Seek ``tp`` back to the watermark Redis still has, or to its beginning."""
        required = self._watermarks.required().get(tp)
        self.stats.restores_detected += 1
        self.metrics.restores_detected.inc()
        log.warning(
            "store.restore_detected",
            topic=tp[0],
            partition=tp[1],
            required_watermark=required,
            stored_watermark=stored,
            detected_by=detected_by,
        )
        offset = OFFSET_BEGINNING if stored is None else stored
        self.consumer.seek(TopicPartition(tp[0], tp[1], offset))
        self._continuity.start(tp, stored)
        self._sent.pop(tp, None)
        self._watermarks.wrote(tp, stored)

    def _periodic_tasks(self) -> None:
        now = time.monotonic()
        if now >= self._check_watermarks_at:
            self._check_watermarks_at = now + self.settings.watermark_check_interval_s
            self._check_watermarks()
        if now >= self._lag_at:
            self._lag_at = now + LAG_INTERVAL_S
            self._update_lag()
        if now >= self._recommit_at:
            self._recommit_at = now + RECOMMIT_INTERVAL_S
            self._recommit_failed()

    def _recommit_failed(self) -> None:
        """Send again the last offsets sent for partitions whose commit failed.

        A commit that fails during a rebalance is covered by the next one, but a
        partition that receives no more messages gets no next commit: its committed
        offset, and the group's lag, would stay behind until a message arrives.
        """
        if self.commit_log is None:
            return
        offsets = [
            TopicPartition(tp[0], tp[1], self._sent[tp])
            for tp in sorted(self.commit_log.take_failed())
            if tp in self.assignment and tp in self._sent
        ]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.warning("offsets.commit_failed", error=str(exc), when="recommit")
            self.metrics.errors.labels("kafka_commit").inc()
            return
        log.info("offsets.recommitted", partitions=len(offsets))

    def _verify_committed(self) -> None:
        """Read the committed offsets that failed at assignment, to know what Redis
        must have for those partitions."""
        wanted = self._unverified & self.assignment
        self._unverified &= self.assignment
        if not wanted:
            return
        try:
            committed = self.consumer.committed(
                _partitions(wanted), timeout=COMMITTED_RETRY_TIMEOUT_S
            )
        except KafkaException as exc:
            log.warning("offsets.committed_failed", error=str(exc), when="retry")
            self.metrics.errors.labels("kafka_committed").inc()
            return
        required = self._watermarks.required()
        for p in committed:
            tp = (p.topic, p.partition)
            if tp not in required:
                self._watermarks.assigned(tp, p.offset)
            self._unverified.discard(tp)

    def _check_watermarks(self) -> None:
        """Compare the stored watermark of every assigned partition, even idle ones."""
        self._verify_committed()
        required = self._watermarks.required()
        if not required:
            return
        try:
            stored = self.store.read_watermarks(self.settings.consumer_group, required)
        except StoreUnavailable as exc:
            log.warning("store.watermark_check_failed", error=str(exc))
            self.metrics.errors.labels("StoreUnavailable").inc()
            return
        for tp, value in stored.items():
            if tp in self.assignment and self._watermarks.lost(tp, value):
                try:
                    self._replay(tp, value, "periodic_check")
                except KafkaException as exc:
                    # The partition is not fetching yet; the next check retries.
                    log.warning(
                        "consumer.seek_failed",
                        topic=tp[0],
                        partition=tp[1],
                        error=str(exc),
                    )
                    self.metrics.errors.labels("kafka_seek").inc()

    def _update_lag(self) -> None:
        if not self.assignment:
            return
        try:
            positions = self.consumer.position(_partitions(self.assignment))
        except KafkaException:
            return
        for position in positions:
            try:
                _, high = self.consumer.get_watermark_offsets(position, cached=True)
            except KafkaException:
                continue
            if position.offset >= 0 and high >= 0:
                self.metrics.lag.labels(position.topic, str(position.partition)).set(
                    max(0, high - position.offset)
                )

    # ----------------------------------------------------------------------------
    # Rebalance callbacks

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._idle_since = time.monotonic()
        added = {(p.topic, p.partition) for p in partitions}
        self._at_end.difference_update(added)
        self.assignment.update(added)
        self.metrics.assigned.set(len(self.assignment))
        log.info("partitions.assigned", partitions=_describe(sorted(added)))
        self._after_rebalance()
        if not partitions:
            return
        starts = self._start_offsets(consumer, partitions)
        if starts:
            start_list = [
                TopicPartition(
                    p.topic, p.partition, starts.get((p.topic, p.partition), p.offset)
                )
                for p in partitions
            ]
            try:
                consumer.incremental_assign(start_list)
            except KafkaException:
                consumer.assign(start_list)

    def _start_offsets(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> dict[Partition, int]:
        """Return start offsets for partitions whose Redis watermark is behind."""
        try:
            committed = consumer.committed(partitions, timeout=COMMITTED_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("offsets.committed_failed", error=str(exc), when="assignment")
            self.metrics.errors.labels("kafka_committed").inc()
            # The periodic watermark check reads them again and replays a loss.
            self._unverified.update((p.topic, p.partition) for p in partitions)
            return {}
        for p in committed:
            self._watermarks.assigned((p.topic, p.partition), p.offset)
            self._continuity.start((p.topic, p.partition), p.offset)
        required = {
            (p.topic, p.partition): p.offset for p in committed if p.offset >= 0
        }
        if not required:
            return {}
        try:
            stored = self.store.read_watermarks(self.settings.consumer_group, required)
        except StoreUnavailable as exc:
            # The first batch's watermark write finds out instead.
            log.warning("store.watermark_check_failed", error=str(exc))
            self.metrics.errors.labels("StoreUnavailable").inc()
            return {}
        starts: dict[Partition, int] = {}
        for tp, value in stored.items():
            if self._watermarks.lost(tp, value):
                self.stats.restores_detected += 1
                self.metrics.restores_detected.inc()
                log.warning(
                    "store.restore_detected",
                    topic=tp[0],
                    partition=tp[1],
                    required_watermark=required[tp],
                    stored_watermark=value,
                    detected_by="assignment",
                )
                starts[tp] = OFFSET_BEGINNING if value is None else value
                self._continuity.start(tp, value)
                self._watermarks.wrote(tp, value)
        return starts

    def _after_rebalance(self) -> None:
        """Check the next message of every kept partition and seek them afterwards.

        In the rebalance fault runs librdkafka skipped one message on partitions the
        worker kept through a cooperative rebalance, as it does after a resume.
        """
        for tp in self.assignment:
            self._continuity.arm(tp)
        self._reseek = True

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        batch = self._pending
        if batch is not None and batch.stage is Stage.COMMIT:
            # The batch is in Redis and in Kafka: commit it before the partitions move.
            try:
                self._commit(batch, wait=True)
                self._finish(batch)
            except KafkaException as exc:
                log.error("offsets.commit_failed", error=str(exc), when="revoke")
                self.metrics.errors.labels("kafka_commit").inc()
        self._commit_sent(revoked, "revoke")
        self._drop(revoked, "partitions.revoked")
        self._after_rebalance()

    def _commit_sent(self, partitions: set[Partition], when: str) -> None:
        """Commit again, and wait for, the last offsets sent for ``partitions``.

        A commit sent without waiting fails while the group rebalances. Committing
        the same offsets before the partitions move spares their new owner from
        applying those batches again.
        """
        offsets = [
            TopicPartition(tp[0], tp[1], offset)
            for tp, offset in sorted(self._sent.items())
            if tp in partitions and tp in self.assignment
        ]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("offsets.commit_failed", error=str(exc), when=when)
            self.metrics.errors.labels("kafka_commit").inc()

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may own these partitions already: committing is not allowed.
        self._drop({(p.topic, p.partition) for p in partitions}, "partitions.lost")
        self._after_rebalance()

    def _drop(self, partitions: set[Partition], event: str) -> None:
        paused = self._paused & partitions
        if paused:
            # librdkafka keeps a partition's pause flag across a new assignment, so a
            # partition lost while paused would stay paused when it comes back.
            try:
                self.consumer.resume(_partitions(paused))
            except KafkaException as exc:
                log.warning("consumer.resume_failed", error=str(exc))
        if self._pending is not None:
            remaining = self._pending.without(partitions)
            self._pending = remaining if len(remaining) else None
        self._unverified -= partitions
        for tp in partitions:
            self._sent.pop(tp, None)
            self._watermarks.revoked(tp)
            self._continuity.forget(tp)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(tp[0], str(tp[1]))
        self.assignment.difference_update(partitions)
        self._paused.difference_update(partitions)
        if self._pending is None and self._paused_since is not None:
            self._resume()
        self.metrics.assigned.set(len(self.assignment))
        log.info(event, partitions=_describe(sorted(partitions)))


def _partitions(partitions: set[Partition]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t, p in sorted(partitions)]


def _describe(partitions: list[Partition]) -> list[str]:
    return [f"{t}[{p}]" for t, p in partitions]
