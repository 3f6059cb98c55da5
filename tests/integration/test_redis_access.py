"""Redis ACL users and TLS on a private redis-server: each role can do only its job."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from prefsync.config import Settings
from prefsync.crypto import Keyring
from prefsync.domain.events import PROFILE_RECORD
from prefsync.domain.snapshot import Change, Snapshot, apply_change
from prefsync.domain.view import to_view
from prefsync.envelope import envelope_record, to_reference
from prefsync.errors import StoreUnavailable
from prefsync.keycheck import check_key_name, verify_keyring
from prefsync.redis_acl import ROLES, render_acl
from prefsync.store import SnapshotStore, connect
from tests.helpers import produce_records, profile_event, run_worker
from tests.redis_server import RedisServer, start_redis, write_certificates

pytestmark = pytest.mark.integration

PASSWORDS = {role: f"pw-{role}-0123456789" for role in ROLES}


def _snapshot(customer_id: str) -> Snapshot:
    snapshot = Snapshot(customer_id)
    change = Change(customer_id, (1, 1, 1, 0))
    change.scalars["special_instructions"] = "no ice"
    apply_change(snapshot, change)
    return snapshot


def _start(tmp_path: Path, *, tls: bool) -> RedisServer:
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(render_acl(PASSWORDS))
    return start_redis(tmp_path, aclfile=aclfile, tls=tls)


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with prefsync's ACL users."""
    server = _start(tmp_path, tls=False)
    yield server
    server.stop()


def _client(server: RedisServer, role: str) -> redis.Redis:
    return connect(server.url(role, PASSWORDS[role]))  # type: ignore[return-value]


def test_default_user_disabled(acl_server: RedisServer) -> None:
    """A client without credentials cannot run any command."""
    client = redis.Redis.from_url(acl_server.url(), socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        client.ping()
    with pytest.raises(redis.AuthenticationError):
        client.get("pref:{C1}")


def test_wrong_password_rejected(acl_server: RedisServer) -> None:
    """A role with a wrong password cannot connect."""
    client = redis.Redis.from_url(
        acl_server.url("prefsync-worker", "wrong"), socket_timeout=5
    )
    with pytest.raises(redis.AuthenticationError):
        client.ping()


def test_worker_writes_snapshots(acl_server: RedisServer, keyring: Keyring) -> None:
    """The worker user writes and reads snapshots through the store."""
    store = SnapshotStore(_client(acl_server, "prefsync-worker"), keyring)
    assert store.write_many([(_snapshot("C1"), 0)]) == []
    assert store.read("C1") == _snapshot("C1")


def test_worker_migrates_two_key_value(
    acl_server: RedisServer, keyring: Keyring
) -> None:
    """The worker user's write of a two-key customer deletes its ``dek:{id}``."""
    admin = _client(acl_server, "prefsync-admin")
    SnapshotStore(admin, keyring).write_many([(_snapshot("C1"), 0)])
    value = admin.get("pref:{C1}")
    admin.set("pref:{C1}", to_reference(value))
    admin.set("dek:{C1}", envelope_record(value))
    store = SnapshotStore(_client(acl_server, "prefsync-worker"), keyring)
    stored = store.read_many(["C1"])["C1"]

    assert store.write_many([(stored.snapshot, stored.generation)]) == []

    assert admin.get("dek:{C1}") is None
    assert envelope_record(admin.get("pref:{C1}")) == envelope_record(value)


def test_worker_verifies_keyring(acl_server: RedisServer, keyring: Keyring) -> None:
    """The worker user can write and verify the key check values."""
    client = _client(acl_server, "prefsync-worker")
    SnapshotStore(client, keyring).write_many([(_snapshot("C1"), 0)])

    verify_keyring(client, keyring)
    verify_keyring(client, keyring)

    assert client.get(check_key_name(keyring.primary)) is not None


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHDB",),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "requirepass"),
        ("DUMP", "pref:{C1}"),
        ("SAVE",),
        ("ACL", "LIST"),
        ("SET", "other:key", "x"),
        ("GET", "session:abc"),
        ("SCAN", "0"),
        ("DEL", "pref:{C1}"),
        ("SHUTDOWN",),
        ("MONITOR",),
    ],
)
def test_worker_denied(acl_server: RedisServer, command: tuple[str, ...]) -> None:
    """The worker user cannot run admin commands or touch other keys."""
    client = _client(acl_server, "prefsync-worker")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)


def test_api_reads_only(acl_server: RedisServer, keyring: Keyring) -> None:
    """The API user reads snapshots, and every write fails."""
    SnapshotStore(_client(acl_server, "prefsync-worker"), keyring).write_many(
        [(_snapshot("C1"), 0)]
    )
    api = SnapshotStore(_client(acl_server, "prefsync-api"), keyring)
    assert api.read("C1") == _snapshot("C1")
    with pytest.raises(StoreUnavailable):
        api.write_many([(_snapshot("C2"), 0)])


@pytest.mark.parametrize(
    "command",
    [
        ("SET", "pref:{C1}", "x"),
        ("DEL", "pref:{C1}"),
        ("SET", "dek:{C1}", "x"),
        ("HSET", "pref:{C1}", "f", "x"),
        ("GET", "other:key"),
        ("HSET", "other:key", "f", "x"),
        ("HINCRBY", "prefsync:key-usage", "k1", "1"),
        ("GET", "prefsync:key-usage"),
        ("SCAN", "0"),
        ("KEYS", "*"),
        ("FLUSHDB",),
        ("CONFIG", "GET", "*"),
    ],
)
def test_api_denied(acl_server: RedisServer, command: tuple[str, ...]) -> None:
    """The API user cannot write, script, scan or administer."""
    client = _client(acl_server, "prefsync-api")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)


def test_api_script_cannot_write_snapshots(acl_server: RedisServer) -> None:
    """A Lua script run by the API user cannot write snapshot keys either."""
    client = _client(acl_server, "prefsync-api")
    with pytest.raises(
        redis.exceptions.ResponseError, match=r"(?i)no permission|noperm"
    ):
        client.eval("return redis.call('SET', KEYS[1], 'x')", 1, "pref:{C1}")


def test_api_keeps_its_ledger(acl_server: RedisServer) -> None:
    """The API user writes its transaction ledger and the defaults lock."""
    client = _client(acl_server, "prefsync-api")
    assert client.hset("txn:{C1}:t1", mapping={"state": "applied"}) == 1
    assert client.pexpire("txn:{C1}:t1", 60_000)
    assert client.zadd("txn-pending", {"txn:{C1}:t1": 1}) == 1
    assert client.set("defaults:write-lock", "token", nx=True, px=1000)
    assert client.hgetall("txn:{C1}:t1") == {b"state": b"applied"}


def test_admin_scans_and_deletes(acl_server: RedisServer, keyring: Keyring) -> None:
    """The admin user can scan and delete snapshot keys but not flush."""
    admin = _client(acl_server, "prefsync-admin")
    SnapshotStore(admin, keyring).write_many([(_snapshot("C1"), 0)])
    assert sorted(admin.scan_iter(match="pref:{*}")) == [b"pref:{C1}"]
    assert admin.delete("pref:{C1}", "dek:{C1}") == 1
    for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            admin.execute_command(*command)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server that accepts only TLS with client certificates."""
    server = _start(tmp_path, tls=True)
    yield server
    server.stop()


def test_tls_round_trip(tls_server: RedisServer, keyring: Keyring) -> None:
    """The store works over TLS with an ACL user, configured by the URL alone."""
    store = SnapshotStore(
        connect(tls_server.url("prefsync-worker", PASSWORDS["prefsync-worker"])),
        keyring,
    )
    assert store.write_many([(_snapshot("C1"), 0)]) == []
    assert store.read("C1") == _snapshot("C1")


def test_tls_rejects_plaintext(tls_server: RedisServer) -> None:
    """A plaintext client cannot talk to the TLS port."""
    client = redis.Redis(
        host="127.0.0.1",
        port=tls_server.port,
        username="prefsync-worker",
        password=PASSWORDS["prefsync-worker"],
        socket_timeout=3,
        socket_connect_timeout=3,
    )
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_tls_requires_client_certificate(tls_server: RedisServer) -> None:
    """Without a client certificate the TLS handshake is refused."""
    url = (
        f"rediss://prefsync-api:{PASSWORDS['prefsync-api']}@127.0.0.1:{tls_server.port}"
        f"/0?ssl_ca_certs={tls_server.folder}/ca.pem"
    )
    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_tls_rejects_unknown_ca(tls_server: RedisServer, tmp_path: Path) -> None:
    """A client that trusts another CA refuses the server's certificate."""
    other = tmp_path / "other"
    other.mkdir()
    write_certificates(other)
    url = tls_server.url("prefsync-api", PASSWORDS["prefsync-api"]).replace(
        f"ssl_ca_certs={tls_server.folder}/ca.pem", f"ssl_ca_certs={other}/ca.pem"
    )
    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_worker_role_runs_real_worker(
    acl_server: RedisServer, settings: Settings
) -> None:
    """The real worker, connected as prefsync-worker, applies events end to end."""
    worker_settings = dataclasses.replace(
        settings,
        redis_url=acl_server.url("prefsync-worker", PASSWORDS["prefsync-worker"]),
    )
    produce_records(
        worker_settings,
        [(PROFILE_RECORD, profile_event("W1", 1, special_instructions="no ice"))],
    )

    stats = run_worker(worker_settings)

    assert stats.dead_lettered == 0
    api = SnapshotStore(
        _client(acl_server, "prefsync-api"), Keyring.load(settings.key_path)
    )
    assert to_view(api.read("W1"))["special_instructions"] == "no ice"
