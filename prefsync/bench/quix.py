"""The peer build: the same job written the direct way with Quix Streams.

What a user would write instead of prefsync, with Quix Streams' defaults wherever
there is a choice:

- one ``Application`` in a consumer group of its own, reading the input topics from
  the earliest offset, the topics joined with ``StreamingDataFrame.concat``;
- an ``apply`` that decodes the Avro event with prefsync's codec, then a
  ``group_by`` on the customer id. Quix Streams keeps the state of a concatenated
  frame per source topic, so without this repartition a customer's profile and
  loyalty events would merge into two separate snapshots;
- a stateful ``apply`` that merges the event into the customer's snapshot with
  prefsync's merge (``to_change`` and ``apply_change``), keeps the snapshot in Quix
  Streams' RocksDB state (pickled, backed by its changelog topic), and returns it;
- a ``BatchingSink`` that, at each checkpoint (every 5 s, the default), writes the
  newest snapshot of each customer in the batch through prefsync's store: one
  pipelined read and one pipelined check-and-set write, as the worker does.

Decoding, merging, encryption and the Redis writes are the same code as in the
worker, so the comparison measures the framework around them.
"""

from __future__ import annotations

import contextlib
import pickle
import tempfile
import time
import warnings
from typing import Any

from prefsync.bench.env import BenchEnv, BenchError
from prefsync.bench.ingest import Phase, digest_of
from prefsync.domain.events import to_change
from prefsync.domain.snapshot import Snapshot, apply_change
from prefsync.progress import Progress
from prefsync.store import SnapshotStore

# Quix Streams is the optional `bench` extra. It imports confluent-kafka's Schema
# Registry client, which warns about authlib deprecations that concern neither this
# module nor its readers. authlib turns its own warnings on when it is imported, so
# it is imported first and silenced after.
with warnings.catch_warnings():
    with contextlib.suppress(ImportError):
        import authlib.deprecate  # noqa: F401
    warnings.simplefilter("ignore")
    try:
        from quixstreams import Application
        from quixstreams.sinks import BatchingSink, SinkBatch
        from quixstreams.state import State
        from quixstreams.state.rocksdb import RocksDBOptions
    except ImportError as exc:
        _IMPORT_ERROR: ImportError | None = exc
    else:
        _IMPORT_ERROR = None

__all__ = ["quix_available", "quix_phase"]

IDLE_STOP_S = 30.0
STATE_KEY = "snapshot"


def quix_available() -> str | None:
    """Return None when Quix Streams imports, else why it does not."""
    if _IMPORT_ERROR is None:
        return None
    return f"{_IMPORT_ERROR}; install it with pip install -e '.[bench]'"


class _Timing:
    """First message processed, merges done and last sink write, for the rate."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.first_at: float | None = None
        self.last_write_at: float | None = None
        self.processed = 0

    def on_message_processed(self, _topic: str, _partition: int, _offset: int) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()

    def merged(self) -> None:
        self.processed += 1
        self.progress.advance()


def quix_phase(env: BenchEnv, expected: int, customer_ids: list[str]) -> Phase:
    """Run the Quix Streams build until it processed ``expected`` messages.

    Raises:
        BenchError: it stopped early, or wrote nothing.
    """
    env.flush()
    with (
        tempfile.TemporaryDirectory(prefix="prefsync-bench-quix-") as state_dir,
        Progress(
            "bench.quix", expected, unit="event", enabled=env.progress
        ) as progress,
    ):
        timing = _Timing(progress)
        app = _build_app(env, state_dir, timing)
        app.run(count=expected, timeout=IDLE_STOP_S, collect=False)
    if timing.processed < expected or timing.first_at is None:
        raise BenchError(
            f"Quix Streams build stopped after {timing.processed} of {expected} "
            "messages; see its log lines above"
        )
    if timing.last_write_at is None:
        raise BenchError("Quix Streams build wrote nothing to Redis")
    seconds = timing.last_write_at - timing.first_at
    return Phase("quix", timing.processed, seconds, digest_of(env, customer_ids))


def _store_sink(store: SnapshotStore, timing: _Timing) -> BatchingSink:
    """Return a sink that writes a checkpoint's newest snapshot per customer through
    prefsync's store: one pipelined read and one pipelined check-and-set write.

    Values are sealed under per-customer data keys whose records the store writes
    beside the value in one check-and-set, so a plain ``SET`` of sealed bytes (Quix
    Streams' ``RedisSink``) would leave values no reader can decrypt.
    """

    class StoreSink(BatchingSink):  # type: ignore[misc]
        def write(self, batch: SinkBatch) -> None:
            latest: dict[str, Snapshot] = {item.key: item.value for item in batch}
            pending = list(latest)
            while pending:
                stored = store.read_many(pending)
                writes = [(latest[c], stored[c].generation) for c in pending]
                pending = store.write_many(writes)
            timing.last_write_at = time.perf_counter()

    return StoreSink()


def _build_app(env: BenchEnv, state_dir: str, timing: _Timing) -> Application:
    settings = env.with_group("quix")
    app = Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=settings.consumer_group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        rocksdb_options=RocksDBOptions(dumps=pickle.dumps, loads=pickle.loads),
        on_message_processed=timing.on_message_processed,
        loglevel="WARNING",
    )
    codec = env.codec
    store = SnapshotStore(env.redis(), env.keyring)

    def decode(value: bytes) -> dict[str, object]:
        _, record_name, record = codec.decode(value)
        return {"record_name": record_name, "record": record}

    def merge(value: dict[str, Any], state: State) -> Snapshot:
        change = to_change(value["record_name"], value["record"])
        snapshot = state.get(STATE_KEY) or Snapshot(change.customer_id)
        apply_change(snapshot, change)
        state.set(STATE_KEY, snapshot)
        timing.merged()
        return snapshot

    frames = [
        app.dataframe(
            app.topic(name, key_deserializer="str", value_deserializer="bytes")
        )
        for name in settings.topics.inputs()
    ]
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)
    # State of a concatenated frame is kept per source topic, so the events of one
    # customer on two topics meet only after a repartition by customer id.
    sdf = sdf.apply(decode).group_by(
        lambda value: value["record"]["customer_id"], name="customer"
    )
    sdf = sdf.apply(merge, stateful=True)
    sdf.sink(_store_sink(store, timing))
    return app
