"""``prefsync redis-acl``: write a Redis ACL file with one user per prefsync role."""

from __future__ import annotations

import argparse
from pathlib import Path

from prefsync.config import Settings
from prefsync.redis_acl import ROLES, write_acl_files

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the output paths."""
    parser.add_argument(
        "--acl-file", type=Path, required=True, help="ACL file for redis aclfile"
    )
    parser.add_argument(
        "--secrets-file",
        type=Path,
        required=True,
        help="new file (mode 0600) that receives the generated passwords",
    )


def run(args: argparse.Namespace, _settings: Settings) -> int:
    """Write both files; print the role names, never the passwords."""
    write_acl_files(args.acl_file, args.secrets_file)
    print(f"wrote {args.acl_file} with users {', '.join(ROLES)}; default user off")
    print(f"passwords are in {args.secrets_file} (mode 0600)")
    return 0
