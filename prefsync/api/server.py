"""Run the API with uvicorn in the foreground, or in a background thread.

The background form serves tests and the demo: it binds a free loopback port
(port 0) and reports the port the kernel chose.
"""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from prefsync.errors import PrefsyncError

__all__ = ["BackgroundServer", "serve"]


def _config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    # uvicorn's access log prints request paths, which contain customer ids, so it
    # is off; the app logs route templates instead. log_config=None keeps
    # structlog's set-up.
    return uvicorn.Config(
        app, host=host, port=port, access_log=False, log_config=None, lifespan="on"
    )


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT or SIGTERM."""
    uvicorn.Server(_config(app, host, port)).run()


class BackgroundServer:
    """Serve an app in a daemon thread on 127.0.0.1."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        self._server = uvicorn.Server(_config(app, host, port))
        self._thread = threading.Thread(
            target=self._server.run, name="api-server", daemon=True
        )
        self.host = host
        self.port = port

    @property
    def base_url(self) -> str:
        """Return ``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        """Start serving and wait until the app's startup finished.

        Raises:
            PrefsyncError: the server did not start within ``timeout_s``.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise PrefsyncError(
                    f"the API server did not start within {timeout_s:.0f} s; see the "
                    "log above for the startup error"
                )
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ask the server to finish open requests and stop, then wait for it."""
        self._server.should_exit = True
        self._thread.join(timeout_s)
