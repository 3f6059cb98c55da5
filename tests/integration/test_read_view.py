"""The terminal's read path on the real Redis: one GET per thread, view decoded."""

from __future__ import annotations

import gc
import socket
import threading

import pytest
import redis

from prefsync.config import Settings
from prefsync.direct_get import DirectGet
from prefsync.domain.encoding import encode_snapshot
from prefsync.domain.snapshot import Change, Snapshot, apply_change
from prefsync.domain.view import to_view
from prefsync.errors import DecryptError
from prefsync.store import SnapshotStore, snapshot_key

pytestmark = pytest.mark.integration


def _snapshot(customer_id: str) -> Snapshot:
    snapshot = Snapshot(customer_id)
    change = Change(customer_id, (1, 1, 1, 0))
    change.scalars["special_instructions"] = "no ice"
    change.maps["allergies"] = {"PEANUTS": ["SEVERE", None]}
    apply_change(snapshot, change)
    return snapshot


def _other_clients_killed(url: str) -> None:
    admin = redis.Redis.from_url(url)
    admin.client_kill_filter(_type="normal", skipme=True)
    admin.close()


def test_read_view_equals_view_of_read(store: SnapshotStore) -> None:
    """The view read directly equals the view of the full snapshot."""
    snapshot = _snapshot("S1")
    assert store.write_many([(snapshot, 0)]) == []
    assert store.read_view("S1") == to_view(snapshot)


def test_read_view_missing_is_none(store: SnapshotStore) -> None:
    """A customer without a value has no view."""
    assert store.read_view("S404") is None


def test_read_view_legacy_value(store: SnapshotStore) -> None:
    """A format 1 value (keyring-encrypted, no data key) is still read."""
    snapshot = _snapshot("S1")
    sealed = store.keyring.encrypt("S1", encode_snapshot(snapshot))
    store.client.set(snapshot_key("S1"), b"\x01" + (1).to_bytes(8, "big") + sealed)
    assert store.read_view("S1") == to_view(snapshot)


def test_read_view_altered_value_fails(store: SnapshotStore) -> None:
    """A value altered in Redis fails authentication, never reads as empty."""
    assert store.write_many([(_snapshot("S1"), 0)]) == []
    value = bytearray(store.client.get(snapshot_key("S1")))
    value[-1] ^= 1
    store.client.set(snapshot_key("S1"), bytes(value))
    with pytest.raises(DecryptError):
        store.read_view("S1")


def test_read_view_other_customers_value_fails(store: SnapshotStore) -> None:
    """Another customer's value copied to this key fails authentication."""
    assert store.write_many([(_snapshot("S1"), 0)]) == []
    store.client.set(snapshot_key("S2"), store.client.get(snapshot_key("S1")))
    with pytest.raises(DecryptError):
        store.read_view("S2")


def test_direct_get_after_killed_connection(
    settings: Settings, store: SnapshotStore
) -> None:
    """A GET after Redis closed the thread's connection still returns the value."""
    client = store.client
    client.set("k1", b"v1")
    direct = DirectGet(client)
    assert direct.get("k1") == b"v1"
    _other_clients_killed(settings.redis_url)
    assert direct.get("k1") == b"v1"


def test_direct_get_wrong_type_raises(store: SnapshotStore) -> None:
    """A command error is raised, and the connection serves the next GET."""
    client = store.client
    client.hset("h1", "field", "value")
    client.set("k1", b"v1")
    direct = DirectGet(client)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        direct.get("h1")
    assert direct.get("k1") == b"v1"


def test_direct_get_threads_return_connections(settings: Settings) -> None:
    """Connections of threads that ended are reused by later threads."""
    client = redis.Redis.from_url(settings.redis_url, client_name="direct-get-test")
    client.set("k1", b"v1")
    direct = DirectGet(client)
    values: list[bytes] = []
    for _round in range(3):
        threads = [
            threading.Thread(target=lambda: values.append(direct.get("k1")))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        gc.collect()
    named = [c for c in client.client_list() if c["name"] == "direct-get-test"]
    assert values == [b"v1"] * 24
    assert len(named) <= 9


class _SilentOnGet:
    """A loopback server that replies +OK to every command except HELLO (an error
    reply, as from a RESP2 server) and GET (no reply at all). It counts the
    connections it accepted."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        while chunk := conn.recv(65536):
            buffer += chunk
            # Each command is a RESP array whose last bulk string ends its line.
            while (command := _one_command(buffer)) is not None:
                name, buffer = command
                if name == b"HELLO":
                    conn.sendall(b"-ERR unknown command 'HELLO'\r\n")
                elif name != b"GET":
                    conn.sendall(b"+OK\r\n")


def _one_command(buffer: bytes) -> tuple[bytes, bytes] | None:
    """Split the first RESP array command off ``buffer``: (name, rest)."""
    if not buffer.startswith(b"*") or b"\r\n" not in buffer:
        return None
    header, rest = buffer.split(b"\r\n", 1)
    parts = []
    for _ in range(int(header[1:])):
        if b"\r\n" not in rest:
            return None
        length_line, rest = rest.split(b"\r\n", 1)
        length = int(length_line[1:])
        if len(rest) < length + 2:
            return None
        parts.append(rest[:length])
        rest = rest[length + 2 :]
    return parts[0].upper(), rest


def test_direct_get_timeout_not_retried() -> None:
    """A GET that timed out is raised at once, not tried again on a new connection."""
    server = _SilentOnGet()
    client = redis.Redis(
        host="127.0.0.1", port=server.port, socket_timeout=0.5, retry=None
    )
    with pytest.raises(redis.TimeoutError):
        DirectGet(client).get("k1")
    server.listener.close()
    assert server.accepted == 1
