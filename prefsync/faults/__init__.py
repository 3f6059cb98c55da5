"""Fault injection against the local Kafka and Redis: ``prefsync faults`` and the
``tests/faults`` suite share these scenarios."""

from prefsync.faults.harness import FaultEnv, ScenarioReport
from prefsync.faults.scenarios import LONG, SCENARIOS, SHORT, Profile, run_scenario

__all__ = [
    "LONG",
    "SCENARIOS",
    "SHORT",
    "FaultEnv",
    "Profile",
    "ScenarioReport",
    "run_scenario",
]
