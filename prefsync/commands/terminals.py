"""``prefsync terminals``: register terminals, print a new token once, list, disable."""

from __future__ import annotations

import argparse

from prefsync.api.terminals import (
    ROLES,
    add_terminal,
    read_terminals_file,
    set_disabled,
)
from prefsync.config import Settings

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``add``, ``list``, ``disable`` and ``enable`` actions."""
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser(
        "add", help="register a terminal, or replace its token, and print the token"
    )
    add.add_argument("terminal_id", help="the terminal's id, e.g. T-0001")
    add.add_argument("--store", required=True, help="store id the terminal is in")
    add.add_argument(
        "--role",
        action="append",
        choices=ROLES,
        required=True,
        help="a staff role the terminal may act for; repeat for several",
    )
    actions.add_parser("list", help="list terminals, their store and roles")
    for name in ("disable", "enable"):
        sub = actions.add_parser(name, help=f"{name} a terminal's token")
        sub.add_argument("terminal_id")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Change or print the terminals file (``PREFSYNC_TERMINALS_FILE``)."""
    path = settings.terminals_path
    if args.action == "add":
        token = add_terminal(path, args.terminal_id, args.store, args.role)
        print(f"terminal {args.terminal_id} registered in {path}")
        print("token (shown once, store it in the terminal):")
        print(token)
        return 0
    if args.action == "list":
        terminals = read_terminals_file(path)["terminals"]
        for terminal_id, entry in sorted(terminals.items()):
            state = "disabled" if entry.get("disabled") else "active"
            roles = ",".join(entry["roles"])
            print(f"{terminal_id}\tstore={entry['store_id']}\troles={roles}\t{state}")
        return 0
    set_disabled(path, args.terminal_id, args.action == "disable")
    print(f"terminal {args.terminal_id} {args.action}d")
    return 0
