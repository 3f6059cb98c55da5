"""The preference audit run: scan every customer, apply the rules, publish a report.

Removals are written as one ``INFERRED`` merge change per customer through the
store's check-and-set, then the new sealed value goes to the snapshot topic so a
rebuild keeps the result. Customers inactive past the retention period are erased
(see :mod:`prefsync.erasure`). Allergies are only flagged. The report names
customers by pseudonym and leaves out dietary and allergy codes, which are health
and religious data. Unless the run is a dry run, it goes to the audit topic as one
summary message and one message per changed customer.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog
from confluent_kafka import Producer
from tqdm import tqdm

from prefsync.config import Settings
from prefsync.domain.audit import AuditRules, Finding, evaluate, removal_change
from prefsync.domain.events import event_tie
from prefsync.domain.snapshot import apply_change
from prefsync.domain.view import mask_token
from prefsync.erasure import erase_customer
from prefsync.errors import PrefsyncError, StoreUnavailable
from prefsync.keyadmin import customer_ids
from prefsync.store import KEY_PREFIX, SnapshotStore

__all__ = ["AuditReport", "run_audit"]

log = structlog.get_logger()

CHUNK = 500
MAX_ATTEMPTS = 5
# Fields whose entry keys are special-category data (health, religion): the report
# counts their entries without naming them.
_HIDDEN_ENTRIES = frozenset({"dietary", "allergies"})


@dataclass
class AuditReport:
    """The findings and changes of one audit run."""

    run_id: str
    started_at_ms: int
    dry_run: bool
    rules: dict[str, Any]
    customers_scanned: int = 0
    customers_changed: int = 0
    values_removed: int = 0
    allergies_flagged: int = 0
    customers_erased: int = 0
    unreadable: int = 0
    finished_at_ms: int | None = None
    customers: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Return the report without the per-customer entries."""
        data = asdict(self)
        data.pop("customers")
        return data


@dataclass
class _Run:
    settings: Settings
    store: SnapshotStore
    producer: Producer
    rules: AuditRules
    report: AuditReport
    now_ms: int


def run_audit(
    settings: Settings,
    store: SnapshotStore,
    producer: Producer,
    rules: AuditRules,
    *,
    dry_run: bool,
    now_ms: int | None = None,
    progress: bool = True,
) -> AuditReport:
    """Audit every customer in Redis; with ``dry_run`` change and publish nothing.

    Raises:
        StoreUnavailable: Redis or Kafka could not be reached; the run can be
            repeated, because removals already made are not found again.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    report = AuditReport(str(uuid.uuid4()), now, dry_run, rules.describe())
    store.audit_context = {"requested_by": f"prefsync audit {report.run_id}"}
    context = _Run(settings, store, producer, rules, report, now)
    ids = sorted(customer_ids(store.client, KEY_PREFIX))
    with tqdm(
        total=len(ids), desc="auditing", unit="customer", disable=not progress
    ) as bar:
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            for customer_id, stored in store.read_many(chunk).items():
                report.customers_scanned += 1
                if stored.error is not None:
                    report.unreadable += 1
                    continue
                if stored.snapshot is None:
                    continue
                findings = evaluate(stored.snapshot, rules, now)
                if findings:
                    _handle(context, customer_id, findings)
            bar.update(len(chunk))
    report.finished_at_ms = int(time.time() * 1000)
    if not dry_run:
        _publish_report(settings, producer, report)
    log.info(
        "audit.done", **{k: v for k, v in report.summary().items() if k != "rules"}
    )
    return report


def _handle(context: _Run, customer_id: str, findings: list[Finding]) -> None:
    report = context.report
    report.customers.append(
        {
            "pseudonym": context.store.pseudonym(customer_id),
            "findings": [_describe(f) for f in findings],
        }
    )
    report.allergies_flagged += sum(f.action == "flag" for f in findings)
    if any(f.action == "erase" for f in findings):
        report.customers_erased += 1
        if not report.dry_run:
            erase_customer(
                context.settings,
                context.store,
                context.producer,
                customer_id,
                requested_by=f"prefsync audit {report.run_id} (retention)",
                crm_version=0,
                now_ms=context.now_ms,
            )
        return
    removed = sum(f.action == "remove" for f in findings)
    if not removed:
        return
    report.values_removed += removed
    report.customers_changed += 1
    if not report.dry_run:
        _remove(context, customer_id)


def _remove(context: _Run, customer_id: str) -> None:
    store = context.store
    now_ms = context.now_ms
    tie = event_tie(f"audit:{context.report.run_id}:{customer_id}")
    for _attempt in range(MAX_ATTEMPTS):
        stored = store.read_many([customer_id])[customer_id]
        if stored.snapshot is None:
            return
        change = removal_change(
            customer_id, evaluate(stored.snapshot, context.rules, now_ms), now_ms, tie
        )
        if change is None or not apply_change(stored.snapshot, change):
            return
        if not store.write_many([(stored.snapshot, stored.generation)]):
            value = store.read_raw(customer_id)
            if value is not None:
                context.producer.produce(
                    context.settings.topics.snapshots, value, customer_id.encode()
                )
            return
    raise PrefsyncError(
        f"audit write lost {MAX_ATTEMPTS} races in a row for one customer; run the "
        "audit again"
    )


def _describe(finding: Finding) -> dict[str, Any]:
    entry = finding.entry
    if finding.field in _HIDDEN_ENTRIES:
        entry = None
    elif finding.field == "payment_methods":
        entry = mask_token(entry)
    return {
        "field": finding.field,
        "entry": entry,
        "reason": finding.reason,
        "action": finding.action,
    }


def _publish_report(
    settings: Settings, producer: Producer, report: AuditReport
) -> None:
    topic = settings.topics.audit
    key = report.run_id.encode()
    producer.produce(topic, json.dumps({"summary": report.summary()}).encode(), key)
    for entry in report.customers:
        payload = {"run_id": report.run_id, **entry}
        producer.produce(topic, json.dumps(payload).encode(), key)
    remaining = producer.flush(30)
    if remaining:
        raise StoreUnavailable(
            f"{remaining} audit report messages were not acknowledged by Kafka"
        )
