"""``prefsync lookup``: a terminal's read of one customer, payment details masked."""

from __future__ import annotations

import argparse
import json

from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.domain.view import masked_view, to_view
from prefsync.store import SnapshotStore, connect

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the customer id argument."""
    parser.add_argument("customer_id", help="the CRM's customer id")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the customer's preferences as JSON, or exit 1 when none are stored."""
    store = SnapshotStore(
        connect(settings.redis_url, cluster=settings.redis_cluster),
        Keyring.load(settings.key_path),
    )
    view = masked_view(to_view(store.read(args.customer_id)))
    if view is None:
        print(json.dumps({"customer_id": args.customer_id, "found": False}))
        return 1
    print(json.dumps(view, indent=2))
    return 0
