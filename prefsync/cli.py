"""The ``prefsync`` command line. Each subcommand lives in a module that provides
``configure_parser(parser)`` and ``run(args, settings) -> int``; modules are imported
only when their command runs, so ``prefsync --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Sequence

from prefsync.config import Settings
from prefsync.errors import PrefsyncError
from prefsync.logs import configure_logging

__all__ = ["COMMANDS", "main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("prefsync.stack", "start, stop or inspect the local Kafka and Redis"),
    "keys": ("prefsync.commands.keys", "create and inspect encryption keys"),
    "simulate": ("producers.simulator", "publish a seeded stream of CRM events"),
    "worker": ("prefsync.commands.worker", "consume CRM events into Redis snapshots"),
    "lookup": ("prefsync.commands.lookup", "print one customer's preferences"),
    "erase": ("prefsync.commands.erase", "erase one customer and shred their data key"),
    "audit": ("prefsync.commands.audit", "remove outdated preferences by rules"),
    "redis-acl": ("prefsync.commands.redis_acl", "write Redis ACL users per role"),
    "demo": ("prefsync.demo", "run the whole pipeline on the local stack"),
    "dead-letters": ("prefsync.dead_letters", "summarize or replay dead letters"),
    "schemas": ("prefsync.schema_compat", "check schema versions for compatibility"),
    "faults": ("prefsync.faults.command", "inject faults into the local stack"),
    "rebuild": ("prefsync.rebuild", "restore Redis from the compacted snapshot topic"),
    "api": ("prefsync.commands.api", "serve the terminal HTTP API"),
    "terminals": ("prefsync.commands.terminals", "register terminals and their tokens"),
    "bench": ("prefsync.bench.command", "measure throughput, latency and memory"),
}


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefsync",
        description="Sync CRM customer preferences to Redis and apply them at the POS.",
    )
    # The option is accepted before and after the subcommand; SUPPRESS keeps a
    # subcommand's missing option from overwriting the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=argparse.SUPPRESS,
        help="log level (default: PREFSYNC_LOG_LEVEL, else info)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="log level (default: PREFSYNC_LOG_LEVEL, else info)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=help_text, description=help_text, parents=[common]
        )
        # Only the chosen command's module is imported to add its options.
        if name == wanted:
            importlib.import_module(module_name).configure_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _build_parser(arguments).parse_args(arguments)
    try:
        settings = Settings.from_env()
        configure_logging(args.log_level or settings.log_level)
        module = importlib.import_module(COMMANDS[args.command][0])
        run = module.run
        if len(inspect.signature(run).parameters) == 1:
            return int(run(args))
        return int(run(args, settings))
    except PrefsyncError as exc:
        print(f"prefsync {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
