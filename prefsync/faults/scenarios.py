"""Fault scenarios against the real Kafka and Redis of the local stack.

Each scenario publishes a seeded CRM stream on a background thread while worker
subprocesses consume it, injects its fault while the group still lags, lets the
workers catch up, and compares Redis customer by customer with the simulator's
reference fold. The report counts:

- ``events_lost``: input messages that no worker wrote to Redis, counted offset by
  offset from the workers' ``batch.written`` log lines. ``customers_mismatched``
  checks the same from the Redis side;
- ``duplicate_applications``: input messages written to Redis more than once, by
  redelivery after a kill or by a replay after Redis lost data. The merge makes
  them harmless, which the comparison confirms;
- ``recovery_s``: per fault, from the fault (kill, stop) to the first offset commit
  after it was cleared, on a partition the fault had stopped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
import structlog

from prefsync import stack
from prefsync.config import Settings
from prefsync.errors import PrefsyncError
from prefsync.faults.applied import applied_interruptions
from prefsync.faults.harness import (
    FaultEnv,
    Publisher,
    ScenarioReport,
    WorkerProcess,
    fault_env,
)
from producers.simulator import CrmSimulator

__all__ = ["LONG", "SCENARIOS", "SHORT", "Profile", "run_scenario"]

log = structlog.get_logger()

CATCH_UP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Profile:
    """Sizes of one run of the suite: stream length and number of faults."""

    name: str
    customers: int
    worker_kills: int
    redis_outages: int
    redis_outage_s: float
    redis_losses: int
    kafka_restarts: int
    rebalance_kills: int
    applied_events: int
    applied_interruptions: int


SHORT = Profile(
    name="short",
    customers=2_000,
    worker_kills=3,
    redis_outages=1,
    # Longer than the workers' max.poll.interval.ms (10 s) in the harness.
    redis_outage_s=12.0,
    redis_losses=1,
    kafka_restarts=1,
    rebalance_kills=2,
    applied_events=3_000,
    applied_interruptions=2,
)
LONG = Profile(
    name="long",
    customers=20_000,
    worker_kills=25,
    redis_outages=3,
    redis_outage_s=15.0,
    redis_losses=3,
    kafka_restarts=3,
    rebalance_kills=10,
    applied_events=20_000,
    applied_interruptions=10,
)


def _simulator(profile: Profile, seed: int, scale: float = 1.0) -> CrmSimulator:
    return CrmSimulator(
        customers=int(profile.customers * scale), seed=seed, erase_rate=0.02
    )


def _start(
    env: FaultEnv, report: ScenarioReport, sim: CrmSimulator, rate_per_s: float
) -> Publisher:
    report.customers = sim.customers
    return Publisher(env.settings, sim, rate_per_s)


def _mid_stream(env: FaultEnv, publisher: Publisher) -> bool:
    lag = env.lag()
    return not publisher.done or bool(lag)


def worker_kills(env: FaultEnv, profile: Profile, rng: random.Random) -> ScenarioReport:
    """Kill the only worker with SIGKILL at random moments and restart it at once.

    The worker uses static membership (``PREFSYNC_GROUP_INSTANCE_ID``), as a pod
    restarted under the same name would, so its successor takes the partitions
    back without waiting for the session timeout.
    """
    report = ScenarioReport("worker_kills")
    sim = _simulator(profile, seed=31, scale=2.5)
    # Faster than one worker applies, so the kills land while it is busy.
    publisher = _start(env, report, sim, rate_per_s=8_000)
    worker = env.start_worker("worker-0", instance_id="fault-worker")
    for round_number in range(profile.worker_kills):
        env.wait_progress(worker.started_at)
        time.sleep(rng.uniform(0.0, 0.8))
        report.faults_mid_stream += _mid_stream(env, publisher)
        killed_at = worker.kill()
        report.faults += 1
        worker = env.start_worker(
            f"worker-{round_number + 1}", instance_id="fault-worker"
        )
        report.recovery_s.append(env.wait_progress(killed_at) - killed_at)
    env.wait_caught_up(publisher, CATCH_UP_TIMEOUT_S)
    report.events_published = publisher.wait()
    env.finish(report, sim)
    return report


def redis_outages(
    env: FaultEnv, profile: Profile, rng: random.Random, *, lose_data: bool = False
) -> ScenarioReport:
    """Stop Redis for several seconds mid-stream, then start it again.

    Checks that the worker retries with logged backoff and commits nothing while
    Redis is down. With ``lose_data`` the restarted Redis comes back without the
    test's database (as a Redis restored from an empty backup would), and the worker
    must replay what it lost.
    """
    report = ScenarioReport("redis_loss" if lose_data else "redis_outage")
    sim = _simulator(profile, seed=37)
    publisher = _start(env, report, sim, rate_per_s=2_000)
    worker = env.start_worker("worker-0")
    commits_during = 0
    retries = 0
    rebalances = 0
    outages = profile.redis_outages
    outage_s = profile.redis_outage_s
    if lose_data:
        outages, outage_s = profile.redis_losses, 2.0
    for _ in range(outages):
        env.wait_progress(worker.started_at)
        time.sleep(rng.uniform(0.0, 0.5))
        report.faults_mid_stream += _mid_stream(env, publisher)
        stopped_at = time.time()
        stack.redis_stop(env.stack)
        report.faults += 1
        first_retry = worker.wait_for_event("store.retry", stopped_at, 60.0)
        time.sleep(outage_s)
        restarting_at = time.time()
        stack.redis_start(env.stack)
        if lose_data:
            redis.Redis.from_url(env.settings.redis_url).flushdb()
        events = worker.events()
        commits_during += sum(
            1
            for e in events
            if e.get("event") == "batch.committed"
            and first_retry <= e["ts"] <= restarting_at
        )
        retries += sum(
            1
            for e in events
            if e.get("event") == "store.retry"
            and stopped_at <= e["ts"] <= restarting_at
        )
        report.recovery_s.append(env.wait_progress(restarting_at) - stopped_at)
    env.wait_caught_up(publisher, CATCH_UP_TIMEOUT_S)
    report.events_published = publisher.wait()
    report.extra["commits_while_redis_down"] = commits_during
    report.extra["retries_logged"] = retries
    report.extra["partitions_lost_while_redis_down"] = rebalances
    env.finish(report, sim)
    return report


def kafka_restarts(
    env: FaultEnv, profile: Profile, rng: random.Random
) -> ScenarioReport:
    """Restart the Kafka broker mid-stream while the producer and the worker run."""
    report = ScenarioReport("kafka_restart")
    sim = _simulator(profile, seed=41)
    publisher = _start(env, report, sim, rate_per_s=1_000)
    worker = env.start_worker("worker-0")
    for _ in range(profile.kafka_restarts):
        env.wait_progress(worker.started_at)
        time.sleep(rng.uniform(0.0, 0.5))
        report.faults_mid_stream += _mid_stream(env, publisher)
        stopped_at = time.time()
        stack.kafka_restart(env.stack)
        report.faults += 1
        report.recovery_s.append(env.wait_progress(time.time()) - stopped_at)
    env.wait_caught_up(publisher, CATCH_UP_TIMEOUT_S)
    report.events_published = publisher.wait()
    env.finish(report, sim)
    return report


def _owned(worker: WorkerProcess) -> set[str]:
    owned: set[str] = set()
    for event in worker.events():
        partitions = set(event.get("partitions") or [])
        if event.get("event") == "partitions.assigned":
            owned |= partitions
        elif event.get("event") in {"partitions.revoked", "partitions.lost"}:
            owned -= partitions
    return owned


def _first_commit_on(env: FaultEnv, partitions: set[str], after: float) -> float:
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while time.monotonic() < deadline:
        times = [
            e["ts"]
            for w in env.workers
            for e in w.events()
            if e.get("event") == "batch.committed"
            and e["ts"] >= after
            and partitions & set(e.get("offsets", {}))
        ]
        if times:
            return min(times)
        if env.lag() == 0:
            return time.time()
        time.sleep(0.1)
    raise PrefsyncError(f"partitions {sorted(partitions)} made no progress")


def rebalances(env: FaultEnv, profile: Profile, rng: random.Random) -> ScenarioReport:
    """Two workers in one group; one is killed with SIGKILL and restarted repeatedly.

    Without static membership the group waits ``session.timeout.ms`` (10 s) before
    it gives the killed worker's partitions to the survivor, so recovery times
    include that wait.
    """
    report = ScenarioReport("rebalance")
    sim = _simulator(profile, seed=43, scale=1.5)
    publisher = _start(env, report, sim, rate_per_s=500)
    steady = env.start_worker("steady")
    victim = env.start_worker("victim-0")
    for round_number in range(profile.rebalance_kills):
        victim.wait_for_event("batch.committed", victim.started_at, 120.0)
        time.sleep(rng.uniform(0.0, 0.5))
        owned = _owned(victim)
        report.faults_mid_stream += _mid_stream(env, publisher)
        killed_at = victim.kill()
        report.faults += 1
        time.sleep(rng.uniform(0.0, 2.0))
        victim = env.start_worker(f"victim-{round_number + 1}")
        report.recovery_s.append(_first_commit_on(env, owned, killed_at) - killed_at)
    report.extra["steady_alive"] = steady.process.poll() is None
    env.wait_caught_up(publisher, CATCH_UP_TIMEOUT_S)
    report.events_published = publisher.wait()
    env.finish(report, sim)
    return report


def redis_losses(env: FaultEnv, profile: Profile, rng: random.Random) -> ScenarioReport:
    """Stop and start Redis, which comes back without the data of the worker."""
    return redis_outages(env, profile, rng, lose_data=True)


def applied_producer(
    env: FaultEnv, profile: Profile, rng: random.Random
) -> ScenarioReport:
    """Kill the applied-event publisher mid-stream; no acknowledged event is lost."""
    return applied_interruptions(
        env, profile.applied_interruptions, profile.applied_events, rng
    )


Scenario = Callable[[FaultEnv, Profile, random.Random], ScenarioReport]

SCENARIOS: dict[str, Scenario] = {
    "worker_kills": worker_kills,
    "redis_outage": redis_outages,
    "redis_loss": redis_losses,
    "kafka_restart": kafka_restarts,
    "rebalance": rebalances,
    "applied_producer": applied_producer,
}


def run_scenario(
    name: str, base: Settings, workdir: Path, profile: Profile, *, redis_db: int
) -> ScenarioReport:
    """Run one scenario in a fresh environment and return its report."""
    started = time.monotonic()
    log.info("faults.scenario_start", scenario=name, profile=profile.name)
    with fault_env(base, workdir / name, redis_db=redis_db) as env:
        report = SCENARIOS[name](env, profile, random.Random(f"{name}:{profile.name}"))
    report.seconds = time.monotonic() - started
    log.info("faults.scenario_done", **report.as_dict())
    return report
