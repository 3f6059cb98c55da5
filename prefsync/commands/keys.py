"""``prefsync keys``: the key lifecycle (create, add, promote, re-encrypt, retire).

Rotation without downtime: ``add`` a key, wait until every process has reloaded the
key file (within a few seconds), ``promote`` it, run ``reencrypt``, then ``retire``
the old key. See docs/privacy.md.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from prefsync.config import Settings
from prefsync.crypto import (
    KEY_ID_PATTERN,
    edit_key_file,
    generate_key_file,
    load_keyring,
    new_key_entry,
)
from prefsync.errors import ConfigError
from prefsync.keyadmin import count_wrapped, reencrypt, restore_data_keys
from prefsync.store import USAGE_KEY, connect
from worker.main import build_store

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the key lifecycle actions."""
    actions = parser.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="write a new key file if none exists")
    init.add_argument("--key-id", default="k1", help="id of the first key (default k1)")
    listing = actions.add_parser(
        "list", help="print key ids, states, the primary and encryption counts"
    )
    listing.add_argument(
        "--count-data-keys",
        action="store_true",
        help="also count the data keys wrapped under each key (scans Redis)",
    )
    add = actions.add_parser("add", help="add a new random key (not yet primary)")
    add.add_argument("key_id", help="1-16 of a-z, 0-9 and -; never reuse an id")
    promote = actions.add_parser("promote", help="make a key the primary key")
    promote.add_argument("key_id")
    retire = actions.add_parser(
        "retire", help="destroy a key's material once nothing is wrapped under it"
    )
    retire.add_argument("key_id")
    retire.add_argument(
        "--force",
        action="store_true",
        help="retire even if Redis still contains data keys wrapped under it; those "
        "customers become unreadable",
    )
    reencrypt = actions.add_parser(
        "reencrypt", help="rewrap every data key under the primary key"
    )
    reencrypt.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar"
    )
    restore = actions.add_parser(
        "restore", help="restore data keys into Redis from the Kafka key topic"
    )
    restore.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one key action; never prints key material."""
    handler = {
        "init": _init,
        "list": _list,
        "add": _add,
        "promote": _promote,
        "retire": _retire,
        "reencrypt": _reencrypt,
        "restore": _restore,
    }[args.action]
    return handler(args, settings)


def _init(args: argparse.Namespace, settings: Settings) -> int:
    path = settings.key_path
    if path.exists():
        print(f"key file {path} already exists; left unchanged")
        return 0
    generate_key_file(path, args.key_id)
    print(f"wrote key file {path} (mode 0600) with primary key {args.key_id}")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    keyring = load_keyring(settings)
    client = connect(settings.redis_url, cluster=settings.redis_cluster)
    usage = {k.decode(): int(v) for k, v in client.hgetall(USAGE_KEY).items()}
    wrapped: dict[str, int] = {}
    if args.count_data_keys:
        wrapped = dict(count_wrapped(client))
    for key in keyring.keys:
        row: dict[str, Any] = {
            "key_id": key.key_id,
            "state": key.state,
            "primary": key.key_id == keyring.primary,
            "encryptions": usage.get(key.key_id, 0),
            "hard_limit": keyring.hard_limit,
        }
        if args.count_data_keys:
            row["data_keys_wrapped"] = wrapped.get(key.key_id, 0)
        print(json.dumps(row))
    return 0


def _add(args: argparse.Namespace, settings: Settings) -> int:
    if not KEY_ID_PATTERN.fullmatch(args.key_id):
        raise ConfigError(f"invalid key id {args.key_id!r}: use 1-16 of a-z, 0-9, -")

    def change(document: dict[str, Any]) -> None:
        if args.key_id in document["keys"]:
            raise ConfigError(
                f"key id {args.key_id!r} already exists (ids are never reused)"
            )
        document["keys"][args.key_id] = new_key_entry()

    edit_key_file(settings.key_path, change)
    print(f"added key {args.key_id}; promote it once every process has reloaded")
    return 0


def _promote(args: argparse.Namespace, settings: Settings) -> int:
    def change(document: dict[str, Any]) -> None:
        entry = document["keys"].get(args.key_id)
        if entry is None or entry.get("state", "active") != "active":
            raise ConfigError(f"key {args.key_id!r} is not an active key")
        document["primary"] = args.key_id

    edit_key_file(settings.key_path, change)
    print(f"key {args.key_id} is primary; run `prefsync keys reencrypt` next")
    return 0


def _retire(args: argparse.Namespace, settings: Settings) -> int:
    keyring = load_keyring(settings)
    if args.key_id == keyring.primary:
        raise ConfigError(
            f"key {args.key_id!r} is the primary key: promote another key first"
        )
    # NOTE: only data key records are counted. The checkout ledger encrypts under
    # keyring keys directly and keeps records for 90 days after the promotion.
    if not args.force:
        client = connect(settings.redis_url, cluster=settings.redis_cluster)
        remaining = count_wrapped(client).get(args.key_id, 0)
        if remaining:
            raise ConfigError(
                f"{remaining} data keys are still wrapped under {args.key_id!r}: run "
                "`prefsync keys reencrypt` first (or pass --force)"
            )

    def change(document: dict[str, Any]) -> None:
        document["keys"][args.key_id] = {
            "state": "retired",
            "retired_at_ms": int(time.time() * 1000),
        }

    edit_key_file(settings.key_path, change)
    print(f"retired key {args.key_id}; its material is deleted from the key file")
    return 0


def _reencrypt(args: argparse.Namespace, settings: Settings) -> int:
    report = reencrypt(
        build_store(settings, actor="prefsync keys reencrypt"),
        progress=not args.no_progress,
    )
    print(json.dumps(report.__dict__))
    return 0 if report.unreadable == 0 else 1


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    report = restore_data_keys(
        settings, build_store(settings), progress=not args.no_progress
    )
    print(json.dumps(report.__dict__))
    return 0
