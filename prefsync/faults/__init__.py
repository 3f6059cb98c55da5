"""Fault injection against the local Kafka and Redis.

``prefsync faults`` (:mod:`prefsync.faults.command`) and the ``tests/faults`` suite
run the scenarios of :mod:`prefsync.faults.scenarios` on the harness of
:mod:`prefsync.faults.harness`.
"""
