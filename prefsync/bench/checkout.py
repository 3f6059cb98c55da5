"""The checkout path: the in-process lookup with rules, and HTTP apply at a fixed rate.

- The in-process lookup is :func:`prefsync.api.service.apply_for`: one Redis read,
  decryption, the view, the built-in default policy and the rules, for a basket of
  three lines with allergens, without HTTP, idempotency records or Kafka.
- HTTP apply runs ``prefsync api`` in a subprocess with one registered terminal and
  no rate limit, and sends apply requests from this process at a fixed rate, each
  with a transaction id of its own. Requests are sent on a schedule (open loop),
  and a latency runs from the time a request was due, so a slow server cannot
  hide its queueing by slowing the sender down.
"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from prefsync.api.service import Lookup, apply_for
from prefsync.api.terminals import add_terminal
from prefsync.bench.env import BenchEnv, BenchError
from prefsync.bench.lookup import LookupFunction
from prefsync.bench.stats import Latency
from prefsync.defaults.registry import DefaultsRegistry
from prefsync.progress import Progress
from prefsync.rules import Context, Line
from prefsync.store import SnapshotStore

__all__ = ["HttpResult", "http_apply", "rules_lookup"]

TERMINAL_ID = "T-BENCH"
STORE_ID = "S1"
SENDER_THREADS = 32
STARTUP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 30.0
UNLIMITED_RATE = "1000000"

_LINES = (
    ("1", "P-PADTHAI", "Pad thai", "12.50", ("NOODLES",),
     ("PEANUTS", "EGGS", "FISH", "SOYBEANS")),
    ("2", "P-SALAD", "Green salad", "8.00", ("SALAD",), ("MUSTARD",)),
    ("3", "P-LAGER", "Lager", "4.20", ("ALCOHOL",), ("GLUTEN_CEREALS",)),
)  # fmt: skip


def _context() -> Context:
    local_time = dt.datetime(
        2025, 6, 14, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))
    )
    lines = tuple(
        Line(
            line_id=line_id,
            product_id=product,
            name=name,
            quantity=1,
            unit_price=Decimal(price),
            categories=frozenset(categories),
            allergens=frozenset(allergens),
        )
        for line_id, product, name, price, categories, allergens in _LINES
    )
    return Context(
        transaction_id="TX-BENCH",
        store_id=STORE_ID,
        terminal_id=TERMINAL_ID,
        channel="DINE_IN",
        local_time=local_time,
        currency="EUR",
        lines=lines,
    )


def rules_lookup(store: SnapshotStore) -> LookupFunction:
    """Return the in-process lookup with decryption and rules, on ``store``."""
    registry = DefaultsRegistry()
    lookup = Lookup(store, lambda: registry)
    context = _context()

    def call(customer_id: str) -> Any:
        return apply_for(lookup, customer_id, context)

    return call


def _basket() -> dict[str, Any]:
    return {
        "store_id": STORE_ID,
        "channel": "DINE_IN",
        "store_time": "2025-06-14T12:00:00+02:00",
        "currency": "EUR",
        "lines": [
            {
                "line_id": line_id,
                "product_id": product,
                "name": name,
                "quantity": 1,
                "unit_price": price,
                "categories": list(categories),
                "allergens": list(allergens),
            }
            for line_id, product, name, price, categories, allergens in _LINES
        ],
    }


@dataclass(frozen=True)
class HttpResult:
    """Requests sent, answered with 200, the achieved rate and the latencies."""

    sent: int
    ok: int
    errors: dict[int, int]
    achieved_rate_per_s: float
    latency: Latency | None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_apply(
    env: BenchEnv, customer_ids: list[str], rate_per_s: float, seconds: float
) -> HttpResult:
    """Serve the API in a subprocess and send apply requests at ``rate_per_s``.

    Raises:
        BenchError: the API did not become ready.
    """
    with tempfile.TemporaryDirectory(prefix="prefsync-bench-api-") as folder:
        settings = replace(env.with_group("api"), stack_dir=Path(folder))
        token = add_terminal(
            settings.terminals_path, TERMINAL_ID, STORE_ID, ["cashier"]
        )
        port = _free_port()
        server = _start_api(env, settings, port)
        try:
            base_url = f"http://127.0.0.1:{port}"
            _wait_ready(base_url, server)
            headers = {
                "Authorization": f"Bearer {token}",
                "X-Staff-Role": "cashier",
                "X-Staff-Id": "E-BENCH",
            }
            with httpx.Client(
                base_url=base_url,
                headers=headers,
                timeout=REQUEST_TIMEOUT_S,
                limits=httpx.Limits(max_connections=SENDER_THREADS),
            ) as client:
                return _send(env, client, customer_ids, rate_per_s, seconds)
        finally:
            _stop(server)


def _start_api(env: BenchEnv, settings: Any, port: int) -> subprocess.Popen[bytes]:
    process_env = env.subprocess_env(settings)
    process_env.update(
        {
            "PREFSYNC_STACK_DIR": str(settings.stack_dir),
            "PREFSYNC_API_RATE_PER_S": UNLIMITED_RATE,
            "PREFSYNC_API_RATE_BURST": UNLIMITED_RATE,
        }
    )
    command = [sys.executable, "-m", "prefsync.cli", "--log-level", "warning", "api"]
    return subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=process_env,
        stdout=subprocess.DEVNULL,
    )


def _wait_ready(base_url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(
                f"prefsync api exited with {server.returncode} during start-up; "
                "see its log lines above"
            )
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise BenchError(f"prefsync api was not ready within {STARTUP_TIMEOUT_S:.0f} s")


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _send(
    env: BenchEnv,
    client: httpx.Client,
    customer_ids: list[str],
    rate_per_s: float,
    seconds: float,
) -> HttpResult:
    total = int(rate_per_s * seconds)
    body = _basket()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: dict[int, int] = {}

    def request(index: int, due: float, progress: Progress) -> None:
        customer_id = customer_ids[index % len(customer_ids)]
        path = f"/v1/customers/{customer_id}/transactions/B{uuid.uuid4().hex}/apply"
        try:
            status = client.post(path, json=body).status_code
        except httpx.HTTPError:
            status = 0
        elapsed = time.perf_counter() - due
        with lock:
            if status == 200:
                latencies.append(elapsed)
            else:
                errors[status] = errors.get(status, 0) + 1
        progress.advance()

    started = _schedule(request, total, rate_per_s, env.progress)
    finished = time.perf_counter()
    summary = Latency.from_seconds(latencies) if latencies else None
    return HttpResult(
        total, len(latencies), errors, len(latencies) / (finished - started), summary
    )


def _schedule(
    request: Callable[[int, float, Progress], None],
    total: int,
    rate_per_s: float,
    progress: bool,
) -> float:
    """Submit ``request(i, due)`` for each i at its due time; return the start."""
    with (
        Progress("bench.http", total, unit="request", enabled=progress) as meter,
        ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="bench-http") as pool,
    ):
        started = time.perf_counter()
        for index in range(total):
            due = started + index / rate_per_s
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(request, index, due, meter)
    return started
