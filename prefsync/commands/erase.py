"""``prefsync erase``: erase one customer everywhere prefsync keeps data."""

from __future__ import annotations

import argparse
import json

from confluent_kafka import Producer

from prefsync.config import Settings
from prefsync.erasure import erase_customer
from prefsync.kafka_admin import ensure_topics
from worker.main import build_store

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the customer id and the audit options."""
    parser.add_argument("customer_id", help="the CRM's customer id")
    parser.add_argument(
        "--requested-by",
        default=None,
        help="who or what requested the erasure, e.g. a ticket id; stored in the "
        "audit record, so it must not contain personal data (default: the OS user)",
    )
    parser.add_argument(
        "--crm-version",
        type=int,
        default=None,
        help="erase up to this CRM revision (or the newest stored, if higher), so "
        "the CRM may send higher revisions for the same id later; default: every "
        "revision, so the id stays erased for good",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Erase the customer and print the audit summary (no customer id) as JSON."""
    ensure_topics(settings)
    store = build_store(settings, actor="prefsync erase")
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    result = erase_customer(
        settings,
        store,
        producer,
        args.customer_id,
        requested_by=args.requested_by,
        crm_version=args.crm_version,
    )
    print(
        json.dumps(
            {
                "erased": True,
                "pseudonym": result.pseudonym,
                "had_data": result.had_data,
                "floor": {
                    "crm_version": result.floor[0],
                    "occurred_at_ms": result.floor[1],
                },
                "unreadable_value_deleted": result.unreadable_value_deleted,
                "ledger_records_deleted": result.ledger_records_deleted,
            }
        )
    )
    return 0
