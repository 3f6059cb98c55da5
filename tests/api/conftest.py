"""Fixtures for API tests: the real app on a free loopback port with real Redis and
Kafka, registered terminals, and customers written straight into Redis."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from prefsync.api.app import create_app
from prefsync.api.server import BackgroundServer
from prefsync.api.terminals import add_terminal
from prefsync.api.wiring import Services, build_services
from prefsync.config import Settings, TopicNames
from prefsync.crypto import Keyring, generate_key_file
from prefsync.domain.events import LOYALTY_RECORD, PROFILE_RECORD, to_change
from prefsync.domain.snapshot import fold
from prefsync.kafka_admin import ensure_topics
from prefsync.store import SnapshotStore, connect
from tests.conftest import TEST_REDIS_DB
from tests.helpers import profile_event

# terminal id -> (store, roles)
TERMINALS = {
    "T-CASH": ("S1", ["cashier", "supervisor"]),
    "T-KITCHEN": ("S1", ["kitchen"]),
    "T-HQ": ("HQ", ["admin", "analytics"]),
    "T-S2": ("S2", ["cashier"]),
    "T-ALL": ("S1", ["cashier", "kitchen", "supervisor", "admin", "analytics"]),
}
SHARED_CUSTOMER_ID = "C-SHARED-1"


@dataclass
class Api:
    """A running API: its settings, services, HTTP client and terminal tokens."""

    settings: Settings
    services: Services
    server: BackgroundServer
    client: httpx.Client
    tokens: dict[str, str]

    def headers(
        self, role: str = "cashier", terminal: str = "T-CASH", staff_id: str = "E100"
    ) -> dict[str, str]:
        """Return the auth headers of ``terminal`` acting as ``role``."""
        return {
            "Authorization": f"Bearer {self.tokens[terminal]}",
            "X-Staff-Role": role,
            "X-Staff-Id": staff_id,
        }


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    """Test settings with a rate limit high enough not to interfere."""
    return dataclasses.replace(settings, api_rate_per_s=10_000, api_rate_burst=10_000)


def start_api(settings: Settings, keyring: Keyring) -> Api:
    """Register the test terminals and start the app in a thread."""
    tokens = {
        terminal_id: add_terminal(settings.terminals_path, terminal_id, store, roles)
        for terminal_id, (store, roles) in TERMINALS.items()
    }
    services = build_services(settings, keyring=keyring)
    server = BackgroundServer(create_app(settings, services)).start()
    client = httpx.Client(base_url=server.base_url, timeout=30)
    return Api(settings, services, server, client, tokens)


def stop_api(api: Api) -> None:
    """Stop the server, then the services."""
    api.client.close()
    api.server.stop()
    api.services.stop()


@pytest.fixture
def api(api_settings: Settings, keyring: Keyring) -> Iterator[Api]:
    """The running API."""
    running = start_api(api_settings, keyring)
    yield running
    stop_api(running)


@pytest.fixture(scope="module")
def shared_api(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """One running API for a whole module, on topics and keys of its own.

    For tests that only call the API (access checks, fuzzing): starting an API per
    test would dominate their run time. Redis data may be flushed between tests by
    other fixtures, so a test that reads a customer takes ``shared_customer``.
    """
    folder = tmp_path_factory.mktemp("api")
    prefix = f"m{uuid.uuid4().hex[:10]}."
    topics = TopicNames(
        **{
            f.name: prefix + getattr(TopicNames(), f.name)
            for f in dataclasses.fields(TopicNames)
        }
    )
    generate_key_file(folder / "keys.json")
    module_settings = dataclasses.replace(
        stack_settings,
        topics=topics,
        redis_url=stack_settings.redis_url.rsplit("/", 1)[0] + f"/{TEST_REDIS_DB}",
        key_file=folder / "keys.json",
        stack_dir=folder,
        api_rate_per_s=10_000,
        api_rate_burst=10_000,
    )
    # A customer left by an earlier test is sealed under another key, so reading it
    # here fails authentication (500) instead of finding no customer.
    redis.Redis.from_url(module_settings.redis_url).flushdb()
    ensure_topics(module_settings)
    running = start_api(module_settings, Keyring.load(folder / "keys.json"))
    yield running
    stop_api(running)


def seed_customer(
    store: SnapshotStore,
    customer_id: str,
    loyalty: dict[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Write a customer's snapshot from profile and loyalty fields, at version 1."""
    changes = [to_change(PROFILE_RECORD, profile_event(customer_id, 1, **fields))]
    if loyalty:
        changes.append(
            to_change(LOYALTY_RECORD, profile_event(customer_id, 1, **loyalty))
        )
    snapshot = fold(customer_id, changes)
    current = store.read_many([customer_id])[customer_id]
    assert store.write_many([(snapshot, current.generation)]) == []


@pytest.fixture
def seed(store: SnapshotStore) -> Callable[..., None]:
    """Write a customer's snapshot from profile and loyalty fields, at version 1."""

    def write(
        customer_id: str,
        loyalty: dict[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        seed_customer(store, customer_id, loyalty, **fields)

    return write


@pytest.fixture
def shared_customer(shared_api: Api) -> str:
    """A customer stored under the shared API's keyring, in an emptied database.

    The test database keeps what earlier tests and earlier runs wrote, sealed under
    their own keyrings, and the shared API returns 500 (preferences_unreadable) for
    such a customer. Each test therefore empties the database and writes its customer
    again.
    """
    client = connect(shared_api.settings.redis_url)
    client.flushdb()
    store = SnapshotStore(client, Keyring.load(shared_api.settings.key_path))
    seed_customer(store, SHARED_CUSTOMER_ID, special_instructions="no ice")
    return SHARED_CUSTOMER_ID
