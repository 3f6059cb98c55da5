"""``prefsync api``: serve the terminal API with uvicorn until SIGTERM."""

from __future__ import annotations

import argparse

from prefsync.api.app import create_app
from prefsync.api.server import serve
from prefsync.config import Settings

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the listen address options."""
    parser.add_argument(
        "--host", default=None, help="address to listen on (default PREFSYNC_API_HOST)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="TCP port (default PREFSYNC_API_PORT)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until stopped."""
    serve(
        create_app(settings),
        args.host or settings.api_host,
        args.port if args.port is not None else settings.api_port,
    )
    return 0
