"""The worker's HTTP endpoints: ``/healthz``, ``/readyz`` and ``/metrics``.

A small standard-library server on a daemon thread. ``/healthz`` (liveness) returns
200 while the consume loop keeps turning. ``/readyz`` (readiness) returns 200 while
the worker has partitions, reaches Redis and has not been paused for longer than
``PREFSYNC_READINESS_MAX_PAUSE_S``. Both return a JSON body with the reasons.
``/metrics`` is the Prometheus text format of the worker's registry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["HealthServer"]

log = structlog.get_logger()

HealthProbe = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    """Serve liveness, readiness and metrics until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        liveness: HealthProbe,
        readiness: HealthProbe,
        registry: CollectorRegistry,
    ):
        routes: dict[str, HealthProbe] = {"/healthz": liveness, "/readyz": readiness}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                    return
                probe = routes.get(path)
                if probe is None:
                    self._send(404, "application/json", b'{"error": "not found"}')
                    return
                healthy, details = probe()
                body = json.dumps({"ok": healthy, **details}).encode()
                self._send(200 if healthy else 503, "application/json", body)

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                # Probes arrive every few seconds; access lines would drown the log.
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="prefsync-http", daemon=True
        )

    @property
    def port(self) -> int:
        """Return the bound port (useful when 0 asked for any free port)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start serving on the background thread."""
        self._thread.start()
        log.info("http.start", host=self._server.server_address[0], port=self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        log.info("http.stop", port=self.port)
