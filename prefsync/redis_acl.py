"""Redis ACL users for prefsync: each role gets only the commands and keys it needs.

Roles (see docs/privacy.md):

- ``prefsync-worker``: reads and writes snapshots and data keys through the Lua
  check-and-set, and increments the key usage counter;
- ``prefsync-api``: the terminal API, reads snapshots and data keys only, and keeps
  its transaction ledger (``txn:*``, ``txn-pending``) and the defaults write lock;
- ``prefsync-admin``: erasure, audits, re-encryption and restore, which also scan
  and delete; no administrative or dangerous commands;
- ``default``: disabled, so a client without credentials can do nothing.

Passwords are stored in the ACL file as SHA-256 hashes only.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ROLES", "render_acl", "write_acl_files"]

_SNAPSHOT_KEYS = "~pref:{*} ~dek:{*}"
# CLIENT SETINFO (Redis 7.2+) is left out: Debian 12 ships 7.0, and redis-py
# ignores its failure.
_CONNECT = "+ping +select +hello"
_SCRIPTS = "+eval +evalsha +script|load +script|exists"

# Role name -> ACL rules after "user NAME on #HASH resetkeys resetchannels -@all".
ROLES: dict[str, str] = {
    "prefsync-worker": (
        f"{_SNAPSHOT_KEYS} ~prefsync:* {_CONNECT} {_SCRIPTS} "
        "+get +mget +set +hincrby +hget +hgetall "
        # A selector (Redis 7.0+): DEL on two-key layout records only, which a
        # write deletes when it stores the customer's envelope.
        "(~dek:{*} +del)"
    ),
    "prefsync-api": (
        f"%R{_SNAPSHOT_KEYS.replace(' ~', ' %R~')} ~txn:* ~txn-pending "
        f"~defaults:write-lock {_CONNECT} {_SCRIPTS} +get +mget +set +del +hget "
        "+hgetall +hset +hdel +hkeys +pexpire +zadd +zrem +zrangebyscore"
    ),
    "prefsync-admin": (
        f"{_SNAPSHOT_KEYS} ~prefsync:* ~txn:* ~txn-pending {_CONNECT} {_SCRIPTS} "
        "+get +mget +set +del +hincrby +hget +hgetall +scan +type +zrem"
    ),
}


def render_acl(passwords: Mapping[str, str]) -> str:
    """Return the ACL file text for ``passwords`` (role name -> plaintext password)."""
    lines = ["user default off resetkeys resetchannels -@all"]
    for role, rules in ROLES.items():
        digest = hashlib.sha256(passwords[role].encode()).hexdigest()
        lines.append(f"user {role} on #{digest} resetkeys resetchannels -@all {rules}")
    return "\n".join(lines) + "\n"


def write_acl_files(acl_path: Path, secrets_path: Path) -> dict[str, str]:
    """Write an ACL file with random passwords, and the passwords to a 0600 file.

    Returns:
        Role name -> password, for the caller to hand to each service.

    Raises:
        FileExistsError: the secrets file already exists (it is never overwritten).
    """
    passwords = {role: secrets.token_urlsafe(32) for role in ROLES}
    fd = os.open(secrets_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        for role, password in passwords.items():
            variable = "PREFSYNC_REDIS_PASSWORD_" + role.split("-")[1].upper()
            handle.write(f"{variable}={password}\n")
    acl_path.write_text(render_acl(passwords))
    return passwords
