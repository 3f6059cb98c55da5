"""``prefsync lookup``: a terminal's read of one customer, payment details masked."""

from __future__ import annotations

import argparse
import json
import time

from prefsync.config import Settings
from prefsync.crypto import load_keyring
from prefsync.domain.audit import AuditRules, provenance, reconfirmation_flags
from prefsync.domain.view import masked_view, to_view
from prefsync.store import SnapshotStore, connect

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the customer id argument and the provenance switch."""
    parser.add_argument("customer_id", help="the CRM's customer id")
    parser.add_argument(
        "--provenance",
        action="store_true",
        help="add each value's source and last confirmation time, and the allergy "
        "entries due for re-confirmation under the default audit rules",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the customer's preferences as JSON; exit 1 when none are stored."""
    store = SnapshotStore(
        connect(settings.redis_url, cluster=settings.redis_cluster),
        load_keyring(settings),
    )
    snapshot = store.read(args.customer_id)
    view = masked_view(to_view(snapshot))
    if view is None or snapshot is None:
        print(json.dumps({"customer_id": args.customer_id, "found": False}))
        return 1
    if args.provenance:
        now_ms = int(time.time() * 1000)
        view["provenance"] = {
            name: origin
            for name, origin in provenance(snapshot).items()
            if not name.startswith("payment_methods.")
        }
        view["reconfirm"] = reconfirmation_flags(snapshot, AuditRules(), now_ms)
    print(json.dumps(view, indent=2))
    return 0
