"""``prefsync keys``: create a key file, or list the ids of the configured keys."""

from __future__ import annotations

import argparse

from prefsync.config import Settings
from prefsync.crypto import Keyring, generate_key_file

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``init`` and ``list`` actions."""
    actions = parser.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="write a new key file if none exists")
    init.add_argument("--key-id", default="k1", help="id of the first key (default k1)")
    actions.add_parser("list", help="print the key ids and which one is primary")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Create or list keys; never prints key material."""
    path = settings.key_path
    if args.action == "init":
        if path.exists():
            print(f"key file {path} already exists; left unchanged")
            return 0
        generate_key_file(path, args.key_id)
        print(f"wrote key file {path} (mode 0600) with primary key {args.key_id}")
        return 0
    keyring = Keyring.load(path)
    for key_id in keyring.key_ids:
        marker = " (primary)" if key_id == keyring.primary else ""
        print(f"{key_id}{marker}")
    return 0
